//! Imported material, end to end: an External Key and an ImportedMaterial; 32 random bytes
//! wrapped with the `openssl` commands the ImportedMaterial documentation gives, stored in a
//! Secret; the key serves; the renewal warning, the expiry (on the test clock) into
//! PendingImport, and the re-import of the same material that brings old ciphertext back.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use kubekms_crds::{ImportState, ImportedMaterial, ImportedMaterialStatus};
use kubekms_e2e::{wait_for, TestEnv};

mod common;
use common::{condition, error_code, is_true, state_is, wait_event, wait_key};

const WITHIN: Duration = Duration::from_secs(20);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// RFC 3339 for `from_now` past the wall clock plus `offset` (where the test clock is).
fn rfc3339_in(offset: Duration, from_now: Duration) -> Result<String> {
    let secs = (SystemTime::now().duration_since(UNIX_EPOCH)? + offset + from_now).as_secs();
    Ok(k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs)?)?.to_string())
}

fn manifests(namespace: &str, valid_to: &str) -> String {
    format!(
        r#"apiVersion: kubekms.io/v1alpha1
kind: Key
metadata:
  name: byok
  namespace: {namespace}
spec:
  description: Bring-your-own-key material
  keySpec: SYMMETRIC_DEFAULT
  origin: External
  deletionWindowDays: 7
---
apiVersion: kubekms.io/v1alpha1
kind: ImportedMaterial
metadata:
  name: byok
  namespace: {namespace}
spec:
  keyRef:
    name: byok
  wrappingAlgorithm: RSA_AES_KEY_WRAP_SHA_256
  wrappingKeySpec: RSA_2048
  materialSecretRef:
    name: byok-material
  validTo: "{valid_to}"
  renewBefore: 240h
"#
    )
}

async fn wait_import(
    env: &TestEnv,
    what: &str,
    check: impl Fn(&ImportedMaterial, &ImportedMaterialStatus) -> bool,
) -> Result<ImportedMaterialStatus> {
    let api = env.api::<ImportedMaterial>();
    let check = &check;
    wait_for(&format!("ImportedMaterial byok: {what}"), WITHIN, || {
        let api = api.clone();
        async move {
            let im = api.get("byok").await?;
            let Some(status) = im.status.clone() else {
                return Ok(None);
            };
            Ok(
                (status.observed_generation == im.metadata.generation && check(&im, &status))
                    .then_some(status),
            )
        }
    })
    .await
}

