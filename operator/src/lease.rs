//! Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does
//! it: the holder renews the Lease every [`RENEW_EVERY`]; another replica takes it over once
//! it has seen the same record, unrenewed, for the Lease's duration; every write is a replace
//! conditioned on the resourceVersion read, so of two replicas writing at once exactly one
//! wins and the other (409 Conflict) is not the leader.
//!
//! Expiry is judged on this replica's own monotonic clock, from when it first saw the current
//! record, not from the `renewTime` written by another machine: clocks that disagree do not
//! make two leaders.
//!
//! A leader that cannot renew steps down after [`RENEW_DEADLINE`], before the Lease can expire
//! for the others ([`LEASE_DURATION`]), so there is a gap rather than an overlap. The gap is
//! not a guarantee on its own (a process paused for longer than the Lease can wake up believing
//! it leads); the work the Lease guards is made safe against overlap by its own writes (see
//! `engine_pod` and `store`), the Lease only makes overlap rare.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long a Lease lasts unrenewed.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews it (and the others look at it).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A holder that has not renewed for this long stops acting as the leader.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// One round's limit (a read and a write), so a hung API server cannot stall the loop.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Giving the Lease up at shutdown waits no longer than this.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this replica is in the Lease: the pod's name (`POD_NAME`, from the downward API), or
/// outside a pod `<hostname>_<pid>`: two processes on one machine (tests, a developer running
/// two replicas) must not share an identity, or both would renew "their" Lease.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        });
    identity_from(std::env::var("POD_NAME").ok(), host, std::process::id())
}

/// The pod's name when there is one (unique in the namespace); otherwise host and process, so
/// two processes on one machine never share an identity.
fn identity_from(pod: Option<String>, host: Option<String>, pid: u32) -> String {
    match pod.filter(|p| !p.is_empty()) {
        Some(pod) => pod,
        None => format!("{}_{pid}", host.as_deref().unwrap_or("unknown-host")),
    }
}

/// Which Lease, and who is asking for it.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// A running election: [`Leadership::subscribe`] says whether this replica leads now.
pub struct Leadership {
    is_leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Start taking part in the election of `settings.name`.
    pub fn spawn(client: Client, settings: LeaseSettings) -> Self {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let task = tokio::spawn(elect(api, settings, tx, stop_rx));
        Self {
            is_leader: rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// `true` while this replica holds the Lease.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// Leave the election, giving the Lease up if held so another replica takes over at once
    /// rather than after the Lease expires.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// When this replica first saw the Lease record it holds now.
struct Observed {
    resource_version: String,
    at: Instant,
}

async fn elect(
    api: Api<Lease>,
    settings: LeaseSettings,
    is_leader: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut observed: Option<Observed> = None;
    let mut renewed: Option<Instant> = None;
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        // A leader's round may not outlast its deadline: it must know it lost before the
        // others can take over.
        let budget = match renewed {
            Some(at) => RENEW_DEADLINE
                .saturating_sub(at.elapsed())
                .min(ROUND_TIMEOUT),
            None => ROUND_TIMEOUT,
        };
        // The renewal counts from when it was sent, not answered: the API server may have
        // committed it at once and the answer arrived late, and the others' view of expiry
        // starts from the commit.
        let sent = Instant::now();
        let attempt =
            tokio::time::timeout(budget, acquire_or_renew(&api, &settings, &mut observed)).await;
        let leads = match attempt {
            Ok(Ok(leads)) => {
                renewed = leads.then_some(sent);
                leads
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %settings.name, error = %e, "cannot read or write the Lease");
                still_within_deadline(renewed)
            }
            Err(_) => {
                tracing::warn!(lease = %settings.name, "the API server did not answer about the Lease in time");
                still_within_deadline(renewed)
            }
        };
        if !leads {
            renewed = None;
        }
        is_leader.send_if_modified(|current| {
            let changed = *current != leads;
            if changed {
                tracing::info!(lease = %settings.name, identity = %settings.identity, leader = leads, "leadership changed");
            }
            *current = leads;
            changed
        });
    }
    // Stop acting first, then let go of the Lease.
    let was_leader = *is_leader.borrow();
    let _ = is_leader.send(false);
    if was_leader {
        match tokio::time::timeout(RELEASE_TIMEOUT, give_up(&api, &settings)).await {
            Ok(Ok(())) => tracing::info!(lease = %settings.name, "released the Lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %settings.name, error = %e, "cannot release the Lease; it expires on its own")
            }
            Err(_) => {
                tracing::warn!(lease = %settings.name, "releasing the Lease timed out; it expires on its own")
            }
        }
    }
}

fn still_within_deadline(renewed: Option<Instant>) -> bool {
    renewed.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
}

/// What to do about the Lease as it stands.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// It is ours: renew it.
    Renew,
    /// Free or expired: take it.
    TakeOver,
    /// Another replica holds it.
    Wait,
}

