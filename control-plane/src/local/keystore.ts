import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TenantryError } from '../domain/errors.js';
import type { KeyStore, SecretStore, StoredSecret, StoreWrite } from '../domain/ports.js';
import { type NamedStatement, named, type Queryable } from '../domain/queryable.js';

/**
 * The local stand-in for KMS + Secrets Manager: envelope encryption with node:crypto.
 * - A 256-bit root key, never in the database: `TENANTRY_ROOT_KEY_FILE`, `TENANTRY_ROOT_KEY`, or by
 *   default `<dataDir>/keys/root.key` (mode 600). The database holds a check sealed under it
 *   (`root_keys`, see local/root-key.ts), and each data key records the root key that wraps it.
 * - Each tenant has a data key, stored only wrapped (AES-256-GCM) by the root key.
 * - Each secret version is AES-256-GCM under its tenant's data key, with the secret's
 *   name and version as associated data, so a ciphertext cannot be replayed under another name.
 * - Shredding a key deletes its wrapped material: every secret under it becomes unreadable.
 */
const IV = 12;
const TAG = 16;

/** AES-256-GCM with associated data: iv ‖ tag ‖ ciphertext. */
export function seal(key: Buffer, plain: Buffer, aad: string): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad));
  const body = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]);
}

/** Opens what `seal` sealed with the same key and associated data; throws otherwise. */
export function open(key: Buffer, sealed: Buffer, aad: string): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV));
  d.setAAD(Buffer.from(aad));
  d.setAuthTag(sealed.subarray(IV, IV + TAG));
  return Buffer.concat([d.update(sealed.subarray(IV + TAG)), d.final()]);
}

/** The associated data a data key is wrapped with: a wrapped key cannot be replayed as another. */
export const wrappedKeyAad = (keyId: string): string => `key:${keyId}`;

/** The store's hot statements, prepared once per connection. */
/**
 * A new data key's insert ($1 to $5: id, alias, tenant, wrapped key, root key id): written only while
 * the process's root key is current, and not over an alias's enabled key.
 */
const KEY_INSERT = `INSERT INTO local_keys (key_id, alias, tenant_id, wrapped_key, state, root_key_id)
       SELECT $1, $2, $3, $4, 'enabled', $5::text
        WHERE $5::text IS NULL OR EXISTS (SELECT 1 FROM root_keys WHERE id = $5::text AND state = 'current')
       ON CONFLICT (alias) WHERE state = 'enabled' DO NOTHING RETURNING key_id`;
const CREATE_KEY: NamedStatement = { name: 'tenantry.local_keys.create', text: KEY_INSERT };
const PUT_SECRET: NamedStatement = {
  name: 'tenantry.local_secrets.put',
  text: `INSERT INTO local_secrets (name, version, key_id, ciphertext)
           SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM local_keys WHERE key_id = $3 AND state = 'enabled')`,
};
const CREATE_SECRET: NamedStatement = {
  name: 'tenantry.local_secrets.create',
  text: `INSERT INTO local_secrets (name, version, key_id, ciphertext)
           SELECT $1, 1, $2, $3 WHERE EXISTS (SELECT 1 FROM local_keys WHERE key_id = $2 AND state = 'enabled')
         ON CONFLICT (name, version) DO NOTHING RETURNING 1`,
};
/**
 * A new tenant's key and its secret's first version in one write: the secret only if the key was
 * made here (its ciphertext is sealed under that key), neither if the alias has an enabled key.
 */
const CREATE_KEY_AND_SECRET: NamedStatement = {
  name: 'tenantry.local_keys.create_with_secret',
  text: `WITH k AS (${KEY_INSERT}),
       s AS (
         INSERT INTO local_secrets (name, version, key_id, ciphertext) SELECT $6, 1, k.key_id, $7 FROM k
         ON CONFLICT (name, version) DO NOTHING RETURNING 1)
       SELECT (SELECT count(*) FROM k)::int AS key, (SELECT count(*) FROM s)::int AS secret`,
};
const GET_SECRET: NamedStatement = {
  name: 'tenantry.local_secrets.get',
  text: 'SELECT version, key_id, ciphertext FROM local_secrets WHERE name = $1 ORDER BY version DESC LIMIT 1',
};
/** A stored secret version's row. */
type SecretRow = {
  version: number;
  key_id: string;
  ciphertext: Buffer;
};

/** The latest version of each of the secrets $1 names. */
export const GET_SECRETS: NamedStatement = {
  name: 'tenantry.local_secrets.get_many',
  text: `SELECT DISTINCT ON (name) name, version, key_id, ciphertext FROM local_secrets
    WHERE name = ANY ($1::text[]) ORDER BY name, version DESC`,
};

