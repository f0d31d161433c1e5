//! The command line: `serve`, `migrate`, `users add`. Startup errors are
//! printed as one line each and exit non-zero; nothing here runs per request.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::app::{self, App};
use crate::clock::now_ms;
use crate::config::Config;
use crate::keys;
use crate::money::Money;
use crate::store::{Credit, KeyRow, User};

const HELP: &str = "\
tollgate: an inline metering gateway for LLM APIs

USAGE:
    tollgate serve   [--config PATH]    Run the gateway (migrates on start)
    tollgate migrate [--config PATH]    Apply database migrations and exit
    tollgate users add EMAIL [--name NAME] [--credits USD] [--config PATH]
                                        Create a user with a prepaid balance and
                                        print a new API key for it (shown once)
    tollgate --help | --version

With no --config (and no TOLLGATE_CONFIG), the embedded default applies:
SQLite at ./tollgate.db, in-process counters, the offline `mock` provider,
listening on 127.0.0.1:4000. Any key can be overridden with
TOLLGATE_<SECTION>__<KEY>, e.g. TOLLGATE_SERVER__LISTEN=0.0.0.0:4000.
The operator token is read from TOLLGATE_ADMIN_TOKEN; if unset on first
start, one is generated, stored (hashed) and printed once.
";

struct Args {
    positional: Vec<String>,
    config: Option<PathBuf>,
    name: Option<String>,
    credits: Option<String>,
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut parsed = Args {
        positional: Vec::new(),
        config: std::env::var_os("TOLLGATE_CONFIG").map(PathBuf::from),
        name: None,
        credits: None,
    };
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let mut value = |flag: &str| iter.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--config" | "-c" => parsed.config = Some(PathBuf::from(value("--config")?)),
            "--name" => parsed.name = Some(value("--name")?),
            "--credits" => parsed.credits = Some(value("--credits")?),
            flag if flag.starts_with("--config=") => {
                parsed.config = Some(PathBuf::from(&flag["--config=".len()..]))
            }
            flag if flag.starts_with('-')
                && flag != "-h"
                && flag != "--help"
                && flag != "--version" =>
            {
                return Err(format!("unknown option {flag}"))
            }
            _ => parsed.positional.push(arg),
        }
    }
    Ok(parsed)
}

pub fn main(args: Vec<String>) -> ExitCode {
    let args = match parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("tollgate: {error}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let command: Vec<&str> = args.positional.iter().map(String::as_str).collect();
    match command.as_slice() {
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        ["--version"] | ["version"] => {
            println!("tollgate {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("tollgate: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tollgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command.as_slice() {
            ["serve"] => serve(config).await,
            ["migrate"] => app::open_store(&config)
                .await
                .map(|_| {
                    println!("Migrations applied.");
                })
                .map_err(|e| e.to_string()),
            ["users", "add", email] => add_user(&config, email, args.name, args.credits).await,
            _ => Err(format!(
                "unknown command '{}'; see tollgate --help",
                command.join(" ")
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tollgate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(config: Config) -> Result<(), String> {
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    if let Some(token) = &app.generated_admin_token {
        eprintln!(
            "\nOperator token (shown once; set TOLLGATE_ADMIN_TOKEN to choose your own):\n\n    {token}\n"
        );
    }
    let state = app.state();
    tracing::info!(
        listen = %app.local_addr(),
        database = if state.store.is_postgres() { "postgres" } else { "sqlite" },
        counters = state.counters.backend_name(),
        models = state.config.models.len(),
        "Tollgate is listening."
    );
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    // Detached, not tracked: it only cancels `shutdown`, and ends with the
    // process.
    crate::tasks::detached(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: draining requests and the ledger.");
        signal.cancel();
    });
    app.run(shutdown).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Creates a user (new only: its counter cannot exist yet, so writing the
/// credit to the store is enough even while a gateway runs), credits it and
/// prints a key.
async fn add_user(
    config: &Config,
    email: &str,
    name: Option<String>,
    credits: Option<String>,
) -> Result<(), String> {
    let amount = match credits {
        Some(text) => {
            let amount =
                Money::parse_usd_non_negative(&text).map_err(|e| format!("--credits {e}"))?;
            Some(amount)
        }
        None => None,
    };
    let store = app::open_store(config).await.map_err(|e| e.to_string())?;
    let email = email.trim().to_ascii_lowercase();
    if !email.contains('@') {
        return Err(format!("'{email}' is not an email address"));
    }
    let user = User {
        id: keys::new_id("usr"),
        email: email.clone(),
        name,
        created_at: now_ms(),
    };
    store
        .create_user(&user)
        .await
        .map_err(|e| format!("cannot create {email}: {e}"))?;
    if let Some(amount) = amount.filter(|a| a.nano() > 0) {
        store
            .add_credit(&Credit {
                id: &keys::new_id("crd"),
                user_id: &user.id,
                amount,
                note: Some("initial credit"),
                created_by: "cli",
                at: now_ms(),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    let (key, prefix, key_hash) = keys::new_api_key();
    store
        .insert_key(&KeyRow {
            id: keys::new_id("key"),
            user_id: user.id.clone(),
            name: Some("cli".into()),
            prefix,
            key_hash,
            billing: crate::domain::BillingChoice::Personal,
            created_at: now_ms(),
            revoked_at: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    println!("user:    {} ({email})", user.id);
    println!("balance: ${}", amount.unwrap_or(Money::ZERO));
    println!("key:     {key}");
    Ok(())
}
