-- Notifications (see src/notify). The outbox: one row per topic event, written in the same
-- transaction as the change it reports; the worker marks rows dispatched when it has numbered
-- them into every matching subscription's stream.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,  -- topic code (profiles/topics.json)
    focus      TEXT    NOT NULL,  -- Type/id/_history/version
    keys       TEXT    NOT NULL,  -- JSON: filter keys of the event
    occurred   BIGINT  NOT NULL,  -- microseconds since the epoch
    dispatched BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX outbox_pending ON outbox (dispatched, seq);

-- Per subscription: its event counter (events-since-subscription-start) and delivery state.
CREATE TABLE sub_state (
    sub_id         TEXT   PRIMARY KEY,
    events         BIGINT NOT NULL DEFAULT 0,
    status         TEXT   NOT NULL,  -- requested | active | error | off
    error          TEXT,
    handshake_due  BIGINT,           -- next handshake attempt; NULL once done
    last_sent      BIGINT NOT NULL DEFAULT 0,
    failing_since  BIGINT
);

-- Each subscription's numbered events and their delivery.
CREATE TABLE sub_event (
    sub_id       TEXT    NOT NULL,
    number       BIGINT  NOT NULL,
    topic        TEXT    NOT NULL,
    focus        TEXT    NOT NULL,
    occurred     BIGINT  NOT NULL,
    delivered    BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT  NOT NULL,
    gave_up      BIGINT,
    last_error   TEXT,
    PRIMARY KEY (sub_id, number)
);
CREATE INDEX sub_event_due ON sub_event (next_attempt) WHERE delivered IS NULL AND gave_up IS NULL;
