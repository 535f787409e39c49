-- The open-slot index $find walks (see migrations/postgres/0017_open_slot.sql): one row per
-- free Slot and specialty coding (`ord` 0 for its first), with its start, Schedule and
-- specialty in the row, so the walk in start order tests them without probing other tables.
CREATE TABLE open_slot (
    rid INTEGER NOT NULL,
    res_type TEXT NOT NULL,
    param TEXT NOT NULL,
    lo INTEGER NOT NULL,
    schedule TEXT NOT NULL,
    system TEXT,
    code TEXT,
    ord INTEGER NOT NULL
);
CREATE INDEX open_slot_walk ON open_slot (lo, rid, schedule, ord) WHERE ord = 0;
CREATE INDEX open_slot_code ON open_slot (code, lo, rid, system, schedule);
CREATE INDEX open_slot_schedule ON open_slot (schedule, lo, rid, ord, system, code);
CREATE INDEX open_slot_rid ON open_slot (rid);

INSERT INTO open_slot (rid, res_type, param, lo, schedule, system, code, ord)
SELECT s.rid, 'Slot', 'open', s.lo, s.schedule, s.system, s.code,
       (ROW_NUMBER() OVER (PARTITION BY s.rid ORDER BY s.system, s.code)) - 1
FROM (
    SELECT DISTINCT d.rid, d.lo, r.target_id AS schedule, t.system, t.code
    FROM idx_date d
    JOIN idx_reference r ON r.rid = d.rid AND r.param = 'schedule'
        AND r.target_type = 'Schedule' AND r.target_id IS NOT NULL AND r.url IS NULL
    LEFT JOIN idx_token t ON t.rid = d.rid AND t.param = 'specialty' AND t.code IS NOT NULL
    WHERE d.res_type = 'Slot' AND d.param = 'free-start'
) s;
-- Planner statistics (as 0004 gives the other tables), unless ANALYZE measured them already.
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'open_slot', 'open_slot_walk', '700000 1 1 1 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'open_slot_walk');
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'open_slot', 'open_slot_code', '700000 100000 1 1 1 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'open_slot_code');
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'open_slot', 'open_slot_schedule', '700000 140 1 1 1 1 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'open_slot_schedule');
INSERT INTO sqlite_stat1 (tbl, idx, stat)
SELECT 'open_slot', 'open_slot_rid', '700000 1'
WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE idx = 'open_slot_rid');
ANALYZE sqlite_master;
