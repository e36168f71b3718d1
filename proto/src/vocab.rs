//! The vocabulary of the AWS KMS API: key specs, usages, algorithms and states, spelled on the
//! wire exactly as botocore's `kms/2014-11-01/service-2.json` spells them. The engine, the
//! custom resources and clients all use these types, so a name is spelled in one place.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::Serialize;

/// Every enum [`aws_enum!`] declares, so that the wire layer parses any of them with one generic
/// function (and a new enum needs no registration there).
pub trait AwsEnum: Sized + Copy + 'static {
    const VALUES: &'static [Self];
    fn aws_name(self) -> &'static str;
    fn from_aws(s: &str) -> Option<Self>;
}

/// Declares a string enum whose serde form and `as_str` are the AWS names.
macro_rules! aws_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        #[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl AwsEnum for $name {
            const VALUES: &'static [$name] = $name::ALL;

            fn aws_name(self) -> &'static str {
                self.as_str()
            }

            fn from_aws(s: &str) -> Option<Self> {
                $name::parse(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(AwsEnumVisitor::<$name>(PhantomData))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                $name::parse(s).ok_or_else(|| UnknownName {
                    type_name: stringify!($name),
                    value: s.to_owned(),
                })
            }
        }
    };
}

/// A string that names none of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// The enum's Rust name.
    pub type_name: &'static str,
    pub value: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a {}", self.value, self.type_name)
    }
}

impl std::error::Error for UnknownName {}

/// The constraint an AWS enum member must satisfy, worded as AWS words it.
pub fn enum_constraint<E: AwsEnum>() -> String {
    let names: Vec<&str> = E::VALUES.iter().map(|v| v.aws_name()).collect();
    format!("{ENUM_CONSTRAINT_PREFIX}[{}]", names.join(", "))
}

/// How [`enum_constraint`] begins, so a transport can recognise the error after serde has
/// carried it.
pub const ENUM_CONSTRAINT_PREFIX: &str = "Member must satisfy enum value set: ";

/// Parses an AWS enum from a string; an unknown name is refused with [`enum_constraint`], which
/// names the allowed values and never echoes the submitted one.
struct AwsEnumVisitor<E>(PhantomData<E>);

impl<E: AwsEnum> Visitor<'_> for AwsEnumVisitor<E> {
    type Value = E;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<Er: de::Error>(self, v: &str) -> Result<E, Er> {
        E::from_aws(v).ok_or_else(|| Er::custom(enum_constraint::<E>()))
    }
}

aws_enum!(
    /// `KeySpec` (and the older `CustomerMasterKeySpec`, which uses the same names).
    KeySpec {
        SymmetricDefault = "SYMMETRIC_DEFAULT",
        Rsa2048 = "RSA_2048",
        Rsa3072 = "RSA_3072",
        Rsa4096 = "RSA_4096",
        EccNistP256 = "ECC_NIST_P256",
        EccNistP384 = "ECC_NIST_P384",
        EccNistP521 = "ECC_NIST_P521",
        EccSecgP256k1 = "ECC_SECG_P256K1",
        Hmac224 = "HMAC_224",
        Hmac256 = "HMAC_256",
        Hmac384 = "HMAC_384",
        Hmac512 = "HMAC_512",
    }
);

aws_enum!(KeyUsage {
    EncryptDecrypt = "ENCRYPT_DECRYPT",
    SignVerify = "SIGN_VERIFY",
    GenerateVerifyMac = "GENERATE_VERIFY_MAC",
});

aws_enum!(EncryptionAlgorithm {
    SymmetricDefault = "SYMMETRIC_DEFAULT",
    RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
    RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
});

