//! The annotation API of injection, read from a Pod (or a pod template) into a typed
//! [`Injection`]. Every problem is collected, so one refusal tells the user all there is to fix.
//!
//! The opt-in is a **label**, so the API server calls the webhook for opted-in pods only (the
//! webhook configuration's objectSelector): no other pod waits on it or fails with it.
//!
//! | Label / annotation | Value | Default |
//! |---|---|---|
//! | label `kubekms.io/inject` | `"true"` opts the pod in; anything else but `"false"` is refused | not injected |
//! | `kubekms.io/inject-mode` | `init` (decrypt, write, exit) or `sidecar` (also serve on localhost) | `init` |
//! | `kubekms.io/data-key.<name>` | `<Key>` or `alias/<alias>`, then optional `; spec=AES_256\|AES_128\|<bytes>`, `; file=<file>`, `; generation=<n>` | spec `AES_256`, file `<name>`, generation 1 |
//!
//! `<Key>` is the name of a Key object in the pod's namespace; `alias/<alias>` an engine alias
//! (an Alias object `x` in namespace `ns` is `alias/ns/x`). A bump of `generation` adds a new
//! data key; the keyring keeps the earlier ones, so data encrypted before stays decryptable.

use std::collections::BTreeMap;

/// Opts a pod in (a label).
pub const INJECT: &str = "kubekms.io/inject";
/// `init` or `sidecar`.
pub const INJECT_MODE: &str = "kubekms.io/inject-mode";
/// Prefix of one annotation per data key; the rest of the annotation's name is the key's name.
pub const DATA_KEY_PREFIX: &str = "kubekms.io/data-key.";

/// The longest data key, in bytes (GenerateDataKey's `NumberOfBytes` limit).
pub const MAX_DATA_KEY_BYTES: u32 = 1024;
/// The most data keys one pod may name.
pub const MAX_DATA_KEYS: usize = 16;
/// The highest generation of a data key (one pod's keyring holds them all).
pub const MAX_GENERATION: u32 = 64;

/// What a pod asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub mode: Mode,
    /// By name, so patches come out in a stable order.
    pub data_keys: BTreeMap<String, DataKeyRequest>,
}

/// How the agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// An init container: decrypts, writes the keyring, exits.
    Init,
    /// The init container, and a container that stays to serve decryption on localhost.
    Sidecar,
}

/// One `kubekms.io/data-key.<name>` annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRequest {
    pub key: KeyRef,
    pub size: DataKeySize,
    /// The file the current key is written to, in the data-key volume.
    pub file: String,
    pub generation: u32,
}

/// The KMS key a data key is made under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// A Key object in the pod's namespace.
    Key(String),
    /// An engine alias (`alias/...`).
    Alias(String),
}

/// How large a data key is (GenerateDataKeyWithoutPlaintext's `KeySpec` or `NumberOfBytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKeySize {
    Aes256,
    Aes128,
    Bytes(u32),
}

impl DataKeySize {
    pub fn bytes(self) -> u32 {
        match self {
            DataKeySize::Aes256 => 32,
            DataKeySize::Aes128 => 16,
            DataKeySize::Bytes(n) => n,
        }
    }
}

