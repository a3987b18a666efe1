import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  isVersionAtLeast,
  MIN_CLI_FOR_DRIFT,
  PINNED_VERSIONS,
} from '../../../control-plane/src/engine/pulumi/version.js';

const installed = (pkg: string) =>
  (JSON.parse(readFileSync(`node_modules/${pkg}/package.json`, 'utf8')) as { version: string }).version;

describe('the pinned Pulumi versions', () => {
  it('are the CLI released with the installed SDK and the plugin of the installed @pulumi/aws', () => {
    // The CLI and @pulumi/pulumi are released together under one version.
    expect(PINNED_VERSIONS.cli).toBe(installed('@pulumi/pulumi'));
    expect(PINNED_VERSIONS.awsPlugin).toBe(installed('@pulumi/aws'));
  });

  it('meet what drift checks need on DIY backends', () => {
    expect(isVersionAtLeast(PINNED_VERSIONS.cli, MIN_CLI_FOR_DRIFT)).toBe(true);
  });
});
