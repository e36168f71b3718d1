//! Pieces the four resources share: references, condition types, string enums and the
//! Kubernetes name checks the validation helpers use.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator sets in `status.conditions`.
pub mod condition {
    /// The object is in the state its spec asks for.
    pub const READY: &str = "Ready";
}

/// Declares a string enum whose serde form, schema `enum` values and `as_str` are the given
/// wire names, so the operator can pass them to the engine unchanged.
macro_rules! crd_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
            ::schemars::JsonSchema,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::common::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err($crate::common::UnknownValue {
                        type_name: stringify!($name),
                        value: s.to_owned(),
                    }),
                }
            }
        }
    };
}
pub(crate) use crd_enum;

/// A string that names none of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum's Rust name.
    pub type_name: &'static str,
    /// The string that did not match.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a known {}", self.value, self.type_name)
    }
}

impl std::error::Error for UnknownValue {}

/// A reference to a Key in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyReference {
    /// Name of a Key (kubekms.io/v1alpha1) in this object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl KeyReference {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Longest Kubernetes object name (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest namespace name (a DNS label).
pub const MAX_NAMESPACE_LEN: usize = 63;

fn is_rfc1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            is_lower_alnum(*first)
                && is_lower_alnum(*last)
                && bytes.iter().all(|&b| is_lower_alnum(b) || b == b'-')
        }
        _ => false,
    }
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `s` is a valid namespace name (RFC 1123 label, at most 63 characters).
pub fn is_namespace_name(s: &str) -> bool {
    s.len() <= MAX_NAMESPACE_LEN && is_rfc1123_label(s)
}

/// Whether `s` is a valid object name (RFC 1123 subdomain, at most 253 characters), as
/// Kubernetes requires for Keys, ServiceAccounts and Secrets.
pub fn is_object_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && s.split('.').all(is_rfc1123_label)
}

/// Whether `s` can be a key in a Secret's `data` (`[-._a-zA-Z0-9]+`, at most 253 characters).
pub fn is_secret_data_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why `name` is not a valid object name, or `None` if it is one; `path` leads the message.
pub(crate) fn object_name_error(path: &str, name: &str) -> Option<String> {
    (!is_object_name(name)).then(|| {
        format!(
            "{path}: {name:?} is not a valid object name (lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most {MAX_NAME_LEN} characters)"
        )
    })
}

/// Pushes an error for `path` unless `name` is a valid object name.
pub(crate) fn check_object_name(errors: &mut Vec<String>, path: &str, name: &str) {
    errors.extend(object_name_error(path, name));
}

/// The result of a `validate`: `Ok` when no check pushed an error.
pub(crate) fn validation_result(errors: Vec<String>) -> Result<(), Vec<String>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for good in ["a", "orders", "orders-key", "team.orders", "a1.b2-c3", "0"] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in [
            "", "Orders", "-a", "a-", "a..b", ".a", "a.", "a_b", "a b", "ä",
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
        assert!(is_object_name(&"a".repeat(253)));
        assert!(!is_object_name(&"a".repeat(254)));
    }

    #[test]
    fn namespace_names() {
        assert!(is_namespace_name("team-a"));
        assert!(!is_namespace_name("team.a"));
        assert!(is_namespace_name(&"a".repeat(63)));
        assert!(!is_namespace_name(&"a".repeat(64)));
    }

    #[test]
    fn secret_data_keys() {
        for good in ["material", "importToken", "a.b", "x_y-z", ".hidden"] {
            assert!(is_secret_data_key(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(!is_secret_data_key(bad), "{bad}");
        }
    }
}
