//! `tollgate usage import FILE.csv` (contract §1): usage history from
//! before Tollgate, or from elsewhere, into the ledger.
//!
//! Two streaming passes over the file, so memory stays constant whatever
//! its size: the first checks every line (and digests the file), the
//! second inserts in one transaction. A bad line fails the whole file with
//! its line number and nothing is imported. Each row's request id is
//! derived from the file's digest and its line number, so importing the
//! same file again adds nothing. Imported rows are marked
//! `usage_source = imported`: they count in reports and in month spend
//! (member limits), never in a balance (`Store::recorded_balance_on`).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::Entry;
use crate::domain::{clean_label, RequestId, Source, Status};
use crate::money::Money;
use crate::store::{Store, StoreError};

/// The header the file must start with.
pub const HEADER: [&str; 9] = [
    "time",
    "team_id",
    "user_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
];

/// Rows per insert batch.
const BATCH: usize = 1000;
/// Bad lines listed before the rest are only counted.
const LISTED_ERRORS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the first line must be the header {}", HEADER.join(","))]
    Header,
    #[error("{} bad line(s); nothing was imported:\n{}", .count, .lines.join("\n"))]
    BadLines { count: usize, lines: Vec<String> },
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Lines read (the header excluded).
    pub lines: u64,
    /// Rows newly stored.
    pub stored: u64,
    /// Rows a previous import of the same file already stored.
    pub already: u64,
    /// The member-spend counters (`counters::spend_key`) the rows add to.
    pub spend_keys: BTreeSet<String>,
}

/// One checked line.
struct Line {
    at_ms: i64,
    team_id: Option<String>,
    user_id: String,
    model: String,
    input: i64,
    output: i64,
    cached: i64,
    reasoning: i64,
    cost: Money,
}

/// A file read through a running SHA-256 of its bytes (the first pass
/// digests the file as it checks it: one read).
struct Digesting {
    file: std::fs::File,
    hasher: Sha256,
}

impl Read for Digesting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Digesting {
    fn hex(self) -> String {
        self.hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn open(path: &Path) -> Result<csv::Reader<Digesting>, ImportError> {
    let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(Digesting {
            file,
            hasher: Sha256::new(),
        }))
}

fn file_size(path: &Path) -> Result<u64, ImportError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| ImportError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn count(record: &csv::StringRecord, index: usize, name: &str) -> Result<i64, String> {
    let text = record.get(index).unwrap_or("");
    if text.is_empty() {
        return Ok(0);
    }
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{name} must be a whole number ≥ 0, not {text:?}"))
}

/// Checks one record's fields (not whether its user or team exist).
fn parse_line(record: &csv::StringRecord) -> Result<Line, String> {
    if record.len() != HEADER.len() {
        return Err(format!(
            "{} fields, expected {}",
            record.len(),
            HEADER.len()
        ));
    }
    let field = |i: usize| record.get(i).unwrap_or("");
    let at = OffsetDateTime::parse(field(0), &Rfc3339)
        .map_err(|_| format!("time must be RFC 3339, not {:?}", field(0)))?;
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    if at_ms < 0 || at.year() > 9999 {
        return Err(format!(
            "time must be between 1970 and 9999, not {:?}",
            field(0)
        ));
    }
    let user_id = field(2);
    if user_id.is_empty() {
        return Err("user_id is empty".into());
    }
    let model = field(3);
    if model.is_empty() {
        return Err("model is empty".into());
    }
    let cost = Money::parse_usd_non_negative(field(8))
        .map_err(|e| format!("cost_usd {:?}: {e}", field(8)))?;
    Ok(Line {
        at_ms,
        team_id: Some(field(1)).filter(|t| !t.is_empty()).map(str::to_string),
        user_id: user_id.to_string(),
        model: clean_label(model, 256),
        input: count(record, 4, "input_tokens")?,
        output: count(record, 5, "output_tokens")?,
        cached: count(record, 6, "cached_tokens")?,
        reasoning: count(record, 7, "reasoning_tokens")?,
        cost,
    })
}

/// Who pays for a line: the team's owner, or the user. Looked up once per
/// id (the number of distinct users and teams, not of lines).
struct Payers<'a> {
    store: &'a Store,
    users: HashMap<String, bool>,
    owners: HashMap<String, Option<String>>,
}

