//! Access keys the engine accepts: read from a JSON file and/or the environment, or generated on
//! the first standalone run and kept in the data directory with mode 0600.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{KmsError, Result};
use crate::service::Principal;

pub const ENV_ACCESS_KEY_ID: &str = "KUBEKMS_ACCESS_KEY_ID";
pub const ENV_SECRET_ACCESS_KEY: &str = "KUBEKMS_SECRET_ACCESS_KEY";
pub const ENV_ACCOUNT_ID: &str = "KUBEKMS_ACCOUNT_ID";

/// The account used when none is configured (the example account of the AWS documentation).
pub const DEFAULT_ACCOUNT_ID: &str = "111122223333";

/// One access key. The secret never leaves this struct except to derive a SigV4 signing key.
#[derive(Clone)]
pub struct Credential {
    pub access_key_id: String,
    secret_access_key: Zeroizing<String>,
    pub account_id: String,
    /// Who the key stands for (its ARN is written in the audit log).
    pub principal: Principal,
}

impl Credential {
    /// `principal` defaults to the account's root ARN.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: Zeroizing<String>,
        account_id: impl Into<String>,
        principal: Option<String>,
    ) -> Result<Self> {
        let access_key_id = access_key_id.into();
        let account_id = account_id.into();
        if access_key_id.is_empty() || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KmsError::validation(
                "an access key id must be non-empty and alphanumeric",
            ));
        }
        if secret_access_key.is_empty() {
            return Err(KmsError::validation(format!(
                "the secret access key of {access_key_id} is empty"
            )));
        }
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KmsError::validation(format!(
                "account id {account_id:?} of {access_key_id} is not 12 digits"
            )));
        }
        let principal = Principal::new(
            principal.unwrap_or_else(|| kubekms_proto::principal::root_arn(&account_id)),
        );
        Ok(Self {
            access_key_id,
            secret_access_key,
            account_id,
            principal,
        })
    }

    /// A fresh random access key, shaped like AWS's (`AKIA` + 16 base32 characters, a
    /// 40-character secret).
    pub fn generate(account_id: &str) -> Result<Self> {
        const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET_ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut random = Zeroizing::new([0u8; 56]);
        aws_lc_rs::rand::fill(&mut random[..])
            .map_err(|_| KmsError::internal("the system random generator failed"))?;
        let mut id = String::from("AKIA");
        id.extend(
            random[..16]
                .iter()
                .map(|b| KEY_ALPHABET[(b & 31) as usize] as char),
        );
        let mut secret = Zeroizing::new(String::with_capacity(40));
        secret.extend(
            random[16..]
                .iter()
                .map(|b| SECRET_ALPHABET[(b & 63) as usize] as char),
        );
        Self::new(id, secret, account_id, None)
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The same key standing for `principal` (a Kubernetes identity, for keys from Secrets).
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = principal;
        self
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .field("principal", &self.principal.arn())
            .finish_non_exhaustive()
    }
}

/// Every accepted access key, by id.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    by_id: HashMap<String, Credential>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    credentials: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EntryIn {
    access_key_id: String,
    secret_access_key: String,
    account_id: Option<String>,
    principal: Option<String>,
}

/// The file format only: a borrowed view written straight into a zeroized buffer.
#[derive(Serialize)]
struct FileOut<'a> {
    credentials: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryOut<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    account_id: &'a str,
    principal: &'a str,
}

impl Credentials {
    pub fn new(list: impl IntoIterator<Item = Credential>) -> Result<Self> {
        let mut out = Self::default();
        for credential in list {
            out.insert(credential)?;
        }
        Ok(out)
    }

