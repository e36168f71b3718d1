//! Key policy evaluation: the domain core of access control, with no Kubernetes in it.
//!
//! A key's policy is a document in the AWS policy language, read once into a [`KeyPolicy`]
//! when the key is loaded or its policy is put, and evaluated on every request:
//!
//! - default deny: a request is allowed only when an Allow statement matches it;
//! - an explicit Deny that matches wins over any Allow;
//! - a statement matches when the caller is one of its principals, the action is one of its
//!   actions (wildcards, case-insensitive, compiled to a bit mask) and every condition holds.
//!
//! Principals are matched by ARN against the caller and its groups. kubekms has no IAM, so the
//! account principal (`arn:aws:iam::<account>:root`, or the bare account id), which in AWS
//! delegates to the account's IAM policies, stands for the account's administrators: callers
//! whose [`Subject::administrator`] is set.
//!
//! Conditions read the request's encryption context, as AWS KMS's `kms:EncryptionContext:<key>`
//! (one value: `StringEquals`, `StringNotEquals`, `StringEqualsIgnoreCase`, `StringLike`,
//! `StringNotLike`, `Null`) and `kms:EncryptionContextKeys` (the set of keys:
//! `ForAllValues:`/`ForAnyValue:` with `StringEquals` or `StringLike`, and `Null`), and
//! `kms:CallerAccount`, and `aws:PrincipalTag/<tag>`: the tags of a service account's
//! principal (`kubernetes-namespace`, `kubernetes-service-account`, as EKS Pod Identity tags a
//! pod's session; see `kubekms_proto::principal::principal_tag`).
//!
//! Condition values may hold the policy variable `${aws:PrincipalTag/<tag>}`, replaced by the
//! caller's tag when evaluated (a value whose tag the caller lacks matches nothing, as in AWS).
//! With it one statement lets every workload decrypt only what was made for its own
//! ServiceAccount: `"kms:EncryptionContext:kubekms:service-account":
//! "${aws:PrincipalTag/kubernetes-service-account}"`.

mod document;

use std::borrow::Cow;

use kubekms_proto::operation::glob_matches_exact;
use kubekms_proto::principal::principal_tag;
use kubekms_proto::Action;

use crate::blob::EncryptionContext;

pub use document::ParseError;

/// A parsed key policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    sid: Option<String>,
    effect: Effect,
    principals: Vec<PrincipalPattern>,
    /// The actions covered, as a mask over `Action::index`.
    actions: u64,
    /// The key ARNs the statement names; `None` for `"*"` (or no Resource).
    resources: Option<Vec<String>>,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
enum PrincipalPattern {
    /// `"*"`: any authenticated caller.
    Anyone,
    /// The account (its root ARN or its id): the account's administrators.
    Account(String),
    /// One principal or group, by ARN.
    Arn(String),
}

#[derive(Debug, Clone)]
struct Condition {
    op: ConditionOp,
    key: ConditionKey,
    values: Vec<String>,
    /// Whether any value holds a policy variable (`${...}`), resolved per request.
    templated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConditionOp {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    Null,
    ForAllValuesStringEquals,
    ForAllValuesStringLike,
    ForAnyValueStringEquals,
    ForAnyValueStringLike,
}

impl ConditionOp {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Self::StringEquals,
            "StringNotEquals" => Self::StringNotEquals,
            "StringEqualsIgnoreCase" => Self::StringEqualsIgnoreCase,
            "StringLike" => Self::StringLike,
            "StringNotLike" => Self::StringNotLike,
            "Null" => Self::Null,
            "ForAllValues:StringEquals" => Self::ForAllValuesStringEquals,
            "ForAllValues:StringLike" => Self::ForAllValuesStringLike,
            "ForAnyValue:StringEquals" => Self::ForAnyValueStringEquals,
            "ForAnyValue:StringLike" => Self::ForAnyValueStringLike,
            _ => return None,
        })
    }

    fn is_set_operator(self) -> bool {
        matches!(
            self,
            Self::ForAllValuesStringEquals
                | Self::ForAllValuesStringLike
                | Self::ForAnyValueStringEquals
                | Self::ForAnyValueStringLike
        )
    }
}

