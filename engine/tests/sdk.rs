//! Every KMS operation the engine serves, driven through the real `aws-sdk-kms` client against
//! the real `kubekms-engine` binary, with failures checked by the SDK's typed errors.
//!
//! Where the result can be checked independently it is: signatures and public-key encryption
//! with aws-lc-rs from the public key the engine hands out, MACs against locally computed
//! HMACs of imported material.

// Test code: a panic is how a failed expectation is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use aws_lc_rs::signature::{self, KeyPair, UnparsedPublicKey};
use aws_lc_rs::{digest, hmac};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::create_alias::CreateAliasError;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::describe_key::DescribeKeyError;
use aws_sdk_kms::operation::encrypt::EncryptError;
use aws_sdk_kms::operation::get_key_policy::GetKeyPolicyError;
use aws_sdk_kms::operation::get_public_key::GetPublicKeyError;
use aws_sdk_kms::operation::import_key_material::ImportKeyMaterialError;
use aws_sdk_kms::operation::list_keys::ListKeysError;
use aws_sdk_kms::operation::put_key_policy::PutKeyPolicyError;
use aws_sdk_kms::operation::re_encrypt::ReEncryptError;
use aws_sdk_kms::operation::rotate_key_on_demand::RotateKeyOnDemandError;
use aws_sdk_kms::operation::sign::SignError;
use aws_sdk_kms::operation::tag_resource::TagResourceError;
use aws_sdk_kms::operation::verify::VerifyError;
use aws_sdk_kms::operation::verify_mac::VerifyMacError;
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, DataKeyPairSpec, DataKeySpec, EncryptionAlgorithmSpec, ExpirationModelType,
    KeyManagerType, KeySpec, KeyState, KeyUsageType, MacAlgorithmSpec, MessageType, OriginType,
    RotationType, SigningAlgorithmSpec, Tag, WrappingKeySpec,
};
use aws_sdk_kms::Client;

use common::{Engine, ACCOUNT, REGION};

fn ctx(pairs: &[(&str, &str)]) -> Option<std::collections::HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn random32() -> [u8; 32] {
    let mut out = [0u8; 32];
    aws_lc_rs::rand::fill(&mut out).unwrap();
    out
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn secs(t: &DateTime) -> f64 {
    t.as_secs_f64()
}

async fn create_key(client: &Client, spec: KeySpec, usage: KeyUsageType) -> String {
    client
        .create_key()
        .key_spec(spec.clone())
        .key_usage(usage)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateKey {spec}: {e:?}"))
        .key_metadata()
        .unwrap()
        .key_id()
        .to_string()
}

async fn create_symmetric(client: &Client) -> String {
    create_key(
        client,
        KeySpec::SymmetricDefault,
        KeyUsageType::EncryptDecrypt,
    )
    .await
}

async fn encrypt(client: &Client, key: &str, plaintext: &[u8]) -> Blob {
    client
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(plaintext))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone()
}

