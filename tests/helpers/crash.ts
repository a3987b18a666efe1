import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { dropStackDatabases, rand, superQuery } from './runtime.js';
import { freePort, isRunning, kill9 } from './server.js';

/** What a crash test's real control-plane process runs on: its own databases, data directory, hold file and port. */
export interface CrashScratch {
  controlDb: string;
  dataDb: string;
  dataDir: string;
  /** Names the point where an operation waits until the test kills the process (TENANTRY_FAULT_HOLD_FILE). */
  holdFile: string;
  port: number;
}

/** A control database cloned from the migrated template, an empty data-plane database, a data directory. */
export async function crashScratch(name: string): Promise<CrashScratch> {
  const id = rand();
  const controlDb = `cp_${name}_${id}`;
  const dataDb = `dp_${name}_${id}`;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `tenantry-${name}-`));
  return { controlDb, dataDb, dataDir, holdFile: path.join(dataDir, 'fault-hold'), port: await freePort() };
}

/**
 * Kills the process if it still runs, removes the data directory, and drops the control and data
 * databases with the silo template and the silos of the tenants made there.
 */
export async function endCrashScratch(
  child: ChildProcess | undefined,
  s: Partial<Pick<CrashScratch, 'controlDb' | 'dataDb' | 'dataDir'>>,
): Promise<void> {
  if (isRunning(child)) await kill9(child);
  if (s.dataDir) fs.rmSync(s.dataDir, { recursive: true, force: true });
  if (s.controlDb && s.dataDb) await dropStackDatabases(s.controlDb, s.dataDb);
}