/** The data directory's root key (the single-process default), generated on the first start. */
export function loadRootKey(dataDir: string): Buffer {
  const dir = path.join(dataDir, 'keys');
  const file = path.join(dir, 'root.key');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    const key = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
    if (key.length !== 32) throw new Error(`${file} does not hold a 256-bit key`);
    return key;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    fs.writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    return loadRootKey(dataDir);
  }
}

export class LocalKeyStore implements KeyStore, SecretStore {
  private readonly cache = new Map<string, Buffer>();

  /**
   * `rootKeyId` names the root key in `root_keys` (checked at start, local/root-key.ts). With it, a
   * new data key records its root key, and is written only while that root key is current: a process
   * whose key a re-wrap retired writes nothing under it. `relaxed`: sessions with
   * `synchronous_commit = off`, for provisional writes (StoreWrite).
   */
  constructor(
    private readonly db: Queryable,
    private readonly rootKey: Buffer,
    private readonly rootKeyId?: string,
    private readonly relaxed?: Queryable,
  ) {}

  /** Where a write goes: the relaxed sessions for a provisional one, when there are any. */
  private writer(opts?: StoreWrite): Queryable {
    return opts?.provisional && this.relaxed ? this.relaxed : this.db;
  }

  /** A new data key: its id, its material, and KEY_INSERT's parameters for it under `alias`. */
  private newKey(tenantId: string | null, alias: string) {
    const keyId = `lk_${randomBytes(12).toString('hex')}`;
    const material = randomBytes(32);
    const params = [
      keyId,
      alias,
      tenantId,
      seal(this.rootKey, material, wrappedKeyAad(keyId)),
      this.rootKeyId ?? null,
    ];
    return { keyId, material, params };
  }

  /** A key this process wrote: the credentials written next under its alias need not read it back. */
  private remember(alias: string, keyId: string, material: Buffer): void {
    this.cache.set(keyId, material);
    this.aliases.set(alias, keyId);
  }

  async ensureKey(tenantId: string | null, alias: string, opts?: StoreWrite): Promise<{ keyId: string }> {
    const { keyId, material, params } = this.newKey(tenantId, alias);
    const { rows } = await this.writer(opts).query<{ key_id: string }>(named(CREATE_KEY), params);
    if (rows[0]) {
      this.remember(alias, keyId, material);
      return { keyId };
    }
    const now = await this.describeKey(alias); // it existed already
    if (!now) {
      if (this.rootKeyId) throw rootKeyRetired(this.rootKeyId);
      throw new Error(`key ${alias} missing after create`);
    }
    return { keyId: now.keyId };
  }

  async describeKey(alias: string): Promise<{ keyId: string; state: 'enabled' | 'destroyed' } | null> {
    const { rows } = await this.db.query<{ key_id: string; state: 'enabled' | 'destroyed' }>(
      `SELECT key_id, state FROM local_keys WHERE alias = $1 ORDER BY (state = 'enabled') DESC, created_at DESC LIMIT 1`,
      [alias],
    );
    const r = rows[0];
    return r ? { keyId: r.key_id, state: r.state } : null;
  }

  async shredKey(alias: string): Promise<void> {
    const { rows } = await this.db.query<{ key_id: string }>(
      `UPDATE local_keys SET wrapped_key = NULL, state = 'destroyed', destroyed_at = now()
        WHERE alias = $1 AND state = 'enabled' RETURNING key_id`,
      [alias],
    );
    for (const r of rows) this.cache.delete(r.key_id);
    this.aliases.delete(alias);
  }

  private async dataKey(keyId: string): Promise<Buffer> {
    const hit = this.cache.get(keyId);
    if (hit) return hit;
    const { rows } = await this.db.query<{ wrapped_key: Buffer | null }>(
      'SELECT wrapped_key FROM local_keys WHERE key_id = $1',
      [keyId],
    );
    const wrapped = rows[0]?.wrapped_key;
    if (!wrapped) throw new Error(`key ${keyId} is destroyed or unknown`);
    let key: Buffer;
    try {
      key = open(this.rootKey, wrapped, wrappedKeyAad(keyId));
    } catch {
      // Never the bare crypto error ("unable to authenticate data"): say what it means.
      throw new TenantryError(
        'SECRET_UNAVAILABLE',
        `data key ${keyId} is not wrapped with this process's root key: the store was re-wrapped under a new root key, or this process was given another one; restart it with the store's root key (docs/operations.md, "The root key")`,
        { retryable: true },
      );
    }
    if (this.cache.size > 1000) this.cache.clear();
    this.cache.set(keyId, key);
    return key;
  }

  /** alias → enabled key id; an alias only ever moves to a new key after a shred, which clears it. */
  private readonly aliases = new Map<string, string>();

