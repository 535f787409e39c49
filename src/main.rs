use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fhir_scheduler::auth::{accounts, Principal, Role, Scopes};
use fhir_scheduler::config::{Config, FileConfig, ServeArgs};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// fhir-scheduler: a FHIR R4 server for patient–doctor scheduling.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (file < environment < flags)
    #[arg(long, global = true, env = "FHIR_SCHEDULER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the FHIR server (FHIR base at /fhir)
    Serve(ServeArgs),
    /// Apply database migrations and exit
    Migrate(ServeArgs),
    /// Load data into the database
    Seed {
        #[command(flatten)]
        args: ServeArgs,
        /// Load the demo clinic (3 locations, 20 practitioners, 2 weeks of slots, 200 patients)
        #[arg(long)]
        demo: bool,
    },
    /// The audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Background workers as processes of their own
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Users, clients, keys and operator tokens of the authorization server
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Mint a short-lived access token; the bare token is the last line printed
    Token {
        #[command(flatten)]
        args: ServeArgs,
        /// patient | practitioner | admin | system
        #[arg(long, default_value = "admin")]
        role: String,
        /// The user's own resource: Patient/x or Practitioner/y (patients and practitioners)
        #[arg(long)]
        fhir_user: Option<String>,
        /// SMART scopes [default: user/*.cruds; patient/*.cruds for a patient; system/*.cruds for system]
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in seconds (at most 3600)
        #[arg(long, default_value_t = 900)]
        ttl: i64,
    },
    /// Register (or replace) a user who signs in at the login page
    CreateUser {
        #[command(flatten)]
        args: ServeArgs,
        #[arg(long)]
        username: String,
        /// Read from this environment variable rather than the command line
        #[arg(long, default_value = "FHIR_SCHEDULER_NEW_PASSWORD")]
        password_env: String,
        /// patient | practitioner | admin
        #[arg(long)]
        role: String,
        #[arg(long)]
        fhir_user: Option<String>,
    },
    /// Register (or replace) a client application
    CreateClient {
        #[command(flatten)]
        args: ServeArgs,
        #[arg(long)]
        client_id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// public | confidential-symmetric | confidential-asymmetric
        #[arg(long, default_value = "public")]
        kind: String,
        /// confidential-symmetric: read from this environment variable
        #[arg(long)]
        secret_env: Option<String>,
        /// confidential-asymmetric: the client's JSON Web Key Set (JSON text)
        #[arg(long)]
        jwks: Option<String>,
        /// Allowed redirect URIs (repeatable)
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// The scopes the client may be granted
        #[arg(long)]
        scopes: String,
        /// Backend services: the role their tokens carry [default: system]
        #[arg(long)]
        role: Option<String>,
    },
    /// Add a new signing key (older tokens keep verifying until they expire)
    RotateKey(ServeArgs),
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Deliver subscription notifications and patient messages (several may run side by side)
    Notifications(ServeArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the AuditEvent hash chain: `ok N records` (exit 0) or the first bad seq (exit 1)
    Verify(ServeArgs),
}

fn config(file: &Option<PathBuf>, args: ServeArgs) -> anyhow::Result<Config> {
    let file = match file {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    Ok(Config::resolve(args, file))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // Panic payloads may quote request data: log where, never what.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(location = %at, "panic");
    }));
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let cfg = config(&cli.config, args)?;
            let app = fhir_scheduler::build_app(&cfg).await?;
            let listener = tokio::net::TcpListener::bind(&cfg.addr)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.addr))?;
            tracing::info!(
                addr = %listener.local_addr()?,
                backend = if cfg.is_sqlite() { "sqlite" } else { "postgres" },
                "fhir-scheduler serving FHIR R4 at /fhir"
            );
            fhir_scheduler::serve(listener, app.router, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            // Nothing put on record is lost at shutdown.
            app.audit.flush().await?;
            Ok(())
        }
        Command::Migrate(args) => {
            let cfg = config(&cli.config, args)?;
            fhir_scheduler::open_store(&cfg).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed { args, demo } => {
            let cfg = config(&cli.config, args)?;
            if !demo {
                anyhow::bail!("nothing to seed: pass --demo");
            }
            let (_, fhir) = fhir_scheduler::build(&cfg).await?;
            let summary =
                fhir_scheduler::fhir::access::as_system(fhir_scheduler::seed::load_demo(&fhir))
                    .await?;
            println!("{summary}");
            Ok(())
        }
        Command::Admin(cmd) => admin(&cli.config, cmd).await,
        Command::Worker(WorkerCommand::Notifications(args)) => {
            let cfg = config(&cli.config, args)?;
            fhir_scheduler::run_notify_worker(&cfg).await?;
            tracing::info!("notification worker running");
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            let cfg = config(&cli.config, args)?;
            let store = fhir_scheduler::open_store(&cfg).await?;
            let v = fhir_scheduler::audit::verify(&store).await?;
            match v.broken {
                None => {
                    println!("ok {} records", v.records);
                    Ok(())
                }
                Some(b) => {
                    println!("BROKEN at {b} ({} records before it are good)", v.records);
                    std::process::exit(1);
                }
            }
        }
    }
}

