-- Websocket subscription channel (src/notify/websocket.rs): tokens from
-- `Subscription/$get-ws-binding-token`, kept as their SHA-256 until they expire.
CREATE TABLE ws_binding (
    token_hash TEXT   PRIMARY KEY,
    subs       TEXT   NOT NULL,  -- JSON array of Subscription ids
    expires    BIGINT NOT NULL   -- µs since the epoch
);
