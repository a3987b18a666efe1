import { createHash } from 'node:crypto';
import fs from 'node:fs';
import zlib from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { restoreArchive } from '../../control-plane/src/export/archive.js';
import {
  type Manifest as ArchiveManifest,
  manifestDigest,
  walkArchive,
} from '../../control-plane/src/export/format.js';
import {
  adminUrl,
  auth,
  connectionOf,
  onboard,
  rand,
  startStack,
  superQuery,
  type TestStack,
  tenantClient,
  waitForOperation,
} from '../helpers/runtime.js';

/**
 * Export and restore, end to end (docs/lifecycle.md): a tenant's rows, whatever its tier, to one
 * archive with a manifest (schema version, rows and SHA-256 per table); a pool export holds nothing of
 * any other tenant; a restore into another tier gives back rows whose counts and checksums equal the
 * manifest; a damaged or tampered archive is refused with nothing created; an offboarding can take a
 * final export first.
 */
let s: TestStack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(async () => {
  await s?.close();
});

type Tier = 'pool' | 'bridge' | 'silo';
interface Manifest {
  schemaVersion: number;
  tenant: { id: string; slug: string; tier: string };
  tables: { name: string; columns: string[]; rows: number; sha256: string }[];
}

const sre = () => auth(s.tokens.sre);
const exportOf = async (id: string) =>
  (await s.app.inject({ method: 'GET', url: `/v1/exports/${id}`, headers: sre() })).json();

/** Rows with what COPY text escapes (tabs, newlines, backslashes, unicode, JSON) in a tenant's tables. */
async function seed(slug: string, n: number, tag: string): Promise<void> {
  const d = await connectionOf(s, slug);
  const c = await tenantClient(d);
  try {
    await c.query('BEGIN');
    if (d.tenantSetting) await c.query('SELECT set_config($1, $2, true)', [d.tenantSetting, d.tenantId]);
    await c.query(
      `INSERT INTO users (tenant_id, email, name)
       SELECT $1, $2 || i || '@x.test', E'name\\twith tab\\nnewline \\\\ ' || i || ' ü' FROM generate_series(1, $3) i`,
      [d.tenantId, tag, n],
    );
    await c.query(
      `INSERT INTO documents (tenant_id, owner_id, title, body)
       SELECT tenant_id, id, 'doc ' || email, repeat('x', 50) FROM users`,
    );
    await c.query(
      `INSERT INTO settings (tenant_id, key, value) VALUES ($1, 'theme', '{"dark": true, "list": [1, 2]}'), ($1, 'Zeta', '"z"')`,
      [d.tenantId],
    );
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
}

async function exportTenant(slug: string): Promise<{ id: string; manifest: Manifest; sha256: string }> {
  const res = await s.app.inject({ method: 'POST', url: `/v1/tenants/${slug}/exports`, headers: sre() });
  expect(res.statusCode, res.body).toBe(202);
  expect(res.json().export).toMatchObject({ status: 'pending', final: false });
  expect(res.json().export.path).toBeUndefined();
  expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');
  const e = await exportOf(res.json().export.id);
  expect(e.status).toBe('ready');
  return { id: e.id, manifest: e.manifest, sha256: e.sha256 };
}

async function restore(slug: string, tier: Tier, exportId: string) {
  return s.app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: sre(),
    payload: { slug, name: `Restored ${slug}`, tier, fromExport: exportId },
  });
}

const archivePath = async (exportId: string) =>
  (await superQuery<{ path: string }>(s.controlDb, 'SELECT path FROM exports WHERE id = $1', [exportId]))[0]
    ?.path as string;
const tableSums = (m: Manifest) => m.tables.map(({ name, rows, sha256 }) => ({ name, rows, sha256 }));