#[derive(Debug, Clone)]
enum ConditionKey {
    /// `kms:EncryptionContext:<key>`: that pair's value, if present.
    EncryptionContext(String),
    /// `kms:EncryptionContextKeys`: the set of the context's keys.
    EncryptionContextKeys,
    /// `kms:CallerAccount`.
    CallerAccount,
    /// `aws:PrincipalTag/<tag>`: the caller's tag, if it has it.
    PrincipalTag(String),
}

/// The prefix of principal-tag condition keys and policy variables (case-insensitive; the
/// tag's name after it is not).
const PRINCIPAL_TAG: &str = "aws:PrincipalTag/";

/// The tag named by `aws:PrincipalTag/<tag>`.
fn principal_tag_name(name: &str) -> Option<&str> {
    let n = PRINCIPAL_TAG.len();
    (name.len() > n && name.is_char_boundary(n) && name[..n].eq_ignore_ascii_case(PRINCIPAL_TAG))
        .then(|| &name[n..])
}

impl ConditionKey {
    /// Condition keys are case-insensitive in IAM; the context key after the prefix is not.
    fn from_name(name: &str) -> Option<Self> {
        const CONTEXT: &str = "kms:EncryptionContext:";
        if name.len() > CONTEXT.len()
            && name.is_char_boundary(CONTEXT.len())
            && name[..CONTEXT.len()].eq_ignore_ascii_case(CONTEXT)
        {
            return Some(Self::EncryptionContext(name[CONTEXT.len()..].to_owned()));
        }
        if name.eq_ignore_ascii_case("kms:EncryptionContextKeys") {
            return Some(Self::EncryptionContextKeys);
        }
        if name.eq_ignore_ascii_case("kms:CallerAccount") {
            return Some(Self::CallerAccount);
        }
        principal_tag_name(name).map(|tag| Self::PrincipalTag(tag.to_owned()))
    }

    fn is_multi_valued(&self) -> bool {
        matches!(self, Self::EncryptionContextKeys)
    }
}

/// Who is asking, as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The caller's principal ARN.
    pub arn: &'a str,
    /// The ARNs of the groups the caller belongs to.
    pub groups: &'a [String],
    /// The account the request is in.
    pub account: &'a str,
    /// Whether the caller acts for the account (matches the account principal).
    pub administrator: bool,
}

/// One request to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub subject: Subject<'a>,
    pub action: Action,
    /// The request's encryption context, for operations that take one.
    pub context: Option<&'a EncryptionContext>,
    /// The key's ARN; `None` to ignore statements' Resource (a check made for any key).
    pub resource: Option<&'a str>,
}

/// What a policy says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it.
    ImplicitDeny,
    /// A Deny statement matches (its Sid, if it has one).
    ExplicitDeny(Option<String>),
}

impl KeyPolicy {
    /// Read a document, refusing what cannot be enforced (see [`document`]).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        document::parse(text)
    }

    /// A policy that allows nothing (for a stored document that no longer parses).
    pub fn deny_all() -> Self {
        Self {
            statements: Vec::new(),
        }
    }

    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let mut allowed = false;
        for statement in &self.statements {
            if !statement.matches(request) {
                continue;
            }
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny(statement.sid.clone()),
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

impl Statement {
    fn matches(&self, request: &Request<'_>) -> bool {
        self.actions & request.action.bit() != 0
            && match (&self.resources, request.resource) {
                (Some(list), Some(arn)) => list.iter().any(|r| r == arn),
                _ => true,
            }
            && self.principals.iter().any(|p| p.matches(&request.subject))
            && self.conditions.iter().all(|c| c.holds(request))
    }
}

impl PrincipalPattern {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            Self::Anyone => true,
            Self::Account(account) => subject.administrator && subject.account == account,
            Self::Arn(arn) => subject.arn == arn || subject.groups.iter().any(|g| g == arn),
        }
    }
}

