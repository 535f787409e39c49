-- Patient messages (src/notify/messages.rs): planned from the outbox's appointment events,
-- sent by the worker, each recorded as a Communication when sent.
ALTER TABLE outbox ADD COLUMN planned BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX outbox_unplanned ON outbox (planned, seq);

CREATE TABLE message (
    id           TEXT    PRIMARY KEY,  -- also the idempotency key sent with it
    appointment  TEXT    NOT NULL,     -- Appointment/[id]
    patient      TEXT    NOT NULL,     -- Patient/[id]
    kind         TEXT    NOT NULL,     -- confirmation | reminder | changed | cancelled
    channel      TEXT    NOT NULL,     -- email | sms
    due          BIGINT  NOT NULL,     -- µs since the epoch
    status       TEXT    NOT NULL,     -- pending | sent | withdrawn | failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT  NOT NULL,
    sent_at      BIGINT,
    last_error   TEXT,
    focus        TEXT    NOT NULL      -- the appointment version that planned it
);
CREATE INDEX message_due ON message (next_attempt) WHERE status = 'pending';
CREATE INDEX message_appointment ON message (appointment, status);
