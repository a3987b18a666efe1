/**
 * The HTTP floor of scripts/bench/api.ts: about the least an HTTP service does to answer the list and
 * the one-tenant routes. node:http, the control plane's own statement functions (db/repo.ts) over the
 * same kind of connections as the control plane's (a read pipeline of its default size, a pool of its
 * default size behind it, over the embedded server's Unix socket), and the body as they render it. No framework, routing table, auth, validation,
 * logging, error mapping or request id: what the API adds on top of one HTTP round trip is the
 * API's rate over this one's.
 *
 *   node --import tsx scripts/bench/http-floor.ts <postgres url> <pool size> [read pipelines]
 *
 * Prints {"port": N} once it listens on 127.0.0.1; serves until killed.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { ReadPipeline } from '../../control-plane/src/db/read-pipeline.js';
import { findTenantDetail, listTenants, tenantDetailJson } from '../../control-plane/src/db/repo.js';

const [url, size, pipelines] = [process.argv[2], Number(process.argv[3] ?? 10), Number(process.argv[4] ?? 2)];
if (!url) throw new Error('usage: http-floor.ts <postgres url> <pool size> [read pipelines]');
const pool = new pg.Pool({ connectionString: url, max: size });
const reads = pipelines > 0 ? new ReadPipeline(url, pipelines, pool) : pool;

const DETAIL = '/v1/tenants/';

function read(path: string): Promise<string | null> {
  if (path.startsWith('/v1/tenants?')) return listTenants(pool, { limit: 50 }, reads).then((p) => p.json);
  if (!path.startsWith(DETAIL)) return Promise.resolve(null);
  return findTenantDetail(reads, decodeURIComponent(path.slice(DETAIL.length))).then(
    (d) => d && tenantDetailJson(d.tenantJson, d.activeOperation, d.promotion),
  );
}

const server = http.createServer((req, res) => {
  read(req.url ?? '').then(
    (body) => {
      if (body === null) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(body);
    },
    (err: Error) => {
      res.writeHead(500).end(err.message);
    },
  );
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
// A normal exit on SIGTERM, so a --cpu-prof (TENANTRY_BENCH_FLOOR_NODE_ARGS) is written.
process.once('SIGTERM', () => process.exit(0));
