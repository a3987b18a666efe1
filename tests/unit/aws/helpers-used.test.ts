import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The SDK helpers in control-plane/src/aws/ that nothing called (issue #17, fix 9) are either used by
 * the control plane's own paths now, or gone: a helper no path calls is tested code that never runs.
 */
const SRC = path.resolve(import.meta.dirname, '../../../control-plane/src');
const AWS = path.join(SRC, 'aws');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

const files = sources(SRC);
const exporting = (name: string) =>
  files.filter((f) => new RegExp(`export (async )?function ${name}\\b`).test(fs.readFileSync(f, 'utf8')));
/** Source files, other than the helper's own module and the barrel, that import it. */
const callers = (name: string) =>
  files.filter((f) => {
    if (f === path.join(AWS, 'index.ts') || exporting(name).includes(f)) return false;
    return new RegExp(`import[^;]*\\b${name}\\b[^;]*from`).test(fs.readFileSync(f, 'utf8'));
  });

describe('the AWS SDK helpers', () => {
  it.each(['createAccount', 'findKeyByAlias'])('%s is gone: no path needed it', (name) => {
    expect(exporting(name)).toEqual([]);
  });

  it.each([
    ['putSecretValue', 'aws/store.ts'],
    ['listSecretsByTag', 'aws/store.ts'],
    ['scheduleKeyDeletion', 'aws/store.ts'],
  ])('%s is used by a control-plane path (%s)', (name, by) => {
    expect(callers(name).map((f) => path.relative(SRC, f))).toContain(by);
  });
});
