//! The notification tables' SQL (migrations `0008_notify`): the outbox, each subscription's
//! state and its numbered events. What the rows mean is `notify`'s business. Plain SQL with
//! `$n` placeholders, valid on SQLite and PostgreSQL.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Dialect, SqlStore, SqlTx, StoreResult};

/// An event as the engine writes it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub topic: String,
    pub focus: String,
    pub keys: String,
    pub occurred: i64,
}

/// An outbox row not yet dispatched.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub row: OutboxRow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubState {
    pub sub_id: String,
    pub events: i64,
    pub status: String,
    pub error: Option<String>,
    pub handshake_due: Option<i64>,
    pub last_sent: i64,
    pub failing_since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubEvent {
    pub number: i64,
    pub topic: String,
    pub focus: String,
    pub occurred: i64,
    pub delivered: Option<i64>,
    pub attempts: i64,
    pub next_attempt: i64,
    pub gave_up: Option<i64>,
    pub last_error: Option<String>,
}

const STATE_COLUMNS: &str =
    "sub_id, events, status, error, handshake_due, last_sent, failing_since";
const EVENT_COLUMNS: &str =
    "number, topic, focus, occurred, delivered, attempts, next_attempt, gave_up, last_error";

/// An outbox row selected as `seq, topic, focus, keys, occurred`.
fn pending_from(r: &AnyRow) -> StoreResult<Pending> {
    Ok(Pending {
        seq: r.try_get(0)?,
        row: OutboxRow {
            topic: r.try_get(1)?,
            focus: r.try_get(2)?,
            keys: r.try_get(3)?,
            occurred: r.try_get(4)?,
        },
    })
}

/// An INTEGER column: 64-bit on SQLite, 32-bit on PostgreSQL.
fn int_col(r: &AnyRow, i: usize) -> StoreResult<i64> {
    Ok(r.try_get::<i64, _>(i)
        .or_else(|_| r.try_get::<i32, _>(i).map(i64::from))?)
}

fn state_from(r: &AnyRow) -> StoreResult<SubState> {
    Ok(SubState {
        sub_id: r.try_get(0)?,
        events: r.try_get(1)?,
        status: r.try_get(2)?,
        error: r.try_get(3)?,
        handshake_due: r.try_get(4)?,
        last_sent: r.try_get(5)?,
        failing_since: r.try_get(6)?,
    })
}

fn event_from(r: &AnyRow) -> StoreResult<SubEvent> {
    Ok(SubEvent {
        number: r.try_get(0)?,
        topic: r.try_get(1)?,
        focus: r.try_get(2)?,
        occurred: r.try_get(3)?,
        delivered: r.try_get(4)?,
        attempts: int_col(r, 5)?,
        next_attempt: r.try_get(6)?,
        gave_up: r.try_get(7)?,
        last_error: r.try_get(8)?,
    })
}