/// `holder`: the Lease's holderIdentity; `unchanged_for`: how long this replica has seen the
/// same record.
fn decide(
    holder: Option<&str>,
    me: &str,
    duration_seconds: Option<i32>,
    unchanged_for: Duration,
) -> Decision {
    match holder {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let duration = duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(LEASE_DURATION, Duration::from_secs);
            if unchanged_for >= duration {
                Decision::TakeOver
            } else {
                Decision::Wait
            }
        }
    }
}

/// One round: `Ok(true)` if this replica holds the Lease after it.
async fn acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> kube::Result<bool> {
    let now = MicroTime(Timestamp::now());
    let Some(lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return written(api.create(&PostParams::default(), &lease).await);
    };
    let version = lease.resource_version().unwrap_or_default();
    if observed
        .as_ref()
        .is_none_or(|o| o.resource_version != version)
    {
        *observed = Some(Observed {
            resource_version: version,
            at: Instant::now(),
        });
    }
    let unchanged_for = observed.as_ref().map_or(Duration::ZERO, |o| o.at.elapsed());
    let spec = lease.spec.clone().unwrap_or_default();
    let decision = decide(
        spec.holder_identity.as_deref(),
        &settings.identity,
        spec.lease_duration_seconds,
        unchanged_for,
    );
    let spec = match decision {
        Decision::Wait => return Ok(false),
        Decision::Renew => LeaseSpec {
            renew_time: Some(now),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            ..spec
        },
        Decision::TakeOver => {
            tracing::info!(lease = %settings.name, previous = ?spec.holder_identity, "taking over the Lease");
            LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
                ..spec
            }
        }
    };
    // `lease` still carries the resourceVersion read: the replace is refused if anyone wrote
    // in between.
    let lease = Lease {
        spec: Some(spec),
        ..lease
    };
    written(
        api.replace(&settings.name, &PostParams::default(), &lease)
            .await,
    )
}

/// A write's outcome: ours, lost to another writer (409), or failed.
fn written(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Clear the holder (if it is still this replica) so the next candidate takes it at once.
async fn give_up(api: &Api<Lease>, settings: &LeaseSettings) -> kube::Result<()> {
    let Some(lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return Ok(());
    }
    let lease = Lease {
        spec: Some(LeaseSpec {
            holder_identity: None,
            ..spec
        }),
        ..lease
    };
    written(
        api.replace(&settings.name, &PostParams::default(), &lease)
            .await,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let s = Duration::from_secs;
        let cases = [
            (Some("me"), Some(15), s(0), Decision::Renew),
            // Even long unchanged: it is ours (a renewal that was lost is made now).
            (Some("me"), Some(15), s(60), Decision::Renew),
            (None, Some(15), s(0), Decision::TakeOver),
            (Some(""), Some(15), s(0), Decision::TakeOver),
            (Some("other"), Some(15), s(14), Decision::Wait),
            (Some("other"), Some(15), s(15), Decision::TakeOver),
            (Some("other"), Some(30), s(20), Decision::Wait),
            // A nonsensical duration counts as the default.
            (Some("other"), Some(0), s(14), Decision::Wait),
            (Some("other"), Some(-5), s(15), Decision::TakeOver),
            (Some("other"), None, s(15), Decision::TakeOver),
        ];
        for (holder, duration, unchanged, want) in cases {
            assert_eq!(
                decide(holder, "me", duration, unchanged),
                want,
                "{holder:?} {duration:?} {unchanged:?}"
            );
        }
    }

    #[test]
    fn a_leader_steps_down_before_the_lease_can_expire_for_others() {
        // A leader's rounds are cut at its deadline, so it knows it lost by then; the others
        // wait the whole duration from when they last saw the Lease change.
        assert!(RENEW_EVERY < RENEW_DEADLINE);
        assert!(RENEW_DEADLINE + RENEW_EVERY <= LEASE_DURATION);
        assert!(still_within_deadline(Some(Instant::now())));
        assert!(!still_within_deadline(None));
    }

    #[test]
    fn identity_prefers_the_pod_name() {
        let pod = |p: &str| Some(p.to_owned());
        assert_eq!(identity_from(pod("engine-1"), pod("node"), 7), "engine-1");
        assert_eq!(identity_from(pod(""), pod("node"), 7), "node_7");
        assert_eq!(identity_from(None, pod("node"), 7), "node_7");
        assert_eq!(identity_from(None, None, 7), "unknown-host_7");
    }
}
