//! fhir-scheduler: a FHIR R4 server for patient–doctor scheduling.
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod api;
pub mod config;
pub mod fhir;
pub mod scheduling;
pub mod seed;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{ApiSettings, AppState};
use crate::config::Config;
use crate::fhir::Fhir;
use crate::store::{SqlStore, Store};

/// Opens (creating if needed) and migrates the database the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<SqlStore>> {
    if config.is_sqlite() {
        std::fs::create_dir_all(&config.data_dir)?;
    }
    let store = SqlStore::connect(&config.database_url, config.db_connections).await?;
    store.migrate().await?;
    Ok(Arc::new(store))
}

/// Builds the engine and the HTTP application.
pub async fn build(config: &Config) -> anyhow::Result<(axum::Router, Arc<Fhir>)> {
    let store = open_store(config).await?;
    let store: Arc<dyn Store> = store;
    let mut fhir = Fhir::new(store).map_err(|e| anyhow::anyhow!(e))?;
    fhir.policy.allow_patient_overlap = config.allow_patient_overlap;
    let fhir = Arc::new(fhir);
    let state = AppState {
        fhir: fhir.clone(),
        settings: Arc::new(ApiSettings {
            body_limit: config.body_limit,
            base_url: config.base_url.clone(),
        }),
    };
    Ok((api::router(state), fhir))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
