//! Policy evaluation as a table: each row is a policy, a caller, an action and a context, and
//! the decision AWS's rules give for it.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;

const ACCOUNT: &str = "111122223333";
const APP: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders";
const OTHER: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:billing";
const FOREIGN: &str = "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:ci:runner";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const SHOP_GROUP: &str = "arn:aws:iam::111122223333:group/k8s/system:serviceaccounts:shop";

fn stmt(
    effect: &str,
    principal: serde_json::Value,
    action: serde_json::Value,
) -> serde_json::Value {
    json!({"Effect": effect, "Principal": {"AWS": principal}, "Action": action, "Resource": "*"})
}

fn doc(statements: Vec<serde_json::Value>) -> KeyPolicy {
    let text = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    KeyPolicy::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    )
}

struct Case {
    name: &'static str,
    policy: KeyPolicy,
    caller: &'static str,
    groups: Vec<String>,
    administrator: bool,
    action: Action,
    context: Option<EncryptionContext>,
    want: Decision,
}

fn case(name: &'static str, policy: KeyPolicy, caller: &'static str, action: Action) -> Case {
    Case {
        name,
        policy,
        caller,
        groups: Vec::new(),
        administrator: false,
        action,
        context: None,
        want: Decision::Allow,
    }
}

impl Case {
    fn context(mut self, pairs: &[(&str, &str)]) -> Self {
        self.context = Some(ctx(pairs));
        self
    }
    fn groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }
    fn admin(mut self) -> Self {
        self.administrator = true;
        self
    }
    fn want(mut self, want: Decision) -> Self {
        self.want = want;
        self
    }
    fn denied(self) -> Self {
        self.want(Decision::ImplicitDeny)
    }
}

fn with_condition(condition: serde_json::Value) -> KeyPolicy {
    let mut s = stmt("Allow", json!(APP), json!(["kms:Encrypt", "kms:Decrypt"]));
    s["Condition"] = condition;
    doc(vec![s])
}

