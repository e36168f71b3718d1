//! KeyPolicy: the operator renders the policies covering a Key into its engine key's policy
//! document, seen through `GetKeyPolicy` with aws-sdk-kms; a change is shipped, an invalid
//! policy is reported and ships nothing, and deleting the policy brings the default back.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kubekms_crds::KeyPolicy;
use kubekms_e2e::{wait_for, TestEnv, ACCOUNT};

mod common;
use common::{condition, ready_key_ids};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(20);

const KEYS: &str = r#"
apiVersion: kubekms.io/v1alpha1
kind: Key
metadata:
  name: orders
spec:
  description: policy test
---
apiVersion: kubekms.io/v1alpha1
kind: Key
metadata:
  name: billing
spec:
  description: policy test, not covered by name
"#;

fn policy(actions: &str, extra_statement: &str) -> String {
    format!(
        r#"
apiVersion: kubekms.io/v1alpha1
kind: KeyPolicy
metadata:
  name: orders-app
spec:
  keyRefs: ["orders"]
  statements:
    - sid: AppUse
      effect: Allow
      principals:
        serviceAccounts:
          - namespace: shop
            name: orders
        users: ["alice@example.com"]
      actions: {actions}
      conditions:
        encryptionContextEquals:
          app: orders
        encryptionContextKeys: ["tenant"]
{extra_statement}"#
    )
}

const DENY_CI: &str = r#"    - effect: Deny
      principals:
        groups: ["ci:runners"]
      actions: ["kms:Decrypt"]
"#;

async fn key_ids(env: &TestEnv, name: &str) -> Result<(String, String)> {
    ready_key_ids(env, name, WITHIN).await
}

async fn key_policy(kms: &aws_sdk_kms::Client, key_id: &str) -> Result<Value> {
    let out = kms
        .get_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .send()
        .await
        .with_context(|| format!("GetKeyPolicy {key_id}"))?;
    serde_json::from_str(out.policy().context("no Policy")?).context("Policy is not JSON")
}

/// Waits until the key's document satisfies `check`; returns it.
async fn wait_policy(
    kms: &aws_sdk_kms::Client,
    key_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let check = &check;
    wait_for(what, WITHIN, || async move {
        let doc = key_policy(kms, key_id).await?;
        Ok(check(&doc).then_some(doc))
    })
    .await
}

/// The KeyPolicy's Ready condition once it describes the current generation.
async fn wait_policy_status(env: &TestEnv, what: &str, ready: &str) -> Result<Condition> {
    wait_for(what, WITHIN, || async {
        let p = env.api::<KeyPolicy>().get("orders-app").await?;
        let Some(s) = p.status else { return Ok(None) };
        if s.observed_generation != p.metadata.generation {
            return Ok(None);
        }
        Ok(condition(&s.conditions, "Ready")
            .filter(|c| c.status == ready)
            .cloned())
    })
    .await
}

fn statements(doc: &Value) -> Vec<Value> {
    doc["Statement"].as_array().cloned().unwrap_or_default()
}

