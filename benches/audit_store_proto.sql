-- (History: the audit store as first proposed; the one built since, migration 0018, keeps the
-- search values in one terms column and references in audit_ref: benches/AUDIT.md.)
-- The audit store proposed in benches/AUDIT.md, as a prototype to time against
-- benches/audit_cost.sql on the same database: one typed row per AuditEvent (no history row: they
-- are never updated) and a side table of entity references, 6 B-tree entries in all against ~35.
-- The time that counts is the INSERT after "measured:" (the last line timed is the ROLLBACK).
-- It creates its tables inside a transaction, fills them with 200,000 events so that the
-- indexes have a size, times 10,000 more, and rolls everything back:
--
--   psql -d fhir_bench_server -f benches/audit_store_proto.sql
\timing on
BEGIN;
CREATE TABLE audit_proto (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE,
  recorded bigint NOT NULL,
  type_code text NOT NULL, subtype_code text NOT NULL, action text NOT NULL, outcome text NOT NULL,
  altid text, role text, client text, address text, patient text,
  body text NOT NULL);
CREATE INDEX audit_proto_recorded ON audit_proto (recorded);
CREATE INDEX audit_proto_patient ON audit_proto (patient, recorded) WHERE patient IS NOT NULL;
CREATE INDEX audit_proto_altid ON audit_proto (altid, recorded);
CREATE TABLE audit_proto_entity (seq bigint NOT NULL, target text NOT NULL);
CREATE INDEX audit_proto_entity_target ON audit_proto_entity (target, seq);
-- prefill like the benchmark's audit volume
INSERT INTO audit_proto (id, recorded, type_code, subtype_code, action, outcome, altid, role, client, address, patient, body)
SELECT 'pre-' || lpad(g::text, 8, '0'), g, 'rest', 'read', 'R', '0', 'cli:admin', 'admin', 'fhir-scheduler-cli', '127.0.0.1', 'Patient/' || md5(g::text), '{"resourceType":"AuditEvent","note":"' || repeat('x', 1750) || '"}' FROM generate_series(1, 200000) g;
INSERT INTO audit_proto_entity SELECT seq, patient FROM audit_proto;
\echo measured:
WITH ins AS (
INSERT INTO audit_proto (id, recorded, type_code, subtype_code, action, outcome, altid, role, client, address, patient, body)
SELECT 'audit-cost-' || lpad(g::text, 8, '0'), 300000 + g, 'rest', 'read', 'R', '0', 'cli:admin', 'admin', 'fhir-scheduler-cli', '127.0.0.1', 'Patient/' || md5(random()::text), '{"resourceType":"AuditEvent","note":"' || repeat('x', 1750) || '"}' FROM generate_series(1, 10000) g RETURNING seq, patient)
INSERT INTO audit_proto_entity SELECT seq, patient FROM ins;
ROLLBACK;
