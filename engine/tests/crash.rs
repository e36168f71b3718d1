//! Crash safety: SIGKILL the engine while clients create and rotate keys, restart it on the same
//! data directory, and check that nothing it acknowledged was lost.
//!
//! The engine acknowledges a change only after the store has made it durable, so after any kill
//! every acknowledged key must exist, every acknowledged rotation must be listed, and every
//! ciphertext it handed out must still decrypt.

// Test code: a panic is how a failed expectation is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use aws_sdk_kms::Client;

use common::Engine;

const ROUNDS: usize = 5;
const WORKERS: usize = 4;
/// AWS allows 25 on-demand rotations per key; attempts (acknowledged or not) stay well below.
const MAX_ROTATION_ATTEMPTS: u32 = 4;
/// Bounds each worker's calls in a round, in case the kill comes late.
const MAX_CALLS_PER_ROUND: usize = 400;
const TEST_BUDGET: Duration = Duration::from_secs(55);

#[derive(Clone, Default)]
struct KeyLedger {
    /// RotateKeyOnDemand calls sent, answered or not: the most rotations there can be.
    attempted: u32,
    /// RotateKeyOnDemand calls answered with success: the fewest there must be.
    acknowledged: u32,
}

#[derive(Clone, Default)]
struct Ledger {
    keys: HashMap<String, KeyLedger>,
    /// Key id, ciphertext, plaintext: every Encrypt the engine answered.
    ciphertexts: Vec<(String, Blob, Vec<u8>)>,
    /// Calls that failed before the kill: engine errors, not the crash.
    unexpected: Vec<String>,
    created_acks: usize,
    rotation_acks: usize,
}

/// xorshift64*, seeded from the system generator: enough to vary the interleavings.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        aws_lc_rs::rand::fill(&mut seed).unwrap();
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One client's stream of calls until the engine dies (or the round's call budget runs out).
/// True when the kill cut it off, i.e. it had calls in flight when the engine died.
async fn worker(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    killing: Arc<AtomicBool>,
    round: usize,
    id: usize,
) -> bool {
    let mut rng = Rng::new();
    for call in 0..MAX_CALLS_PER_ROUND {
        // Rotate an existing key about half the time, if one still has rotations to spare.
        let target = if rng.below(2) == 0 {
            let mut ledger = ledger.lock().unwrap();
            let candidates: Vec<String> = ledger
                .keys
                .iter()
                .filter(|(_, k)| k.attempted < MAX_ROTATION_ATTEMPTS)
                .map(|(id, _)| id.clone())
                .collect();
            if candidates.is_empty() {
                None
            } else {
                let key = candidates[rng.below(candidates.len() as u64) as usize].clone();
                if let Some(entry) = ledger.keys.get_mut(&key) {
                    entry.attempted += 1;
                }
                Some(key)
            }
        } else {
            None
        };

        let acked_key = match target {
            Some(key) => match client.rotate_key_on_demand().key_id(&key).send().await {
                Ok(_) => {
                    let mut ledger = ledger.lock().unwrap();
                    if let Some(entry) = ledger.keys.get_mut(&key) {
                        entry.acknowledged += 1;
                    }
                    ledger.rotation_acks += 1;
                    key
                }
                Err(e) => {
                    return note_failure(
                        &ledger,
                        &killing,
                        format!("RotateKeyOnDemand {key}: {e:?}"),
                    );
                }
            },
            None => match client
                .create_key()
                .description(format!("crash round {round} worker {id} call {call}"))
                .send()
                .await
            {
                Ok(out) => {
                    let key = out
                        .key_metadata()
                        .map(|m| m.key_id().to_string())
                        .expect("CreateKey answered without KeyMetadata");
                    let mut ledger = ledger.lock().unwrap();
                    ledger.keys.insert(key.clone(), KeyLedger::default());
                    ledger.created_acks += 1;
                    key
                }
                Err(e) => {
                    return note_failure(&ledger, &killing, format!("CreateKey: {e:?}"));
                }
            },
        };

        // A ciphertext under the key's newest version, which must survive the kill.
        let plaintext =
            format!("round {round} worker {id} call {call} key {acked_key}").into_bytes();
        match client
            .encrypt()
            .key_id(&acked_key)
            .plaintext(Blob::new(plaintext.clone()))
            .send()
            .await
        {
            Ok(out) => {
                let blob = out
                    .ciphertext_blob()
                    .expect("Encrypt without CiphertextBlob");
                ledger
                    .lock()
                    .unwrap()
                    .ciphertexts
                    .push((acked_key, blob.clone(), plaintext));
            }
            Err(e) => {
                return note_failure(&ledger, &killing, format!("Encrypt {acked_key}: {e:?}"));
            }
        }
    }
    false
}