impl SqlTx {
    pub(super) async fn outbox_insert(&mut self, rows: &[OutboxRow]) -> StoreResult<()> {
        for r in rows {
            // Only appointment events plan patient messages.
            let planned = !r.topic.starts_with("appointment-");
            sqlx::query(
                "INSERT INTO outbox (topic, focus, keys, occurred, dispatched, planned) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.topic)
            .bind(&r.focus)
            .bind(&r.keys)
            .bind(r.occurred)
            .bind(false)
            .bind(planned)
            .execute(self.tx.conn())
            .await?;
        }
        Ok(())
    }

    /// A subscription created or changed: its state restarts at `status` (a handshake due now
    /// when `requested`); its event counter carries on.
    pub(super) async fn sub_reset(&mut self, id: &str, status: &str, now: i64) -> StoreResult<()> {
        let due = (status == "requested").then_some(now);
        sqlx::query(
            "INSERT INTO sub_state (sub_id, events, status, error, handshake_due, last_sent) \
             VALUES ($1, 0, $2, NULL, $3, 0) ON CONFLICT (sub_id) DO UPDATE SET \
             status = $2, error = NULL, handshake_due = $3, failing_since = NULL",
        )
        .bind(id)
        .bind(status)
        .bind(due)
        .execute(self.tx.conn())
        .await?;
        Ok(())
    }
}

impl SqlStore {
    /// Runs a conditional `UPDATE` binding `(id, now, until)` as `$1..$3`: true when it took the
    /// row (exactly one changed).
    async fn take(&self, sql: &str, id: &str, now: i64, until: i64) -> StoreResult<bool> {
        let n = sqlx::query(sql)
            .bind(id)
            .bind(now)
            .bind(until)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Takes up to `limit` undispatched outbox rows, in order, and numbers each into the stream
    /// of every subscription `assign` names (their counters move in the same transaction).
    /// Returns how many rows it took.
    pub async fn notify_dispatch(
        &self,
        limit: i64,
        assign: impl Fn(&Pending) -> Vec<String>,
    ) -> StoreResult<usize> {
        // A read first: an idle outbox costs no write transaction (SQLite's writer lock).
        // `dispatched = FALSE` as a literal: it is the predicate of the partial index
        // `outbox_undispatched` (migration 0015), which a bound value could not be matched to.
        let any =
            sqlx::query("SELECT seq FROM outbox WHERE dispatched = FALSE ORDER BY seq LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = self.begin_sql().await?;
        let lock = if self.dialect == Dialect::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT seq, topic, focus, keys, occurred FROM outbox WHERE dispatched = FALSE \
             ORDER BY seq LIMIT $1{lock}"
        ))
        .bind(limit)
        .fetch_all(tx.tx.conn())
        .await?;
        let pending = rows
            .iter()
            .map(pending_from)
            .collect::<StoreResult<Vec<_>>>()?;
        for p in &pending {
            for sub in assign(p) {
                let n: Option<i64> = sqlx::query(
                    "UPDATE sub_state SET events = events + 1 WHERE sub_id = $1 RETURNING events",
                )
                .bind(&sub)
                .fetch_optional(tx.tx.conn())
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
                let Some(n) = n else { continue };
                sqlx::query(
                    "INSERT INTO sub_event (sub_id, number, topic, focus, occurred, attempts, \
                     next_attempt) VALUES ($1, $2, $3, $4, $5, 0, $6)",
                )
                .bind(&sub)
                .bind(n)
                .bind(&p.row.topic)
                .bind(&p.row.focus)
                .bind(p.row.occurred)
                .bind(0i64)
                .execute(tx.tx.conn())
                .await?;
            }
            sqlx::query("UPDATE outbox SET dispatched = $1 WHERE seq = $2")
                .bind(true)
                .bind(p.seq)
                .execute(tx.tx.conn())
                .await?;
        }
        tx.tx.commit().await?;
        Ok(pending.len())
    }

    /// Every subscription state that is not `off`.
    pub async fn sub_states(&self) -> StoreResult<Vec<SubState>> {
        let rows = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM sub_state WHERE status <> 'off' ORDER BY sub_id"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(state_from).collect()
    }

