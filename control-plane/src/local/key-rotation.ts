import type { Db } from '../db/db.js';
import type { KeyRotated, StoreWrite } from '../domain/ports.js';
import { LocalKeyStore, open, seal, wrappedKeyAad } from './keystore.js';

/**
 * The local key store with data-key rotation (KeyStore.rotateKey). A tenant's data key is replaced
 * in four resumable steps, each idempotent, so a run killed anywhere is finished by running it again:
 *
 * 1. a new data key is made under a temporary alias (`<alias>#next`), wrapped by the root key like
 *    every data key (the store's own ensureKey);
 * 2. in one transaction, every version of every secret under the old key is opened with it and
 *    sealed again under the new key, with the same associated data (its name and version);
 * 3. the old key is shredded (its wrapped material deleted: nothing can be opened under it again);
 * 4. the new key takes the alias.
 *
 * Between 3 and 4 the alias has no key, so a secret write under it fails and is retried; only the
 * tenant's own operations write its secrets, and this runs inside one of them.
 */
export class RotatingLocalKeyStore extends LocalKeyStore {
  constructor(
    private readonly control: Db,
    private readonly wrapping: Buffer,
    rootKeyId?: string,
  ) {
    super(control, wrapping, rootKeyId, { query: control.relaxedQuery });
  }

  async rotateKey(alias: string, tenantId: string | null, from?: string): Promise<KeyRotated> {
    const staged = `${alias}#next`;
    const before = await this.enabledKey(alias);
    let next = await this.enabledKey(staged);
    // Replaced already (a run again after one that finished): nothing to do.
    if (from && before && before !== from && !next)
      return { keyId: before, previousKeyId: from, secretVersions: 0 };
    if (!before && !next) throw new Error(`key ${alias} does not exist`);
    if (!next) next = (await this.ensureKey(tenantId, staged)).keyId;
    let moved = 0;
    if (before) {
      moved = await this.reencrypt(before, next);
      await this.shredKey(alias);
    }
    await this.control.query(
      `UPDATE local_keys SET alias = $1 WHERE key_id = $2 AND alias = $3 AND state = 'enabled'`,
      [alias, next, staged],
    );
    return { keyId: next, previousKeyId: before ?? from ?? null, secretVersions: moved };
  }

  /**
   * A write under a key that another process rotated (its cached alias still names the destroyed
   * key) fails once and clears that cache: it is tried once more, under the alias's key now.
   */
  override async putSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    nextVersion?: number,
    opts?: StoreWrite,
  ): Promise<{ ref: string; version: number }> {
    try {
      return await super.putSecret(name, keyAlias, value, nextVersion, opts);
    } catch (e) {
      if (!/is not enabled$/.test((e as Error).message)) throw e;
      return super.putSecret(name, keyAlias, value, undefined, opts);
    }
  }

  private async enabledKey(alias: string): Promise<string | null> {
    const { rows } = await this.control.query<{ key_id: string }>(
      `SELECT key_id FROM local_keys WHERE alias = $1 AND state = 'enabled'`,
      [alias],
    );
    return rows[0]?.key_id ?? null;
  }

  /** Step 2: every secret version under `from` sealed again under `to`, in one transaction. */
  private reencrypt(from: string, to: string): Promise<number> {
    return this.control.tx(async (q) => {
      const { rows: keys } = await q.query<{ key_id: string; wrapped_key: Buffer | null }>(
        `SELECT key_id, wrapped_key FROM local_keys WHERE key_id = ANY ($1::text[]) ORDER BY key_id FOR UPDATE`,
        [[from, to]],
      );
      const material = new Map(
        keys.map((k) => {
          if (!k.wrapped_key) throw new Error(`key ${k.key_id} is destroyed`);
          return [k.key_id, open(this.wrapping, k.wrapped_key, wrappedKeyAad(k.key_id))];
        }),
      );
      const oldKey = material.get(from);
      const newKey = material.get(to);
      if (!oldKey || !newKey) throw new Error(`keys ${from} and ${to} are not both in the store`);
      const { rows } = await q.query<{ name: string; version: number; ciphertext: Buffer }>(
        'SELECT name, version, ciphertext FROM local_secrets WHERE key_id = $1 FOR UPDATE',
        [from],
      );
      for (const r of rows) {
        const aad = `secret:${r.name}:${r.version}`;
        const ciphertext = seal(newKey, open(oldKey, r.ciphertext, aad), aad);
        await q.query(
          'UPDATE local_secrets SET key_id = $3, ciphertext = $4 WHERE name = $1 AND version = $2',
          [r.name, r.version, to, ciphertext],
        );
      }
      return rows.length;
    });
  }
}
