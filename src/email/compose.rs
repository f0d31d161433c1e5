//! The messages (contract §6, "Email"): each a plain-text part and an HTML
//! part saying the same, composed when the mail is sent from what its
//! outbox row holds. Names people chose (teams, inviters) are cleaned of
//! control characters before they reach a header, and escaped in HTML; the
//! headers themselves are written by the mail library. No images, no
//! tracking, no secret but an invitation's own link.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::Message;
use serde_json::Value;

use crate::store::outbox::DueMail;

/// Why a mail cannot be composed (it is not sent; the reason is kept).
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{0:?} is not a mail address")]
    Address(String),
    #[error("the outbox row lacks {0}")]
    Missing(&'static str),
    #[error("unknown kind of mail {0:?}")]
    Kind(String),
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// What a message says, before it is wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A name for a header or a line: control characters (CR and LF among
/// them) become spaces, runs of space one, at most `max` characters.
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut space = false;
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if space || out.is_empty() {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if out.chars().count() == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// Text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A span of time in words: "7 days", "1 day and 3 hours", "45 minutes".
pub fn in_words(ms: i64) -> String {
    let minutes = (ms.max(0) + 59_999) / 60_000;
    let (days, hours, minutes) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    match (days, hours, minutes) {
        (0, 0, m) => unit(m.max(1), "minute"),
        (0, h, 0) => unit(h, "hour"),
        (0, h, m) => format!("{} and {}", unit(h, "hour"), unit(m, "minute")),
        (d, 0, _) => unit(d, "day"),
        (d, h, _) => format!("{} and {}", unit(d, "day"), unit(h, "hour")),
    }
}

/// A UTC time as people read it: `2026-12-10 07:55 UTC`.
pub fn utc(ms: i64) -> String {
    let text = crate::clock::rfc3339(ms);
    match (text.get(..10), text.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => text,
    }
}

fn text_of<'a>(data: &'a Value, key: &'static str) -> Result<&'a str, ComposeError> {
    data.get(key)
        .and_then(Value::as_str)
        .ok_or(ComposeError::Missing(key))
}

fn ms_of(data: &Value, key: &'static str) -> Result<i64, ComposeError> {
    data.get(key)
        .and_then(Value::as_i64)
        .ok_or(ComposeError::Missing(key))
}

/// The first instant after the month `YYYY-MM`: when its limits reset.
fn reset_of(month: &str) -> Option<i64> {
    let (year, number) = month.split_once('-')?;
    let month = time::Month::try_from(number.parse::<u8>().ok()?).ok()?;
    let start = time::Date::from_calendar_date(year.parse().ok()?, month, 1).ok()?;
    let start_ms = start.midnight().assume_utc().unix_timestamp() * 1000;
    Some(crate::clock::period_of(start_ms).end_ms)
}

fn html_page(title: &str, paragraphs: &[String]) -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head>\
         <body style=\"font-family: sans-serif; line-height: 1.5; max-width: 40em\">",
    );
    html.push_str(&format!("<h2>{}</h2>", escape(title)));
    for p in paragraphs {
        html.push_str("<p>");
        html.push_str(p);
        html.push_str("</p>");
    }
    html.push_str("</body></html>");
    html
}

fn link(url: &str) -> String {
    format!("<a href=\"{0}\">{0}</a>", escape(url))
}

