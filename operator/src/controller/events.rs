//! Publishing Kubernetes events without kube-runtime's `Recorder`.
//!
//! The `Recorder` remembers every event it published for six minutes (to count repeats) and
//! walks that whole cache on each publish to expire entries. A wave of 10,000 Keys publishes
//! 10,000 distinct events, so it held them all and spent time linear in the wave per event.
//! Here only a bounded window of recent events is remembered: a repeat within it (a reconcile
//! failing the same way every few seconds) bumps the count of the event already published,
//! and anything older is simply published again.
//!
//! Publishing is asynchronous, as client-go's event broadcaster is: a reconcile queues its
//! event and goes on, and a background task writes the queue out a few at a time. Events are
//! for people reading `kubectl describe`; status is what tools wait on, so under a wave of
//! changes the status writes go first and the events trail behind. The queue is bounded; when
//! it is full an event is dropped and counted, never the reconcile held up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use kubekms_engine::api::metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client};
use serde_json::json;
/// Repeats are counted on one event for this long.
const REPEAT_WINDOW: Duration = Duration::from_secs(300);
/// At most this many recent events are remembered.
const REMEMBERED: usize = 2048;
/// Events waiting to be written, at most (a few MB); beyond that they are dropped.
const MAX_PENDING: u64 = 20_000;
/// Event writes in flight at once. One, as client-go's broadcaster writes its sink: events
/// yield the API server to the writes that change state (status, the key store), and catch
/// up once a wave has passed.
const WRITERS: usize = 1;

/// What makes two events "the same": the object, and what is said about it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Fingerprint {
    uid: String,
    type_: &'static str,
    reason: String,
    note: String,
}

struct Published {
    name: String,
    count: i32,
    at: Instant,
}

#[derive(Default)]
struct Recent {
    by_fingerprint: HashMap<Fingerprint, Published>,
    /// Insertion order, for eviction: the oldest entries go first.
    order: VecDeque<(Fingerprint, Instant)>,
}

impl Recent {
    fn evict(&mut self, now: Instant) {
        while let Some((fingerprint, at)) = self.order.front() {
            let expired = now.duration_since(*at) >= REPEAT_WINDOW;
            if !expired && self.order.len() <= REMEMBERED {
                break;
            }
            // An entry refreshed later has a newer `at`; only the matching record is dropped.
            if self
                .by_fingerprint
                .get(fingerprint)
                .is_some_and(|p| p.at == *at)
            {
                self.by_fingerprint.remove(fingerprint);
            }
            self.order.pop_front();
        }
    }

    fn remember(&mut self, fingerprint: Fingerprint, published: Published) {
        let at = published.at;
        self.order.push_back((fingerprint.clone(), at));
        self.by_fingerprint.insert(fingerprint, published);
        self.evict(at);
    }
}

/// An event waiting to be written.
struct Pending {
    regarding: ObjectReference,
    type_: &'static str,
    reason: String,
    note: String,
}

