//! Request metrics in Prometheus text format. Every counter is a fixed atomic, indexed by the
//! operation's position in [`Operation::ALL`], so recording a request takes no lock and
//! allocates nothing.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kubekms_proto::Operation;

/// The slot for requests whose operation is missing or unknown.
const UNKNOWN: usize = Operation::ALL.len();
const SLOTS: usize = Operation::ALL.len() + 1;

/// Upper bounds in seconds; KMS calls are sub-millisecond to tens of milliseconds (RSA-4096
/// signing, durable writes).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ClientError,
    ServerError,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Success, Outcome::ClientError, Outcome::ServerError];

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
        }
    }

    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => Outcome::Success,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }
}

#[derive(Default)]
struct OpMetrics {
    by_outcome: [AtomicU64; 3],
    /// Cumulative buckets are computed at scrape time; each slot counts its own range, the
    /// last one everything above the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

pub struct Metrics {
    ops: Box<[OpMetrics]>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ops: (0..SLOTS).map(|_| OpMetrics::default()).collect(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn record(&self, op: Option<Operation>, outcome: Outcome, elapsed: Duration) {
        let Some(m) = self.ops.get(op.map_or(UNKNOWN, Operation::index)) else {
            return;
        };
        m.by_outcome[outcome as usize].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        m.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        m.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// How many requests for `operation` (`None`: unknown) ended with `outcome`.
    pub fn count(&self, op: Option<Operation>, outcome: Outcome) -> u64 {
        self.ops
            .get(op.map_or(UNKNOWN, Operation::index))
            .map_or(0, |m| {
                m.by_outcome[outcome as usize].load(Ordering::Relaxed)
            })
    }

    /// Prometheus text exposition format 0.0.4. Operations never called are left out.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP kubekms_requests_total KMS API requests by operation and outcome.\n");
        out.push_str("# TYPE kubekms_requests_total counter\n");
        for (i, m) in self.ops.iter().enumerate() {
            for outcome in Outcome::ALL {
                let n = m.by_outcome[outcome as usize].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "kubekms_requests_total{{operation=\"{}\",outcome=\"{}\"}} {n}",
                        label(i),
                        outcome.label()
                    );
                }
            }
        }
        out.push_str("# HELP kubekms_request_duration_seconds KMS API request latency.\n");
        out.push_str("# TYPE kubekms_request_duration_seconds histogram\n");
        for (i, m) in self.ops.iter().enumerate() {
            let counts: Vec<u64> = m
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let op = label(i);
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "kubekms_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "kubekms_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {total}"
            );
            let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "kubekms_request_duration_seconds_sum{{operation=\"{op}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "kubekms_request_duration_seconds_count{{operation=\"{op}\"}} {total}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kubekms_connections_open Open client connections.\n\
             # TYPE kubekms_connections_open gauge\n\
             kubekms_connections_open {}\n\
             # HELP kubekms_connections_total Client connections accepted.\n\
             # TYPE kubekms_connections_total counter\n\
             kubekms_connections_total {}",
            self.connections_open.load(Ordering::Relaxed),
            self.connections_total.load(Ordering::Relaxed)
        );
        out
    }
}

fn label(slot: usize) -> &'static str {
    Operation::ALL.get(slot).map_or("unknown", |op| op.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_found_by_name() {
        assert_eq!(
            Operation::from_name("Encrypt").map(|op| label(op.index())),
            Some("Encrypt")
        );
        assert_eq!(Operation::from_name("Encrypt2"), None);
    }

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let m = Metrics::default();
        let enc = Operation::from_name("Encrypt");
        m.record(enc, Outcome::Success, Duration::from_micros(50));
        m.record(enc, Outcome::Success, Duration::from_millis(3));
        m.record(enc, Outcome::ClientError, Duration::from_secs(10));
        m.record(None, Outcome::ClientError, Duration::from_micros(10));
        assert_eq!(m.count(enc, Outcome::Success), 2);
        assert_eq!(m.count(None, Outcome::ClientError), 1);
        let text = m.render();
        assert!(
            text.contains("kubekms_requests_total{operation=\"Encrypt\",outcome=\"success\"} 2\n")
        );
        assert!(text.contains(
            "kubekms_requests_total{operation=\"Encrypt\",outcome=\"client_error\"} 1\n"
        ));
        assert!(text.contains(
            "kubekms_requests_total{operation=\"unknown\",outcome=\"client_error\"} 1\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"0.0001\"} 1\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"0.005\"} 2\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"2.5\"} 2\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("kubekms_request_duration_seconds_count{operation=\"Encrypt\"} 3\n"));
        assert!(!text.contains("operation=\"Decrypt\""));
    }
}
