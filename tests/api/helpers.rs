use std::path::PathBuf;

use fhir_scheduler::config::{Config, DEFAULT_BODY_LIMIT};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    /// The database the server runs on, for tests that check stored rows with SQL.
    pub database_url: String,
    pub client: reqwest::Client,
    /// The server's authorization side, to mint tokens for tests.
    pub auth: std::sync::Arc<fhir_scheduler::auth::Auth>,
    /// `Bearer …` of an admin token with every scope: what requests carry unless a test
    /// passes its own `Authorization` header.
    pub admin_bearer: String,
    /// The server's audit writer (`flush` before searching AuditEvents).
    pub audit: fhir_scheduler::audit::Auditor,
    _dir: Option<TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PostgreSQL server tests create their databases on (trust auth, as CI runs it).
fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running for the tests (see scripts/test.sh)");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => panic!("bad TEST_POSTGRES_URL"),
    }
}

/// Mints an access token of `role` with `scope` (and the user's own resource, if any).
pub fn mint(
    auth: &fhir_scheduler::auth::Auth,
    role: &str,
    fhir_user: Option<&str>,
    scope: &str,
) -> String {
    use fhir_scheduler::auth::{Principal, Role, Scopes};
    let p = Principal {
        subject: format!("test:{role}:{}", fhir_user.unwrap_or("-")),
        client_id: "test-client".into(),
        role: Role::parse(role).expect("role"),
        fhir_user: fhir_user.map(String::from),
        patient: fhir_user
            .and_then(|f| f.strip_prefix("Patient/"))
            .map(String::from),
        scopes: Scopes::parse(scope).expect("scope"),
    };
    auth.mint(&p, 3600).expect("mint").0
}

impl TestApp {
    /// `Bearer …` for a user of `role` (`Patient/x`, `Practitioner/y`) with `scope`.
    pub fn bearer(&self, role: &str, fhir_user: Option<&str>, scope: &str) -> String {
        format!("Bearer {}", mint(&self.auth, role, fhir_user, scope))
    }

    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, DEFAULT_BODY_LIMIT).await
    }

    pub async fn start_with(backend: Backend, body_limit: usize) -> Self {
        Self::start_config(backend, |c| c.body_limit = body_limit).await
    }

    /// Starts with the test defaults changed by `adjust`.
    pub async fn start_config(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = std::env::temp_dir().join(format!("fhir-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
            Backend::Postgres => fresh_postgres().await,
        };
        let mut config = Config {
            addr: "127.0.0.1:0".into(),
            data_dir: dir.clone(),
            database_url: database_url.clone(),
            body_limit: DEFAULT_BODY_LIMIT,
            base_url: None,
            db_connections: 8,
            allow_patient_overlap: false,
            hold_ttl_seconds: 300,
            notify_retry_seconds: 86_400,
            notify_worker: true,
            notify_lease_seconds: 60,
            notify_poll_ms: 250,
            smtp_url: None,
            mail_from: None,
            sms_url: None,
            sms_from: None,
            sms_auth: None,
            // RabbitMQ tests set it (`amqp.rs`).
            amqp_url: None,
            amqp_prefix: None,
            metrics_addr: None,
            booking_workers: 8,
            booking_queue_depth: 512,
            virtual_visit_base: "https://visit.test/join".into(),
            // Tests that want the filler turn it on.
            slot_fill_days: 0,
            auth: true,
            // Tests of an external identity provider set it (`oidc.rs`).
            oidc: None,
        };
        // Bound first, so the server knows its own address (the tokens' audience).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.addr = addr.to_string();
        adjust(&mut config);
        let built = fhir_scheduler::build_app(&config)
            .await
            .expect("server builds");
        let router = built.router;
        let auth = built.auth;
        let audit = built.audit;
        let admin = mint(&auth, "admin", None, "user/*.cruds");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(fhir_scheduler::serve(listener, router, async {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}/fhir"),
            database_url,
            client: reqwest::Client::new(),
            auth,
            admin_bearer: format!("Bearer {admin}"),
            audit,
            _dir: Some(TempDir(dir)),
            shutdown: Some(tx),
        }
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.base.trim_end_matches("/fhir").to_string() + "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Asserts that `/metrics` holds each of `lines`.
    pub async fn assert_metrics(&self, lines: &[&str]) {
        let m = self.metrics().await;
        for line in lines {
            assert!(m.contains(line), "{line} in\n{m}");
        }
    }

    /// Runs a `SELECT COUNT(*)`-style query on the server's database.
    pub async fn sql_count(&self, sql: &str) -> i64 {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.database_url)
            .await
            .expect("db");
        let n: i64 = sqlx::query(sql)
            .fetch_one(&pool)
            .await
            .expect("query")
            .get(0);
        pool.close().await;
        n
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    /// Sends a request; returns status, headers and the parsed JSON body (Null when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header("Accept", "application/fhir+json");
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("Content-Type", "application/fhir+json");
        }
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.header("Authorization", &self.admin_bearer);
        }
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("authorization") && v.is_empty() {
                continue; // an empty value: send no credentials at all
            }
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(body.to_string().into_bytes()), &[])
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(body.to_string().into_bytes()), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Creates a resource and returns it as stored.
    pub async fn create(&self, resource: Value) -> Value {
        let rt = resource["resourceType"].as_str().unwrap().to_string();
        let r = self.post(&rt, &resource).await;
        assert_eq!(r.status, StatusCode::CREATED, "create {rt}: {}", r.json);
        r.json
    }

    /// Ids of the `match` entries of a searchset.
    pub async fn search_ids(&self, query: &str) -> Vec<String> {
        let r = self.get(query).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.json);
        let mut ids: Vec<String> = r.json["entry"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["search"]["mode"] == "match")
                    .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts an OperationOutcome with the given status and returns its first issue code.
    pub fn outcome(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.json);
        assert_eq!(
            self.json["resourceType"], "OperationOutcome",
            "{}",
            self.json
        );
        self.json["issue"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A child process killed (-9) when dropped, so a failed test leaves none behind.
pub struct Process(pub std::process::Child);

impl Process {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `fhir-scheduler worker notifications` on `database_url` with `args`, as a child process.
pub fn worker_process(database_url: &str, args: &[&str]) -> Process {
    Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_fhir-scheduler"))
            .args(["worker", "notifications", "--database-url", database_url])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the worker starts"),
    )
}

/// Runs an async test function on both backends.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

pub fn patient(family: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": family}],
        "name": [{"family": family, "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1980-05-17"
    })
}

/// The Slot references of a `$find` answer's proposals, in order.
pub fn proposed_slots(bundle: &serde_json::Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e["resource"]["slot"][0]["reference"].as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}
