//! The one list of KMS operations (`TrentService.<Operation>`) and of the permission names
//! (`kms:<Action>`) a key policy grants. Metrics, dispatch, policy evaluation and the KeyPolicy
//! resource's validation all take their names from here.

use std::fmt;

/// Declares a fieldless enum whose variants are spelled on the wire as they are named.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every value; `ALL[x.index()] == x`.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }

            /// The position of this value in [`Self::ALL`]: a dense index for counters.
            pub fn index(self) -> usize {
                self as usize
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $(stringify!($variant) => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// The one list of KMS names, in three groups: operations whose permission has their own name,
/// operations that need other permissions, and permissions that are no operation's name.
/// [`Operation`] and [`Action`] are both made from it.
macro_rules! kms_names {
    (
        same: [$($same:ident),+ $(,)?],
        operations_only: [$($op:ident),+ $(,)?],
        actions_only: [$($action:ident),+ $(,)?] $(,)?
    ) => {
        named_enum!(
            /// Every operation of the AWS KMS API, as botocore's service model names them. The
            /// engine serves most of them; the rest are answered `UnsupportedOperationException`.
            Operation { $($same,)+ $($op,)+ }
        );

        named_enum!(
            /// The AWS KMS permission names (IAM actions without the `kms:` prefix). Each
            /// operation needs its own name, except ReEncrypt, which needs `ReEncryptFrom` on
            /// the source key and `ReEncryptTo` on the destination key;
            /// `SynchronizeMultiRegionKey` is AWS's own.
            Action { $($same,)+ $($action,)+ }
        );

        impl Operation {
            /// The permission an operation of the `same` group needs: the one of its name.
            fn same_action(self) -> Option<Action> {
                match self {
                    $(Operation::$same => Some(Action::$same),)+
                    _ => None,
                }
            }
        }
    };
}

kms_names! {
    same: [
        CancelKeyDeletion, ConnectCustomKeyStore, CreateAlias, CreateCustomKeyStore, CreateGrant,
        CreateKey, Decrypt, DeleteAlias, DeleteCustomKeyStore, DeleteImportedKeyMaterial,
        DeriveSharedSecret, DescribeCustomKeyStores, DescribeKey, DisableKey, DisableKeyRotation,
        DisconnectCustomKeyStore, EnableKey, EnableKeyRotation, Encrypt, GenerateDataKey,
        GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext, GenerateDataKeyWithoutPlaintext,
        GenerateMac, GenerateRandom, GetKeyPolicy, GetKeyRotationStatus, GetParametersForImport,
        GetPublicKey, ImportKeyMaterial, ListAliases, ListGrants, ListKeyPolicies,
        ListKeyRotations, ListKeys, ListResourceTags, ListRetirableGrants, PutKeyPolicy,
        ReplicateKey, RetireGrant, RevokeGrant, RotateKeyOnDemand, ScheduleKeyDeletion, Sign,
        TagResource, UntagResource, UpdateAlias, UpdateCustomKeyStore, UpdateKeyDescription,
        UpdatePrimaryRegion, Verify, VerifyMac,
    ],
    operations_only: [ReEncrypt],
    actions_only: [ReEncryptFrom, ReEncryptTo, SynchronizeMultiRegionKey],
}

/// Prefix of every IAM action name of KMS.
pub const ACTION_PREFIX: &str = "kms:";

impl Action {
    /// The IAM name, `kms:<Action>`.
    pub fn iam_name(self) -> String {
        format!("{ACTION_PREFIX}{}", self.name())
    }
}

/// Whether the action `pattern` (with `*` and `?` wildcards) covers `action`, ignoring ASCII
/// case as AWS IAM does. Both are full names with the `kms:` prefix.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob_matches(pattern.as_bytes(), action.as_bytes())
}

/// `*`/`?` wildcard match ignoring ASCII case (action names).
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    glob(pattern, text, |a, b| a.eq_ignore_ascii_case(&b))
}

/// `*`/`?` wildcard match, case-sensitive (IAM's StringLike).
pub fn glob_matches_exact(pattern: &[u8], text: &[u8]) -> bool {
    glob(pattern, text, |a, b| a == b)
}

