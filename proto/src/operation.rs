//! The one list of KMS operations (`TrentService.<Operation>`) and of the permission names
//! (`kms:<Action>`) a key policy grants. Metrics, dispatch, policy evaluation and the KeyPolicy
//! resource's validation all take their names from here.

use std::fmt;

/// Declares a fieldless enum whose variants are spelled `$wire` on the wire, sorted by that
/// name so a lookup is a binary search.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every value, sorted by name; `ALL[x.index()] == x`.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($wire),+];

            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The position of this value in [`Self::ALL`]: a dense index for counters.
            pub fn index(self) -> usize {
                self as usize
            }

            pub fn from_name(name: &str) -> Option<Self> {
                Self::NAMES
                    .binary_search(&name)
                    .ok()
                    .and_then(|i| Self::ALL.get(i).copied())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// Every operation of the AWS KMS API, as botocore's service model names them. The engine
    /// serves most of them; the rest are answered `UnsupportedOperationException`.
    Operation {
        CancelKeyDeletion = "CancelKeyDeletion",
        ConnectCustomKeyStore = "ConnectCustomKeyStore",
        CreateAlias = "CreateAlias",
        CreateCustomKeyStore = "CreateCustomKeyStore",
        CreateGrant = "CreateGrant",
        CreateKey = "CreateKey",
        Decrypt = "Decrypt",
        DeleteAlias = "DeleteAlias",
        DeleteCustomKeyStore = "DeleteCustomKeyStore",
        DeleteImportedKeyMaterial = "DeleteImportedKeyMaterial",
        DeriveSharedSecret = "DeriveSharedSecret",
        DescribeCustomKeyStores = "DescribeCustomKeyStores",
        DescribeKey = "DescribeKey",
        DisableKey = "DisableKey",
        DisableKeyRotation = "DisableKeyRotation",
        DisconnectCustomKeyStore = "DisconnectCustomKeyStore",
        EnableKey = "EnableKey",
        EnableKeyRotation = "EnableKeyRotation",
        Encrypt = "Encrypt",
        GenerateDataKey = "GenerateDataKey",
        GenerateDataKeyPair = "GenerateDataKeyPair",
        GenerateDataKeyPairWithoutPlaintext = "GenerateDataKeyPairWithoutPlaintext",
        GenerateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext",
        GenerateMac = "GenerateMac",
        GenerateRandom = "GenerateRandom",
        GetKeyPolicy = "GetKeyPolicy",
        GetKeyRotationStatus = "GetKeyRotationStatus",
        GetParametersForImport = "GetParametersForImport",
        GetPublicKey = "GetPublicKey",
        ImportKeyMaterial = "ImportKeyMaterial",
        ListAliases = "ListAliases",
        ListGrants = "ListGrants",
        ListKeyPolicies = "ListKeyPolicies",
        ListKeyRotations = "ListKeyRotations",
        ListKeys = "ListKeys",
        ListResourceTags = "ListResourceTags",
        ListRetirableGrants = "ListRetirableGrants",
        PutKeyPolicy = "PutKeyPolicy",
        ReEncrypt = "ReEncrypt",
        ReplicateKey = "ReplicateKey",
        RetireGrant = "RetireGrant",
        RevokeGrant = "RevokeGrant",
        RotateKeyOnDemand = "RotateKeyOnDemand",
        ScheduleKeyDeletion = "ScheduleKeyDeletion",
        Sign = "Sign",
        TagResource = "TagResource",
        UntagResource = "UntagResource",
        UpdateAlias = "UpdateAlias",
        UpdateCustomKeyStore = "UpdateCustomKeyStore",
        UpdateKeyDescription = "UpdateKeyDescription",
        UpdatePrimaryRegion = "UpdatePrimaryRegion",
        Verify = "Verify",
        VerifyMac = "VerifyMac",
    }
);

