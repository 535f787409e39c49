-- Representative planner statistics (for about a million resources), so SQLite picks the index
-- plans the search planner is written for from the first request on, instead of scanning while
-- the database is young and unanalysed. A later ANALYZE or PRAGMA optimize replaces them with
-- measured ones. Format: "rows avg-rows-per-distinct-prefix…" (sqlite.org/fileformat2.html).
ANALYZE;
DELETE FROM sqlite_stat1;
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
  ('resources', 'sqlite_autoindex_resources_1', '1000000 100000 1'),
  ('resources', 'resources_type_updated', '1000000 100000 2'),
  ('resource_history', 'sqlite_autoindex_resource_history_1', '2000000 200000 2 1'),
  ('resource_history', 'history_updated', '2000000 2'),
  ('resource_history', 'history_type_updated', '2000000 200000 2'),
  ('idx_token', 'idx_token_lookup', '3000000 300000 30000 20 10'),
  ('idx_token', 'idx_token_rid', '3000000 3 1'),
  ('idx_string', 'idx_string_lookup', '3000000 300000 60000 5'),
  ('idx_string', 'idx_string_rid', '3000000 6 2'),
  ('idx_date', 'idx_date_lo', '1000000 100000 50000 4'),
  ('idx_date', 'idx_date_hi', '1000000 100000 50000 4'),
  ('idx_date', 'idx_date_rid', '1000000 1 1'),
  ('idx_reference', 'idx_reference_lookup', '2000000 200000 50000 20 20'),
  ('idx_reference', 'idx_reference_target', '2000000 20 20'),
  ('idx_reference', 'idx_reference_rid', '2000000 2 1'),
  ('idx_number', 'idx_number_lookup', '100000 10000 5000 2'),
  ('idx_number', 'idx_number_rid', '100000 1 1'),
  ('idx_quantity', 'idx_quantity_lookup', '100000 10000 5000 2'),
  ('idx_quantity', 'idx_quantity_rid', '100000 1 1'),
  ('idx_uri', 'idx_uri_lookup', '100000 10000 5000 2'),
  ('idx_uri', 'idx_uri_rid', '100000 1 1'),
  ('idx_geo', 'idx_geo_lookup', '10000 10000 10000 100 1'),
  ('idx_geo', 'idx_geo_rid', '10000 1 1'),
  ('booking', 'booking_key', '500000 50 5'),
  ('booking', 'booking_rid', '500000 3');
ANALYZE sqlite_master;