  private async enabledKeyId(alias: string): Promise<string> {
    const hit = this.aliases.get(alias);
    if (hit) return hit;
    const key = await this.describeKey(alias);
    if (key?.state !== 'enabled') throw new Error(`key ${alias} is not enabled`);
    this.aliases.set(alias, key.keyId);
    return key.keyId;
  }

  /**
   * Writes a new version. `nextVersion` lets a caller that just read the secret skip the
   * version lookup; a lost race falls back to reading it.
   */
  async putSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    nextVersion?: number,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number }> {
    const keyId = await this.enabledKeyId(keyAlias);
    const dk = await this.dataKey(keyId);
    for (let attempt = 0; ; attempt++) {
      let version = attempt === 0 ? nextVersion : undefined;
      if (version === undefined) {
        const { rows } = await this.db.query<{ v: number }>(
          'SELECT coalesce(max(version), 0) + 1 AS v FROM local_secrets WHERE name = $1',
          [name],
        );
        version = rows[0]?.v ?? 1;
      }
      const ct = seal(dk, Buffer.from(JSON.stringify(value)), `secret:${name}:${version}`);
      try {
        const res = await this.writer(opts).query(named(PUT_SECRET), [name, version, keyId, ct]);
        if (res.rowCount === 0) {
          this.aliases.delete(keyAlias);
          this.cache.delete(keyId);
          throw new Error(`key ${keyAlias} is not enabled`);
        }
        return { ref: `local-secret://${name}`, version };
      } catch (e) {
        if ((e as { code?: string }).code !== '23505' || attempt > 5) throw e; // lost a race for the version
      }
    }
  }

  async createSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number } | null> {
    const keyId = await this.enabledKeyId(keyAlias);
    const dk = await this.dataKey(keyId);
    const ct = seal(dk, Buffer.from(JSON.stringify(value)), `secret:${name}:1`);
    const { rows } = await this.writer(opts).query(named(CREATE_SECRET), [name, keyId, ct]);
    if (rows[0]) return { ref: `local-secret://${name}`, version: 1 };
    const { rows: exists } = await this.db.query(
      'SELECT 1 FROM local_secrets WHERE name = $1 AND version = 1',
      [name],
    );
    if (exists[0]) return null;
    this.aliases.delete(keyAlias);
    this.cache.delete(keyId);
    throw new Error(`key ${keyAlias} is not enabled`);
  }

  /**
   * A new tenant's key and its secret's first version, in one round trip: null (nothing written, or
   * only the key) when the alias had an enabled key, the secret a first version, or this process's
   * root key was retired; the caller then ensures the key and creates the secret one at a time.
   */
  async createKeyAndSecret(
    tenantId: string,
    alias: string,
    name: string,
    value: Record<string, unknown>,
    opts?: StoreWrite,
  ): Promise<{ keyId: string; ref: string; version: number } | null> {
    const { keyId, material, params } = this.newKey(tenantId, alias);
    const { rows } = await this.writer(opts).query<{ key: number; secret: number }>(
      named(CREATE_KEY_AND_SECRET),
      [...params, name, seal(material, Buffer.from(JSON.stringify(value)), `secret:${name}:1`)],
    );
    if (rows[0]?.key !== 1) return null;
    this.remember(alias, keyId, material);
    return rows[0].secret === 1 ? { keyId, ref: `local-secret://${name}`, version: 1 } : null;
  }

  async getSecret(name: string): Promise<StoredSecret | null> {
    const { rows } = await this.db.query<SecretRow>(named(GET_SECRET), [name]);
    return rows[0] ? this.opened(name, rows[0]) : null;
  }

  async getSecrets(names: readonly string[]): Promise<Map<string, StoredSecret>> {
    const { rows } = await this.db.query<SecretRow & { name: string }>(named(GET_SECRETS), [names]);
    const out = new Map<string, StoredSecret>();
    for (const r of rows) out.set(r.name, await this.opened(r.name, r));
    return out;
  }

  /** A stored version of secret `name`, decrypted. */
  private async opened(name: string, r: SecretRow): Promise<StoredSecret> {
    const dk = await this.dataKey(r.key_id);
    const value = JSON.parse(
      open(dk, r.ciphertext, `secret:${name}:${r.version}`).toString('utf8'),
    ) as Record<string, unknown>;
    return { ref: `local-secret://${name}`, version: r.version, value };
  }

  async deleteSecret(name: string): Promise<void> {
    await this.db.query('DELETE FROM local_secrets WHERE name = $1', [name]);
  }
}

function rootKeyRetired(rootKeyId: string): TenantryError {
  return new TenantryError(
    'SECRET_UNAVAILABLE',
    `root key ${rootKeyId} of this process is no longer current (a re-wrap retired it): nothing was written under it; restart the process with the new root key (docs/operations.md, "The root key")`,
    // Another process, holding the current key, may take the operation up.
    { retryable: true },
  );
}
