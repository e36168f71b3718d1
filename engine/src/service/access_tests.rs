//! Key policies enforced through the operations: who may do what, what a refused caller is
//! told, DryRun, listings, and that absent and forbidden keys read alike to a member.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::tests::{harness, Harness};
use super::{AccountRole, Caller, Principal};

const ACCOUNT: &str = "111122223333";
const APP: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders";
const STRANGER: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:ci:runner";
const SHOP: &str = "arn:aws:iam::111122223333:group/k8s/system:serviceaccounts:shop";

fn member(arn: &str, groups: &[&str]) -> Caller {
    let mut caller = super::tests::ctx(ACCOUNT, "us-east-1");
    caller.principal =
        Principal::new(arn).with_groups(groups.iter().map(|g| (*g).to_owned()).collect());
    caller
}

/// A key whose policy lets the account manage it and `statements` do the rest.
async fn key_with(h: &Harness, statements: Vec<Value>) -> String {
    let mut all = vec![json!({"Sid": "Admins", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "kms:*", "Resource": "*"})];
    all.extend(statements);
    let policy = json!({"Version": "2012-10-17", "Statement": all}).to_string();
    h.create(json!({"Policy": policy})).await
}

fn error(result: Result<Value, (String, String)>) -> (String, String) {
    match result {
        Ok(v) => panic!("succeeded unexpectedly: {v}"),
        Err(e) => e,
    }
}

fn plaintext() -> String {
    B64.encode(b"secret")
}

#[tokio::test]
async fn only_what_the_policy_allows() {
    let h = harness().await;
    let key = key_with(
        &h,
        vec![json!({"Effect": "Allow", "Principal": {"AWS": SHOP},
            "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*",
            "Condition": {"StringEquals": {"kms:EncryptionContext:app": "orders"}}})],
    )
    .await;
    let app = member(APP, &[SHOP]);
    let ctx = json!({"app": "orders"});

    let out = h
        .call_as(
            &app,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": plaintext(), "EncryptionContext": ctx}),
        )
        .await
        .unwrap();
    let blob = out["CiphertextBlob"].as_str().unwrap();
    let out = h
        .call_as(
            &app,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": ctx}),
        )
        .await
        .unwrap();
    assert_eq!(out["Plaintext"], plaintext());

    // The condition: another context, or none, is refused.
    let (kind, message) = error(
        h.call_as(
            &app,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": plaintext(),
            "EncryptionContext": {"app": "billing"}}),
        )
        .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    let arn = format!("arn:aws:kms:us-east-1:{ACCOUNT}:key/{key}");
    assert_eq!(
        message,
        format!(
            "User: {APP} is not authorized to perform: kms:Encrypt on resource: {arn} because no \
             resource-based policy allows the kms:Encrypt action"
        )
    );
    // DescribeKey has no context, so the condition cannot hold.
    let (kind, _) = error(h.call_as(&app, "DescribeKey", json!({"KeyId": key})).await);
    assert_eq!(kind, "AccessDeniedException");
    // Actions the policy does not name.
    for (op, body) in [
        ("DisableKey", json!({"KeyId": key})),
        ("ScheduleKeyDeletion", json!({"KeyId": key})),
        (
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256", "EncryptionContext": ctx}),
        ),
    ] {
        let (kind, _) = error(h.call_as(&app, op, body).await);
        assert_eq!(kind, "AccessDeniedException", "{op}");
    }
    // Not in the group: nothing.
    let stranger = member(STRANGER, &[]);
    let (kind, _) = error(
        h.call_as(
            &stranger,
            "Decrypt",
            json!({"CiphertextBlob": blob, "EncryptionContext": ctx}),
        )
        .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    // The key is unchanged by the refused requests.
    let described = h.call("DescribeKey", json!({"KeyId": key})).await.unwrap();
    assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
}

