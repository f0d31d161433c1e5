//! Cost allocation tags end to end (contract §6): a key's default tags, the
//! `x-tollgate-tags` header winning per key, malformed headers refused, the
//! tags stored on the row, and `group_by=tag:<key>` in JSON and CSV with
//! groups that sum to the total.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::client;
use crate::helpers::fixture;
use crate::helpers::gateway::{Backend, TestGateway};
use crate::helpers::teams::{call, invite_and_accept, user, User};
use crate::helpers::upstream::{MockUpstream, Reply};

async fn chat(gw: &TestGateway, who: &User, team: &str, tags: Option<&str>) -> client::Reply {
    let billing = format!("team:{team}");
    let mut headers: Vec<(&str, &str)> = vec![("x-tollgate-billing", &billing)];
    if let Some(tags) = tags {
        headers.push(("x-tollgate-tags", tags));
    }
    client::send(
        "POST",
        &gw.url("/v1/chat/completions"),
        &who.key,
        Some(json!({"model": "gpt-5.1", "max_tokens": 400,
            "messages": [{"role": "user", "content": "total?"}]})),
        &headers,
    )
    .await
}

async fn tags_from_header_and_key_defaults(backend: Backend) {
    let upstream = MockUpstream::start(|_| {
        Reply::json(200, fixture("openai_chat_nonstream_cached_reasoning.json"))
    })
    .await;
    let gw = TestGateway::start(backend, &upstream.base_url()).await;
    let owner = user(&gw, "owner@tags.test", "10").await;
    let member = user(&gw, "member@tags.test", "0").await;
    let team = call(
        &gw,
        "POST",
        "/api/teams",
        &owner.key,
        Some(json!({"name": "Tags"})),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    invite_and_accept(
        &gw,
        &team,
        &owner.key,
        &member,
        "member@tags.test",
        "member",
    )
    .await;
    // A second key of the member's with default tags.
    let made = call(
        &gw,
        "POST",
        "/api/me/keys",
        &member.key,
        Some(json!({"name": "ci", "tags": {"project": "beta", "env": "ci"}})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(made.json()["tags"], json!({"env": "ci", "project": "beta"}));
    let tagged = User {
        id: member.id.clone(),
        key: made.json()["key"].as_str().unwrap().to_string(),
    };
    // Bad tags on a key are refused, naming the field.
    let bad = call(
        &gw,
        "PATCH",
        &format!("/api/me/keys/{}", made.json()["id"].as_str().unwrap()),
        &member.key,
        Some(json!({"tags": {"Project": "x"}})),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "tags");

    let mut ids = Vec::new();
    // Header only.
    for _ in 0..2 {
        let r = chat(&gw, &member, &team, Some("project=alpha, team.unit=ml")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push((
            r.request_id(),
            json!({"project": "alpha", "team.unit": "ml"}),
        ));
    }
    // Key defaults only, then the header winning for its key.
    let r = chat(&gw, &tagged, &team, None).await;
    ids.push((r.request_id(), json!({"env": "ci", "project": "beta"})));
    let r = chat(&gw, &tagged, &team, Some("project=gamma")).await;
    ids.push((r.request_id(), json!({"env": "ci", "project": "gamma"})));
    // No tags at all.
    let r = chat(&gw, &member, &team, None).await;
    ids.push((r.request_id(), Value::Null));
    for bad in [
        "Project=x",
        "project",
        "a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9,j=10,k=11",
    ] {
        let r = chat(&gw, &member, &team, Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "x-tollgate-tags", "{bad}");
    }
    for (id, expected) in &ids {
        let row = gw.row(id).await;
        let stored: Value = row
            .tags
            .as_deref()
            .map(|t| serde_json::from_str(t).unwrap())
            .unwrap_or(Value::Null);
        assert_eq!(&stored, expected, "{id}");
    }
    gw.ledger_idle().await;

    let today = time::OffsetDateTime::now_utc().date();
    let path = format!("/api/teams/{team}/usage?from={today}&to={today}&group_by=tag:project");
    let report = call(&gw, "GET", &path, &owner.key, None).await;
    assert_eq!(report.status, 200, "{}", report.text());
    let report = report.json();
    assert_eq!(report["group_by"], "tag:project");
    let groups = report["groups"].as_array().unwrap();
    let by_key: Vec<(&str, &str, i64)> = groups
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap(),
                g["label"].as_str().unwrap(),
                g["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_key,
        vec![
            ("", "(none)", 1),
            ("alpha", "alpha", 2),
            ("beta", "beta", 1),
            ("gamma", "gamma", 1)
        ]
    );
    let sum: i64 = groups.iter().map(|g| g["requests"].as_i64().unwrap()).sum();
    assert_eq!(sum, report["total"]["requests"].as_i64().unwrap());
    let csv = call(&gw, "GET", &format!("{path}&format=csv"), &owner.key, None).await;
    assert_eq!(csv.status, 200);
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[1].starts_with(",(none),1,"), "{text}");
    assert!(lines[2].starts_with("alpha,alpha,2,"), "{text}");
    let bad = call(
        &gw,
        "GET",
        &format!("/api/teams/{team}/usage?group_by=tag:Bad"),
        &owner.key,
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "group_by");
    gw.finish().await;
}

both_backends!(tags_from_header_and_key_defaults);
