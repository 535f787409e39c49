//! Configuration: a TOML file < environment variables < command-line flags.
//! clap reads flags and their environment fallbacks; what neither gives comes from the file,
//! then from the built-in defaults.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

/// Settings of `serve` (and of the commands that open the database). Like `FileConfig` and
/// `Config`, deliberately not `Debug`: they hold secrets (passwords in database, SMTP and AMQP
/// URLs, SMS credentials), and nothing may print them.
#[derive(Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "FHIR_SCHEDULER_ADDR")]
    pub addr: Option<String>,
    /// Directory for the embedded default's files (the SQLite database) [default: ./data]
    #[arg(long, env = "FHIR_SCHEDULER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: postgres://… for PostgreSQL, sqlite://… for SQLite [default: SQLite in --data-dir]
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Largest accepted request body in bytes [default: 10485760]
    #[arg(long, env = "FHIR_SCHEDULER_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Public FHIR base URL used in links [default: from the request's Host, + /fhir]
    #[arg(long, env = "FHIR_SCHEDULER_BASE_URL")]
    pub base_url: Option<String>,
    /// Database connections per pool [default: PostgreSQL 16 (three pools), SQLite 4 per core]
    #[arg(long, env = "FHIR_SCHEDULER_DB_CONNECTIONS")]
    pub db_connections: Option<u32>,
    /// Let a patient hold overlapping appointments [default: false]
    #[arg(long, env = "FHIR_SCHEDULER_ALLOW_PATIENT_OVERLAP")]
    pub allow_patient_overlap: Option<bool>,
    /// How long `$hold` keeps slots, in seconds [default: 300]
    #[arg(long, env = "FHIR_SCHEDULER_HOLD_TTL_SECONDS")]
    pub hold_ttl_seconds: Option<u64>,
    /// Run the notification worker inside `serve` [default: true]; false when it runs as its
    /// own process (`fhir-scheduler worker notifications`)
    #[arg(long, env = "FHIR_SCHEDULER_NOTIFY_WORKER")]
    pub notify_worker: Option<bool>,
    /// How long a notification worker holds a message it is sending before another worker
    /// may take it over (a crashed worker's messages wait this long), in seconds [default: 60]
    #[arg(long, env = "FHIR_SCHEDULER_NOTIFY_LEASE_SECONDS")]
    pub notify_lease_seconds: Option<u64>,
    /// How long a failing notification is retried before it is given up and recorded, in
    /// seconds [default: 86400]
    #[arg(long, env = "FHIR_SCHEDULER_NOTIFY_RETRY_SECONDS")]
    pub notify_retry_seconds: Option<u64>,
    /// How often a notification worker looks for new work it was not woken for, in
    /// milliseconds; on PostgreSQL every commit of outbox rows wakes every worker (LISTEN /
    /// NOTIFY), so this only bounds what a lost wake-up costs [default: 250]
    #[arg(long, env = "FHIR_SCHEDULER_NOTIFY_POLL_MS")]
    pub notify_poll_ms: Option<u64>,
    /// SMTP server for email messages, e.g. smtp://user:pass@host:587 (STARTTLS) or smtps://host (TLS); unset: email waits
    #[arg(long, env = "FHIR_SCHEDULER_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// From address of email messages [default: fhir-scheduler@localhost]
    #[arg(long, env = "FHIR_SCHEDULER_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// SMS provider endpoint (Twilio-style: form POST To, From, Body); unset: SMS waits
    #[arg(long, env = "FHIR_SCHEDULER_SMS_URL")]
    pub sms_url: Option<String>,
    /// Sender number or name for SMS
    #[arg(long, env = "FHIR_SCHEDULER_SMS_FROM")]
    pub sms_from: Option<String>,
    /// SMS provider credentials as user:token (HTTP basic)
    #[arg(long, env = "FHIR_SCHEDULER_SMS_AUTH")]
    pub sms_auth: Option<String>,
    /// RabbitMQ URL (amqp://user:pass@host:5672/%2f): notification work then goes through its
    /// durable queues; unset: the in-process worker does it from the database
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Prefix of the RabbitMQ exchange and queue names [default: fhir-scheduler.notify]
    #[arg(long, env = "FHIR_SCHEDULER_AMQP_PREFIX")]
    pub amqp_prefix: Option<String>,
    /// Where `worker notifications` serves its /metrics (e.g. 127.0.0.1:9100) [default: not served]
    #[arg(long, env = "FHIR_SCHEDULER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Booking transactions served at once [default: 8]
    #[arg(long, env = "FHIR_SCHEDULER_BOOKING_WORKERS")]
    pub booking_workers: Option<usize>,
    /// Booking requests that may wait; more get 429 [default: 512]
    #[arg(long, env = "FHIR_SCHEDULER_BOOKING_QUEUE_DEPTH")]
    pub booking_queue_depth: Option<usize>,
    /// Days ahead the background filler keeps schedules' slots generated; 0 turns it off
    /// [default: 28]
    #[arg(long, env = "FHIR_SCHEDULER_SLOT_FILL_DAYS")]
    pub slot_fill_days: Option<i64>,
    /// Base URL of virtual-visit join links [default: https://visit.fhir-scheduler.org/join]
    #[arg(long, env = "FHIR_SCHEDULER_VIRTUAL_VISIT_BASE")]
    pub virtual_visit_base: Option<String>,
    /// Require SMART/OAuth 2.0 bearer tokens: on, or off for local development only
    /// [default: on]
    #[arg(long, env = "FHIR_SCHEDULER_AUTH", value_parser = ["on", "off"])]
    pub auth: Option<String>,
    /// External OpenID Connect provider (issuer URL) whose access tokens are accepted beside
    /// ours; https, or http on a loopback address only [default: none]
    #[arg(long, env = "FHIR_SCHEDULER_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Audience (`aud`) the external provider's tokens must carry [default: the FHIR base URL]
    #[arg(long, env = "FHIR_SCHEDULER_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// Claim of external tokens naming the role: patient, practitioner, admin or system
    /// [default: fhir_scheduler_role]
    #[arg(long, env = "FHIR_SCHEDULER_OIDC_ROLE_CLAIM")]
    pub oidc_role_claim: Option<String>,
    /// Claim of external tokens naming the user's FHIR resource [default: fhirUser]
    #[arg(long, env = "FHIR_SCHEDULER_OIDC_FHIR_USER_CLAIM")]
    pub oidc_fhir_user_claim: Option<String>,
    /// Claim of external tokens with the SMART scopes, space-separated or an array (`scp` is
    /// read when it is absent) [default: scope]
    #[arg(long, env = "FHIR_SCHEDULER_OIDC_SCOPE_CLAIM")]
    pub oidc_scope_claim: Option<String>,
}

