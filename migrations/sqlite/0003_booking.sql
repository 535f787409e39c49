-- Time held by active appointments (scheduling::occupancy): no two rows of one key may overlap.
-- SQLite writers are serialised (BEGIN IMMEDIATE) and check before inserting.
CREATE TABLE booking (
    rid BIGINT NOT NULL,          -- the appointment
    hold_key TEXT NOT NULL,       -- what is held: Practitioner/1, Patient/2, Slot/3
    lo BIGINT NOT NULL,           -- [lo, hi) in microseconds
    hi BIGINT NOT NULL
);
CREATE INDEX booking_key ON booking (hold_key, lo);
CREATE INDEX booking_rid ON booking (rid);
