//! Request metrics. Every counter is a fixed atomic, indexed by the operation's position in
//! [`Operation::ALL`], so recording a request takes no lock and allocates nothing. A scrape
//! copies them into a snapshot that `prometheus-client` encodes (OpenMetrics text).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kubekms_proto::Operation;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenMetrics text of `collectors` (snapshots taken for one scrape).
pub fn encode(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// A gauge value in seconds, written as a whole number when it is one (`0`, not `0.0`).
#[derive(Clone, Copy, Debug)]
pub struct Seconds(pub f64);

impl EncodeGaugeValue for Seconds {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::GaugeValueEncoder<'_>,
    ) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            EncodeGaugeValue::encode(&(self.0 as i64), encoder)
        } else {
            EncodeGaugeValue::encode(&self.0, encoder)
        }
    }
}

/// A counter family: one value per label set.
pub fn encode_counters<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        // An empty label set is written as no braces at all, not `{}`.
        if labels.is_empty() {
            metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        } else {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

/// A gauge family: one value per label set.
pub fn encode_gauges<'a, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, V)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        if labels.is_empty() {
            metric.encode_gauge(&value)?;
        } else {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

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
    /// Refused requests (AccessDenied) per principal ARN: at most [`MAX_DENIED_PRINCIPALS`]
    /// series, the rest counted under [`OTHER_PRINCIPALS`]. A lock only on the refusal path.
    denied: parking_lot::Mutex<HashMap<Arc<str>, u64>>,
}

/// Distinct principals the denied counter names before it lumps the rest together: bounded
/// cardinality whatever callers do.
pub const MAX_DENIED_PRINCIPALS: usize = 100;
/// The label of denied requests beyond [`MAX_DENIED_PRINCIPALS`] principals.
pub const OTHER_PRINCIPALS: &str = "other";

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ops: (0..SLOTS).map(|_| OpMetrics::default()).collect(),
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            denied: parking_lot::Mutex::new(HashMap::new()),
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

    /// A request refused with AccessDenied, by `principal` (its ARN).
    pub fn record_denied(&self, principal: &str) {
        let mut denied = self.denied.lock();
        if let Some(n) = denied.get_mut(principal) {
            *n += 1;
            return;
        }
        let key: Arc<str> = if denied.len() < MAX_DENIED_PRINCIPALS {
            principal.into()
        } else {
            OTHER_PRINCIPALS.into()
        };
        *denied.entry(key).or_insert(0) += 1;
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

    /// OpenMetrics text of every metric. Operations never called are left out.
    pub fn render(&self) -> String {
        encode(vec![Box::new(self.snapshot())])
    }

    fn snapshot(&self) -> Snapshot {
        let mut denied: Vec<(Arc<str>, u64)> = self
            .denied
            .lock()
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        denied.sort();
        let mut snapshot = Snapshot {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            denied,
            ..Snapshot::default()
        };
        for (i, m) in self.ops.iter().enumerate() {
            for outcome in Outcome::ALL {
                let n = m.by_outcome[outcome as usize].load(Ordering::Relaxed);
                if n > 0 {
                    snapshot.requests.push((label(i), outcome.label(), n));
                }
            }
            let mut buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .copied()
                // The last slot counts everything above the largest bound.
                .chain(std::iter::once(f64::MAX))
                .zip(m.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
                .collect();
            let count: u64 = buckets.iter().map(|(_, n)| n).sum();
            if count > 0 {
                let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                buckets.shrink_to_fit();
                snapshot.durations.push(Durations {
                    operation: label(i),
                    buckets,
                    sum,
                    count,
                });
            }
        }
        snapshot
    }
}

/// One operation's latency histogram: per-bucket counts (the encoder accumulates them), sum,
/// count.
#[derive(Debug)]
struct Durations {
    operation: &'static str,
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// The metrics as one scrape saw them.
#[derive(Debug, Default)]
struct Snapshot {
    requests: Vec<(&'static str, &'static str, u64)>,
    durations: Vec<Durations>,
    connections_open: u64,
    connections_total: u64,
    denied: Vec<(Arc<str>, u64)>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        encode_counters(
            &mut encoder,
            "kubekms_denied_requests",
            "KMS API requests refused with AccessDenied, by principal (at most 100 principals; \
             the rest as \"other\").",
            self.denied
                .iter()
                .map(|(principal, n)| (vec![("principal", &**principal)], *n)),
        )?;
        encode_counters(
            &mut encoder,
            "kubekms_requests",
            "KMS API requests by operation and outcome.",
            self.requests
                .iter()
                .map(|(op, outcome, n)| (vec![("operation", *op), ("outcome", *outcome)], *n)),
        )?;
        let mut metric = encoder.encode_descriptor(
            "kubekms_request_duration_seconds",
            "KMS API request latency.",
            None,
            MetricType::Histogram,
        )?;
        for d in &self.durations {
            metric
                .encode_family(&[("operation", d.operation)])?
                .encode_histogram::<NoLabelSet>(d.sum, d.count, &d.buckets, None)?;
        }
        encode_gauges(
            &mut encoder,
            "kubekms_connections_open",
            "Open client connections.",
            [(
                vec![],
                i64::try_from(self.connections_open).unwrap_or(i64::MAX),
            )],
        )?;
        encode_counters(
            &mut encoder,
            "kubekms_connections",
            "Client connections accepted.",
            [(vec![], self.connections_total)],
        )
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
    fn denied_requests_per_principal_are_bounded() {
        let m = Metrics::default();
        m.record_denied("arn:aws:iam::111122223333:user/k8s/alice");
        m.record_denied("arn:aws:iam::111122223333:user/k8s/alice");
        for i in 0..MAX_DENIED_PRINCIPALS + 50 {
            m.record_denied(&format!("arn:aws:iam::111122223333:user/k8s/u{i}"));
        }
        let text = m.render();
        assert!(text.contains(
            "kubekms_denied_requests_total{principal=\"arn:aws:iam::111122223333:user/k8s/alice\"} 2\n"
        ));
        let series = text
            .lines()
            .filter(|l| l.starts_with("kubekms_denied_requests_total{"))
            .count();
        assert_eq!(series, MAX_DENIED_PRINCIPALS + 1, "{text}");
        // Alice, 99 more named, and everyone after them as "other".
        assert!(
            text.contains("kubekms_denied_requests_total{principal=\"other\"} 51\n"),
            "{text}"
        );
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
            "kubekms_request_duration_seconds_bucket{le=\"0.0001\",operation=\"Encrypt\"} 1\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{le=\"0.005\",operation=\"Encrypt\"} 2\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{le=\"2.5\",operation=\"Encrypt\"} 2\n"
        ));
        assert!(text.contains(
            "kubekms_request_duration_seconds_bucket{le=\"+Inf\",operation=\"Encrypt\"} 3\n"
        ));
        assert!(text.contains("kubekms_request_duration_seconds_count{operation=\"Encrypt\"} 3\n"));
        assert!(!text.contains("operation=\"Decrypt\""));
    }
}
