-- Current version of every resource; `rid` is the surrogate key the search indexes join on.
CREATE TABLE resources (
    rid          INTEGER PRIMARY KEY AUTOINCREMENT,
    res_type     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    last_updated BIGINT  NOT NULL,          -- microseconds since the epoch, UTC
    deleted      BOOLEAN NOT NULL DEFAULT FALSE,
    body         TEXT    NOT NULL,          -- the JSON the server returns (meta included)
    UNIQUE (res_type, id)
);
CREATE INDEX resources_type_updated ON resources (res_type, last_updated);

-- Every version, deletes included.
CREATE TABLE resource_history (
    rid          BIGINT  NOT NULL,
    res_type     TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    last_updated BIGINT  NOT NULL,
    deleted      BOOLEAN NOT NULL,
    method       TEXT    NOT NULL,          -- POST | PUT | PATCH | DELETE
    body         TEXT    NOT NULL,
    PRIMARY KEY (res_type, id, version)
);
CREATE INDEX history_updated ON resource_history (last_updated);
CREATE INDEX history_type_updated ON resource_history (res_type, last_updated);

-- Search indexes: one table per parameter type, rows of live (not deleted) resources only.
CREATE TABLE idx_token (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT
);
CREATE INDEX idx_token_lookup ON idx_token (res_type, param, code, system);
CREATE INDEX idx_token_rid ON idx_token (rid, param);

CREATE TABLE idx_string (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL, exact TEXT NOT NULL
);
CREATE INDEX idx_string_lookup ON idx_string (res_type, param, norm);
CREATE INDEX idx_string_rid ON idx_string (rid, param);

CREATE TABLE idx_date (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    lo BIGINT NOT NULL, hi BIGINT NOT NULL
);
CREATE INDEX idx_date_lo ON idx_date (res_type, param, lo);
CREATE INDEX idx_date_hi ON idx_date (res_type, param, hi);
CREATE INDEX idx_date_rid ON idx_date (rid, param);

CREATE TABLE idx_reference (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, url TEXT
);
CREATE INDEX idx_reference_lookup ON idx_reference (res_type, param, target_id, target_type);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_rid ON idx_reference (rid, param);

CREATE TABLE idx_number (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_number_lookup ON idx_number (res_type, param, value);
CREATE INDEX idx_number_rid ON idx_number (rid, param);

CREATE TABLE idx_quantity (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL,
    system TEXT, code TEXT, unit TEXT
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (res_type, param, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid, param);

CREATE TABLE idx_uri (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    uri TEXT NOT NULL
);
CREATE INDEX idx_uri_lookup ON idx_uri (res_type, param, uri);
CREATE INDEX idx_uri_rid ON idx_uri (rid, param);
