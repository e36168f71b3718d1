//! Reading a key policy document (the AWS policy language, JSON) into [`KeyPolicy`].
//!
//! Only what kubekms can enforce is accepted; anything else (NotAction, NotPrincipal, a
//! condition operator or key we do not evaluate) is refused with a message naming it, so a
//! document is never stored with a part that would silently be ignored.

use serde_json::{Map, Value};

use super::{Condition, ConditionKey, ConditionOp, Effect, KeyPolicy, PrincipalPattern, Statement};
use kubekms_proto::Action;

/// Why a document cannot be enforced, in words for `MalformedPolicyDocumentException`.
pub type ParseError = String;

pub(super) fn parse(text: &str) -> Result<KeyPolicy, ParseError> {
    let doc: Value =
        serde_json::from_str(text).map_err(|_| "The key policy is not valid JSON".to_owned())?;
    let Value::Object(doc) = doc else {
        return Err("The key policy must be a JSON object".into());
    };
    for field in doc.keys() {
        if !matches!(field.as_str(), "Version" | "Id" | "Statement") {
            return Err(format!("Unsupported policy element {field:?}"));
        }
    }
    if let Some(version) = doc.get("Version") {
        if !matches!(version.as_str(), Some("2012-10-17" | "2008-10-17")) {
            return Err("Version must be \"2012-10-17\"".into());
        }
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err("The key policy must contain a Statement".into()),
    };
    // As in AWS: policy variables exist only in the 2012-10-17 language; in 2008-10-17 (also
    // what a document without a Version is) `${...}` is literal text.
    let variables = doc.get("Version").and_then(Value::as_str) == Some("2012-10-17");
    let statements = statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| statement(s, variables).map_err(|e| format!("Statement[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(KeyPolicy { statements })
}

fn statement(value: &Value, variables: bool) -> Result<Statement, ParseError> {
    let Value::Object(s) = value else {
        return Err("a statement must be an object".into());
    };
    for field in s.keys() {
        if !matches!(
            field.as_str(),
            "Sid" | "Effect" | "Principal" | "Action" | "Resource" | "Condition"
        ) {
            return Err(format!("unsupported element {field:?}"));
        }
    }
    let sid = match s.get("Sid") {
        None => None,
        Some(Value::String(sid)) => Some(sid.clone()),
        Some(_) => return Err("Sid must be a string".into()),
    };
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err("Effect must be \"Allow\" or \"Deny\"".into()),
    };
    let principals = principals(s.get("Principal").ok_or("Principal is missing")?)?;
    let mut actions = 0u64;
    for pattern in strings(s.get("Action").ok_or("Action is missing")?, "Action")? {
        let mask = Action::mask_of(pattern);
        if mask == 0 {
            return Err(format!("Action {pattern:?} matches no KMS action"));
        }
        actions |= mask;
    }
    // In a key policy the resource is the key itself: "*" (what AWS writes) or key ARNs, one
    // of which must be the key's for the statement to apply.
    let resources = match s.get("Resource") {
        None => None,
        Some(value) => {
            let list = strings(value, "Resource")?;
            for r in &list {
                if *r != "*" && !(r.starts_with("arn:aws:kms:") && r.contains(":key/")) {
                    return Err(format!("Resource {r:?} must be \"*\" or a key ARN"));
                }
            }
            (!list.contains(&"*")).then(|| list.into_iter().map(str::to_owned).collect())
        }
    };
    let conditions = match s.get("Condition") {
        None => Vec::new(),
        Some(Value::Object(block)) => conditions(block, variables)?,
        Some(_) => return Err("Condition must be an object".into()),
    };
    Ok(Statement {
        sid,
        effect,
        principals,
        actions,
        resources,
        conditions,
    })
}

/// `"*"`, `{"AWS": "*" | "<arn or account>" | [...]}`.
fn principals(value: &Value) -> Result<Vec<PrincipalPattern>, ParseError> {
    let aws = match value {
        Value::String(s) if s == "*" => return Ok(vec![PrincipalPattern::Anyone]),
        Value::Object(map) => {
            if let Some(other) = map.keys().find(|k| *k != "AWS") {
                return Err(format!(
                    "Principal {other:?} is not supported; name principals under \"AWS\""
                ));
            }
            map.get("AWS")
                .ok_or("Principal must name \"AWS\" principals")?
        }
        _ => return Err("Principal must be \"*\" or an object with \"AWS\"".into()),
    };
    strings(aws, "Principal.AWS")?
        .into_iter()
        .map(principal)
        .collect()
}

fn principal(text: &str) -> Result<PrincipalPattern, ParseError> {
    if text == "*" {
        return Ok(PrincipalPattern::Anyone);
    }
    if is_account_id(text) {
        return Ok(PrincipalPattern::Account(text.to_owned()));
    }
    let Some(rest) = text.strip_prefix("arn:aws:iam::") else {
        return Err(format!(
            "Principal {text:?} is not an account id or an arn:aws:iam:: ARN"
        ));
    };
    match rest.split_once(':') {
        Some((account, "root")) if is_account_id(account) => {
            Ok(PrincipalPattern::Account(account.to_owned()))
        }
        Some((account, resource)) if is_account_id(account) && !resource.is_empty() => {
            Ok(PrincipalPattern::Arn(text.to_owned()))
        }
        _ => Err(format!("Principal {text:?} is not a valid IAM ARN")),
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn conditions(block: &Map<String, Value>, variables: bool) -> Result<Vec<Condition>, ParseError> {
    let mut out = Vec::new();
    for (op_name, tests) in block {
        let op = ConditionOp::from_name(op_name)
            .ok_or_else(|| format!("condition operator {op_name:?} is not supported"))?;
        let Value::Object(tests) = tests else {
            return Err(format!("Condition.{op_name} must be an object"));
        };
        for (key_name, values) in tests {
            let key = ConditionKey::from_name(key_name)
                .ok_or_else(|| format!("condition key {key_name:?} is not supported"))?;
            let values: Vec<String> = strings(values, key_name)?
                .into_iter()
                .map(str::to_owned)
                .collect();
            check_pairing(op, &key, key_name, &values)?;
            let mut templated = false;
            if variables {
                for value in &values {
                    templated |= super::holds_variables(value)?;
                }
            }
            out.push(Condition {
                op,
                key,
                values,
                templated,
            });
        }
    }
    Ok(out)
}

/// Refuse operator/key pairs whose meaning in AWS is a trap or that we do not evaluate: a
/// single-valued operator on the multi-valued `kms:EncryptionContextKeys`, a set operator on a
/// single value, `Null` with anything but "true"/"false".
fn check_pairing(
    op: ConditionOp,
    key: &ConditionKey,
    key_name: &str,
    values: &[String],
) -> Result<(), ParseError> {
    if op == ConditionOp::Null {
        return if values.len() == 1 && matches!(values[0].as_str(), "true" | "false") {
            Ok(())
        } else {
            Err(format!("Null on {key_name:?} takes \"true\" or \"false\""))
        };
    }
    match (key.is_multi_valued(), op.is_set_operator()) {
        (true, false) => Err(format!(
            "{key_name:?} holds several values: use ForAllValues: or ForAnyValue: operators"
        )),
        (false, true) => Err(format!(
            "{key_name:?} holds one value: ForAllValues:/ForAnyValue: do not apply"
        )),
        _ => Ok(()),
    }
}

/// A string or a non-empty list of strings.
fn strings<'v>(value: &'v Value, what: &str) -> Result<Vec<&'v str>, ParseError> {
    match value {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("{what} must hold strings"))
            })
            .collect(),
        _ => Err(format!(
            "{what} must be a string or a non-empty list of strings"
        )),
    }
}
