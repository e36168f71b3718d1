//! The issue's "How it is checked", against the real operator and control plane: the examples
//! become Ready keys, serve through an Alias, rotate, disable, delete into a cancellable window
//! and are destroyed when the (test) clock passes its end; an operator killed mid-way loses
//! nothing.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState, MessageType, SigningAlgorithmSpec};
use kubekms_crds::{Alias, Key, KeyStatus};
use kubekms_e2e::{repo_root, wait_for, Store, TestEnv, ACCOUNT, REGION};

mod common;
use common::{error_code, is_ready, state_is, wait_event, wait_key};

/// How long a Key may take to become Ready: "within seconds".
const READY_WITHIN: Duration = Duration::from_secs(20);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn example(name: &str) -> String {
    repo_root()
        .join("examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `kubectl patch` of Key `name`'s spec with the JSON merge patch `spec`.
async fn patch_spec(env: &TestEnv, name: &str, spec: &str) -> Result<String> {
    let patch = format!(r#"{{"spec":{spec}}}"#);
    env.kubectl(&["patch", "key", name, "--type=merge", "-p", &patch])
        .await
}

async fn wait_key_ready(env: &TestEnv, name: &str) -> Result<KeyStatus> {
    wait_key(env, name, "Ready", READY_WITHIN, |s| {
        is_ready(&s.conditions) && s.key_id.is_some() && s.arn.is_some()
    })
    .await
}

fn arn_of(key_id: &str) -> String {
    format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
}

async fn encrypt(kms: &aws_sdk_kms::Client, key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
    let out = kms
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(plaintext))
        .send()
        .await
        .with_context(|| format!("Encrypt with {key}"))?;
    Ok(out
        .ciphertext_blob()
        .context("no CiphertextBlob")?
        .as_ref()
        .to_vec())
}

async fn decrypt(kms: &aws_sdk_kms::Client, ciphertext: &[u8]) -> Result<(Vec<u8>, String)> {
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext))
        .send()
        .await
        .context("Decrypt")?;
    Ok((
        out.plaintext().context("no Plaintext")?.as_ref().to_vec(),
        out.key_id().unwrap_or_default().to_owned(),
    ))
}

