//! Read-after-write across engine replicas. Replicas share one store and each follows the
//! others' writes through the store's change stream, a moment late: a key created through one
//! replica can be asked for at another before that replica's watch has brought it (a client
//! whose next request lands on another pod behind the Service). Answering NotFoundException
//! for a key that exists would be wrong, so a request that failed after looking up a key this
//! engine does not hold asks the store for that key once and, if it turned up, runs again.
//!
//! The lookups note their misses in a task-local list that only the transport sets up (around
//! one request it can run again), rather than in a parameter of every operation: a miss is
//! found deep inside resolution, and only the layer that owns the request can retry it.

use std::cell::RefCell;
use std::future::Future;

use uuid::Uuid;

use super::Kms;
use crate::record::KeyId;

/// At most this many keys are looked for per request (ReEncrypt looks up two).
const MAX_PER_REQUEST: usize = 2;
/// How long a request waits for a lookup slot before its miss stands.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
/// Store lookups allowed per second. Keys another replica wrote within its watch's lag are
/// rare; this many a second is far above that and far below what would load the store.
pub const LOOKUPS_PER_SECOND: u32 = 50;

/// A budget of store lookups per second.
pub(super) struct LookupBudget {
    window: parking_lot::Mutex<(std::time::Instant, u32)>,
}

impl LookupBudget {
    pub(super) fn new() -> Self {
        Self {
            window: parking_lot::Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// One lookup from this second's budget, if any is left.
    fn take(&self) -> bool {
        let mut window = self.window.lock();
        if window.0.elapsed() >= std::time::Duration::from_secs(1) {
            *window = (std::time::Instant::now(), 0);
        }
        if window.1 >= LOOKUPS_PER_SECOND {
            return false;
        }
        window.1 += 1;
        true
    }
}

tokio::task_local! {
    static MISSED: RefCell<Vec<Uuid>>;
}

/// Note that a lookup did not find key `id` (a no-op outside [`Kms::with_catch_up`]).
pub(super) fn missed(id: Uuid) {
    let _ = MISSED.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < MAX_PER_REQUEST && !m.contains(&id) {
            m.push(id);
        }
    });
}