#[test]
fn decisions() {
    use Action::*;
    let allow_app = doc(vec![stmt("Allow", json!(APP), json!("kms:Encrypt"))]);
    let wildcard = doc(vec![stmt(
        "Allow",
        json!([APP, OTHER]),
        json!(["kms:GenerateDataKey*", "kms:*crypt"]),
    )]);
    let deny_wins = doc(vec![stmt("Allow", json!(SHOP_GROUP), json!("kms:*")), {
        let mut d = stmt("Deny", json!(OTHER), json!("kms:Decrypt"));
        d["Sid"] = json!("NoBillingDecrypt");
        d
    }]);
    let account = doc(vec![stmt(
        "Allow",
        json!(format!("arn:aws:iam::{ACCOUNT}:root")),
        json!("kms:*"),
    )]);
    let bare_account = doc(vec![stmt(
        "Allow",
        json!(ACCOUNT),
        json!("kms:DescribeKey"),
    )]);
    let anyone = doc(vec![
        json!({"Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey"}),
    ]);
    let equals = with_condition(json!({"StringEquals": {"kms:EncryptionContext:app": "orders"}}));
    let present = with_condition(json!({"Null": {"kms:EncryptionContext:tenant": "false"}}));
    let not_equals =
        with_condition(json!({"StringNotEquals": {"kms:EncryptionContext:env": "prod"}}));
    let like = with_condition(json!({"StringLike": {"kms:EncryptionContext:path": "orders/*"}}));
    let only_keys = with_condition(json!({
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["app", "tenant"]},
        "Null": {"kms:EncryptionContextKeys": "false"}
    }));
    let any_key =
        with_condition(json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": ["t*"]}}));
    let caller_account = with_condition(json!({"StringEquals": {"kms:CallerAccount": ACCOUNT}}));
    let deny_without_context = doc(vec![stmt("Allow", json!(APP), json!("kms:*")), {
        let mut d = stmt("Deny", json!(APP), json!("kms:Decrypt"));
        d["Condition"] = json!({"Null": {"kms:EncryptionContext:app": "true"}});
        d
    }]);
    let empty = KeyPolicy::deny_all();
    // The statement the operator writes for injected data keys: anyone, but only a service
    // account of namespace shop, and only a context naming its own service account.
    let own_data_keys = doc(vec![json!({
        "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
        "Condition": {"StringEquals": {
            "aws:PrincipalTag/kubernetes-namespace": "shop",
            "kms:EncryptionContext:kubekms:namespace": "shop",
            "kms:EncryptionContext:kubekms:service-account":
                "${aws:PrincipalTag/kubernetes-service-account}",
        }}
    })]);
    // In the 2008-10-17 language (and a document without a Version) there are no variables.
    let literal = {
        let mut s = stmt("Allow", json!(APP), json!("kms:Decrypt"));
        s["Condition"] = json!({"StringEquals": {"kms:EncryptionContext:a": "${aws:username}"}});
        let text = json!({"Version": "2008-10-17", "Statement": [s]}).to_string();
        KeyPolicy::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let tag_like = with_condition(
        json!({"StringLike": {"kms:EncryptionContext:path": "${aws:PrincipalTag/kubernetes-namespace}/*"}}),
    );
    let this_key = doc(vec![{
        let mut s = stmt("Allow", json!(APP), json!("kms:Encrypt"));
        s["Resource"] = json!(KEY_ARN);
        s
    }]);
    let other_key = doc(vec![{
        let mut s = stmt("Allow", json!(APP), json!("kms:Encrypt"));
        s["Resource"] =
            json!("arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000");
        s
    }]);

    let cases = vec![
        case(
            "named principal, named action",
            allow_app.clone(),
            APP,
            Encrypt,
        ),
        case("other action", allow_app.clone(), APP, Decrypt).denied(),
        case("other principal", allow_app.clone(), OTHER, Encrypt).denied(),
        case("no statements", empty, APP, Encrypt).denied(),
        case("resource: this key", this_key, APP, Encrypt),
        case("resource: another key", other_key, APP, Encrypt).denied(),
        case(
            "data key wildcard",
            wildcard.clone(),
            OTHER,
            GenerateDataKeyWithoutPlaintext,
        ),
        case("*crypt covers Decrypt", wildcard.clone(), APP, Decrypt),
        case(
            "*crypt covers ReEncryptFrom? no",
            wildcard.clone(),
            APP,
            ReEncryptFrom,
        )
        .denied(),
        case("wildcard not Sign", wildcard, APP, Sign).denied(),
        case("group allows", deny_wins.clone(), APP, Decrypt).groups(&[SHOP_GROUP]),
        case("deny beats group allow", deny_wins.clone(), OTHER, Decrypt)
            .groups(&[SHOP_GROUP])
            .want(Decision::ExplicitDeny(Some("NoBillingDecrypt".into()))),
        case("deny only its action", deny_wins.clone(), OTHER, Encrypt).groups(&[SHOP_GROUP]),
        case("not in the group", deny_wins, FOREIGN, Encrypt).denied(),
        case(
            "account principal: administrator",
            account.clone(),
            FOREIGN,
            Decrypt,
        )
        .admin(),
        case(
            "account principal: not administrator",
            account.clone(),
            APP,
            Decrypt,
        )
        .denied(),
        case("bare account id", bare_account, FOREIGN, DescribeKey).admin(),
        case("anyone", anyone.clone(), FOREIGN, DescribeKey),
        case("anyone, other action", anyone, FOREIGN, Encrypt).denied(),
        case("equals holds", equals.clone(), APP, Encrypt)
            .context(&[("app", "orders"), ("x", "y")]),
        case("equals: other value", equals.clone(), APP, Encrypt)
            .context(&[("app", "billing")])
            .denied(),
        case("equals: case matters", equals.clone(), APP, Encrypt)
            .context(&[("app", "Orders")])
            .denied(),
        case("equals: key absent", equals.clone(), APP, Encrypt)
            .context(&[("x", "y")])
            .denied(),
        case("equals: no context", equals, APP, Encrypt).denied(),
        case("present", present.clone(), APP, Decrypt).context(&[("tenant", "a")]),
        case("not present", present, APP, Decrypt)
            .context(&[("app", "a")])
            .denied(),
        case("not equals: other", not_equals.clone(), APP, Encrypt).context(&[("env", "dev")]),
        case(
            "not equals: absent passes",
            not_equals.clone(),
            APP,
            Encrypt,
        ),
        case("not equals: equal", not_equals, APP, Encrypt)
            .context(&[("env", "prod")])
            .denied(),
        case("like", like.clone(), APP, Encrypt).context(&[("path", "orders/2024/1")]),
        case("like: no match", like, APP, Encrypt)
            .context(&[("path", "billing/1")])
            .denied(),
        case("subset of keys", only_keys.clone(), APP, Encrypt).context(&[("app", "a")]),
        case("all listed keys", only_keys.clone(), APP, Encrypt)
            .context(&[("app", "a"), ("tenant", "b")]),
        case("an unlisted key", only_keys.clone(), APP, Encrypt)
            .context(&[("app", "a"), ("x", "b")])
            .denied(),
        case("empty context refused by Null", only_keys, APP, Encrypt).denied(),
        case("any key like t*", any_key.clone(), APP, Encrypt).context(&[("tenant", "a")]),
        case("no key like t*", any_key, APP, Encrypt)
            .context(&[("app", "a")])
            .denied(),
        case("caller account", caller_account, APP, Encrypt),
        case(
            "deny when context missing",
            deny_without_context.clone(),
            APP,
            Decrypt,
        )
        .want(Decision::ExplicitDeny(None)),
        case("context given", deny_without_context, APP, Decrypt).context(&[("app", "x")]),
        case("own data key", own_data_keys.clone(), APP, Decrypt).context(&[
            ("kubekms:namespace", "shop"),
            ("kubekms:service-account", "orders"),
        ]),
        case(
            "another account's data key",
            own_data_keys.clone(),
            OTHER,
            Decrypt,
        )
        .context(&[
            ("kubekms:namespace", "shop"),
            ("kubekms:service-account", "orders"),
        ])
        .denied(),
        case(
            "another namespace's principal",
            own_data_keys.clone(),
            FOREIGN,
            Decrypt,
        )
        .context(&[
            ("kubekms:namespace", "shop"),
            ("kubekms:service-account", "runner"),
        ])
        .denied(),
        case(
            "a principal without tags",
            own_data_keys.clone(),
            "arn:aws:iam::111122223333:user/k8s/alice",
            Decrypt,
        )
        .context(&[
            ("kubekms:namespace", "shop"),
            ("kubekms:service-account", "alice"),
        ])
        .denied(),
        case("no context", own_data_keys, APP, Decrypt).denied(),
        case(
            "an unfilled variable fails even a negated operator",
            doc(vec![json!({
                "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
                "Condition": {"StringNotEquals": {
                    "kms:EncryptionContext:team": "${aws:PrincipalTag/kubernetes-namespace}"}},
            })]),
            "arn:aws:iam::111122223333:user/k8s/alice",
            Decrypt,
        )
        .context(&[("team", "x")])
        .denied(),
        case(
            "a filled variable under a negated operator",
            doc(vec![json!({
                "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt",
                "Condition": {"StringNotEquals": {
                    "kms:EncryptionContext:team": "${aws:PrincipalTag/kubernetes-namespace}"}},
            })]),
            APP,
            Decrypt,
        )
        .context(&[("team", "x")]),
        case("variable inside a pattern", tag_like.clone(), APP, Decrypt)
            .context(&[("path", "shop/orders/1")]),
        case(
            "variable inside a pattern, other prefix",
            tag_like,
            APP,
            Decrypt,
        )
        .context(&[("path", "ci/orders/1")])
        .denied(),
        case(
            "2008-10-17: ${...} is literal",
            literal.clone(),
            APP,
            Decrypt,
        )
        .context(&[("a", "${aws:username}")]),
        case("2008-10-17: no substitution", literal, APP, Decrypt)
            .context(&[("a", "bob")])
            .denied(),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let got = c.policy.evaluate(&Request {
            subject: Subject {
                arn: c.caller,
                groups: &c.groups,
                account: ACCOUNT,
                administrator: c.administrator,
            },
            action: c.action,
            context: c.context.as_ref(),
            resource: Some(KEY_ARN),
        });
        if got != c.want {
            failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn unenforceable_documents_are_refused_with_the_reason() {
    let refused = [
        ("not json", "{", "not valid JSON"),
        (
            "no statement",
            r#"{"Version":"2012-10-17"}"#,
            "must contain a Statement",
        ),
        (
            "unknown top-level",
            r#"{"Statement":[],"Extra":1}"#,
            "\"Extra\"",
        ),
        (
            "NotAction",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","NotAction":"kms:Decrypt"}]}"#,
            "\"NotAction\"",
        ),
        (
            "bad effect",
            r#"{"Statement":[{"Effect":"allow","Principal":"*","Action":"kms:*"}]}"#,
            "Effect",
        ),
        (
            "service principal",
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"kms:*"}]}"#,
            "\"Service\"",
        ),
        (
            "unknown action",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Nope"}]}"#,
            "matches no KMS action",
        ),
        (
            "unknown operator",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020"}}}]}"#,
            "\"DateGreaterThan\"",
        ),
        (
            "unknown key",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"aws:SourceIp":"1"}}}]}"#,
            "\"aws:SourceIp\"",
        ),
        (
            "single operator on the key set",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContextKeys":"a"}}}]}"#,
            "ForAllValues",
        ),
        (
            "resource not a key",
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:s3:::bucket"}]}"#,
            "must be \"*\" or a key ARN",
        ),
        (
            "unknown policy variable",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContext:a":"${aws:username}"}}}]}"#,
            "${aws:username} is not supported",
        ),
        (
            "unclosed policy variable",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContext:a":"${aws:PrincipalTag/x"}}}]}"#,
            "never closes",
        ),
        (
            "bad principal",
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:*"}]}"#,
            "\"alice\"",
        ),
    ];
    for (name, text, reason) in refused {
        match KeyPolicy::parse(text) {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(
                e.contains(reason),
                "{name}: {e:?} should mention {reason:?}"
            ),
        }
    }
    // AWS's own default key policy is accepted as written.
    let aws_default = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    assert!(KeyPolicy::parse(aws_default).is_ok());
}
