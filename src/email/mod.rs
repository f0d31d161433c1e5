//! Email (contract §6, "Email"; issue 19). Mail is written to the outbox
//! (`store/outbox.rs`) by the fact that causes it — an invitation, a
//! scheduled report, a member's limit threshold or first block — and never
//! on the way of the API call beyond that one insert. This worker, one per
//! gateway process, claims due mails under a lease (two minutes: no other
//! process sends them meanwhile; one send is bounded well inside it),
//! composes each (`compose.rs`) and hands it to the SMTP server. A mail the
//! server takes is marked sent and never sent again; one it refuses for
//! now (a 4xx, no connection) is tried again, 1 s doubling up to
//! `email.retry_max_secs`, for 24 h; one it refuses for good (a 5xx, a
//! bad address) fails at once with the reason, listed by
//! `GET /api/email/outbox?status=failed`.
//!
//! At least once, like webhooks: a process that dies after the server took
//! a mail and before recording it leaves the lease to run out, and the mail
//! is sent again.

pub mod compose;

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SmtpTls};
use crate::store::outbox::{DueMail, MailOutcome};
use crate::store::Store;

/// How long a claimed mail is this process's alone.
const LEASE_MS: i64 = 120_000;
/// The longest one SMTP command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long mail is retried after it was written.
pub const RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// How often due mail is looked for.
const POLL: Duration = Duration::from_millis(250);
/// Mails claimed at once by one process.
const BATCH: usize = 16;

/// Why the worker cannot start (a configuration the validation let by).
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("email.smtp_url: {0}")]
    Url(String),
    #[error("email.from: {0:?} is not an address")]
    From(String),
}

/// Sends the outbox's mail (one per process, with email on).
pub struct Mailer {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
    retry_max_ms: i64,
}

/// The user name in an SMTP URL (`smtp://user@host`), if any.
fn url_user(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    authority
        .rsplit_once('@')
        .map(|(user, _)| user)
        .filter(|u| !u.is_empty())
}

/// The host an SMTP URL names (the TLS server name).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

/// When to try again after `attempts` failed tries: 1 s doubling, at most
/// `max_ms`, ±25% jitter.
pub fn backoff_ms(attempts: i64, max_ms: i64) -> i64 {
    let base = 1000_i64
        .saturating_mul(1_i64 << attempts.clamp(0, 30))
        .min(max_ms.max(1));
    let jitter = (rand::random::<u16>() as i64 % 501) - 250; // per mille
    base + base * jitter / 1000
}

/// TLS as the URL asks, trusting the certificates in `ca_file` besides
/// the public roots.
fn extra_root_tls(url: &str, ca_file: &str) -> Result<Tls, MailerError> {
    let fail = |why: String| MailerError::Url(format!("{url}: {why}"));
    let mode = SmtpTls::of(url).ok_or_else(|| fail("tls_ca_file needs TLS in the URL".into()))?;
    let host = url_host(url).ok_or_else(|| fail("no host".into()))?;
    let pem = std::fs::read(ca_file).map_err(|e| fail(format!("{ca_file}: {e}")))?;
    let certificate = Certificate::from_pem(&pem).map_err(|e| fail(format!("{ca_file}: {e}")))?;
    let parameters = TlsParameters::builder(host.to_string())
        .add_root_certificate(certificate)
        .build_rustls()
        .map_err(|e| fail(e.to_string()))?;
    Ok(match mode {
        SmtpTls::Wrapper => Tls::Wrapper(parameters),
        SmtpTls::Required => Tls::Required(parameters),
        SmtpTls::Opportunistic => Tls::Opportunistic(parameters),
    })
}

impl Mailer {
    /// The worker, or `None` when email is off.
    pub fn new(config: &Config, store: Store) -> Result<Option<Mailer>, MailerError> {
        let email = &config.email;
        if email.smtp_url.is_empty() {
            return Ok(None);
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&email.smtp_url)
            .map_err(|error| MailerError::Url(error.to_string()))?
            .timeout(Some(COMMAND_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(4));
        if !email.tls_ca_file.is_empty() {
            builder = builder.tls(extra_root_tls(&email.smtp_url, &email.tls_ca_file)?);
        }
        if let (Some(user), Some(password)) = (url_user(&email.smtp_url), &config.email_password) {
            builder = builder.credentials(Credentials::new(
                user.to_string(),
                password.expose().to_string(),
            ));
        }
        let from = email
            .from
            .parse::<Mailbox>()
            .map_err(|_| MailerError::From(email.from.clone()))?;
        Ok(Some(Mailer {
            store,
            transport: builder.build(),
            from,
            public_url: config.public_url(),
            retry_max_ms: i64::try_from(email.retry_max_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }))
    }

    /// Claims and sends due mail until `stop` (a send cut by the stop
    /// leaves its lease to run out: the next claim sends it).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        crate::tasks::claim_loop(
            stop,
            POLL,
            BATCH,
            "mail",
            || {
                self.store
                    .claim_mails(crate::clock::now_ms(), LEASE_MS, BATCH as i64)
            },
            |mail| self.send(mail),
        )
        .await;
    }

