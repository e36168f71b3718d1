//! A served certificate is replaced when its files change (a renewed Secret), a broken
//! pair caught mid-update leaves the served one in place, and a mismatched pair is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kubekms_proto::tls::testing::{der_of, self_signed};
use kubekms_proto::tls::ReloadingCert;

/// A self-signed certificate and key named `name`, as PEM bytes.
fn make_pair(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = self_signed(dir, name, Some(&["DNS:localhost"]));
    (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_pair(dir.path(), "a");
    let (cert_b, key_b) = make_pair(dir.path(), "b");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let served = ReloadingCert::load(&cert, &key).unwrap();
    assert_eq!(served.leaf(), der_of(&cert_a));
    assert!(!served.reload_if_changed().unwrap(), "nothing changed");

    // Half-way through an update: b's certificate with a's key. Refused; a stays.
    std::fs::write(&cert, &cert_b).unwrap();
    assert!(served.reload_if_changed().is_err());
    assert_eq!(served.leaf(), der_of(&cert_a));

    std::fs::write(&key, &key_b).unwrap();
    assert!(served.reload_if_changed().unwrap());
    assert_eq!(served.leaf(), der_of(&cert_b));

    std::fs::write(&cert, b"garbage").unwrap();
    assert!(served.reload_if_changed().is_err());
    assert_eq!(
        served.leaf(),
        der_of(&cert_b),
        "kept while the files are broken"
    );
    assert!(served.server_config().is_ok());
}
