//! Who is calling, as the engine sees it. The HTTP layer authenticates a request and runs it
//! inside [`scope`] with the caller's [`Guard`]; the engine's entry points (read, vread, search,
//! history, create, update, patch, delete, operations) ask [`current`] before they act and filter
//! what they return. The decisions themselves live in one place, `auth::policy`; this module
//! only carries them. Code that runs outside any request (the hold sweeper, the slot filler,
//! `seed`) runs [`as_system`]. Anything else finds no caller and is refused: a forgotten scope
//! fails closed.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::fhir::error::{FhirError, FhirResult};

/// What a caller asks to do to a resource type (the SMART v2 letters c r u d s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    pub fn letter(self) -> char {
        match self {
            Self::Create => 'c',
            Self::Read => 'r',
            Self::Update => 'u',
            Self::Delete => 'd',
            Self::Search => 's',
        }
    }
}

/// The caller's permissions, asked by the engine at every entry point.
pub trait Guard: Send + Sync {
    /// May the caller do `what` on resources of type `rt` at all (scopes and role)?
    fn allow(&self, rt: &str, what: Interaction) -> FhirResult<()>;
    /// May the caller see this resource (its compartment, its status)? The engine also checks
    /// [`Guard::read_restrictions`] on the body ([`crate::fhir::Fhir::may_see`]).
    fn can_read(&self, rt: &str, body: &Value) -> bool;
    /// SMART v2 `?param=value` restrictions every `rt` resource the caller sees must meet;
    /// `None` when unrestricted.
    fn read_restrictions(&self, _rt: &str) -> Option<Vec<(String, String)>> {
        None
    }
    /// May the caller turn `before` into `after` (`None` = absent / deleted)?
    fn check_write(
        &self,
        rt: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> FhirResult<()>;
    /// Criteria AND-ed to every search of `rt` by this caller (its compartment). `Err` when
    /// the caller may not search `rt` at all.
    fn search_criteria(&self, rt: &str) -> FhirResult<Vec<(String, String)>>;
    /// May the caller use `_has` to look into resources of type `rt`?
    fn may_reverse_chain(&self, rt: &str) -> bool;
    /// May the caller run operation `op` (e.g. `$book`) on type `rt`?
    fn allow_operation(&self, rt: &str, op: &str) -> FhirResult<()>;
    /// Sees and may do everything: filters can be skipped.
    fn unrestricted(&self) -> bool;
    /// The Patient this caller is (patient role), if any: operations use it to refuse acting
    /// for someone else.
    fn patient(&self) -> Option<&str> {
        None
    }
    /// Who the caller is (user or client), for results kept for them (async jobs).
    fn subject(&self) -> &str {
        "server"
    }
}

/// The server itself: background tasks, the CLI, and `--auth off`.
pub struct System;

impl Guard for System {
    fn allow(&self, _: &str, _: Interaction) -> FhirResult<()> {
        Ok(())
    }
    fn can_read(&self, _: &str, _: &Value) -> bool {
        true
    }
    fn check_write(&self, _: &str, _: Option<&Value>, _: Option<&Value>) -> FhirResult<()> {
        Ok(())
    }
    fn search_criteria(&self, _: &str) -> FhirResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
    fn may_reverse_chain(&self, _: &str) -> bool {
        true
    }
    fn allow_operation(&self, _: &str, _: &str) -> FhirResult<()> {
        Ok(())
    }
    fn unrestricted(&self) -> bool {
        true
    }
}

/// No caller in scope: nothing is allowed.
struct Nobody;

fn refused() -> FhirError {
    FhirError::Forbidden("no authenticated caller".into())
}

impl Guard for Nobody {
    fn allow(&self, _: &str, _: Interaction) -> FhirResult<()> {
        Err(refused())
    }
    fn can_read(&self, _: &str, _: &Value) -> bool {
        false
    }
    fn check_write(&self, _: &str, _: Option<&Value>, _: Option<&Value>) -> FhirResult<()> {
        Err(refused())
    }
    fn search_criteria(&self, _: &str) -> FhirResult<Vec<(String, String)>> {
        Err(refused())
    }
    fn may_reverse_chain(&self, _: &str) -> bool {
        false
    }
    fn allow_operation(&self, _: &str, _: &str) -> FhirResult<()> {
        Err(refused())
    }
    fn unrestricted(&self) -> bool {
        false
    }
}

tokio::task_local! {
    static CALLER: Arc<dyn Guard>;
}

/// The guard of the caller this task works for (a refuse-all guard outside any scope).
pub fn current() -> Arc<dyn Guard> {
    CALLER
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::new(Nobody))
}

/// Runs `f` on behalf of `guard`.
pub async fn scope<F: Future>(guard: Arc<dyn Guard>, f: F) -> F::Output {
    CALLER.scope(guard, f).await
}

/// Runs `f` as the server itself (background work, engine-internal housekeeping).
pub async fn as_system<F: Future>(f: F) -> F::Output {
    scope(Arc::new(System), f).await
}

/// Spawns `f` on behalf of the current caller (a plain `tokio::spawn` would lose it).
pub fn spawn_as_caller<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let guard = current();
    tokio::spawn(scope(guard, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_scope_nothing_is_allowed_and_inside_the_guard_decides() {
        assert!(current().allow("Patient", Interaction::Read).is_err());
        assert!(!current().can_read("Patient", &Value::Null));
        as_system(async {
            assert!(current().allow("Patient", Interaction::Read).is_ok());
            let inner = spawn_as_caller(async { current().unrestricted() });
            assert!(inner.await.unwrap());
        })
        .await;
        let lost = as_system(async { tokio::spawn(async { current().unrestricted() }).await });
        assert!(
            !lost.await.unwrap(),
            "a plain spawn does not carry the caller"
        );
    }
}
