-- Time held by active appointments (scheduling::occupancy): no two rows of one key may overlap,
-- enforced by the database itself so that no concurrent writer can slip past.
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TABLE booking (
    rid BIGINT NOT NULL,          -- the appointment
    hold_key TEXT NOT NULL,       -- what is held: Practitioner/1, Patient/2, Slot/3
    lo BIGINT NOT NULL,           -- [lo, hi) in microseconds
    hi BIGINT NOT NULL,
    CONSTRAINT booking_no_overlap EXCLUDE USING gist (hold_key WITH =, int8range(lo, hi) WITH &&)
);
CREATE INDEX booking_rid ON booking (rid);