async fn decrypt(client: &Client, blob: &Blob) -> Vec<u8> {
    client
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .unwrap()
        .plaintext()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The service error of a Decrypt that must fail.
async fn decrypt_error(
    client: &Client,
    blob: Blob,
    context: Option<std::collections::HashMap<String, String>>,
) -> DecryptError {
    client
        .decrypt()
        .ciphertext_blob(blob)
        .set_encryption_context(context)
        .send()
        .await
        .unwrap_err()
        .into_service_error()
}

async fn key_state(client: &Client, key: &str) -> KeyState {
    client
        .describe_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .key_state()
        .unwrap()
        .clone()
}

async fn public_key(client: &Client, key: &str) -> Vec<u8> {
    client
        .get_public_key()
        .key_id(key)
        .send()
        .await
        .unwrap()
        .public_key()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn oaep_encrypt(spki: &[u8], alg: &'static OaepAlgorithm, plaintext: &[u8]) -> Vec<u8> {
    let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki).unwrap()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key.encrypt(alg, plaintext, &mut out, None).unwrap().len();
    out.truncate(n);
    out
}

/// The aws-lc-rs verifier for a KMS signing algorithm on a key spec.
fn local_verifier(
    spec: &KeySpec,
    alg: &SigningAlgorithmSpec,
) -> &'static dyn signature::VerificationAlgorithm {
    match (spec, alg) {
        (KeySpec::EccNistP256, SigningAlgorithmSpec::EcdsaSha256) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        (KeySpec::EccSecgP256K1, SigningAlgorithmSpec::EcdsaSha256) => {
            &signature::ECDSA_P256K1_SHA256_ASN1
        }
        (KeySpec::EccNistP384, SigningAlgorithmSpec::EcdsaSha384) => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        (KeySpec::EccNistP521, SigningAlgorithmSpec::EcdsaSha512) => {
            &signature::ECDSA_P521_SHA512_ASN1
        }
        (_, SigningAlgorithmSpec::RsassaPkcs1V15Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (_, SigningAlgorithmSpec::RsassaPkcs1V15Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (_, SigningAlgorithmSpec::RsassaPkcs1V15Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (_, SigningAlgorithmSpec::RsassaPssSha256) => &signature::RSA_PSS_2048_8192_SHA256,
        (_, SigningAlgorithmSpec::RsassaPssSha384) => &signature::RSA_PSS_2048_8192_SHA384,
        (_, SigningAlgorithmSpec::RsassaPssSha512) => &signature::RSA_PSS_2048_8192_SHA512,
        other => panic!("no local verifier for {other:?}"),
    }
}

fn digest_for(alg: &SigningAlgorithmSpec) -> &'static digest::Algorithm {
    match alg {
        SigningAlgorithmSpec::RsassaPkcs1V15Sha256
        | SigningAlgorithmSpec::RsassaPssSha256
        | SigningAlgorithmSpec::EcdsaSha256 => &digest::SHA256,
        SigningAlgorithmSpec::RsassaPkcs1V15Sha384
        | SigningAlgorithmSpec::RsassaPssSha384
        | SigningAlgorithmSpec::EcdsaSha384 => &digest::SHA384,
        _ => &digest::SHA512,
    }
}

const ALL_RSA_SIGNING: [SigningAlgorithmSpec; 6] = [
    SigningAlgorithmSpec::RsassaPssSha256,
    SigningAlgorithmSpec::RsassaPssSha384,
    SigningAlgorithmSpec::RsassaPssSha512,
    SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
    SigningAlgorithmSpec::RsassaPkcs1V15Sha384,
    SigningAlgorithmSpec::RsassaPkcs1V15Sha512,
];

fn sorted<T: ToString>(items: &[T]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

/// Sign `message` (RAW) with KMS, verify it with KMS and locally from the public key.
async fn sign_and_check(client: &Client, key: &str, spec: &KeySpec, alg: &SigningAlgorithmSpec) {
    let message = format!("message for {spec} {alg}").into_bytes();
    let spki = public_key(client, key).await;
    let signed = client
        .sign()
        .key_id(key)
        .message(Blob::new(message.clone()))
        .message_type(MessageType::Raw)
        .signing_algorithm(alg.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("Sign {spec} {alg}: {e:?}"));
    assert_eq!(
        signed.key_id(),
        Some(format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}").as_str())
    );
    assert_eq!(signed.signing_algorithm(), Some(alg));
    let sig = signed.signature().unwrap().as_ref().to_vec();
    UnparsedPublicKey::new(local_verifier(spec, alg), &spki)
        .verify(&message, &sig)
        .unwrap_or_else(|_| panic!("local verification of a KMS {spec} {alg} signature"));
    let verified = client
        .verify()
        .key_id(key)
        .message(Blob::new(message.clone()))
        .signature(Blob::new(sig))
        .signing_algorithm(alg.clone())
        .send()
        .await
        .unwrap();
    assert!(verified.signature_valid());
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_describe_and_list_every_key_spec() {
    let engine = Engine::start();
    let client = engine.client();
    let started = now_secs();

    // No KeySpec and no KeyUsage: a symmetric encryption key.
    let default = client.create_key().send().await.unwrap();
    let meta = default.key_metadata().unwrap();
    assert_eq!(meta.key_spec(), Some(&KeySpec::SymmetricDefault));
    assert_eq!(meta.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    let mut created = vec![meta.key_id().to_string()];

    let cases = [
        (KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa2048, KeyUsageType::SignVerify),
        (KeySpec::Rsa3072, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa3072, KeyUsageType::SignVerify),
        (KeySpec::Rsa4096, KeyUsageType::EncryptDecrypt),
        (KeySpec::Rsa4096, KeyUsageType::SignVerify),
        (KeySpec::EccNistP256, KeyUsageType::SignVerify),
        (KeySpec::EccNistP384, KeyUsageType::SignVerify),
        (KeySpec::EccNistP521, KeyUsageType::SignVerify),
        (KeySpec::EccSecgP256K1, KeyUsageType::SignVerify),
        (KeySpec::Hmac224, KeyUsageType::GenerateVerifyMac),
        (KeySpec::Hmac256, KeyUsageType::GenerateVerifyMac),
        (KeySpec::Hmac384, KeyUsageType::GenerateVerifyMac),
        (KeySpec::Hmac512, KeyUsageType::GenerateVerifyMac),
    ];
    for (spec, usage) in cases {
        let description = format!("{spec} for {usage}");
        let out = client
            .create_key()
            .key_spec(spec.clone())
            .key_usage(usage.clone())
            .description(&description)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateKey {spec}/{usage}: {e:?}"));
        let meta = out.key_metadata().unwrap().clone();
        let id = meta.key_id().to_string();
        assert_eq!(meta.arn(), Some(engine.key_arn(&id).as_str()));
        assert_eq!(meta.aws_account_id(), Some(ACCOUNT));
        assert_eq!(meta.key_spec(), Some(&spec));
        assert_eq!(meta.key_usage(), Some(&usage));
        assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
        assert!(meta.enabled());
        assert_eq!(meta.origin(), Some(&OriginType::AwsKms));
        assert_eq!(meta.key_manager(), Some(&KeyManagerType::Customer));
        assert_eq!(meta.description(), Some(description.as_str()));
        let created_at = secs(meta.creation_date().unwrap());
        assert!(
            created_at >= started - 5.0 && created_at <= now_secs() + 5.0,
            "CreationDate {created_at} is not now ({started})"
        );
        let (enc, sig, mac): (Vec<&str>, Vec<&str>, Vec<&str>) = match (&spec, &usage) {
            (KeySpec::SymmetricDefault, _) => (vec!["SYMMETRIC_DEFAULT"], vec![], vec![]),
            (_, KeyUsageType::EncryptDecrypt) => (
                vec!["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"],
                vec![],
                vec![],
            ),
            (KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096, _) => (
                vec![],
                ALL_RSA_SIGNING.iter().map(|a| a.as_str()).collect(),
                vec![],
            ),
            (KeySpec::EccNistP256 | KeySpec::EccSecgP256K1, _) => {
                (vec![], vec!["ECDSA_SHA_256"], vec![])
            }
            (KeySpec::EccNistP384, _) => (vec![], vec!["ECDSA_SHA_384"], vec![]),
            (KeySpec::EccNistP521, _) => (vec![], vec!["ECDSA_SHA_512"], vec![]),
            (KeySpec::Hmac224, _) => (vec![], vec![], vec!["HMAC_SHA_224"]),
            (KeySpec::Hmac256, _) => (vec![], vec![], vec!["HMAC_SHA_256"]),
            (KeySpec::Hmac384, _) => (vec![], vec![], vec!["HMAC_SHA_384"]),
            (KeySpec::Hmac512, _) => (vec![], vec![], vec!["HMAC_SHA_512"]),
            other => panic!("unexpected case {other:?}"),
        };
        assert_eq!(sorted(meta.encryption_algorithms()), sorted(&enc), "{spec}");
        assert_eq!(sorted(meta.signing_algorithms()), sorted(&sig), "{spec}");
        assert_eq!(sorted(meta.mac_algorithms()), sorted(&mac), "{spec}");

        let described = client.describe_key().key_id(&id).send().await.unwrap();
        assert_eq!(described.key_metadata(), Some(&meta), "DescribeKey {spec}");
        let by_arn = client
            .describe_key()
            .key_id(engine.key_arn(&id))
            .send()
            .await
            .unwrap();
        assert_eq!(by_arn.key_metadata(), Some(&meta));

        // The material works for its usage.
        match (&spec, &usage) {
            (_, KeyUsageType::EncryptDecrypt) if spec == KeySpec::SymmetricDefault => {
                let blob = encrypt(&client, &id, b"hello").await;
                assert_eq!(decrypt(&client, &blob).await, b"hello");
            }
            (_, KeyUsageType::EncryptDecrypt) => {
                let blob = client
                    .encrypt()
                    .key_id(&id)
                    .plaintext(Blob::new("rsa hello"))
                    .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
                    .send()
                    .await
                    .unwrap()
                    .ciphertext_blob()
                    .unwrap()
                    .clone();
                let out = client
                    .decrypt()
                    .key_id(&id)
                    .ciphertext_blob(blob)
                    .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(out.plaintext().unwrap().as_ref(), b"rsa hello");
            }
            (_, KeyUsageType::SignVerify) => {
                let alg = SigningAlgorithmSpec::from(sig[0]);
                sign_and_check(&client, &id, &spec, &alg).await;
            }
            (_, KeyUsageType::GenerateVerifyMac) => {
                let alg = MacAlgorithmSpec::from(mac[0]);
                let out = client
                    .generate_mac()
                    .key_id(&id)
                    .message(Blob::new("m"))
                    .mac_algorithm(alg.clone())
                    .send()
                    .await
                    .unwrap();
                let ok = client
                    .verify_mac()
                    .key_id(&id)
                    .message(Blob::new("m"))
                    .mac_algorithm(alg)
                    .mac(out.mac().unwrap().clone())
                    .send()
                    .await
                    .unwrap();
                assert!(ok.mac_valid());
            }
            other => panic!("unexpected case {other:?}"),
        }
        created.push(id);
    }

    // Usages a spec does not allow.
    for (spec, usage) in [
        (KeySpec::SymmetricDefault, KeyUsageType::SignVerify),
        (KeySpec::EccNistP256, KeyUsageType::EncryptDecrypt),
        (KeySpec::Hmac256, KeyUsageType::EncryptDecrypt),
    ] {
        let err = client
            .create_key()
            .key_spec(spec.clone())
            .key_usage(usage.clone())
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "{spec}/{usage}: {err:?}"
        );
    }

    // ListKeys, three at a time: every key exactly once.
    let mut listed = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_keys()
            .limit(3)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(page.keys().len() <= 3);
        for k in page.keys() {
            let id = k.key_id().unwrap().to_string();
            assert_eq!(k.key_arn(), Some(engine.key_arn(&id).as_str()));
            listed.push(id);
        }
        if page.truncated() {
            marker = Some(
                page.next_marker()
                    .expect("NextMarker when truncated")
                    .to_string(),
            );
        } else {
            assert!(page.next_marker().is_none());
            break;
        }
        assert!(pages < 100, "ListKeys does not terminate");
    }
    assert_eq!(pages, created.len().div_ceil(3));
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a key listed twice");
    let mut a = listed.clone();
    a.sort();
    let mut b = created.clone();
    b.sort();
    assert_eq!(a, b);

    // The SDK's own paginator sees the same keys.
    let via_paginator: Vec<String> = client
        .list_keys()
        .limit(4)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id().unwrap().to_string())
        .collect();
    assert_eq!(via_paginator.len(), created.len());

    let err = client
        .list_keys()
        .marker("not-a-marker")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, ListKeysError::InvalidMarkerException(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn key_lifecycle_disable_enable_delete_cancel() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;
    let blob = encrypt(&client, &key, b"before").await;

    client
        .update_key_description()
        .key_id(&key)
        .description("new words")
        .send()
        .await
        .unwrap();
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        meta.key_metadata().unwrap().description(),
        Some("new words")
    );

    client.disable_key().key_id(&key).send().await.unwrap();
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        meta.key_metadata().unwrap().key_state(),
        Some(&KeyState::Disabled)
    );
    assert!(!meta.key_metadata().unwrap().enabled());
    let err = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_disabled_exception(), "{err:?}");
    let err = decrypt_error(&client, blob.clone(), None).await;
    assert!(err.is_disabled_exception(), "{err:?}");

    client.enable_key().key_id(&key).send().await.unwrap();
    assert_eq!(key_state(&client, &key).await, KeyState::Enabled);
    assert_eq!(decrypt(&client, &blob).await, b"before");

    // Out-of-range waiting periods.
    for days in [6, 31] {
        let err = client
            .schedule_key_deletion()
            .key_id(&key)
            .pending_window_in_days(days)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "{days} days: {err:?}"
        );
    }

    let scheduled = client
        .schedule_key_deletion()
        .key_id(&key)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(scheduled.key_id(), Some(engine.key_arn(&key).as_str()));
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(scheduled.pending_window_in_days(), Some(7));
    let due = secs(scheduled.deletion_date().unwrap());
    let expected = now_secs() + 7.0 * 86400.0;
    assert!(
        (due - expected).abs() < 120.0,
        "DeletionDate {due}, expected about {expected}"
    );
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::PendingDeletion));
    assert!(meta.deletion_date().is_some());

    let err = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");
    let err = decrypt_error(&client, blob.clone(), None).await;
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");
    let err = client
        .enable_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");
    let err = client
        .schedule_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");

    // Cancelling leaves the key disabled, as AWS does.
    let cancelled = client
        .cancel_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.key_id(), Some(engine.key_arn(&key).as_str()));
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Disabled));
    assert!(meta.deletion_date().is_none());
    let err = client
        .cancel_key_deletion()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");
    client.enable_key().key_id(&key).send().await.unwrap();
    assert_eq!(decrypt(&client, &blob).await, b"before");
}