    /// One try, recorded.
    async fn send(&self, mail: DueMail) {
        let now = crate::clock::now_ms();
        let outcome = match self.attempt(&mail, now).await {
            Ok(()) => MailOutcome::Sent,
            Err(Refusal::Final(error)) => MailOutcome::Failed { error },
            Err(Refusal::ForNow(error)) => {
                let at = now + backoff_ms(mail.attempts, self.retry_max_ms);
                if at - mail.created_at <= RETRY_WINDOW_MS {
                    MailOutcome::Retry { at, error }
                } else {
                    MailOutcome::Failed {
                        error: format!("{error} (tried for 24 h)"),
                    }
                }
            }
        };
        match &outcome {
            MailOutcome::Sent => {
                tracing::debug!(mail = %mail.id, kind = %mail.kind, "Mail sent.")
            }
            MailOutcome::Retry { error, .. } => {
                tracing::warn!(mail = %mail.id, %error, "Mail not sent; it will be tried again.")
            }
            MailOutcome::Failed { error } => {
                tracing::warn!(mail = %mail.id, %error, "Mail not sent; given up.")
            }
        }
        // An invitation's link is the only secret a mail holds: once it is
        // sent or given up, the outbox no longer keeps it.
        let scrubbed = (mail.kind == "invitation" && !matches!(outcome, MailOutcome::Retry { .. }))
            .then(|| {
                let mut data = mail.data.clone();
                if let Some(object) = data.as_object_mut() {
                    object.insert("url".into(), Value::Null);
                }
                data
            });
        match self
            .store
            .finish_mail(&mail, &outcome, scrubbed.as_ref(), crate::clock::now_ms())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(mail = %mail.id, "Mail's lease ran out before it was recorded.")
            }
            Err(error) => {
                tracing::warn!(%error, mail = %mail.id, "Mail not recorded; its lease runs out and it is tried again.")
            }
        }
    }

    async fn attempt(&self, mail: &DueMail, now: i64) -> Result<(), Refusal> {
        if mail.kind == "invitation" {
            self.invitation_still_open(mail, now).await?;
        }
        let composed = compose::compose(mail, &self.public_url, now)
            .map_err(|error| Refusal::Final(error.to_string()))?;
        let message = compose::message(mail, &self.from, &composed)
            .map_err(|error| Refusal::Final(error.to_string()))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => {
                Err(Refusal::Final(crate::error::with_causes(&error)))
            }
            Err(error) => Err(Refusal::ForNow(crate::error::with_causes(&error))),
        }
    }

    /// An invitation revoked, accepted or expired before its mail went out
    /// is not mailed.
    async fn invitation_still_open(&self, mail: &DueMail, now: i64) -> Result<(), Refusal> {
        let (Some(team_id), Some(id)) = (
            mail.team_id.as_deref(),
            mail.data.get("invitation_id").and_then(Value::as_str),
        ) else {
            return Err(Refusal::Final("the mail names no invitation".into()));
        };
        let invitation = self.store.invitation(team_id, id).await.map_err(|error| {
            Refusal::ForNow(format!("the invitation could not be read: {error}"))
        })?;
        match invitation {
            None => Err(Refusal::Final("the invitation is gone".into())),
            Some(i) if i.revoked_at.is_some() => Err(Refusal::Final(
                "the invitation was revoked before it was mailed".into(),
            )),
            Some(i) if i.accepted_at.is_some() => Err(Refusal::Final(
                "the invitation was accepted before it was mailed".into(),
            )),
            Some(i) if i.expires_at <= now => Err(Refusal::Final(
                "the invitation expired before it was mailed".into(),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Why a try did not send.
enum Refusal {
    /// Tried again later.
    ForNow(String),
    /// Never sent.
    Final(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_host_come_from_the_url() {
        assert_eq!(SmtpTls::of("smtps://h:465"), Some(SmtpTls::Wrapper));
        assert_eq!(
            SmtpTls::of("smtp://h:587?tls=required"),
            Some(SmtpTls::Required)
        );
        assert_eq!(
            SmtpTls::of("smtp://h:587?x=1&tls=opportunistic"),
            Some(SmtpTls::Opportunistic)
        );
        assert_eq!(SmtpTls::of("smtp://h:25"), None);
        assert_eq!(
            url_host("smtp://u@mail.example.com:587?tls=required"),
            Some("mail.example.com")
        );
        assert_eq!(url_host("smtps://127.0.0.1:465"), Some("127.0.0.1"));
        assert_eq!(url_host("smtps://[::1]:465"), Some("::1"));
        assert_eq!(url_host("smtp://relay"), Some("relay"));
    }

    #[test]
    fn the_user_comes_from_the_url() {
        assert_eq!(url_user("smtp://mailer@127.0.0.1:2525"), Some("mailer"));
        assert_eq!(url_user("smtps://smtp.example.com:465"), None);
        assert_eq!(url_user("smtp://a@b@host:25?tls=required"), Some("a@b"));
    }

    #[test]
    fn backoff_doubles_up_to_the_configured_wait() {
        for attempts in 0..40 {
            let base = (1000_i64 << attempts.min(30)).min(5_000);
            let wait = backoff_ms(attempts, 5_000);
            assert!(
                wait >= base * 3 / 4 && wait <= base * 5 / 4,
                "{attempts}: {wait}"
            );
        }
    }
}