fn role(s: &str) -> anyhow::Result<Role> {
    Role::parse(s).ok_or_else(|| anyhow::anyhow!("unknown role {s}"))
}

async fn admin(file: &Option<PathBuf>, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Token {
            args,
            role: r,
            fhir_user,
            scope,
            ttl,
        } => {
            let cfg = config(file, args)?;
            let auth = fhir_scheduler::build_auth(&cfg).await?;
            let role = role(&r)?;
            let scope = scope.unwrap_or_else(|| {
                match role {
                    Role::Patient => "patient/*.cruds",
                    Role::System => "system/*.cruds",
                    _ => "user/*.cruds",
                }
                .to_string()
            });
            let p = Principal {
                subject: format!("cli:{}", role.as_str()),
                client_id: "fhir-scheduler-cli".into(),
                role,
                patient: fhir_user
                    .as_deref()
                    .and_then(|f| f.strip_prefix("Patient/"))
                    .map(String::from),
                fhir_user,
                scopes: Scopes::parse(&scope).map_err(|e| anyhow::anyhow!(e))?,
            };
            let (token, claims) = auth.mint(&p, ttl).map_err(|e| anyhow::anyhow!("{e}"))?;
            // Every token issue is on record, the operator's too.
            let audit = fhir_scheduler::audit::Auditor::new(auth.fhir.clone(), Default::default());
            audit
                .record(
                    fhir_scheduler::audit::Record::token_issued(true)
                        .who(format!("operator:{}", claims.sub))
                        .role(claims.role.clone())
                        .client(claims.client_id.clone()),
                )
                .await?;
            audit.flush().await?;
            eprintln!(
                "token for {} ({}), scope \"{}\", audience {}, expires {}",
                claims.sub, claims.role, claims.scope, claims.aud, claims.exp
            );
            println!("{token}");
            Ok(())
        }
        AdminCommand::CreateUser {
            args,
            username,
            password_env,
            role: r,
            fhir_user,
        } => {
            let cfg = config(file, args)?;
            let password = std::env::var(&password_env)
                .map_err(|_| anyhow::anyhow!("set the password in ${password_env}"))?;
            let store = fhir_scheduler::open_store(&cfg).await?;
            accounts::create_user(
                &store,
                &username,
                &password,
                role(&r)?,
                fhir_user.as_deref(),
            )
            .await?;
            println!("user {username} registered");
            Ok(())
        }
        AdminCommand::CreateClient {
            args,
            client_id,
            name,
            kind,
            secret_env,
            jwks,
            redirect_uris,
            scopes,
            role: r,
        } => {
            let cfg = config(file, args)?;
            let secret = match secret_env {
                Some(v) => {
                    Some(std::env::var(&v).map_err(|_| anyhow::anyhow!("set the secret in ${v}"))?)
                }
                None => None,
            };
            let store = fhir_scheduler::open_store(&cfg).await?;
            let role = r.as_deref().map(role).transpose()?;
            let name = if name.is_empty() {
                client_id.clone()
            } else {
                name
            };
            accounts::create_client(
                &store,
                &accounts::NewClient {
                    client_id: &client_id,
                    name: &name,
                    kind: &kind,
                    secret: secret.as_deref(),
                    jwks: jwks.as_deref(),
                    redirect_uris: &redirect_uris,
                    scopes: &scopes,
                    role,
                },
            )
            .await?;
            println!("client {client_id} registered");
            Ok(())
        }
        AdminCommand::RotateKey(args) => {
            let cfg = config(file, args)?;
            let store = fhir_scheduler::open_store(&cfg).await?;
            let kid = fhir_scheduler::auth::keys::rotate(&store, fhir_scheduler::auth::now_secs())
                .await?;
            println!("new signing key {kid}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
