//! SQLite's group commit. Every write transaction of this process runs on one connection, one at
//! a time (SQLite has one writer); committing each alone wrote every page it touched to the WAL
//! again — a Patient create touches some twenty B-trees, 80 KB of WAL for 1 KB of data — and
//! left the writer waiting on the committer's task between statements. Here each transaction
//! is a savepoint inside a group transaction: when it commits while others are queued for their
//! turn, its savepoint is released and the group stays open for them; the last of a run (or the
//! 64th, or the first to end or begin 20 ms after the group began) commits the group, and every
//! member's `commit` returns only then, with the group's outcome. A member that fails or is
//! dropped is rolled back to its savepoint alone.
//!
//! Every step that changes the group's state (begin, release, commit, roll back) runs on a task
//! of its own holding the writer's turn, so a caller cancelled mid-step cannot leave the group
//! half-done; a member dropped uncommitted is rolled back by a task spawned from its `Drop`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::{StoreError, StoreResult};

/// Most members of one group, and the longest it stays open: bound how long the first member
/// waits for the commit, and the group's WAL.
const MAX_GROUP: usize = 64;
const MAX_GROUP_AGE: Duration = Duration::from_millis(20);

/// The writer: its connection while a group is open, and the members waiting for its commit.
#[derive(Default)]
pub(crate) struct Writer {
    open: Option<PoolConnection<Any>>,
    /// When the open group began.
    since: Option<Instant>,
    members: Vec<oneshot::Sender<Result<(), String>>>,
}

/// The writer's lock, and how many are waiting for it.
#[derive(Clone, Default)]
pub(crate) struct GroupWriter {
    lock: Arc<Mutex<Writer>>,
    queued: Arc<AtomicUsize>,
    /// Groups committed so far.
    commits: Arc<AtomicUsize>,
}

/// One member's turn at the writer: its savepoint is open on the group's connection.
pub(crate) struct Turn {
    guard: Option<OwnedMutexGuard<Writer>>,
    writer: GroupWriter,
}

impl GroupWriter {
    /// Groups committed so far.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    /// Waits for the writer, opens a group if none is, and a savepoint for this member.
    pub(crate) async fn begin(&self, pool: AnyPool) -> StoreResult<Turn> {
        let writer = self.clone();
        tokio::spawn(async move {
            writer.queued.fetch_add(1, Ordering::SeqCst);
            let mut guard = writer.lock.clone().lock_owned().await;
            writer.queued.fetch_sub(1, Ordering::SeqCst);
            // Members waiting longer than a group may stay open are not kept waiting for this
            // one too (it may be long: a transaction Bundle).
            let old = guard.since.is_some_and(|t| t.elapsed() >= MAX_GROUP_AGE);
            if old && !guard.members.is_empty() {
                commit_group(&mut guard, &writer.commits).await;
            }
            let conn = match guard.open.take() {
                Some(conn) => conn,
                None => {
                    let mut conn = pool.acquire().await?;
                    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                    guard.since = Some(Instant::now());
                    conn
                }
            };
            let conn = guard.open.insert(conn);
            if let Err(e) = sqlx::query("SAVEPOINT member").execute(&mut **conn).await {
                fail(&mut guard, &e.to_string()).await;
                return Err(e.into());
            }
            Ok(Turn {
                guard: Some(guard),
                writer,
            })
        })
        .await
        .map_err(StoreError::other)?
    }
}

impl Turn {
    /// The group's connection.
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        match self.guard.as_mut().and_then(|g| g.open.as_mut()) {
            Some(c) => c,
            // A turn always holds an open group until `commit` or `Drop` takes it.
            None => unreachable!("a turn without its group"),
        }
    }

    /// Releases this member's savepoint and waits for the group's commit.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let Some(mut guard) = self.guard.take() else {
            return Err(StoreError::other("the turn was already ended"));
        };
        let writer = self.writer.clone();
        let (done, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let released = match guard.open.as_mut() {
                Some(c) => sqlx::query("RELEASE member").execute(&mut **c).await,
                None => return,
            };
            if let Err(e) = released {
                // The group's transaction is not what it was (SQLite may have rolled it
                // back whole): none of it can be vouched for.
                let _ = done.send(Err(e.to_string()));
                fail(&mut guard, "the group transaction was lost").await;
                return;
            }
            guard.members.push(done);
            end_turn(guard, &writer).await;
        });
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::other(format!("group commit failed: {e}"))),
            Err(_) => Err(StoreError::other("group commit abandoned")),
        }
    }
}

impl Drop for Turn {
    /// Uncommitted: this member's changes are rolled back, the others' kept.
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let writer = self.writer.clone();
        let undo = async move {
            let undone = match guard.open.as_mut() {
                Some(c) => sqlx::query("ROLLBACK TO member; RELEASE member")
                    .execute(&mut **c)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            };
            match undone {
                Ok(()) => end_turn(guard, &writer).await,
                Err(_) => fail(&mut guard, "the group transaction was lost").await,
            }
        };
        // Without a runtime (the process ending) nothing of the group was committed: the
        // database rolls it back.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(undo);
        }
    }
}

/// After a member's turn: leave the group open for those queued, or commit it.
async fn end_turn(mut guard: OwnedMutexGuard<Writer>, writer: &GroupWriter) {
    let young = guard.since.is_some_and(|t| t.elapsed() < MAX_GROUP_AGE);
    if writer.queued.load(Ordering::SeqCst) > 0 && guard.members.len() < MAX_GROUP && young {
        return;
    }
    commit_group(&mut guard, &writer.commits).await;
}

/// Commits the open group and tells its members.
async fn commit_group(guard: &mut Writer, commits: &AtomicUsize) {
    let Some(conn) = guard.open.as_mut() else {
        return;
    };
    match sqlx::query("COMMIT").execute(&mut **conn).await {
        Ok(_) => {
            commits.fetch_add(1, Ordering::SeqCst);
            // Back to the pool outside any transaction.
            guard.open = None;
            guard.since = None;
            for m in guard.members.drain(..) {
                let _ = m.send(Ok(()));
            }
        }
        Err(e) => fail(guard, &e.to_string()).await,
    }
}

/// Ends the group without committing it: every member waiting is told, the connection closed
/// (whatever state it is in) and the next turn begins a new group.
async fn fail(guard: &mut Writer, why: &str) {
    for m in guard.members.drain(..) {
        let _ = m.send(Err(why.to_string()));
    }
    guard.since = None;
    if let Some(mut conn) = guard.open.take() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        let _ = conn.close().await;
    }
}
