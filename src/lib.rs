//! fhir-scheduler: a FHIR R4 server for patient–doctor scheduling.
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod api;
pub mod audit;
pub mod auth;
pub mod booking;
pub mod config;
pub mod fhir;
pub mod notify;
pub mod scheduling;
pub mod seed;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{ApiSettings, AppState};
use crate::booking::queue::AdmissionQueue;
use crate::booking::Scheduler;
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

/// What `build_app` makes: the HTTP application and the parts tests and the CLI reach into.
pub struct App {
    pub router: axum::Router,
    pub fhir: Arc<Fhir>,
    pub auth: Arc<auth::Auth>,
    pub audit: audit::Auditor,
}

/// Builds the engine and the HTTP application.
pub async fn build(config: &Config) -> anyhow::Result<(axum::Router, Arc<Fhir>)> {
    let app = build_app(config).await?;
    Ok((app.router, app.fhir))
}

/// Opens the store and the authorization side only (for the `admin` CLI).
pub async fn build_auth(config: &Config) -> anyhow::Result<Arc<auth::Auth>> {
    let sql = open_store(config).await?;
    let store: Arc<dyn Store> = sql.clone();
    let fhir = Arc::new(Fhir::new(store).map_err(|e| anyhow::anyhow!(e))?);
    Ok(Arc::new(
        auth::Auth::new(
            sql,
            fhir,
            &config.public_base(),
            config.auth,
            config.oidc.as_ref(),
        )
        .await?,
    ))
}

/// Builds everything `serve` runs.
pub async fn build_app(config: &Config) -> anyhow::Result<App> {
    let sql = open_store(config).await?;
    let store: Arc<dyn Store> = sql.clone();
    let mut fhir = Fhir::new(store).map_err(|e| anyhow::anyhow!(e))?;
    fhir.policy.allow_patient_overlap = config.allow_patient_overlap;
    let fhir = Arc::new(fhir);
    let auth = Arc::new(
        auth::Auth::new(
            sql.clone(),
            fhir.clone(),
            &config.public_base(),
            config.auth,
            config.oidc.as_ref(),
        )
        .await?,
    );
    if !config.auth {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--auth off): every request is treated as the server itself. \
             For local development only; never expose this server."
        );
    }
    let mut scheduler = Scheduler::new(fhir.clone(), Duration::from_secs(config.hold_ttl_seconds));
    scheduler.virtual_visit_base = config.virtual_visit_base.clone();
    let scheduler = Arc::new(scheduler);
    let queue = Arc::new(AdmissionQueue::new(
        config.booking_workers,
        config.booking_queue_depth,
    ));
    let mut registry = prometheus_client::registry::Registry::default();
    queue.metrics.register(&mut registry);
    spawn_hold_sweeper(scheduler.clone());
    if config.slot_fill_days > 0 {
        spawn_slot_filler(fhir.clone(), config.slot_fill_days);
    }
    if config.notify_worker {
        let metrics = Arc::new(notify::metrics::NotifyMetrics::default());
        metrics.register(&mut registry);
        notify::worker::spawn(sql.clone(), fhir.clone(), notify_config(config), metrics);
    }
    let auditor = audit::Auditor::new(fhir.clone(), audit::AuditConfig::default());
    let state = AppState {
        fhir: fhir.clone(),
        settings: Arc::new(ApiSettings {
            body_limit: config.body_limit,
            base_url: config.base_url.clone(),
        }),
        scheduler,
        queue,
        jobs: Arc::new(api::ops::AsyncJobs::default()),
        auth: auth.clone(),
        audit: auditor.clone(),
        metrics: Arc::new(registry),
    };
    Ok(App {
        router: api::router(state),
        fhir,
        auth,
        audit: auditor,
    })
}

/// The notification worker's settings from the configuration.
pub fn notify_config(config: &Config) -> notify::worker::NotifyConfig {
    notify::worker::NotifyConfig {
        retry_for: Duration::from_secs(config.notify_retry_seconds),
        poll: Duration::from_millis(config.notify_poll_ms),
        claim_lease: Duration::from_secs(config.notify_lease_seconds),
        base_url: config.public_base(),
        channels: notify::outreach::Channels {
            smtp_url: config.smtp_url.clone(),
            mail_from: config
                .mail_from
                .clone()
                .unwrap_or_else(|| "fhir-scheduler@localhost".into()),
            sms_url: config.sms_url.clone(),
            sms_from: config.sms_from.clone(),
            sms_auth: config
                .sms_auth
                .as_deref()
                .and_then(|a| a.split_once(':'))
                .map(|(u, p)| (u.to_string(), p.to_string())),
        },
        amqp: config.amqp_url.clone().map(|url| {
            let mut a = notify::amqp::AmqpConfig::new(url);
            if let Some(p) = &config.amqp_prefix {
                a.prefix = p.clone();
            }
            a
        }),
        ..Default::default()
    }
}

/// `fhir-scheduler worker notifications`: the notification worker as a process of its own
/// (several may run side by side, and beside servers started with `--notify-worker false`).
pub async fn run_notify_worker(config: &Config) -> anyhow::Result<()> {
    let sql = open_store(config).await?;
    let store: Arc<dyn Store> = sql.clone();
    let fhir = Arc::new(Fhir::new(store).map_err(|e| anyhow::anyhow!(e))?);
    let metrics = Arc::new(notify::metrics::NotifyMetrics::default());
    if let Some(addr) = &config.metrics_addr {
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "worker metrics at /metrics");
        let app = api::metrics_router(Arc::new(registry));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    notify::worker::spawn(sql, fhir, notify_config(config), metrics);
    Ok(())
}

/// Keeps every active schedule filled to its horizon: at start, then every 15 minutes.
fn spawn_slot_filler(fhir: Arc<Fhir>, days: i64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15 * 60));
        loop {
            tick.tick().await;
            match crate::fhir::access::as_system(booking::slots::fill_all(&fhir, days)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(created = n, "slot filler created slots"),
                Err(e) => tracing::warn!(error = %e, "slot filler failed; will retry"),
            }
        }
    });
}

/// Cancels lapsed holds every few seconds, so held slots free themselves.
fn spawn_hold_sweeper(scheduler: Arc<Scheduler>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            match scheduler.expire_holds().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "lapsed holds cancelled"),
                Err(e) => tracing::warn!(error = %e, "hold sweeper failed; will retry"),
            }
        }
    });
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The peer address goes into audit records.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
