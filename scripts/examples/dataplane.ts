/**
 * The data-plane client, end to end: a unit of work per tenant, routed, scoped and retried by the
 * client (docs/data-plane.md).
 *
 *   npx tsx scripts/examples/dataplane.ts
 *     starts a scratch control plane (npm start's entry point, embedded Postgres), onboards a pool and
 *     a bridge tenant, and runs units of work through the client while one tenant's credentials rotate;
 *
 *   TENANTRY_URL=http://127.0.0.1:3000 TENANTRY_TOKEN=<a dataplane token> npx tsx scripts/examples/dataplane.ts <slug>…
 *     runs them against your control plane's tenants instead (nothing is onboarded or rotated).
 *
 * An application imports the client from the package (`tenantry/client`); this script, inside the
 * repository, imports it by path.
 */
import { createTenantryClient, httpDescriptorSource } from '../../control-plane/src/client/index.js';
import { startControlPlane } from '../bench/lib.js';

const given = process.env.TENANTRY_URL && process.env.TENANTRY_TOKEN;
const cp = given ? undefined : await startControlPlane({ TENANTRY_ROTATION_SCHEDULE: 'off' });
const url = process.env.TENANTRY_URL ?? (cp?.base as string);
const admin = cp?.token;

async function api(path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return (await res.json()) as { operation?: { id: string }; token?: string; status?: string };
}
async function done(operationId: string) {
  while ((await api(`/v1/operations/${operationId}`)).status !== 'succeeded')
    await new Promise((r) => setTimeout(r, 100));
}

let slugs = process.argv.slice(2);
let token = process.env.TENANTRY_TOKEN as string;
if (cp) {
  slugs = ['example-pool', 'example-bridge'];
  for (const [slug, tier] of [
    ['example-pool', 'pool'],
    ['example-bridge', 'bridge'],
  ] as const)
    await done((await api('/v1/tenants', { slug, name: slug, tier })).operation?.id as string);
  // The data plane reads descriptors with a token of its own role.
  token = (await api('/v1/tokens', { name: 'example data plane', role: 'dataplane' })).token as string;
}

const client = createTenantryClient({
  descriptors: httpDescriptorSource({ url, token }),
  descriptorTtlMs: 1000,
});

async function unit(slug: string, i: number) {
  // One transaction, as the tenant: on the pool tier the client has set app.tenant_id for it.
  return client.withTenant(slug, async (db) => {
    await db.query('INSERT INTO users (tenant_id, email) VALUES ($1, $2)', [
      db.tenantId,
      `user${i}@example.com`,
    ]);
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    return rows[0]?.n;
  });
}

for (const slug of slugs) process.stdout.write(`${slug}: ${await unit(slug, 0)} user(s)\n`);
if (cp) {
  // A rotation while the application keeps working: nothing reaches it.
  const rotation = await api(`/v1/tenants/${slugs[1]}/credential-rotations`, { graceSeconds: 60 });
  const writes = Array.from({ length: 200 }, (_, i) => unit(slugs[i % 2] as string, i + 1));
  await done(rotation.operation?.id as string);
  await Promise.all(writes);
  for (const slug of slugs)
    process.stdout.write(`${slug}: ${await unit(slug, 1000)} user(s), after a rotation\n`);
}
process.stdout.write(
  `${await client.metrics.registry.getSingleMetricAsString('tenantry_client_units_total')}\n`,
);
await client.close();
await cp?.stop();