fn sids(doc: &Value) -> Vec<String> {
    statements(doc)
        .iter()
        .map(|s| s["Sid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_policies_are_rendered_updated_and_removed() -> Result<()> {
    let env = TestEnv::with_operator("keypolicy").await?;
    env.apply(KEYS).await?;
    let (orders_id, orders_arn) = key_ids(&env, "orders").await?;
    let (billing_id, _) = key_ids(&env, "billing").await?;
    let kms = env.kms()?;
    // A Key no KeyPolicy covers: the account's administrators, and the operator to manage it.
    let default = key_policy(&kms, &orders_id).await?;
    assert_eq!(
        default["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root"),
        "{default}"
    );
    assert_eq!(
        default["Statement"][1]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:role/kubekms-operator"),
        "{default}"
    );

    // Apply: the statements appear, rendered in the AWS policy language, after the leading
    // ones.
    env.apply(&policy(r#"["kms:Encrypt", "kms:GenerateDataKey*"]"#, ""))
        .await?;
    let doc = wait_policy(&kms, &orders_id, "the KeyPolicy on orders", |d| {
        sids(d).contains(&"orders-app/AppUse".to_owned())
    })
    .await?;
    assert_eq!(doc["Version"], "2012-10-17", "{doc}");
    let all = statements(&doc);
    let leading = default["Statement"].as_array().unwrap();
    let n = leading.len();
    assert_eq!(all.len(), leading.len() + 1, "{doc}");
    assert_eq!(
        all[..leading.len()],
        leading[..],
        "leading statements kept: {doc}"
    );
    let app = &all[leading.len()];
    assert_eq!(app["Effect"], "Allow");
    assert_eq!(
        app["Principal"]["AWS"],
        serde_json::json!([
            format!("arn:aws:iam::{ACCOUNT}:role/k8s/system:serviceaccount:shop:orders"),
            format!("arn:aws:iam::{ACCOUNT}:user/k8s/alice@example.com"),
        ]),
        "{doc}"
    );
    assert_eq!(
        app["Action"],
        serde_json::json!(["kms:Encrypt", "kms:GenerateDataKey*"])
    );
    assert_eq!(app["Resource"], orders_arn.as_str());
    assert_eq!(
        app["Condition"]["StringEquals"]["kms:EncryptionContext:app"],
        "orders"
    );
    assert_eq!(
        app["Condition"]["Null"]["kms:EncryptionContext:tenant"],
        "false"
    );
    let ready = wait_policy_status(&env, "KeyPolicy Ready", "True").await?;
    assert_eq!(ready.reason, "Applied");
    assert!(ready.message.starts_with("applies to 1 Key"), "{ready:?}");
    // A Key the policy does not name keeps the default.
    assert_eq!(key_policy(&kms, &billing_id).await?, default);

    // Change: new actions and a Deny statement are shipped.
    env.apply(&policy(r#"["kms:Decrypt"]"#, DENY_CI)).await?;
    let doc = wait_policy(&kms, &orders_id, "the changed KeyPolicy on orders", |d| {
        statements(d).len() == n + 2
    })
    .await?;
    let all = statements(&doc);
    assert_eq!(
        all[n]["Action"],
        serde_json::json!(["kms:Decrypt"]),
        "{doc}"
    );
    assert_eq!(all[n + 1]["Sid"], "orders-app/1", "{doc}");
    assert_eq!(all[n + 1]["Effect"], "Deny", "{doc}");
    assert_eq!(
        all[n + 1]["Principal"]["AWS"],
        serde_json::json!([format!("arn:aws:iam::{ACCOUNT}:group/k8s/ci:runners")])
    );
    assert!(all[n + 1].get("Condition").is_none(), "{doc}");

    // Invalid (an unknown action): reported in Ready, and it ships nothing, so the Key is back
    // to the default.
    env.apply(&policy(r#"["kms:Encrpyt"]"#, "")).await?;
    let invalid = wait_policy_status(&env, "KeyPolicy Invalid", "False").await?;
    assert_eq!(invalid.reason, "Invalid", "{invalid:?}");
    assert!(
        invalid
            .message
            .contains("spec.statements[0].actions[0]: \"kms:Encrpyt\" matches no KMS action"),
        "{invalid:?}"
    );
    wait_policy(&kms, &orders_id, "default while invalid", |d| *d == default).await?;

    // Valid again, then delete: back to the engine's default document.
    env.apply(&policy(r#"["kms:Encrypt"]"#, "")).await?;
    wait_policy(&kms, &orders_id, "the fixed KeyPolicy on orders", |d| {
        statements(d).len() == n + 1
    })
    .await?;
    env.kubectl(&["delete", "keypolicy", "orders-app", "--wait=true"])
        .await?;
    wait_policy(&kms, &orders_id, "the default policy again", |d| {
        *d == default
    })
    .await?;
    assert_eq!(key_policy(&kms, &billing_id).await?, default);
    env.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_every_key_covers_keys_created_later() -> Result<()> {
    let env = TestEnv::with_operator("keypolicy-all").await?;
    env.apply(
        r#"
apiVersion: kubekms.io/v1alpha1
kind: KeyPolicy
metadata:
  name: everyone-reads
spec:
  keyRefs: ["*"]
  statements:
    - sid: Read
      effect: Allow
      principals:
        groups: ["system:authenticated"]
      actions: ["kms:DescribeKey"]
"#,
    )
    .await?;
    env.apply(KEYS).await?;
    let kms = env.kms()?;
    for name in ["orders", "billing"] {
        let (id, arn) = key_ids(&env, name).await?;
        let doc = wait_policy(&kms, &id, &format!("the policy on {name}"), |d| {
            sids(d).contains(&"everyone-reads/Read".to_owned())
        })
        .await?;
        let last = statements(&doc).last().cloned().unwrap_or_default();
        assert_eq!(last["Resource"], arn.as_str(), "{doc}");
    }
    let ready = wait_for("KeyPolicy counts both Keys", WITHIN, || async {
        let p = env.api::<KeyPolicy>().get("everyone-reads").await?;
        Ok(p.status
            .and_then(|s| condition(&s.conditions, "Ready").cloned())
            .filter(|c| c.status == "True" && c.message.starts_with("applies to 2 Key")))
    })
    .await?;
    assert_eq!(ready.reason, "Applied");
    env.pass();
    Ok(())
}