#[tokio::test]
async fn encrypt_decrypt_reencrypt_with_context() {
    let engine = Engine::start();
    let client = engine.client();
    let a = create_symmetric(&client).await;
    let b = create_symmetric(&client).await;
    let context = ctx(&[("tenant", "blue"), ("purpose", "test")]);

    let out = client
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new("secret payload"))
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.key_id(), Some(engine.key_arn(&a).as_str()));
    assert_eq!(
        out.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    let blob = out.ciphertext_blob().unwrap().clone();

    // Without KeyId the blob names its key, and the answer carries the full ARN.
    let plain = client
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"secret payload");
    assert_eq!(plain.key_id(), Some(engine.key_arn(&a).as_str()));
    assert_eq!(
        plain.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );

    // Context order does not matter.
    let reordered = client
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(ctx(&[("purpose", "test"), ("tenant", "blue")]))
        .key_id(engine.key_arn(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(reordered.plaintext().unwrap().as_ref(), b"secret payload");

    // Wrong, partial and missing contexts.
    for bad in [
        ctx(&[("tenant", "red"), ("purpose", "test")]),
        ctx(&[("tenant", "blue")]),
        ctx(&[("tenant", "blue"), ("purpose", "test"), ("extra", "1")]),
        None,
    ] {
        let err = decrypt_error(&client, blob.clone(), bad.clone()).await;
        assert!(
            matches!(err, DecryptError::InvalidCiphertextException(_)),
            "context {bad:?}: {err:?}"
        );
    }

    // Every single-bit flip anywhere in the blob is caught.
    let bytes = blob.as_ref().to_vec();
    for i in [
        0,
        1,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 17,
        bytes.len() - 1,
    ] {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        let err = decrypt_error(&client, Blob::new(tampered), context.clone()).await;
        assert!(
            matches!(err, DecryptError::InvalidCiphertextException(_)),
            "byte {i} flipped: {err:?}"
        );
    }
    let err = decrypt_error(
        &client,
        Blob::new(&bytes[..bytes.len() - 1]),
        context.clone(),
    )
    .await;
    assert!(
        matches!(err, DecryptError::InvalidCiphertextException(_)),
        "{err:?}"
    );

    // Naming another key than the blob's.
    let err = client
        .decrypt()
        .ciphertext_blob(blob.clone())
        .set_encryption_context(context.clone())
        .key_id(&b)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_incorrect_key_exception(), "{err:?}");

    // Plaintext: 4096 bytes is the most, and empty is refused.
    let max = encrypt(&client, &a, &[7u8; 4096]).await;
    assert_eq!(decrypt(&client, &max).await, vec![7u8; 4096]);
    let err = client
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new(vec![7u8; 4097]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let err = client
        .encrypt()
        .key_id(&a)
        .plaintext(Blob::new(Vec::new()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");

    // ReEncrypt from a (context 1) to b (context 2).
    let context2 = ctx(&[("tenant", "green")]);
    let re = client
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .set_source_encryption_context(context.clone())
        .destination_key_id(&b)
        .set_destination_encryption_context(context2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(re.source_key_id(), Some(engine.key_arn(&a).as_str()));
    assert_eq!(re.key_id(), Some(engine.key_arn(&b).as_str()));
    let reblob = re.ciphertext_blob().unwrap().clone();
    assert_ne!(reblob.as_ref(), blob.as_ref());
    let plain = client
        .decrypt()
        .ciphertext_blob(reblob.clone())
        .set_encryption_context(context2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"secret payload");
    assert_eq!(plain.key_id(), Some(engine.key_arn(&b).as_str()));
    let err = decrypt_error(&client, reblob, context.clone()).await;
    assert!(
        matches!(err, DecryptError::InvalidCiphertextException(_)),
        "{err:?}"
    );

    // ReEncrypt with the wrong source context fails like Decrypt.
    let err = client
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .destination_key_id(&b)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, ReEncryptError::InvalidCiphertextException(_)),
        "{err:?}"
    );

    // A disabled destination refuses.
    client.disable_key().key_id(&b).send().await.unwrap();
    let err = client
        .re_encrypt()
        .ciphertext_blob(blob.clone())
        .set_source_encryption_context(context.clone())
        .destination_key_id(&b)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_disabled_exception(), "{err:?}");
}

#[tokio::test]
async fn rsa_encryption_interoperates_with_aws_lc() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_key(&client, KeySpec::Rsa2048, KeyUsageType::EncryptDecrypt).await;
    let described = client.get_public_key().key_id(&key).send().await.unwrap();
    assert_eq!(described.key_spec(), Some(&KeySpec::Rsa2048));
    assert_eq!(described.key_usage(), Some(&KeyUsageType::EncryptDecrypt));
    assert_eq!(
        sorted(described.encryption_algorithms()),
        sorted(&["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
    );
    assert!(described.signing_algorithms().is_empty());
    let spki = described.public_key().unwrap().as_ref().to_vec();

    for (alg, local) in [
        (EncryptionAlgorithmSpec::RsaesOaepSha1, &OAEP_SHA1_MGF1SHA1),
        (
            EncryptionAlgorithmSpec::RsaesOaepSha256,
            &OAEP_SHA256_MGF1SHA256,
        ),
    ] {
        // Encrypted outside KMS with the public key, decrypted inside.
        let blob = oaep_encrypt(&spki, local, b"from outside");
        let out = client
            .decrypt()
            .key_id(&key)
            .ciphertext_blob(Blob::new(blob))
            .encryption_algorithm(alg.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("Decrypt {alg}: {e:?}"));
        assert_eq!(out.plaintext().unwrap().as_ref(), b"from outside");
        assert_eq!(out.encryption_algorithm(), Some(&alg));

        // A KeyId is required for asymmetric decryption.
        let blob = oaep_encrypt(&spki, local, b"x");
        let err = client
            .decrypt()
            .ciphertext_blob(Blob::new(blob))
            .encryption_algorithm(alg.clone())
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    }

    // Encrypted by KMS with one algorithm, refused with the other.
    let blob = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("inside"))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    assert_eq!(blob.as_ref().len(), 256);
    let err = client
        .decrypt()
        .key_id(&key)
        .ciphertext_blob(blob)
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DecryptError::InvalidCiphertextException(_)),
        "{err:?}"
    );

    // SYMMETRIC_DEFAULT on an RSA key.
    let err = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, EncryptError::InvalidKeyUsageException(_))
            || err.code() == Some("ValidationException"),
        "{err:?}"
    );
    // Too long for OAEP-SHA256 with a 2048-bit modulus (190 bytes at most).
    let err = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(vec![1u8; 191]))
        .encryption_algorithm(EncryptionAlgorithmSpec::RsaesOaepSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");

    // Symmetric keys have no public key.
    let sym = create_symmetric(&client).await;
    let err = client
        .get_public_key()
        .key_id(&sym)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, GetPublicKeyError::UnsupportedOperationException(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn data_keys_and_random() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;
    let context = ctx(&[("app", "db")]);

    let dk = client
        .generate_data_key()
        .key_id(&key)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(dk.key_id(), Some(engine.key_arn(&key).as_str()));
    let plain = dk.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(plain.len(), 32);
    let back = client
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref(), plain.as_slice());

    let dk128 = client
        .generate_data_key()
        .key_id(&key)
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    assert_eq!(dk128.plaintext().unwrap().as_ref().len(), 16);
    let dk_n = client
        .generate_data_key()
        .key_id(&key)
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    assert_eq!(dk_n.plaintext().unwrap().as_ref().len(), 64);
    assert_ne!(dk_n.plaintext().unwrap().as_ref()[..32], plain[..]);
    for bad in [0, 1025] {
        let err = client
            .generate_data_key()
            .key_id(&key)
            .number_of_bytes(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "{bad} bytes: {err:?}"
        );
    }
    let err = client
        .generate_data_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "no size: {err:?}");

    let without = client
        .generate_data_key_without_plaintext()
        .key_id(&key)
        .key_spec(DataKeySpec::Aes256)
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(without.key_id(), Some(engine.key_arn(&key).as_str()));
    let back = client
        .decrypt()
        .ciphertext_blob(without.ciphertext_blob().unwrap().clone())
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref().len(), 32);

    // Data keys need a symmetric encryption key.
    let signing = create_key(&client, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let err = client
        .generate_data_key()
        .key_id(&signing)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidKeyUsageException"), "{err:?}");

    // GenerateRandom.
    let r1 = client
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let r2 = client
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let r1 = r1.plaintext().unwrap().as_ref().to_vec();
    let r2 = r2.plaintext().unwrap().as_ref().to_vec();
    assert_eq!(r1.len(), 32);
    assert_ne!(r1, r2);
    assert_ne!(r1, vec![0u8; 32]);
    let big = client
        .generate_random()
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    assert_eq!(big.plaintext().unwrap().as_ref().len(), 1024);
    for bad in [0, 1025] {
        let err = client
            .generate_random()
            .number_of_bytes(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "{bad} bytes: {err:?}"
        );
    }
}