/// Runs `script` with `sh` in `dir`, `kubectl` pointed at the test cluster and namespace.
fn sh(env: &TestEnv, dir: &Path, script: &str) -> Result<String> {
    let out = std::process::Command::new("sh")
        .args(["-euc", script])
        .current_dir(dir)
        .env("KUBECONFIG", env.cluster.kubeconfig())
        .env("NS", &env.namespace)
        .output()
        .context("running sh")?;
    if !out.status.success() {
        bail!(
            "script failed ({}):\n{script}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commands of the ImportedMaterial documentation for RSA_AES_KEY_WRAP_SHA_256, applied
/// to `material.bin` in `dir`: a fresh AES key for each wrap, the published public key and
/// token, and the Secret created (or replaced) from the result.
fn wrap_and_store(env: &TestEnv, dir: &Path) -> Result<()> {
    sh(
        env,
        dir,
        r#"
kubectl -n "$NS" get kmsimport byok -o jsonpath='{.status.wrappingPublicKey}' > wrapping.pem
kubectl -n "$NS" get kmsimport byok -o jsonpath='{.status.importToken}' | base64 -d > token.bin
openssl rand -out aes-key.bin 32
openssl pkeyutl -encrypt -in aes-key.bin -out enc-aes-key.bin -inkey wrapping.pem -pubin \
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
openssl enc -id-aes256-wrap-pad -K "$(xxd -p < aes-key.bin | tr -d '\n')" -iv A65959A6 \
  -in material.bin -out material-wrapped.bin
cat enc-aes-key.bin material-wrapped.bin > wrapped.bin
kubectl -n "$NS" create secret generic byok-material \
  --from-file=material=wrapped.bin --from-file=importToken=token.bin \
  --dry-run=client -o yaml | kubectl -n "$NS" apply -f -
"#,
    )?;
    Ok(())
}

/// The gauge's value for the test's Key, if the operator exports one.
fn gauge(metrics: &str, namespace: &str) -> Option<f64> {
    let prefix = format!(
        "kubekms_imported_material_expiry_seconds{{namespace=\"{namespace}\",key=\"byok\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_material_lives_through_renewal_expiry_and_reimport() -> Result<()> {
    let env = TestEnv::with_operator("import").await?;
    let started = Instant::now();
    let ns = env.namespace.clone();
    let work = env.dir().join("wrap");
    std::fs::create_dir_all(&work)?;
    let valid_to = rfc3339_in(Duration::ZERO, 30 * DAY)?;
    env.apply(&manifests(&ns, &valid_to)).await?;

    // Parameters published while the material is awaited.
    let awaiting = wait_import(&env, "AwaitingMaterial with parameters", |_, s| {
        s.import_state == Some(ImportState::AwaitingMaterial)
            && s.wrapping_public_key.is_some()
            && s.import_token.is_some()
    })
    .await?;
    let pem = awaiting.wrapping_public_key.clone().unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(!is_true(&awaiting.conditions, "Ready"), "{awaiting:?}");
    wait_event(&env, "ImportedMaterial", "byok", "ParametersPublished").await?;
    let key = wait_key(&env, "byok", "PendingImport", WITHIN, |s| {
        state_is(s, "PendingImport") && s.key_id.is_some()
    })
    .await?;
    let key_id = key.key_id.clone().unwrap();
    let kms = env.kms()?;
    assert_eq!(
        error_code(
            kms.encrypt()
                .key_id(&key_id)
                .plaintext(Blob::new(b"x".as_slice()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );

    // 32 random bytes, wrapped as documented, into the Secret: imported, the Key serves.
    sh(&env, &work, "openssl rand -out material.bin 32")?;
    let material = std::fs::read(work.join("material.bin"))?;
    assert_eq!(material.len(), 32);
    wrap_and_store(&env, &work)?;
    let imported = wait_import(&env, "Imported and Ready", |_, s| {
        s.import_state == Some(ImportState::Imported) && is_true(&s.conditions, "Ready")
    })
    .await?;
    assert_eq!(
        imported.expires_at.as_ref().map(|t| t.0.to_string()),
        Some(valid_to.clone()),
        "{imported:?}"
    );
    assert!(!is_true(&imported.conditions, "RenewalDue"), "{imported:?}");
    // What was imported is remembered by digest only.
    let im = env.api::<ImportedMaterial>().get("byok").await?;
    let digest = im
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubekms.io/imported-material-digest"))
        .cloned()
        .context("no import digest annotation")?;
    assert!(digest.starts_with(&format!("{key_id}/")), "{digest}");
    let yaml = env
        .kubectl(&["get", "kmsimport", "byok", "-o", "yaml"])
        .await?;
    for file in ["material.bin", "wrapped.bin"] {
        let b64 = sh(&env, &work, &format!("base64 -w0 {file}"))?;
        assert!(!yaml.contains(b64.trim()), "{file} leaked into the object");
    }
    wait_key(&env, "byok", "Enabled and Ready", WITHIN, |s| {
        state_is(s, "Enabled") && is_true(&s.conditions, "Ready")
    })
    .await?;
    eprintln!("imported and Key Ready after {:?}", started.elapsed());

    let ciphertext = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"bring your own".as_slice()))
        .send()
        .await?
        .ciphertext_blob()
        .unwrap()
        .as_ref()
        .to_vec();
    let plain = kms
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext.clone()))
        .send()
        .await?;
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"bring your own");

    let metrics = env.operator()?.metrics().await?;
    let left = gauge(&metrics, &ns).with_context(|| format!("no gauge in:\n{metrics}"))?;
    let thirty_days = (30 * DAY).as_secs_f64();
    assert!(
        left <= thirty_days && left > thirty_days - 600.0,
        "{left} s until expiry"
    );
    // Imported once: the import wakes the Key, whose new status wakes this object again before
    // its watch may have the imported-digest mark; that reconcile must not import again.
    let imported_event = wait_event(&env, "ImportedMaterial", "byok", "Imported").await?;
    assert_eq!(imported_event.count, Some(1), "{imported_event:?}");

    // Past the renew-before point (validTo - 240h): a Warning and the RenewalDue condition,
    // with fresh parameters to re-wrap with.
    env.operator()?.advance_clock(21 * DAY).await?;
    let due = wait_import(&env, "RenewalDue", |_, s| {
        is_true(&s.conditions, "RenewalDue") && s.import_token != awaiting.import_token
    })
    .await?;
    assert_eq!(due.import_state, Some(ImportState::Imported));
    assert!(is_true(&due.conditions, "Ready"), "still usable: {due:?}");
    let warning = wait_event(&env, "ImportedMaterial", "byok", "ExpiringSoon").await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    let left = gauge(&env.operator()?.metrics().await?, &ns).context("no gauge")?;
    assert!(
        left <= (9 * DAY).as_secs_f64() && left > (9 * DAY).as_secs_f64() - 600.0,
        "{left} s until expiry after 21 days"
    );
    assert!(kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"y".as_slice()))
        .send()
        .await
        .is_ok());

    // Past validTo: the engine deletes the material; the Key waits for it again.
    env.operator()?.advance_clock(10 * DAY).await?;
    let expired = wait_import(&env, "Expired with fresh parameters", |_, s| {
        s.import_state == Some(ImportState::Expired)
            && s.import_token.is_some()
            && s.import_token != due.import_token
    })
    .await?;
    assert_eq!(
        condition(&expired.conditions, "Ready").map(|c| c.reason.as_str()),
        Some("Expired"),
        "{expired:?}"
    );
    assert_eq!(
        kms.describe_key()
            .key_id(&key_id)
            .send()
            .await?
            .key_metadata()
            .unwrap()
            .key_state(),
        Some(&KeyState::PendingImport)
    );
    assert_eq!(
        error_code(
            kms.encrypt()
                .key_id(&key_id)
                .plaintext(Blob::new(b"z".as_slice()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    assert_eq!(
        error_code(
            kms.decrypt()
                .ciphertext_blob(Blob::new(ciphertext.clone()))
                .send()
                .await
        ),
        "KMSInvalidStateException"
    );
    wait_key(&env, "byok", "PendingImport after expiry", WITHIN, |s| {
        state_is(s, "PendingImport") && !is_true(&s.conditions, "Ready")
    })
    .await?;
    wait_event(&env, "ImportedMaterial", "byok", "Expired").await?;
    assert_eq!(gauge(&env.operator()?.metrics().await?, &ns), Some(0.0));

    // Re-import: the same material wrapped with the fresh public key, a later validTo.
    let renewed_to = rfc3339_in(31 * DAY, 30 * DAY)?;
    env.apply(&manifests(&ns, &renewed_to)).await?;
    wait_import(&env, "the later validTo seen", |_, _| true).await?;
    wrap_and_store(&env, &work)?;
    let back = wait_import(&env, "Imported again", |_, s| {
        s.import_state == Some(ImportState::Imported) && is_true(&s.conditions, "Ready")
    })
    .await?;
    assert_eq!(
        back.expires_at.as_ref().map(|t| t.0.to_string()),
        Some(renewed_to)
    );
    assert!(!is_true(&back.conditions, "RenewalDue"), "{back:?}");
    let plain = kms
        .decrypt()
        .ciphertext_blob(Blob::new(ciphertext))
        .send()
        .await?;
    assert_eq!(plain.plaintext().unwrap().as_ref(), b"bring your own");
    wait_key(&env, "byok", "Enabled again", WITHIN, |s| {
        state_is(s, "Enabled") && is_true(&s.conditions, "Ready")
    })
    .await?;
    eprintln!("whole import lifecycle took {:?}", started.elapsed());
    env.pass();
    Ok(())
}