/// What a mail says, from its outbox row; `now` words the expiry of an
/// invitation.
pub fn compose(mail: &DueMail, public_url: &str, now: i64) -> Result<Composed, ComposeError> {
    let data = &mail.data;
    let team = clean(mail.team_name.as_deref().unwrap_or("your team"), 80);
    let dashboard = format!("{public_url}/dashboard");
    match mail.kind.as_str() {
        "invitation" => {
            let inviter = clean(text_of(data, "inviter")?, 80);
            let role = clean(text_of(data, "role")?, 20);
            let url = text_of(data, "url")?;
            let expires = ms_of(data, "expires_at")?;
            let when = format!("in {}, on {}", in_words(expires - now), utc(expires));
            let subject = format!("{inviter} invited you to join {team} on Tollgate");
            let text = format!(
                "{inviter} invited you to join the team \"{team}\" on Tollgate as {role}.\r\n\r\n\
                 Open this link to see the invitation and join:\r\n{url}\r\n\r\n\
                 The link expires {when}. It works once, for {to}.\r\n\r\n\
                 If you did not expect this invitation, ignore this mail: nothing happens \
                 unless the link is opened and the invitation accepted.\r\n",
                to = mail.to,
            );
            let html = html_page(
                &format!("Join {team} on Tollgate"),
                &[
                    format!(
                        "{} invited you to join the team <strong>{}</strong> on Tollgate as {}.",
                        escape(&inviter),
                        escape(&team),
                        escape(&role)
                    ),
                    format!(
                        "Open this link to see the invitation and join:<br>{}",
                        link(url)
                    ),
                    format!(
                        "The link expires {}. It works once, for {}.",
                        escape(&when),
                        escape(&mail.to)
                    ),
                    "If you did not expect this invitation, ignore this mail: nothing happens \
                     unless the link is opened and the invitation accepted."
                        .to_string(),
                ],
            );
            Ok(Composed {
                subject,
                text,
                html,
            })
        }
        "report" => {
            let from = ms_of(data, "from")?;
            let to = ms_of(data, "to")?;
            let partial = data
                .get("partial")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let cadence = clean(
                data.get("cadence").and_then(Value::as_str).unwrap_or(""),
                20,
            );
            let cost = text_of(data, "cost_usd")?;
            let requests = data.get("requests").and_then(Value::as_i64).unwrap_or(0);
            let group_by = clean(
                data.get("group_by")
                    .and_then(Value::as_str)
                    .unwrap_or("member"),
                80,
            );
            let span = format!("{} to {}", utc(from), utc(to));
            let kind = if partial {
                "Usage so far".to_string()
            } else {
                format!("{} usage report", capitalised(&cadence))
            };
            let subject = format!("{kind} for {team}: {}", span_days(from, to));
            let file = mail
                .attachment
                .as_ref()
                .map(|(name, _)| name.as_str())
                .unwrap_or("the attached file");
            let text = format!(
                "{kind} for the team \"{team}\", {span}.\r\n\r\n\
                 Requests: {requests}\r\nCost: ${cost}\r\n\r\n\
                 The attached {file} has the report grouped by {group_by}, as the team's \
                 usage export gives it. The dashboard shows more:\r\n{dashboard}\r\n"
            );
            let html = html_page(
                &format!("{kind} for {team}"),
                &[
                    escape(&span),
                    format!(
                        "Requests: <strong>{requests}</strong><br>Cost: <strong>${}</strong>",
                        escape(cost)
                    ),
                    format!(
                        "The attached {} has the report grouped by {}, as the team's usage \
                         export gives it. The dashboard shows more: {}",
                        escape(file),
                        escape(&group_by),
                        link(&dashboard)
                    ),
                ],
            );
            Ok(Composed {
                subject,
                text,
                html,
            })
        }
        "limit.threshold" | "limit.blocked" => {
            let spent = text_of(data, "spent_usd")?;
            let limit = text_of(data, "limit_usd")?;
            let month = text_of(data, "month")?;
            let resets = reset_of(month)
                .map(utc)
                .unwrap_or_else(|| "next month".into());
            let (subject, lead) = if mail.kind == "limit.blocked" {
                (
                    format!(
                        "Your requests in {team} are blocked until {}",
                        day_of(&resets)
                    ),
                    format!(
                        "Your spend in the team \"{team}\" reached its hard monthly limit: \
                         requests billed to the team are refused until the limit resets or an \
                         admin raises it."
                    ),
                )
            } else {
                let percent = data
                    .get("threshold_percent")
                    .and_then(Value::as_i64)
                    .ok_or(ComposeError::Missing("threshold_percent"))?;
                (
                    format!("You have used {percent}% of your monthly limit in {team}"),
                    format!(
                        "Your spend in the team \"{team}\" has reached {percent}% of your \
                         monthly limit."
                    ),
                )
            };
            let figures =
                format!("Spent in {month}: ${spent} of ${limit}. The limit resets on {resets}.");
            let text = format!(
                "{lead}\r\n\r\n{figures}\r\n\r\nYour usage and remaining headroom:\r\n{dashboard}\r\n"
            );
            let html = html_page(
                &subject,
                &[
                    escape(&lead),
                    escape(&figures),
                    format!("Your usage and remaining headroom: {}", link(&dashboard)),
                ],
            );
            Ok(Composed {
                subject,
                text,
                html,
            })
        }
        other => Err(ComposeError::Kind(other.to_string())),
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Usage".to_string(),
    }
}

fn day_of(utc_text: &str) -> &str {
    utc_text.get(..10).unwrap_or(utc_text)
}

/// `2026-11-01 to 2026-11-30`: the days a report covers (its end is
/// exclusive).
fn span_days(from: i64, to: i64) -> String {
    let first = utc(from);
    let last = utc((to - 1).max(from));
    format!("{} to {}", day_of(&first), day_of(&last))
}

