import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { startRuntime } from '../../control-plane/src/runtime.js';
import { buildTestApp } from './app.js';
import { dropStackDatabases, type TestStack } from './runtime.js';

const ROOT = path.resolve(import.meta.dirname, '../../templates');

/**
 * A copy of templates/ in a scratch directory (TENANTRY_TEMPLATES_DIR), so a test can add a tenant
 * schema version without changing the version every other test file's tenants are expected at.
 */
export interface TemplatesCopy {
  dir: string;
  /** Adds `NNNN_<name>.sql` and moves tiers.json's templateVersion to it. */
  addVersion(version: number, name: string, sql: string): void;
  remove(): void;
}

export function copyTemplates(): TemplatesCopy {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tenantry-templates-'));
  fs.chmodSync(dir, 0o755);
  fs.cpSync(ROOT, dir, { recursive: true });
  return {
    dir,
    addVersion(version, name, sql) {
      const file = `${String(version).padStart(4, '0')}_${name}.sql`;
      fs.writeFileSync(path.join(dir, 'tenant-schema', file), sql);
      const tiers = JSON.parse(fs.readFileSync(path.join(dir, 'tiers.json'), 'utf8'));
      tiers.templateVersion = version;
      fs.writeFileSync(path.join(dir, 'tiers.json'), JSON.stringify(tiers, null, 2));
    },
    remove() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The version 2 the rollout tests ship: a column and an index on `users`, and a check that refuses
 * an upper-case email, so a tenant holding one fails to migrate (a data-dependent failure) until its
 * data is fixed.
 */
export const VERSION_2 = `-- Version 2: nicknames, looked up per tenant; emails stored lower-case.
ALTER TABLE users ADD COLUMN nickname text;
CREATE INDEX users_nickname_idx ON users (tenant_id, nickname);
ALTER TABLE users ADD CONSTRAINT users_email_lowercase CHECK (email = lower(email));
`;

/**
 * The version 2 the red-team suite runs at (tests/integration/red-team-v2.test.ts): a nullable column
 * and an index leading with tenant_id on every table of version 1, and a new table with both. It
 * migrates every tenant (no data-dependent failure).
 */
export const ISOLATION_VERSION_2 = `-- Version 2: a note on every row, looked up per tenant; tags.
ALTER TABLE users ADD COLUMN note text;
CREATE INDEX users_note_idx ON users (tenant_id, note);
ALTER TABLE documents ADD COLUMN note text;
CREATE INDEX documents_note_idx ON documents (tenant_id, note);
ALTER TABLE settings ADD COLUMN note text;
CREATE INDEX settings_note_idx ON settings (tenant_id, note);
CREATE TABLE tags (
  tenant_id  uuid        NOT NULL,
  id         uuid        NOT NULL DEFAULT gen_random_uuid(),
  name       text        NOT NULL,
  owner_id   uuid,
  note       text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, name),
  FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX tags_note_idx ON tags (tenant_id, note);
`;

/**
 * A version 3 after ISOLATION_VERSION_2 that grants what it should not: its schema (USAGE) and a
 * table to PUBLIC, and two columns of another. The lint does not refuse it; a rollout must leave
 * nothing of it that PUBLIC reaches (tests/integration/red-team-v2.test.ts).
 */
export const CARELESS_VERSION_3 = `-- Version 3: grants a careless author might write.
DO $$ BEGIN EXECUTE format('GRANT USAGE ON SCHEMA %I TO PUBLIC', current_schema()); END $$;
GRANT SELECT, UPDATE ON tags TO PUBLIC;
GRANT SELECT (tenant_id, note), UPDATE (note) ON users TO PUBLIC;
`;

/**
 * Stops a stack's app and runtime and starts them again on the same databases, data directory and
 * configuration, as an operator's restart does (the templates directory is read again).
 */
export async function restartStack(s: TestStack): Promise<TestStack> {
  await s.app.close();
  await s.runtime.close();
  const log = pino({ level: s.config.logLevel });
  const runtime = await startRuntime(s.config, log);
  const server = await buildTestApp(log, runtime.services);
  return {
    ...s,
    app: server,
    runtime,
    async close() {
      await server.close();
      await runtime.close();
      fs.rmSync(s.config.dataDir, { recursive: true, force: true });
      await dropStackDatabases(s.controlDb, s.dataDb);
    },
  };
}
