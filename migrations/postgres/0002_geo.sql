-- special `near` (Location.position): points in decimal degrees, searched by bounding box and
-- an equirectangular distance that needs no trigonometry in SQL.
CREATE TABLE idx_geo (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_geo_lookup ON idx_geo (res_type, param, lat, lon);
CREATE INDEX idx_geo_rid ON idx_geo (rid, param);