/// The whole message: the parts, and a report's attachment byte for byte
/// (base64, so no line ending or long line is touched on the way).
pub fn message(
    mail: &DueMail,
    from: &Mailbox,
    composed: &Composed,
) -> Result<Message, ComposeError> {
    let to: Mailbox = mail
        .to
        .parse::<lettre::Address>()
        .map(|address| Mailbox::new(None, address))
        .map_err(|_| ComposeError::Address(mail.to.clone()))?;
    let parts = MultiPart::alternative()
        .singlepart(SinglePart::plain(composed.text.clone()))
        .singlepart(SinglePart::html(composed.html.clone()));
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(composed.subject.clone())
        .message_id(None)
        .user_agent("Tollgate".to_string());
    let message = match &mail.attachment {
        Some((name, text)) => {
            let csv = ContentType::parse("text/csv; charset=utf-8")
                .map_err(|_| ComposeError::Missing("a content type"))?;
            let body =
                Body::new_with_encoding(text.as_bytes().to_vec(), ContentTransferEncoding::Base64)
                    .map_err(|_| ComposeError::Missing("an encodable attachment"))?;
            builder.multipart(
                MultiPart::mixed()
                    .multipart(parts)
                    .singlepart(Attachment::new(clean(name, 200)).body(body, csv)),
            )?
        }
        None => builder.multipart(parts)?,
    };
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(kind: &str, team: &str, data: Value) -> DueMail {
        DueMail {
            id: "mail_1".into(),
            kind: kind.into(),
            to: "new.user@example.com".into(),
            team_id: Some("team_1".into()),
            team_name: Some(team.into()),
            data,
            attachment: None,
            attempts: 0,
            created_at: 0,
            lease_owner: "lease_1".into(),
        }
    }

    #[test]
    fn names_lose_their_line_breaks_and_html_is_escaped() {
        assert_eq!(
            clean("Evil\r\nBcc: victim@example.com", 80),
            "Evil Bcc: victim@example.com"
        );
        assert_eq!(clean("  a\t\tb  ", 80), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(
            escape("<b>\"T&C\"</b>"),
            "&lt;b&gt;&quot;T&amp;C&quot;&lt;/b&gt;"
        );
    }

    #[test]
    fn spans_are_worded() {
        assert_eq!(in_words(7 * 86_400_000), "7 days");
        assert_eq!(
            in_words(86_400_000 + 3 * 3_600_000 + 5),
            "1 day and 3 hours"
        );
        assert_eq!(in_words(3_600_000), "1 hour");
        assert_eq!(in_words(45 * 60_000), "45 minutes");
        assert_eq!(in_words(90 * 60_000), "1 hour and 30 minutes");
        assert_eq!(in_words(0), "1 minute");
        assert_eq!(utc(1_796_889_600_000), "2026-12-10 08:00 UTC");
        assert_eq!(reset_of("2026-12"), Some(1_798_761_600_000)); // 2027-01-01
        assert_eq!(reset_of("bad"), None);
    }

    #[test]
    fn an_invitation_names_team_inviter_link_and_expiry() {
        let mail = due(
            "invitation",
            "Research\r\nBcc: x@example.com",
            serde_json::json!({
                "inviter": "owner@example.com", "role": "member",
                "url": "https://gw.example.com/invite/tgi_abc", "expires_at": 7 * 86_400_000_i64,
            }),
        );
        let composed = compose(&mail, "https://gw.example.com", 0).unwrap();
        assert_eq!(
            composed.subject,
            "owner@example.com invited you to join Research Bcc: x@example.com on Tollgate"
        );
        assert!(composed
            .text
            .contains("https://gw.example.com/invite/tgi_abc"));
        assert!(composed
            .text
            .contains("expires in 7 days, on 1970-01-08 00:00 UTC"));
        assert!(composed
            .html
            .contains("<a href=\"https://gw.example.com/invite/tgi_abc\">"));
        let from: Mailbox = "Tollgate <noreply@example.com>".parse().unwrap();
        let raw = String::from_utf8(message(&mail, &from, &composed).unwrap().formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(!head.lines().any(|l| l.starts_with("Bcc")), "{head}");
        assert_eq!(head.matches("\r\nTo: ").count(), 1, "{head}");
    }

    #[test]
    fn a_bad_address_is_refused_not_sent() {
        let mut mail = due(
            "limit.blocked",
            "T",
            serde_json::json!({"spent_usd": "1", "limit_usd": "1", "month": "2026-12"}),
        );
        mail.to = "a@b.c\r\nBcc: d@e.f".into();
        let composed = compose(&mail, "https://x", 0).unwrap();
        let from: Mailbox = "noreply@example.com".parse().unwrap();
        assert!(matches!(
            message(&mail, &from, &composed),
            Err(ComposeError::Address(_))
        ));
    }
}
