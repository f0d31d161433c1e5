//! Usage reports (JSON and CSV) and the audit trail of a team.
//!
//! Totals are the sum of the groups, and the groups are sums of ledger rows
//! to the nano-dollar. Refused requests are not counted. Rows of removed
//! members and revoked keys stay in every report.

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

use super::teams::{access, Role};
use super::{respond, rfc3339, Caller};
use crate::error::GatewayError;
use crate::http_body::Body;
use crate::money::Money;
use crate::state::AppState;
use crate::store::teams::{day_of, GroupBy, UsageGroup, UsageParts};

const DAY_MS: i64 = 86_400_000;
/// The longest range one report covers.
const MAX_RANGE_DAYS: i64 = 3 * 366;

/// Decodes `%XX` escapes; `+` stays `+` (RFC 3339 offsets use it).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Query parameters, refusing names outside `allowed`.
pub fn query_params(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, GatewayError> {
    let mut params = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)
            .ok_or_else(|| GatewayError::invalid("Malformed query string.", None))?;
        let value = percent_decode(value).ok_or_else(|| {
            GatewayError::invalid(format!("Malformed value of '{name}'."), Some(&name))
        })?;
        if !allowed.contains(&name.as_str()) {
            return Err(GatewayError::invalid(
                format!(
                    "Unknown parameter '{name}'; expected one of: {}.",
                    allowed.join(", ")
                ),
                Some(&name),
            ));
        }
        params.push((name, value));
    }
    Ok(params)
}

/// A report bound: a date (whole UTC day; `to` is inclusive) or an RFC 3339
/// instant (half-open).
fn bound(text: &str, field: &str, is_end: bool) -> Result<i64, GatewayError> {
    let date_format = format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(text, &date_format) {
        let start = date.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000;
        return Ok(if is_end { start + DAY_MS } else { start });
    }
    if let Ok(instant) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((instant.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    Err(GatewayError::invalid(
        format!("'{field}' must be a date (YYYY-MM-DD) or an RFC 3339 time."),
        Some(field),
    ))
}

fn day_text(day: i64) -> String {
    OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

fn group_json(group: &UsageGroup) -> Value {
    let mut value = json!({
        "key": group.key,
        "label": group.label,
        "requests": group.requests,
        "input_tokens": group.input_tokens,
        "output_tokens": group.output_tokens,
        "cached_tokens": group.cached_tokens,
        "reasoning_tokens": group.reasoning_tokens,
        "cost_usd": Money::from_nano(group.cost_nano).to_string(),
    });
    if let Some(object) = value.as_object_mut() {
        for (name, count) in group.parts.columns() {
            object.insert(name.into(), count.into());
        }
    }
    value
}

/// Daily groups (keyed by day number, as the store's) summed from the
/// day-ordered parts of a split report.
fn days_of(parts: &[(i64, UsageGroup)]) -> Vec<UsageGroup> {
    let mut days: Vec<(i64, UsageGroup)> = Vec::new();
    for (day, part) in parts {
        if days.last().is_none_or(|(last, _)| last != day) {
            let group = UsageGroup {
                key: day.to_string(),
                ..UsageGroup::default()
            };
            days.push((*day, group));
        }
        if let Some((_, group)) = days.last_mut() {
            group.add(part);
        }
    }
    days.into_iter().map(|(_, group)| group).collect()
}

/// One CSV text field, quoted when RFC 4180 needs it. A text that a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a
/// tab or a CR) is prefixed with `'` (contract §4).
fn csv_field(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let text = if formula {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.into_owned()
    }
}

/// The `[from, to)` of a report: `from` and `to` as given (dates or
/// RFC 3339 instants), else this month; at most `MAX_RANGE_DAYS`.
fn report_range(
    state: &AppState,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(i64, i64), GatewayError> {
    let period = crate::clock::period_of(state.clock.now_ms());
    let from = match from {
        Some(text) => bound(text, "from", false)?,
        None => period.start_ms,
    };
    let to = match to {
        Some(text) => bound(text, "to", true)?,
        None => period.end_ms,
    };
    if to <= from {
        return Err(GatewayError::invalid(
            "'to' must come after 'from'.",
            Some("to"),
        ));
    }
    if to - from > MAX_RANGE_DAYS * DAY_MS {
        return Err(GatewayError::invalid(
            format!("A report covers at most {MAX_RANGE_DAYS} days."),
            Some("from"),
        ));
    }
    Ok((from, to))
}

/// Day groups keyed and labelled by their date (the store keys them by
/// day number).
/// Reads `group_by`: member, model, day, or `tag:<key>` (its key).
pub(super) fn parse_group_by(text: &str) -> Result<(GroupBy, Option<&str>), GatewayError> {
    let tag = text.strip_prefix("tag:");
    match text {
        "member" => Ok((GroupBy::Member, None)),
        "model" => Ok((GroupBy::Model, None)),
        "day" => Ok((GroupBy::Day, None)),
        _ if tag.is_some_and(crate::tags::valid_key) => Ok((GroupBy::Member, tag)),
        _ => Err(GatewayError::invalid(
            "'group_by' must be member, model, day or tag:<key> (a key of a-z, 0-9, '_', '.', '-').",
            Some("group_by"),
        )),
    }
}

/// A team's groups in `[from, to)`: by tag when `tag` names one, else by
/// `group_by` (days named).
async fn team_groups(
    state: &AppState,
    team_id: &str,
    from: i64,
    to: i64,
    group_by: GroupBy,
    tag: Option<&str>,
) -> Result<Vec<UsageGroup>, GatewayError> {
    if let Some(key) = tag {
        return Ok(state
            .store
            .usage_report_by_tag(team_id, from, to, key)
            .await?);
    }
    let mut groups = state
        .store
        .usage_report(team_id, from, to, group_by)
        .await?;
    if group_by == GroupBy::Day {
        name_days(&mut groups, from);
    }
    Ok(groups)
}

/// The JSON of `GET /usage` for `[from, to)` (no split): what a scheduled
/// report carries.
pub async fn report_json(
    state: &AppState,
    team_id: &str,
    from: i64,
    to: i64,
    group_param: &str,
) -> Result<Value, GatewayError> {
    let (group_by, tag) = parse_group_by(group_param)?;
    let groups = team_groups(state, team_id, from, to, group_by, tag).await?;
    Ok(usage_json(from, to, group_param, &groups))
}

/// The CSV of `GET /usage?format=csv` for `[from, to)` (no split): what a
/// scheduled report's mail attaches.
pub async fn report_csv(
    state: &AppState,
    team_id: &str,
    from: i64,
    to: i64,
    group_param: &str,
) -> Result<String, GatewayError> {
    let (group_by, tag) = parse_group_by(group_param)?;
    let groups = team_groups(state, team_id, from, to, group_by, tag).await?;
    Ok(csv_text(&groups))
}

/// The CSV of report groups: the first eight columns as they always were,
/// the parts after them.
fn csv_text(groups: &[UsageGroup]) -> String {
    let mut text = String::from(
        "key,label,requests,input_tokens,output_tokens,cached_tokens,reasoning_tokens,cost_usd",
    );
    for (name, _) in UsageParts::default().columns() {
        text.push(',');
        text.push_str(name);
    }
    text.push_str("\r\n");
    for group in groups {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{}",
            csv_field(&group.key),
            csv_field(&group.label),
            group.requests,
            group.input_tokens,
            group.output_tokens,
            group.cached_tokens,
            group.reasoning_tokens,
            Money::from_nano(group.cost_nano)
        ));
        for (_, count) in group.parts.columns() {
            text.push(',');
            text.push_str(&count.to_string());
        }
        text.push_str("\r\n");
    }
    text
}

/// The report's JSON: range, grouping, total and groups.
fn usage_json(from: i64, to: i64, group_name: &str, groups: &[UsageGroup]) -> Value {
    let mut total = UsageGroup::default();
    for group in groups {
        total.add(group);
    }
    let mut total_json = group_json(&total);
    if let Some(object) = total_json.as_object_mut() {
        object.remove("key");
        object.remove("label");
    }
    json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "group_by": group_name,
        "total": total_json,
        "groups": groups.iter().map(group_json).collect::<Vec<_>>(),
    })
}

