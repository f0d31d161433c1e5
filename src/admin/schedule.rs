//! Scheduled reports (contract §6): `PUT /api/teams/{id}/report-schedule
//! {cadence, group_by, webhook_id}` (admin; a `null` body or `DELETE`
//! stops it), `GET` to read it, and `POST …/report-schedule/send` for the
//! period so far at once. After each UTC week (from Monday) or month, the
//! period's usage report (the JSON of `GET …/usage`) goes out as a
//! `report.scheduled` event to the schedule's webhook. Each process looks
//! for ended periods every few seconds, records the report (keyed by its
//! period: recorded once however many processes try) and then moves the
//! schedule on with a conditional update, so a restart or several
//! processes neither skip nor repeat one; periods missed while every
//! process was down go out as one report.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::teams::{access, Role};
use super::{audit, json as body, respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::state::AppState;
use crate::store::events::{NewEvent, ReportSchedule};

/// How often ended periods are looked for.
const TICK: Duration = Duration::from_secs(5);

/// The period a cadence gives for `ms`: `(start, end)`.
fn period(cadence: &str, ms: i64) -> (i64, i64) {
    if cadence == "weekly" {
        crate::clock::week_of(ms)
    } else {
        let month = crate::clock::period_of(ms);
        (month.start_ms, month.end_ms)
    }
}

fn schedule_json(schedule: &ReportSchedule) -> Value {
    json!({
        "cadence": schedule.cadence,
        "group_by": schedule.group_by,
        "webhook_id": schedule.webhook_id,
        "next_report_at": rfc3339(schedule.next_at),
    })
}

/// `GET /api/teams/{id}/report-schedule` (admin): the schedule, or null.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let schedule = state.store.report_schedule(team_id).await?;
    respond(
        StatusCode::OK,
        &schedule.as_ref().map_or(Value::Null, schedule_json),
    )
}

/// `PUT /api/teams/{id}/report-schedule` (admin).
pub async fn put(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let input: Value = body::read(request).await?;
    if input.is_null() {
        return stop(state, caller, team_id).await;
    }
    let Value::Object(input) = input else {
        return Err(GatewayError::invalid(
            "The body must be {cadence, group_by, webhook_id}, or null to stop.",
            None,
        ));
    };
    if let Some(unknown) = input
        .keys()
        .find(|k| !["cadence", "group_by", "webhook_id"].contains(&k.as_str()))
    {
        return Err(GatewayError::invalid(
            format!("Unknown field '{unknown}'; expected cadence, group_by, webhook_id."),
            Some(unknown),
        ));
    }
    let cadence = match input.get("cadence").and_then(Value::as_str) {
        Some(c @ ("weekly" | "monthly")) => c.to_string(),
        _ => {
            return Err(GatewayError::invalid(
                "'cadence' must be \"weekly\" or \"monthly\".",
                Some("cadence"),
            ))
        }
    };
    let group_by = input
        .get("group_by")
        .and_then(Value::as_str)
        .unwrap_or("member")
        .to_string();
    // Checked as the report route checks it.
    super::usage::parse_group_by(&group_by)?;
    let webhook_id = input
        .get("webhook_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GatewayError::invalid(
                "'webhook_id' must name one of the team's webhooks.",
                Some("webhook_id"),
            )
        })?;
    if state.store.webhook(team_id, webhook_id).await?.is_none() {
        return Err(GatewayError::invalid(
            format!("'webhook_id': the team has no webhook {webhook_id}."),
            Some("webhook_id"),
        ));
    }
    let now = state.clock.now_ms();
    let schedule = ReportSchedule {
        team_id: team_id.to_string(),
        next_at: period(&cadence, now).1,
        cadence,
        group_by,
        webhook_id: webhook_id.to_string(),
    };
    state
        .store
        .set_report_schedule(&schedule, &super::actor(caller), now)
        .await?;
    audit(
        state,
        Some(team_id),
        caller,
        "report_schedule.set",
        Some(team_id),
        None,
        Some(schedule_json(&schedule)),
    )
    .await?;
    respond(StatusCode::OK, &schedule_json(&schedule))
}

/// `DELETE /api/teams/{id}/report-schedule` (admin).
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    stop(state, caller, team_id).await
}

async fn stop(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let before = state.store.report_schedule(team_id).await?;
    state.store.delete_report_schedule(team_id).await?;
    if let Some(before) = before {
        audit(
            state,
            Some(team_id),
            caller,
            "report_schedule.stop",
            Some(team_id),
            Some(schedule_json(&before)),
            None,
        )
        .await?;
    }
    respond(StatusCode::OK, &Value::Null)
}

