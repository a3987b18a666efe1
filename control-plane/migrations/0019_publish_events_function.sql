-- Up Migration
-- The outbox's publish as one function (db/outbox.ts publishEvents, docs/lifecycle.md). Sent as a
-- statement each time, its numbering and fan-out were parsed and planned on every publish (0.6 ms of
-- the server's time, more than running it); a PL/pgSQL function's statements keep their plans for the
-- session. Expand-only: a new function an earlier build ignores.
--
-- The publishers' lock first; then, in a statement of its own (VOLATILE: under READ COMMITTED it takes
-- its snapshot once the lock is held, so it sees the previous publisher's numbers), up to `batch`
-- committed events in insertion order numbered after the highest `seq`, a pending delivery for every
-- enabled webhook that wants each one (its stream: the event's tenant, or `fleet_stream`), and a
-- delivery job per stream that got one (task `deliver_task`, keyed `key_prefix || webhook || ':' || stream`).
CREATE FUNCTION tenantry_publish_events(batch int, fleet_stream text, deliver_task text, key_prefix text)
RETURNS TABLE (published int, more boolean, streams int)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('tenantry.events.publish'));
  RETURN QUERY
  WITH b AS (SELECT e.id, e.n FROM events e WHERE e.seq IS NULL ORDER BY e.n LIMIT batch + 1),
       pick AS (SELECT x.id, row_number() OVER (ORDER BY x.n) AS ord
                  FROM (SELECT b.id, b.n FROM b ORDER BY b.n LIMIT batch) x),
       base AS (SELECT coalesce(max(e.seq), 0) AS base FROM events e),
       u AS (UPDATE events e SET seq = base.base + pick.ord, published_at = now()
               FROM pick, base WHERE e.id = pick.id
             RETURNING e.id, e.seq, e.type, e.tenant_id),
       d AS (INSERT INTO webhook_deliveries (webhook_id, event_id, event_seq, stream, status)
             SELECT w.id, u.id, u.seq, coalesce(u.tenant_id::text, fleet_stream), 'pending'
               FROM u JOIN webhooks w ON w.status = 'enabled' AND u.type = ANY (w.event_types)
             ON CONFLICT (webhook_id, event_id) DO NOTHING
             RETURNING webhook_id, stream),
       s AS (SELECT DISTINCT d.webhook_id, d.stream FROM d),
       ins AS (INSERT INTO webhook_streams (webhook_id, stream) SELECT s.webhook_id, s.stream FROM s
               ON CONFLICT DO NOTHING),
       jobs AS (SELECT graphile_worker.add_job(deliver_task,
                         json_build_object('webhookId', s.webhook_id, 'stream', s.stream),
                         job_key := key_prefix || s.webhook_id || ':' || s.stream, max_attempts := 5)
                  FROM s)
  SELECT (SELECT count(*) FROM u)::int, (SELECT count(*) FROM b) > batch, (SELECT count(*) FROM jobs)::int;
END
$$;