async fn engine_state(kms: &aws_sdk_kms::Client, key: &str) -> Result<KeyState> {
    let out = kms.describe_key().key_id(key).send().await?;
    Ok(out
        .key_metadata()
        .context("no KeyMetadata")?
        .key_state()
        .context("no KeyState")?
        .clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_live_through_rotation_disable_deletion_and_its_window() -> Result<()> {
    let mut env = TestEnv::with_operator("lifecycle").await?;
    let started = Instant::now();
    env.kubectl(&["apply", "-f", &example("")]).await?;

    // Keys Ready within seconds, with key id and ARN.
    let orders = wait_key_ready(&env, "orders").await?;
    let signing = wait_key_ready(&env, "release-signing").await?;
    eprintln!("examples Ready after {:?}", started.elapsed());
    let key_id = orders.key_id.clone().unwrap();
    let arn = orders.arn.clone().unwrap();
    assert_eq!(arn, arn_of(&key_id));
    assert_ne!(key_id, signing.key_id.clone().unwrap());
    assert!(state_is(&orders, "Enabled"), "{orders:?}");
    assert_eq!(orders.current_key_version, Some(1), "{orders:?}");
    assert!(
        orders.next_rotation.is_some(),
        "rotation enabled: {orders:?}"
    );
    // The External key has no material until an ImportedMaterial brings some.
    let byok = wait_key(&env, "byok", "PendingImport", READY_WITHIN, |s| {
        state_is(s, "PendingImport")
    })
    .await?;
    assert!(!is_ready(&byok.conditions), "{byok:?}");
    wait_event(&env, "Key", "orders", "Created").await?;

    let kms = env.kms()?;
    let md = kms.describe_key().key_id(&arn).send().await?;
    let md = md.key_metadata().unwrap();
    assert_eq!(md.description(), Some("Encrypts order records"));
    let tags = kms.list_resource_tags().key_id(&key_id).send().await?;
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.tag_key() == "team" && t.tag_value() == "payments"),
        "{tags:?}"
    );

    // Encrypt through the Alias.
    let alias_name = format!("alias/{}/orders", env.namespace);
    let alias = wait_for("Alias orders Ready", READY_WITHIN, || async {
        let alias = env.api::<Alias>().get("orders").await?;
        Ok(alias
            .status
            .filter(|s| is_ready(&s.conditions) && s.key_arn.is_some()))
    })
    .await?;
    assert_eq!(alias.key_arn.as_deref(), Some(arn.as_str()));
    assert_eq!(alias.alias_name.as_deref(), Some(alias_name.as_str()));
    let v1_ciphertext = encrypt(&kms, &alias_name, b"order 1").await?;
    let (plain, by) = decrypt(&kms, &v1_ciphertext).await?;
    assert_eq!(plain, b"order 1");
    assert_eq!(by, arn);

    // The signing key signs, and verifies its own signature.
    let signing_arn = signing.arn.unwrap();
    let signature = kms
        .sign()
        .key_id(&signing_arn)
        .message(Blob::new(b"release 1.0".as_slice()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await?;
    let verified = kms
        .verify()
        .key_id(&signing_arn)
        .message(Blob::new(b"release 1.0".as_slice()))
        .message_type(MessageType::Raw)
        .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
        .signature(signature.signature().unwrap().clone())
        .send()
        .await?;
    assert!(verified.signature_valid());

    // Rotate on demand: a new version, and the old ciphertext still decrypts.
    env.kubectl(&[
        "annotate",
        "key",
        "orders",
        "kubekms.io/rotate=first",
        "--overwrite",
    ])
    .await?;
    let rotated = wait_key(&env, "orders", "version 2", READY_WITHIN, |s| {
        s.current_key_version == Some(2)
    })
    .await?;
    assert_eq!(rotated.key_id.as_deref(), Some(key_id.as_str()));
    assert!(rotated.last_rotation.is_some(), "{rotated:?}");
    wait_event(&env, "Key", "orders", "Rotated").await?;
    // One request rotates once, even though the rotation itself wakes the Key again (through
    // the engine's change feed) before the handled annotation may have reached the watch.
    let keys = env.api::<Key>();
    wait_for(
        "the rotate request marked handled",
        READY_WITHIN,
        || async {
            let key = keys.get("orders").await?;
            let handled = key
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubekms.io/rotate-handled"));
            Ok((handled.map(String::as_str) == Some("first")).then_some(()))
        },
    )
    .await?;
    let rotations = kms.list_key_rotations().key_id(&key_id).send().await?;
    assert_eq!(rotations.rotations().len(), 1, "{rotations:?}");
    let v2_ciphertext = encrypt(&kms, &alias_name, b"order 2").await?;
    assert_eq!(decrypt(&kms, &v1_ciphertext).await?.0, b"order 1");
    assert_eq!(decrypt(&kms, &v2_ciphertext).await?.0, b"order 2");

    // Disable: DisabledException; enable again: usable.
    patch_spec(&env, "orders", r#"{"enabled":false}"#).await?;
    let disabled = wait_key(&env, "orders", "Disabled", READY_WITHIN, |s| {
        state_is(s, "Disabled")
    })
    .await?;
    assert!(
        is_ready(&disabled.conditions),
        "Disabled as asked: {disabled:?}"
    );
    let code = error_code(
        kms.encrypt()
            .key_id(&alias_name)
            .plaintext(Blob::new(b"x".as_slice()))
            .send()
            .await,
    );
    assert_eq!(code, "DisabledException");
    let code = error_code(
        kms.decrypt()
            .ciphertext_blob(Blob::new(v1_ciphertext.clone()))
            .send()
            .await,
    );
    assert_eq!(code, "DisabledException");
    patch_spec(&env, "orders", r#"{"enabled":true}"#).await?;
    wait_key(&env, "orders", "Enabled again", READY_WITHIN, |s| {
        state_is(s, "Enabled") && is_ready(&s.conditions)
    })
    .await?;
    assert_eq!(decrypt(&kms, &v1_ciphertext).await?.0, b"order 1");

    // Disabled behind the operator's back (straight through the KMS API): the engine's change
    // feed wakes the Key at once (its next requeue is minutes away) and the spec wins again.
    kms.disable_key().key_id(&key_id).send().await?;
    wait_for(
        "the Key enabled again after DisableKey",
        READY_WITHIN,
        || async { Ok((engine_state(&kms, &arn).await? == KeyState::Enabled).then_some(())) },
    )
    .await?;

    // Delete: PendingDeletion for the window, unusable at once.
    env.kubectl(&["delete", "key", "orders", "--timeout=30s"])
        .await?;
    assert_eq!(engine_state(&kms, &arn).await?, KeyState::PendingDeletion);
    let md = kms.describe_key().key_id(&arn).send().await?;
    let deletion_date = md.key_metadata().unwrap().deletion_date().unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let window = deletion_date - now;
    assert!(
        (7 * 86400 - 120..=7 * 86400 + 120).contains(&window),
        "deletionWindowDays 7, deletion in {window} s"
    );
    assert_eq!(
        error_code(
            kms.decrypt()
                .ciphertext_blob(Blob::new(v1_ciphertext.clone()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    wait_event(&env, "Key", "orders", "DeletionScheduled").await?;

    // Apply the same manifest again within the window: the same key comes back.
    env.kubectl(&["apply", "-f", &example("key.yaml")]).await?;
    let back = wait_key_ready(&env, "orders").await?;
    assert_eq!(back.arn.as_deref(), Some(arn.as_str()), "same ARN");
    assert_eq!(back.current_key_version, Some(2), "same material: {back:?}");
    assert_eq!(engine_state(&kms, &arn).await?, KeyState::Enabled);
    assert_eq!(decrypt(&kms, &v1_ciphertext).await?.0, b"order 1");
    assert_eq!(decrypt(&kms, &v2_ciphertext).await?.0, b"order 2");
    wait_event(&env, "Key", "orders", "DeletionCancelled").await?;

    // Delete again and let the window pass on the test clock: gone for good.
    env.kubectl(&["delete", "key", "orders", "--timeout=30s"])
        .await?;
    assert_eq!(engine_state(&kms, &arn).await?, KeyState::PendingDeletion);
    env.operator()?
        .advance_clock(7 * DAY + Duration::from_secs(3600))
        .await?;
    let gone = wait_for("the key's destruction", Duration::from_secs(10), || async {
        match kms.describe_key().key_id(&arn).send().await {
            Ok(_) => Ok(None),
            Err(e) => Ok(Some(e.code().unwrap_or_default().to_owned())),
        }
    })
    .await?;
    assert_eq!(gone, "NotFoundException");
    let code = error_code(
        kms.decrypt()
            .ciphertext_blob(Blob::new(v1_ciphertext.clone()))
            .send()
            .await,
    );
    assert!(
        code == "NotFoundException" || code == "InvalidCiphertextException",
        "{code}"
    );
    // Applying the manifest now makes a new key: the old material cannot come back.
    env.kubectl(&["apply", "-f", &example("key.yaml")]).await?;
    let fresh = wait_key_ready(&env, "orders").await?;
    assert_ne!(fresh.arn.as_deref(), Some(arn.as_str()));
    assert_eq!(fresh.current_key_version, Some(1), "{fresh:?}");
    let code = error_code(
        kms.decrypt()
            .ciphertext_blob(Blob::new(v2_ciphertext.clone()))
            .send()
            .await,
    );
    assert!(
        code == "NotFoundException" || code == "InvalidCiphertextException",
        "{code}"
    );

    if !env.operator_mut()?.is_running() {
        bail!("the operator died during the test");
    }
    env.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_rotation_happens_when_the_clock_reaches_the_period() -> Result<()> {
    let env = TestEnv::with_operator("autorotate").await?;
    env.kubectl(&["apply", "-f", &example("key.yaml")]).await?;
    let before = wait_key_ready(&env, "orders").await?;
    let arn = before.arn.clone().unwrap();
    let next = before.next_rotation.clone().context("no nextRotation")?;
    let kms = env.kms()?;
    let old = encrypt(&kms, &arn, b"before rotation").await?;

    // Not yet due: 89 days on, nothing rotates.
    env.operator()?.advance_clock(89 * DAY).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = wait_key_ready(&env, "orders").await?;
    assert_eq!(still.current_key_version, Some(1), "{still:?}");

    env.operator()?.advance_clock(2 * DAY).await?;
    let after = wait_key(&env, "orders", "version 2", READY_WITHIN, |s| {
        s.current_key_version == Some(2)
    })
    .await?;
    assert_eq!(after.arn.as_deref(), Some(arn.as_str()));
    let new_next = after.next_rotation.clone().context("no nextRotation")?;
    assert!(
        new_next.0 > next.0,
        "next rotation moved on: {next:?} -> {new_next:?}"
    );
    wait_event(&env, "Key", "orders", "RotatedAutomatically").await?;
    assert_eq!(decrypt(&kms, &old).await?.0, b"before rotation");
    env.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_way_loses_nothing_with_the_cluster_store() -> Result<()> {
    let env = restart_loses_nothing("restart-cluster", Store::Kubernetes).await?;
    // Everything it knew came back from the cluster: there is no local state to fall back on.
    let root = env
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get_opt("kubekms-root-key")
        .await?;
    assert!(
        root.is_some(),
        "the root key lives in a Secret of the operator's namespace"
    );
    env.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_way_loses_nothing_with_the_embedded_store() -> Result<()> {
    restart_loses_nothing("restart-embedded", Store::Embedded)
        .await?
        .pass();
    Ok(())
}

/// Kill -9 the operator twice with changes made while it is down, and once with none; every
/// time the same keys come back, the changes are applied and the status converges.
async fn restart_loses_nothing(test: &str, store: Store) -> Result<TestEnv> {
    let mut env = TestEnv::with_operator_store(test, store).await?;
    env.kubectl(&[
        "apply",
        "-f",
        &example("key.yaml"),
        "-f",
        &example("alias.yaml"),
    ])
    .await?;
    let orders = wait_key_ready(&env, "orders").await?;
    let key_id = orders.key_id.clone().unwrap();
    let alias_name = format!("alias/{}/orders", env.namespace);
    let ciphertext = wait_for("Encrypt through the Alias", READY_WITHIN, || async {
        Ok(encrypt(&env.kms()?, &alias_name, b"kept").await.ok())
    })
    .await?;

    // SIGKILL, then change things while nobody reconciles.
    env.operator_mut()?.kill();
    env.kubectl(&["annotate", "key", "orders", "kubekms.io/rotate=while-down"])
        .await?;
    patch_spec(&env, "orders", r#"{"description":"changed while down"}"#).await?;
    env.kubectl(&["apply", "-f", &example("sign-key.yaml")])
        .await?;

    env.operator_mut()?.restart().await?;
    let converged = wait_key(&env, "orders", "rotated", READY_WITHIN, |s| {
        s.current_key_version == Some(2) && is_ready(&s.conditions)
    })
    .await?;
    assert_eq!(
        converged.key_id.as_deref(),
        Some(key_id.as_str()),
        "same key"
    );
    let signing = wait_key_ready(&env, "release-signing").await?;
    let kms = env.kms()?;
    let md = kms.describe_key().key_id(&key_id).send().await?;
    assert_eq!(
        md.key_metadata().unwrap().description(),
        Some("changed while down")
    );
    // One engine key per Key object: the restart adopted rather than re-created.
    let listed = kms.list_keys().send().await?;
    let mut ids: Vec<&str> = listed.keys().iter().filter_map(|k| k.key_id()).collect();
    ids.sort();
    let mut want = vec![key_id.as_str(), signing.key_id.as_deref().unwrap()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(decrypt(&kms, &ciphertext).await?.0, b"kept");

    // Killed again; disabled while it is down.
    env.operator_mut()?.kill();
    patch_spec(&env, "orders", r#"{"enabled":false}"#).await?;
    env.operator_mut()?.restart().await?;
    let disabled = wait_key(&env, "orders", "Disabled", READY_WITHIN, |s| {
        state_is(s, "Disabled") && is_ready(&s.conditions)
    })
    .await?;
    assert_eq!(disabled.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(disabled.current_key_version, Some(2));
    let kms = env.kms()?;
    let code = error_code(
        kms.decrypt()
            .ciphertext_blob(Blob::new(ciphertext.clone()))
            .send()
            .await,
    );
    assert_eq!(code, "DisabledException");

    // Enabled, then a restart with nothing changed: everything is as it was.
    patch_spec(&env, "orders", r#"{"enabled":true}"#).await?;
    wait_key(&env, "orders", "Enabled", READY_WITHIN, |s| {
        state_is(s, "Enabled") && is_ready(&s.conditions)
    })
    .await?;
    env.operator_mut()?.restart().await?;
    let kms = env.kms()?;
    let again = wait_key_ready(&env, "orders").await?;
    assert_eq!(again.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(again.current_key_version, Some(2));
    assert_eq!(decrypt(&kms, &ciphertext).await?.0, b"kept");
    let listed = kms.list_keys().send().await?;
    assert_eq!(listed.keys().len(), 2, "{listed:?}");
    let alias = env.api::<Alias>().get("orders").await?;
    assert_eq!(
        alias.status.and_then(|s| s.key_arn),
        Some(arn_of(&key_id)),
        "the Alias still resolves"
    );
    assert!(!encrypt(&kms, &alias_name, b"x").await?.is_empty());
    Ok(env)
}