#[tokio::test]
async fn data_key_pairs_are_real_key_pairs() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;
    let context = ctx(&[("pair", "yes")]);

    for spec in [
        DataKeyPairSpec::Rsa2048,
        DataKeyPairSpec::EccNistP256,
        DataKeyPairSpec::EccNistP384,
        DataKeyPairSpec::EccNistP521,
        DataKeyPairSpec::EccSecgP256K1,
    ] {
        let out = client
            .generate_data_key_pair()
            .key_id(&key)
            .key_pair_spec(spec.clone())
            .set_encryption_context(context.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GenerateDataKeyPair {spec}: {e:?}"));
        assert_eq!(out.key_id(), Some(engine.key_arn(&key).as_str()));
        assert_eq!(out.key_pair_spec(), Some(&spec));
        let private = out.private_key_plaintext().unwrap().as_ref().to_vec();
        let public = out.public_key().unwrap().as_ref().to_vec();
        check_pair(&spec, &private, &public);
        let back = client
            .decrypt()
            .ciphertext_blob(out.private_key_ciphertext_blob().unwrap().clone())
            .set_encryption_context(context.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            back.plaintext().unwrap().as_ref(),
            private.as_slice(),
            "{spec}"
        );

        let without = client
            .generate_data_key_pair_without_plaintext()
            .key_id(&key)
            .key_pair_spec(spec.clone())
            .set_encryption_context(context.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(without.key_pair_spec(), Some(&spec));
        let public = without.public_key().unwrap().as_ref().to_vec();
        let back = client
            .decrypt()
            .ciphertext_blob(without.private_key_ciphertext_blob().unwrap().clone())
            .set_encryption_context(context.clone())
            .send()
            .await
            .unwrap();
        check_pair(&spec, back.plaintext().unwrap().as_ref(), &public);
    }
}

/// `private` is PKCS#8 and `public` SPKI of the same key: a signature by one verifies with the
/// other.
fn check_pair(spec: &DataKeyPairSpec, private: &[u8], public: &[u8]) {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let message = b"pair check";
    let (sig, verifier): (Vec<u8>, &dyn signature::VerificationAlgorithm) = match spec {
        DataKeyPairSpec::Rsa2048 => {
            let pair = signature::RsaKeyPair::from_pkcs8(private).expect("RSA PKCS#8");
            assert_eq!(pair.public_modulus_len(), 256);
            let mut sig = vec![0u8; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                .unwrap();
            (sig, &signature::RSA_PKCS1_2048_8192_SHA256)
        }
        _ => {
            let (signing, verifying): (
                &'static signature::EcdsaSigningAlgorithm,
                &'static signature::EcdsaVerificationAlgorithm,
            ) = match spec {
                DataKeyPairSpec::EccNistP256 => (
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    &signature::ECDSA_P256_SHA256_ASN1,
                ),
                DataKeyPairSpec::EccNistP384 => (
                    &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    &signature::ECDSA_P384_SHA384_ASN1,
                ),
                DataKeyPairSpec::EccNistP521 => (
                    &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                    &signature::ECDSA_P521_SHA512_ASN1,
                ),
                DataKeyPairSpec::EccSecgP256K1 => (
                    &signature::ECDSA_P256K1_SHA256_ASN1_SIGNING,
                    &signature::ECDSA_P256K1_SHA256_ASN1,
                ),
                other => panic!("unexpected {other}"),
            };
            let pair = signature::EcdsaKeyPair::from_pkcs8(signing, private)
                .unwrap_or_else(|e| panic!("{spec} PKCS#8: {e:?}"));
            let _ = pair.public_key();
            let sig = pair.sign(&rng, message).unwrap();
            (sig.as_ref().to_vec(), verifying)
        }
    };
    UnparsedPublicKey::new(verifier, public)
        .verify(message, &sig)
        .unwrap_or_else(|_| panic!("{spec}: the public key does not match the private key"));
}

#[tokio::test]
async fn sign_and_verify_raw_and_digest() {
    let engine = Engine::start();
    let client = engine.client();
    let keys = [
        (KeySpec::Rsa2048, ALL_RSA_SIGNING.to_vec()),
        (
            KeySpec::EccNistP256,
            vec![SigningAlgorithmSpec::EcdsaSha256],
        ),
        (
            KeySpec::EccNistP384,
            vec![SigningAlgorithmSpec::EcdsaSha384],
        ),
        (
            KeySpec::EccNistP521,
            vec![SigningAlgorithmSpec::EcdsaSha512],
        ),
        (
            KeySpec::EccSecgP256K1,
            vec![SigningAlgorithmSpec::EcdsaSha256],
        ),
    ];
    let message = b"the quick brown fox".to_vec();
    for (spec, algs) in keys {
        let key = create_key(&client, spec.clone(), KeyUsageType::SignVerify).await;
        let got = client.get_public_key().key_id(&key).send().await.unwrap();
        assert_eq!(got.key_spec(), Some(&spec));
        assert_eq!(got.key_usage(), Some(&KeyUsageType::SignVerify));
        assert_eq!(got.key_id(), Some(engine.key_arn(&key).as_str()));
        assert_eq!(sorted(got.signing_algorithms()), sorted(&algs));
        let spki = got.public_key().unwrap().as_ref().to_vec();

        for alg in &algs {
            sign_and_check(&client, &key, &spec, alg).await;

            // DIGEST: the signature is over the message the digest was taken of.
            let d = digest::digest(digest_for(alg), &message);
            let signed = client
                .sign()
                .key_id(&key)
                .message(Blob::new(d.as_ref()))
                .message_type(MessageType::Digest)
                .signing_algorithm(alg.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("Sign DIGEST {spec} {alg}: {e:?}"));
            let sig = signed.signature().unwrap().as_ref().to_vec();
            UnparsedPublicKey::new(local_verifier(&spec, alg), &spki)
                .verify(&message, &sig)
                .unwrap_or_else(|_| panic!("{spec} {alg}: DIGEST signature does not verify"));
            for (msg, kind) in [
                (message.clone(), MessageType::Raw),
                (d.as_ref().to_vec(), MessageType::Digest),
            ] {
                let ok = client
                    .verify()
                    .key_id(&key)
                    .message(Blob::new(msg))
                    .message_type(kind)
                    .signature(Blob::new(sig.clone()))
                    .signing_algorithm(alg.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(ok.signature_valid());
                assert_eq!(ok.signing_algorithm(), Some(alg));
            }

            // A tampered signature and a different message.
            let mut bad = sig.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x40;
            for (msg, s) in [(message.clone(), bad), (b"another".to_vec(), sig.clone())] {
                let err = client
                    .verify()
                    .key_id(&key)
                    .message(Blob::new(msg))
                    .signature(Blob::new(s))
                    .signing_algorithm(alg.clone())
                    .send()
                    .await
                    .unwrap_err()
                    .into_service_error();
                assert!(
                    matches!(err, VerifyError::KmsInvalidSignatureException(_)),
                    "{spec} {alg}: {err:?}"
                );
            }

            // A digest of the wrong length.
            let err = client
                .sign()
                .key_id(&key)
                .message(Blob::new(vec![0u8; 20]))
                .message_type(MessageType::Digest)
                .signing_algorithm(alg.clone())
                .send()
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Some("ValidationException"),
                "{spec} {alg}: {err:?}"
            );
        }

        // An algorithm the key does not have.
        let foreign = if spec == KeySpec::Rsa2048 {
            SigningAlgorithmSpec::EcdsaSha256
        } else {
            SigningAlgorithmSpec::RsassaPssSha256
        };
        let err = client
            .sign()
            .key_id(&key)
            .message(Blob::new(message.clone()))
            .signing_algorithm(foreign)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            matches!(err, SignError::InvalidKeyUsageException(_)),
            "{spec}: {err:?}"
        );
    }

    // Symmetric keys do not sign.
    let sym = create_symmetric(&client).await;
    let err = client
        .sign()
        .key_id(&sym)
        .message(Blob::new("m"))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, SignError::InvalidKeyUsageException(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn hmac_generate_and_verify() {
    let engine = Engine::start();
    let client = engine.client();
    for (spec, alg, len) in [
        (KeySpec::Hmac224, MacAlgorithmSpec::HmacSha224, 28),
        (KeySpec::Hmac256, MacAlgorithmSpec::HmacSha256, 32),
        (KeySpec::Hmac384, MacAlgorithmSpec::HmacSha384, 48),
        (KeySpec::Hmac512, MacAlgorithmSpec::HmacSha512, 64),
    ] {
        let key = create_key(&client, spec.clone(), KeyUsageType::GenerateVerifyMac).await;
        let out = client
            .generate_mac()
            .key_id(&key)
            .message(Blob::new("mac me"))
            .mac_algorithm(alg.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), Some(engine.key_arn(&key).as_str()));
        assert_eq!(out.mac_algorithm(), Some(&alg));
        let mac = out.mac().unwrap().as_ref().to_vec();
        assert_eq!(mac.len(), len, "{spec}");
        // Deterministic: the same message gives the same MAC.
        let again = client
            .generate_mac()
            .key_id(&key)
            .message(Blob::new("mac me"))
            .mac_algorithm(alg.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.mac().unwrap().as_ref(), mac.as_slice());
        let ok = client
            .verify_mac()
            .key_id(&key)
            .message(Blob::new("mac me"))
            .mac_algorithm(alg.clone())
            .mac(Blob::new(mac.clone()))
            .send()
            .await
            .unwrap();
        assert!(ok.mac_valid());

        let mut bad = mac.clone();
        bad[0] ^= 1;
        for (msg, m) in [
            ("mac me", bad),
            ("other", mac.clone()),
            ("mac me", mac[..len - 1].to_vec()),
        ] {
            let err = client
                .verify_mac()
                .key_id(&key)
                .message(Blob::new(msg))
                .mac_algorithm(alg.clone())
                .mac(Blob::new(m))
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert!(
                matches!(err, VerifyMacError::KmsInvalidMacException(_)),
                "{spec}: {err:?}"
            );
        }
        let wrong_alg = if alg == MacAlgorithmSpec::HmacSha256 {
            MacAlgorithmSpec::HmacSha512
        } else {
            MacAlgorithmSpec::HmacSha256
        };
        let err = client
            .generate_mac()
            .key_id(&key)
            .message(Blob::new("m"))
            .mac_algorithm(wrong_alg)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("InvalidKeyUsageException"),
            "{spec}: {err:?}"
        );
    }
}

#[tokio::test]
async fn rotation_on_demand_and_automatic_settings() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;

    let status = client
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(!status.key_rotation_enabled());

    for bad in [89, 2561] {
        let err = client
            .enable_key_rotation()
            .key_id(&key)
            .rotation_period_in_days(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("ValidationException"),
            "{bad} days: {err:?}"
        );
    }
    client
        .enable_key_rotation()
        .key_id(&key)
        .rotation_period_in_days(180)
        .send()
        .await
        .unwrap();
    let status = client
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled());
    assert_eq!(status.rotation_period_in_days(), Some(180));
    assert_eq!(status.key_id(), Some(engine.key_arn(&key).as_str()));
    let next = secs(status.next_rotation_date().expect("NextRotationDate"));
    let expected = now_secs() + 180.0 * 86400.0;
    assert!(
        (next - expected).abs() < 120.0,
        "NextRotationDate {next}, expected {expected}"
    );

    // Default period is 365 days.
    let other = create_symmetric(&client).await;
    client
        .enable_key_rotation()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    let status = client
        .get_key_rotation_status()
        .key_id(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(status.rotation_period_in_days(), Some(365));

    let empty = client
        .list_key_rotations()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(empty.rotations().is_empty());
    assert!(!empty.truncated());

    // Three on-demand rotations, a ciphertext under each version.
    let mut blobs = vec![encrypt(&client, &key, b"v1").await];
    for i in 2..=4u8 {
        let out = client
            .rotate_key_on_demand()
            .key_id(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), Some(engine.key_arn(&key).as_str()));
        blobs.push(encrypt(&client, &key, format!("v{i}").as_bytes()).await);
    }
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(
            decrypt(&client, blob).await,
            format!("v{}", i + 1).into_bytes()
        );
    }
    // Different versions encrypt differently: the blobs under v1 and v4 cannot be swapped.
    let rotations = client
        .list_key_rotations()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations.rotations().len(), 3);
    let mut last = 0.0;
    let mut material_ids = HashSet::new();
    for r in rotations.rotations() {
        assert_eq!(r.key_id(), Some(engine.key_arn(&key).as_str()));
        assert_eq!(r.rotation_type(), Some(&RotationType::OnDemand));
        let at = secs(r.rotation_date().unwrap());
        assert!(at >= last && (at - now_secs()).abs() < 120.0);
        last = at;
        if let Some(id) = r.key_material_id() {
            assert!(
                material_ids.insert(id.to_string()),
                "material id {id} repeated"
            );
        }
    }

    // Pagination, one at a time.
    let mut marker = None;
    let mut seen = 0;
    loop {
        let page = client
            .list_key_rotations()
            .key_id(&key)
            .limit(1)
            .set_marker(marker.clone())
            .send()
            .await
            .unwrap();
        seen += page.rotations().len();
        if !page.truncated() {
            break;
        }
        marker = page.next_marker().map(str::to_string);
        assert!(marker.is_some());
        assert!(seen < 10);
    }
    assert_eq!(seen, 3);

    // The on-demand limit: 25 per key.
    for _ in 3..25 {
        client
            .rotate_key_on_demand()
            .key_id(&key)
            .send()
            .await
            .unwrap();
    }
    let err = client
        .rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, RotateKeyOnDemandError::LimitExceededException(_)),
        "{err:?}"
    );
    for (i, blob) in blobs.iter().enumerate() {
        assert_eq!(
            decrypt(&client, blob).await,
            format!("v{}", i + 1).into_bytes()
        );
    }
    let rotations = client
        .list_key_rotations()
        .key_id(&key)
        .limit(100)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations.rotations().len(), 25);

    client
        .disable_key_rotation()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    let status = client
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(!status.key_rotation_enabled());

    // Rotation is for symmetric keys only; disabled keys do not rotate.
    let ecc = create_key(&client, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let err = client
        .enable_key_rotation()
        .key_id(&ecc)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UnsupportedOperationException"), "{err:?}");
    let err = client
        .rotate_key_on_demand()
        .key_id(&ecc)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_unsupported_operation_exception(), "{err:?}");
    client.disable_key().key_id(&other).send().await.unwrap();
    let err = client
        .rotate_key_on_demand()
        .key_id(&other)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_disabled_exception(), "{err:?}");
}

