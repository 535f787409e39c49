-- (History: the shape the audit writer used until 882a584; AuditEvents have their own store
-- since, migration 0018, benches/AUDIT.md.)
-- What PostgreSQL spends storing AuditEvents the way the audit writer does, without the server:
-- 10,000 AuditEvent-shaped writes (resource row, history row, the index rows of a read's event:
-- 8 tokens, 1 string, 1 date, 2 references), one statement per table, in one transaction that
-- is rolled back. Run it against a benchmark database (after `KEEP_DB=1 benches/run.sh`, so the
-- tables and their indexes have the benchmark's size):
--
--   psql -d fhir_bench_server -f benches/audit_cost.sql
--
-- Per-statement times are printed by \timing; divide by 10,000 for the cost per event.
\timing on
BEGIN;
CREATE TEMP TABLE audit_cost_rids (rid bigint) ON COMMIT DROP;
-- Time-ordered ids, like the writer's UUIDv7s; a body the size of a read's AuditEvent (~1.8 kB).
WITH ins AS (
    INSERT INTO resources (res_type, id, version, last_updated, deleted, body)
    SELECT 'AuditEvent', 'audit-cost-' || lpad(g::text, 8, '0'), 1, g, false,
           '{"resourceType":"AuditEvent","note":"' || repeat('x', 1750) || '"}'
    FROM generate_series(1, 10000) g
    RETURNING rid)
INSERT INTO audit_cost_rids SELECT rid FROM ins;
INSERT INTO resource_history (rid, res_type, id, version, last_updated, deleted, method, body)
SELECT r.rid, r.res_type, r.id, r.version, r.last_updated, r.deleted, 'POST', r.body
FROM resources r JOIN audit_cost_rids USING (rid);
INSERT INTO idx_token (rid, res_type, param, system, code, text)
SELECT rid, 'AuditEvent', p, 'http://example.org/cs', c, NULL
FROM audit_cost_rids, (VALUES ('action', 'R'), ('agent-role', 'admin'), ('altid', 'cli:admin'),
    ('entity-role', '1'), ('entity-type', '1'), ('outcome', '0'), ('subtype', 'read'),
    ('type', 'rest')) v(p, c);
INSERT INTO idx_string (rid, res_type, param, norm, exact)
SELECT rid, 'AuditEvent', 'address', '127.0.0.1', '127.0.0.1' FROM audit_cost_rids;
INSERT INTO idx_date (rid, res_type, param, lo, hi)
SELECT rid, 'AuditEvent', 'date', rid * 1000, rid * 1000 + 999 FROM audit_cost_rids;
-- A read names a random patient twice (entity, patient).
INSERT INTO idx_reference (rid, res_type, param, target_type, target_id, url)
SELECT rid, 'AuditEvent', p, 'Patient', md5(random()::text), NULL
FROM audit_cost_rids, (VALUES ('entity'), ('patient')) v(p);
ROLLBACK;
