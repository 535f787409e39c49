-- The search planner walks idx_date in the order of a date `_sort` (lo, then rid for ties) and
-- stops once it has the page; the other filters are probes of each row walked. Both read only
-- the index (covering indexes): the walk carries hi for the range tests, the probe of a token
-- (a Slot's status) the code and system. They replace idx_date_lo and idx_token_rid, whose
-- every use they serve.
CREATE INDEX idx_date_lo_rid ON idx_date (res_type, param, lo, rid, hi);
DROP INDEX idx_date_lo;
CREATE INDEX idx_token_rid_code ON idx_token (rid, param, code, system);
DROP INDEX idx_token_rid;
-- Planner statistics for them, as 0004 gives the others (unless ANALYZE measured them already).
DELETE FROM sqlite_stat1 WHERE idx IN ('idx_date_lo', 'idx_token_rid');
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'idx_date', 'idx_date_lo_rid', '1000000 100000 50000 4 1 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'idx_date_lo_rid');
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'idx_token', 'idx_token_rid_code', '3000000 3 1 1 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'idx_token_rid_code');
ANALYZE sqlite_master;
