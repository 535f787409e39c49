-- Notification work through RabbitMQ (src/notify/amqp.rs) and side-by-side workers.
-- message.claimed_until: a worker sending a message holds it until then (µs; 0 = free), so two
-- deliveries of one job (a redelivery, a re-drive) never send it at once.
-- In RabbitMQ mode next_attempt is when the relay publishes the message (again).
ALTER TABLE message ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
-- sub_state.queued_until: a job for this subscription's stream is on a queue until then (µs;
-- 0 = none), so the relay publishes one job per stream, not one per pass.
ALTER TABLE sub_state ADD COLUMN queued_until BIGINT NOT NULL DEFAULT 0;