/// Records the `report.scheduled` event of `[from, to)` for a schedule.
async fn record_report(
    state: &AppState,
    schedule: &ReportSchedule,
    from: i64,
    to: i64,
    partial: bool,
) -> Result<Option<String>, GatewayError> {
    let mut data =
        super::usage::report_json(state, &schedule.team_id, from, to, &schedule.group_by).await?;
    data["partial"] = json!(partial);
    data["cadence"] = json!(schedule.cadence);
    let dedupe = if partial {
        format!(
            "report.partial:{}:{}",
            schedule.team_id,
            crate::keys::new_id("x")
        )
    } else {
        format!("report.scheduled:{}:{from}", schedule.team_id)
    };
    let summary = json!({
        "cost_usd": data["total"]["cost_usd"],
        "requests": data["total"]["requests"],
    });
    let event = state
        .store
        .record_event(&NewEvent {
            team_id: schedule.team_id.clone(),
            kind: "report.scheduled",
            dedupe,
            data,
            at: state.clock.now_ms(),
            webhook_id: Some(schedule.webhook_id.clone()),
        })
        .await?;
    if let (Some(event_id), true) = (&event, state.store.mails()) {
        // Mail never fails what caused it: the event stands either way.
        if let Err(error) =
            mail_report(state, schedule, event_id, from, to, partial, &summary).await
        {
            tracing::warn!(%error, team = %schedule.team_id, "Report mail not written.");
        }
    }
    Ok(event)
}

/// The report's mail to the team's owner and admins, the CSV of
/// `GET /usage?format=csv` for the same range and grouping attached.
async fn mail_report(
    state: &AppState,
    schedule: &ReportSchedule,
    event_id: &str,
    from: i64,
    to: i64,
    partial: bool,
    summary: &Value,
) -> Result<(), GatewayError> {
    let csv =
        super::usage::report_csv(state, &schedule.team_id, from, to, &schedule.group_by).await?;
    let day = |ms: i64| {
        crate::clock::rfc3339(ms)
            .get(..10)
            .unwrap_or_default()
            .to_string()
    };
    let name = format!(
        "usage-{}-{}-{}.csv",
        schedule.team_id,
        day(from),
        day((to - 1).max(from))
    );
    let now = state.clock.now_ms();
    let members = state.store.members(&schedule.team_id).await?;
    for member in members.into_iter().filter(|m| m.role >= Role::Admin) {
        let to_addr = member.email;
        let mail = crate::store::outbox::NewMail {
            team_id: Some(schedule.team_id.clone()),
            kind: "report",
            dedupe: format!("mail:report:{event_id}:{to_addr}"),
            to: to_addr,
            data: json!({
                "cadence": schedule.cadence,
                "group_by": schedule.group_by,
                "from": from,
                "to": to,
                "partial": partial,
                "cost_usd": summary["cost_usd"],
                "requests": summary["requests"],
            }),
            attachment: Some((name.clone(), csv.clone())),
            at: now,
        };
        state.store.enqueue_mail(&mail).await?;
    }
    Ok(())
}

/// `POST /api/teams/{id}/report-schedule/send` (admin): the report of the
/// period so far, at once (`data.partial = true`).
pub async fn send_now(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let schedule = state.store.report_schedule(team_id).await?.ok_or_else(|| {
        GatewayError::NotFound(
            "The team has no report schedule; PUT one first (it names the webhook).".into(),
        )
    })?;
    let now = state.clock.now_ms();
    let (from, _) = period(&schedule.cadence, now);
    let event = record_report(state, &schedule, from, now, true).await?;
    respond(StatusCode::ACCEPTED, &json!({"event_id": event}))
}

/// Sends the report of every period that has ended, until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
        let now = state.clock.now_ms();
        let due = match state.store.due_report_schedules(now).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "Report schedules not read; trying again.");
                continue;
            }
        };
        for schedule in due {
            // The periods ended since `next_at`'s period began, as one
            // report (one when every process ran; all missed ones, at
            // once, after an outage). Recorded first (its key is its
            // period: once however often), then the schedule moves on; a
            // crash between the two records nothing twice.
            let (from, _) = period(&schedule.cadence, schedule.next_at - 1);
            let (current, next) = period(&schedule.cadence, now);
            let to = current.max(schedule.next_at);
            if let Err(error) = record_report(&state, &schedule, from, to, false).await {
                tracing::warn!(%error, team = %schedule.team_id, "Scheduled report not recorded; tried again.");
                continue;
            }
            if let Err(error) = state
                .store
                .advance_report_schedule(&schedule.team_id, schedule.next_at, next)
                .await
            {
                tracing::warn!(%error, "Report schedule not moved on; its report is not sent twice.");
            }
        }
    }
}
