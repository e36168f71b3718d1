//! Access control end to end: ServiceAccounts in two namespaces and an access key from a
//! Secret call the operator's KMS API with boto3, configured as an app in a pod would be
//! (a TokenRequest token in AWS_WEB_IDENTITY_TOKEN_FILE), on Keys under several KeyPolicies.
//! Every cell's expectation comes from this file's own reading of the policies (below), not
//! from the engine's code; the run prints the count of cells.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kubekms_e2e::app::{run_as, token_file, AppIdentity};
use kubekms_e2e::{wait_for, TestEnv};
use serde_json::{json, Value};

use common::ready_key_ids;

const WITHIN: Duration = Duration::from_secs(30);
const CONTEXT: (&str, &str) = ("app", "orders");
const OTHER_CONTEXT: (&str, &str) = ("app", "billing");

/// Who calls. Service accounts carry the groups the API server gives them.
#[derive(Clone)]
struct Caller {
    label: &'static str,
    user: String,
    groups: Vec<String>,
}

/// One statement of a test policy, in the test's own terms.
struct Stmt {
    deny: bool,
    /// Kubernetes user names (a service account's is `system:serviceaccount:<ns>:<name>`).
    users: Vec<String>,
    groups: Vec<String>,
    /// Exact action names, or a prefix ending in `*`.
    actions: Vec<&'static str>,
    /// The request's encryption context must hold this pair.
    context: Option<(&'static str, &'static str)>,
}

struct TestKey {
    name: &'static str,
    signing: bool,
    /// `None`: no KeyPolicy covers it.
    policy: Option<Vec<Stmt>>,
}

/// The operations of the matrix: what each needs, with which context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Encrypt,
    EncryptOtherContext,
    Decrypt,
    GenerateDataKey,
    ReEncrypt,
    Sign,
    DescribeKey,
    DisableKey,
    ScheduleKeyDeletion,
    PutKeyPolicy,
}

impl Op {
    const FIRST_ROUND: [Op; 7] = [
        Op::Encrypt,
        Op::EncryptOtherContext,
        Op::Decrypt,
        Op::GenerateDataKey,
        Op::ReEncrypt,
        Op::Sign,
        Op::DescribeKey,
    ];
    /// Changes to the key, made after every read so that they cannot disturb one.
    const SECOND_ROUND: [Op; 3] = [Op::DisableKey, Op::ScheduleKeyDeletion, Op::PutKeyPolicy];