fn name_days(groups: &mut [UsageGroup], from: i64) {
    for group in groups {
        let day: i64 = group.key.parse().unwrap_or_else(|_| day_of(from));
        group.key = day_text(day);
        group.label = group.key.clone();
    }
}

/// `GET /api/teams/{id}/usage?from=&to=&group_by=member|model|day|tag:<key>[&format=csv]`
/// (member).
pub async fn report(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Member).await?;
    let params = query_params(
        request.uri().query(),
        &["from", "to", "group_by", "format", "split_by"],
    )?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (from, to) = report_range(state, param("from"), param("to"))?;
    let group_param = param("group_by").unwrap_or("member");
    let (group_by, tag) = parse_group_by(group_param)?;
    let group_name = group_param;
    let csv = match param("format").unwrap_or("json") {
        "json" => false,
        "csv" => true,
        _ => {
            return Err(GatewayError::invalid(
                "'format' must be json or csv.",
                Some("format"),
            ))
        }
    };
    // Dashboard addition: daily groups split by member or model (JSON only).
    let split = match param("split_by") {
        None => None,
        Some("member") if tag.is_none() && group_by == GroupBy::Day && !csv => {
            Some(GroupBy::Member)
        }
        Some("model") if tag.is_none() && group_by == GroupBy::Day && !csv => Some(GroupBy::Model),
        Some(_) => {
            return Err(GatewayError::invalid(
                "'split_by' must be member or model, with group_by=day and JSON.",
                Some("split_by"),
            ))
        }
    };
    // With a split, the days are the sums of their parts: one read, so the
    // two always agree even while rows arrive.
    let parts = match split {
        Some(split) => Some(
            state
                .store
                .usage_daily_split(team_id, from, to, split)
                .await?,
        ),
        None => None,
    };
    let groups = match &parts {
        Some(parts) => {
            let mut groups = days_of(parts);
            name_days(&mut groups, from);
            groups
        }
        None => team_groups(state, team_id, from, to, group_by, tag).await?,
    };
    if csv {
        let text = csv_text(&groups);
        let mut response = Response::new(Body::full(text));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        let disposition = format!(
            "attachment; filename=\"usage-{team_id}-{}.csv\"",
            group_name.replace(':', "-")
        );
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(http::header::CONTENT_DISPOSITION, value);
        }
        return Ok(response);
    }
    let mut out = usage_json(from, to, group_name, &groups);
    if let (Some(split), Some(parts), Some(groups_json)) =
        (split, parts, out["groups"].as_array_mut())
    {
        // Parts arrive ordered by day: one pass puts each under its day.
        let mut by_day: std::collections::HashMap<String, Vec<Value>> = Default::default();
        for (day, part) in &parts {
            let label = if split == GroupBy::Model {
                &part.key
            } else {
                &part.label
            };
            by_day.entry(day_text(*day)).or_default().push(json!({
                "key": part.key,
                "label": label,
                "requests": part.requests,
                "cost_usd": Money::from_nano(part.cost_nano).to_string(),
            }));
        }
        for (group, json) in groups.iter().zip(groups_json.iter_mut()) {
            let split = by_day.remove(&group.key).unwrap_or_default();
            if let Some(object) = json.as_object_mut() {
                object.insert("split".into(), Value::Array(split));
            }
        }
    }
    respond(StatusCode::OK, &out)
}

