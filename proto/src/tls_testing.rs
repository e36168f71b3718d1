//! Test certificates made with the `openssl` command-line tool, for the tests of the engine,
//! the webhook and the end-to-end suite (feature `test-certs`; nothing in a shipped binary).
//! A failure panics: a test cannot go on without its certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    match Command::new("openssl").current_dir(dir).args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("openssl {args:?}: {out:?}"),
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

/// A self-signed certificate and its P-256 key, `dir/<name>.crt` and `dir/<name>.key`: a CA
/// when `names` is `None`; else a certificate for these subjectAltName entries (`DNS:localhost`,
/// `IP:127.0.0.1`) that is not a CA, which a client can take as its own trust anchor.
pub fn self_signed(dir: &Path, name: &str, names: Option<&[&str]>) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subject,
        "-keyout",
        &key,
        "-out",
        &cert,
    ];
    let alt = names.map(|n| format!("subjectAltName={}", n.join(",")));
    if let Some(alt) = &alt {
        args.extend([
            "-addext",
            alt,
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
    }
    openssl(dir, &args);
    (dir.join(cert), dir.join(key))
}

/// The DER of the first certificate in `pem`.
pub fn der_of(pem: &[u8]) -> Vec<u8> {
    match rustls_pemfile::certs(&mut &pem[..]).next() {
        Some(Ok(cert)) => cert.as_ref().to_vec(),
        _ => panic!("no PEM certificate in {} bytes", pem.len()),
    }
}
