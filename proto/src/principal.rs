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
        assert!(!is_root_arn("arn:aws:iam::1:root"));
        assert!(!is_root_arn("arn:aws:iam::111122223333:user/root"));
    }
}
