//! Operation-level tests against an in-memory store and a movable clock. Requests are written
//! as AWS JSON and go through the JSON codec (`crate::api::json`) to the typed operations, so
//! each test reads like the API it checks. Wire-level behaviour (SigV4, real AWS clients) is
//! tested in `engine/tests/` and `e2e/python/`.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use kubekms_proto::Operation;

use crate::api::json::Answer;

use super::{Caller, KeyChanged, Kms, Principal};
use crate::clock::{SystemClock, MILLIS_PER_DAY};
use crate::crypto::RootKey;
use crate::record::Scope;
use crate::store::memory::MemoryStore;
use crate::store::KeyStore;

impl Kms {
    /// An operation by name on a JSON body, through the JSON codec, as the HTTP layer calls
    /// it (an unknown name is refused the same way).
    async fn dispatch_json(&self, ctx: &Caller, op: &str, body: &[u8]) -> Answer {
        match Operation::from_name(op) {
            Some(op) => crate::api::json::dispatch(self, ctx, op, body).await,
            None => Answer::from(crate::KmsError::UnknownOperation(format!(
                "Unknown operation {op}"
            ))),
        }
    }
}

pub(super) struct Harness {
    kms: Arc<Kms>,
    store: Arc<MemoryStore>,
    clock: Arc<SystemClock>,
    ctx: Caller,
}

const ROOT: [u8; 32] = [7u8; 32];

pub(super) async fn harness() -> Harness {
    let store = Arc::new(MemoryStore::new());
    harness_over(store.clone(), store).await
}

/// A harness whose engine writes to `engine_store`; `store` is the memory store behind it,
/// for tests that look at what was stored.
async fn harness_over(engine_store: Arc<dyn KeyStore>, store: Arc<MemoryStore>) -> Harness {
    let clock = SystemClock::new();
    let kms = Kms::open(
        engine_store,
        RootKey::from_bytes(&ROOT).unwrap(),
        clock.clone(),
    )
    .await
    .unwrap();
    Harness {
        kms,
        store,
        clock,
        ctx: ctx("111122223333", "us-east-1"),
    }
}

pub(super) fn ctx(account: &str, region: &str) -> Caller {
    Caller {
        scope: Scope::new(account, region),
        principal: Principal::new(kubekms_proto::principal::root_arn(account)),
        request_id: "test".into(),
    }
}

impl Harness {
    pub(super) async fn call(&self, op: &str, body: Value) -> Result<Value, (String, String)> {
        self.call_as(&self.ctx, op, body).await
    }

    pub(super) async fn call_as(
        &self,
        ctx: &Caller,
        op: &str,
        body: Value,
    ) -> Result<Value, (String, String)> {
        let resp = self
            .kms
            .dispatch_json(ctx, op, body.to_string().as_bytes())
            .await;
        match resp.result {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap()),
            Err(e) => Err((e.aws_type().to_string(), e.to_string())),
        }
    }

    pub(super) async fn err(&self, op: &str, body: Value) -> String {
        match self.call(op, body).await {
            Ok(v) => panic!("{op} succeeded unexpectedly: {v}"),
            Err((kind, _)) => kind,
        }
    }

    pub(super) async fn create(&self, body: Value) -> String {
        let out = self.call("CreateKey", body).await.unwrap();
        out["KeyMetadata"]["KeyId"].as_str().unwrap().to_string()
    }

    pub(super) async fn encrypt(&self, key: &str, plaintext: &[u8], context: Value) -> String {
        let out = self
            .call("Encrypt", json!({"KeyId": key, "Plaintext": B64.encode(plaintext), "EncryptionContext": context}))
            .await
            .unwrap();
        out["CiphertextBlob"].as_str().unwrap().to_string()
    }

    async fn decrypt(&self, blob: &str, context: Value) -> Result<Vec<u8>, String> {
        self.call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": context}),
        )
        .await
        .map(|v| B64.decode(v["Plaintext"].as_str().unwrap()).unwrap())
        .map_err(|(kind, _)| kind)
    }

    async fn state(&self, key: &str) -> String {
        let out = self
            .call("DescribeKey", json!({"KeyId": key}))
            .await
            .unwrap();
        out["KeyMetadata"]["KeyState"].as_str().unwrap().to_string()
    }

    /// A second engine over the same store: what a restart sees.
    async fn reopen(&self) -> Arc<Kms> {
        Kms::open(
            self.store.clone(),
            RootKey::from_bytes(&ROOT).unwrap(),
            self.clock.clone(),
        )
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn symmetric_round_trip_with_context_and_tamper() {
    let h = harness().await;
    let key = h.create(json!({"Description": "orders"})).await;
    let ctx = json!({"tenant": "a", "purpose": "test"});
    let blob = h.encrypt(&key, b"hello world", ctx.clone()).await;
    assert_eq!(h.decrypt(&blob, ctx.clone()).await.unwrap(), b"hello world");

    // Context: exact and case-sensitive.
    assert_eq!(
        h.decrypt(&blob, json!({"tenant": "A", "purpose": "test"}))
            .await
            .unwrap_err(),
        "InvalidCiphertextException"
    );
    assert_eq!(
        h.decrypt(&blob, json!({})).await.unwrap_err(),
        "InvalidCiphertextException"
    );

    // Every single-byte flip fails the same way.
    let raw = B64.decode(&blob).unwrap();
    for i in [0, 3, 20, 30, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[i] ^= 1;
        assert_eq!(
            h.decrypt(&B64.encode(&bad), ctx.clone()).await.unwrap_err(),
            "InvalidCiphertextException",
            "byte {i}"
        );
    }

    // Decrypt with the wrong KeyId.
    let other = h.create(json!({})).await;
    let (kind, _) = h
        .call(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": ctx, "KeyId": other}),
        )
        .await
        .unwrap_err();
    assert_eq!(kind, "IncorrectKeyException");

    // Another account cannot use the key or decrypt its ciphertexts.
    let stranger = super::tests::ctx("444455556666", "us-east-1");
    let (kind, _) = h
        .call_as(
            &stranger,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": "aGk="}),
        )
        .await
        .unwrap_err();
    assert_eq!(kind, "NotFoundException");
    let (kind, _) = h
        .call_as(&stranger, "Decrypt", json!({"CiphertextBlob": blob, "EncryptionContext": {"tenant": "a", "purpose": "test"}}))
        .await
        .unwrap_err();
    assert_eq!(kind, "InvalidCiphertextException");
}

#[tokio::test]
async fn a_key_id_over_the_model_limit_is_refused_before_lookup() {
    let h = harness().await;
    let long = "a".repeat(900 * 1024);
    for op in ["DescribeKey", "Encrypt", "EnableKey", "GetKeyPolicy"] {
        let (kind, message) = h
            .call(op, json!({"KeyId": long, "Plaintext": "AA=="}))
            .await
            .unwrap_err();
        assert_eq!(kind, "ValidationException", "{op}");
        assert!(message.len() < 500, "{op}: {} bytes echoed", message.len());
    }
    // 2048 characters is still a KeyId (one that names no key).
    let at_limit = "a".repeat(2048);
    assert_eq!(
        h.err("DescribeKey", json!({"KeyId": at_limit})).await,
        "NotFoundException"
    );
}

#[tokio::test]
async fn limits_and_validation() {
    let h = harness().await;
    let key = h.create(json!({})).await;
    let big = B64.encode(vec![0u8; 4097]);
    assert_eq!(
        h.err("Encrypt", json!({"KeyId": key, "Plaintext": big}))
            .await,
        "ValidationException"
    );
    assert_eq!(
        h.err("Encrypt", json!({"KeyId": key, "Plaintext": "%%%"}))
            .await,
        "ValidationException"
    );
    assert_eq!(
        h.err("Encrypt", json!({"Plaintext": "aGk="})).await,
        "ValidationException"
    );
    assert_eq!(
        h.err("Encrypt", json!({"KeyId": "nope", "Plaintext": "aGk="}))
            .await,
        "NotFoundException"
    );
    assert_eq!(
        h.err("GenerateRandom", json!({"NumberOfBytes": 0})).await,
        "ValidationException"
    );
    assert_eq!(
        h.err("GenerateRandom", json!({"NumberOfBytes": 1025}))
            .await,
        "ValidationException"
    );
    let random = h
        .call("GenerateRandom", json!({"NumberOfBytes": 1024}))
        .await
        .unwrap();
    assert_eq!(
        B64.decode(random["Plaintext"].as_str().unwrap())
            .unwrap()
            .len(),
        1024
    );
    assert_eq!(
        h.err("CreateKey", json!({"KeySpec": "RSA_1024"})).await,
        "ValidationException"
    );
    assert_eq!(
        h.err(
            "CreateKey",
            json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "ENCRYPT_DECRYPT"})
        )
        .await,
        "ValidationException"
    );
    assert_eq!(
        h.err("Frobnicate", json!({})).await,
        "UnknownOperationException"
    );
    let resp = h.kms.dispatch_json(&h.ctx, "CreateKey", b"{not json").await;
    assert_eq!(
        resp.result.err().unwrap().aws_type(),
        "SerializationException"
    );
    assert_eq!(
        h.err("GenerateDataKey", json!({"KeyId": key})).await,
        "ValidationException"
    );
    assert_eq!(
        h.err(
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256", "NumberOfBytes": 32})
        )
        .await,
        "ValidationException"
    );
}

