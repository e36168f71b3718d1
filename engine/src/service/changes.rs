//! The recent key changes this engine process saw, for clients that poll for them over the
//! network (`kubekms_proto::changes`): a bounded log of [`KeyChanged`] with positions, and a
//! wait for the next one. Fed by the same calls that feed [`Kms::subscribe_key_changes`], so a
//! change made here, by due work, or by another replica (seen through the store watch) is in it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use kubekms_proto::changes::{
    KeyChange, ListKeyChangesRequest, ListKeyChangesResponse, MAX_KEY_IDS, MAX_WAIT_SECONDS,
};
use kubekms_proto::Action;
use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Caller, KeyChanged, Kms, Outcome};
use crate::error::{KmsError, Result};
use crate::record::KeyId;

/// How many changes are kept. A rotation wave of 10,000 keys fits twice; a client further
/// behind than this re-reads every key, which is what it would do without the log.
pub const CHANGE_LOG_CAPACITY: usize = 20_000;

/// The log. Positions are `<epoch>.<sequence>`: the epoch is random per process, so a position
/// from another replica or an earlier run is recognised as foreign, never misread as a place in
/// this log.
pub struct ChangeLog {
    epoch: String,
    capacity: usize,
    inner: Mutex<Entries>,
    appended: Notify,
}

#[derive(Default)]
struct Entries {
    /// The sequence number the next change gets (the first is 1).
    next: u64,
    changes: VecDeque<Logged>,
}

/// A change, its place in the log, and the key record's revision after it (none once the key
/// is gone).
struct Logged {
    seq: u64,
    change: KeyChanged,
    revision: Option<u64>,
}

/// A change as a page reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub change: KeyChanged,
    pub revision: Option<u64>,
}

/// What a position says about this log.
#[derive(Debug, PartialEq, Eq)]
enum Since {
    /// Every change after this sequence number is still here.
    Sequence(u64),
    /// Absent, foreign, malformed or too old: changes may have been missed.
    Unknown,
}

/// Changes after a position, with the position after them.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub changes: Vec<Change>,
    pub position: String,
    pub complete: bool,
}

impl ChangeLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            epoch: Uuid::new_v4().simple().to_string(),
            capacity: capacity.max(1),
            inner: Mutex::new(Entries {
                next: 1,
                changes: VecDeque::new(),
            }),
            appended: Notify::new(),
        }
    }

    pub fn push(&self, change: KeyChanged, revision: Option<u64>) {
        {
            let mut inner = self.inner.lock();
            let seq = inner.next;
            inner.next += 1;
            if inner.changes.len() == self.capacity {
                inner.changes.pop_front();
            }
            inner.changes.push_back(Logged {
                seq,
                change,
                revision,
            });
        }
        self.appended.notify_waiters();
    }

    fn position(&self, seq: u64) -> String {
        format!("{}.{seq}", self.epoch)
    }

    fn since(&self, position: Option<&str>) -> Since {
        let Some((epoch, seq)) = position.and_then(|p| p.split_once('.')) else {
            return Since::Unknown;
        };
        match seq.parse::<u64>() {
            Ok(seq) if epoch == self.epoch => Since::Sequence(seq),
            _ => Since::Unknown,
        }
    }

    /// At most `limit` changes after `position` that `keep` passes.
    pub fn page(
        &self,
        position: Option<&str>,
        limit: usize,
        keep: impl Fn(&KeyChanged) -> bool,
    ) -> Page {
        let inner = self.inner.lock();
        let last = inner.next - 1;
        let oldest_kept = inner.changes.front().map_or(inner.next, |l| l.seq);
        let after = match self.since(position) {
            // Also refused: a position past the end (not one this log handed out).
            // `oldest_kept` is at least 1; `seq` is the client's and may be any number.
            Since::Sequence(seq) if seq >= oldest_kept - 1 && seq <= last => seq,
            _ => {
                return Page {
                    changes: Vec::new(),
                    position: self.position(last),
                    complete: false,
                }
            }
        };
        // Each key once, at its first place, with its latest revision.
        let mut changes: Vec<Change> = Vec::new();
        let mut index: HashMap<KeyId, usize> = HashMap::new();
        let mut reached = after;
        for logged in inner.changes.iter().filter(|l| l.seq > after) {
            if keep(&logged.change) {
                match index.get(&logged.change.key_id) {
                    Some(&i) => changes[i].revision = logged.revision,
                    None if changes.len() == limit => break,
                    None => {
                        index.insert(logged.change.key_id, changes.len());
                        changes.push(Change {
                            change: logged.change.clone(),
                            revision: logged.revision,
                        });
                    }
                }
            }
            reached = logged.seq;
        }
        Page {
            changes,
            position: self.position(reached),
            complete: true,
        }
    }

    /// [`ChangeLog::page`], waiting up to `wait` for a change `keep` passes when there is none.
    pub async fn wait(
        &self,
        position: Option<&str>,
        limit: usize,
        wait: Duration,
        keep: impl Fn(&KeyChanged) -> bool,
    ) -> Page {
        let deadline = tokio::time::Instant::now() + wait;
        let mut position = position.map(str::to_owned);
        loop {
            // Registered before the log is read, so a change pushed in between still wakes it.
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let page = self.page(position.as_deref(), limit, &keep);
            if !page.changes.is_empty() || !page.complete {
                return page;
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return page;
            }
            // Changes the caller may not see moved the position on; wait from there.
            position = Some(page.position);
        }
    }
}