aws_enum!(SigningAlgorithm {
    RsassaPssSha256 = "RSASSA_PSS_SHA_256",
    RsassaPssSha384 = "RSASSA_PSS_SHA_384",
    RsassaPssSha512 = "RSASSA_PSS_SHA_512",
    RsassaPkcs1V15Sha256 = "RSASSA_PKCS1_V1_5_SHA_256",
    RsassaPkcs1V15Sha384 = "RSASSA_PKCS1_V1_5_SHA_384",
    RsassaPkcs1V15Sha512 = "RSASSA_PKCS1_V1_5_SHA_512",
    EcdsaSha256 = "ECDSA_SHA_256",
    EcdsaSha384 = "ECDSA_SHA_384",
    EcdsaSha512 = "ECDSA_SHA_512",
});

aws_enum!(MacAlgorithm {
    HmacSha224 = "HMAC_SHA_224",
    HmacSha256 = "HMAC_SHA_256",
    HmacSha384 = "HMAC_SHA_384",
    HmacSha512 = "HMAC_SHA_512",
});

aws_enum!(MessageType {
    Raw = "RAW",
    Digest = "DIGEST",
});

aws_enum!(KeyState {
    Creating = "Creating",
    Enabled = "Enabled",
    Disabled = "Disabled",
    PendingDeletion = "PendingDeletion",
    PendingImport = "PendingImport",
    Unavailable = "Unavailable",
});

aws_enum!(OriginType {
    AwsKms = "AWS_KMS",
    External = "EXTERNAL",
    AwsCloudhsm = "AWS_CLOUDHSM",
    ExternalKeyStore = "EXTERNAL_KEY_STORE",
});

aws_enum!(KeyManagerType {
    Aws = "AWS",
    Customer = "CUSTOMER",
});

aws_enum!(
    /// How a key's material came to be rotated (`ListKeyRotations`).
    RotationType {
        Automatic = "AUTOMATIC",
        OnDemand = "ON_DEMAND",
    }
);

aws_enum!(ExpirationModel {
    KeyMaterialExpires = "KEY_MATERIAL_EXPIRES",
    KeyMaterialDoesNotExpire = "KEY_MATERIAL_DOES_NOT_EXPIRE",
});

aws_enum!(DataKeySpec {
    Aes256 = "AES_256",
    Aes128 = "AES_128",
});

aws_enum!(
    /// Wrapping algorithms that `GetParametersForImport` offers.
    WrappingAlgorithm {
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        RsaAesKeyWrapSha1 = "RSA_AES_KEY_WRAP_SHA_1",
        RsaAesKeyWrapSha256 = "RSA_AES_KEY_WRAP_SHA_256",
    }
);

aws_enum!(WrappingKeySpec {
    Rsa2048 = "RSA_2048",
    Rsa3072 = "RSA_3072",
    Rsa4096 = "RSA_4096",
});

/// CreateKey's default, and a Key's.
impl Default for KeySpec {
    fn default() -> Self {
        KeySpec::SymmetricDefault
    }
}

impl WrappingAlgorithm {
    /// Whether the algorithm wraps under a one-time AES key, so any size of material fits.
    pub fn is_key_wrap(self) -> bool {
        matches!(
            self,
            WrappingAlgorithm::RsaAesKeyWrapSha1 | WrappingAlgorithm::RsaAesKeyWrapSha256
        )
    }
}