#[tokio::test]
async fn aliases_resolve_list_update_delete() {
    let engine = Engine::start();
    let client = engine.client();
    let a = create_symmetric(&client).await;
    let b = create_symmetric(&client).await;

    client
        .create_alias()
        .alias_name("alias/app/primary")
        .target_key_id(&a)
        .send()
        .await
        .unwrap();
    client
        .create_alias()
        .alias_name("alias/other")
        .target_key_id(engine.key_arn(&b))
        .send()
        .await
        .unwrap();

    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app/primary");
    for name in ["alias/app/primary", alias_arn.as_str()] {
        let out = client
            .encrypt()
            .key_id(name)
            .plaintext(Blob::new("via alias"))
            .send()
            .await
            .unwrap();
        assert_eq!(out.key_id(), Some(engine.key_arn(&a).as_str()), "{name}");
        let d = client.describe_key().key_id(name).send().await.unwrap();
        assert_eq!(d.key_metadata().unwrap().key_id(), a);
    }

    let all = client.list_aliases().send().await.unwrap();
    let names: BTreeMap<String, String> = all
        .aliases()
        .iter()
        .map(|x| {
            (
                x.alias_name().unwrap().to_string(),
                x.target_key_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(names.get("alias/app/primary"), Some(&a));
    assert_eq!(names.get("alias/other"), Some(&b));
    for x in all.aliases() {
        let name = x.alias_name().unwrap();
        assert_eq!(
            x.alias_arn(),
            Some(format!("arn:aws:kms:{REGION}:{ACCOUNT}:{name}").as_str())
        );
    }
    let for_a = client.list_aliases().key_id(&a).send().await.unwrap();
    let for_a: Vec<&str> = for_a
        .aliases()
        .iter()
        .filter_map(|x| x.alias_name())
        .collect();
    assert_eq!(for_a, vec!["alias/app/primary"]);

    let err = client
        .create_alias()
        .alias_name("alias/other")
        .target_key_id(&a)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, CreateAliasError::AlreadyExistsException(_)),
        "{err:?}"
    );
    let err = client
        .create_alias()
        .alias_name("alias/aws/mine")
        .target_key_id(&a)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, CreateAliasError::InvalidAliasNameException(_)),
        "{err:?}"
    );
    for bad in ["no-prefix", "alias/has space"] {
        let err = client
            .create_alias()
            .alias_name(bad)
            .target_key_id(&a)
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.code(),
                Some("ValidationException" | "InvalidAliasNameException")
            ),
            "{bad}: {err:?}"
        );
    }
    let err = client
        .create_alias()
        .alias_name("alias/nowhere")
        .target_key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, CreateAliasError::NotFoundException(_)),
        "{err:?}"
    );

    client
        .update_alias()
        .alias_name("alias/app/primary")
        .target_key_id(&b)
        .send()
        .await
        .unwrap();
    let d = client
        .describe_key()
        .key_id("alias/app/primary")
        .send()
        .await
        .unwrap();
    assert_eq!(d.key_metadata().unwrap().key_id(), b);

    client
        .delete_alias()
        .alias_name("alias/app/primary")
        .send()
        .await
        .unwrap();
    let err = client
        .describe_key()
        .key_id("alias/app/primary")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DescribeKeyError::NotFoundException(_)),
        "{err:?}"
    );
    let err = client
        .delete_alias()
        .alias_name("alias/app/primary")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn tags_and_key_policies() {
    let engine = Engine::start();
    let client = engine.client();
    let tag = |k: &str, v: &str| Tag::builder().tag_key(k).tag_value(v).build().unwrap();
    let created = client
        .create_key()
        .tags(tag("team", "infra"))
        .tags(tag("env", "test"))
        .send()
        .await
        .unwrap();
    let key = created.key_metadata().unwrap().key_id().to_string();

    let tags_of = |client: Client, key: String| async move {
        client
            .list_resource_tags()
            .key_id(key)
            .send()
            .await
            .unwrap()
            .tags()
            .iter()
            .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
            .collect::<BTreeMap<String, String>>()
    };
    let expected: BTreeMap<String, String> = [("env", "test"), ("team", "infra")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(tags_of(client.clone(), key.clone()).await, expected);

    client
        .tag_resource()
        .key_id(&key)
        .tags(tag("team", "platform"))
        .tags(tag("cost", "42"))
        .send()
        .await
        .unwrap();
    client
        .untag_resource()
        .key_id(&key)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [("cost", "42"), ("team", "platform")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        tags_of(client.clone(), engine.key_arn(&key)).await,
        expected
    );

    let err = client
        .tag_resource()
        .key_id(&key)
        .tags(tag("aws:reserved", "x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(matches!(err, TagResourceError::TagException(_)), "{err:?}");

    // The default policy gives the account root everything.
    let policy = client.get_key_policy().key_id(&key).send().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains(&format!("arn:aws:iam::{ACCOUNT}:root")),
        "{text}"
    );
    assert!(text.contains("kms:*"), "{text}");
    let named = client
        .get_key_policy()
        .key_id(&key)
        .policy_name("default")
        .send()
        .await
        .unwrap();
    assert_eq!(named.policy(), policy.policy());

    let custom = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "only-me",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string();
    client
        .put_key_policy()
        .key_id(&key)
        .policy_name("default")
        .policy(&custom)
        .send()
        .await
        .unwrap();
    let got = client.get_key_policy().key_id(&key).send().await.unwrap();
    let got: serde_json::Value = serde_json::from_str(got.policy().unwrap()).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(&custom).unwrap()
    );

    let listed = client
        .list_key_policies()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.policy_names(), ["default".to_string()]);

    let err = client
        .put_key_policy()
        .key_id(&key)
        .policy("{not json")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, PutKeyPolicyError::MalformedPolicyDocumentException(_)),
        "{err:?}"
    );
    let err = client
        .get_key_policy()
        .key_id(&key)
        .policy_name("other")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, GetKeyPolicyError::NotFoundException(_)),
        "{err:?}"
    );
}

