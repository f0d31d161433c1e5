//! The command line: `serve`, `migrate`, `users add`, `dead-letters`. Startup errors are
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
    tollgate dead-letters list  [--config PATH]
                                        Ledger rows the database rejected, set
                                        aside with the reason (table and file)
    tollgate dead-letters retry [--config PATH]
                                        Store them again, their names cleaned;
                                        the ones stored leave the dead letters
    tollgate usage import [--config PATH] FILE.csv
                                        Import usage history (header: time,team_id,
                                        user_id,model,input_tokens,output_tokens,
                                        cached_tokens,reasoning_tokens,cost_usd);
                                        counts in reports and month spend, never
                                        in a balance; a re-import adds nothing
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
    if config.server.per_core && command.as_slice() == ["serve"] {
        // The cores serve; this runtime accepts and runs background work.
        builder.worker_threads(1);
    } else if config.server.worker_threads > 0 {
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
            ["dead-letters", "list"] => dead_letters(&config, false).await,
            ["dead-letters", "retry"] => dead_letters(&config, true).await,
            ["usage", "import", file] => import_usage(&config, file).await,
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
    // Colours only on a terminal: `docker logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// `tollgate usage import FILE.csv` (see `ledger::import`). With Redis
/// counters, the month-spend counters the rows add to are dropped
/// afterwards so that running gateways seed them again from the ledger
/// (in-process counters: restart the gateway to count them).
async fn import_usage(config: &Config, file: &str) -> Result<(), String> {
    let store = app::open_store(config).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let postgres = config
        .uses_postgres()
        .then_some(config.storage.database_url.as_str());
    let imported =
        crate::ledger::import::import_csv_with(&store, postgres, std::path::Path::new(file))
            .await
            .map_err(|e| e.to_string());
    store.close().await;
    let imported = imported?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "Imported {} of {} rows from {file} ({} were already there) in {seconds:.2} s ({:.0} rows/s).",
        imported.stored,
        imported.lines,
        imported.already,
        imported.lines as f64 / seconds.max(1e-9)
    );
    if !config.storage.redis_url.is_empty() && !imported.spend_keys.is_empty() {
        let counters = crate::counters::Counters::redis(
            &config.storage.redis_url,
            &config.storage.redis_prefix,
            None,
        )
        .await
        .map_err(|e| format!("redis: {e}"))?;
        for key in &imported.spend_keys {
            counters
                .forget(&crate::counters::CounterKey::Spend(key.clone()))
                .await
                .map_err(|e| format!("redis: {e}"))?;
        }
        println!(
            "{} month-spend counters will be seeded again from the ledger.",
            imported.spend_keys.len()
        );
    } else if config.storage.redis_url.is_empty() && !imported.spend_keys.is_empty() {
        println!("In-process counters: restart a running gateway to count the imported spend in member limits.");
    }
    Ok(())
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
            tags: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    println!("user:    {} ({email})", user.id);
    println!("balance: ${}", amount.unwrap_or(Money::ZERO));
    println!("key:     {key}");
    Ok(())
}

/// Lists (or retries) the rows the database rejected: those in the
/// dead-letter table and those in the spool directory's file.
async fn dead_letters(config: &Config, retry: bool) -> Result<(), String> {
    let store = app::open_store(config).await.map_err(|e| e.to_string())?;
    let mut letters = store.dead_letters().await.map_err(|e| e.to_string())?;
    let file =
        std::path::Path::new(&config.ledger.spool_dir).join(crate::ledger::spool::DEAD_LETTERS);
    let from_file = read_dead_letter_file(&file)?;
    let in_table = letters.len();
    letters.extend(from_file);
    if letters.is_empty() {
        println!("No rows set aside.");
        store.close().await;
        return Ok(());
    }
    // A retried row goes through the ledger's own write, so a Redis
    // counter rebuilt while the row was set aside gets its cost.
    let counters = if retry && !config.storage.redis_url.is_empty() {
        crate::counters::Counters::redis(
            &config.storage.redis_url,
            &config.storage.redis_prefix,
            None,
        )
        .await
        .map_err(|e| format!("redis: {e}"))?
    } else {
        crate::counters::Counters::memory()
    };
    let mut kept_in_file = Vec::new();
    let (mut stored, mut failed) = (0, 0);
    for (i, letter) in letters.iter().enumerate() {
        println!(
            "{}  {}  model {:?}  cost ${}  reason: {}",
            crate::clock::rfc3339(letter.set_aside_at),
            crate::domain::clean_label(&letter.request_id, 64),
            crate::domain::clean_label(&letter.row.model, 64),
            Money::from_nano(letter.row.cost_nano),
            letter.reason
        );
        if !retry {
            continue;
        }
        let row = cleaned(&letter.row);
        match crate::ledger::write_rows(&store, &counters, std::slice::from_ref(&row)).await {
            Ok(_) => {
                stored += 1;
                if i < in_table {
                    store
                        .delete_dead_letter(&letter.request_id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Err(error) => {
                failed += 1;
                println!("    still rejected: {error}");
                if i >= in_table {
                    kept_in_file.push(letter.clone());
                }
            }
        }
    }
    if retry {
        if file.exists() {
            let mut text = String::new();
            for letter in &kept_in_file {
                let line = serde_json::json!({"row": letter.row, "reason": letter.reason, "set_aside_at": letter.set_aside_at});
                text.push_str(&line.to_string());
                text.push('\n');
            }
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        println!(
            "Retried {}: {stored} stored, {failed} still rejected.",
            letters.len()
        );
    }
    store.close().await;
    Ok(())
}

/// A rejected row with every text field cleaned (control bytes out, 200
/// characters at most).
fn cleaned(row: &crate::ledger::Entry) -> crate::ledger::Entry {
    use crate::domain::clean_label;
    let mut row = row.clone();
    row.model = clean_label(&row.model, 200);
    row.provider = clean_label(&row.provider, 200);
    row.endpoint = clean_label(&row.endpoint, 200);
    row.user_id = clean_label(&row.user_id, 200);
    row.key_id = clean_label(&row.key_id, 200);
    row.account_id = clean_label(&row.account_id, 200);
    row.team_id = row.team_id.as_deref().map(|t| clean_label(t, 200));
    row.error_code = row.error_code.as_deref().map(|c| clean_label(c, 200));
    row
}

fn read_dead_letter_file(path: &std::path::Path) -> Result<Vec<crate::ledger::DeadLetter>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct Line {
        row: crate::ledger::Entry,
        reason: String,
        set_aside_at: i64,
    }
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<Line>(line).ok())
        .map(|line| crate::ledger::DeadLetter {
            request_id: line.row.request_id.to_string(),
            row: line.row,
            reason: line.reason,
            set_aside_at: line.set_aside_at,
        })
        .collect())
}