impl KeySpec {
    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096)
    }

    pub fn is_ecc(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256
                | KeySpec::EccNistP384
                | KeySpec::EccNistP521
                | KeySpec::EccSecgP256k1
        )
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512
        )
    }

    pub fn is_asymmetric(self) -> bool {
        self.is_rsa() || self.is_ecc()
    }

    /// Key usages AWS accepts for this spec.
    pub fn allowed_usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::SymmetricDefault => &[KeyUsage::EncryptDecrypt],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                &[KeyUsage::EncryptDecrypt, KeyUsage::SignVerify]
            }
            KeySpec::EccNistP256
            | KeySpec::EccNistP384
            | KeySpec::EccNistP521
            | KeySpec::EccSecgP256k1 => &[KeyUsage::SignVerify],
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                &[KeyUsage::GenerateVerifyMac]
            }
        }
    }

    /// The usage AWS picks when CreateKey names none.
    pub fn default_usage(self) -> KeyUsage {
        self.allowed_usages()[0]
    }

    pub fn encryption_algorithms(self, usage: KeyUsage) -> &'static [EncryptionAlgorithm] {
        match (self, usage) {
            (KeySpec::SymmetricDefault, _) => &[EncryptionAlgorithm::SymmetricDefault],
            (s, KeyUsage::EncryptDecrypt) if s.is_rsa() => &[
                EncryptionAlgorithm::RsaesOaepSha1,
                EncryptionAlgorithm::RsaesOaepSha256,
            ],
            _ => &[],
        }
    }

    pub fn signing_algorithms(self, usage: KeyUsage) -> &'static [SigningAlgorithm] {
        if usage != KeyUsage::SignVerify {
            return &[];
        }
        match self {
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[
                SigningAlgorithm::RsassaPssSha256,
                SigningAlgorithm::RsassaPssSha384,
                SigningAlgorithm::RsassaPssSha512,
                SigningAlgorithm::RsassaPkcs1V15Sha256,
                SigningAlgorithm::RsassaPkcs1V15Sha384,
                SigningAlgorithm::RsassaPkcs1V15Sha512,
            ],
            KeySpec::EccNistP256 | KeySpec::EccSecgP256k1 => &[SigningAlgorithm::EcdsaSha256],
            KeySpec::EccNistP384 => &[SigningAlgorithm::EcdsaSha384],
            KeySpec::EccNistP521 => &[SigningAlgorithm::EcdsaSha512],
            _ => &[],
        }
    }

    pub fn mac_algorithms(self) -> &'static [MacAlgorithm] {
        match self {
            KeySpec::Hmac224 => &[MacAlgorithm::HmacSha224],
            KeySpec::Hmac256 => &[MacAlgorithm::HmacSha256],
            KeySpec::Hmac384 => &[MacAlgorithm::HmacSha384],
            KeySpec::Hmac512 => &[MacAlgorithm::HmacSha512],
            _ => &[],
        }
    }
}

impl SigningAlgorithm {
    /// Length in bytes of the digest this algorithm signs (for `MessageType::Digest`).
    pub fn digest_len(self) -> usize {
        match self {
            SigningAlgorithm::RsassaPssSha256
            | SigningAlgorithm::RsassaPkcs1V15Sha256
            | SigningAlgorithm::EcdsaSha256 => 32,
            SigningAlgorithm::RsassaPssSha384
            | SigningAlgorithm::RsassaPkcs1V15Sha384
            | SigningAlgorithm::EcdsaSha384 => 48,
            SigningAlgorithm::RsassaPssSha512
            | SigningAlgorithm::RsassaPkcs1V15Sha512
            | SigningAlgorithm::EcdsaSha512 => 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for spec in KeySpec::ALL {
            assert_eq!(KeySpec::parse(spec.as_str()), Some(*spec));
            let json = serde_json::to_string(spec).unwrap();
            assert_eq!(json, format!("\"{}\"", spec.as_str()));
        }
        assert_eq!(KeySpec::parse("RSA_1024"), None);
    }

    #[test]
    fn usages_follow_aws() {
        assert_eq!(
            KeySpec::SymmetricDefault.default_usage(),
            KeyUsage::EncryptDecrypt
        );
        assert_eq!(KeySpec::EccNistP256.default_usage(), KeyUsage::SignVerify);
        assert_eq!(
            KeySpec::Hmac384.default_usage(),
            KeyUsage::GenerateVerifyMac
        );
        assert!(KeySpec::EccNistP256
            .encryption_algorithms(KeyUsage::SignVerify)
            .is_empty());
        assert_eq!(
            KeySpec::EccNistP521.signing_algorithms(KeyUsage::SignVerify),
            &[SigningAlgorithm::EcdsaSha512]
        );
    }
}
