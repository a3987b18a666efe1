import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TierCatalog } from '../../control-plane/src/domain/tiers.js';
import type { TenantTemplate } from '../../control-plane/src/providers/postgres/types.js';

const TEMPLATES_DIR = fileURLToPath(new URL('../../templates/', import.meta.url));
const MIGRATION_RE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/** templates/tiers.json, read once per program run (outside any provider closure). */
export function loadTierCatalog(dir = TEMPLATES_DIR): TierCatalog {
  return JSON.parse(readFileSync(join(dir, 'tiers.json'), 'utf8')) as TierCatalog;
}

/** templates/tenant-schema/NNNN_name.sql, in version order. */
export function loadTenantTemplate(dir = TEMPLATES_DIR): TenantTemplate {
  const schemaDir = join(dir, 'tenant-schema');
  const migrations = readdirSync(schemaDir)
    .map((file) => ({ file, m: MIGRATION_RE.exec(file) }))
    .filter((x): x is { file: string; m: RegExpExecArray } => x.m !== null)
    .map(({ file, m }) => ({
      version: Number(m[1]),
      name: m[2] ?? file,
      sql: readFileSync(join(schemaDir, file), 'utf8'),
    }))
    .sort((a, b) => a.version - b.version);
  const last = migrations.at(-1);
  if (!last) throw new Error(`no migrations in ${schemaDir}`);
  return { version: last.version, migrations };
}