async fn import_material(
    client: &Client,
    key: &str,
    material: &[u8],
    valid_to: Option<DateTime>,
) -> Result<
    (),
    aws_sdk_kms::error::SdkError<ImportKeyMaterialError, aws_sdk_kms::config::http::HttpResponse>,
> {
    let params = client
        .get_parameters_for_import()
        .key_id(key)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let valid = secs(params.parameters_valid_to().unwrap());
    assert!(valid > now_secs(), "import parameters already expired");
    let spki = params.public_key().unwrap().as_ref().to_vec();
    let wrapped = oaep_encrypt(&spki, &OAEP_SHA256_MGF1SHA256, material);
    let mut req = client
        .import_key_material()
        .key_id(key)
        .import_token(params.import_token().unwrap().clone())
        .encrypted_key_material(Blob::new(wrapped));
    req = match valid_to {
        Some(t) => req
            .valid_to(t)
            .expiration_model(ExpirationModelType::KeyMaterialExpires),
        None => req.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
    };
    req.send().await.map(|_| ())
}

#[tokio::test]
async fn import_key_material_round_trip() {
    let engine = Engine::start();
    let client = engine.client();
    let created = client
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let meta = created.key_metadata().unwrap();
    assert_eq!(meta.origin(), Some(&OriginType::External));
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert!(!meta.enabled());
    let key = meta.key_id().to_string();

    let err = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");

    let material = random32();
    import_material(&client, &key, &material, None)
        .await
        .unwrap();
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(
        meta.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialDoesNotExpire)
    );
    let blob = encrypt(&client, &key, b"imported").await;
    assert_eq!(decrypt(&client, &blob).await, b"imported");

    // A token belongs to one key.
    let other = client
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .unwrap();
    let other = other.key_metadata().unwrap().key_id().to_string();
    let params = client
        .get_parameters_for_import()
        .key_id(&other)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap();
    let wrapped = oaep_encrypt(
        params.public_key().unwrap().as_ref(),
        &OAEP_SHA256_MGF1SHA256,
        &material,
    );
    let err = client
        .import_key_material()
        .key_id(&key)
        .import_token(params.import_token().unwrap().clone())
        .encrypted_key_material(Blob::new(wrapped))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, ImportKeyMaterialError::InvalidImportTokenException(_)),
        "{err:?}"
    );

    client
        .delete_imported_key_material()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(key_state(&client, &key).await, KeyState::PendingImport);
    let err = decrypt_error(&client, blob.clone(), None).await;
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");

    // Other material is refused; the same material brings old ciphertexts back.
    let mut wrong = material;
    wrong[0] ^= 0xff;
    let err = import_material(&client, &key, &wrong, None)
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(
            err,
            ImportKeyMaterialError::IncorrectKeyMaterialException(_)
        ),
        "{err:?}"
    );
    let expires = DateTime::from_secs(now_secs() as i64 + 3600);
    import_material(&client, &key, &material, Some(expires))
        .await
        .unwrap();
    let meta = client.describe_key().key_id(&key).send().await.unwrap();
    let meta = meta.key_metadata().unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Enabled));
    assert_eq!(
        meta.expiration_model(),
        Some(&ExpirationModelType::KeyMaterialExpires)
    );
    assert_eq!(meta.valid_to().map(|t| t.secs()), Some(expires.secs()));
    assert_eq!(decrypt(&client, &blob).await, b"imported");

    // Imported HMAC material gives the MAC anyone with the key computes.
    let hmac_key = client
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .unwrap();
    let hmac_key = hmac_key.key_metadata().unwrap().key_id().to_string();
    let secret = random32();
    import_material(&client, &hmac_key, &secret, None)
        .await
        .unwrap();
    let mac = client
        .generate_mac()
        .key_id(&hmac_key)
        .message(Blob::new("known answer"))
        .mac_algorithm(MacAlgorithmSpec::HmacSha256)
        .send()
        .await
        .unwrap();
    let local = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), b"known answer");
    assert_eq!(mac.mac().unwrap().as_ref(), local.as_ref());

    // Asymmetric material comes in with RSA_AES_KEY_WRAP: an ephemeral AES key under RSA-OAEP,
    // then the PKCS#8 key under AES key wrap with padding.
    let local = signature::EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let local_pair = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        local.as_ref(),
    )
    .unwrap();
    let ecc = client
        .create_key()
        .origin(OriginType::External)
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let ecc = ecc.key_metadata().unwrap().key_id().to_string();
    let params = client
        .get_parameters_for_import()
        .key_id(&ecc)
        .wrapping_algorithm(AlgorithmSpec::RsaAesKeyWrapSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa3072)
        .send()
        .await
        .unwrap();
    let ephemeral = random32();
    let mut blob = oaep_encrypt(
        params.public_key().unwrap().as_ref(),
        &OAEP_SHA256_MGF1SHA256,
        &ephemeral,
    );
    let kek = AesKek::new(&AES_256, &ephemeral).unwrap();
    let mut wrapped = vec![0u8; local.as_ref().len() + 16];
    let n = kek
        .wrap_with_padding(local.as_ref(), &mut wrapped)
        .unwrap()
        .len();
    blob.extend_from_slice(&wrapped[..n]);
    client
        .import_key_material()
        .key_id(&ecc)
        .import_token(params.import_token().unwrap().clone())
        .encrypted_key_material(Blob::new(blob))
        .expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire)
        .send()
        .await
        .unwrap();
    let spki = public_key(&client, &ecc).await;
    let local_sig = local_pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), b"ours")
        .unwrap();
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &spki)
        .verify(b"ours", local_sig.as_ref())
        .expect("GetPublicKey returns the imported key's public half");
    let kms_sig = client
        .sign()
        .key_id(&ecc)
        .message(Blob::new("theirs"))
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap();
    UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        local_pair.public_key().as_ref(),
    )
    .verify(b"theirs", kms_sig.signature().unwrap().as_ref())
    .expect("KMS signs with the imported private key");

    // Import is only for EXTERNAL keys.
    let normal = create_symmetric(&client).await;
    let err = client
        .get_parameters_for_import()
        .key_id(&normal)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_unsupported_operation_exception(), "{err:?}");
}

