//! `tollgate usage import` (contract §1): imported history counts in
//! reports and month spend, never in a balance; a re-import adds nothing;
//! a bad line fails the whole file with its line number.

use std::io::Write;

use tollgate::ledger::import::{import_csv_with, ImportError, Imported};
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::gateway::{standard_models, Backend, TestGateway};
use crate::helpers::teams::{call, fixture};

fn file(text: &str) -> tempfile_path::TempFile {
    tempfile_path::TempFile::new(text)
}

/// A file removed on drop (no extra crate).
mod tempfile_path {
    use super::Write;

    pub struct TempFile(pub std::path::PathBuf);

    impl TempFile {
        pub fn new(text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "tollgate-import-{}.csv",
                tollgate::keys::random_base62(10)
            ));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Imports as the CLI does: on Postgres through its bulk (`UNNEST`) path.
async fn import_csv(gw: &TestGateway, path: &std::path::Path) -> Result<Imported, ImportError> {
    let url = &gw.storage.database_url;
    let postgres = url.starts_with("postgres").then_some(url.as_str());
    import_csv_with(gw.store(), postgres, path).await
}

const HEADER: &str =
    "time,team_id,user_id,model,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd\n";

async fn imported_history_counts_in_reports_not_balances(backend: Backend) {
    let gw = TestGateway::start_with(backend, &standard_models("http://127.0.0.1:9/v1"), "").await;
    let fx = fixture(&gw, "import").await;
    let team = &fx.team_id;
    let today = time::OffsetDateTime::now_utc().date();
    let day = format!("{today}T10:00:00Z");
    let before_owner = call(&gw, "GET", "/api/me", &fx.owner.key, None)
        .await
        .json()["balance_usd"]
        .clone();
    let text = format!(
        "{HEADER}{day},{team},{member},gpt-5.1,1000,200,100,50,1.25\n\
         {day},{team},{member},\"model, with comma\",10,20,0,0,0.5\n\
         {day},,{owner},gpt-5.1,1,2,0,0,2\n",
        member = fx.member.id,
        owner = fx.owner.id,
    );
    let csv = file(&text);
    let imported = import_csv(&gw, &csv.0).await.unwrap();
    assert_eq!(
        (imported.lines, imported.stored, imported.already),
        (3, 3, 0)
    );
    assert_eq!(imported.spend_keys.len(), 1);

    // In the team's report: $1.75 over two rows.
    let report = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/usage?from={today}&to={today}&group_by=model"),
        &fx.owner.key,
        None,
    )
    .await
    .json();
    assert_eq!(report["total"]["cost_usd"], "1.75");
    assert_eq!(report["total"]["requests"], 2);
    assert!(report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["key"] == "model, with comma"));
    // In the member's month spend (the store's sum that seeds the counter).
    let period = tollgate::clock::period_of(tollgate::clock::now_ms());
    let spent = gw
        .store()
        .member_spend(team, &fx.member.id, period.start_ms, period.end_ms)
        .await
        .unwrap();
    assert_eq!(spent, Money::parse_usd("1.75").unwrap());
    // Never in a balance: the owner's is what it was ($2 personal and
    // $1.75 billed to their team notwithstanding).
    let recorded = gw.store().recorded_balance(&fx.owner.id).await.unwrap();
    assert_eq!(recorded.to_string(), before_owner.as_str().unwrap());
    let after_owner = call(&gw, "GET", "/api/me", &fx.owner.key, None)
        .await
        .json()["balance_usd"]
        .clone();
    assert_eq!(after_owner, before_owner);
    // In the owner's own usage, as personal.
    let mine = call(&gw, "GET", "/api/me/usage", &fx.owner.key, None)
        .await
        .json();
    assert_eq!(mine["total"]["cost_usd"], "2.0");

    // The same file again adds nothing.
    let again = import_csv(&gw, &csv.0).await.unwrap();
    assert_eq!((again.stored, again.already), (0, 3));
    gw.finish().await;
}
both_backends!(imported_history_counts_in_reports_not_balances);

async fn a_bad_line_fails_the_whole_file(backend: Backend) {
    let gw = TestGateway::start_with(backend, &standard_models("http://127.0.0.1:9/v1"), "").await;
    let fx = fixture(&gw, "badimport").await;
    let day = "2026-11-02T10:00:00Z";
    let text = format!(
        "{HEADER}{day},,{u},m,1,1,0,0,1\n\
         yesterday,,{u},m,1,1,0,0,1\n\
         {day},,{u},m,1,1,0,0,-1\n\
         {day},,usr_nobody,m,1,1,0,0,1\n\
         {day},tm_nope,{u},m,1,1,0,0,1\n\
         {day},,{u},m,-5,1,0,0,1\n\
         {day},,{u},m,1,1,0,0\n",
        u = fx.owner.id
    );
    let csv = file(&text);
    let error = import_csv(&gw, &csv.0).await.unwrap_err();
    let ImportError::BadLines { count, lines } = &error else {
        panic!("{error}");
    };
    assert_eq!(*count, 6, "{error}");
    for (line, what) in [
        (3, "RFC 3339"),
        (4, "cost_usd"),
        (5, "no user"),
        (6, "no team"),
        (7, "input_tokens"),
        (8, "fields"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("line {line}:")) && l.contains(what)),
            "line {line} ({what}) not reported: {error}"
        );
    }
    let rows = gw
        .store()
        .usage_rows_of_account(&fx.owner.id)
        .await
        .unwrap();
    assert!(
        rows.iter().all(|r| r.usage_source.as_str() != "imported"),
        "half imported"
    );
    // A wrong header is refused before anything.
    let wrong = file("when,who,what\n");
    assert!(matches!(
        import_csv(&gw, &wrong.0).await,
        Err(ImportError::Header)
    ));
    gw.finish().await;
}
both_backends!(a_bad_line_fails_the_whole_file);
