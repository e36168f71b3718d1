//! One clock for the engine (and, later, the operator), so tests can move time forward and prove
//! rotation, expiry and deletion windows without waiting days.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub const MILLIS_PER_DAY: Millis = 86_400_000;

pub trait Clock: Send + Sync + 'static {
    fn now_millis(&self) -> Millis;
}

/// Wall-clock time plus an offset that tests (or an operator flag) can advance.
#[derive(Default)]
pub struct SystemClock {
    offset_millis: AtomicI64,
}

impl SystemClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn advance(&self, by: Millis) {
        self.offset_millis.fetch_add(by, Ordering::SeqCst);
    }

    pub fn offset(&self) -> Millis {
        self.offset_millis.load(Ordering::SeqCst)
    }
}

impl Clock for SystemClock {
    fn now_millis(&self) -> Millis {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        wall + self.offset_millis.load(Ordering::SeqCst)
    }
}

/// `2026-12-01T23:59:00Z`: how the AWS query protocols (STS) write timestamps.
pub fn format_iso8601(millis: Millis) -> String {
    use time::macros::format_description;
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// AWS JSON 1.1 sends timestamps as epoch seconds (a JSON number with a fraction).
pub fn to_epoch_seconds(millis: Millis) -> f64 {
    millis as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601() {
        assert_eq!(format_iso8601(1_795_350_896_123), "2026-11-22T12:34:56Z");
    }

    #[test]
    fn advancing_moves_now_forward() {
        let clock = SystemClock::new();
        let before = clock.now_millis();
        clock.advance(7 * MILLIS_PER_DAY);
        assert!(clock.now_millis() >= before + 7 * MILLIS_PER_DAY);
    }
}