/// `GET /api/me/usage?from=&to=` (any user): the caller's own usage
/// wherever it was billed — total, by day, by model and by payer
/// (personal, or each team) — and their balance now. Default: this month.
pub async fn mine(
    state: &AppState,
    caller: &Caller,
    request: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let principal = caller.require_user()?;
    let params = query_params(request.uri().query(), &["from", "to"])?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (from, to) = report_range(state, param("from"), param("to"))?;
    use crate::store::MineBy;
    let store = &state.store;
    let user = &principal.user_id;
    let mut days = store.user_usage_report(user, from, to, MineBy::Day).await?;
    name_days(&mut days, from);
    let models = store
        .user_usage_report(user, from, to, MineBy::Model)
        .await?;
    let mut payers = store
        .user_usage_report(user, from, to, MineBy::Payer)
        .await?;
    for group in &mut payers {
        if group.key.is_empty() {
            group.label = "personal".into();
        }
    }
    let mut total = UsageGroup::default();
    for group in &days {
        total.add(group);
    }
    let balance = super::current_balance(state, user).await?;
    let list = |groups: &[UsageGroup]| groups.iter().map(group_json).collect::<Vec<Value>>();
    let payers_json: Vec<Value> = payers
        .iter()
        .map(|group| {
            let mut value = group_json(group);
            value["team_id"] = if group.key.is_empty() {
                Value::Null
            } else {
                json!(group.key)
            };
            value
        })
        .collect();
    respond(
        StatusCode::OK,
        &json!({
            "from": rfc3339(from),
            "to": rfc3339(to),
            "balance_usd": balance.to_string(),
            "total": group_json(&total),
            "by_day": list(&days),
            "by_model": list(&models),
            "by_payer": payers_json,
        }),
    )
}

/// `GET /api/teams/{id}/audit` (admin): newest first.
pub async fn audit_trail(
    state: &AppState,
    caller: &Caller,
    team_id: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    access(state, caller, team_id, Role::Admin).await?;
    let params = query_params(request.uri().query(), &["limit"])?;
    let limit = match params.first() {
        Some((_, text)) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| GatewayError::invalid("'limit' must be 1 to 1000.", Some("limit")))?,
        None => 200,
    };
    let entries = state.store.audit(team_id, limit).await?;
    let parse = |text: &Option<String>| -> Value {
        text.as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    };
    let data: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "before": parse(&e.before_json),
                "after": parse(&e.after_json),
                "at": rfc3339(e.at),
            })
        })
        .collect();
    respond(StatusCode::OK, &json!({"data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_read_dates_and_instants() {
        assert_eq!(
            bound("2026-11-01", "from", false).unwrap(),
            1_793_491_200_000
        );
        assert_eq!(
            bound("2026-11-01", "to", true).unwrap(),
            1_793_491_200_000 + DAY_MS
        );
        assert_eq!(
            bound("2026-11-01T00:00:00Z", "from", false).unwrap(),
            1_793_491_200_000
        );
        assert_eq!(
            bound("2026-11-01T01:00:00+01:00", "from", false).unwrap(),
            1_793_491_200_000
        );
        assert!(bound("yesterday", "from", false).is_err());
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_run_are_prefixed() {
        assert_eq!(csv_field("=1+2@x.io"), "'=1+2@x.io");
        assert_eq!(csv_field("+cmd"), "'+cmd");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_field("a=b"), "a=b");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn query_params_decode_and_refuse_unknown_names() {
        let params = query_params(
            Some("from=2026-11-01T00%3A00%3A00%2B01%3A00&group_by=day"),
            &["from", "group_by"],
        )
        .unwrap();
        assert_eq!(params[0].1, "2026-11-01T00:00:00+01:00");
        assert!(query_params(Some("form=x"), &["from"]).is_err());
    }
}
