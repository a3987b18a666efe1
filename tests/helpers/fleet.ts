import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { tenantObjectName } from '../../control-plane/src/domain/naming.js';
import { adminUrl, dropStackDatabases, rand, superQuery } from './runtime.js';
import { freePort, isRunning, kill9, type ServerProcess, startServer } from './server.js';

/**
 * Several control-plane processes on one external control database, started as an operator starts
 * them (`control-plane/src/server.ts` with its environment), each with a data directory of its own
 * and the root key shared through TENANTRY_ROOT_KEY_FILE. The databases live on the shared test
 * cluster; `drop()` removes them, the tenant roles of this fleet's slugs, and the directories.
 */
export interface Fleet {
  controlDb: string;
  dataDb: string;
  /** Slugs of this fleet start with it (so its tenant roles can be told from other files'). */
  prefix: string;
  adminToken: string;
  /** A directory for key files and hold files (mode 755: the test cluster's OS user may read it). */
  dir: string;
  /** The root key file every process gets unless told otherwise. */
  keyFile: string;
  /** The environment every process shares, with `extra` on top. */
  env(extra?: Record<string, string>): Record<string, string>;
  /** Starts a process and waits until it is ready (GET /readyz 200). */
  start(extra?: Record<string, string>, port?: number): Promise<Proc>;
  drop(): Promise<void>;
}

export interface Proc {
  proc: ServerProcess;
  port: number;
  base: string;
  env: Record<string, string>;
}

export const ROOT_KEY_ENV = 'TENANTRY_ROOT_KEY_FILE';