describe('export', () => {
  let source: { slug: string; id: string };
  let exported: { id: string; manifest: Manifest; sha256: string };

  beforeAll(async () => {
    source = await onboard(s, 'pool');
    const neighbour = await onboard(s, 'pool');
    await seed(source.slug, 40, 'mine');
    await seed(neighbour.slug, 25, 'theirs');
    exported = await exportTenant(source.slug);
  });

  it("writes a pool tenant's rows, and nothing of any other tenant, with a manifest", async () => {
    expect(exported.manifest).toMatchObject({
      schemaVersion: 1,
      tenant: { id: source.id, slug: source.slug, tier: 'pool' },
    });
    // Parents before the tables that reference them (a restore satisfies each foreign key as it goes).
    expect(exported.manifest.tables.map((t) => [t.name, t.rows])).toEqual([
      ['users', 40],
      ['documents', 40],
      ['settings', 2],
    ]);
    // Read back with the archive walker: every digest checks, and no row of the neighbour is there.
    let text = '';
    await walkArchive(await archivePath(exported.id), {
      onData: async (b) => {
        text += b.toString('utf8');
      },
    });
    expect(text).toContain('mine1@x.test');
    expect(text).not.toContain('theirs');
    expect(text).not.toContain(source.id); // tenant_id is not exported: a restore gives its own
  });

  it('streams the archive to an SRE, audited, with its digest', async () => {
    const res = await s.app.inject({
      method: 'GET',
      url: `/v1/exports/${exported.id}/download`,
      headers: sre(),
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/gzip');
    expect(res.headers['x-content-sha256']).toBe(exported.sha256);
    expect(createHash('sha256').update(res.rawPayload).digest('hex')).toBe(exported.sha256);
    const sales = await s.app.inject({
      method: 'GET',
      url: `/v1/exports/${exported.id}/download`,
      headers: auth(s.tokens['sales-ops']),
    });
    expect(sales.statusCode).toBe(403);
    const audit = await s.app.inject({
      method: 'GET',
      url: `/v1/audit?tenantId=${source.id}&limit=500`,
      headers: sre(),
    });
    const downloads = audit.json().items.filter((a: { action: string }) => a.action === 'export.download');
    expect(downloads).toEqual([
      expect.objectContaining({ details: expect.objectContaining({ exportId: exported.id }) }),
    ]);
  });

  it.each(['bridge', 'silo', 'pool'] as const)(
    "restores into a new %s tenant whose rows have the manifest's counts and checksums",
    async (tier) => {
      const slug = `r-${tier}-${rand(3)}`;
      const res = await restore(slug, tier, exported.id);
      expect(res.statusCode, res.body).toBe(202);
      const op = await waitForOperation(s, res.json().operation.id);
      expect(op.status, JSON.stringify(op)).toBe('succeeded');
      expect(op.steps.map((x) => x.name).slice(-2)).toEqual(['restore', 'verify-restore']);
      // Exported again from its new tier, the rows are the same, checksum for checksum.
      const again = await exportTenant(slug);
      expect(tableSums(again.manifest)).toEqual(tableSums(exported.manifest));
      // The source's rows are untouched.
      const d = await connectionOf(s, slug);
      expect(d.tier).toBe(tier);
    },
  );

  it('leaves a restore alone when its step runs again (a crash after it committed)', async () => {
    const slug = `r-again-${rand(3)}`;
    const res = await restore(slug, 'bridge', exported.id);
    expect((await waitForOperation(s, res.json().operation.id)).status).toBe('succeeded');
    const c = new pg.Client({ connectionString: adminUrl(s.dataDb) });
    await c.connect();
    try {
      const p = { schema: tenantObjectName(slug), shared: false };
      const digest = manifestDigest(exported.manifest as unknown as ArchiveManifest);
      const again = await restoreArchive(c, p, await archivePath(exported.id), res.json().tenant.id, digest);
      expect(again.skipped).toBe(true);
      expect(tableSums((await exportTenant(slug)).manifest)).toEqual(tableSums(exported.manifest));
      // An archive whose manifest is not the one accepted is refused, loading nothing.
      await expect(
        restoreArchive(c, p, await archivePath(exported.id), res.json().tenant.id, 'f'.repeat(64)),
      ).rejects.toThrow(/changed since its restore was accepted/);
    } finally {
      await c.end();
    }
  });

  it("refuses a restore to sales-ops (it copies a tenant's rows), creating nothing", async () => {
    const slug = `r-sales-${rand(3)}`;
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: auth(s.tokens['sales-ops']),
      payload: { slug, name: 'x', tier: 'bridge', fromExport: exported.id },
    });
    expect([res.statusCode, res.json().error.code]).toEqual([403, 'FORBIDDEN']);
    expect(await superQuery(s.controlDb, 'SELECT 1 FROM tenants WHERE slug = $1', [slug])).toEqual([]);
  });
});

