import { KMSClient } from '@aws-sdk/client-kms';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { KeyStore, SecretStore } from '../domain/ports.js';
import { deleteAlias, describeKey, ensureAliasedKey, listKeyAliases, scheduleKeyDeletion } from './kms.js';
import {
  deleteSecretNow,
  getSecretValue,
  listSecretsByTag,
  putSecretValue,
  SecretVersionTaken,
  secretVersionOf,
} from './secrets.js';

export interface AwsSecretsSettings {
  region: string;
  /** One endpoint for KMS and Secrets Manager (an emulator); the SDK's own resolution otherwise. */
  endpoint?: string;
  /** How long a shredded tenant key waits, pending deletion, before KMS deletes it (7–30 days). */
  keyDeletionWindowDays: number;
}

const MANAGED_BY = { 'tenantry:managed-by': 'tenantry' } as const;
const TENANT_KEY_PREFIX = 'alias/tenantry/';

/** A secret as a drift sweep sees it (drift/catalog.ts `ObservedSecret`'s shape). */
export interface InventorySecret {
  name: string;
  version: number;
  keyId: string;
  keyAlias: string;
  keyState: string;
}

/**
 * `TENANTRY_SECRETS=aws` on the local target: each tenant's key is a KMS key (`alias/tenantry/<slug>`)
 * and its credentials a Secrets Manager secret (`tenantry/<slug>/connection`, encrypted with that
 * key), instead of the local key store in the control database. The ports are the same, so the local
 * engine, promotion and drift repair run unchanged.
 *
 * - A secret's reference (`secretRef`) is its ARN.
 * - Versions are numbered: version n is written with the ClientRequestToken `secretVersionToken(n)`,
 *   which Secrets Manager makes the version's id, so a retried write is idempotent and two writers
 *   cannot both write version n.
 * - `shredKey` schedules the key's deletion (after `keyDeletionWindowDays`) and removes its alias;
 *   `deleteSecret` deletes the secret without a recovery window, so the slug can be onboarded again
 *   at once (the local store deletes its rows the same way).
 */
export class AwsKeyStore implements KeyStore, SecretStore {
  readonly kms: KMSClient;
  readonly secrets: SecretsManagerClient;

  constructor(private readonly settings: AwsSecretsSettings) {
    const common = { region: settings.region, ...(settings.endpoint ? { endpoint: settings.endpoint } : {}) };
    this.kms = new KMSClient(common);
    this.secrets = new SecretsManagerClient(common);
  }

  async ensureKey(tenantId: string | null, alias: string): Promise<{ keyId: string }> {
    const key = await ensureAliasedKey(this.kms, alias, {
      description: tenantId ? `Tenantry tenant key (${tenantId})` : `Tenantry platform key (${alias})`,
      tags: { ...MANAGED_BY, ...(tenantId ? { 'tenantry:tenant-id': tenantId } : {}) },
      deletionWindowDays: this.settings.keyDeletionWindowDays,
    });
    return { keyId: key.keyId };
  }

  /** Schedules the key's deletion (every secret under it unreadable from then on), then drops its alias. */
  async shredKey(alias: string): Promise<void> {
    const key = await describeKey(this.kms, alias);
    if (!key) return;
    if (key.state !== 'PendingDeletion') {
      await scheduleKeyDeletion(this.kms, key.keyId, this.settings.keyDeletionWindowDays);
    }
    await deleteAlias(this.kms, alias);
  }

  async describeKey(alias: string): Promise<{ keyId: string; state: 'enabled' | 'destroyed' } | null> {
    const key = await describeKey(this.kms, alias);
    if (!key) return null;
    return { keyId: key.keyId, state: key.state === 'Enabled' ? 'enabled' : 'destroyed' };
  }

  async putSecret(
    name: string,
    keyAlias: string,
    value: Record<string, unknown>,
    nextVersion?: number,
  ): Promise<{ ref: string; version: number }> {
    const key = await describeKey(this.kms, keyAlias);
    if (key?.state !== 'Enabled') throw new Error(`key ${keyAlias} is not enabled`);
    for (let attempt = 0; ; attempt++) {
      const version =
        attempt === 0 && nextVersion !== undefined
          ? nextVersion
          : secretVersionOf((await getSecretValue(this.secrets, name))?.versionId) + 1;
      try {
        const written = await putSecretValue(this.secrets, name, value, {
          kmsKeyId: key.arn,
          version,
          tags: { ...MANAGED_BY, 'tenantry:key-alias': keyAlias },
        });
        return { ref: written.arn, version };
      } catch (e) {
        if (!(e instanceof SecretVersionTaken) || attempt > 5) throw e; // lost a race for the version
      }
    }
  }

  async getSecret(
    name: string,
  ): Promise<{ ref: string; version: number; value: Record<string, unknown> } | null> {
    const s = await getSecretValue(this.secrets, name);
    return s ? { ref: s.arn, version: secretVersionOf(s.versionId), value: s.value } : null;
  }

  async deleteSecret(name: string): Promise<void> {
    await deleteSecretNow(this.secrets, name);
  }

  /**
   * The store read whole, without decrypting anything, for a drift sweep: each Tenantry secret with
   * its current version and key, and each tenant key alias. A key is read as enabled while its alias
   * exists (shredding removes the alias); a secret whose key has no alias is read as under a
   * destroyed key.
   */
  async inventory(): Promise<{ secrets: Map<string, InventorySecret>; keys: Map<string, string> }> {
    const [keys, listed] = await Promise.all([
      listKeyAliases(this.kms, TENANT_KEY_PREFIX),
      listSecretsByTag(this.secrets, 'tenantry:managed-by', 'tenantry'),
    ]);
    const aliasOf = new Map([...keys].map(([alias, keyId]) => [keyId, alias]));
    const secrets = new Map<string, InventorySecret>();
    for (const s of listed) {
      if (!s.Name || s.DeletedDate) continue;
      const current = Object.entries(s.SecretVersionsToStages ?? {}).find(([, st]) =>
        st.includes('AWSCURRENT'),
      )?.[0];
      const keyId = keyIdOf(s.KmsKeyId ?? '');
      const keyAlias = aliasOf.get(keyId);
      secrets.set(s.Name, {
        name: s.Name,
        version: secretVersionOf(current),
        keyId,
        keyAlias: keyAlias ?? s.Tags?.find((t) => t.Key === 'tenantry:key-alias')?.Value ?? '',
        keyState: keyAlias ? 'enabled' : 'destroyed',
      });
    }
    return { secrets, keys };
  }

  close(): void {
    this.kms.destroy();
    this.secrets.destroy();
  }
}

/** `arn:aws:kms:<region>:<account>:key/<id>` (or a bare id) → the id. */
function keyIdOf(ref: string): string {
  const m = /:key\/([^/]+)$/.exec(ref);
  return m?.[1] ?? ref;
}