/** A new root key file (base64 of 32 random bytes, mode 600). */
export function writeKeyFile(file: string): string {
  fs.writeFileSync(file, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  return file;
}

export async function createFleet(name: string): Promise<Fleet> {
  const id = rand(3);
  const controlDb = `cp_${name}_${id}`;
  const dataDb = `dp_${name}_${id}`;
  await superQuery('postgres', `CREATE DATABASE ${controlDb} TEMPLATE ${inject('templateDb')}`);
  await superQuery('postgres', `CREATE DATABASE ${dataDb}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tenantry-${name}-`));
  fs.chmodSync(dir, 0o755);
  const keyFile = writeKeyFile(path.join(dir, 'root.key'));
  const adminToken = `tnt_${rand(24)}`;
  const procs: Proc[] = [];
  const dataDirs: string[] = [];
  const env = (extra: Record<string, string> = {}) => {
    const dataDir = fs.mkdtempSync(path.join(dir, 'data-'));
    dataDirs.push(dataDir);
    return {
      DATABASE_URL: adminUrl(controlDb),
      TENANTRY_DATAPLANE_URL: adminUrl(dataDb),
      TENANTRY_DATA_DIR: dataDir,
      TENANTRY_ADMIN_TOKEN: adminToken,
      [ROOT_KEY_ENV]: keyFile,
      TENANTRY_OPERATION_LEASE_MS: '1500',
      ...extra,
    };
  };
  const fleet: Fleet = {
    controlDb,
    dataDb,
    prefix: `${name}-${id}`,
    adminToken,
    dir,
    keyFile,
    env,
    async start(extra = {}, port?: number) {
      const p = port ?? (await freePort());
      const e = env(extra);
      const proc = await startServer(p, e, { timeoutMs: 60_000 });
      const started = { proc, port: p, base: `http://127.0.0.1:${p}`, env: e };
      procs.push(started);
      await untilReady(started);
      return started;
    },
    async drop() {
      for (const p of procs) if (isRunning(p.proc)) await kill9(p.proc);
      await dropStackDatabases(controlDb, dataDb);
      // The tenant roles of this fleet's slugs: no other file's slugs carry its random prefix.
      const roles = await superQuery<{ rolname: string }>(
        'postgres',
        'SELECT rolname FROM pg_roles WHERE strpos(rolname, $1) > 0',
        [tenantRolePrefix(fleet.prefix)],
      );
      for (const r of roles) await superQuery('postgres', `DROP ROLE IF EXISTS "${r.rolname}"`);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return fleet;
}

/**
 * What the Postgres names of a fleet's tenants start with (its slugs start with `prefix-`); a tenant's
 * login roles carry it inside their names.
 */
export const tenantRolePrefix = (prefix: string): string => tenantObjectName(`${prefix}-x`).replace(/x$/, '');

/** Waits until the process answers GET /readyz 200 (bounded; a process that exits ends the wait). */
export async function untilReady(p: Proc, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const status = await fetch(`${p.base}/readyz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (!isRunning(p.proc) || Date.now() > until) {
      throw new Error(`process on ${p.port} never became ready (last /readyz ${status}): ${p.proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** An API call with the fleet's admin token. */
export const call = (base: string, token: string, url: string, init: RequestInit = {}) =>
  fetch(`${base}${url}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...init.headers },
  });

export interface Run {
  proc: ChildProcess;
  /** Settles when the process exits. */
  result: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** Starts an entry point as an operator would (bounded: a process still running after `timeoutMs` is killed). */
export function spawnEntry(args: string[], env: Record<string, string>, timeoutMs = 60_000): Run {
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      LOG_LEVEL: 'warn',
      TENANTRY_DRIFT_SCHEDULE: 'off',
      TENANTRY_CONNECTION_OVERCOMMIT: 'allow',
      // As in startStack: a caller asking the pool it holds for a second connection fails at once.
      TENANTRY_DB_HOLD_CHECK: 'on',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout?.on('data', (d) => {
    stdout += String(d);
  });
  proc.stderr?.on('data', (d) => {
    stderr += String(d);
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const result = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    proc.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
  return { proc, result };
}

/** Runs an entry point to its exit. */
export const runToExit = (args: string[], env: Record<string, string>, timeoutMs = 60_000) =>
  spawnEntry(args, env, timeoutMs).result;

/** Waits until every operation in `ids` has ended (bounded); returns their rows. */
export async function untilOperationsEnd(
  controlDb: string,
  ids: string[],
  timeoutMs = 120_000,
): Promise<{ id: string; status: string; attempts: number; tenant_id: string; error: string | null }[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const rows = await superQuery<{
      id: string;
      status: string;
      attempts: number;
      tenant_id: string;
      error: string | null;
    }>(controlDb, 'SELECT id, status, attempts, tenant_id, error FROM operations WHERE id = ANY($1)', [ids]);
    if (
      rows.length === ids.length &&
      rows.every((r) => ['succeeded', 'failed', 'cancelled'].includes(r.status))
    )
      return rows;
    if (Date.now() > until) {
      const open = rows.filter((r) => !['succeeded', 'failed', 'cancelled'].includes(r.status));
      throw new Error(`operations still open after ${timeoutMs} ms: ${JSON.stringify(open.slice(0, 5))}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Everything a start could have written, as one comparable value: a digest of every row of every
 * table of the control database (the job queue's included) and the data plane's tenant objects.
 */
export async function snapshot(
  fleet: Pick<Fleet, 'controlDb' | 'dataDb' | 'prefix'>,
): Promise<Record<string, string>> {
  const tables = await superQuery<{ t: string }>(
    fleet.controlDb,
    `SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname IN ('public', 'graphile_worker') ORDER BY 1`,
  );
  const out: Record<string, string> = {};
  for (const { t } of tables) {
    // A running process's cron moves its own bookkeeping on at every tick (last_execution): only
    // which crontab entries exist is something a refused start could have written.
    const value = t === 'graphile_worker._private_known_crontabs' ? 'x.identifier' : 'x::text';
    const [row] = await superQuery<{ d: string }>(
      fleet.controlDb,
      `SELECT md5(coalesce(string_agg(${value}, E'\\n' ORDER BY ${value}), '')) AS d FROM ${t} x`,
    );
    out[t] = row?.d ?? '';
  }
  const [roles] = await superQuery<{ d: string }>(
    'postgres',
    `SELECT string_agg(rolname, ',' ORDER BY rolname) AS d FROM pg_roles
      WHERE strpos(rolname, $1) > 0 OR starts_with(rolname, $2)`,
    [tenantRolePrefix(fleet.prefix), fleet.dataDb],
  );
  const [schemas] = await superQuery<{ d: string }>(
    fleet.dataDb,
    `SELECT string_agg(nspname, ',' ORDER BY nspname) AS d FROM pg_namespace`,
  );
  out['cluster roles'] = roles?.d ?? '';
  out['data-plane schemas'] = schemas?.d ?? '';
  return out;
}