#[tokio::test]
async fn unknown_keys_and_bad_credentials() {
    let engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;

    let missing = "12345678-90ab-cdef-1234-567890abcdef";
    let err = client
        .describe_key()
        .key_id(missing)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DescribeKeyError::NotFoundException(_)),
        "{err:?}"
    );
    let err = client
        .encrypt()
        .key_id(missing)
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    let err = client
        .encrypt()
        .key_id("alias/none")
        .plaintext(Blob::new("x"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
    // The same key id in another account is not this key.
    let err = client
        .describe_key()
        .key_id(format!("arn:aws:kms:{REGION}:999999999999:key/{key}"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DescribeKeyError::NotFoundException(_)),
        "{err:?}"
    );
    let err = client
        .describe_key()
        .key_id("arn:aws:nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some("InvalidArnException" | "NotFoundException")
        ),
        "{err:?}"
    );

    // Authentication: an unknown access key, then a known one with the wrong secret.
    let stranger = engine.client_with("AKIAUNKNOWNUNKNOWN00", "whatever-secret");
    let err = stranger.list_keys().send().await.unwrap_err();
    assert_eq!(err.code(), Some("UnrecognizedClientException"), "{err:?}");
    let wrong_secret = engine.client_with(&engine.access_key_id, "not-the-secret");
    let err = wrong_secret.list_keys().send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
    let err = wrong_secret
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
    let raw = err.raw_response().expect("an HTTP answer");
    assert_eq!(raw.status().as_u16(), 400);

    // A region is part of the scope: the key does not exist in another region.
    let elsewhere = aws_sdk_kms::Client::from_conf(
        client
            .config()
            .to_builder()
            .region(aws_sdk_kms::config::Region::new("eu-west-1"))
            .build(),
    );
    let err = elsewhere
        .describe_key()
        .key_id(&key)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        matches!(err, DescribeKeyError::NotFoundException(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn state_survives_a_kill_and_restart() {
    let mut engine = Engine::start();
    let client = engine.client();
    let key = create_symmetric(&client).await;
    let context = ctx(&[("k", "v")]);
    let blob = client
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new("durable"))
        .set_encryption_context(context.clone())
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();
    client
        .rotate_key_on_demand()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    client
        .create_alias()
        .alias_name("alias/durable")
        .target_key_id(&key)
        .send()
        .await
        .unwrap();
    let signer = create_key(&client, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let spki = public_key(&client, &signer).await;
    client.disable_key().key_id(&signer).send().await.unwrap();
    let (old_id, old_secret) = (
        engine.access_key_id.clone(),
        engine.secret_access_key.clone(),
    );

    engine.restart();
    assert_eq!(
        engine.access_key_id, old_id,
        "credentials change across restarts"
    );
    assert_eq!(engine.secret_access_key, old_secret);
    let client = engine.client();
    let out = client
        .decrypt()
        .ciphertext_blob(blob)
        .set_encryption_context(context)
        .send()
        .await
        .unwrap();
    assert_eq!(out.plaintext().unwrap().as_ref(), b"durable");
    let d = client
        .describe_key()
        .key_id("alias/durable")
        .send()
        .await
        .unwrap();
    assert_eq!(d.key_metadata().unwrap().key_id(), key);
    let rotations = client
        .list_key_rotations()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(rotations.rotations().len(), 1);
    assert_eq!(key_state(&client, &signer).await, KeyState::Disabled);
    client.enable_key().key_id(&signer).send().await.unwrap();
    assert_eq!(public_key(&client, &signer).await, spki);
    sign_and_check(
        &client,
        &signer,
        &KeySpec::EccNistP256,
        &SigningAlgorithmSpec::EcdsaSha256,
    )
    .await;
}