    fn actions(self) -> &'static [&'static str] {
        match self {
            Op::Encrypt | Op::EncryptOtherContext => &["Encrypt"],
            Op::Decrypt => &["Decrypt"],
            Op::GenerateDataKey => &["GenerateDataKey"],
            Op::ReEncrypt => &["ReEncryptFrom", "ReEncryptTo"],
            Op::Sign => &["Sign"],
            Op::DescribeKey => &["DescribeKey"],
            Op::DisableKey => &["DisableKey"],
            Op::ScheduleKeyDeletion => &["ScheduleKeyDeletion"],
            Op::PutKeyPolicy => &["PutKeyPolicy"],
        }
    }

    fn context(self) -> Option<(&'static str, &'static str)> {
        match self {
            Op::Encrypt | Op::Decrypt | Op::GenerateDataKey | Op::ReEncrypt => Some(CONTEXT),
            Op::EncryptOtherContext => Some(OTHER_CONTEXT),
            _ => None,
        }
    }

    /// Whether the operation applies to a key of this kind (no data operations on a signing
    /// key: there is nothing to decrypt).
    fn applies_to(self, signing: bool) -> bool {
        !signing
            || matches!(self, Op::Sign | Op::DescribeKey | Op::Encrypt)
            || self >= Op::DisableKey
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

/// The expectation, read from the policy as its author means it: default deny; a Deny that
/// matches wins; conditions on the context fail when the pair is absent.
fn expected_allowed(key: &TestKey, caller: &Caller, op: Op) -> bool {
    let Some(policy) = &key.policy else {
        return false;
    };
    op.actions().iter().all(|action| {
        let matching = |s: &&Stmt| {
            (s.users.contains(&caller.user) || s.groups.iter().any(|g| caller.groups.contains(g)))
                && s.actions.iter().any(|p| action_matches(p, action))
                && s.context.is_none_or(|pair| op.context() == Some(pair))
        };
        !policy.iter().filter(|s| s.deny).any(|s| matching(&s))
            && policy.iter().filter(|s| !s.deny).any(|s| matching(&s))
    })
}

fn sa_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn sa(label: &'static str, namespace: &str, name: &str) -> Caller {
    Caller {
        label,
        user: sa_user(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

fn keypolicy_yaml(key: &TestKey) -> Option<String> {
    let statements = key.policy.as_ref()?;
    let mut out = format!(
        "apiVersion: kubekms.io/v1alpha1\nkind: KeyPolicy\nmetadata:\n  name: {}\nspec:\n  keyRefs: [{}]\n  statements:\n",
        key.name, key.name
    );
    for s in statements {
        let mut sas = Vec::new();
        let mut users = Vec::new();
        for u in &s.users {
            match u
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
            {
                Some((ns, name)) => sas.push(json!({"namespace": ns, "name": name})),
                None => users.push(u.clone()),
            }
        }
        let mut statement = json!({
            "effect": if s.deny { "Deny" } else { "Allow" },
            "principals": {"serviceAccounts": sas, "users": users, "groups": s.groups},
            "actions": s.actions.iter().map(|a| format!("kms:{a}")).collect::<Vec<_>>(),
        });
        if let Some((k, v)) = s.context {
            statement["conditions"] = json!({"encryptionContextEquals": {k: v}});
        }
        // JSON is YAML: one flow-style item per statement.
        out.push_str(&format!("    - {statement}\n"));
    }
    Some(out)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The boto3 call for `op` on `key_id`.
fn call(op: Op, key_id: &str, ciphertext: Option<&str>, policy: Option<&str>) -> Value {
    let ctx = |pair: (&str, &str)| json!({pair.0: pair.1});
    let plaintext = format!("b64:{}", b64(b"matrix plaintext"));
    match op {
        Op::Encrypt | Op::EncryptOtherContext => json!({"op": "encrypt", "args": {
            "KeyId": key_id, "Plaintext": plaintext,
            "EncryptionContext": ctx(op.context().unwrap_or(CONTEXT))}}),
        Op::Decrypt => json!({"op": "decrypt", "args": {
            "CiphertextBlob": format!("b64:{}", ciphertext.unwrap_or_default()),
            "EncryptionContext": ctx(CONTEXT)}}),
        Op::GenerateDataKey => json!({"op": "generate_data_key", "args": {
            "KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": ctx(CONTEXT)}}),
        Op::ReEncrypt => json!({"op": "re_encrypt", "args": {
            "CiphertextBlob": format!("b64:{}", ciphertext.unwrap_or_default()),
            "SourceEncryptionContext": ctx(CONTEXT),
            "DestinationKeyId": key_id,
            "DestinationEncryptionContext": ctx(CONTEXT)}}),
        Op::Sign => json!({"op": "sign", "args": {
            "KeyId": key_id, "Message": plaintext, "SigningAlgorithm": "RSASSA_PSS_SHA_256"}}),
        Op::DescribeKey => json!({"op": "describe_key", "args": {"KeyId": key_id}}),
        Op::DisableKey => json!({"op": "disable_key", "args": {"KeyId": key_id}}),
        Op::ScheduleKeyDeletion => json!({"op": "schedule_key_deletion", "args": {
            "KeyId": key_id, "PendingWindowInDays": 7}}),
        Op::PutKeyPolicy => json!({"op": "put_key_policy", "args": {
            "KeyId": key_id, "PolicyName": "default", "Policy": policy.unwrap_or_default()}}),
    }
}

/// What an allowed call of the first round may answer besides success: the key's kind
/// refuses it (Sign on a symmetric key, Encrypt on a signing key).
fn allowed_error(op: Op, signing: bool) -> Option<&'static str> {
    match (op, signing) {
        (Op::Sign, false) | (Op::Encrypt, true) => Some("InvalidKeyUsageException"),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() -> Result<()> {
    let mut env = TestEnv::with_operator("access").await?;
    let a = env.namespace.clone();
    let b = format!("{a}-b");
    env.cluster
        .kubectl(&["create", "namespace", &b], None)
        .await?;
    let cleanup_b = b.clone();
    env.on_failure_dump(move || format!("second namespace: {cleanup_b}"));
    for (ns, name) in [(&a, "app"), (&a, "ops"), (&a, "auditor"), (&b, "partner")] {
        env.cluster
            .kubectl(&["-n", ns, "create", "serviceaccount", name], None)
            .await?;
    }
    // An access key from a Secret, for a user outside the cluster.
    let ci_secret = "ci-access-key-secret-0123";
    env.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: ci-key}}
type: kubekms.io/access-key
stringData:
  accessKeyId: AKIACIMATRIX0001
  secretAccessKey: {ci_secret}
  user: ci
  groups: "ci"
"#
    ))
    .await?;

    let app = sa("A/app", &a, "app");
    let ops = sa("A/ops", &a, "ops");
    let auditor = sa("A/auditor", &a, "auditor");
    let partner = sa("B/partner", &b, "partner");
    let ci = Caller {
        label: "ci (access key)",
        user: "ci".into(),
        groups: vec!["ci".into()],
    };
    let callers = [
        app.clone(),
        ops.clone(),
        auditor.clone(),
        partner.clone(),
        ci.clone(),
    ];

    let keys = vec![
        TestKey {
            name: "k-allow",
            signing: false,
            policy: Some(vec![
                Stmt {
                    deny: false,
                    users: vec![app.user.clone()],
                    groups: vec![],
                    actions: vec![
                        "Encrypt",
                        "Decrypt",
                        "GenerateDataKey*",
                        "ReEncrypt*",
                        "DescribeKey",
                    ],
                    context: None,
                },
                Stmt {
                    deny: false,
                    users: vec![ops.user.clone()],
                    groups: vec![],
                    actions: vec![
                        "Describe*",
                        "DisableKey",
                        "ScheduleKeyDeletion",
                        "PutKeyPolicy",
                        "GetKeyPolicy",
                    ],
                    context: None,
                },
            ]),
        },
        TestKey {
            name: "k-deny",
            signing: false,
            policy: Some(vec![
                Stmt {
                    deny: false,
                    users: vec![],
                    groups: vec![format!("system:serviceaccounts:{a}")],
                    actions: vec!["*"],
                    context: None,
                },
                Stmt {
                    deny: true,
                    users: vec![auditor.user.clone()],
                    groups: vec![],
                    actions: vec!["Decrypt", "ReEncrypt*", "ScheduleKeyDeletion"],
                    context: None,
                },
            ]),
        },
        TestKey {
            name: "k-context",
            signing: false,
            policy: Some(vec![Stmt {
                deny: false,
                users: vec![app.user.clone()],
                groups: vec![],
                actions: vec!["Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"],
                context: Some(CONTEXT),
            }]),
        },
        TestKey {
            name: "k-cross",
            signing: false,
            policy: Some(vec![
                Stmt {
                    deny: false,
                    users: vec![partner.user.clone()],
                    groups: vec![],
                    actions: vec!["Encrypt", "Decrypt", "DescribeKey"],
                    context: None,
                },
                Stmt {
                    deny: false,
                    users: vec!["ci".into()],
                    groups: vec![],
                    actions: vec!["DescribeKey", "Encrypt"],
                    context: None,
                },
            ]),
        },
        TestKey {
            name: "k-none",
            signing: false,
            policy: None,
        },
        TestKey {
            name: "k-sign",
            signing: true,
            policy: Some(vec![Stmt {
                deny: false,
                users: vec![app.user.clone()],
                groups: vec![],
                actions: vec!["Sign", "DescribeKey", "Encrypt"],
                context: None,
            }]),
        },
    ];

    // The Keys and their KeyPolicies.
    let mut manifest = String::new();
    for key in &keys {
        let spec = if key.signing {
            "keySpec: RSA_2048\n  keyUsage: SIGN_VERIFY"
        } else {
            "description: matrix"
        };
        manifest.push_str(&format!(
            "apiVersion: kubekms.io/v1alpha1\nkind: Key\nmetadata:\n  name: {}\nspec:\n  {spec}\n---\n",
            key.name
        ));
        if let Some(policy) = keypolicy_yaml(key) {
            manifest.push_str(&policy);
            manifest.push_str("---\n");
        }
    }
    env.apply(&manifest).await?;
    let admin = env.kms()?;
    let mut ids = BTreeMap::new();
    for key in &keys {
        let (id, _) = ready_key_ids(&env, key.name, WITHIN).await?;
        ids.insert(key.name, id);
    }
    // Every covered Key's document holds its KeyPolicy before the first call.
    for key in keys.iter().filter(|k| k.policy.is_some()) {
        let id = &ids[key.name];
        wait_for(
            &format!("the KeyPolicy in {}'s document", key.name),
            WITHIN,
            || async {
                let doc = admin
                    .get_key_policy()
                    .key_id(id)
                    .policy_name("default")
                    .send()
                    .await?;
                Ok(doc
                    .policy()
                    .is_some_and(|p| p.contains(&format!("\"{}/", key.name)))
                    .then_some(()))
            },
        )
        .await?;
    }
    // Ciphertexts to decrypt, made by the account's administrator.
    let mut ciphertexts = BTreeMap::new();
    for key in keys.iter().filter(|k| !k.signing) {
        let out = admin
            .encrypt()
            .key_id(&ids[key.name])
            .plaintext(aws_sdk_kms::primitives::Blob::new(
                b"matrix plaintext".to_vec(),
            ))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .with_context(|| format!("encrypting under {}", key.name))?;
        let blob = out.ciphertext_blob().context("no CiphertextBlob")?;
        ciphertexts.insert(key.name, b64(blob.as_ref()));
    }

    let endpoint = env.operator()?.endpoint.clone();
    let mut identities = BTreeMap::new();
    for (caller, ns, name) in [
        (&app, &a, "app"),
        (&ops, &a, "ops"),
        (&auditor, &a, "auditor"),
        (&partner, &b, "partner"),
    ] {
        let file = token_file(env.cluster, env.dir(), ns, name, "kubekms").await?;
        identities.insert(caller.label, AppIdentity::WebIdentity { token_file: file });
    }
    identities.insert(
        ci.label,
        AppIdentity::AccessKey {
            id: "AKIACIMATRIX0001".into(),
            secret: ci_secret.into(),
            session_token: None,
        },
    );
    // The Secret's key is live within seconds of the apply.
    wait_for("the access-key Secret accepted", WITHIN, || async {
        let answer = run_as(&identities[ci.label], &endpoint, &json!([])).await?;
        Ok(answer.identity)
    })
    .await?;

    let mut cells = 0;
    let mut unauthorized_successes = Vec::new();
    let mut wrong_denials = Vec::new();
    let mut failed_allowed = Vec::new();
    let mut documents = BTreeMap::new();
    for round in [&Op::FIRST_ROUND[..], &Op::SECOND_ROUND[..]] {
        if round[0] == Op::DisableKey {
            for key in &keys {
                let doc = admin
                    .get_key_policy()
                    .key_id(&ids[key.name])
                    .policy_name("default")
                    .send()
                    .await?;
                documents.insert(key.name, doc.policy().unwrap_or_default().to_owned());
            }
        }
        for caller in &callers {
            let mut plan = Vec::new();
            let mut calls = Vec::new();
            for key in &keys {
                for &op in round.iter().filter(|op| op.applies_to(key.signing)) {
                    plan.push((key, op));
                    calls.push(call(
                        op,
                        &ids[key.name],
                        ciphertexts.get(key.name).map(String::as_str),
                        documents.get(key.name).map(String::as_str),
                    ));
                }
            }
            let answer = run_as(&identities[caller.label], &endpoint, &Value::Array(calls)).await?;
            let expected_identity = match caller.user.strip_prefix("system:serviceaccount:") {
                Some(_) => format!("arn:aws:iam::111122223333:role/k8s/{}", caller.user),
                None => format!("arn:aws:iam::111122223333:user/k8s/{}", caller.user),
            };
            if answer.identity.as_deref() != Some(expected_identity.as_str()) {
                bail!(
                    "{}: GetCallerIdentity said {:?} ({:?}), expected {expected_identity}",
                    caller.label,
                    answer.identity,
                    answer.identity_error
                );
            }
            for ((key, op), result) in plan.iter().zip(&answer.results) {
                cells += 1;
                let want = expected_allowed(key, caller, *op);
                let denied = result.as_deref() == Some("AccessDeniedException");
                let cell = format!("{} {op:?} {} -> {result:?}", caller.label, key.name);
                match (want, denied) {
                    (false, false) => unauthorized_successes.push(cell),
                    (true, true) => wrong_denials.push(cell),
                    (true, false)
                        if round[0] == Op::Encrypt
                            && result.is_some()
                            && result.as_deref() != allowed_error(*op, key.signing) =>
                    {
                        failed_allowed.push(cell)
                    }
                    _ => {}
                }
            }
        }
    }
    println!(
        "authorization matrix: {cells} cells, {} unauthorized successes, {} wrong denials, {} \
         allowed calls that failed",
        unauthorized_successes.len(),
        wrong_denials.len(),
        failed_allowed.len()
    );
    if !(unauthorized_successes.is_empty() && wrong_denials.is_empty() && failed_allowed.is_empty())
    {
        bail!(
            "unauthorized successes: {unauthorized_successes:#?}\nwrong denials: {wrong_denials:#?}\nallowed but failed: {failed_allowed:#?}"
        );
    }
    // 5 callers x (5 symmetric keys x 10 operations + 1 signing key x 6 operations).
    assert_eq!(cells, 5 * (5 * 10 + 6));
    // The refusals are counted per principal on the engine's metrics.
    let (status, metrics) =
        kubekms_e2e::operator::http_request(&endpoint, "GET", "/metrics", "").await?;
    assert_eq!(status, 200, "{metrics}");
    let series = format!(
        "kubekms_denied_requests_total{{principal=\"arn:aws:iam::111122223333:role/k8s/{}\"}}",
        partner.user
    );
    assert!(
        metrics.contains(&series),
        "{series} missing from:\n{metrics}"
    );
    let _ = env
        .cluster
        .kubectl(&["delete", "namespace", &b, "--wait=false"], None)
        .await;
    env.pass();
    Ok(())
}

/// A JWT signed with the cluster's own service-account key (so only its expiry is wrong),
/// for `system:serviceaccount:<namespace>:<name>`, expired an hour ago.
async fn expired_token(env: &TestEnv, namespace: &str, name: &str) -> Result<std::path::PathBuf> {
    let key = env.cluster.dir().join("pki/sa.key");
    let script = r#"
import base64, json, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), password=None)
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"aud": ["kubekms"], "exp": now - 3600, "iat": now - 7200, "nbf": now - 7200,
          "iss": "https://kubernetes.default.svc.cluster.local",
          "sub": "system:serviceaccount:%s:%s" % (sys.argv[2], sys.argv[3])}