describe('a damaged or tampered archive', () => {
  let damaged: string;
  let tampered: string;
  beforeAll(async () => {
    const src = await onboard(s, 'bridge');
    await seed(src.slug, 30, 'dmg');
    damaged = (await exportTenant(src.slug)).id;
    tampered = (await exportTenant(src.slug)).id;
    // Damaged: cut short.
    const p = await archivePath(damaged);
    const bytes = fs.readFileSync(p);
    fs.writeFileSync(p, bytes.subarray(0, Math.floor(bytes.length / 2)));
    // Tampered: a valid gzip whose rows were changed (one letter of one email), frames and manifest kept.
    const t = await archivePath(tampered);
    const raw = zlib.gunzipSync(fs.readFileSync(t));
    const at = raw.indexOf('dmg7@x.test');
    expect(at).toBeGreaterThan(0);
    raw[at] = 'D'.charCodeAt(0);
    fs.writeFileSync(t, zlib.gzipSync(raw));
  });

  it.each([
    ['cut short', () => damaged, /damaged/],
    ['with changed rows', () => tampered, /table users holds 30 rows with SHA-256/],
  ])('%s is refused with 422 EXPORT_INVALID and nothing is created', async (_label, id, why) => {
    const before = await superQuery<{ t: string; o: string; a: string; e: string }>(
      s.controlDb,
      `SELECT (SELECT count(*) FROM tenants) AS t, (SELECT count(*) FROM operations) AS o,
              (SELECT count(*) FROM audit_log) AS a, (SELECT count(*) FROM events) AS e`,
    );
    const slug = `r-bad-${rand(3)}`;
    const res = await restore(slug, 'silo', id());
    expect([res.statusCode, res.json().error.code]).toEqual([422, 'EXPORT_INVALID']);
    expect(res.json().error.message).toMatch(why);
    const after = await superQuery(
      s.controlDb,
      `SELECT (SELECT count(*) FROM tenants) AS t, (SELECT count(*) FROM operations) AS o,
              (SELECT count(*) FROM audit_log) AS a, (SELECT count(*) FROM events) AS e`,
    );
    expect(after).toEqual(before);
    expect(
      await superQuery('postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [
        `tenant_${slug.replaceAll('-', '_')}`,
      ]),
    ).toEqual([]);
  });

  it('refuses an unknown export with 404 EXPORT_NOT_FOUND', async () => {
    const res = await restore(`r-none-${rand(3)}`, 'bridge', `exp_${'0'.repeat(28)}`);
    expect([res.statusCode, res.json().error.code]).toEqual([404, 'EXPORT_NOT_FOUND']);
  });
});

describe('retention', () => {
  it('deletes an archive past its retention and keeps its record, expired', async () => {
    const t = await onboard(s, 'pool');
    await seed(t.slug, 3, 'old');
    const e = await exportTenant(t.slug);
    const file = await archivePath(e.id);
    expect(fs.existsSync(file)).toBe(true);
    await superQuery(
      s.controlDb,
      `UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = $1`,
      [e.id],
    );
    expect(await s.runtime.services.exports.expire()).toBeGreaterThanOrEqual(1);
    expect(fs.existsSync(file)).toBe(false);
    expect((await exportOf(e.id)).status).toBe('expired');
    const res = await s.app.inject({ method: 'GET', url: `/v1/exports/${e.id}/download`, headers: sre() });
    expect([res.statusCode, res.json().error.code]).toEqual([404, 'EXPORT_NOT_FOUND']);
  });
});

describe('offboarding with ?export=true', () => {
  it('takes a final export first, kept for the final retention, and restorable', async () => {
    const t = await onboard(s, 'silo');
    await seed(t.slug, 12, 'last');
    const res = await s.app.inject({
      method: 'DELETE',
      url: `/v1/tenants/${t.slug}?export=true`,
      headers: { ...sre(), confirm: t.slug },
    });
    expect(res.statusCode, res.body).toBe(202);
    const op = await waitForOperation(s, res.json().operation.id);
    expect(op.status).toBe('succeeded');
    expect(op.steps[0]?.name).toBe('export');
    const list = await s.app.inject({ method: 'GET', url: `/v1/tenants/${t.slug}/exports`, headers: sre() });
    const [final] = list.json().items;
    expect(final).toMatchObject({ status: 'ready', final: true, tier: 'silo', tenantId: t.id });
    const days = (Date.parse(final.expiresAt) - Date.now()) / 86_400_000;
    expect(Math.round(days)).toBe(30);
    expect(final.manifest.tables.find((x: { name: string }) => x.name === 'users').rows).toBe(12);

    const restored = await restore(`r-final-${rand(3)}`, 'pool', final.id);
    expect(restored.statusCode, restored.body).toBe(202);
    expect((await waitForOperation(s, restored.json().operation.id)).status).toBe('succeeded');
    const again = await exportTenant(restored.json().tenant.slug);
    expect(tableSums(again.manifest)).toEqual(tableSums(final.manifest));
  });
});
