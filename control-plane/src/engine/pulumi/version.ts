import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * The oldest Pulumi CLI a drift check may run on against a DIY backend (s3://, file://, …):
 * pulumi#22385 (released in 3.229.0) stopped preview-only refreshes from taking the stack lock
 * there, so a check never holds a lock that an `up` then trips over.
 */
export const MIN_CLI_FOR_DRIFT = '3.229.0';

/**
 * The Pulumi CLI and aws plugin every operation runs with, exactly: the CLI released with the
 * @pulumi/pulumi SDK in package-lock.json (they are versioned together) and the plugin of the
 * @pulumi/aws package the programs are written against. tests/unit/aws/pinned-versions.test.ts keeps
 * them equal to the installed packages. Install both ahead of time: scripts/pulumi-install.ts.
 */
export const PINNED_VERSIONS = { cli: '3.248.0', awsPlugin: '7.48.0' } as const;

const DIY_BACKEND = /^(s3|file|gs|azblob):\/\//;
export const isDiyBackend = (url: string): boolean => DIY_BACKEND.test(url);

function parts(v: string): [number, number, number] | null {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** `3.230.1` ≥ `3.229.0`; a pre-release or dev build counts as its release; an unparsable version never passes. */
export function isVersionAtLeast(found: string, min: string): boolean {
  const a = parts(found);
  const b = parts(min);
  if (!a || !b) return false;
  for (let i = 0; i < 3; i++) {
    const x = a[i] as number;
    const y = b[i] as number;
    if (x !== y) return x > y;
  }
  return true;
}

const SKIP_DIRS = new Set(['node_modules', '.git', 'dist', 'coverage']);

function filesUnder(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) {
        if (!SKIP_DIRS.has(entry.name)) walk(path.join(dir, entry.name));
      } else if (entry.isFile()) out.push(path.join(dir, entry.name));
    }
  };
  if (statSync(root).isDirectory()) walk(root);
  else out.push(root);
  return out;
}

/**
 * A content hash of everything that decides what a tenant stack contains: the programs
 * (stacks/**), the Postgres providers their dynamic resources run, and the templates
 * (tiers and tenant schema). Paths are hashed relative to their root, in a fixed order, so
 * the hash is the same wherever the checkout lives; any edit to any of those files changes it.
 */
export function programContentHash(roots: { name: string; dir: string }[]): string {
  const h = createHash('sha256');
  for (const { name, dir } of [...roots].sort((a, b) => a.name.localeCompare(b.name))) {
    const files = filesUnder(dir)
      .map((f) => ({ f, rel: path.relative(dir, f).split(path.sep).join('/') }))
      .sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
    for (const { f, rel } of files) {
      const body = readFileSync(f);
      h.update(`${name}/${rel}\0${body.length}\0`);
      h.update(body);
    }
  }
  return h.digest('hex');
}

/** `<base>+program.<hash>` (semver build metadata), or `<base>.program.<hash>` when base already has some. */
export function programVersion(base: string, hash: string): string {
  const tag = `program.${hash.slice(0, 12)}`;
  return base.includes('+') ? `${base}.${tag}` : `${base}+${tag}`;
}
