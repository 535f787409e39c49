//! The FHIR engine's entry points: the interactions of the RESTful API, independent of HTTP.
//! Every write runs in one store transaction: the resource, its history row and its index rows.
//! Interactions that can be part of a transaction Bundle take the transaction as a parameter.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::fhir::access::{self, Interaction};
use crate::fhir::datetime::{self, format_instant};
use crate::fhir::error::{FhirError, FhirResult};
use crate::fhir::outcome::IssueCode;
use crate::fhir::registry::Registry;
use crate::fhir::search::{self, SearchRequest};
use crate::fhir::structure::Structures;
use crate::fhir::{index, is_supported_type, profiles, validate, RESOURCE_TYPES};
use crate::notify;
use crate::scheduling::{self, effects, Policy};
use crate::store::notify::OutboxRow;
use crate::store::{Hold, Store, StoreError, StoreTx, Stored, Write};

/// The engine: the store plus what `profiles/` defines.
pub struct Fhir {
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub structures: Structures,
    /// The configurable scheduling rules.
    pub policy: Policy,
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    pub stored: Stored,
    /// A new resource was created (201), rather than an existing one updated or matched (200).
    pub created: bool,
}

/// How many times an unconditional write is retried after losing an optimistic-concurrency race.
const WRITE_RETRIES: usize = 8;

impl Fhir {
    /// Builds the engine from the embedded profiles.
    pub fn new(store: Arc<dyn Store>) -> Result<Self, String> {
        let mut resources: Vec<Value> = Vec::new();
        for (name, text) in [
            ("search-parameters.json", profiles::SEARCH_PARAMETERS),
            (
                "search-parameters-local.json",
                profiles::LOCAL_SEARCH_PARAMETERS,
            ),
        ] {
            let sp: Value =
                serde_json::from_str(text).map_err(|e| format!("profiles/{name}: {e}"))?;
            let entries = sp["entry"].as_array().cloned().unwrap_or_default();
            resources.extend(entries.into_iter().map(|e| e["resource"].clone()));
        }
        let mut registry = Registry::from_search_parameters(resources.iter(), &RESOURCE_TYPES)?;
        let structures_json: Value = serde_json::from_str(profiles::STRUCTURES)
            .map_err(|e| format!("profiles/r4-structures.json: {e}"))?;
        let valuesets_json: Value = serde_json::from_str(profiles::VALUESETS)
            .map_err(|e| format!("profiles/r4-required-valuesets.json: {e}"))?;
        let structures = Structures::from_bundles(&structures_json, &valuesets_json)?;
        registry.learn_date_widths(|rt, element| {
            structures.single_type(rt, element).map(str::to_string)
        });
        Ok(Self {
            store,
            registry,
            structures,
            policy: Policy::default(),
        })
    }

    pub fn check_type(&self, rt: &str) -> FhirResult<()> {
        if is_supported_type(rt) {
            Ok(())
        } else {
            Err(FhirError::UnknownType(rt.to_string()))
        }
    }

    // ------------------------------------------------------------------ reads

    pub async fn read(&self, rt: &str, id: &str) -> FhirResult<Stored> {
        self.check_type(rt)?;
        access::current().allow(rt, Interaction::Read)?;
        match self.store.read(rt, id).await? {
            None => Err(FhirError::NotFound(format!("{rt}/{id}"))),
            Some(s) if s.deleted => Err(FhirError::Deleted(format!("{rt}/{id}"))),
            Some(s) => self.readable(rt, s),
        }
    }

    /// May the caller see this resource: its guard's `can_read` and its scopes' `?param=value`
    /// restrictions. Every path that shows a resource asks this.
    pub fn may_see(&self, guard: &dyn access::Guard, rt: &str, body: &Value) -> bool {
        guard.can_read(rt, body)
            && guard
                .read_restrictions(rt)
                .is_none_or(|r| crate::fhir::restrict::matches(&self.registry, body, &r))
    }

