-- Up Migration
-- A cluster's connection budget checked in one round trip (services/capacity.ts, docs/operations.md).
-- Expand-only: two new functions an earlier build ignores.
--
-- tenantry_connections_committed: the connection limits committed on a cluster, the pool login's once
-- plus each live tenant's tier limit (`limits`: tier → limit), plus what in-flight or resumable
-- promotions add on top of their tenant's current tier.
CREATE FUNCTION tenantry_connections_committed(limits jsonb, pool_login int)
RETURNS int
LANGUAGE sql STABLE AS $$
  WITH lim (tier, n) AS (SELECT key, value::int FROM jsonb_each_text(limits))
  SELECT (pool_login
    + coalesce((SELECT sum(l.n) FROM tenants t JOIN lim l ON l.tier = t.tier
                 WHERE t.status <> 'offboarded'), 0)
    + coalesce((SELECT sum(greatest(lt.n - coalesce(lf.n, 0), 0))
                  FROM operations o
                  JOIN tenants t ON t.id = o.tenant_id
                  JOIN lim lt ON lt.tier = o.params ->> 'toTier'
                  LEFT JOIN lim lf ON lf.tier = t.tier
                 WHERE o.kind = 'promote' AND t.status <> 'offboarded'
                   AND (o.status IN ('queued', 'running')
                        OR (o.status = 'failed' AND o.progress ->> 'resumable' = 'true'))), 0))::int
$$;

-- tenantry_admit_connections: takes the cluster's budget row (recording the settings just read from
-- the server), then sums in a statement of its own: VOLATILE, so under READ COMMITTED the sum takes
-- its snapshot once the row is held and sees everything the row's previous holder committed.
CREATE FUNCTION tenantry_admit_connections(
  p_cluster text, p_max_connections int, p_superuser_reserved int, p_reserved int, p_limits jsonb, p_pool_login int)
RETURNS int
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  n int;
BEGIN
  INSERT INTO connection_budgets AS b (cluster, max_connections, superuser_reserved_connections, reserved_connections)
  VALUES (p_cluster, p_max_connections, p_superuser_reserved, p_reserved)
  ON CONFLICT (cluster) DO UPDATE SET max_connections = EXCLUDED.max_connections,
    superuser_reserved_connections = EXCLUDED.superuser_reserved_connections,
    reserved_connections = EXCLUDED.reserved_connections, read_at = now();
  SELECT tenantry_connections_committed(p_limits, p_pool_login) INTO n;
  RETURN n;
END
$$;