/// A failure after the kill started is the crash itself; one before it is an engine error.
/// Returns whether it was the crash.
fn note_failure(ledger: &Mutex<Ledger>, killing: &AtomicBool, what: String) -> bool {
    if killing.load(Ordering::SeqCst) {
        return true;
    }
    ledger.lock().unwrap().unexpected.push(what);
    false
}

/// Everything acknowledged so far is there after the restart.
async fn check_survivors(client: &Client, ledger: &Ledger, round: usize) {
    for (key, expected) in &ledger.keys {
        let described = client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: acknowledged key {key} is gone: {e:?}"));
        assert_eq!(
            described.key_metadata().and_then(|m| m.key_state()),
            Some(&KeyState::Enabled),
            "round {round}: key {key}"
        );
        let rotations = client
            .list_key_rotations()
            .key_id(key)
            .limit(1000)
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: ListKeyRotations {key}: {e:?}"));
        assert!(!rotations.truncated());
        let listed = rotations.rotations().len() as u32;
        assert!(
            listed >= expected.acknowledged,
            "round {round}: key {key} lists {listed} rotations but {} were acknowledged",
            expected.acknowledged
        );
        assert!(
            listed <= expected.attempted,
            "round {round}: key {key} lists {listed} rotations but only {} were requested",
            expected.attempted
        );
    }

    let mut listed_keys = 0;
    let mut marker = None;
    loop {
        let page = client
            .list_keys()
            .limit(1000)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        listed_keys += page.keys().len();
        if !page.truncated() {
            break;
        }
        marker = page.next_marker().map(str::to_string);
    }
    assert!(
        listed_keys >= ledger.keys.len(),
        "round {round}: ListKeys shows {listed_keys} keys, {} were acknowledged",
        ledger.keys.len()
    );

    for (key, blob, plaintext) in &ledger.ciphertexts {
        let out = client
            .decrypt()
            .ciphertext_blob(blob.clone())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: a ciphertext under {key} no longer decrypts: {e:?}")
            });
        assert_eq!(
            out.plaintext().map(|p| p.as_ref()),
            Some(plaintext.as_slice()),
            "round {round}: ciphertext under {key} decrypts to something else"
        );
        assert!(out.key_id().is_some_and(|arn| arn.ends_with(key.as_str())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let started = Instant::now();
    let mut engine = Engine::start();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng::new();

    let result = tokio::time::timeout(TEST_BUDGET, async {
        for round in 1..=ROUNDS {
            let client = engine.client();
            // The first call on a client sets up its HTTP stack, and the first write after a
            // restart is slower than the rest: get both done before the clock starts, so the
            // kill lands among steady traffic. The key counts like any other.
            let warm = client
                .create_key()
                .description(format!("crash round {round} warm-up"))
                .send()
                .await
                .unwrap();
            {
                let mut ledger = ledger.lock().unwrap();
                let key = warm.key_metadata().unwrap().key_id().to_string();
                ledger.keys.insert(key, KeyLedger::default());
                ledger.created_acks += 1;
            }
            let killing = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> = (0..WORKERS)
                .map(|id| {
                    tokio::spawn(worker(
                        client.clone(),
                        ledger.clone(),
                        killing.clone(),
                        round,
                        id,
                    ))
                })
                .collect();

            let delay = Duration::from_millis(50 + rng.below(251));
            tokio::time::sleep(delay).await;
            // Flag first: every failure seen after this may be the kill.
            killing.store(true, Ordering::SeqCst);
            engine.kill();
            let mut cut_off = 0;
            for task in tasks {
                cut_off += usize::from(task.await.expect("worker panicked"));
            }

            engine.restart();
            let client = engine.client();
            // A copy, so the lock is not held while the checks await.
            let snapshot = ledger.lock().unwrap().clone();
            assert!(
                snapshot.unexpected.is_empty(),
                "round {round}: calls failed before the kill:\n{}",
                snapshot.unexpected.join("\n")
            );
            // Every worker was still sending when the engine died: the kill landed mid-traffic.
            assert_eq!(
                cut_off, WORKERS,
                "round {round}: not every worker was cut off by the kill"
            );
            eprintln!(
                "round {round}: killed after {delay:?}; {} keys, {} rotations, {} ciphertexts \
                 acknowledged so far",
                snapshot.created_acks,
                snapshot.rotation_acks,
                snapshot.ciphertexts.len()
            );
            check_survivors(&client, &snapshot, round).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the crash test did not finish within {TEST_BUDGET:?}; engine log:\n{}",
        engine.log_tail()
    );

    let ledger = ledger.lock().unwrap();
    // The test only means something if the kills landed among real traffic.
    assert!(ledger.created_acks > 0, "no key creation was acknowledged");
    assert!(ledger.rotation_acks > 0, "no rotation was acknowledged");
    assert!(started.elapsed() < Duration::from_secs(60));
}
