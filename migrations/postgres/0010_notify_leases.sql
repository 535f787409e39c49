-- Several notification workers may run side by side (`fhir-scheduler worker notifications`):
-- a subscription's deliveries are leased to one worker at a time.
ALTER TABLE sub_state ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