head = enc(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
body = enc(json.dumps(claims).encode())
sig = key.sign((head + "." + body).encode(), padding.PKCS1v15(), hashes.SHA256())
print(head + "." + body + "." + enc(sig))
"#;
    let out = tokio::process::Command::new(kubekms_e2e::app::python())
        .arg("-c")
        .arg(script)
        .arg(&key)
        .arg(namespace)
        .arg(name)
        .output()
        .await?;
    if !out.status.success() {
        bail!("signing a token: {}", String::from_utf8_lossy(&out.stderr));
    }
    let path = env.dir().join("expired.token");
    std::fs::write(&path, String::from_utf8_lossy(&out.stdout).trim())?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials() -> Result<()> {
    let env = TestEnv::with_operator("refused").await?;
    let ns = env.namespace.clone();
    let endpoint = env.operator()?.endpoint.clone();
    for name in ["app", "temp"] {
        env.kubectl(&["create", "serviceaccount", name]).await?;
    }
    let describe = json!([{"op": "list_keys", "args": {}}]);
    let role = |name: &str| {
        format!("arn:aws:iam::111122223333:role/k8s/system:serviceaccount:{ns}:{name}")
    };

    // A token for another audience.
    let other = token_file(env.cluster, env.dir(), &ns, "app", "not-kubekms").await?;
    let answer = run_as(
        &AppIdentity::WebIdentity { token_file: other },
        &endpoint,
        &describe,
    )
    .await?;
    assert_eq!(
        answer.identity_error.as_deref(),
        Some("InvalidIdentityToken"),
        "{answer:?}"
    );

    // An expired token, signed by the cluster.
    let expired = expired_token(&env, &ns, "app").await?;
    let answer = run_as(
        &AppIdentity::WebIdentity {
            token_file: expired,
        },
        &endpoint,
        &describe,
    )
    .await?;
    assert_eq!(
        answer.identity_error.as_deref(),
        Some("ExpiredTokenException"),
        "{answer:?}"
    );

    // A good token: temporary credentials, used as they are and with one byte altered.
    let good = token_file(env.cluster, env.dir(), &ns, "app", "kubekms").await?;
    let answer = run_as(
        &AppIdentity::WebIdentity { token_file: good },
        &endpoint,
        &json!([{"op": "__credentials__"}, {"op": "list_keys", "args": {}}]),
    )
    .await?;
    assert_eq!(answer.identity, Some(role("app")), "{answer:?}");
    assert_eq!(answer.results, vec![None, None], "{answer:?}");
    let creds = answer.credentials.context("no credentials")?;
    let field = |name: &str| creds[name].as_str().unwrap_or_default().to_owned();
    let token = field("sessionToken");
    let session = |token: String| AppIdentity::AccessKey {
        id: field("accessKeyId"),
        secret: field("secretAccessKey"),
        session_token: Some(token),
    };
    let answer = run_as(&session(token.clone()), &endpoint, &describe).await?;
    assert_eq!(
        answer.results,
        vec![None],
        "the session as issued: {answer:?}"
    );
    let mut altered = token.into_bytes();
    let middle = altered.len() / 2;
    altered[middle] = if altered[middle] == b'A' { b'B' } else { b'A' };
    let answer = run_as(&session(String::from_utf8(altered)?), &endpoint, &describe).await?;
    assert_eq!(
        answer.results,
        vec![Some("UnrecognizedClientException".into())],
        "{answer:?}"
    );

    // A forged signature: a known access key id, the wrong secret.
    env.apply(
        r#"apiVersion: v1
kind: Secret
metadata: {name: ci-key}
type: kubekms.io/access-key
stringData: {accessKeyId: AKIAREFUSED00001, secretAccessKey: the-right-secret-0123, user: ci}
"#,
    )
    .await?;
    let key = |secret: &str| AppIdentity::AccessKey {
        id: "AKIAREFUSED00001".into(),
        secret: secret.into(),
        session_token: None,
    };
    wait_for("the access-key Secret accepted", WITHIN, || async {
        Ok(run_as(&key("the-right-secret-0123"), &endpoint, &describe)
            .await?
            .identity)
    })
    .await?;
    let answer = run_as(&key("the-wrong-secret-0123"), &endpoint, &describe).await?;
    assert_eq!(
        answer.results,
        vec![Some("InvalidSignatureException".into())],
        "{answer:?}"
    );

    // The Secret deleted: its key stops working within seconds.
    env.kubectl(&["delete", "secret", "ci-key"]).await?;
    let answer = wait_for("the deleted access key refused", WITHIN, || async {
        let answer = run_as(&key("the-right-secret-0123"), &endpoint, &describe).await?;
        Ok((answer.results[0].is_some()).then_some(answer))
    })
    .await?;
    assert_eq!(
        answer.results,
        vec![Some("UnrecognizedClientException".into())],
        "{answer:?}"
    );

    // A deleted ServiceAccount: its token is refused once the review cache (30 s) is over.
    let temp = token_file(env.cluster, env.dir(), &ns, "temp", "kubekms").await?;
    let as_temp = AppIdentity::WebIdentity { token_file: temp };
    assert_eq!(
        run_as(&as_temp, &endpoint, &describe).await?.identity,
        Some(role("temp"))
    );
    env.kubectl(&["delete", "serviceaccount", "temp"]).await?;
    let deleted_at = std::time::Instant::now();
    let answer = wait_for(
        "the deleted ServiceAccount's token refused",
        Duration::from_secs(60),
        || async {
            let answer = run_as(&as_temp, &endpoint, &describe).await?;
            Ok(answer.identity_error.is_some().then_some(answer))
        },
    )
    .await?;
    assert_eq!(
        answer.identity_error.as_deref(),
        Some("InvalidIdentityToken"),
        "{answer:?}"
    );
    println!(
        "deleted ServiceAccount refused {:.1} s after deletion",
        deleted_at.elapsed().as_secs_f64()
    );
    env.pass();
    Ok(())
}