    /// The stored resource if the caller may see it; 403 otherwise.
    fn readable(&self, rt: &str, s: Stored) -> FhirResult<Stored> {
        let guard = access::current();
        if guard.unrestricted() {
            return Ok(s);
        }
        let body: Value =
            serde_json::from_str(&s.body).map_err(|e| FhirError::Internal(e.to_string()))?;
        if self.may_see(guard.as_ref(), rt, &body) {
            Ok(s)
        } else {
            Err(FhirError::Forbidden(format!(
                "this {rt} is outside what the caller may see"
            )))
        }
    }

    pub async fn vread(&self, rt: &str, id: &str, vid: &str) -> FhirResult<Stored> {
        self.check_type(rt)?;
        access::current().allow(rt, Interaction::Read)?;
        let version: i64 = vid
            .parse()
            .map_err(|_| FhirError::NotFound(format!("{rt}/{id}/_history/{vid}")))?;
        match self.store.vread(rt, id, version).await? {
            None => Err(FhirError::NotFound(format!("{rt}/{id}/_history/{vid}"))),
            Some(s) if s.deleted => Err(FhirError::Deleted(format!("{rt}/{id}/_history/{vid}"))),
            Some(s) => self.readable(rt, s),
        }
    }

    /// Parses a search against this server's parameters, narrowed to what the caller may see:
    /// the caller's compartment criteria are AND-ed to the request's.
    pub fn parse_search(
        &self,
        rt: &str,
        pairs: &[(String, String)],
        lenient: bool,
    ) -> FhirResult<SearchRequest> {
        self.check_type(rt)?;
        let guard = access::current();
        guard.allow(rt, Interaction::Search)?;
        for (k, _) in pairs {
            if let Some(target) = k.strip_prefix("_has:").and_then(|r| r.split(':').next()) {
                if !guard.may_reverse_chain(target) {
                    return Err(FhirError::Forbidden(format!(
                        "_has into {target} is not permitted for this caller"
                    )));
                }
            }
        }
        let extra = guard.search_criteria(rt)?;
        if extra.is_empty() {
            return search::parse(&self.registry, rt, pairs, lenient).map_err(FhirError::from);
        }
        // The added criteria show in the paging links: they are the caller's own compartment.
        let mut all = pairs.to_vec();
        all.extend(extra);
        search::parse(&self.registry, rt, &all, lenient).map_err(FhirError::from)
    }

    // ------------------------------------------------------------------ writes

    /// Validates a body for `rt` (structure, fhirbolt, invariants).
    pub fn validate(&self, rt: &str, body: &Value) -> FhirResult<()> {
        self.check_type(rt)?;
        validate::resource_type_of(body, Some(rt))?;
        validate::validate_resource(&self.structures, body)
    }

    /// `POST [type]`, optionally conditional (`If-None-Exist`).
    pub async fn create(
        &self,
        rt: &str,
        body: Value,
        if_none_exist: Option<&str>,
    ) -> FhirResult<Written> {
        self.validate(rt, &body)?;
        let mut tx = self.store.begin().await?;
        let w = self
            .create_in(tx.as_mut(), rt, body, None, if_none_exist)
            .await?;
        tx.commit().await?;
        Ok(w)
    }

