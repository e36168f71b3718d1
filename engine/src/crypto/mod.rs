//! Crypto, grouped by family. Everything that touches key material lives below this module.
//!
//! All primitives come from aws-lc-rs. RSA private-key operations in particular must not move
//! to RustCrypto `rsa` 0.9, which is exposed to the Marvin timing attack (RUSTSEC-2023-0071).

mod ecc;
mod hmac;
pub mod import;
mod pool;
mod provider;
mod rsa;
pub(crate) mod symmetric;
mod wrap;

use aws_lc_rs::digest;
use aws_lc_rs::signature::ParsedPublicKey;
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::model::{EncryptionAlgorithm, KeySpec, MacAlgorithm, MessageType, SigningAlgorithm};

pub use provider::{AwsLcProvider, KeyHandle, KeyProvider};
pub use wrap::RootKey;

/// AWS KMS refuses RAW messages longer than this for Sign and Verify.
pub const MAX_RAW_MESSAGE_LEN: usize = 4096;

/// Raw key material: 32 bytes for SYMMETRIC_DEFAULT, the key bytes for HMAC, PKCS#8 DER for
/// RSA and ECC. Zeroized on drop; deliberately no Debug, Clone-on-purpose only.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
    /// Copies the bytes into zeroizing storage; the caller still owns (and must wipe) `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The bytes themselves, moved out (no copy), still zeroized on drop.
    pub fn into_secret(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

/// Material from the provider the crypto unit tests share (one RSA pool for all of them).
#[cfg(test)]
pub(crate) fn generate_material(spec: KeySpec) -> Result<KeyMaterial> {
    test_provider().generate(spec)
}

#[cfg(test)]
pub(crate) fn test_provider() -> &'static AwsLcProvider {
    static PROVIDER: std::sync::OnceLock<AwsLcProvider> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(AwsLcProvider::new)
}

/// Cryptographically random bytes.
pub fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut out).map_err(|_| KmsError::internal("random generator failed"))?;
    Ok(out)
}

/// A data key pair from the test provider.
#[cfg(test)]
pub(crate) fn generate_data_key_pair(spec: KeySpec) -> Result<(KeyMaterial, Vec<u8>)> {
    test_provider().key_pair(spec)
}

/// A freshly generated asymmetric key in the two encodings AWS hands out.
pub(crate) struct KeyPairDer {
    pub(crate) private: Zeroizing<Vec<u8>>,
    pub(crate) public: Vec<u8>,
}

enum Inner {
    Symmetric(symmetric::AesGcmKey),
    Rsa(rsa::RsaPrivate),
    Ecc(ecc::EcPrivate),
    // hmac::Key embeds an HMAC_CTX (over a kilobyte); keep the enum small.
    Hmac(Box<hmac::MacKey>),
}

/// A key version parsed once and cached, ready for use.
pub struct PreparedKey {
    spec: KeySpec,
    inner: Inner,
}

// The service shares prepared keys across request tasks; fail the build, not production.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PreparedKey>();
    assert_send_sync::<RootKey>();
};

impl PreparedKey {
    /// Parse and validate material for a spec (rejects material of the wrong size/type with
    /// IncorrectKeyMaterial).
    pub fn new(spec: KeySpec, material: &KeyMaterial) -> Result<Self> {
        let bytes = material.expose();
        let inner = match spec {
            KeySpec::SymmetricDefault => Inner::Symmetric(symmetric::AesGcmKey::new(bytes)?),
            s if s.is_rsa() => Inner::Rsa(rsa::RsaPrivate::from_pkcs8(s, bytes)?),
            s if s.is_ecc() => Inner::Ecc(ecc::EcPrivate::from_pkcs8(s, bytes)?),
            s => Inner::Hmac(Box::new(hmac::MacKey::for_spec(s, bytes)?)),
        };
        Ok(Self { spec, inner })
    }

    fn wrong_family(&self, what: &str) -> KmsError {
        KmsError::InvalidKeyUsage(format!(
            "{what} is not supported for a key with key spec {}",
            self.spec
        ))
    }

    /// AES-256-GCM; returns nonce || ciphertext || tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(&mut out, aad, plaintext)?;
        Ok(out)
    }
}

/// The aws-lc-rs key is the default provider's [`KeyHandle`].
impl KeyHandle for PreparedKey {
    fn spec(&self) -> KeySpec {
        self.spec
    }

    /// As `seal`, appended to `out` (after a blob header, say) rather than copied there.
    fn seal_into(&self, out: &mut Vec<u8>, aad: &[u8], plaintext: &[u8]) -> Result<()> {
        match &self.inner {
            Inner::Symmetric(k) => k.seal_into(out, aad, plaintext),
            _ => Err(self.wrong_family("symmetric encryption")),
        }
    }

