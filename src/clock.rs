//! Time: epoch milliseconds (the unit of every stored row), RFC 3339 text,
//! the gateway's [`Clock`] (the system's, or a manual one tests move) and
//! the UTC calendar month ([`Period`]) that limits reset by.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime, Time};

/// Milliseconds since the Unix epoch, the time unit of every stored row.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC text of epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The gateway's clock: the system's, or a manual one that tests move
/// (month rollovers, invitation expiry).
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    pub fn manual(start_ms: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(manual) => manual.load(Ordering::Relaxed),
            None => now_ms(),
        }
    }

    /// Moves a manual clock; a system clock ignores it.
    pub fn set_ms(&self, ms: i64) {
        if let Some(manual) = &self.0 {
            manual.store(ms, Ordering::Relaxed);
        }
    }
}

/// A UTC calendar month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `YYYY-MM`.
    pub key: String,
    pub start_ms: i64,
    /// The first instant of the next month: when limits reset.
    pub end_ms: i64,
}

fn month_start_ms(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp() * 1000)
        .unwrap_or(0)
}

/// The month containing `ms`.
pub fn period_of(ms: i64) -> Period {
    let at = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month) = (at.year(), at.month());
    let (next_year, next_month) = if month == Month::December {
        (year + 1, Month::January)
    } else {
        (year, month.next())
    };
    Period {
        key: format!("{year:04}-{:02}", u8::from(month)),
        start_ms: month_start_ms(year, month),
        end_ms: month_start_ms(next_year, next_month),
    }
}

/// The UTC week (Monday to Monday) containing `ms`: `(start, end)`.
pub fn week_of(ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let day = ms.div_euclid(DAY);
    // 1970-01-01 was a Thursday: Monday is 0 here.
    let start = (day - (day + 3).rem_euclid(7)) * DAY;
    (start, start + 7 * DAY)
}

/// The month before the one containing `ms`.
pub fn previous_period(ms: i64) -> Period {
    period_of(period_of(ms).start_ms - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        // 2026-12-02 (a Wednesday) 10:00 UTC: the week of Monday the 30th.
        let (start, end) = week_of(1_796_169_600_000 + 36_000_000);
        assert_eq!(rfc3339(start), "2026-11-30T00:00:00Z");
        assert_eq!(rfc3339(end), "2026-12-07T00:00:00Z");
        assert_eq!(week_of(start), (start, end));
        assert_eq!(week_of(end - 1), (start, end));
    }

    #[test]
    fn periods_are_utc_months() {
        // 2026-11-28T08:00:00Z
        let period = period_of(1_795_852_800_000);
        assert_eq!(period.key, "2026-11");
        assert_eq!(period.start_ms, 1_793_491_200_000); // 2026-11-01
        assert_eq!(period.end_ms, 1_796_083_200_000); // 2026-12-01
        let december = period_of(period.end_ms);
        assert_eq!(december.key, "2026-12");
        assert_eq!(period_of(december.end_ms).key, "2027-01");
        assert_eq!(period_of(period.end_ms - 1).key, "2026-11");
        assert_eq!(previous_period(period.start_ms).key, "2026-10");
    }
}
