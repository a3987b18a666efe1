/**
 * Runs one Pulumi Automation API operation in its own process (never inside an HTTP request or
 * the worker's event loop: pulumi#20737, #13687). The parent (runner.ts) sends one job over IPC and
 * may send `cancel`; the child streams engine events and ends with one result message. What the run
 * does is operation.ts, over the Automation API as workspace.ts opens it.
 */
import { serveChild } from './operation.js';
import { automation, policyOptions } from './workspace.js';

serveChild(automation, policyOptions);
