//! Teams: usage reports (by member, model, day, split) match the ledger,
//! in JSON and CSV.

use serde_json::{json, Value};
use tollgate::clock::Clock;
use tollgate::money::Money;

use crate::both_backends;
use crate::helpers::fixture as sample;
use crate::helpers::gateway::{standard_models, Backend, TestGateway, TestStorage};
use crate::helpers::teams::{call, fixture, team_bill, ANSWER_NANO, NOV_28};
use crate::helpers::upstream::{MockUpstream, Reply as Upstream};

async fn reports_match_the_ledger_and_csv(backend: Backend) {
    let upstream = MockUpstream::start(|seen| {
        if seen.body["model"] == "gpt-5.1" {
            Upstream::json(200, sample("openai_chat_nonstream_cached_reasoning.json"))
        } else {
            Upstream::json(200, r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#)
        }
    })
    .await;
    let storage = TestStorage::new(backend).await;
    let clock = Clock::manual(NOV_28);
    let gw = TestGateway::start_with_clock(
        storage,
        &standard_models(&upstream.base_url()),
        "",
        &[],
        clock.clone(),
    )
    .await;
    let fx = fixture(&gw, "rep").await;
    let team = fx.team_id.clone();
    for (who, model, day) in [
        (&fx.member, "gpt-5.1", 0),
        (&fx.member, "gpt-4o-mini", 0),
        (&fx.admin, "gpt-4o-mini", 1),
        (&fx.owner, "gpt-5.1", 1),
        (&fx.member, "gpt-5.1", 2),
    ] {
        clock.set_ms(NOV_28 - day * 86_400_000);
        assert_eq!(team_bill(&gw, &who.key, &team, model).await.status, 200);
    }
    // A refusal is not counted.
    clock.set_ms(NOV_28);
    assert_eq!(
        team_bill(&gw, &fx.member.key, &team, "no-such-model")
            .await
            .status,
        404
    );
    // The member leaves; history keeps them.
    assert_eq!(
        call(
            &gw,
            "DELETE",
            &format!("/api/teams/{team}/members/{}", fx.member.id),
            &fx.member.key,
            None
        )
        .await
        .status,
        200
    );
    gw.ledger_idle().await;

    for group_by in ["member", "model", "day"] {
        let path =
            format!("/api/teams/{team}/usage?from=2026-11-01&to=2026-11-30&group_by={group_by}");
        let report = call(&gw, "GET", &path, &fx.admin.key, None).await;
        assert_eq!(report.status, 200, "{}", report.text());
        let report = report.json();
        assert_eq!(report["total"]["requests"], 5, "{report}");
        let mini_nano = Money::parse_usd("0.00000285").unwrap().nano(); // 7×0.15 + 3×0.60 per Mtok
        let expected = Money::from_nano(3 * ANSWER_NANO + 2 * mini_nano).to_string();
        assert_eq!(report["total"]["cost_usd"], expected.as_str());
        let groups = report["groups"].as_array().unwrap();
        let sum: i64 = groups
            .iter()
            .map(|g| {
                Money::parse_usd(g["cost_usd"].as_str().unwrap())
                    .unwrap()
                    .nano()
            })
            .sum();
        assert_eq!(Money::from_nano(sum).to_string(), expected);
        if group_by == "member" {
            let member = groups
                .iter()
                .find(|g| g["key"] == fx.member.id.as_str())
                .expect("a removed member stays in history");
            assert_eq!(member["label"], "member-rep@example.com");
            assert_eq!(member["requests"], 3);
        }
        if group_by == "day" {
            let keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
            assert_eq!(keys, vec!["2026-11-26", "2026-11-27", "2026-11-28"]);
            // The dashboard's stacked chart: each day split by member or
            // model, the parts summing to the day.
            for split in ["member", "model"] {
                let split_report = call(
                    &gw,
                    "GET",
                    &format!("{path}&split_by={split}"),
                    &fx.admin.key,
                    None,
                )
                .await;
                assert_eq!(split_report.status, 200, "{}", split_report.text());
                let split_report = split_report.json();
                for (day, plain) in split_report["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(groups)
                {
                    let parts = day["split"].as_array().unwrap();
                    assert!(!parts.is_empty(), "{day}");
                    let nano = |v: &Value| {
                        Money::parse_usd(v["cost_usd"].as_str().unwrap())
                            .unwrap()
                            .nano()
                    };
                    let sum: i64 = parts.iter().map(nano).sum();
                    assert_eq!(sum, nano(plain), "{split} {day}");
                    let requests: i64 = parts.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
                    assert_eq!(requests, plain["requests"].as_i64().unwrap());
                }
                let day_28 = &split_report["groups"][2]["split"];
                if split == "model" {
                    let keys: Vec<&str> = day_28
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p["label"].as_str().unwrap())
                        .collect();
                    assert_eq!(keys, vec!["gpt-4o-mini", "gpt-5.1"]);
                } else {
                    assert_eq!(day_28[0]["label"], "member-rep@example.com");
                }
            }
            for bad in [
                format!("{path}&split_by=team"),
                format!("{path}&split_by=member&format=csv"),
                path.replace("group_by=day", "group_by=member&split_by=model"),
            ] {
                let refused = call(&gw, "GET", &bad, &fx.admin.key, None).await;
                assert_eq!(
                    (refused.status, refused.json()["error"]["param"].as_str()),
                    (400, Some("split_by")),
                    "{bad}"
                );
            }
        }

        // CSV: parsed by Python's csv module, its totals equal the JSON's.
        let csv = call(
            &gw,
            "GET",
            &format!("{path}&format=csv"),
            &fx.owner.key,
            None,
        )
        .await;
        assert_eq!(csv.status, 200, "{}", csv.text());
        assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
        let script = r#"
import csv, io, sys, json
from decimal import Decimal
rows = list(csv.DictReader(io.StringIO(sys.stdin.read(), newline="")))
print(json.dumps({"requests": sum(int(r["requests"]) for r in rows),
                  "cost_usd": str(sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))),
                  "header": list(rows[0].keys()) if rows else []}))
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&csv.body).unwrap();
        let output = child.wait_with_output().unwrap();
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(parsed["requests"], 5);
        assert_eq!(
            Money::parse_usd(parsed["cost_usd"].as_str().unwrap())
                .unwrap()
                .to_string(),
            expected
        );
        assert_eq!(
            parsed["header"],
            json!([
                "key",
                "label",
                "requests",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "reasoning_tokens",
                "cost_usd",
                "cache_write_tokens",
                "cache_write_1h_tokens",
                "audio_input_tokens",
                "audio_output_tokens",
                "web_search_calls",
                "web_fetch_calls",
                "code_execution_calls",
                "priority_tier_requests",
                "flex_tier_requests",
                "long_context_requests"
            ])
        );
    }
    // A removed member no longer sees the team.
    assert_eq!(
        call(
            &gw,
            "GET",
            &format!("/api/teams/{team}/usage"),
            &fx.member.key,
            None
        )
        .await
        .status,
        404
    );
    gw.finish().await;
}
both_backends!(reports_match_the_ledger_and_csv);