/// Iterative wildcard match: on a mismatch, go back to the last `*` and let it take one more
/// byte. Linear in practice and never recursive, so hostile patterns cannot blow the stack.
fn glob(pattern: &[u8], text: &[u8], same: impl Fn(u8, u8) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || same(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl Action {
    /// The set of actions `pattern` (a full name with wildcards, such as `kms:GenerateDataKey*`,
    /// or `*`) covers, as a bit mask over [`Action::index`].
    pub fn mask_of(pattern: &str) -> u64 {
        if pattern == "*" {
            return Action::ALL.iter().fold(0, |mask, a| mask | a.bit());
        }
        // Every key's policy is parsed when its record is read (at each replica, for every key
        // a wave creates): match the part after a literal `kms:` against the bare names
        // without building each full name. A pattern with a wildcard inside its prefix takes
        // the general path.
        let bare = pattern
            .get(..ACTION_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ACTION_PREFIX))
            .and_then(|_| pattern.get(ACTION_PREFIX.len()..));
        Action::ALL
            .iter()
            .filter(|a| match bare {
                Some(rest) => action_matches(rest, a.name()),
                None => action_matches(pattern, &a.iam_name()),
            })
            .fold(0, |mask, a| mask | a.bit())
    }

    /// This action's bit in a mask made by [`Action::mask_of`].
    pub fn bit(self) -> u64 {
        1 << self.index()
    }
}

impl Operation {
    /// The permission this operation needs on the key it names. ReEncrypt needs two (see
    /// [`Action`]): this is the one for its source key, `ReEncryptTo` is checked on the
    /// destination.
    pub fn action(self) -> Action {
        self.same_action().unwrap_or(Action::ReEncryptFrom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(action_matches("kms:Encrypt", "kms:Encrypt"));
        assert!(action_matches("KMS:encrypt", "kms:Encrypt"));
        assert!(!action_matches("kms:Encrypt", "kms:Decrypt"));
        assert!(!action_matches("kms:Encrypt", "kms:EncryptX"));
        assert!(action_matches("kms:*", "kms:Sign"));
        assert!(glob_matches_exact(b"ab*", b"abc"));
        assert!(!glob_matches_exact(b"AB*", b"abc"));
        assert!(action_matches(
            "kms:GenerateDataKey*",
            "kms:GenerateDataKey"
        ));
        assert!(action_matches(
            "kms:GenerateDataKey*",
            "kms:GenerateDataKeyPairWithoutPlaintext"
        ));
        assert!(!action_matches("kms:GenerateDataKey*", "kms:GenerateMac"));
        assert!(action_matches("kms:*crypt", "kms:Decrypt"));
        assert!(action_matches("kms:?ecrypt", "kms:Decrypt"));
        assert!(!action_matches("kms:?crypt", "kms:Decrypt"));
        assert!(action_matches("kms:*Key*", "kms:DescribeKey"));
        assert!(!action_matches("kms:Sign", "kms:"));
        // Many stars against a long mismatch finishes (no exponential backtracking).
        let hostile = format!("kms:{}b", "*a".repeat(40));
        assert!(!action_matches(
            &hostile,
            &format!("kms:{}", "a".repeat(2000))
        ));
    }

    #[test]
    fn action_masks() {
        assert_eq!(Action::mask_of("kms:*"), Action::mask_of("*"));
        assert_eq!(
            Action::mask_of("kms:*").count_ones() as usize,
            Action::ALL.len()
        );
        let data_keys = Action::mask_of("kms:GenerateDataKey*");
        assert_eq!(data_keys.count_ones(), 4);
        assert_ne!(data_keys & Action::GenerateDataKeyPair.bit(), 0);
        assert_eq!(data_keys & Action::GenerateMac.bit(), 0);
        assert_eq!(Action::mask_of("KMS:decrypt"), Action::Decrypt.bit());
        assert_eq!(Action::mask_of("kms:Nope"), 0);
        assert_eq!(Action::mask_of("s3:*"), 0);
        // Wildcards inside the prefix take the general path and mean the same.
        assert_eq!(Action::mask_of("k?s:*"), Action::mask_of("*"));
        assert_eq!(Action::mask_of("*:Encrypt"), Action::Encrypt.bit());
        assert_eq!(
            Action::mask_of("*crypt"),
            Action::Encrypt.bit() | Action::Decrypt.bit()
        );
        assert_eq!(Action::mask_of("kms:"), 0);
        assert_eq!(Action::mask_of("km"), 0);
    }

    #[test]
    fn names_round_trip() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(Operation::from_name(op.name()), Some(*op));
        }
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(a.index(), i);
            assert_eq!(Action::from_name(a.name()), Some(*a));
        }
        assert_eq!(Operation::ALL.len(), 53);
        assert_eq!(Action::ALL.len(), 55);
        assert_eq!(Operation::from_name("Nope"), None);
        assert_eq!(Operation::from_name("encrypt"), None);
        // Action masks are u64 bit sets.
        assert!(Action::ALL.len() <= 64);
    }

    #[test]
    fn every_operation_has_its_own_action_except_re_encrypt() {
        for op in Operation::ALL {
            let action = op.action();
            if *op == Operation::ReEncrypt {
                assert_eq!(action, Action::ReEncryptFrom);
            } else {
                assert_eq!(action.name(), op.name());
            }
        }
        assert_eq!(Action::Encrypt.iam_name(), "kms:Encrypt");
    }
}
