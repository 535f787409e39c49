use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fhir_scheduler::config::{Config, FileConfig, ServeArgs};
use tracing_subscriber::EnvFilter;

/// fhir-scheduler: a FHIR R4 server for patient–doctor scheduling.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (file < environment < flags)
    #[arg(long, global = true, env = "FHIR_SCHEDULER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
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
            let (router, _) = fhir_scheduler::build(&cfg).await?;
            let listener = tokio::net::TcpListener::bind(&cfg.addr)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.addr))?;
            tracing::info!(
                addr = %listener.local_addr()?,
                backend = if cfg.is_sqlite() { "sqlite" } else { "postgres" },
                "fhir-scheduler serving FHIR R4 at /fhir"
            );
            fhir_scheduler::serve(listener, router, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
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
            let summary = fhir_scheduler::seed::load_demo(&fhir).await?;
            println!("{summary}");
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