    pub fn insert(&mut self, credential: Credential) -> Result<()> {
        if self.by_id.contains_key(&credential.access_key_id) {
            return Err(KmsError::validation(format!(
                "access key {} is configured twice",
                credential.access_key_id
            )));
        }
        self.by_id
            .insert(credential.access_key_id.clone(), credential);
        Ok(())
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Credential> {
        self.by_id.get(access_key_id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Credential> {
        self.by_id.values()
    }

    /// Parse the JSON credentials file format.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let parsed: FileIn = serde_json::from_slice(json)
            .map_err(|e| KmsError::validation(format!("credentials file: {e}")))?;
        let mut out = Self::default();
        for entry in parsed.credentials {
            let account = entry
                .account_id
                .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());
            out.insert(Credential::new(
                entry.access_key_id,
                Zeroizing::new(entry.secret_access_key),
                account,
                entry.principal,
            )?)?;
        }
        Ok(out)
    }

    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut list: Vec<&Credential> = self.by_id.values().collect();
        list.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
        let file = FileOut {
            credentials: list
                .into_iter()
                .map(|c| EntryOut {
                    access_key_id: &c.access_key_id,
                    secret_access_key: &c.secret_access_key,
                    account_id: &c.account_id,
                    principal: c.principal.arn(),
                })
                .collect(),
        };
        // Sized up front so the buffer holding secrets is not reallocated (leaving copies).
        let mut buf = Zeroizing::new(Vec::with_capacity(256 + 256 * self.by_id.len()));
        serde_json::to_writer_pretty(&mut *buf, &file)
            .map_err(|e| KmsError::dependency("writing credentials", e))?;
        buf.push(b'\n');
        Ok(buf)
    }

    pub fn load_file(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
            KmsError::dependency(format!("reading credentials file {}", path.display()), e)
        })?);
        Self::from_json(&bytes)
    }

    /// Written to a temporary file with mode 0600 and renamed over `path`, so a crash never
    /// leaves a half-written or world-readable file.
    pub fn save_file(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let json = self.to_json()?;
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| {
            KmsError::dependency(format!("writing credentials file {}", path.display()), e)
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }

    /// The credential named by `KUBEKMS_ACCESS_KEY_ID`/`KUBEKMS_SECRET_ACCESS_KEY`
    /// (and optionally `KUBEKMS_ACCOUNT_ID`), if both are set.
    pub fn from_env() -> Result<Option<Credential>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Credential>> {
        match (get(ENV_ACCESS_KEY_ID), get(ENV_SECRET_ACCESS_KEY)) {
            (Some(id), Some(secret)) => {
                let account = get(ENV_ACCOUNT_ID).unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_owned());
                Credential::new(id, Zeroizing::new(secret), account, None).map(Some)
            }
            (None, None) => Ok(None),
            _ => Err(KmsError::validation(format!(
                "set both {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY}, or neither"
            ))),
        }
    }
}

/// What [`load_standalone`] decided, so `main` can tell the user which key to use.
pub struct StandaloneCredentials {
    pub credentials: Credentials,
    /// Set when a credential was generated on this run (and saved to `saved_to`).
    pub generated: bool,
    pub saved_to: Option<std::path::PathBuf>,
}

