//! Failed credentials per client address (contract §4): after
//! [`MAX_FAILURES`] in a minute from one address, that address is refused
//! (429) on the management routes for a minute. Guessing the operator
//! token, or a key, from one address then costs a minute per 20 tries.
//!
//! A credential that has already worked from an address keeps working from
//! it while the address is blocked: behind a proxy or a NAT every client
//! shares one address, and a stranger's wrong guesses must not lock out the
//! operator and the members already signed in there (new credentials from
//! that address still wait out the minute, so guessing gains nothing).
//!
//! Bounded: at most [`MAX_ADDRESSES`] addresses are remembered; past that,
//! addresses that are not blocked are forgotten first; at most
//! [`MAX_KNOWN`] credentials per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
const BLOCK: Duration = Duration::from_secs(60);
const MAX_ADDRESSES: usize = 100_000;
const MAX_KNOWN: usize = 16;

#[derive(Debug, Clone)]
struct Record {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// Digests of credentials that worked from this address.
    known: Vec<String>,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            window_start: now,
            failures: 0,
            blocked_until: None,
            known: Vec::new(),
        }
    }
}

/// What is remembered of a credential: a digest, never the credential.
fn digest(credential: &str) -> String {
    crate::keys::hash_secret(credential)[..32].to_string()
}

#[derive(Default)]
pub struct FailedAttempts {
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl FailedAttempts {
    /// How long `ip` stays refused for `credential`, if it is (a
    /// credential that worked from `ip` before is never refused).
    pub fn blocked(&self, ip: IpAddr, credential: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let records = self.records.lock().ok()?;
        let record = records.get(&ip)?;
        let until = record.blocked_until?;
        if until <= now {
            return None;
        }
        if let Some(credential) = credential {
            if record.known.contains(&digest(credential)) {
                return None;
            }
        }
        Some(until - now)
    }

    /// Remembers that `credential` worked from `ip`.
    pub fn succeeded(&self, ip: IpAddr, credential: &str) {
        let now = Instant::now();
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        if records.len() >= MAX_ADDRESSES && !records.contains_key(&ip) {
            return;
        }
        let known = digest(credential);
        let record = records.entry(ip).or_insert_with(|| Record::new(now));
        if !record.known.contains(&known) {
            if record.known.len() >= MAX_KNOWN {
                record.known.remove(0);
            }
            record.known.push(known);
        }
    }

    /// Counts one failed credential from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let Ok(mut records) = self.records.lock() else {
            return;
        };
        if records.len() >= MAX_ADDRESSES && !records.contains_key(&ip) {
            records.retain(|_, r| r.blocked_until.is_some_and(|until| until > now));
            if records.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let record = records.entry(ip).or_insert_with(|| Record::new(now));
        if now.duration_since(record.window_start) > WINDOW {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures += 1;
        if record.failures >= MAX_FAILURES {
            record.blocked_until = Some(now + BLOCK);
            record.failures = 0;
            record.window_start = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_failures_block_one_address() {
        let attempts = FailedAttempts::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        attempts.succeeded(a, "tg-known");
        for _ in 0..MAX_FAILURES - 1 {
            attempts.failed(a);
        }
        assert!(attempts.blocked(a, Some("tg-new")).is_none());
        attempts.failed(a);
        assert!(attempts
            .blocked(a, Some("tg-new"))
            .is_some_and(|d| d <= BLOCK));
        assert!(attempts.blocked(a, None).is_some());
        assert!(
            attempts.blocked(a, Some("tg-known")).is_none(),
            "a credential that worked here"
        );
        assert!(attempts.blocked(b, Some("tg-new")).is_none());
    }
}
