//! A pool of pre-generated RSA key pairs. RSA-4096 generation takes long enough to stall a
//! request, so background threads keep a few pairs of each size ready. A size's refill thread
//! starts on its first use: a server that never hands out RSA keys never burns CPU on them.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{rsa, KeyPairDer};
use crate::error::{KmsError, Result};
use crate::model::KeySpec;

/// Pairs kept ready per RSA size.
#[cfg(not(test))]
pub(crate) const TARGET: usize = 8;
/// Unit tests create many providers (an engine each); keep their pools from eating both CPUs.
#[cfg(test)]
pub(crate) const TARGET: usize = 2;

const SPECS: [KeySpec; 3] = [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096];

struct State {
    ready: Vec<KeyPairDer>,
    /// Raised by [`RsaPool::fill`] for a deployment that asks for a deeper pool.
    target: usize,
    refilling: bool,
    stopped: bool,
}

struct Slot {
    spec: KeySpec,
    state: Mutex<State>,
    wake: Condvar,
}

pub(crate) struct RsaPool {
    slots: Vec<Arc<Slot>>,
}

impl RsaPool {
    pub(crate) fn new(target: usize) -> Self {
        let slots = SPECS
            .iter()
            .map(|spec| {
                Arc::new(Slot {
                    spec: *spec,
                    state: Mutex::new(State {
                        ready: Vec::new(),
                        target,
                        refilling: false,
                        stopped: false,
                    }),
                    wake: Condvar::new(),
                })
            })
            .collect();
        Self { slots }
    }

    fn slot(&self, spec: KeySpec) -> Result<&Arc<Slot>> {
        self.slots
            .iter()
            .find(|s| s.spec == spec)
            .ok_or_else(|| KmsError::internal(format!("{spec} is not an RSA key spec")))
    }

    /// A never-before-handed-out pair; generated inline when the pool is empty.
    pub(crate) fn take(&self, spec: KeySpec) -> Result<KeyPairDer> {
        let slot = self.slot(spec)?;
        let taken = {
            let mut st = slot.state.lock();
            ensure_refilling(slot, &mut st);
            st.ready.pop()
        };
        slot.wake.notify_one();
        match taken {
            Some(pair) => Ok(pair),
            None => rsa::generate(spec),
        }
    }

    /// Start filling a size's pool now rather than at its first use.
    pub(crate) fn warm(&self, spec: KeySpec) {
        if let Ok(slot) = self.slot(spec) {
            ensure_refilling(slot, &mut slot.state.lock());
        }
    }

    /// Keep `target` pairs of a size ready from now on, and fill the pool before returning,
    /// on every core.
    pub(crate) fn fill(&self, spec: KeySpec, target: usize) -> Result<()> {
        let slot = self.slot(spec)?;
        slot.state.lock().target = target;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while {
                            let st = slot.state.lock();
                            st.ready.len() < st.target
                        } {
                            let pair = rsa::generate(spec)?;
                            slot.state.lock().ready.push(pair);
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| KmsError::internal("key pair generation thread failed"))?
            })
        })?;
        self.warm(spec);
        Ok(())
    }

    #[cfg(test)]
    fn ready(&self, spec: KeySpec) -> usize {
        self.slot(spec).map_or(0, |s| s.state.lock().ready.len())
    }
}

impl Drop for RsaPool {
    fn drop(&mut self) {
        for slot in &self.slots {
            slot.state.lock().stopped = true;
            slot.wake.notify_all();
        }
    }
}

/// Start the slot's refill thread unless it runs already (or the pool is stopping).
fn ensure_refilling(slot: &Arc<Slot>, st: &mut State) {
    if !st.refilling && !st.stopped {
        st.refilling = start_refill(slot);
    }
}

/// Returns whether a refill thread is now running; if the OS refuses a thread the pool simply
/// stays empty and every take generates inline.
fn start_refill(slot: &Arc<Slot>) -> bool {
    let slot = Arc::clone(slot);
    let name = format!("rsa-pool-{}", slot.spec);
    match std::thread::Builder::new()
        .name(name)
        .spawn(move || refill(&slot))
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not start RSA pool thread; generating inline");
            false
        }
    }
}

fn refill(slot: &Slot) {
    loop {
        {
            let mut st = slot.state.lock();
            while !st.stopped && st.ready.len() >= st.target {
                slot.wake.wait(&mut st);
            }
            if st.stopped {
                return;
            }
        }
        match rsa::generate(slot.spec) {
            Ok(pair) => {
                let mut st = slot.state.lock();
                if st.stopped {
                    return;
                }
                st.ready.push(pair);
            }
            Err(e) => {
                tracing::warn!(spec = %slot.spec, error = %e, "RSA pool generation failed");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyHandle;
    use std::collections::HashSet;
    use std::time::Instant;

    fn wait_for(pool: &RsaPool, spec: KeySpec, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while pool.ready(spec) < n {
            assert!(Instant::now() < deadline, "pool did not refill to {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn pool_refills_after_take_and_never_repeats() {
        let pool = RsaPool::new(2);
        assert_eq!(pool.ready(KeySpec::Rsa2048), 0);
        let mut seen = HashSet::new();
        // First take: pool empty, generated inline, refill thread started.
        seen.insert(pool.take(KeySpec::Rsa2048).unwrap().public);
        wait_for(&pool, KeySpec::Rsa2048, 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            pool.ready(KeySpec::Rsa2048),
            2,
            "refill must stop at the target"
        );
        for _ in 0..3 {
            let pair = pool.take(KeySpec::Rsa2048).unwrap();
            let prepared = crate::crypto::PreparedKey::new(
                KeySpec::Rsa2048,
                &crate::crypto::KeyMaterial::new(pair.private),
            )
            .unwrap();
            assert_eq!(prepared.public_key_der().unwrap(), pair.public);
            assert!(seen.insert(pair.public), "a pair was handed out twice");
        }
        wait_for(&pool, KeySpec::Rsa2048, 2);
        // Untouched sizes stay idle.
        assert_eq!(pool.ready(KeySpec::Rsa4096), 0);
        assert!(pool.take(KeySpec::EccNistP256).is_err());
    }
}