    /// Inverse of seal; any failure is InvalidCiphertext.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match &self.inner {
            Inner::Symmetric(k) => k.open(aad, sealed),
            _ => Err(self.wrong_family("symmetric decryption")),
        }
    }

    /// The largest plaintext AWS accepts for RSA encryption with `alg` (None for non-RSA keys
    /// or algorithms).
    fn max_rsa_plaintext(&self, alg: EncryptionAlgorithm) -> Option<usize> {
        match &self.inner {
            Inner::Rsa(k) => k.public().max_plaintext(alg),
            _ => None,
        }
    }

    fn rsa_encrypt(&self, alg: EncryptionAlgorithm, plaintext: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Rsa(k) => k.public().encrypt(alg, plaintext),
            _ => Err(self.wrong_family(alg.as_str())),
        }
    }

    fn rsa_decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        match &self.inner {
            Inner::Rsa(k) => k.decrypt(alg, ciphertext),
            _ => Err(self.wrong_family(alg.as_str())),
        }
    }

    fn sign(&self, alg: SigningAlgorithm, mt: MessageType, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Rsa(k) => k.sign(alg, mt, msg),
            Inner::Ecc(k) => k.sign(alg, mt, msg),
            _ => Err(self.wrong_family("signing")),
        }
    }

    /// Ok(false) when the signature does not verify; errors only for bad requests.
    fn verify(
        &self,
        alg: SigningAlgorithm,
        mt: MessageType,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<bool> {
        match &self.inner {
            Inner::Rsa(k) => k.public().verify(alg, mt, msg, sig),
            Inner::Ecc(k) => k.public().verify(alg, mt, msg, sig),
            _ => Err(self.wrong_family("signature verification")),
        }
    }

    fn generate_mac(&self, alg: MacAlgorithm, msg: &[u8]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Hmac(k) => k.check_alg(alg).map(|()| k.sign(msg)),
            _ => Err(self.wrong_family(alg.as_str())),
        }
    }

    /// Compares in constant time; Ok(false) when the MAC does not match.
    fn verify_mac(&self, alg: MacAlgorithm, msg: &[u8], mac: &[u8]) -> Result<bool> {
        match &self.inner {
            Inner::Hmac(k) => k.check_alg(alg).map(|()| k.verify(msg, mac)),
            _ => Err(self.wrong_family(alg.as_str())),
        }
    }

    /// DER SubjectPublicKeyInfo, for asymmetric keys.
    fn public_key_der(&self) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Rsa(k) => Ok(k.public().spki().to_vec()),
            Inner::Ecc(k) => Ok(k.public().spki().to_vec()),
            _ => Err(KmsError::UnsupportedOperation(format!(
                "a key with key spec {} has no public key",
                self.spec
            ))),
        }
    }
}

/// A signing request's message, checked against AWS's limits and ready for aws-lc-rs.
pub(crate) enum SignInput<'a> {
    Raw(&'a [u8]),
    Digest(digest::Digest),
}

pub(crate) fn sign_input(
    alg: SigningAlgorithm,
    mt: MessageType,
    msg: &[u8],
) -> Result<SignInput<'_>> {
    match mt {
        MessageType::Raw => {
            if msg.len() > MAX_RAW_MESSAGE_LEN {
                return Err(KmsError::validation(format!(
                    "a RAW message must be at most {MAX_RAW_MESSAGE_LEN} bytes"
                )));
            }
            Ok(SignInput::Raw(msg))
        }
        MessageType::Digest => {
            let want = alg.digest_len();
            let d = digest::Digest::import_less_safe(msg, digest_algorithm(alg)).map_err(|_| {
                KmsError::validation(format!(
                    "a DIGEST message for {alg} must be exactly {want} bytes"
                ))
            })?;
            Ok(SignInput::Digest(d))
        }
    }
}

/// Check a signature with a public key parsed for `alg`; Ok(false) when it does not verify.
pub(crate) fn verify_with(
    key: &ParsedPublicKey,
    alg: SigningAlgorithm,
    mt: MessageType,
    msg: &[u8],
    sig: &[u8],
) -> Result<bool> {
    let ok = match sign_input(alg, mt, msg)? {
        SignInput::Raw(m) => key.verify_sig(m, sig),
        SignInput::Digest(d) => key.verify_digest_sig(&d, sig),
    };
    Ok(ok.is_ok())
}

fn digest_algorithm(alg: SigningAlgorithm) -> &'static digest::Algorithm {
    match alg.digest_len() {
        32 => &digest::SHA256,
        48 => &digest::SHA384,
        _ => &digest::SHA512,
    }
}

pub(crate) fn not_for_spec(alg: impl std::fmt::Display, spec: KeySpec) -> KmsError {
    KmsError::InvalidKeyUsage(format!(
        "{alg} is not a valid algorithm for a key with key spec {spec}"
    ))
}

/// Interoperability with the tools AWS users hold: openssl and Python `cryptography` (from the
/// test venv that `e2e/scripts/setup.sh` makes, `$KUBEKMS_VENV`).
#[cfg(test)]
mod interop {
    use super::*;
    use crate::model::{KeyUsage, WrappingAlgorithm, WrappingKeySpec};
    use std::path::Path;
    use std::process::Command;

    fn run(cmd: &mut Command) -> Vec<u8> {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
        run(Command::new("openssl").args(args).current_dir(dir))
    }

