//! Request ids: UUID-shaped, as AWS's are, and unique within the process: a random start drawn
//! once and a counter, mixed by a bijection so consecutive ids do not look sequential. Unlike a
//! random UUID per request, this asks the kernel for nothing on the request path.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct RequestIds {
    seed: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        // Ids need to be unique, not secret: should the random source fail, the clock will do.
        let seed = crate::crypto::random_bytes(8)
            .ok()
            .and_then(|b| b.as_slice().try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        Self {
            seed,
            next: AtomicU64::new(0),
        }
    }

    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // splitmix64 is a bijection of u64: distinct counters give distinct `hi`.
        let hi = splitmix64(self.seed.wrapping_add(n));
        let lo = splitmix64(hi ^ self.seed.rotate_left(29));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        // Encoded into a buffer rather than through `Display`, whose formatting machinery
        // showed in profiles of every request.
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut text)
            .to_owned()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_and_distinct() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert!(seen.insert(id));
        }
    }
}
