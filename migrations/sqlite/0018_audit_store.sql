-- The audit log's own store (benches/AUDIT.md). AuditEvents are written by the server only and
-- never changed, and there are as many as requests: kept as ordinary resources each cost a
-- resource row, a history row and ~12 index rows (~35 B-tree entries), half of what a read
-- costs. Here one row per AuditEvent carries its body, its `date` range and its token, string
-- and uri search values in one text column (`terms`, see `fhir::search::audit`), tested by
-- substring; its references (agent, entity, patient…) are rows of `audit_ref`, looked up by
-- target. Four B-tree entries per event, plus one per reference.
CREATE TABLE audit_event (
    rid          INTEGER PRIMARY KEY,
    id           TEXT   NOT NULL UNIQUE,
    date_lo      BIGINT NOT NULL,   -- `recorded` as an inclusive range, µs
    date_hi      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    terms        TEXT   NOT NULL,   -- U+001F-separated search terms, U+001F first and last
    body         TEXT   NOT NULL
);
CREATE INDEX audit_event_date ON audit_event (date_lo, rid);

CREATE TABLE audit_ref (
    rid         BIGINT NOT NULL,    -- audit_event.rid
    param       TEXT   NOT NULL,
    target_type TEXT   NOT NULL,
    target_id   TEXT   NOT NULL
);
CREATE INDEX audit_ref_target ON audit_ref (target_id, rid);

-- The AuditEvents stored so far as resources move here, their search values rebuilt from
-- their index rows.
INSERT INTO audit_event (id, date_lo, date_hi, last_updated, terms, body)
SELECT r.id,
       COALESCE((SELECT MIN(d.lo) FROM idx_date d WHERE d.rid = r.rid AND d.param = 'date'), r.last_updated),
       COALESCE((SELECT MAX(d.hi) FROM idx_date d WHERE d.rid = r.rid AND d.param = 'date'), r.last_updated),
       r.last_updated,
       char(31) || COALESCE((SELECT group_concat(t.term, char(31)) || char(31) FROM (
           SELECT x.param || ':' || x.code AS term FROM idx_token x WHERE x.rid = r.rid AND x.code IS NOT NULL
           UNION
           SELECT x.param || '|' || COALESCE(x.system, '') || '|' || COALESCE(x.code, '') FROM idx_token x WHERE x.rid = r.rid
           UNION
           SELECT x.param || '~' || x.norm FROM idx_string x WHERE x.rid = r.rid
           UNION
           SELECT x.param || '=' || x.exact FROM idx_string x WHERE x.rid = r.rid
           UNION
           SELECT x.param || '^' || x.uri FROM idx_uri x WHERE x.rid = r.rid
           UNION
           SELECT x.param || '@' FROM idx_reference x WHERE x.rid = r.rid
       ) t), ''),
       r.body
FROM resources r
WHERE r.res_type = 'AuditEvent' AND r.deleted = FALSE
ORDER BY r.rid;

INSERT INTO audit_ref (rid, param, target_type, target_id)
SELECT a.rid, x.param, x.target_type, x.target_id
FROM idx_reference x
JOIN resources r ON r.rid = x.rid
JOIN audit_event a ON a.id = r.id
WHERE x.res_type = 'AuditEvent' AND r.res_type = 'AuditEvent'
  AND x.target_type IS NOT NULL AND x.target_id IS NOT NULL;

DELETE FROM idx_token WHERE res_type = 'AuditEvent';
DELETE FROM idx_string WHERE res_type = 'AuditEvent';
DELETE FROM idx_date WHERE res_type = 'AuditEvent';
DELETE FROM idx_reference WHERE res_type = 'AuditEvent';
DELETE FROM idx_uri WHERE res_type = 'AuditEvent';
DELETE FROM resource_history WHERE res_type = 'AuditEvent';
DELETE FROM resources WHERE res_type = 'AuditEvent';