/// Standalone mode: the `--credentials` file and the environment; if neither names a key, the
/// data directory's `credentials.json`, created with a fresh key on the first run.
pub fn load_standalone(
    explicit_file: Option<&Path>,
    data_dir: &Path,
) -> Result<StandaloneCredentials> {
    let mut credentials = match explicit_file {
        Some(path) => Credentials::load_file(path)?,
        None => Credentials::default(),
    };
    if let Some(from_env) = Credentials::from_env()? {
        credentials.insert(from_env)?;
    }
    if !credentials.is_empty() {
        return Ok(StandaloneCredentials {
            credentials,
            generated: false,
            saved_to: None,
        });
    }
    let path = data_dir.join("credentials.json");
    if path.exists() {
        let credentials = Credentials::load_file(&path)?;
        if credentials.is_empty() {
            return Err(KmsError::validation(format!(
                "{} lists no credentials",
                path.display()
            )));
        }
        return Ok(StandaloneCredentials {
            credentials,
            generated: false,
            saved_to: Some(path),
        });
    }
    let credentials = Credentials::new([Credential::generate(DEFAULT_ACCOUNT_ID)?])?;
    credentials.save_file(&path)?;
    Ok(StandaloneCredentials {
        credentials,
        generated: true,
        saved_to: Some(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_file_format() {
        let json = br#"{"credentials":[
            {"accessKeyId":"AKIDALICE","secretAccessKey":"s3cret","accountId":"111122223333",
             "principal":"arn:aws:iam::111122223333:user/alice"},
            {"accessKeyId":"AKIDBOB","secretAccessKey":"other","accountId":"444455556666"}]}"#;
        let creds = Credentials::from_json(json).unwrap();
        assert_eq!(creds.len(), 2);
        let alice = creds.get("AKIDALICE").unwrap();
        assert_eq!(alice.secret_access_key(), "s3cret");
        assert_eq!(
            alice.principal.arn(),
            "arn:aws:iam::111122223333:user/alice"
        );
        let bob = creds.get("AKIDBOB").unwrap();
        assert_eq!(bob.account_id, "444455556666");
        assert_eq!(bob.principal.arn(), "arn:aws:iam::444455556666:root");
        assert!(creds.get("AKIDNOBODY").is_none());
    }

    #[test]
    fn rejects_bad_accounts_duplicates_and_unknown_fields() {
        let bad_account =
            br#"{"credentials":[{"accessKeyId":"A","secretAccessKey":"s","accountId":"12"}]}"#;
        assert!(Credentials::from_json(bad_account).is_err());
        let dup = br#"{"credentials":[{"accessKeyId":"A","secretAccessKey":"s"},
                                      {"accessKeyId":"A","secretAccessKey":"t"}]}"#;
        assert!(Credentials::from_json(dup).is_err());
        let unknown = br#"{"credentials":[{"accessKeyId":"A","secretAccessKey":"s","x":1}]}"#;
        assert!(Credentials::from_json(unknown).is_err());
        let empty_secret = br#"{"credentials":[{"accessKeyId":"A","secretAccessKey":""}]}"#;
        assert!(Credentials::from_json(empty_secret).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::new(
            "AKIDX",
            Zeroizing::new("hunter2".into()),
            DEFAULT_ACCOUNT_ID,
            None,
        )
        .unwrap();
        let shown = format!("{c:?} {:?}", Credentials::new([c.clone()]).unwrap());
        assert!(shown.contains("AKIDX"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn env_needs_both_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Credentials::from_vars(vars(&[])).unwrap().is_none());
        assert!(Credentials::from_vars(vars(&[(ENV_ACCESS_KEY_ID, "AKID")])).is_err());
        let c = Credentials::from_vars(vars(&[
            (ENV_ACCESS_KEY_ID, "AKID"),
            (ENV_SECRET_ACCESS_KEY, "sec"),
            (ENV_ACCOUNT_ID, "999988887777"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.account_id, "999988887777");
        assert_eq!(c.secret_access_key(), "sec");
    }

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let a = Credential::generate(DEFAULT_ACCOUNT_ID).unwrap();
        let b = Credential::generate(DEFAULT_ACCOUNT_ID).unwrap();
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret_access_key(), b.secret_access_key());
        assert_eq!(a.access_key_id.len(), 20);
        assert!(a.access_key_id.starts_with("AKIA"));
        assert_eq!(a.secret_access_key().len(), 40);
    }

    #[test]
    fn standalone_generates_once_with_mode_0600_and_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = load_standalone(None, dir.path()).unwrap();
        assert!(first.generated);
        let path = dir.path().join("credentials.json");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_standalone(None, dir.path()).unwrap();
        assert!(!second.generated);
        let a = first.credentials.iter().next().unwrap();
        let b = second.credentials.get(&a.access_key_id).unwrap();
        assert_eq!(a.secret_access_key(), b.secret_access_key());
    }

    #[test]
    fn explicit_file_wins_over_generation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mine.json");
        std::fs::write(
            &file,
            br#"{"credentials":[{"accessKeyId":"AKIDMINE","secretAccessKey":"s"}]}"#,
        )
        .unwrap();
        let loaded = load_standalone(Some(&file), dir.path()).unwrap();
        assert!(!loaded.generated);
        assert!(loaded.credentials.get("AKIDMINE").is_some());
        assert!(!dir.path().join("credentials.json").exists());
    }
}
