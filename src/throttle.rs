//! Failed credentials per client address (contract §4): after
//! [`MAX_FAILURES`] in a minute from one address, that address is refused
//! (429) on the management routes for a minute. Guessing the operator
//! token, or a key, from one address then costs a minute per 20 tries.
//!
//! Bounded: at most [`MAX_ADDRESSES`] addresses are remembered; past that,
//! addresses that are not blocked are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 20;
const WINDOW: Duration = Duration::from_secs(60);
const BLOCK: Duration = Duration::from_secs(60);
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
pub struct FailedAttempts {
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl FailedAttempts {
    /// How long `ip` stays refused, if it is.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let records = self.records.lock().ok()?;
        let until = records.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
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
        let record = records.entry(ip).or_insert(Record {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
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
        for _ in 0..MAX_FAILURES - 1 {
            attempts.failed(a);
        }
        assert!(attempts.blocked(a).is_none());
        attempts.failed(a);
        assert!(attempts.blocked(a).is_some_and(|d| d <= BLOCK));
        assert!(attempts.blocked(b).is_none());
    }
}