    /// RSAES-OAEP of the file `input` under `wrap.der`, with `md` for both OAEP and MGF1.
    fn oaep_encrypt(input: &str, md: &str, dir: &Path) -> Vec<u8> {
        let oaep_md = format!("rsa_oaep_md:{md}");
        let mgf1_md = format!("rsa_mgf1_md:{md}");
        openssl(
            &[
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-inkey",
                "wrap.der",
                "-keyform",
                "DER",
                "-in",
                input,
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                &oaep_md,
                "-pkeyopt",
                &mgf1_md,
            ],
            dir,
        )
    }

    fn python() -> Command {
        let venv = std::env::var("KUBEKMS_VENV")
            .unwrap_or_else(|_| "/root/.cache/kubekms-venv".to_string());
        Command::new(Path::new(&venv).join("bin/python"))
    }

    #[test]
    fn public_keys_and_signatures_verify_in_openssl_and_python() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("msg"), b"interop message").unwrap();
        let specs = [
            KeySpec::Rsa2048,
            KeySpec::Rsa3072,
            KeySpec::EccNistP256,
            KeySpec::EccNistP384,
            KeySpec::EccNistP521,
            KeySpec::EccSecgP256k1,
        ];
        let mut verified = 0;
        for spec in specs {
            let key = PreparedKey::new(spec, &generate_material(spec).unwrap()).unwrap();
            std::fs::write(d.join("pub.der"), key.public_key_der().unwrap()).unwrap();
            openssl(
                &[
                    "pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-out", "pub.pem",
                ],
                d,
            );
            for alg in spec.signing_algorithms(KeyUsage::SignVerify) {
                let sig = key
                    .sign(*alg, MessageType::Raw, b"interop message")
                    .unwrap();
                std::fs::write(d.join("sig"), &sig).unwrap();
                let md = format!("-sha{}", alg.digest_len() * 8);
                let mut args = vec!["dgst", md.as_str(), "-verify", "pub.pem"];
                if alg.as_str().starts_with("RSASSA_PSS") {
                    args.extend([
                        "-sigopt",
                        "rsa_padding_mode:pss",
                        "-sigopt",
                        "rsa_pss_saltlen:digest",
                    ]);
                }
                args.extend(["-signature", "sig", "msg"]);
                openssl(&args, d);
                let py = "from cryptography.hazmat.primitives import serialization as s\n\
                          from cryptography.hazmat.primitives.asymmetric import ec, rsa\n\
                          k = s.load_der_public_key(open('pub.der','rb').read())\n\
                          if isinstance(k, rsa.RSAPublicKey): print('rsa', k.key_size)\n\
                          elif isinstance(k, ec.EllipticCurvePublicKey): print('ec', k.curve.name)";
                let out = run(python().args(["-c", py]).current_dir(d));
                let expected = match spec {
                    KeySpec::Rsa2048 => "rsa 2048",
                    KeySpec::Rsa3072 => "rsa 3072",
                    KeySpec::EccNistP256 => "ec secp256r1",
                    KeySpec::EccNistP384 => "ec secp384r1",
                    KeySpec::EccNistP521 => "ec secp521r1",
                    _ => "ec secp256k1",
                };
                assert_eq!(String::from_utf8_lossy(&out).trim(), expected, "{spec}");
                verified += 1;
            }
        }
        assert_eq!(verified, 2 * 6 + 4);
    }

    /// The exact steps of the AWS "Encrypt key material with OpenSSL" guide.
    #[test]
    fn openssl_wrapped_import_material_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (private, spki) =
            import::generate_wrapping_key(test_provider(), WrappingKeySpec::Rsa2048).unwrap();
        std::fs::write(d.join("wrap.der"), &spki).unwrap();
        let ec = generate_material(KeySpec::EccNistP256).unwrap();
        std::fs::write(d.join("material.bin"), ec.expose()).unwrap();
        let aes = random_bytes(32).unwrap();
        std::fs::write(d.join("aes.bin"), &*aes).unwrap();
        let hex_key: String = aes.iter().map(|b| format!("{b:02x}")).collect();
        for (alg, md) in [
            (WrappingAlgorithm::RsaAesKeyWrapSha256, "sha256"),
            (WrappingAlgorithm::RsaAesKeyWrapSha1, "sha1"),
        ] {
            let mut blob = oaep_encrypt("aes.bin", md, d);
            blob.extend(openssl(
                &[
                    "enc",
                    "-id-aes256-wrap-pad",
                    "-K",
                    &hex_key,
                    "-iv",
                    "A65959A6",
                    "-in",
                    "material.bin",
                ],
                d,
            ));
            let got = import::unwrap_imported(&private, alg, &blob).unwrap();
            assert_eq!(got.expose(), ec.expose());
        }
        let sym = generate_material(KeySpec::SymmetricDefault).unwrap();
        std::fs::write(d.join("sym.bin"), sym.expose()).unwrap();
        let blob = oaep_encrypt("sym.bin", "sha256", d);
        let got =
            import::unwrap_imported(&private, WrappingAlgorithm::RsaesOaepSha256, &blob).unwrap();
        assert_eq!(got.expose(), sym.expose());
    }
}