/// The same settings as read from the configuration file.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub body_limit: Option<usize>,
    pub base_url: Option<String>,
    pub db_connections: Option<u32>,
    pub allow_patient_overlap: Option<bool>,
    pub hold_ttl_seconds: Option<u64>,
    pub notify_retry_seconds: Option<u64>,
    pub notify_poll_ms: Option<u64>,
    pub notify_worker: Option<bool>,
    pub notify_lease_seconds: Option<u64>,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub sms_url: Option<String>,
    pub sms_from: Option<String>,
    pub sms_auth: Option<String>,
    pub amqp_url: Option<String>,
    pub amqp_prefix: Option<String>,
    pub metrics_addr: Option<String>,
    pub booking_workers: Option<usize>,
    pub booking_queue_depth: Option<usize>,
    pub virtual_visit_base: Option<String>,
    pub slot_fill_days: Option<i64>,
    /// "on" or "off".
    pub auth: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub oidc_role_claim: Option<String>,
    pub oidc_fhir_user_claim: Option<String>,
    pub oidc_scope_claim: Option<String>,
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    pub addr: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub body_limit: usize,
    pub base_url: Option<String>,
    pub db_connections: u32,
    pub allow_patient_overlap: bool,
    pub hold_ttl_seconds: u64,
    pub notify_retry_seconds: u64,
    pub notify_poll_ms: u64,
    pub notify_worker: bool,
    pub notify_lease_seconds: u64,
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub sms_url: Option<String>,
    pub sms_from: Option<String>,
    pub sms_auth: Option<String>,
    pub amqp_url: Option<String>,
    pub amqp_prefix: Option<String>,
    pub metrics_addr: Option<String>,
    pub booking_workers: usize,
    pub booking_queue_depth: usize,
    pub virtual_visit_base: String,
    pub slot_fill_days: i64,
    /// Bearer tokens required (`--auth on`, the default).
    pub auth: bool,
    /// An external identity provider whose access tokens are accepted (`--oidc-issuer`).
    pub oidc: Option<OidcConfig>,
}

/// An external OpenID Connect provider whose access tokens the server accepts beside its own
/// (`auth::external`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer exactly as the provider's discovery document and tokens state it.
    pub issuer: String,
    /// The `aud` its tokens must carry; `None`: the FHIR base URL (as for our own tokens).
    pub audience: Option<String>,
    pub role_claim: String,
    pub fhir_user_claim: String,
    pub scope_claim: String,
}

impl OidcConfig {
    /// The defaults for `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: None,
            role_claim: "fhir_scheduler_role".into(),
            fhir_user_claim: "fhirUser".into(),
            scope_claim: "scope".into(),
        }
    }
}

pub const DEFAULT_BODY_LIMIT: usize = 10 * 1024 * 1024;

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("bad config file {}: {e}", path.display()))
    }
}

