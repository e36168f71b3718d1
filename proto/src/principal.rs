//! How identities are named as principals (ARNs) in key policies, audit records and
//! `GetCallerIdentity`. Kubernetes identities live under the `k8s/` path of the engine's
//! account, so they never collide with the principals of configured access keys:
//!
//! | identity                                   | principal ARN                                                   |
//! |--------------------------------------------|-----------------------------------------------------------------|
//! | service account `<ns>/<name>`              | `arn:aws:iam::<account>:role/k8s/system:serviceaccount:<ns>:<name>` |
//! | any other Kubernetes user `<name>`         | `arn:aws:iam::<account>:user/k8s/<name>`                        |
//! | Kubernetes group `<name>`                  | `arn:aws:iam::<account>:group/k8s/<name>`                       |
//! | the account's root (standalone engine)     | `arn:aws:iam::<account>:root`                                   |
//!
//! A service account's segment is its Kubernetes user name, so an authenticated identity (a
//! TokenReview answer) maps to its principals without a lookup.

/// The audience of the ServiceAccount tokens the engine takes (projected into the operator's
/// and injected pods).
pub const TOKEN_AUDIENCE: &str = "kubekms";

/// The prefix of a service account's Kubernetes user name.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";

/// The account's root principal.
pub fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

/// Whether `arn` is an account's root principal.
pub fn is_root_arn(arn: &str) -> bool {
    arn.strip_prefix("arn:aws:iam::")
        .and_then(|rest| rest.strip_suffix(":root"))
        .is_some_and(|account| account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
}

/// The principal of a service account.
pub fn service_account_arn(account: &str, namespace: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/k8s/{SERVICE_ACCOUNT_USER_PREFIX}{namespace}:{name}")
}

/// The principal of an authenticated Kubernetes user name (a service account's user name
/// becomes its role).
pub fn kubernetes_user_arn(account: &str, username: &str) -> String {
    if username.starts_with(SERVICE_ACCOUNT_USER_PREFIX) {
        format!("arn:aws:iam::{account}:role/k8s/{username}")
    } else {
        format!("arn:aws:iam::{account}:user/k8s/{username}")
    }
}

/// The session tags a principal carries, as EKS Pod Identity tags a pod's session: a service
/// account's principal has `kubernetes-namespace` and `kubernetes-service-account`; other
/// principals have none. Policies read them as `aws:PrincipalTag/<tag>` (and in the policy
/// variable `${aws:PrincipalTag/<tag>}`), so one statement can say "a workload may use what
/// was made for its own ServiceAccount".
pub fn principal_tag<'a>(arn: &'a str, tag: &str) -> Option<&'a str> {
    let (namespace, name) = service_account_of(arn)?;
    match tag {
        NAMESPACE_TAG => Some(namespace),
        SERVICE_ACCOUNT_TAG => Some(name),
        _ => None,
    }
}

/// The tag naming a service account principal's namespace.
pub const NAMESPACE_TAG: &str = "kubernetes-namespace";
/// The tag naming a service account principal's name.
pub const SERVICE_ACCOUNT_TAG: &str = "kubernetes-service-account";

/// The namespace and name of a service account's principal ARN.
pub fn service_account_of(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (_account, resource) = rest.split_once(':')?;
    let user = resource
        .strip_prefix("role/k8s/")?
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)?;
    let (namespace, name) = user.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// The principal of a Kubernetes group.
pub fn group_arn(account: &str, group: &str) -> String {
    format!("arn:aws:iam::{account}:group/k8s/{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let a = "111122223333";
        assert_eq!(
            kubernetes_user_arn(a, "system:serviceaccount:shop:orders"),
            service_account_arn(a, "shop", "orders")
        );
        assert_eq!(
            kubernetes_user_arn(a, "alice@example.com"),
            "arn:aws:iam::111122223333:user/k8s/alice@example.com"
        );
        assert_eq!(
            group_arn(a, "system:masters"),
            "arn:aws:iam::111122223333:group/k8s/system:masters"
        );
        assert!(is_root_arn(&root_arn(a)));
        let sa = service_account_arn(a, "shop", "orders");
        assert_eq!(service_account_of(&sa), Some(("shop", "orders")));
        assert_eq!(principal_tag(&sa, NAMESPACE_TAG), Some("shop"));
        assert_eq!(principal_tag(&sa, SERVICE_ACCOUNT_TAG), Some("orders"));
        assert_eq!(principal_tag(&sa, "team"), None);
        let user = kubernetes_user_arn(a, "alice");
        assert_eq!(
            principal_tag(&user, NAMESPACE_TAG),
            None,
            "only service accounts"
        );
        assert_eq!(
            service_account_of("arn:aws:iam::111122223333:role/kubekms-operator"),
            None
        );
        assert!(!is_root_arn("arn:aws:iam::1:root"));
        assert!(!is_root_arn("arn:aws:iam::111122223333:user/root"));
    }
}