#[tokio::test]
async fn explicit_deny_wins_and_says_so() {
    let h = harness().await;
    let key = key_with(
        &h,
        vec![
            json!({"Effect": "Allow", "Principal": {"AWS": SHOP}, "Action": "kms:*", "Resource": "*"}),
            json!({"Effect": "Deny", "Principal": {"AWS": APP}, "Action": "kms:Decrypt", "Resource": "*"}),
        ],
    )
    .await;
    let app = member(APP, &[SHOP]);
    let blob = h
        .call_as(
            &app,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": plaintext()}),
        )
        .await
        .unwrap()["CiphertextBlob"]
        .clone();
    let (kind, message) = error(
        h.call_as(&app, "Decrypt", json!({"CiphertextBlob": blob}))
            .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    // A member hears the words of any refusal, so an explicit Deny tells it nothing more.
    assert!(
        message.ends_with("because no resource-based policy allows the kms:Decrypt action"),
        "{message}"
    );
    // A caller with an account role is told it was an explicit deny.
    let mut creator = member(APP, &[SHOP]);
    creator.principal = creator.principal.with_role(AccountRole::KeyCreator);
    let (_, message) = error(
        h.call_as(&creator, "Decrypt", json!({"CiphertextBlob": blob}))
            .await,
    );
    assert!(
        message.ends_with("with an explicit deny in a resource-based policy"),
        "{message}"
    );
}

#[tokio::test]
async fn aliases_and_named_keys_do_not_reveal_what_a_member_cannot_see() {
    let h = harness().await;
    let hidden = key_with(&h, vec![]).await;
    let own = key_with(
        &h,
        vec![json!({"Effect": "Allow", "Principal": {"AWS": APP}, "Action": "kms:*", "Resource": "*"})],
    )
    .await;
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/theirs", "TargetKeyId": hidden}),
    )
    .await
    .unwrap();
    let app = member(APP, &[]);
    for name in ["alias/theirs", "alias/nobody"] {
        for (op, body) in [
            ("DeleteAlias", json!({"AliasName": name})),
            (
                "UpdateAlias",
                json!({"AliasName": name, "TargetKeyId": own}),
            ),
        ] {
            let (kind, message) = error(h.call_as(&app, op, body).await);
            assert_eq!(kind, "AccessDeniedException", "{op} {name}");
            assert!(
                message.contains(&format!(
                    "kms:{op} on resource: arn:aws:kms:us-east-1:{ACCOUNT}:{name} because"
                )),
                "{op} {name}: {message}"
            );
        }
    }
    // Decrypt with a KeyId: another existing key and no key at all read the same.
    let blob = h
        .call_as(
            &app,
            "Encrypt",
            json!({"KeyId": own, "Plaintext": plaintext()}),
        )
        .await
        .unwrap()["CiphertextBlob"]
        .clone();
    for named in [hidden.as_str(), "0f0e0d0c-0b0a-4908-8706-050403020100"] {
        let (kind, _) = error(
            h.call_as(
                &app,
                "Decrypt",
                json!({"CiphertextBlob": blob, "KeyId": named}),
            )
            .await,
        );
        assert_eq!(kind, "IncorrectKeyException", "{named}");
    }
}

