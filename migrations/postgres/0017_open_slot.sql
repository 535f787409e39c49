-- The open-slot index $find walks (store: the `open_slot` index table, written with every Slot
-- write like the other index tables). One row per free Slot and specialty coding (`ord` 0 for
-- its first, the only one when it has none), carrying what $find filters on in the row itself:
-- its start, its Schedule, the specialty. A walk in start order then tests the schedule list
-- of a location or a language, and the specialty, on the row it reads instead of probing two
-- other index tables per free slot of the window (~2,400 probes for 10 proposals, most of them
-- pages outside shared_buffers, at 1M slots).
CREATE TABLE open_slot (
    rid BIGINT NOT NULL,        -- the Slot
    res_type TEXT NOT NULL,     -- 'Slot'
    param TEXT NOT NULL,        -- 'open'
    lo BIGINT NOT NULL,         -- its start, µs
    schedule TEXT NOT NULL,     -- the id of its Schedule
    system TEXT,                -- one specialty coding (NULL: none)
    code TEXT,
    ord INTEGER NOT NULL        -- 0 for the slot's first row
);
-- The walk in start order (no specialty asked): each free slot once.
CREATE INDEX open_slot_walk ON open_slot (lo, rid) INCLUDE (schedule) WHERE ord = 0;
-- The walk of one specialty in start order.
CREATE INDEX open_slot_code ON open_slot (code, lo, rid) INCLUDE (system, schedule);
-- A few schedules (a practitioner's): each one's free slots of the window.
CREATE INDEX open_slot_schedule ON open_slot (schedule, lo, rid) INCLUDE (ord, system, code);
CREATE INDEX open_slot_rid ON open_slot (rid);

-- The Slots already stored: their free-start, schedule and specialty rows.
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
ANALYZE open_slot;
