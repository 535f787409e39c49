-- The audit hash chain: one row per stored AuditEvent (the AuditEvents themselves are ordinary
-- `resources` rows, so FHIR search over them works). hash = SHA-256(prev_hash ‖ body_hash ‖ seq)
-- over the hashes as stored (64 lowercase hex characters each) and seq as 8 bytes big-endian;
-- the prev_hash of seq 1 is 64 zeros. `fhir-scheduler audit verify` walks it.
CREATE TABLE audit_chain (
    seq         BIGINT PRIMARY KEY,     -- 1, 2, 3 … without gaps
    resource_id TEXT   NOT NULL UNIQUE, -- AuditEvent id
    body_hash   TEXT   NOT NULL,        -- SHA-256 of the exact stored body
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL
);

-- Append-only: rows are never changed or removed by the server. (Whoever can drop these
-- triggers can edit the table; the chain is what detects that.)
CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_chain is append-only';
END;
$$;
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only();
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_append_only();