#[tokio::test]
async fn absent_and_forbidden_keys_read_alike_to_members() {
    let h = harness().await;
    let key = key_with(&h, vec![]).await;
    let absent = "0f0e0d0c-0b0a-4908-8706-050403020100";
    let app = member(APP, &[]);
    for op in [
        "DescribeKey",
        "DisableKey",
        "GetKeyPolicy",
        "EnableKeyRotation",
    ] {
        let (kind, forbidden) = error(h.call_as(&app, op, json!({"KeyId": key})).await);
        assert_eq!(kind, "AccessDeniedException", "{op}");
        let (kind, missing) = error(h.call_as(&app, op, json!({"KeyId": absent})).await);
        assert_eq!(kind, "AccessDeniedException", "{op}");
        assert_eq!(missing.replace(absent, &key), forbidden, "{op}");
    }
    // By alias too: the refusal names the alias, whether it exists or not.
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/orders", "TargetKeyId": key}),
    )
    .await
    .unwrap();
    let (_, forbidden) = error(
        h.call_as(
            &app,
            "Encrypt",
            json!({"KeyId": "alias/orders", "Plaintext": plaintext()}),
        )
        .await,
    );
    let (_, missing) = error(
        h.call_as(
            &app,
            "Encrypt",
            json!({"KeyId": "alias/nothere", "Plaintext": plaintext()}),
        )
        .await,
    );
    assert_eq!(missing.replace("nothere", "orders"), forbidden);
    assert!(!forbidden.contains(&key), "{forbidden}");

    // A ciphertext naming a key that does not exist: a member is refused as for any key it
    // may not use; the account's administrators learn the truth.
    let blob = h.encrypt(&key, b"x", json!({})).await;
    let mut bytes = B64.decode(&blob).unwrap();
    let id_at = bytes
        .windows(16)
        .position(|w| w == uuid::Uuid::parse_str(&key).unwrap().as_bytes())
        .unwrap();
    bytes[id_at..id_at + 16].copy_from_slice(uuid::Uuid::parse_str(absent).unwrap().as_bytes());
    let forged = B64.encode(&bytes);
    let (kind, _) = error(
        h.call_as(&app, "Decrypt", json!({"CiphertextBlob": forged}))
            .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    assert_eq!(
        h.err("Decrypt", json!({"CiphertextBlob": forged})).await,
        "InvalidCiphertextException"
    );
    assert_eq!(
        h.err("DescribeKey", json!({"KeyId": absent})).await,
        "NotFoundException"
    );
}

#[tokio::test]
async fn dry_run_answers_for_the_caller_and_changes_nothing() {
    let h = harness().await;
    let key = key_with(
        &h,
        vec![json!({"Effect": "Allow", "Principal": {"AWS": APP}, "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*"})],
    )
    .await;
    let app = member(APP, &[]);
    let stranger = member(STRANGER, &[]);
    for (op, body) in [
        (
            "Encrypt",
            json!({"KeyId": key, "Plaintext": plaintext(), "DryRun": true}),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": key, "KeySpec": "AES_256", "DryRun": true}),
        ),
    ] {
        let (kind, _) = error(h.call_as(&app, op, body.clone()).await);
        assert_eq!(kind, "DryRunOperationException", "{op}");
        let (kind, _) = error(h.call_as(&stranger, op, body.clone()).await);
        assert_eq!(kind, "AccessDeniedException", "{op}");
        // DryRun false runs it.
        let mut real = body;
        real["DryRun"] = json!(false);
        assert!(h.call_as(&app, op, real).await.is_ok(), "{op}");
    }
    // A dry run of a request the caller may make but that would fail on the key's state
    // still only says whether it is allowed.
    let (kind, _) = error(
        h.call_as(
            &app,
            "Decrypt",
            json!({"CiphertextBlob": h.encrypt(&key, b"x", json!({})).await, "DryRun": true}),
        )
        .await,
    );
    assert_eq!(kind, "AccessDeniedException");
}