    /// Creates inside a transaction; `id` is preassigned by transaction processing.
    pub async fn create_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        body: Value,
        id: Option<String>,
        if_none_exist: Option<&str>,
    ) -> FhirResult<Written> {
        access::current().allow(rt, Interaction::Create)?;
        if let Some(cond) = if_none_exist {
            let found = self.find_in(tx, rt, cond).await?;
            match found.len() {
                0 => {}
                1 => {
                    let existing = tx
                        .read(rt, &found[0])
                        .await?
                        .ok_or_else(|| FhirError::Internal("matched resource vanished".into()))?;
                    return Ok(Written {
                        stored: existing,
                        created: false,
                    });
                }
                _ => {
                    return Err(FhirError::MultipleMatches(format!(
                        "If-None-Exist matched {} resources",
                        found.len()
                    )))
                }
            }
        }
        let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let stored = self.write_in(tx, rt, &id, body, None, "POST").await?;
        Ok(Written {
            stored,
            created: true,
        })
    }

    /// `PUT [type]/[id]`: update, or create with the client's id.
    pub async fn update(
        &self,
        rt: &str,
        id: &str,
        body: Value,
        if_match: Option<i64>,
    ) -> FhirResult<Written> {
        self.validate(rt, &body)?;
        check_body_id(&body, Some(id))?;
        check_id(id)?;
        for _ in 0..WRITE_RETRIES {
            let mut tx = self.store.begin().await?;
            match self
                .update_in(tx.as_mut(), rt, id, body.clone(), if_match)
                .await
            {
                Err(FhirError::Store(StoreError::Conflict | StoreError::Duplicate))
                    if if_match.is_none() =>
                {
                    continue
                }
                Err(FhirError::Store(StoreError::Conflict)) => {
                    return Err(FhirError::PreconditionFailed(format!(
                        "{rt}/{id} was changed by another request"
                    )))
                }
                Err(e) => return Err(e),
                Ok(w) => {
                    tx.commit().await?;
                    return Ok(w);
                }
            }
        }
        Err(FhirError::Conflict(format!(
            "{rt}/{id} is being changed by other requests; try again"
        )))
    }

    pub async fn update_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        id: &str,
        body: Value,
        if_match: Option<i64>,
    ) -> FhirResult<Written> {
        let current = tx.read(rt, id).await?;
        let what = match &current {
            Some(c) if !c.deleted => Interaction::Update,
            _ => Interaction::Create,
        };
        access::current().allow(rt, what)?;
        match (&current, if_match) {
            (None, Some(_)) => {
                return Err(FhirError::PreconditionFailed(format!(
                    "If-Match given but {rt}/{id} does not exist"
                )))
            }
            (Some(c), Some(v)) if c.version != v => {
                return Err(FhirError::PreconditionFailed(format!(
                    "{rt}/{id} is at version {}, not {v}",
                    c.version
                )))
            }
            _ => {}
        }
        let stored = self
            .write_in(tx, rt, id, body, current.as_ref(), "PUT")
            .await?;
        Ok(Written {
            stored,
            created: current.is_none(),
        })
    }

    /// `PUT [type]?[search]`: conditional update.
    pub async fn conditional_update(
        &self,
        rt: &str,
        query: &str,
        body: Value,
    ) -> FhirResult<Written> {
        self.validate(rt, &body)?;
        let mut tx = self.store.begin().await?;
        let w = self
            .conditional_update_in(tx.as_mut(), rt, query, body)
            .await?;
        tx.commit().await?;
        Ok(w)
    }

    pub async fn conditional_update_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        query: &str,
        body: Value,
    ) -> FhirResult<Written> {
        let found = self.find_in(tx, rt, query).await?;
        match found.len() {
            0 => {
                let id = match body.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        check_id(id)?;
                        id.to_string()
                    }
                    None => uuid::Uuid::new_v4().to_string(),
                };
                self.update_in(tx, rt, &id, body, None).await
            }
            1 => {
                check_body_id(&body, Some(&found[0]))?;
                self.update_in(tx, rt, &found[0].clone(), body, None).await
            }
            n => Err(FhirError::MultipleMatches(format!(
                "the conditional update matched {n} resources"
            ))),
        }
    }

    /// `PATCH [type]/[id]` with a JSON Patch document.
    pub async fn patch(
        &self,
        rt: &str,
        id: &str,
        patch: Value,
        if_match: Option<i64>,
    ) -> FhirResult<Written> {
        self.check_type(rt)?;
        let mut tx = self.store.begin().await?;
        let w = self.patch_in(tx.as_mut(), rt, id, patch, if_match).await?;
        tx.commit().await?;
        Ok(w)
    }

    pub async fn patch_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        id: &str,
        patch: Value,
        if_match: Option<i64>,
    ) -> FhirResult<Written> {
        access::current().allow(rt, Interaction::Update)?;
        let current = match tx.read(rt, id).await? {
            None => return Err(FhirError::NotFound(format!("{rt}/{id}"))),
            Some(c) if c.deleted => return Err(FhirError::Deleted(format!("{rt}/{id}"))),
            Some(c) => c,
        };
        if let Some(v) = if_match {
            if v != current.version {
                return Err(FhirError::PreconditionFailed(format!(
                    "{rt}/{id} is at version {}, not {v}",
                    current.version
                )));
            }
        }
        let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
            FhirError::invalid(
                IssueCode::Structure,
                format!("Not a JSON Patch document: {e}"),
            )
        })?;
        let mut doc: Value = serde_json::from_str(&current.body)
            .map_err(|e| FhirError::Internal(format!("stored body: {e}")))?;
        json_patch::patch(&mut doc, &ops).map_err(|e| {
            FhirError::Unprocessable(vec![crate::fhir::outcome::Issue::error(
                IssueCode::Processing,
                format!("The patch could not be applied: {e}"),
            )])
        })?;
        if let Some(meta) = doc.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
            if meta.is_empty() {
                doc.as_object_mut().map(|o| o.remove("meta"));
            }
        }
        check_body_id(&doc, Some(id))?;
        self.validate(rt, &doc)?;
        let stored = self
            .write_in(tx, rt, id, doc, Some(&current), "PATCH")
            .await?;
        Ok(Written {
            stored,
            created: false,
        })
    }

    /// `DELETE [type]/[id]`. Deleting what is absent or already deleted succeeds and changes nothing.
    pub async fn delete(&self, rt: &str, id: &str) -> FhirResult<()> {
        self.check_type(rt)?;
        for _ in 0..WRITE_RETRIES {
            let mut tx = self.store.begin().await?;
            match self.delete_in(tx.as_mut(), rt, id).await {
                Err(FhirError::Store(StoreError::Conflict)) => continue,
                Err(e) => return Err(e),
                Ok(()) => {
                    tx.commit().await?;
                    return Ok(());
                }
            }
        }
        Err(FhirError::Conflict(format!(
            "{rt}/{id} is being changed by other requests"
        )))
    }

    pub async fn delete_in(&self, tx: &mut dyn StoreTx, rt: &str, id: &str) -> FhirResult<()> {
        let guard = access::current();
        guard.allow(rt, Interaction::Delete)?;
        match tx.read(rt, id).await? {
            Some(c) if !c.deleted => {
                if !guard.unrestricted() {
                    let old: Value = serde_json::from_str(&c.body)
                        .map_err(|e| FhirError::Internal(e.to_string()))?;
                    guard.check_write(rt, Some(&old), None)?;
                }
                let at = now();
                tx.delete(rt, id, c.version + 1, c.version, at).await?;
                match rt {
                    "Subscription" => tx.subscription_reset(id, "off", at).await?,
                    "Slot" => {
                        let old: Value = serde_json::from_str(&c.body)
                            .map_err(|e| FhirError::Internal(e.to_string()))?;
                        let gone = Stored {
                            version: c.version + 1,
                            last_updated: at,
                            ..c
                        };
                        outbox(tx, &gone, notify::events::slot(Some(&old), None)).await?;
                    }
                    _ => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `DELETE [type]?[search]`: deletes the single match (several → 412).
    pub async fn conditional_delete(&self, rt: &str, query: &str) -> FhirResult<()> {
        self.check_type(rt)?;
        let mut tx = self.store.begin().await?;
        self.conditional_delete_in(tx.as_mut(), rt, query).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn conditional_delete_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        query: &str,
    ) -> FhirResult<()> {
        let found = self.find_in(tx, rt, query).await?;
        match found.len() {
            0 => Ok(()),
            1 => self.delete_in(tx, rt, &found[0]).await,
            n => Err(FhirError::MultipleMatches(format!(
                "the conditional delete matched {n} resources"
            ))),
        }
    }

    /// Ids of the resources of `rt` matching a query string (for conditional interactions:
    /// two are enough to tell "one" from "several").
    pub async fn find_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        query: &str,
    ) -> FhirResult<Vec<String>> {
        self.find_ids_in(tx, rt, query, 2).await
    }

    /// Ids of up to `limit` resources of `rt` matching a query string, inside `tx`.
    pub async fn find_ids_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        query: &str,
        limit: usize,
    ) -> FhirResult<Vec<String>> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect();
        if pairs.is_empty() {
            return Err(FhirError::invalid(
                IssueCode::Invalid,
                "A conditional interaction needs search criteria",
            ));
        }
        let mut req = self.parse_search(rt, &pairs, false)?;
        req.count = limit;
        req.offset = 0;
        let q = req.page_query(&self.registry, self.store.dialect());
        let rows = tx.find(&q).await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Runs a search outside any transaction and returns up to `limit` matching rows (for
    /// operations that compose searches, such as `$find`).
    pub async fn find_rows(
        &self,
        rt: &str,
        pairs: &[(String, String)],
        limit: usize,
    ) -> FhirResult<Vec<crate::store::FoundRow>> {
        let mut req = self.parse_search(rt, pairs, false)?;
        req.count = limit;
        req.offset = 0;
        let q = req.page_query(&self.registry, self.store.dialect());
        let mut rows = self.store.find(&q).await?;
        rows.truncate(limit);
        Ok(rows)
    }

    /// The free Slots `$find` asks for, from the open-slot index (see `search::open`), as
    /// the server (no caller's criteria: `$find` is allowed or refused as a whole). A long
    /// schedule list is tested here on the keys of the walk, a page at a time; past a few
    /// pages (a list whose schedules are rarely free in the window) the rest of the walk is
    /// one statement with the list.
    pub async fn open_slots(
        &self,
        o: &crate::fhir::search::open::OpenSlots,
    ) -> FhirResult<Vec<crate::store::FoundRow>> {
        use crate::fhir::search::open::{self as open, LIST_MAX};
        const PAGE: usize = 256;
        const PAGES: usize = 4;
        let Some(list) = o.schedules.as_ref().filter(|l| l.len() > LIST_MAX) else {
            let mut rows = self.store.find(&open::open_slot_query(o, None)).await?;
            rows.truncate(o.limit);
            return Ok(rows);
        };
        let wanted: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
        let mut picked: Vec<i64> = Vec::new();
        let mut after = None;
        let mut exhausted = false;
        for _ in 0..PAGES {
            let keys = self
                .store
                .find_open_keys(&open::open_keys_query(o, after, PAGE))
                .await?;
            for k in &keys {
                if picked.len() < o.limit && wanted.contains(k.schedule.as_str()) {
                    picked.push(k.rid);
                }
            }
            after = keys.last().map(|k| (k.lo, k.rid));
            if keys.len() < PAGE {
                exhausted = true;
            }
            if exhausted || picked.len() >= o.limit {
                break;
            }
        }
        let mut rows = match open::by_rids_query(&picked) {
            Some(q) => self.store.find(&q).await?,
            None => Vec::new(),
        };
        // In the walk's order.
        let at: std::collections::HashMap<i64, usize> =
            picked.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        rows.sort_by_key(|r| at.get(&r.rid).copied().unwrap_or(usize::MAX));
        if !exhausted && picked.len() < o.limit {
            let rest = open::OpenSlots {
                limit: o.limit - picked.len(),
                ..o.clone()
            };
            rows.extend(
                self.store
                    .find(&open::open_slot_query(&rest, after))
                    .await?,
            );
        }
        rows.truncate(o.limit);
        Ok(rows)
    }

    /// The live resources of type `rt` with these ids, read by key as the server (`$find`:
    /// the proposals' Schedules).
    pub async fn read_ids(
        &self,
        rt: &str,
        ids: &[&str],
    ) -> FhirResult<Vec<crate::store::FoundRow>> {
        match crate::fhir::search::open::by_ids_query(rt, ids) {
            Some(q) => Ok(self.store.find(&q).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Sets id and meta, extracts the index, writes. The body must already be validated.
    /// Scheduling rules (status transitions) are checked against `previous`; the time an
    /// appointment holds goes to the store with it, which refuses overlaps.
    async fn write_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        id: &str,
        body: Value,
        previous: Option<&Stored>,
        method: &'static str,
    ) -> FhirResult<Stored> {
        let expected = previous.map(|p| p.version);
        let old: Option<Value> = previous
            .filter(|p| !p.deleted)
            .and_then(|p| serde_json::from_str(&p.body).ok());
        access::current().check_write(rt, old.as_ref(), Some(&body))?;
        scheduling::check_write(old.as_ref(), &body)?;
        let is_appointment = rt == "Appointment";
        let last_updated = now();
        let mut body = if is_appointment {
            effects::record_status_change(old.as_ref(), body, &format_instant(last_updated))
        } else {
            body
        };
        let subscription_status = if rt == "Subscription" {
            Some(notify_subscription_status(&mut body)?)
        } else {
            None
        };
        let stored = self
            .store_in(tx, rt, id, body, expected, last_updated, method)
            .await?;
        let new = || -> FhirResult<Value> {
            serde_json::from_str(&stored.body).map_err(|e| FhirError::Internal(e.to_string()))
        };
        if is_appointment {
            let new = new()?;
            for update in effects::slot_updates(old.as_ref(), &new) {
                self.set_slot_status(tx, &update).await?;
            }
            outbox(tx, &stored, notify::events::appointment(old.as_ref(), &new)).await?;
        } else if rt == "Slot" {
            let new = new()?;
            outbox(tx, &stored, notify::events::slot(old.as_ref(), Some(&new))).await?;
        } else if let Some(status) = subscription_status {
            tx.subscription_reset(id, status, last_updated).await?;
        }
        Ok(stored)
    }

    /// The server sets a resource's `status` (e.g. a Subscription's, as its deliveries succeed
    /// or fail): a new version, without the client-facing write rules. No-op when already so
    /// or when the resource is gone.
    pub async fn server_set_status(&self, rt: &str, id: &str, status: &str) -> FhirResult<()> {
        let mut tx = self.store.begin().await?;
        let Some(cur) = tx.read(rt, id).await? else {
            return Ok(());
        };
        if cur.deleted {
            return Ok(());
        }
        let mut body: Value =
            serde_json::from_str(&cur.body).map_err(|e| FhirError::Internal(e.to_string()))?;
        if body["status"] == status {
            return Ok(());
        }
        body["status"] = Value::String(status.to_string());
        self.store_in(tx.as_mut(), rt, id, body, Some(cur.version), now(), "PUT")
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves a Slot to `status` as a side effect of an appointment write. Slots that are gone,
    /// already there, or taken out of use (busy-unavailable, entered-in-error) are left alone;
    /// an appointment newly taking a slot that is busy without it or out of use is refused
    /// (409, as when the database finds the slot held), whatever the write path: a slot marked
    /// busy by hand or by a calendar has no appointment for the overlap check to meet.
    async fn set_slot_status(
        &self,
        tx: &mut dyn StoreTx,
        update: &effects::SlotUpdate,
    ) -> FhirResult<()> {
        let (id, status) = (update.id.as_str(), update.status);
        let Some(slot) = tx.read("Slot", id).await? else {
            return Ok(());
        };
        if slot.deleted {
            return Ok(());
        }
        let mut body: Value =
            serde_json::from_str(&slot.body).map_err(|e| FhirError::Internal(e.to_string()))?;
        let current = body["status"].as_str().unwrap_or_default();
        if update.taken && effects::refuses_new_appointments(current) {
            return Err(FhirError::Store(StoreError::Overlap(format!("Slot/{id}"))));
        }
        if current == status || matches!(current, "busy-unavailable" | "entered-in-error") {
            return Ok(());
        }
        let old = body.clone();
        body["status"] = Value::String(status.to_string());
        let events = notify::events::slot(Some(&old), Some(&body));
        let stored = self
            .store_in(tx, "Slot", id, body, Some(slot.version), now(), "PUT")
            .await?;
        outbox(tx, &stored, events).await
    }

    /// Sets meta, indexes and stores one version, with the time it holds; no side effects.
    #[allow(clippy::too_many_arguments)]
    async fn store_in(
        &self,
        tx: &mut dyn StoreTx,
        rt: &str,
        id: &str,
        body: Value,
        expected: Option<i64>,
        last_updated: i64,
        method: &'static str,
    ) -> FhirResult<Stored> {
        let version = expected.map_or(1, |v| v + 1);
        let body = with_meta(body, id, version, last_updated);
        let index = index::extract(&self.registry, &body);
        let holds = scheduling::occupancy(&body, &self.policy)
            .into_iter()
            .map(|o| Hold {
                key: o.key,
                lo: o.lo,
                hi: o.hi,
            })
            .collect();
        let text = serde_json::to_string(&body).map_err(|e| FhirError::Internal(e.to_string()))?;
        let stored = tx
            .put(
                Write {
                    res_type: rt.to_string(),
                    id: id.to_string(),
                    version,
                    last_updated,
                    method,
                    body: text,
                    index,
                    holds,
                },
                expected,
            )
            .await?;
        Ok(stored)
    }
}

/// Now, truncated to the millisecond (the precision `meta.lastUpdated` shows).
fn now() -> i64 {
    datetime::now_micros() / 1000 * 1000
}

/// Rebuilds the body with `resourceType`, `id` and `meta` (versionId, lastUpdated) first.
fn with_meta(body: Value, id: &str, version: i64, last_updated: i64) -> Value {
    let Value::Object(mut obj) = body else {
        return body;
    };
    let mut out = Map::new();
    if let Some(rt) = obj.remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    obj.remove("id");
    out.insert("id".into(), Value::String(id.to_string()));
    let mut meta = match obj.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(format_instant(last_updated)),
    );
    let mut ordered = Map::new();
    ordered.insert(
        "versionId".into(),
        meta.remove("versionId").unwrap_or_default(),
    );
    ordered.insert(
        "lastUpdated".into(),
        meta.remove("lastUpdated").unwrap_or_default(),
    );
    ordered.extend(meta);
    out.insert("meta".into(), Value::Object(ordered));
    out.extend(obj);
    Value::Object(out)
}

/// For PUT, an id in the body must match the URL's; a body without id is accepted.
fn check_body_id(body: &Value, url_id: Option<&str>) -> FhirResult<()> {
    match (body.get("id").and_then(Value::as_str), url_id) {
        (Some(b), Some(u)) if b != u => Err(FhirError::invalid_at(
            IssueCode::Invalid,
            "id",
            format!("The id in the body ({b}) differs from the id in the URL ({u})"),
        )),
        _ => Ok(()),
    }
}

/// A client-chosen id must be a valid FHIR id.
pub fn check_id(id: &str) -> FhirResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(FhirError::invalid_at(
            IssueCode::Value,
            "id",
            "An id is 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'",
        ))
    }
}

/// Writes `events` about `stored` to the outbox, in the caller's transaction.
async fn outbox(
    tx: &mut dyn StoreTx,
    stored: &Stored,
    events: Vec<notify::events::Event>,
) -> FhirResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let focus = format!(
        "{}/{}/_history/{}",
        stored.res_type, stored.id, stored.version
    );
    let rows: Vec<OutboxRow> = events
        .into_iter()
        .map(|e| OutboxRow {
            topic: e.topic.to_string(),
            focus: focus.clone(),
            keys: e.keys.to_string(),
            occurred: stored.last_updated,
        })
        .collect();
    tx.outbox_append(&rows).await?;
    Ok(())
}

/// Checks a Subscription against what this server serves and sets the status it governs:
/// `off` stays off (the client switches it off); anything else starts over as `requested`
/// (a handshake follows).
fn notify_subscription_status(body: &mut Value) -> FhirResult<&'static str> {
    notify::subscription::parse(body)
        .map_err(|m| FhirError::invalid(crate::fhir::outcome::IssueCode::Value, m))?;
    let status = if body["status"] == "off" {
        "off"
    } else {
        "requested"
    };
    body["status"] = Value::String(status.to_string());
    Ok(status)
}