/// Read the injection a pod asked for from its labels and annotations: `Ok(None)` when it did
/// not opt in, `Err` with every problem found (each naming its annotation and what to write
/// instead).
pub fn parse(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<Injection>, Vec<String>> {
    let mut problems = Vec::new();
    if annotations.contains_key(INJECT) {
        problems.push(format!(
            "{INJECT} is a label, not an annotation: move it to metadata.labels (the API server \
             calls the injector only for pods labelled {INJECT}: \"true\")"
        ));
    }
    match labels.get(INJECT).map(String::as_str) {
        Some("true") => {}
        None | Some("false") => {
            // Not opted in: other kubekms.io annotations would silently do nothing.
            if let Some(stray) = annotations
                .keys()
                .find(|k| *k == INJECT_MODE || k.starts_with(DATA_KEY_PREFIX))
            {
                problems.push(format!(
                    "{stray} is set but the label {INJECT} is not \"true\": add the label \
                     {INJECT}: \"true\" to inject, or remove {stray}"
                ));
            }
            return if problems.is_empty() {
                Ok(None)
            } else {
                Err(problems)
            };
        }
        Some(other) => {
            return Err(vec![format!(
                "the label {INJECT} must be \"true\" or \"false\", not {other:?}"
            )])
        }
    }
    let mode = match annotations.get(INJECT_MODE).map(String::as_str) {
        None | Some("init") => Mode::Init,
        Some("sidecar") => Mode::Sidecar,
        Some(other) => {
            problems.push(format!(
                "{INJECT_MODE} must be \"init\" or \"sidecar\", not {other:?}"
            ));
            Mode::Init
        }
    };
    let mut data_keys = BTreeMap::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for (annotation, value) in annotations {
        let Some(name) = annotation.strip_prefix(DATA_KEY_PREFIX) else {
            continue;
        };
        match parse_data_key(name, value) {
            Ok(request) => {
                if let Some(other) = files.insert(request.file.clone(), name.to_owned()) {
                    problems.push(format!(
                        "data keys {other:?} and {name:?} both write file {:?}: give one of \
                         them another file=",
                        request.file
                    ));
                }
                data_keys.insert(name.to_owned(), request);
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if data_keys.len() > MAX_DATA_KEYS {
        problems.push(format!(
            "{} data keys are named; at most {MAX_DATA_KEYS} are allowed per pod",
            data_keys.len()
        ));
    }
    if problems.is_empty() {
        Ok(Some(Injection { mode, data_keys }))
    } else {
        Err(problems)
    }
}

fn parse_data_key(name: &str, value: &str) -> Result<DataKeyRequest, Vec<String>> {
    let annotation = format!("{DATA_KEY_PREFIX}{name}");
    let mut problems = Vec::new();
    // A DNS label, as a namespace name is.
    if !kubekms_crds::common::is_namespace_name(name) {
        problems.push(format!(
            "{annotation}: a data key's name must be a DNS label (lower-case letters, digits \
             and '-', at most 63, starting and ending with a letter or digit)"
        ));
    }
    let mut parts = value.split(';').map(str::trim);
    let reference = parts.next().unwrap_or_default();
    let key = if let Some(alias) = reference.strip_prefix("alias/") {
        if alias.is_empty() || alias.starts_with("aws/") || !alias.chars().all(alias_char) {
            problems.push(format!(
                "{annotation}: {reference:?} is not a usable alias (letters, digits, '/', '_' \
                 and '-' after alias/, not alias/aws/...)"
            ));
        }
        KeyRef::Alias(reference.to_owned())
    } else {
        if !kubekms_crds::common::is_object_name(reference) {
            problems.push(format!(
                "{annotation}: {reference:?} is neither the name of a Key in this namespace \
                 nor alias/<name>: write for example \"orders\" or \"alias/shop/orders\""
            ));
        }
        KeyRef::Key(reference.to_owned())
    };
    let mut size = DataKeySize::Aes256;
    let mut file = name.to_owned();
    let mut generation = 1;
    for option in parts.filter(|p| !p.is_empty()) {
        let Some((option_name, option_value)) = option.split_once('=') else {
            problems.push(format!(
                "{annotation}: {option:?} is not an option: write spec=..., file=... or \
                 generation=..."
            ));
            continue;
        };
        match (option_name.trim(), option_value.trim()) {
            ("spec", "AES_256") => size = DataKeySize::Aes256,
            ("spec", "AES_128") => size = DataKeySize::Aes128,
            ("spec", bytes) => match bytes.parse::<u32>() {
                Ok(n) if (1..=MAX_DATA_KEY_BYTES).contains(&n) => size = DataKeySize::Bytes(n),
                _ => problems.push(format!(
                    "{annotation}: spec={bytes} must be AES_256, AES_128 or a number of bytes \
                     from 1 to {MAX_DATA_KEY_BYTES}"
                )),
            },
            ("file", f) => {
                if is_file_name(f) {
                    f.clone_into(&mut file);
                } else {
                    problems.push(format!(
                        "{annotation}: file={f:?} must be a plain file name (letters, digits, \
                         '.', '_' and '-', not starting with '.', at most 128)"
                    ));
                }
            }
            ("generation", g) => match g.parse::<u32>() {
                Ok(n) if (1..=MAX_GENERATION).contains(&n) => generation = n,
                _ => problems.push(format!(
                    "{annotation}: generation={g} must be a number from 1 to {MAX_GENERATION}"
                )),
            },
            (other, _) => problems.push(format!(
                "{annotation}: unknown option {other:?} (the options are spec, file and \
                 generation)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(DataKeyRequest {
            key,
            size,
            file,
            generation,
        })
    } else {
        Err(problems)
    }
}

fn alias_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-')
}

fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// `pairs` with the opt-in as the label it is and the rest as annotations.
    fn parse(pairs: &BTreeMap<String, String>) -> Result<Option<Injection>, Vec<String>> {
        let (labels, annotations): (BTreeMap<_, _>, BTreeMap<_, _>) =
            pairs.clone().into_iter().partition(|(k, _)| k == INJECT);
        super::parse(&labels, &annotations)
    }

    #[test]
    fn a_pod_that_does_not_opt_in_is_left_alone() {
        assert_eq!(parse(&annotations(&[])), Ok(None));
        assert_eq!(parse(&annotations(&[(INJECT, "false")])), Ok(None));
        assert_eq!(
            parse(&annotations(&[("other.io/x", "y")])),
            Ok(None),
            "other annotations"
        );
    }

    #[test]
    fn defaults_and_every_option() {
        let parsed = parse(&annotations(&[
            (INJECT, "true"),
            ("kubekms.io/data-key.db", "orders"),
            (
                "kubekms.io/data-key.session",
                "alias/shop/sessions; spec=AES_128; file=session.key; generation=3",
            ),
            ("kubekms.io/data-key.salt", "orders;spec=48"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(parsed.mode, Mode::Init);
        assert_eq!(
            parsed.data_keys["db"],
            DataKeyRequest {
                key: KeyRef::Key("orders".into()),
                size: DataKeySize::Aes256,
                file: "db".into(),
                generation: 1,
            }
        );
        assert_eq!(
            parsed.data_keys["session"],
            DataKeyRequest {
                key: KeyRef::Alias("alias/shop/sessions".into()),
                size: DataKeySize::Aes128,
                file: "session.key".into(),
                generation: 3,
            }
        );
        assert_eq!(parsed.data_keys["salt"].size.bytes(), 48);
        let identity_only = parse(&annotations(&[(INJECT, "true"), (INJECT_MODE, "init")]))
            .unwrap()
            .unwrap();
        assert!(identity_only.data_keys.is_empty());
        let sidecar = parse(&annotations(&[(INJECT, "true"), (INJECT_MODE, "sidecar")]));
        assert_eq!(sidecar.unwrap().unwrap().mode, Mode::Sidecar);
    }

    #[test]
    fn every_problem_is_reported_with_what_to_write() {
        let problems = parse(&annotations(&[
            (INJECT, "true"),
            (INJECT_MODE, "daemon"),
            ("kubekms.io/data-key.Bad_Name", "orders"),
            ("kubekms.io/data-key.a", "alias/aws/ebs"),
            (
                "kubekms.io/data-key.b",
                "orders; spec=AES_512; file=../etc/passwd; color=red",
            ),
            ("kubekms.io/data-key.c", "orders; generation=0; spec=2048"),
            ("kubekms.io/data-key.d", "orders; file=b"),
            ("kubekms.io/data-key.e", "orders; file=b"),
        ]))
        .unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "inject-mode must be \"init\" or \"sidecar\", not \"daemon\"",
            "data-key.Bad_Name: a data key's name must be a DNS label",
            "\"alias/aws/ebs\" is not a usable alias",
            "spec=AES_512 must be AES_256, AES_128 or a number of bytes from 1 to 1024",
            "file=\"../etc/passwd\" must be a plain file name",
            "unknown option \"color\"",
            "generation=0 must be a number from 1 to 64",
            "spec=2048 must be",
            "data keys \"d\" and \"e\" both write file \"b\"",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn kubekms_annotations_without_opting_in_or_a_wrong_switch_are_refused() {
        let stray = parse(&annotations(&[("kubekms.io/data-key.db", "orders")])).unwrap_err();
        assert!(
            stray[0].contains("add the label kubekms.io/inject: \"true\""),
            "{stray:?}"
        );
        let as_annotation =
            super::parse(&BTreeMap::new(), &annotations(&[(INJECT, "true")])).unwrap_err();
        assert!(
            as_annotation[0].contains("is a label, not an annotation"),
            "{as_annotation:?}"
        );
        let wrong = parse(&annotations(&[(INJECT, "yes")])).unwrap_err();
        assert!(
            wrong[0].contains("must be \"true\" or \"false\""),
            "{wrong:?}"
        );
    }
}