    pub async fn sub_state(&self, id: &str) -> StoreResult<Option<SubState>> {
        let row = sqlx::query(&format!(
            "SELECT {STATE_COLUMNS} FROM sub_state WHERE sub_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(state_from).transpose()
    }

    /// Sets a subscription's delivery state (not its counter).
    pub async fn sub_state_set(&self, s: &SubState) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sub_state SET status = $2, error = $3, handshake_due = $4, last_sent = $5, \
             failing_since = $6 WHERE sub_id = $1",
        )
        .bind(&s.sub_id)
        .bind(&s.status)
        .bind(&s.error)
        .bind(s.handshake_due)
        .bind(s.last_sent)
        .bind(s.failing_since)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The oldest undelivered events of a subscription that it has not given up on, in order.
    pub async fn sub_undelivered(&self, id: &str, limit: i64) -> StoreResult<Vec<SubEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM sub_event WHERE sub_id = $1 AND delivered IS NULL \
             AND gave_up IS NULL ORDER BY number LIMIT $2"
        ))
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from).collect()
    }

    /// Events `from..=to` of a subscription (for `$events`).
    pub async fn sub_events(&self, id: &str, from: i64, to: i64) -> StoreResult<Vec<SubEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM sub_event WHERE sub_id = $1 AND number >= $2 \
             AND number <= $3 ORDER BY number LIMIT 1000"
        ))
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from).collect()
    }

    /// Marks events delivered.
    pub async fn sub_delivered(&self, id: &str, numbers: &[i64], now: i64) -> StoreResult<()> {
        for n in numbers {
            sqlx::query(
                "UPDATE sub_event SET delivered = $3, attempts = attempts + 1 \
                 WHERE sub_id = $1 AND number = $2",
            )
            .bind(id)
            .bind(n)
            .bind(now)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Records a failed attempt: the next one at `next_attempt`, or given up at `gave_up`.
    pub async fn sub_attempt_failed(
        &self,
        id: &str,
        numbers: &[i64],
        next_attempt: i64,
        gave_up: Option<i64>,
        error: &str,
    ) -> StoreResult<()> {
        for n in numbers {
            sqlx::query(
                "UPDATE sub_event SET attempts = attempts + 1, next_attempt = $3, gave_up = $4, \
                 last_error = $5 WHERE sub_id = $1 AND number = $2",
            )
            .bind(id)
            .bind(n)
            .bind(next_attempt)
            .bind(gave_up)
            .bind(error)
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Appointment events whose patient messages are not planned yet, in order.
    pub async fn outbox_unplanned(&self, limit: i64) -> StoreResult<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT seq, topic, focus, keys, occurred FROM outbox WHERE planned = FALSE \
             ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(pending_from).collect()
    }

    /// Plans the messages of outbox row `seq` once: in one transaction it takes the row (false
    /// when another worker already did), withdraws what is still pending for `appointment`
    /// (outdated by this change) and adds `messages`.
    pub async fn messages_plan(
        &self,
        seq: i64,
        appointment: Option<&str>,
        messages: &[MessageRow],
    ) -> StoreResult<bool> {
        let mut tx = self.begin_sql().await?;
        let taken = sqlx::query("UPDATE outbox SET planned = $1 WHERE seq = $2 AND planned = $3")
            .bind(true)
            .bind(seq)
            .bind(false)
            .execute(tx.tx.conn())
            .await?
            .rows_affected();
        if taken == 0 {
            return Ok(false);
        }
        if let Some(a) = appointment {
            sqlx::query(
                "UPDATE message SET status = 'withdrawn' WHERE appointment = $1 \
                 AND status = 'pending'",
            )
            .bind(a)
            .execute(tx.tx.conn())
            .await?;
        }
        for m in messages {
            sqlx::query(
                "INSERT INTO message (id, appointment, patient, kind, channel, due, status, \
                 attempts, next_attempt, focus) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $6, $7)",
            )
            .bind(&m.id)
            .bind(&m.appointment)
            .bind(&m.patient)
            .bind(&m.kind)
            .bind(&m.channel)
            .bind(m.due)
            .bind(&m.focus)
            .execute(tx.tx.conn())
            .await?;
        }
        tx.tx.commit().await?;
        Ok(true)
    }

    /// Pending messages due by `now`, oldest first — but of one appointment and channel only
    /// the first due: while an earlier one is due or being sent (by any worker, or waiting in
    /// a RabbitMQ queue), the later ones wait, so a change notice never overtakes its
    /// confirmation, whoever sends them. One in retry backoff does not hold the others back.
    pub async fn messages_due(&self, now: i64, limit: i64) -> StoreResult<Vec<MessageRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM message m WHERE status = 'pending' \
             AND next_attempt <= $1 AND claimed_until <= $1 \
             AND NOT EXISTS (SELECT 1 FROM message e WHERE e.appointment = m.appointment \
                 AND e.status = 'pending' AND e.channel = m.channel AND e.next_attempt <= $1 \
                 AND (e.due < m.due OR (e.due = m.due AND e.id < m.id))) \
             ORDER BY next_attempt LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(message_from).collect()
    }

    /// Marks a message sent (only if still pending: a withdrawn one stays withdrawn).
    pub async fn message_sent(&self, id: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE message SET status = 'sent', sent_at = $2, attempts = attempts + 1, \
             claimed_until = 0 WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_attempt`, or `failed` for good.
    pub async fn message_failed(
        &self,
        id: &str,
        next_attempt: i64,
        failed: bool,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE message SET attempts = attempts + 1, next_attempt = $2, last_error = $3, \
             status = CASE WHEN $4 THEN 'failed' ELSE status END, claimed_until = 0 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(next_attempt)
        .bind(error)
        .bind(failed)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Takes a pending message for this worker for `lease` µs: false when another worker is
    /// sending it (or it is no longer pending). A crashed worker's claim lapses.
    pub async fn message_claim(&self, id: &str, now: i64, lease: i64) -> StoreResult<bool> {
        self.take(
            "UPDATE message SET claimed_until = $3 WHERE id = $1 AND status = 'pending' \
             AND claimed_until <= $2",
            id,
            now,
            now + lease,
        )
        .await
    }

    /// A message and when its claim lapses (µs since the epoch; 0 when it is not claimed).
    pub async fn message_get(&self, id: &str) -> StoreResult<Option<(MessageRow, i64)>> {
        let row = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS}, claimed_until FROM message WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((message_from(&r)?, r.try_get(9)?)))
            .transpose()
    }

    /// The relay takes a due message to publish it: its next (re-)publication moves to
    /// `again`. False when another relay took it first.
    pub async fn message_relay(&self, id: &str, now: i64, again: i64) -> StoreResult<bool> {
        self.take(
            "UPDATE message SET next_attempt = $3 WHERE id = $1 AND status = 'pending' \
             AND next_attempt <= $2",
            id,
            now,
            again,
        )
        .await
    }

    /// A message whose publication failed is due again at `at`.
    pub async fn message_defer(&self, id: &str, at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE message SET next_attempt = $2 WHERE id = $1 AND status = 'pending'")
            .bind(id)
            .bind(at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks a subscription's stream as having a job on a queue until `until`: false when it
    /// already has one.
    pub async fn sub_enqueue(&self, id: &str, now: i64, until: i64) -> StoreResult<bool> {
        self.take(
            "UPDATE sub_state SET queued_until = $3 WHERE sub_id = $1 AND queued_until <= $2",
            id,
            now,
            until,
        )
        .await
    }

    /// The stream's job is done (or its publication failed): the relay may publish another.
    pub async fn sub_dequeue(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sub_state SET queued_until = 0 WHERE sub_id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Takes a subscription's deliveries for this worker until `now + lease` µs (or until
    /// released): false when another worker holds them.
    pub async fn sub_claim(&self, id: &str, now: i64, lease: i64) -> StoreResult<bool> {
        self.take(
            "UPDATE sub_state SET lease_until = $3 WHERE sub_id = $1 AND lease_until <= $2",
            id,
            now,
            now + lease,
        )
        .await
    }

    pub async fn sub_release(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sub_state SET lease_until = 0 WHERE sub_id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Keeps a websocket binding token (its hash) for `subs` until `expires`; forgets expired
    /// ones.
    pub async fn ws_binding_add(
        &self,
        hash: &str,
        subs: &str,
        expires: i64,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM ws_binding WHERE expires < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query("INSERT INTO ws_binding (token_hash, subs, expires) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(subs)
            .bind(expires)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The subscriptions (JSON array) of a binding token that has not expired.
    pub async fn ws_binding_get(&self, hash: &str, now: i64) -> StoreResult<Option<String>> {
        let row =
            sqlx::query("SELECT subs FROM ws_binding WHERE token_hash = $1 AND expires >= $2")
                .bind(hash)
                .bind(now)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// `(messages due and pending, subscription events undelivered)` at `now`.
    pub async fn notify_backlog(&self, now: i64) -> StoreResult<(i64, i64)> {
        let m: i64 = sqlx::query(
            "SELECT COUNT(*) FROM message WHERE status = 'pending' AND next_attempt <= $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?
        .try_get(0)?;
        let e: i64 = sqlx::query(
            "SELECT COUNT(*) FROM sub_event WHERE delivered IS NULL AND gave_up IS NULL",
        )
        .fetch_one(self.pool())
        .await?
        .try_get(0)?;
        Ok((m, e))
    }

    /// Forgets outbox rows handled before `before` (dispatched and planned), at most `limit`.
    pub async fn outbox_prune(&self, before: i64, limit: i64) -> StoreResult<u64> {
        let n = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE dispatched = $1 \
             AND planned = $1 AND occurred < $2 ORDER BY seq LIMIT $3)",
        )
        .bind(true)
        .bind(before)
        .bind(limit)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n)
    }
}

/// A patient message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: String,
    pub appointment: String,
    pub patient: String,
    pub kind: String,
    pub channel: String,
    pub due: i64,
    pub status: String,
    pub attempts: i64,
    pub focus: String,
}

const MESSAGE_COLUMNS: &str =
    "id, appointment, patient, kind, channel, due, status, attempts, focus";

fn message_from(r: &AnyRow) -> StoreResult<MessageRow> {
    Ok(MessageRow {
        id: r.try_get(0)?,
        appointment: r.try_get(1)?,
        patient: r.try_get(2)?,
        kind: r.try_get(3)?,
        channel: r.try_get(4)?,
        due: r.try_get(5)?,
        status: r.try_get(6)?,
        attempts: int_col(r, 7)?,
        focus: r.try_get(8)?,
    })
}