/// `GET /api/me/usage`: a person's own usage wherever it was billed —
/// personal and each team — with the live balance; the parts sum to the
/// total and the total to the ledger.
async fn my_usage_spans_personal_and_team_billing(backend: Backend) {
    let upstream = crate::helpers::teams::json_upstream().await;
    let gw = TestGateway::start_with(backend, &standard_models(&upstream.base_url()), "").await;
    let fx = fixture(&gw, "mine").await;
    for _ in 0..2 {
        let reply = team_bill(&gw, &fx.owner.key, &fx.team_id, "gpt-5.1").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let personal = call(
        &gw,
        "POST",
        "/v1/chat/completions",
        &fx.owner.key,
        Some(crate::helpers::teams::chat("gpt-5.1", 400)),
    )
    .await;
    assert_eq!(personal.status, 200, "{}", personal.text());
    gw.ledger_idle().await;
    let report = call(&gw, "GET", "/api/me/usage", &fx.owner.key, None).await;
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    assert_eq!(report["total"]["requests"], 3);
    assert_eq!(
        report["total"]["cost_usd"],
        Money::from_nano(3 * ANSWER_NANO).to_string()
    );
    let payers = report["by_payer"].as_array().unwrap();
    let team = payers
        .iter()
        .find(|p| p["team_id"] == fx.team_id.as_str())
        .unwrap();
    assert_eq!(team["label"], "Team mine");
    assert_eq!(team["requests"], 2);
    let mine = payers.iter().find(|p| p["team_id"].is_null()).unwrap();
    assert_eq!(mine["label"], "personal");
    assert_eq!(mine["cost_usd"], Money::from_nano(ANSWER_NANO).to_string());
    assert_eq!(report["by_model"][0]["key"], "gpt-5.1");
    assert_eq!(report["by_day"].as_array().unwrap().len(), 1);
    let me = call(&gw, "GET", "/api/me", &fx.owner.key, None)
        .await
        .json();
    assert_eq!(report["balance_usd"], me["balance_usd"]);
    // The operator is not a user.
    let operator = call(
        &gw,
        "GET",
        "/api/me/usage",
        crate::helpers::gateway::ADMIN,
        None,
    )
    .await;
    assert_eq!(operator.status, 403);
    gw.finish().await;
}
both_backends!(my_usage_spans_personal_and_team_billing);