#[tokio::test]
async fn data_keys_decrypt_to_their_plaintext() {
    let h = harness().await;
    let key = h.create(json!({})).await;
    let out = h
        .call(
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256", "EncryptionContext": {"a": "b"}}),
        )
        .await
        .unwrap();
    let plain = B64.decode(out["Plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(plain.len(), 32);
    assert!(out["KeyId"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:kms:us-east-1:111122223333:key/"));
    let blob = out["CiphertextBlob"].as_str().unwrap();
    assert_eq!(h.decrypt(blob, json!({"a": "b"})).await.unwrap(), plain);

    let out = h
        .call(
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": key, "NumberOfBytes": 16}),
        )
        .await
        .unwrap();
    assert!(out.get("Plaintext").is_none());
    assert_eq!(
        h.decrypt(out["CiphertextBlob"].as_str().unwrap(), json!({}))
            .await
            .unwrap()
            .len(),
        16
    );

    for spec in ["ECC_NIST_P256", "RSA_2048"] {
        let out = h
            .call(
                "GenerateDataKeyPair",
                json!({"KeyId": key, "KeyPairSpec": spec}),
            )
            .await
            .unwrap();
        let private = B64
            .decode(out["PrivateKeyPlaintext"].as_str().unwrap())
            .unwrap();
        assert!(!B64
            .decode(out["PublicKey"].as_str().unwrap())
            .unwrap()
            .is_empty());
        assert_eq!(
            h.decrypt(out["PrivateKeyCiphertextBlob"].as_str().unwrap(), json!({}))
                .await
                .unwrap(),
            private
        );
        let out = h
            .call(
                "GenerateDataKeyPairWithoutPlaintext",
                json!({"KeyId": key, "KeyPairSpec": spec}),
            )
            .await
            .unwrap();
        assert!(out.get("PrivateKeyPlaintext").is_none());
    }
    assert_eq!(
        h.err(
            "GenerateDataKeyPair",
            json!({"KeyId": key, "KeyPairSpec": "HMAC_256"})
        )
        .await,
        "ValidationException"
    );
}

#[tokio::test]
async fn disable_enable_and_deletion_window() {
    let h = harness().await;
    let key = h.create(json!({})).await;
    let blob = h.encrypt(&key, b"kept", json!({})).await;
    h.call("DisableKey", json!({"KeyId": key})).await.unwrap();
    assert_eq!(h.state(&key).await, "Disabled");
    assert_eq!(
        h.decrypt(&blob, json!({})).await.unwrap_err(),
        "DisabledException"
    );
    h.call("EnableKey", json!({"KeyId": key})).await.unwrap();
    assert_eq!(h.decrypt(&blob, json!({})).await.unwrap(), b"kept");

    for days in [6, 31] {
        assert_eq!(
            h.err(
                "ScheduleKeyDeletion",
                json!({"KeyId": key, "PendingWindowInDays": days})
            )
            .await,
            "ValidationException"
        );
    }
    let out = h
        .call(
            "ScheduleKeyDeletion",
            json!({"KeyId": key, "PendingWindowInDays": 7}),
        )
        .await
        .unwrap();
    assert_eq!(out["KeyState"], "PendingDeletion");
    assert_eq!(out["PendingWindowInDays"], 7);
    assert_eq!(
        h.decrypt(&blob, json!({})).await.unwrap_err(),
        "KMSInvalidStateException"
    );
    assert_eq!(
        h.err("EnableKey", json!({"KeyId": key})).await,
        "KMSInvalidStateException"
    );
    assert_eq!(
        h.err("ScheduleKeyDeletion", json!({"KeyId": key})).await,
        "KMSInvalidStateException"
    );

    // Cancel: the same key comes back, Disabled, and decrypts once enabled.
    h.call("CancelKeyDeletion", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(h.state(&key).await, "Disabled");
    h.call("EnableKey", json!({"KeyId": key})).await.unwrap();
    assert_eq!(h.decrypt(&blob, json!({})).await.unwrap(), b"kept");

    // Window runs out: gone for good, with its alias, and not back after a restart.
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/doomed", "TargetKeyId": key}),
    )
    .await
    .unwrap();
    h.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": key, "PendingWindowInDays": 7}),
    )
    .await
    .unwrap();
    h.clock.advance(6 * MILLIS_PER_DAY);
    h.kms.run_due_work().await.unwrap();
    assert_eq!(h.state(&key).await, "PendingDeletion");
    h.clock.advance(MILLIS_PER_DAY + 1000);
    assert_eq!(
        h.err("DescribeKey", json!({"KeyId": key})).await,
        "NotFoundException"
    );
    h.kms.run_due_work().await.unwrap();
    assert!(h.store.load().await.unwrap().keys.is_empty());
    assert!(h.store.load().await.unwrap().aliases.is_empty());
    let restarted = h.reopen().await;
    let resp = restarted
        .dispatch_json(
            &h.ctx,
            "DescribeKey",
            json!({"KeyId": key}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(resp.result.err().unwrap().aws_type(), "NotFoundException");
}

#[tokio::test]
async fn rotation_keeps_old_ciphertexts_decryptable() {
    let h = harness().await;
    let key = h.create(json!({})).await;
    let v1 = h.encrypt(&key, b"one", json!({})).await;
    h.call("RotateKeyOnDemand", json!({"KeyId": key}))
        .await
        .unwrap();
    let v2 = h.encrypt(&key, b"two", json!({})).await;
    assert_ne!(
        B64.decode(&v1).unwrap()[19..23],
        B64.decode(&v2).unwrap()[19..23]
    );

    assert_eq!(
        h.err(
            "EnableKeyRotation",
            json!({"KeyId": key, "RotationPeriodInDays": 89})
        )
        .await,
        "ValidationException"
    );
    h.call(
        "EnableKeyRotation",
        json!({"KeyId": key, "RotationPeriodInDays": 90}),
    )
    .await
    .unwrap();
    let status = h
        .call("GetKeyRotationStatus", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(status["KeyRotationEnabled"], true);
    assert_eq!(status["RotationPeriodInDays"], 90);

    h.clock.advance(91 * MILLIS_PER_DAY);
    h.kms.run_due_work().await.unwrap();
    let rotations = h
        .call("ListKeyRotations", json!({"KeyId": key}))
        .await
        .unwrap();
    let kinds: Vec<&str> = rotations["Rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RotationType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ON_DEMAND", "AUTOMATIC"]);
    let v3 = h.encrypt(&key, b"three", json!({})).await;

    // A restart loads every version.
    let restarted = h.reopen().await;
    for (blob, plain) in [(&v1, &b"one"[..]), (&v2, b"two"), (&v3, b"three")] {
        let resp = restarted
            .dispatch_json(
                &h.ctx,
                "Decrypt",
                json!({"CiphertextBlob": blob}).to_string().as_bytes(),
            )
            .await;
        let out: Value = serde_json::from_slice(&resp.result.unwrap()).unwrap();
        assert_eq!(
            B64.decode(out["Plaintext"].as_str().unwrap()).unwrap(),
            plain
        );
    }

    let ecc = h
        .create(json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}))
        .await;
    assert_eq!(
        h.err("EnableKeyRotation", json!({"KeyId": ecc})).await,
        "UnsupportedOperationException"
    );
    assert_eq!(
        h.err("RotateKeyOnDemand", json!({"KeyId": ecc})).await,
        "UnsupportedOperationException"
    );
}

#[tokio::test]
async fn aliases_resolve_and_repoint() {
    let h = harness().await;
    let a = h.create(json!({})).await;
    let b = h.create(json!({})).await;
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/team/orders", "TargetKeyId": a}),
    )
    .await
    .unwrap();
    assert_eq!(
        h.err(
            "CreateAlias",
            json!({"AliasName": "alias/team/orders", "TargetKeyId": b})
        )
        .await,
        "AlreadyExistsException"
    );
    assert_eq!(
        h.err(
            "CreateAlias",
            json!({"AliasName": "orders", "TargetKeyId": b})
        )
        .await,
        "ValidationException"
    );
    let blob = h.encrypt("alias/team/orders", b"x", json!({})).await;
    let arn = "arn:aws:kms:us-east-1:111122223333:alias/team/orders";
    let out = h.call("DescribeKey", json!({"KeyId": arn})).await.unwrap();
    assert_eq!(out["KeyMetadata"]["KeyId"], a.as_str());

    h.call(
        "UpdateAlias",
        json!({"AliasName": "alias/team/orders", "TargetKeyId": b}),
    )
    .await
    .unwrap();
    let out = h
        .call("DescribeKey", json!({"KeyId": "alias/team/orders"}))
        .await
        .unwrap();
    assert_eq!(out["KeyMetadata"]["KeyId"], b.as_str());
    assert_eq!(h.decrypt(&blob, json!({})).await.unwrap(), b"x");

    let hmac = h
        .create(json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}))
        .await;
    assert_eq!(
        h.err(
            "UpdateAlias",
            json!({"AliasName": "alias/team/orders", "TargetKeyId": hmac})
        )
        .await,
        "ValidationException"
    );

    let list = h.call("ListAliases", json!({"KeyId": b})).await.unwrap();
    assert_eq!(list["Aliases"].as_array().unwrap().len(), 1);
    assert_eq!(list["Aliases"][0]["AliasArn"], arn);
    h.call("DeleteAlias", json!({"AliasName": "alias/team/orders"}))
        .await
        .unwrap();
    assert_eq!(
        h.err("DescribeKey", json!({"KeyId": "alias/team/orders"}))
            .await,
        "NotFoundException"
    );
    assert_eq!(
        h.err("DeleteAlias", json!({"AliasName": "alias/team/orders"}))
            .await,
        "NotFoundException"
    );
}

