-- The `free-start` search parameter of Slot (profiles/search-parameters-local.json): the start
-- of a free slot only. $find walks it, so a fully booked hour costs nothing to pass over. The
-- engine writes it with every Slot write from now on; this fills it in for the Slots already
-- stored (their `start` rows, where their `status` is free).
INSERT INTO idx_date (rid, res_type, param, lo, hi)
SELECT d.rid, d.res_type, 'free-start', d.lo, d.hi
FROM idx_date d
WHERE d.res_type = 'Slot' AND d.param = 'start'
  AND EXISTS (
    SELECT 1 FROM idx_token t
    WHERE t.rid = d.rid AND t.param = 'status' AND t.code = 'free'
  );
