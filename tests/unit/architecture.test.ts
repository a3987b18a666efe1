import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The layering docs/architecture.md states, checked on the source: the domain imports nothing
 * outside itself, and no two folders of control-plane/src import each other (directly or through
 * others), so each shared piece has one home both sides can use.
 */
const SRC = path.resolve(import.meta.dirname, '../../control-plane/src');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/** The top folder of control-plane/src a file is in ('.' for the files at its root). */
const folderOf = (file: string) => {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length > 1 ? (rel[0] as string) : '.';
};

/** Relative imports of a file (static, re-exports and dynamic), resolved to files. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)'/g)].map(
    (m) => m[1] as string,
  );
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

const files = sourceFiles(SRC);
const edges = new Map<string, Set<string>>();
for (const f of files) {
  const from = folderOf(f);
  for (const target of importsOf(f)) {
    const to = folderOf(target);
    if (to === from) continue;
    if (!edges.has(from)) edges.set(from, new Set());
    edges.get(from)?.add(to);
  }
}

describe('architecture', () => {
  it('reads the source tree', () => {
    expect(files.length).toBeGreaterThan(50);
    expect([...edges.keys()]).toContain('engine');
  });

  it('the domain imports nothing outside itself', () => {
    const outside = files
      .filter((f) => folderOf(f) === 'domain')
      .flatMap((f) =>
        importsOf(f)
          .filter((t) => folderOf(t) !== 'domain')
          .map((t) => `${path.relative(SRC, f)} → ${path.relative(SRC, t)}`),
      );
    expect(outside).toEqual([]);
  });

  it('no import cycle between folders', () => {
    // Every folder that can reach itself through other folders' imports (root-level entry files excluded).
    const reach = (start: string): Set<string> => {
      const seen = new Set<string>();
      const stack = [...(edges.get(start) ?? [])];
      while (stack.length > 0) {
        const next = stack.pop() as string;
        if (seen.has(next) || next === '.') continue;
        seen.add(next);
        stack.push(...(edges.get(next) ?? []));
      }
      return seen;
    };
    const cyclic = [...edges.keys()].filter((folder) => folder !== '.' && reach(folder).has(folder));
    const paths = cyclic.map(
      (folder) =>
        `${folder} → ${[...(edges.get(folder) ?? [])].filter((to) => reach(to).has(folder)).join(', ')} → ${folder}`,
    );
    expect(paths).toEqual([]);
  });
});