#[tokio::test]
async fn sign_verify_every_asymmetric_spec() {
    let h = harness().await;
    let cases = [
        (
            "RSA_2048",
            vec!["RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512"],
        ),
        ("RSA_3072", vec!["RSASSA_PSS_SHA_384"]),
        ("RSA_4096", vec!["RSASSA_PKCS1_V1_5_SHA_256"]),
        ("ECC_NIST_P256", vec!["ECDSA_SHA_256"]),
        ("ECC_NIST_P384", vec!["ECDSA_SHA_384"]),
        ("ECC_NIST_P521", vec!["ECDSA_SHA_512"]),
        ("ECC_SECG_P256K1", vec!["ECDSA_SHA_256"]),
    ];
    let message = B64.encode(b"the message");
    for (spec, algs) in cases {
        let key = h
            .create(json!({"KeySpec": spec, "KeyUsage": "SIGN_VERIFY"}))
            .await;
        for alg in algs {
            let out = h
                .call(
                    "Sign",
                    json!({"KeyId": key, "Message": message, "SigningAlgorithm": alg}),
                )
                .await
                .unwrap();
            let sig = out["Signature"].as_str().unwrap().to_string();
            let ok = h.call("Verify", json!({"KeyId": key, "Message": message, "Signature": sig, "SigningAlgorithm": alg})).await.unwrap();
            assert_eq!(ok["SignatureValid"], true, "{spec} {alg}");
            let wrong = B64.encode(b"another message");
            assert_eq!(
                h.err("Verify", json!({"KeyId": key, "Message": wrong, "Signature": sig, "SigningAlgorithm": alg})).await,
                "KMSInvalidSignatureException",
                "{spec} {alg}"
            );
        }
        let pk = h.call("GetPublicKey", json!({"KeyId": key})).await.unwrap();
        assert!(!B64
            .decode(pk["PublicKey"].as_str().unwrap())
            .unwrap()
            .is_empty());
        assert_eq!(pk["KeySpec"], spec);
        assert_eq!(
            h.err("Encrypt", json!({"KeyId": key, "Plaintext": message}))
                .await,
            "InvalidKeyUsageException"
        );
    }
    let p256 = h.create(json!({"KeySpec": "ECC_NIST_P256"})).await;
    assert_eq!(
        h.err(
            "Sign",
            json!({"KeyId": p256, "Message": message, "SigningAlgorithm": "ECDSA_SHA_384"})
        )
        .await,
        "InvalidKeyUsageException"
    );
    // DIGEST must be exactly the hash length.
    let digest = B64.encode([1u8; 32]);
    h.call("Sign", json!({"KeyId": p256, "Message": digest, "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"})).await.unwrap();
    assert_eq!(h.err("Sign", json!({"KeyId": p256, "Message": message, "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"})).await, "ValidationException");
    let sym = h.create(json!({})).await;
    assert_eq!(
        h.err(
            "Sign",
            json!({"KeyId": sym, "Message": message, "SigningAlgorithm": "ECDSA_SHA_256"})
        )
        .await,
        "InvalidKeyUsageException"
    );
    assert_eq!(
        h.err("GetPublicKey", json!({"KeyId": sym})).await,
        "UnsupportedOperationException"
    );
}

