import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { type Config, loadConfig, StartRefused } from './config.js';
import { Db } from './db/db.js';
import { migrate } from './db/migrate.js';
import { rewrapStore } from './local/rekey.js';
import { readKeyFile, readRootKey, rootKeyLockHolders, tryLockRootKeyExclusive } from './local/root-key.js';
import { loggerOptions } from './logger.js';
import { type ControlDatabase, openControlDatabase } from './runtime.js';

/**
 * `npm run rekey -- --new-key-file <file> [--batch-size <n>]`: re-wraps the local key store under a new
 * root key (local/rekey.ts), with every control-plane process stopped. The old key is the configured
 * one (TENANTRY_ROOT_KEY_FILE, TENANTRY_ROOT_KEY or the data directory's), as a start reads it.
 * Resumable: run it again after any interruption. Prints one JSON line to stdout; diagnostics go to
 * stderr. Exit 0: re-wrapped (or already); 2: refused, with what to do; 1: failed.
 */
const USAGE = 'usage: npm run rekey -- --new-key-file <file> [--batch-size <n>]';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'new-key-file': { type: 'string' },
      'batch-size': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const newKeyFile = values['new-key-file'];
  const batchSize = Number(values['batch-size'] ?? 100);
  if (!newKeyFile || !Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    throw new StartRefused(USAGE);
  }
  const config: Config = loadConfig();
  if (config.target !== 'local') {
    throw new StartRefused(
      'TENANTRY_TARGET=aws keeps its keys in KMS and needs no local root key: there is nothing to re-wrap',
    );
  }
  if (config.rootKey.from === 'TENANTRY_DATA_DIR' && !fs.existsSync(config.rootKey.path)) {
    throw new StartRefused(
      `no root key at ${config.rootKey.path}: set TENANTRY_ROOT_KEY_FILE (or TENANTRY_ROOT_KEY) to the key the store uses now`,
    );
  }
  const log = pino(loggerOptions(config.logLevel), pino.destination(2));
  const oldKey = readRootKey(config.rootKey);
  const file = path.resolve(newKeyFile);
  const newKey = { key: readKeyFile(file, `--new-key-file (${file})`), source: `--new-key-file (${file})` };

  let control: ControlDatabase | undefined;
  let db: Db | undefined;
  try {
    control = await openControlDatabase(config, log);
    db = new Db(control.url, { max: 2, acquireTimeoutMs: config.dbAcquireTimeoutMs });
    await migrate(db.pool, log);
    // The re-wrap runs only while no process runs, and no process starts until it is done.
    const session = new pg.Client({ connectionString: control.url, application_name: 'tenantry-rekey' });
    session.on('error', () => undefined);
    await session.connect();
    try {
      if (!(await tryLockRootKeyExclusive(session))) {
        const n = await rootKeyLockHolders(session);
        throw new StartRefused(
          `${n} Tenantry process${n === 1 ? ' is' : 'es are'} running against this control database (holding the root-key lock): ` +
            'stop every process first; the re-wrap runs with the control plane stopped (docs/operations.md, "Re-wrapping under a new root key")',
        );
      }
      const result = await rewrapStore(db, oldKey, newKey, {
        batchSize,
        log,
        ...(config.faultHoldFile ? { faultHoldFile: config.faultHoldFile } : {}),
      });
      process.stdout.write(`${JSON.stringify(result)}\n`);
      const where =
        config.rootKey.from === 'TENANTRY_DATA_DIR'
          ? `copy it over ${config.rootKey.path}`
          : config.rootKey.from === 'TENANTRY_ROOT_KEY'
            ? 'set TENANTRY_ROOT_KEY to its contents'
            : `point TENANTRY_ROOT_KEY_FILE at it (now ${config.rootKey.path})`;
      process.stderr.write(
        `\nThe store is under root key ${result.rootKeyId}, the one in ${file}: ${where} on every process, then start them. ` +
          'Keep the old key with the backups taken before now: restoring one of them needs it.\n',
      );
    } finally {
      await session.end().catch(() => undefined);
    }
  } finally {
    await db?.close().catch(() => undefined);
    await control?.stop().catch(() => undefined);
  }
}

main().catch((e: unknown) => {
  if (e instanceof StartRefused) {
    process.stderr.write(`tenantry rekey: ${e.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`tenantry rekey failed: ${(e as Error)?.message ?? String(e)}\n`);
  process.exit(1);
});