impl Payers<'_> {
    async fn account(&mut self, line: &Line) -> Result<Result<String, String>, StoreError> {
        if !self.users.contains_key(&line.user_id) {
            let exists = self.store.user(&line.user_id).await?.is_some();
            self.users.insert(line.user_id.clone(), exists);
        }
        if self.users.get(&line.user_id) != Some(&true) {
            return Ok(Err(format!("no user {:?}", line.user_id)));
        }
        let Some(team_id) = &line.team_id else {
            return Ok(Ok(line.user_id.clone()));
        };
        if !self.owners.contains_key(team_id) {
            let owner = self.store.team(team_id).await?.map(|t| t.owner_id);
            self.owners.insert(team_id.clone(), owner);
        }
        Ok(match self.owners.get(team_id) {
            Some(Some(owner)) => Ok(owner.clone()),
            _ => Err(format!("no team {team_id:?}")),
        })
    }
}

/// The staging table of a Postgres import (temporary, dropped at commit).
const STAGING: &str = "tollgate_import";

/// Where pass 2 writes: one transaction, on Postgres through `UNNEST` into
/// a staging table moved into the ledger in one statement at the end
/// (`database_url` given), else through the store's pool.
enum Sink {
    Postgres(sqlx::PgConnection),
    Any(sqlx::Transaction<'static, sqlx::Any>),
}

impl Sink {
    async fn insert(&mut self, rows: &[Entry]) -> Result<u64, StoreError> {
        match self {
            Sink::Postgres(conn) => Store::insert_usage_rows_unnest_into(conn, STAGING, rows).await,
            Sink::Any(tx) => Ok(Store::insert_usage_rows_on(tx, rows).await?.len() as u64),
        }
    }
}

/// Imports `path` (see the module's note). `postgres_url`: the same
/// database as `store` when it is Postgres, for the bulk insert path.
pub async fn import_csv(store: &Store, path: &Path) -> Result<Imported, ImportError> {
    import_csv_with(store, None, path).await
}

/// [`import_csv`], inserting through a direct Postgres connection to
/// `postgres_url` (the store's own database) when given.
pub async fn import_csv_with(
    store: &Store,
    postgres_url: Option<&str>,
    path: &Path,
) -> Result<Imported, ImportError> {
    let started = std::time::Instant::now();
    // Pass 1: the header, every line, and the file's digest.
    let size_checked = file_size(path)?;
    let mut reader = open(path)?;
    let header = reader.headers().map_err(|_| ImportError::Header)?.clone();
    if header.iter().collect::<Vec<_>>() != HEADER {
        return Err(ImportError::Header);
    }
    let mut payers = Payers {
        store,
        users: HashMap::new(),
        owners: HashMap::new(),
    };
    let mut bad = Vec::new();
    let mut bad_count = 0usize;
    let mut lines = 0u64;
    // The months the file touches: their ledger partitions are made first.
    let mut months = BTreeSet::new();
    for (index, record) in reader.records().enumerate() {
        lines += 1;
        // Line numbers as an editor shows them: the header is line 1.
        let number = index + 2;
        let problem = match record {
            Err(error) => Some(error.to_string()),
            Ok(record) => match parse_line(&record) {
                Err(problem) => Some(problem),
                Ok(line) => {
                    months.insert(crate::store::partitions::month_of(line.at_ms));
                    payers.account(&line).await?.err()
                }
            },
        };
        if let Some(problem) = problem {
            bad_count += 1;
            if bad.len() < LISTED_ERRORS {
                bad.push(format!("line {number}: {problem}"));
            }
        }
    }
    if bad_count > 0 {
        if bad_count > bad.len() {
            bad.push(format!("… and {} more", bad_count - bad.len()));
        }
        return Err(ImportError::BadLines {
            count: bad_count,
            lines: bad,
        });
    }

    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "Import: every line checked."
    );
    // The whole file was read (records end at its end): its digest.
    let digest = reader.into_inner().hex();
    crate::store::partitions::ensure_months(store, &months).await?;
    // Pass 2: insert, in one transaction.
    let mut reader = open(path)?;
    let mut sink = match postgres_url {
        Some(url) => {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .map_err(StoreError::from)?;
            for statement in [
                "BEGIN".to_string(),
                format!(
                    "CREATE TEMP TABLE {STAGING} (LIKE usage_rows INCLUDING DEFAULTS) ON COMMIT DROP"
                ),
            ] {
                sqlx::query(&statement)
                    .execute(&mut conn)
                    .await
                    .map_err(StoreError::from)?;
            }
            Sink::Postgres(conn)
        }
        None => Sink::Any(store.pool().begin().await.map_err(StoreError::from)?),
    };
    let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
    let mut stored = 0u64;
    let mut spend_keys = BTreeSet::new();
    let mut second_pass_lines = 0u64;
    for (index, record) in reader.records().enumerate() {
        second_pass_lines += 1;
        let record = record.map_err(|e| ImportError::BadLines {
            count: 1,
            lines: vec![format!(
                "line {}: {e} (the file changed during the import)",
                index + 2
            )],
        })?;
        let line = parse_line(&record).map_err(|problem| ImportError::BadLines {
            count: 1,
            lines: vec![format!("line {}: {problem}", index + 2)],
        })?;
        let account = payers
            .account(&line)
            .await?
            .map_err(|problem| ImportError::BadLines {
                count: 1,
                lines: vec![format!("line {}: {problem}", index + 2)],
            })?;
        let id = crate::keys::hash_secret(&format!("{digest}:{}", index + 2));
        let mut entry = Entry::draft(
            RequestId::from(format!("imp_{}", &id[..32])),
            &line.user_id,
            "import",
            "import",
            line.at_ms,
        );
        if let Some(team_id) = &line.team_id {
            let period = crate::clock::period_of(line.at_ms);
            spend_keys.insert(crate::counters::spend_key(
                &account,
                team_id,
                &line.user_id,
                &period.key,
            ));
        }
        entry.account_id = account;
        entry.team_id = line.team_id;
        entry.model = line.model;
        entry.provider = "import".into();
        entry.input_tokens = line.input;
        entry.output_tokens = line.output;
        entry.cached_tokens = line.cached;
        entry.reasoning_tokens = line.reasoning;
        entry.cost_nano = line.cost.nano();
        entry.usage_source = Source::Imported;
        entry.status = Status::Ok;
        entry.http_status = 200;
        batch.push(entry);
        if batch.len() == BATCH {
            stored += sink.insert(&batch).await?;
            batch.clear();
        }
    }
    stored += sink.insert(&batch).await?;
    if second_pass_lines != lines || file_size(path)? != size_checked {
        // Dropped without a commit: nothing of the file is stored.
        return Err(ImportError::BadLines {
            count: 1,
            lines: vec![
                "the file changed during the import; run it again on a file that does not change"
                    .into(),
            ],
        });
    }
    match sink {
        Sink::Postgres(mut conn) => {
            // One statement moves the staged rows in: the rollup trigger
            // aggregates them all at once (one upsert per rollup row, not
            // one per chunk), and locks rollup rows only for this moment.
            // The trigger aggregates the whole file: room to hash its
            // groups in memory rather than sort them on disk (this
            // transaction only). Rows in time order fill each month's
            // partition and its time-ordered indexes in turn.
            sqlx::query("SET LOCAL work_mem = '256MB'")
                .execute(&mut conn)
                .await
                .map_err(StoreError::from)?;
            stored = sqlx::query(&format!(
                "INSERT INTO usage_rows SELECT * FROM {STAGING} ORDER BY started_at ON CONFLICT DO NOTHING"
            ))
            .execute(&mut conn)
            .await
            .map_err(StoreError::from)?
            .rows_affected();
            sqlx::query("COMMIT")
                .execute(&mut conn)
                .await
                .map_err(StoreError::from)?;
        }
        Sink::Any(tx) => tx.commit().await.map_err(StoreError::from)?,
    }
    Ok(Imported {
        lines,
        stored,
        already: lines.saturating_sub(stored),
        spend_keys,
    })
}