#[tokio::test]
async fn rsa_encryption_limits() {
    let h = harness().await;
    let key = h
        .create(json!({"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"}))
        .await;
    let ok = B64.encode(vec![9u8; 190]);
    let out = h
        .call(
            "Encrypt",
            json!({"KeyId": key, "Plaintext": ok, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
        )
        .await
        .unwrap();
    let blob = out["CiphertextBlob"].as_str().unwrap();
    let plain = h
        .call("Decrypt", json!({"KeyId": key, "CiphertextBlob": blob, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}))
        .await
        .unwrap();
    assert_eq!(plain["Plaintext"].as_str().unwrap(), ok);
    let too_long = B64.encode(vec![9u8; 191]);
    assert_eq!(h.err("Encrypt", json!({"KeyId": key, "Plaintext": too_long, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})).await, "ValidationException");
    assert_eq!(
        h.err("Encrypt", json!({"KeyId": key, "Plaintext": ok}))
            .await,
        "InvalidKeyUsageException"
    );
    assert_eq!(
        h.err(
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
        )
        .await,
        "ValidationException"
    );
}

#[tokio::test]
async fn macs_verify_and_reject() {
    let h = harness().await;
    for (spec, alg) in [
        ("HMAC_224", "HMAC_SHA_224"),
        ("HMAC_256", "HMAC_SHA_256"),
        ("HMAC_384", "HMAC_SHA_384"),
        ("HMAC_512", "HMAC_SHA_512"),
    ] {
        let key = h
            .create(json!({"KeySpec": spec, "KeyUsage": "GENERATE_VERIFY_MAC"}))
            .await;
        let msg = B64.encode(b"m");
        let out = h
            .call(
                "GenerateMac",
                json!({"KeyId": key, "Message": msg, "MacAlgorithm": alg}),
            )
            .await
            .unwrap();
        let mac = out["Mac"].as_str().unwrap().to_string();
        let ok = h
            .call(
                "VerifyMac",
                json!({"KeyId": key, "Message": msg, "MacAlgorithm": alg, "Mac": mac}),
            )
            .await
            .unwrap();
        assert_eq!(ok["MacValid"], true);
        let mut bad = B64.decode(&mac).unwrap();
        bad[0] ^= 0x80;
        assert_eq!(
            h.err(
                "VerifyMac",
                json!({"KeyId": key, "Message": msg, "MacAlgorithm": alg, "Mac": B64.encode(bad)})
            )
            .await,
            "KMSInvalidMacException"
        );
    }
}

#[tokio::test]
async fn list_keys_paginates_and_tags_policies_persist() {
    let h = harness().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            h.create(json!({"Tags": [{"TagKey": "team", "TagValue": "a"}]}))
                .await,
        );
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut body = json!({"Limit": 2});
        if let Some(m) = &marker {
            body["Marker"] = json!(m);
        }
        let page = h.call("ListKeys", body).await.unwrap();
        seen.extend(
            page["Keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["KeyId"].as_str().unwrap().to_string()),
        );
        if page["Truncated"] == true {
            marker = Some(page["NextMarker"].as_str().unwrap().to_string());
        } else {
            break;
        }
    }
    assert_eq!(seen, ids);

    let key = &ids[0];
    h.call(
        "TagResource",
        json!({"KeyId": key, "Tags": [{"TagKey": "env", "TagValue": "prod"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        h.err(
            "TagResource",
            json!({"KeyId": key, "Tags": [{"TagKey": "aws:x", "TagValue": "y"}]})
        )
        .await,
        "TagException"
    );
    h.call("UntagResource", json!({"KeyId": key, "TagKeys": ["team"]}))
        .await
        .unwrap();
    let tags = h
        .call("ListResourceTags", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(tags["Tags"], json!([{"TagKey": "env", "TagValue": "prod"}]));

    let policy = h.call("GetKeyPolicy", json!({"KeyId": key})).await.unwrap();
    assert!(policy["Policy"]
        .as_str()
        .unwrap()
        .contains("arn:aws:iam::111122223333:root"));
    assert_eq!(
        h.err("PutKeyPolicy", json!({"KeyId": key, "Policy": "{not json"}))
            .await,
        "MalformedPolicyDocumentException"
    );
    // A document that would lock the caller out is refused unless the check is bypassed.
    let lockout = json!({"Version": "2012-10-17", "Statement": []}).to_string();
    assert_eq!(
        h.err("PutKeyPolicy", json!({"KeyId": key, "Policy": lockout}))
            .await,
        "MalformedPolicyDocumentException"
    );
    let new_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/app"},
         "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"}
    ]})
    .to_string();
    h.call("PutKeyPolicy", json!({"KeyId": key, "Policy": new_policy}))
        .await
        .unwrap();
    let restarted = h.reopen().await;
    let resp = restarted
        .dispatch_json(
            &h.ctx,
            "GetKeyPolicy",
            json!({"KeyId": key}).to_string().as_bytes(),
        )
        .await;
    let out: Value = serde_json::from_slice(&resp.result.unwrap()).unwrap();
    assert_eq!(out["Policy"], new_policy);
}

/// Wrap material the way `openssl pkeyutl` / the AWS docs do, with our own crypto's public API.
fn wrap_for_import(public_der: &[u8], material: &[u8]) -> Vec<u8> {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
    let key =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(public_der).unwrap()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let n = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, material, &mut out, None)
        .unwrap()
        .len();
    out.truncate(n);
    out
}

#[tokio::test]
async fn import_expire_and_reimport_same_material() {
    let h = harness().await;
    let key = h.create(json!({"Origin": "EXTERNAL"})).await;
    assert_eq!(h.state(&key).await, "PendingImport");
    assert_eq!(
        h.err("Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
            .await,
        "KMSInvalidStateException"
    );

    let material = [42u8; 32];
    let import = |valid_to: Option<f64>| {
        let h = &h;
        let key = key.clone();
        async move {
            let params = h
                .call("GetParametersForImport", json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}))
                .await
                .unwrap();
            let public = B64.decode(params["PublicKey"].as_str().unwrap()).unwrap();
            let wrapped = wrap_for_import(&public, &material);
            let mut body = json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": B64.encode(wrapped)});
            if let Some(t) = valid_to {
                body["ValidTo"] = json!(t);
            }
            h.call("ImportKeyMaterial", body).await
        }
    };
    let now_secs = h.kms.now() as f64 / 1000.0;
    import(Some(now_secs + 3600.0)).await.unwrap();
    assert_eq!(h.state(&key).await, "Enabled");
    let blob = h.encrypt(&key, b"imported", json!({})).await;
    assert_eq!(h.decrypt(&blob, json!({})).await.unwrap(), b"imported");
    let meta = h.call("DescribeKey", json!({"KeyId": key})).await.unwrap();
    assert_eq!(
        meta["KeyMetadata"]["ExpirationModel"],
        "KEY_MATERIAL_EXPIRES"
    );

    // Expiry: unusable at once, swept into PendingImport.
    h.clock.advance(3601 * 1000);
    assert_eq!(h.state(&key).await, "PendingImport");
    assert_eq!(
        h.decrypt(&blob, json!({})).await.unwrap_err(),
        "KMSInvalidStateException"
    );
    let mut changes = h.kms.subscribe_key_changes();
    h.kms.run_due_work().await.unwrap();
    assert_eq!(h.state(&key).await, "PendingImport");
    let swept = drain(&mut changes);
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].key_id.to_string(), key);

    // Re-import of the same material brings the old ciphertext back, and is a change: a
    // controller waiting on the PendingImport key hears of it at once.
    import(None).await.unwrap();
    assert_eq!(h.decrypt(&blob, json!({})).await.unwrap(), b"imported");
    let reimported = drain(&mut changes);
    assert_eq!(reimported.len(), 1);
    assert_eq!(reimported[0].key_id.to_string(), key);

    // Different material is refused; a token for another key is refused.
    let params = h
        .call("GetParametersForImport", json!({"KeyId": key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"}))
        .await
        .unwrap();
    let public = B64.decode(params["PublicKey"].as_str().unwrap()).unwrap();
    let other_material = wrap_for_import(&public, &[1u8; 32]);
    let (kind, _) = h
        .call("ImportKeyMaterial", json!({"KeyId": key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": B64.encode(&other_material)}))
        .await
        .unwrap_err();
    assert_eq!(kind, "IncorrectKeyMaterialException");
    let other_key = h.create(json!({"Origin": "EXTERNAL"})).await;
    let (kind, _) = h
        .call("ImportKeyMaterial", json!({"KeyId": other_key, "ImportToken": params["ImportToken"], "EncryptedKeyMaterial": B64.encode(&other_material)}))
        .await
        .unwrap_err();
    assert_eq!(kind, "InvalidImportTokenException");

    h.call("DeleteImportedKeyMaterial", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(h.state(&key).await, "PendingImport");
    let aws_key = h.create(json!({})).await;
    assert_eq!(h.err("GetParametersForImport", json!({"KeyId": aws_key, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_2048"})).await, "UnsupportedOperationException");
}

#[tokio::test]
async fn records_from_another_replica_are_served() {
    // Two engines over one store, as two replicas over the cluster store.
    let h = harness().await;
    let other = h.reopen().await;
    let key = h.create(json!({})).await;
    let blob = h.encrypt(&key, b"shared", json!({})).await;
    h.call("RotateKeyOnDemand", json!({"KeyId": key}))
        .await
        .unwrap();
    let newer = h.encrypt(&key, b"newer", json!({})).await;

    let decrypt = |kms: Arc<Kms>, blob: String| {
        let ctx = h.ctx.clone();
        async move {
            kms.dispatch_json(
                &ctx,
                "Decrypt",
                json!({"CiphertextBlob": blob}).to_string().as_bytes(),
            )
            .await
            .result
            .map_err(|e| e.aws_type())
        }
    };
    assert!(decrypt(other.clone(), blob.clone()).await.is_err());
    for record in h.store.load().await.unwrap().keys {
        other.apply_stored_key(record).unwrap();
    }
    assert!(decrypt(other.clone(), blob.clone()).await.is_ok());
    assert!(decrypt(other.clone(), newer).await.is_ok());
    other.forget_key(crate::record::KeyId::parse(&key).unwrap());
    assert_eq!(
        decrypt(other, blob).await.unwrap_err(),
        "InvalidCiphertextException"
    );
}

#[tokio::test]
async fn overlapping_due_work_passes_rotate_once() {
    let h = harness().await;
    let key = h.create(json!({})).await;
    h.call(
        "EnableKeyRotation",
        json!({"KeyId": key, "RotationPeriodInDays": 90}),
    )
    .await
    .unwrap();
    h.clock.advance(91 * MILLIS_PER_DAY);
    let (a, b) = tokio::join!(h.kms.run_due_work(), h.kms.run_due_work());
    a.unwrap();
    b.unwrap();
    let rotations = h
        .call("ListKeyRotations", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(rotations["Rotations"].as_array().unwrap().len(), 1);
}

/// A memory store that counts key writes per key and how many are in flight at once; each
/// write yields to the runtime so concurrent callers really overlap.
#[derive(Default)]
struct CountingStore {
    inner: Arc<MemoryStore>,
    puts: parking_lot::Mutex<std::collections::HashMap<String, usize>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn puts(&self, key_id: &str) -> usize {
        self.puts.lock().get(key_id).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl KeyStore for CountingStore {
    async fn load(&self) -> crate::Result<crate::store::Snapshot> {
        self.inner.load().await
    }

    async fn put_key(&self, key: &crate::record::KeyRecord) -> crate::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        *self.puts.lock().entry(key.key_id.to_string()).or_default() += 1;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.max_in_flight.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        self.inner.put_key(key).await
    }

    async fn delete_key(&self, scope: &Scope, key_id: crate::record::KeyId) -> crate::Result<()> {
        self.inner.delete_key(scope, key_id).await
    }

    async fn put_alias(&self, alias: &crate::record::AliasRecord) -> crate::Result<()> {
        self.inner.put_alias(alias).await
    }

    async fn delete_alias(&self, scope: &Scope, name: &str) -> crate::Result<()> {
        self.inner.delete_alias(scope, name).await
    }
}

/// The usual harness over a [`CountingStore`].
async fn counting_harness() -> (Harness, Arc<CountingStore>) {
    let store = Arc::new(CountingStore::default());
    let h = harness_over(store.clone(), store.inner.clone()).await;
    (h, store)
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<KeyChanged>) -> Vec<KeyChanged> {
    let mut out = Vec::new();
    while let Ok(change) = rx.try_recv() {
        out.push(change);
    }
    out
}

#[tokio::test]
async fn create_key_with_rotation_period_is_one_write() {
    let (h, store) = counting_harness().await;
    let before = h.kms.now();
    let key = h
        .create(json!({"Description": "rotating", "KubekmsRotationPeriodInDays": 120}))
        .await;
    let after = h.kms.now();
    assert_eq!(store.puts(&key), 1, "rotation set in the creating write");

    let status = h
        .call("GetKeyRotationStatus", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(status["KeyRotationEnabled"], true);
    assert_eq!(status["RotationPeriodInDays"], 120);
    let next = status["NextRotationDate"].as_f64().unwrap();
    let period = (120 * MILLIS_PER_DAY) as f64 / 1000.0;
    assert!(next >= before as f64 / 1000.0 + period);
    assert!(next <= after as f64 / 1000.0 + period);
    // Same next date as the record's creation date plus one period, as EnableKeyRotation at
    // creation time would set it.
    let created = h.call("DescribeKey", json!({"KeyId": key})).await.unwrap()["KeyMetadata"]
        ["CreationDate"]
        .as_f64()
        .unwrap();
    assert!((next - (created + period)).abs() < 1e-6);

    // The field is optional: without it, no rotation and still one write.
    let plain = h.create(json!({})).await;
    assert_eq!(store.puts(&plain), 1);
    let status = h
        .call("GetKeyRotationStatus", json!({"KeyId": plain}))
        .await
        .unwrap();
    assert_eq!(status["KeyRotationEnabled"], false);

    // It rotates like any key with rotation enabled.
    h.clock.advance(121 * MILLIS_PER_DAY);
    h.kms.run_due_work().await.unwrap();
    let rotations = h
        .call("ListKeyRotations", json!({"KeyId": key}))
        .await
        .unwrap();
    assert_eq!(rotations["Rotations"].as_array().unwrap().len(), 1);
    let rotations = h
        .call("ListKeyRotations", json!({"KeyId": plain}))
        .await
        .unwrap();
    assert!(rotations["Rotations"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn create_key_rotation_period_is_validated() {
    let (h, store) = counting_harness().await;
    let count = |h: &Harness| {
        let kms = h.kms.clone();
        async move {
            let ctx = ctx("111122223333", "us-east-1");
            let out = kms
                .dispatch_json(&ctx, "ListKeys", b"{}")
                .await
                .result
                .unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            v["Keys"].as_array().unwrap().len()
        }
    };
    for days in [89, 2561, 0, -5] {
        let (kind, message) = h
            .call("CreateKey", json!({"KubekmsRotationPeriodInDays": days}))
            .await
            .unwrap_err();
        assert_eq!(kind, "ValidationException", "period {days}");
        assert!(
            message.contains("kubekmsRotationPeriodInDays")
                && message.contains("between 90 and 2560"),
            "{message}"
        );
    }
    for days in [90, 2560] {
        h.create(json!({"KubekmsRotationPeriodInDays": days})).await;
    }
    assert_eq!(count(&h).await, 2);

    for body in [
        json!({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY", "KubekmsRotationPeriodInDays": 365}),
        json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC", "KubekmsRotationPeriodInDays": 365}),
        json!({"Origin": "EXTERNAL", "KubekmsRotationPeriodInDays": 365}),
    ] {
        let (kind, message) = h.call("CreateKey", body.clone()).await.unwrap_err();
        assert_eq!(kind, "UnsupportedOperationException", "{body}");
        assert!(
            message.contains("does not support automatic rotation"),
            "{message}"
        );
    }
    assert_eq!(count(&h).await, 2, "refused keys were not created");
    assert_eq!(store.puts.lock().len(), 2, "nor written");
}

#[tokio::test]
async fn due_work_rotates_many_keys_concurrently_and_reports_each_once() {
    let (h, store) = counting_harness().await;
    let mut keys = Vec::new();
    for _ in 0..100 {
        keys.push(h.create(json!({"KubekmsRotationPeriodInDays": 90})).await);
    }
    let mut changes = h.kms.subscribe_key_changes();
    let dropped = h.kms.subscribe_key_changes();
    drop(dropped);
    store
        .max_in_flight
        .store(0, std::sync::atomic::Ordering::SeqCst);

    h.clock.advance(91 * MILLIS_PER_DAY);
    h.kms.run_due_work().await.unwrap();

    let max = store
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max > 1 && max <= super::DUE_WORK_CONCURRENCY,
        "{max} writes in flight at once"
    );
    let events = drain(&mut changes);
    assert_eq!(events.len(), keys.len());
    let mut seen = std::collections::HashMap::new();
    for e in &events {
        assert_eq!(e.scope, h.ctx.scope);
        *seen.entry(e.key_id.to_string()).or_insert(0) += 1;
    }
    for key in &keys {
        assert_eq!(seen.get(key), Some(&1), "{key}");
        assert_eq!(store.puts(key), 2, "created, then rotated once");
        let rotations = h
            .call("ListKeyRotations", json!({"KeyId": key}))
            .await
            .unwrap();
        let rotations = rotations["Rotations"].as_array().unwrap();
        assert_eq!(rotations.len(), 1);
        assert_eq!(rotations[0]["RotationType"], "AUTOMATIC");
    }
    assert_eq!(
        h.kms.key_watchers.lock().len(),
        1,
        "closed subscriber dropped"
    );

    // Nothing is due any more: a second pass changes nothing and reports nothing.
    h.kms.run_due_work().await.unwrap();
    assert!(drain(&mut changes).is_empty());
    assert_eq!(store.puts(&keys[0]), 2);
}

#[tokio::test]
async fn due_work_reports_destroyed_keys() {
    let h = harness().await;
    let doomed = h.create(json!({})).await;
    let kept = h.create(json!({})).await;
    h.call(
        "ScheduleKeyDeletion",
        json!({"KeyId": doomed, "PendingWindowInDays": 7}),
    )
    .await
    .unwrap();
    let mut changes = h.kms.subscribe_key_changes();
    h.kms.run_due_work().await.unwrap();
    assert!(drain(&mut changes).is_empty(), "nothing due yet");
    h.clock.advance(8 * MILLIS_PER_DAY);
    h.kms.run_due_work().await.unwrap();
    assert_eq!(
        drain(&mut changes),
        vec![KeyChanged {
            scope: h.ctx.scope.clone(),
            key_id: crate::record::KeyId::parse(&doomed).unwrap()
        }]
    );
    assert!(h
        .store
        .load()
        .await
        .unwrap()
        .keys
        .iter()
        .all(|k| k.key_id.to_string() != doomed));
    assert_eq!(h.state(&kept).await, "Enabled");
}

#[tokio::test]
async fn requests_that_change_a_key_are_reported_but_creation_and_use_are_not() {
    let h = harness().await;
    let mut changes = h.kms.subscribe_key_changes();
    let key = h.create(json!({})).await;
    h.call("Encrypt", json!({"KeyId": key, "Plaintext": "aGk="}))
        .await
        .unwrap();
    h.call("DescribeKey", json!({"KeyId": key})).await.unwrap();
    assert!(drain(&mut changes).is_empty(), "created and used only");

    let expected = vec![KeyChanged {
        scope: h.ctx.scope.clone(),
        key_id: crate::record::KeyId::parse(&key).unwrap(),
    }];
    for (operation, body) in [
        ("DisableKey", json!({"KeyId": key})),
        ("EnableKey", json!({"KeyId": key})),
        ("RotateKeyOnDemand", json!({"KeyId": key})),
        (
            "ScheduleKeyDeletion",
            json!({"KeyId": key, "PendingWindowInDays": 7}),
        ),
        ("CancelKeyDeletion", json!({"KeyId": key})),
    ] {
        h.call(operation, body).await.unwrap();
        assert_eq!(drain(&mut changes), expected, "{operation}");
    }
    assert_eq!(
        h.err("EnableKey", json!({"KeyId": "alias/none"})).await,
        "NotFoundException"
    );
    assert!(drain(&mut changes).is_empty(), "a refused request");
}

#[tokio::test]
async fn replica_writes_are_reported_but_echoes_are_not() {
    let h = harness().await;
    let other = h.reopen().await;
    let mut changes = other.subscribe_key_changes();
    let key = h.create(json!({})).await;
    let stored = || async {
        h.store
            .load()
            .await
            .unwrap()
            .keys
            .into_iter()
            .find(|k| k.key_id.to_string() == key)
            .unwrap()
    };
    let expected = KeyChanged {
        scope: h.ctx.scope.clone(),
        key_id: crate::record::KeyId::parse(&key).unwrap(),
    };

    other.apply_stored_key(stored().await).unwrap();
    assert_eq!(
        drain(&mut changes),
        vec![expected.clone()],
        "new to this replica"
    );
    other.apply_stored_key(stored().await).unwrap();
    assert!(drain(&mut changes).is_empty(), "same record again");

    h.call("DisableKey", json!({"KeyId": key})).await.unwrap();
    other.apply_stored_key(stored().await).unwrap();
    assert_eq!(drain(&mut changes), vec![expected.clone()], "changed");

    // The echo of an engine's own write is not a change for that engine.
    let mut own = h.kms.subscribe_key_changes();
    h.kms.apply_stored_key(stored().await).unwrap();
    assert!(drain(&mut own).is_empty());

    other.forget_key(crate::record::KeyId::parse(&key).unwrap());
    assert_eq!(drain(&mut changes), vec![expected], "removed");
    other.forget_key(crate::record::KeyId::parse(&key).unwrap());
    assert!(drain(&mut changes).is_empty(), "already gone");
}

#[tokio::test]
async fn describe_key_lists_algorithms_by_their_aws_names() {
    let h = harness().await;
    let describe = |key: String| {
        let h = &h;
        async move { h.call("DescribeKey", json!({"KeyId": key})).await.unwrap()["KeyMetadata"].clone() }
    };
    let md = describe(h.create(json!({})).await).await;
    assert_eq!(md["EncryptionAlgorithms"], json!(["SYMMETRIC_DEFAULT"]));
    assert!(md.get("SigningAlgorithms").is_none());
    assert!(md.get("MacAlgorithms").is_none());
    let md = describe(
        h.create(json!({"KeySpec": "ECC_NIST_P384", "KeyUsage": "SIGN_VERIFY"}))
            .await,
    )
    .await;
    assert_eq!(md["SigningAlgorithms"], json!(["ECDSA_SHA_384"]));
    assert!(md.get("EncryptionAlgorithms").is_none());
    let md = describe(
        h.create(json!({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}))
            .await,
    )
    .await;
    assert_eq!(md["MacAlgorithms"], json!(["HMAC_SHA_256"]));
    assert!(md.get("EncryptionAlgorithms").is_none());
}

/// A key backend that keeps its keys to itself, as an HSM does: `generate` hands the engine
/// only a handle (which the engine wraps and stores like material), and every operation looks
/// the key up inside the vault. Counts its uses, to show the engine went through it.
mod vault {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use parking_lot::Mutex;
    use zeroize::Zeroizing;

    use crate::crypto::{random_bytes, KeyHandle, KeyMaterial, KeyProvider, PreparedKey};
    use crate::error::{KmsError, Result};
    use crate::model::KeySpec;

    #[derive(Default)]
    pub struct Vault {
        keys: Mutex<Vec<Zeroizing<Vec<u8>>>>,
        pub uses: AtomicUsize,
    }

    impl Vault {
        /// The key `handle` names, used inside the vault for one operation.
        fn with_key<T>(
            &self,
            handle: usize,
            f: impl FnOnce(&PreparedKey) -> Result<T>,
        ) -> Result<T> {
            self.uses.fetch_add(1, Ordering::Relaxed);
            let keys = self.keys.lock();
            let key = keys.get(handle).ok_or(KmsError::InvalidCiphertext)?;
            f(&PreparedKey::new(
                KeySpec::SymmetricDefault,
                &KeyMaterial::from_slice(key),
            )?)
        }
    }

    pub struct VaultProvider(pub Arc<Vault>);

    struct VaultKey {
        vault: Arc<Vault>,
        handle: usize,
    }

    pub const HANDLE_LEN: usize = 8;

    impl KeyProvider for VaultProvider {
        fn generate(&self, spec: KeySpec) -> Result<KeyMaterial> {
            if spec != KeySpec::SymmetricDefault {
                return Err(KmsError::UnsupportedOperation(
                    "the vault holds AES keys".into(),
                ));
            }
            let mut keys = self.0.keys.lock();
            keys.push(random_bytes(32)?);
            let handle = (keys.len() - 1) as u64;
            Ok(KeyMaterial::from_slice(&handle.to_be_bytes()))
        }

        fn prepare(&self, _spec: KeySpec, material: &KeyMaterial) -> Result<Arc<dyn KeyHandle>> {
            let bytes: [u8; HANDLE_LEN] = material
                .expose()
                .try_into()
                .map_err(|_| KmsError::IncorrectKeyMaterial("not a vault handle".into()))?;
            Ok(Arc::new(VaultKey {
                vault: self.0.clone(),
                handle: u64::from_be_bytes(bytes) as usize,
            }))
        }

        fn key_pair(&self, _spec: KeySpec) -> Result<(KeyMaterial, Vec<u8>)> {
            Err(KmsError::UnsupportedOperation(
                "the vault holds AES keys".into(),
            ))
        }
    }

    impl KeyHandle for VaultKey {
        fn spec(&self) -> KeySpec {
            KeySpec::SymmetricDefault
        }

        fn seal_into(&self, out: &mut Vec<u8>, aad: &[u8], plaintext: &[u8]) -> Result<()> {
            self.vault
                .with_key(self.handle, |k| k.seal_into(out, aad, plaintext))
        }

        fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
            self.vault.with_key(self.handle, |k| k.open(aad, sealed))
        }
    }
}

#[tokio::test]
async fn a_second_key_backend_serves_encrypt_and_decrypt_through_the_same_operations() {
    use std::sync::atomic::Ordering;

    let store = Arc::new(MemoryStore::new());
    let vault = Arc::new(vault::Vault::default());
    let kms = Kms::open_with(
        store.clone(),
        RootKey::from_bytes(&ROOT).unwrap(),
        SystemClock::new(),
        super::Backends {
            key_provider: Arc::new(vault::VaultProvider(vault.clone())),
            ..super::Backends::default()
        },
    )
    .await
    .unwrap();
    let h = Harness {
        kms,
        store: store.clone(),
        clock: SystemClock::new(),
        ctx: ctx("111122223333", "us-east-1"),
    };
    let key = h.create(json!({})).await;
    let blob = h
        .encrypt(&key, b"held by the vault", json!({"app": "x"}))
        .await;
    assert_eq!(
        h.decrypt(&blob, json!({"app": "x"})).await.unwrap(),
        b"held by the vault"
    );
    assert_eq!(
        h.decrypt(&blob, json!({"app": "y"})).await.unwrap_err(),
        "InvalidCiphertextException"
    );
    assert!(vault.uses.load(Ordering::Relaxed) >= 3);

    // What the engine stored (wrapped under the root key) is the vault's handle, not a key.
    let snapshot = store.load().await.unwrap();
    let record = snapshot
        .keys
        .iter()
        .find(|r| r.key_id.to_string() == key)
        .expect("the key is stored");
    let version = &record.versions[0];
    let stored = RootKey::from_bytes(&ROOT)
        .unwrap()
        .unwrap(
            &super::material_aad(record.key_id, version.version),
            &version.wrapped_material,
        )
        .unwrap();
    assert_eq!(stored.expose().len(), vault::HANDLE_LEN);

    // An engine with the default backend over the same store cannot use the handle as a key.
    let plain = Kms::open(
        store.clone(),
        RootKey::from_bytes(&ROOT).unwrap(),
        SystemClock::new(),
    )
    .await;
    assert!(plain.is_err(), "an 8-byte handle is not AES-256 material");
}