/// Counts for the operator's metrics.
#[derive(Default)]
pub struct EventStats {
    pending: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl EventStats {
    #[cfg(test)]
    fn render(&self) -> String {
        metrics::encode(vec![Box::new(self.snapshot())])
    }

    /// The counters as they stand now, for a scrape.
    pub fn snapshot(&self) -> EventSnapshot {
        EventSnapshot {
            pending: self.pending.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The event counters as one scrape saw them.
#[derive(Debug)]
pub struct EventSnapshot {
    pending: u64,
    published: u64,
    failed: u64,
    dropped: u64,
}

impl Collector for EventSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        metrics::encode_gauges(
            &mut encoder,
            "kubekms_operator_events_pending",
            "Events queued for the API server.",
            [(vec![], i64::try_from(self.pending).unwrap_or(i64::MAX))],
        )?;
        metrics::encode_counters(
            &mut encoder,
            "kubekms_operator_events",
            "Events by what became of them.",
            [
                (vec![("outcome", "published")], self.published),
                (vec![("outcome", "failed")], self.failed),
                (vec![("outcome", "dropped")], self.dropped),
            ],
        )
    }
}

/// Queues core/v1 Events for the background writer.
pub struct EventPublisher {
    queue: mpsc::UnboundedSender<Pending>,
    stats: Arc<EventStats>,
}

impl EventPublisher {
    /// The publisher, and the task that writes its events (to be spawned).
    pub fn new(
        client: Client,
        component: &str,
        instance: Option<String>,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (queue, pending) = mpsc::unbounded();
        let stats = Arc::new(EventStats::default());
        let writer = Arc::new(EventWriter {
            client,
            component: component.to_owned(),
            instance,
            recent: std::sync::Mutex::new(Recent::default()),
        });
        let task_stats = stats.clone();
        let task = pending.for_each_concurrent(WRITERS, move |event: Pending| {
            let writer = writer.clone();
            let stats = task_stats.clone();
            async move {
                let outcome = writer.write(&event).await;
                stats.pending.fetch_sub(1, Ordering::Relaxed);
                match outcome {
                    Ok(()) => {
                        stats.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, object = ?event.regarding.name, reason = %event.reason, "cannot publish event");
                    }
                }
            }
        });
        (Self { queue, stats }, task)
    }

    pub fn stats(&self) -> &EventStats {
        &self.stats
    }

    /// Queue `reason`/`note` about the object `regarding`.
    pub fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if self.stats.pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(object = ?regarding.name, reason, "event queue full; event dropped");
            return;
        }
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let event = Pending {
            regarding,
            type_,
            reason: reason.to_owned(),
            note,
        };
        if self.queue.unbounded_send(event).is_err() {
            // The writer is gone: the operator is stopping.
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes events, counting repeats on the event already written.
struct EventWriter {
    client: Client,
    component: String,
    instance: Option<String>,
    recent: std::sync::Mutex<Recent>,
}

impl EventWriter {
    async fn write(&self, pending: &Pending) -> kube::Result<()> {
        let regarding = &pending.regarding;
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let fingerprint = Fingerprint {
            uid: regarding.uid.clone().unwrap_or_default(),
            type_: pending.type_,
            reason: pending.reason.clone(),
            note: pending.note.clone(),
        };
        let now = Timestamp::now();
        if let Some((name, count)) = self.repeat_of(&fingerprint) {
            let bump = json!({
                "count": count,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&bump))
                .await
            {
                Ok(_) => return Ok(()),
                // Expired by the API server meanwhile: publish it anew.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let base = regarding.name.as_deref().unwrap_or("object");
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{base}.{}", &suffix[..16])),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: regarding.clone(),
            reason: Some(pending.reason.clone()),
            message: Some(pending.note.clone()),
            type_: Some(pending.type_.to_owned()),
            action: Some(pending.reason.clone()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(
                self.instance
                    .clone()
                    .unwrap_or_else(|| self.component.clone()),
            ),
            ..Event::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        if let Some(name) = created.metadata.name {
            if let Ok(mut recent) = self.recent.lock() {
                recent.remember(
                    fingerprint,
                    Published {
                        name,
                        count: 1,
                        at: Instant::now(),
                    },
                );
            }
        }
        Ok(())
    }

    /// The name and next count of a recent identical event, counting this repeat.
    fn repeat_of(&self, fingerprint: &Fingerprint) -> Option<(String, i32)> {
        let mut recent = self.recent.lock().ok()?;
        recent.evict(Instant::now());
        let published = recent.by_fingerprint.get_mut(fingerprint)?;
        published.count = published.count.saturating_add(1);
        Some((published.name.clone(), published.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(n: usize) -> Fingerprint {
        Fingerprint {
            uid: format!("uid-{n}"),
            type_: "Normal",
            reason: "Created".into(),
            note: "created".into(),
        }
    }

    fn published(name: &str, at: Instant) -> Published {
        Published {
            name: name.into(),
            count: 1,
            at,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        // The writer task is not run: nothing drains the queue.
        let (publisher, _writer) = EventPublisher::new(client, "test", None);
        let regarding = ObjectReference {
            name: Some("k".into()),
            namespace: Some("ns".into()),
            ..ObjectReference::default()
        };
        for n in 0..MAX_PENDING + 3 {
            publisher.publish(
                regarding.clone(),
                EventType::Normal,
                "Created",
                format!("{n}"),
            );
        }
        let stats = publisher.stats();
        assert_eq!(stats.pending.load(Ordering::Relaxed), MAX_PENDING);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        let text = stats.render();
        assert!(
            text.contains("kubekms_operator_events_pending 20000"),
            "{text}"
        );
        assert!(text.contains("outcome=\"dropped\"} 3"), "{text}");
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_go_first() {
        let mut recent = Recent::default();
        let now = Instant::now();
        for n in 0..REMEMBERED + 100 {
            recent.remember(fingerprint(n), published(&format!("e{n}"), now));
        }
        assert_eq!(recent.by_fingerprint.len(), REMEMBERED);
        assert_eq!(recent.order.len(), REMEMBERED);
        assert!(!recent.by_fingerprint.contains_key(&fingerprint(0)));
        assert!(recent
            .by_fingerprint
            .contains_key(&fingerprint(REMEMBERED + 99)));
    }

    #[test]
    fn entries_expire_after_the_window() {
        let mut recent = Recent::default();
        let t0 = Instant::now();
        recent.remember(fingerprint(1), published("old", t0));
        let later = t0 + REPEAT_WINDOW + Duration::from_secs(1);
        recent.remember(fingerprint(2), published("new", later));
        assert!(!recent.by_fingerprint.contains_key(&fingerprint(1)));
        assert!(recent.by_fingerprint.contains_key(&fingerprint(2)));
        assert_eq!(recent.order.len(), 1);
    }

    #[test]
    fn a_refreshed_entry_survives_eviction_of_its_older_record() {
        let mut recent = Recent::default();
        let t0 = Instant::now();
        recent.remember(fingerprint(1), published("old", t0));
        let later = t0 + REPEAT_WINDOW + Duration::from_secs(1);
        // Published again later under the same fingerprint.
        recent.remember(fingerprint(1), published("again", later));
        assert_eq!(
            recent
                .by_fingerprint
                .get(&fingerprint(1))
                .map(|p| p.name.as_str()),
            Some("again")
        );
        assert_eq!(recent.order.len(), 1);
    }
}