impl Condition {
    fn holds(&self, request: &Request<'_>) -> bool {
        use ConditionOp as Op;
        let context = request.context;
        let subject = &request.subject;
        // A policy variable the caller cannot fill (a principal without that tag) makes the
        // whole condition false, the negated operators included, as in IAM.
        let Some(values) = self.values_for(subject.arn) else {
            return false;
        };
        let values = values.as_ref();
        match &self.key {
            ConditionKey::EncryptionContextKeys => {
                let mut keys = context.into_iter().flat_map(EncryptionContext::keys);
                match self.op {
                    Op::Null => {
                        let absent = context.is_none_or(EncryptionContext::is_empty);
                        absent == (values[0] == "true")
                    }
                    // True for an empty set, as in AWS: pair it with a Null check if needed.
                    Op::ForAllValuesStringEquals => keys.all(|k| equals(values, k)),
                    Op::ForAllValuesStringLike => keys.all(|k| like(values, k)),
                    Op::ForAnyValueStringEquals => keys.any(|k| equals(values, k)),
                    Op::ForAnyValueStringLike => keys.any(|k| like(values, k)),
                    _ => false,
                }
            }
            ConditionKey::EncryptionContext(key) => {
                self.single(values, context.and_then(|c| c.get(key)))
            }
            ConditionKey::CallerAccount => self.single(values, Some(subject.account)),
            ConditionKey::PrincipalTag(tag) => self.single(values, principal_tag(subject.arn, tag)),
        }
    }

    /// The values with their policy variables filled for the caller `arn`, once per
    /// evaluation and without copying when there are none; `None` when one cannot be filled.
    fn values_for(&self, arn: &str) -> Option<Cow<'_, [String]>> {
        if !self.templated {
            return Some(Cow::Borrowed(&self.values));
        }
        self.values
            .iter()
            .map(|v| substitute(v, arn))
            .collect::<Option<Vec<_>>>()
            .map(Cow::Owned)
    }

    /// A single-valued test. A key absent from the request fails every positive operator and
    /// passes the negated ones, as in IAM.
    fn single(&self, values: &[String], value: Option<&str>) -> bool {
        use ConditionOp as Op;
        match (self.op, value) {
            (Op::Null, v) => v.is_none() == (values[0] == "true"),
            (Op::StringNotEquals, Some(v)) => !equals(values, v),
            (Op::StringNotLike, Some(v)) => !like(values, v),
            (Op::StringNotEquals | Op::StringNotLike, None) => true,
            (Op::StringEquals, Some(v)) => equals(values, v),
            (Op::StringEqualsIgnoreCase, Some(v)) => {
                values.iter().any(|x| x.eq_ignore_ascii_case(v))
            }
            (Op::StringLike, Some(v)) => like(values, v),
            _ => false,
        }
    }
}

fn equals(values: &[String], value: &str) -> bool {
    values.iter().any(|x| x == value)
}

fn like(values: &[String], value: &str) -> bool {
    values
        .iter()
        .any(|x| glob_matches_exact(x.as_bytes(), value.as_bytes()))
}

/// `template` with each `${aws:PrincipalTag/<tag>}` replaced by the tag of `arn`'s principal;
/// `None` when a tag is missing. The parser accepted only these variables.
fn substitute(template: &str, arn: &str) -> Option<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let tag = principal_tag_name(&after[..end])?;
        out.push_str(principal_tag(arn, tag)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `value` holds policy variables; an error naming the first one we do not resolve.
fn holds_variables(value: &str) -> Result<bool, String> {
    let mut rest = value;
    let mut any = false;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "{value:?} opens a policy variable with ${{ but never closes it"
            ));
        };
        if principal_tag_name(&after[..end]).is_none() {
            return Err(format!(
                "policy variable ${{{}}} is not supported (only ${{aws:PrincipalTag/<tag>}})",
                &after[..end]
            ));
        }
        any = true;
        rest = &after[end + 1..];
    }
    Ok(any)
}

#[cfg(test)]
mod tests;