impl Kms {
    /// `kubekms_proto::changes`: the keys that changed after the request's position, among
    /// those the caller could list, waiting up to `WaitSeconds` for one. Allowed to callers
    /// that may `kms:ListKeys`.
    pub async fn list_key_changes(
        &self,
        caller: &Caller,
        req: ListKeyChangesRequest,
    ) -> Outcome<ListKeyChangesResponse> {
        let checked = (|| -> Result<(Duration, usize)> {
            self.authorize_keyless(caller, Action::ListKeys)?;
            let wait = req.wait_seconds.unwrap_or(0);
            if wait > MAX_WAIT_SECONDS {
                return Err(KmsError::validation(format!(
                    "WaitSeconds must be at most {MAX_WAIT_SECONDS}"
                )));
            }
            let limit = req.limit.unwrap_or(MAX_KEY_IDS);
            if !(1..=MAX_KEY_IDS).contains(&limit) {
                return Err(KmsError::validation(format!(
                    "Limit must be between 1 and {MAX_KEY_IDS}"
                )));
            }
            Ok((Duration::from_secs(u64::from(wait)), limit as usize))
        })();
        let (wait, limit) = match checked {
            Ok(checked) => checked,
            Err(e) => return e.into(),
        };
        let keep = |change: &KeyChanged| {
            change.scope == caller.scope
                && self
                    .by_uuid_any(caller, &change.key_id.uuid())
                    // A key gone from this engine (destroyed) is reported to whoever may list
                    // keys: its id is all the caller learns.
                    .is_none_or(|entry| self.lists(caller, &entry))
        };
        let page = self
            .change_log
            .wait(req.position.as_deref(), limit, wait, keep)
            .await;
        Outcome::keyless(Ok(ListKeyChangesResponse {
            changes: page
                .changes
                .iter()
                .map(|c| KeyChange {
                    key_id: c.change.key_id.to_string(),
                    revision: c.revision,
                })
                .collect(),
            position: page.position,
            complete: page.complete,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Scope;

    fn push(log: &ChangeLog, n: u128) {
        log.push(change(n), Some(n as u64));
    }

    /// What a page says of key `n` at revision `revision`.
    fn at(n: u128, revision: u64) -> Change {
        Change {
            change: change(n),
            revision: Some(revision),
        }
    }

    fn change(n: u128) -> KeyChanged {
        KeyChanged {
            scope: Scope {
                account: "111122223333".into(),
                region: "us-east-1".into(),
            },
            key_id: KeyId::from_uuid(Uuid::from_u128(n)),
        }
    }

    #[test]
    fn a_first_request_is_incomplete_and_then_changes_follow_in_order_once_each() {
        let log = ChangeLog::new(10);
        let first = log.page(None, 100, |_| true);
        assert!(!first.complete);
        assert!(first.changes.is_empty());
        log.push(change(1), Some(1));
        log.push(change(2), Some(1));
        log.push(change(1), Some(2));
        let page = log.page(Some(&first.position), 100, |_| true);
        assert!(page.complete);
        assert_eq!(page.changes, vec![at(1, 2), at(2, 1)]);
        let again = log.page(Some(&page.position), 100, |_| true);
        assert!(again.complete);
        assert!(again.changes.is_empty());
        assert_eq!(again.position, page.position);
    }

    #[test]
    fn a_limit_leaves_the_rest_for_the_next_page() {
        let log = ChangeLog::new(10);
        let start = log.page(None, 100, |_| true).position;
        for n in 1..=5 {
            push(&log, n);
        }
        let page = log.page(Some(&start), 2, |_| true);
        assert_eq!(page.changes, vec![at(1, 1), at(2, 2)]);
        let rest = log.page(Some(&page.position), 100, |_| true);
        assert_eq!(rest.changes, vec![at(3, 3), at(4, 4), at(5, 5)]);
    }

    #[test]
    fn foreign_malformed_future_and_overwritten_positions_are_incomplete() {
        let log = ChangeLog::new(3);
        let other = ChangeLog::new(3);
        let start = log.page(None, 100, |_| true).position;
        let foreign = other.page(None, 100, |_| true).position;
        for n in 1..=5 {
            push(&log, n);
        }
        for position in [
            foreign.as_str(),
            "nonsense",
            "x.y",
            &format!("{}.99", log.epoch),
        ] {
            let page = log.page(Some(position), 100, |_| true);
            assert!(!page.complete, "{position}");
        }
        // Three kept (3, 4, 5): from the start, changes 1 and 2 are lost.
        assert!(!log.page(Some(&start), 100, |_| true).complete);
        let from_two = format!("{}.2", log.epoch);
        let page = log.page(Some(&from_two), 100, |_| true);
        assert!(page.complete);
        assert_eq!(page.changes, vec![at(3, 3), at(4, 4), at(5, 5)]);
    }

    #[test]
    fn changes_the_caller_may_not_see_are_skipped_but_passed() {
        let log = ChangeLog::new(10);
        let start = log.page(None, 100, |_| true).position;
        push(&log, 1);
        push(&log, 2);
        let page = log.page(Some(&start), 100, |c| c.key_id == change(2).key_id);
        assert_eq!(page.changes, vec![at(2, 2)]);
        assert!(log
            .page(Some(&page.position), 100, |_| true)
            .changes
            .is_empty());
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_first_change_or_the_deadline() {
        let log = std::sync::Arc::new(ChangeLog::new(10));
        let start = log.page(None, 100, |_| true).position;
        let quiet = log
            .wait(Some(&start), 100, Duration::from_millis(50), |_| true)
            .await;
        assert!(quiet.complete && quiet.changes.is_empty());
        let writer = log.clone();
        let waiter = tokio::spawn({
            let log = log.clone();
            let start = start.clone();
            async move {
                log.wait(Some(&start), 100, Duration::from_secs(30), |_| true)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.push(change(7), None);
        let page = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the change")
            .unwrap();
        let gone = Change {
            change: change(7),
            revision: None,
        };
        assert_eq!(page.changes, vec![gone]);
    }
}