impl Kms {
    /// Run `request`; if `failed` says it failed and it looked up keys this engine does not
    /// hold, ask the store for them and run it once more if any was found. A request that
    /// missed a key failed at that lookup, before it changed anything, so running it again
    /// is safe.
    ///
    /// Store lookups are bounded, so a client naming random key ids cannot make the engine
    /// hammer the store: a few at once (a request waits briefly for its turn, and then first
    /// checks whether another request's lookup brought the key already, so a burst of
    /// requests for one new key costs at most a lookup per slot, and usually one), and a
    /// budget per second beyond which a miss stands.
    pub async fn with_catch_up<T, F, Fut>(&self, request: F, failed: impl Fn(&T) -> bool) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        // The engine request path: an engine alone on its store pays nothing for this.
        if !self.store.shared() {
            return request().await;
        }
        let (answer, missed) = MISSED
            .scope(RefCell::new(Vec::new()), async {
                let answer = request().await;
                (answer, MISSED.with(|m| m.take()))
            })
            .await;
        if missed.is_empty() || !failed(&answer) {
            return answer;
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, self.catch_up_slots.acquire()).await
        else {
            return answer;
        };
        let mut found = false;
        for id in missed {
            if self.tables.read().keys.contains_key(&id) {
                found = true;
                continue;
            }
            if !self.catch_up_budget.take() {
                tracing::debug!("key lookup budget spent this second: the miss stands");
                continue;
            }
            match self.store.catch_up_key(KeyId::from_uuid(id)).await {
                Ok(true) => found = true,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "cannot look for a key in the store"),
            }
        }
        if found {
            request().await
        } else {
            answer
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock, Weak};

    use async_trait::async_trait;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::json::{dispatch, Answer};
    use crate::clock::SystemClock;
    use crate::crypto::RootKey;
    use crate::error::Result;
    use crate::record::{AliasRecord, KeyRecord, Scope};
    use crate::service::tests::ctx;
    use crate::store::memory::MemoryStore;
    use crate::store::{KeyStore, Snapshot};
    use kubekms_proto::Operation;

    /// A replica's view of a shared memory store whose watch has not brought anything yet:
    /// a catch-up finds the record in the shared store and applies it as the watch would.
    struct Lagging {
        shared: Arc<MemoryStore>,
        engine: OnceLock<Weak<Kms>>,
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl KeyStore for Lagging {
        async fn load(&self) -> Result<Snapshot> {
            self.shared.load().await
        }
        async fn put_key(&self, key: &KeyRecord) -> Result<()> {
            self.shared.put_key(key).await
        }
        async fn delete_key(&self, scope: &Scope, key_id: KeyId) -> Result<()> {
            self.shared.delete_key(scope, key_id).await
        }
        async fn put_alias(&self, alias: &AliasRecord) -> Result<()> {
            self.shared.put_alias(alias).await
        }
        async fn delete_alias(&self, scope: &Scope, name: &str) -> Result<()> {
            self.shared.delete_alias(scope, name).await
        }
        fn shared(&self) -> bool {
            true
        }
        async fn catch_up_key(&self, key_id: KeyId) -> Result<bool> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let found = self
                .shared
                .load()
                .await?
                .keys
                .into_iter()
                .find(|k| k.key_id == key_id);
            let engine = self.engine.get().and_then(Weak::upgrade);
            match (found, engine) {
                (Some(record), Some(engine)) => engine.apply_stored_key(record).map(|()| true),
                _ => Ok(false),
            }
        }
    }

    async fn open(store: Arc<dyn KeyStore>) -> Arc<Kms> {
        let root = RootKey::from_bytes(&[7u8; 32]).unwrap();
        Kms::open(store, root, SystemClock::new()).await.unwrap()
    }

    async fn lagging_replica(shared: &Arc<MemoryStore>) -> (Arc<Kms>, Arc<Lagging>) {
        let store = Arc::new(Lagging {
            shared: shared.clone(),
            engine: OnceLock::new(),
            lookups: AtomicUsize::new(0),
        });
        let kms = open(store.clone()).await;
        let _ = store.engine.set(Arc::downgrade(&kms));
        (kms, store)
    }

    async fn call(kms: &Kms, op: Operation, body: Value, catch_up: bool) -> Answer {
        let caller = ctx("111122223333", "us-east-1");
        let body = body.to_string();
        let run = || dispatch(kms, &caller, op, body.as_bytes());
        if catch_up {
            kms.with_catch_up(run, |a| a.result.is_err()).await
        } else {
            run().await
        }
    }

    fn ok(answer: Answer) -> Value {
        match answer.result {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_key_another_replica_just_wrote_is_found_on_a_miss() {
        let shared = Arc::new(MemoryStore::new());
        let writer = open(shared.clone()).await;
        let (reader, store) = lagging_replica(&shared).await;
        let (decrypter, decrypter_store) = lagging_replica(&shared).await;

        let created = ok(call(&writer, Operation::CreateKey, json!({}), false).await);
        let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
        let encrypt = json!({ "KeyId": key_id, "Plaintext": "aGVsbG8=" });

        // Without the catch-up this replica does not know the key yet.
        let missed = call(&reader, Operation::Encrypt, encrypt.clone(), false).await;
        assert!(matches!(missed.result, Err(crate::KmsError::NotFound(_))));
        let blob = ok(call(&reader, Operation::Encrypt, encrypt, true).await);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
        // Found now: no more lookups.
        let describe = json!({ "KeyId": key_id });
        ok(call(&reader, Operation::DescribeKey, describe, true).await);
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);

        // A ciphertext names its key inside: a replica that does not know it yet finds it too.
        let decrypt = json!({ "CiphertextBlob": blob["CiphertextBlob"] });
        let plain = ok(call(&decrypter, Operation::Decrypt, decrypt, true).await);
        assert_eq!(plain["Plaintext"], "aGVsbG8=");
        assert_eq!(decrypter_store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_key_no_one_wrote_is_looked_for_once_and_still_not_found() {
        let shared = Arc::new(MemoryStore::new());
        let (reader, store) = lagging_replica(&shared).await;
        let unknown = json!({ "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab" });
        let answer = call(&reader, Operation::DescribeKey, unknown, true).await;
        assert!(matches!(answer.result, Err(crate::KmsError::NotFound(_))));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
        // A name that is no key id (an alias no one made) costs no lookup.
        let alias = json!({ "KeyId": "alias/none" });
        let answer = call(&reader, Operation::DescribeKey, alias, true).await;
        assert!(matches!(answer.result, Err(crate::KmsError::NotFound(_))));
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_burst_for_one_new_key_costs_one_lookup_and_random_ids_a_bounded_number() {
        let shared = Arc::new(MemoryStore::new());
        let writer = open(shared.clone()).await;
        let (reader, store) = lagging_replica(&shared).await;
        let created = ok(call(&writer, Operation::CreateKey, json!({}), false).await);
        let key_id = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
        let describe = json!({ "KeyId": key_id });
        let burst: Vec<_> = (0..8)
            .map(|_| call(&reader, Operation::DescribeKey, describe.clone(), true))
            .collect();
        for answer in futures_util::future::join_all(burst).await {
            ok(answer);
        }
        // This store answers without waiting, so the first lookup is done before the next
        // request has its slot: it finds the key held and looks no further.
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);

        // Ids no one wrote: at most a second's budget of lookups, the rest answered at once.
        for _ in 0..(LOOKUPS_PER_SECOND + 20) {
            let unknown = json!({ "KeyId": uuid::Uuid::new_v4().to_string() });
            let answer = call(&reader, Operation::DescribeKey, unknown, true).await;
            assert!(matches!(answer.result, Err(crate::KmsError::NotFound(_))));
        }
        assert!(store.lookups.load(Ordering::SeqCst) <= 1 + 2 * LOOKUPS_PER_SECOND as usize);
    }
}
