//! A served certificate is replaced when its files change (a renewed Secret), a broken
//! pair caught mid-update leaves the served one in place, and a mismatched pair is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use kubekms_proto::tls::ReloadingCert;

/// A self-signed certificate and key for `name`, made with openssl, as PEM files.
fn make_pair(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(status.status.success(), "{status:?}");
    (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
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