impl Config {
    /// Flags/environment (already merged by clap) over the file over defaults.
    pub fn resolve(args: ServeArgs, file: FileConfig) -> Self {
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = args.database_url.or(file.database_url).unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("fhir-scheduler.db").display()
            )
        });
        let db_connections = args
            .db_connections
            .or(file.db_connections)
            .unwrap_or_else(|| default_db_connections(&database_url));
        Config {
            addr: args
                .addr
                .or(file.addr)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            data_dir,
            database_url,
            body_limit: args
                .body_limit
                .or(file.body_limit)
                .unwrap_or(DEFAULT_BODY_LIMIT),
            base_url: args.base_url.or(file.base_url),
            db_connections,
            allow_patient_overlap: args
                .allow_patient_overlap
                .or(file.allow_patient_overlap)
                .unwrap_or(false),
            hold_ttl_seconds: args
                .hold_ttl_seconds
                .or(file.hold_ttl_seconds)
                .unwrap_or(300),
            notify_worker: args.notify_worker.or(file.notify_worker).unwrap_or(true),
            notify_lease_seconds: args
                .notify_lease_seconds
                .or(file.notify_lease_seconds)
                .unwrap_or(60)
                .max(1),
            notify_retry_seconds: args
                .notify_retry_seconds
                .or(file.notify_retry_seconds)
                .unwrap_or(86_400),
            notify_poll_ms: args
                .notify_poll_ms
                .or(file.notify_poll_ms)
                .unwrap_or(250)
                .max(10),
            smtp_url: args.smtp_url.or(file.smtp_url),
            mail_from: args.mail_from.or(file.mail_from),
            sms_url: args.sms_url.or(file.sms_url),
            sms_from: args.sms_from.or(file.sms_from),
            sms_auth: args.sms_auth.or(file.sms_auth),
            amqp_url: args.amqp_url.or(file.amqp_url),
            amqp_prefix: args.amqp_prefix.or(file.amqp_prefix),
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            booking_workers: args.booking_workers.or(file.booking_workers).unwrap_or(8),
            booking_queue_depth: args
                .booking_queue_depth
                .or(file.booking_queue_depth)
                .unwrap_or(512),
            virtual_visit_base: args
                .virtual_visit_base
                .or(file.virtual_visit_base)
                .unwrap_or_else(|| "https://visit.fhir-scheduler.org/join".into()),
            slot_fill_days: args.slot_fill_days.or(file.slot_fill_days).unwrap_or(28),
            auth: args.auth.or(file.auth).as_deref() != Some("off"),
            oidc: args.oidc_issuer.or(file.oidc_issuer).map(|issuer| {
                let d = OidcConfig::new(issuer);
                OidcConfig {
                    audience: args.oidc_audience.or(file.oidc_audience),
                    role_claim: args
                        .oidc_role_claim
                        .or(file.oidc_role_claim)
                        .unwrap_or(d.role_claim),
                    fhir_user_claim: args
                        .oidc_fhir_user_claim
                        .or(file.oidc_fhir_user_claim)
                        .unwrap_or(d.fhir_user_claim),
                    scope_claim: args
                        .oidc_scope_claim
                        .or(file.oidc_scope_claim)
                        .unwrap_or(d.scope_claim),
                    issuer: d.issuer,
                }
            }),
        }
    }

    /// The FHIR base URL tokens are issued for (`aud`): `base_url`, else `http://{addr}/fhir`.
    pub fn public_base(&self) -> String {
        match &self.base_url {
            Some(b) => b.trim_end_matches('/').to_string(),
            None => format!("http://{}/fhir", self.addr),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite")
    }
}

/// The pool's size unless configured. PostgreSQL: 16. SQLite: 4 per core (at least 4) — each
/// connection is a thread of this process, competing with request handling for the cores;
/// measured on 2 cores (slot search, 64 clients): 8 connections 3,460 searches/s, p99 29 ms;
/// 16: 3,158/s, p99 51 ms; reads 3,893/s against 3,339/s.
pub fn default_db_connections(database_url: &str) -> u32 {
    if database_url.starts_with("postgres") {
        return 16;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .max(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beats_defaults() {
        let file = FileConfig {
            addr: Some("0.0.0.0:9000".into()),
            body_limit: Some(5),
            ..Default::default()
        };
        let args = ServeArgs {
            addr: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let c = Config::resolve(args, file);
        assert_eq!(c.addr, "127.0.0.1:1");
        assert_eq!(c.body_limit, 5);
        assert!(c.database_url.starts_with("sqlite://./data/"));
        assert_eq!(c.db_connections, default_db_connections(&c.database_url));
        assert_eq!(default_db_connections("postgres://h/db"), 16);
        assert!(c.auth, "auth is on unless turned off");
        assert_eq!(c.public_base(), "http://127.0.0.1:1/fhir");
        assert_eq!(
            c.oidc, None,
            "no external identity provider unless configured"
        );
    }

    #[test]
    fn oidc_settings_layer_like_the_others() {
        let file = FileConfig {
            oidc_issuer: Some("https://idp.example".into()),
            oidc_role_claim: Some("roles".into()),
            oidc_scope_claim: Some("scp".into()),
            ..Default::default()
        };
        let args = ServeArgs {
            oidc_role_claim: Some("realm_access.roles".into()),
            ..Default::default()
        };
        let o = Config::resolve(args, file).oidc.expect("configured");
        assert_eq!(o.issuer, "https://idp.example");
        assert_eq!(o.audience, None);
        assert_eq!(o.role_claim, "realm_access.roles");
        assert_eq!(o.fhir_user_claim, "fhirUser");
        assert_eq!(o.scope_claim, "scp");
    }
}