named_enum!(
    /// The AWS KMS permission names (IAM actions without the `kms:` prefix). Each operation
    /// needs its own name, except ReEncrypt, which needs `ReEncryptFrom` on the source key and
    /// `ReEncryptTo` on the destination key; `SynchronizeMultiRegionKey` is AWS's own.
    Action {
        CancelKeyDeletion = "CancelKeyDeletion",
        ConnectCustomKeyStore = "ConnectCustomKeyStore",
        CreateAlias = "CreateAlias",
        CreateCustomKeyStore = "CreateCustomKeyStore",
        CreateGrant = "CreateGrant",
        CreateKey = "CreateKey",
        Decrypt = "Decrypt",
        DeleteAlias = "DeleteAlias",
        DeleteCustomKeyStore = "DeleteCustomKeyStore",
        DeleteImportedKeyMaterial = "DeleteImportedKeyMaterial",
        DeriveSharedSecret = "DeriveSharedSecret",
        DescribeCustomKeyStores = "DescribeCustomKeyStores",
        DescribeKey = "DescribeKey",
        DisableKey = "DisableKey",
        DisableKeyRotation = "DisableKeyRotation",
        DisconnectCustomKeyStore = "DisconnectCustomKeyStore",
        EnableKey = "EnableKey",
        EnableKeyRotation = "EnableKeyRotation",
        Encrypt = "Encrypt",
        GenerateDataKey = "GenerateDataKey",
        GenerateDataKeyPair = "GenerateDataKeyPair",
        GenerateDataKeyPairWithoutPlaintext = "GenerateDataKeyPairWithoutPlaintext",
        GenerateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext",
        GenerateMac = "GenerateMac",
        GenerateRandom = "GenerateRandom",
        GetKeyPolicy = "GetKeyPolicy",
        GetKeyRotationStatus = "GetKeyRotationStatus",
        GetParametersForImport = "GetParametersForImport",
        GetPublicKey = "GetPublicKey",
        ImportKeyMaterial = "ImportKeyMaterial",
        ListAliases = "ListAliases",
        ListGrants = "ListGrants",
        ListKeyPolicies = "ListKeyPolicies",
        ListKeyRotations = "ListKeyRotations",
        ListKeys = "ListKeys",
        ListResourceTags = "ListResourceTags",
        ListRetirableGrants = "ListRetirableGrants",
        PutKeyPolicy = "PutKeyPolicy",
        ReEncryptFrom = "ReEncryptFrom",
        ReEncryptTo = "ReEncryptTo",
        ReplicateKey = "ReplicateKey",
        RetireGrant = "RetireGrant",
        RevokeGrant = "RevokeGrant",
        RotateKeyOnDemand = "RotateKeyOnDemand",
        ScheduleKeyDeletion = "ScheduleKeyDeletion",
        Sign = "Sign",
        SynchronizeMultiRegionKey = "SynchronizeMultiRegionKey",
        TagResource = "TagResource",
        UntagResource = "UntagResource",
        UpdateAlias = "UpdateAlias",
        UpdateCustomKeyStore = "UpdateCustomKeyStore",
        UpdateKeyDescription = "UpdateKeyDescription",
        UpdatePrimaryRegion = "UpdatePrimaryRegion",
        Verify = "Verify",
        VerifyMac = "VerifyMac",
    }
);

/// Prefix of every IAM action name of KMS.
pub const ACTION_PREFIX: &str = "kms:";

impl Action {
    /// The IAM name, `kms:<Action>`.
    pub fn iam_name(self) -> String {
        format!("{ACTION_PREFIX}{}", self.name())
    }
}

impl Operation {
    /// The permission this operation needs on the key it names. ReEncrypt needs two (see
    /// [`Action`]): this is the one for its source key, `ReEncryptTo` is checked on the
    /// destination.
    pub fn action(self) -> Action {
        match self {
            Operation::ReEncrypt => Action::ReEncryptFrom,
            // Every other operation has the action of the same name.
            op => Action::from_name(op.name()).unwrap_or(Action::ReEncryptFrom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_round_trip() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
            assert_eq!(Operation::from_name(op.name()), Some(*op));
        }
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(a.index(), i);
            assert_eq!(Action::from_name(a.name()), Some(*a));
        }
        assert!(Operation::NAMES.windows(2).all(|w| w[0] < w[1]));
        assert!(Action::NAMES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Operation::from_name("Nope"), None);
        assert_eq!(Operation::from_name("encrypt"), None);
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