#[tokio::test]
async fn listings_show_members_only_what_they_may_describe() {
    let h = harness().await;
    let visible = key_with(
        &h,
        vec![json!({"Effect": "Allow", "Principal": {"AWS": APP}, "Action": "kms:DescribeKey", "Resource": "*"})],
    )
    .await;
    let hidden = key_with(&h, vec![]).await;
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/seen", "TargetKeyId": visible}),
    )
    .await
    .unwrap();
    h.call(
        "CreateAlias",
        json!({"AliasName": "alias/unseen", "TargetKeyId": hidden}),
    )
    .await
    .unwrap();
    let app = member(APP, &[]);

    let ids = |out: Value| -> Vec<String> {
        out["Keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["KeyId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(h.call_as(&app, "ListKeys", json!({})).await.unwrap()),
        vec![visible.clone()]
    );
    assert_eq!(
        h.call("ListKeys", json!({})).await.unwrap()["Keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let aliases = h.call_as(&app, "ListAliases", json!({})).await.unwrap();
    let names: Vec<&str> = aliases["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["AliasName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alias/seen"]);
    let (kind, _) = error(
        h.call_as(&app, "ListAliases", json!({"KeyId": hidden}))
            .await,
    );
    assert_eq!(kind, "AccessDeniedException");
}

#[tokio::test]
async fn creating_keys_needs_an_account_role() {
    let h = harness().await;
    let app = member(APP, &[]);
    let (kind, message) = error(h.call_as(&app, "CreateKey", json!({})).await);
    assert_eq!(kind, "AccessDeniedException");
    assert!(
        message.contains("kms:CreateKey because no identity-based policy"),
        "{message}"
    );
    let mut operator = member("arn:aws:iam::111122223333:role/kubekms-operator", &[]);
    operator.principal = operator.principal.with_role(AccountRole::KeyCreator);
    // A key creator must give the key a policy that lets it manage the key: the engine's
    // default names only the account.
    let (kind, _) = error(h.call_as(&operator, "CreateKey", json!({})).await);
    assert_eq!(kind, "MalformedPolicyDocumentException");
    let policy = json!({"Statement": [{"Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:role/kubekms-operator"},
        "Action": ["kms:DescribeKey", "kms:PutKeyPolicy"], "Resource": "*"}]})
    .to_string();
    let out = h
        .call_as(&operator, "CreateKey", json!({"Policy": policy}))
        .await
        .unwrap();
    let key = out["KeyMetadata"]["KeyId"].as_str().unwrap();
    assert!(h
        .call_as(&operator, "DescribeKey", json!({"KeyId": key}))
        .await
        .is_ok());
    let (kind, _) = error(
        h.call_as(
            &operator,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": plaintext()}),
        )
        .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    // Anyone authenticated may ask for random bytes.
    assert!(h
        .call_as(&app, "GenerateRandom", json!({"NumberOfBytes": 8}))
        .await
        .is_ok());
}

#[tokio::test]
async fn put_key_policy_answers_the_caller_before_judging_the_document() {
    let h = harness().await;
    let key = key_with(&h, vec![]).await;
    let app = member(APP, &[]);
    // A document that would lock anyone out: a caller without the right hears only that.
    let lockout = json!({"Statement": []}).to_string();
    let (kind, _) = error(
        h.call_as(
            &app,
            "PutKeyPolicy",
            json!({"KeyId": key, "Policy": lockout}),
        )
        .await,
    );
    assert_eq!(kind, "AccessDeniedException");
    let (kind, _) = error(
        h.call("PutKeyPolicy", json!({"KeyId": key, "Policy": lockout}))
            .await,
    );
    assert_eq!(kind, "MalformedPolicyDocumentException");
    // With the bypass, the account locks itself out, as it asked.
    h.call(
        "PutKeyPolicy",
        json!({"KeyId": key, "Policy": lockout, "BypassPolicyLockoutSafetyCheck": true}),
    )
    .await
    .unwrap();
    let (kind, _) = error(h.call("DescribeKey", json!({"KeyId": key})).await);
    assert_eq!(kind, "AccessDeniedException");
}

#[tokio::test]
async fn describe_key_answers_tags_and_rotation_only_with_their_own_permissions() {
    let h = harness().await;
    let key = key_with(
        &h,
        vec![json!({"Effect": "Allow", "Principal": {"AWS": SHOP},
            "Action": ["kms:DescribeKey"], "Resource": "*"})],
    )
    .await;
    let whole = json!({"KeyId": key, "KubekmsInclude": ["Tags", "Rotation"]});
    let answer = h.call("DescribeKey", whole.clone()).await.unwrap();
    assert_eq!(answer["KeyMetadata"]["KubekmsRevision"], 1, "{answer}");
    assert_eq!(answer["KubekmsTags"], json!([]), "{answer}");
    assert_eq!(
        answer["KubekmsRotation"]["Status"]["KeyRotationEnabled"],
        false
    );
    assert!(answer["KubekmsRotation"].get("LastRotation").is_none());
    h.call("RotateKeyOnDemand", json!({"KeyId": key}))
        .await
        .unwrap();
    let answer = h.call("DescribeKey", whole.clone()).await.unwrap();
    assert_eq!(answer["KeyMetadata"]["KubekmsRevision"], 2);
    assert_eq!(
        answer["KubekmsRotation"]["LastRotation"]["RotationType"],
        "ON_DEMAND"
    );

    // A member who may only describe the key gets the metadata, but not the rest.
    let app = member(APP, &[SHOP]);
    let plain = h
        .call_as(&app, "DescribeKey", json!({"KeyId": key}))
        .await
        .unwrap();
    assert!(plain.get("KubekmsTags").is_none() && plain.get("KubekmsRotation").is_none());
    let (kind, _) = error(h.call_as(&app, "DescribeKey", whole).await);
    assert_eq!(kind, "AccessDeniedException");
}

#[tokio::test]
async fn create_key_answers_the_parts_the_new_keys_policy_lets_the_creator_read() {
    let h = harness().await;
    let mut operator = member("arn:aws:iam::111122223333:role/kubekms-operator", &[]);
    operator.principal = operator.principal.with_role(AccountRole::KeyCreator);
    let policy = |actions: &[&str]| {
        json!({"Statement": [{"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/kubekms-operator"},
            "Action": actions, "Resource": "*"}]})
        .to_string()
    };
    let everything = [
        "kms:DescribeKey",
        "kms:PutKeyPolicy",
        "kms:ListResourceTags",
        "kms:GetKeyRotationStatus",
        "kms:ListKeyRotations",
    ];
    let tags = json!([{"TagKey": "team", "TagValue": "shop"}]);
    let answer = h
        .call_as(
            &operator,
            "CreateKey",
            json!({"Policy": policy(&everything), "Tags": tags,
                "KubekmsRotationPeriodInDays": 120, "KubekmsInclude": ["Tags", "Rotation"]}),
        )
        .await
        .unwrap();
    assert_eq!(answer["KeyMetadata"]["KubekmsRevision"], 1, "{answer}");
    assert_eq!(answer["KubekmsTags"], tags, "{answer}");
    let status = &answer["KubekmsRotation"]["Status"];
    assert_eq!(status["KeyRotationEnabled"], true, "{answer}");
    assert_eq!(status["RotationPeriodInDays"], 120, "{answer}");
    // What CreateKey answered is what DescribeKey reads afterwards.
    let key = answer["KeyMetadata"]["KeyId"].as_str().unwrap();
    let described = h
        .call_as(
            &operator,
            "DescribeKey",
            json!({"KeyId": key, "KubekmsInclude": ["Tags", "Rotation"]}),
        )
        .await
        .unwrap();
    assert_eq!(described, answer);

    // A policy that lets the creator describe the key but not read its tags or rotation: the
    // key is created, and those parts are left out instead of failing the request.
    let answer = h
        .call_as(
            &operator,
            "CreateKey",
            json!({"Policy": policy(&["kms:DescribeKey", "kms:PutKeyPolicy"]), "Tags": tags,
                "KubekmsRotationPeriodInDays": 120, "KubekmsInclude": ["Tags", "Rotation"]}),
        )
        .await
        .unwrap();
    assert!(answer.get("KubekmsTags").is_none(), "{answer}");
    assert!(answer.get("KubekmsRotation").is_none(), "{answer}");
    let key = answer["KeyMetadata"]["KeyId"].as_str().unwrap();
    assert!(h
        .call_as(&operator, "DescribeKey", json!({"KeyId": key}))
        .await
        .is_ok());
    // Without KubekmsInclude, CreateKey answers as AWS does: the metadata alone.
    let answer = h
        .call_as(
            &operator,
            "CreateKey",
            json!({"Policy": policy(&everything), "Tags": tags}),
        )
        .await
        .unwrap();
    assert!(answer.get("KubekmsTags").is_none() && answer.get("KubekmsRotation").is_none());
}
