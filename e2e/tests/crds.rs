//! What the CRDs alone give a user, with no operator running: `kubectl explain` documents every
//! field, the API server fills in defaults, and it rejects manifests the schema forbids.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, Result};
use kubekms_e2e::{wait_for, TestEnv};
use serde_json::Value;

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `(plural, spec property name, description)` for every top-level spec field of every CRD, as
/// the Rust types declare them.
fn spec_fields() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for crd in kubekms_crds::crds() {
        let plural = crd.spec.names.plural.clone();
        let crd = serde_json::to_value(&crd).unwrap();
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        let props = props
            .as_object()
            .unwrap_or_else(|| panic!("{plural}: no spec properties"));
        for (name, schema) in props {
            let description = schema["description"]
                .as_str()
                .unwrap_or_else(|| panic!("{plural}.spec.{name} has no description"));
            out.push((plural.clone(), name.clone(), description.to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn kubectl_explain_shows_every_spec_field_with_its_description() -> Result<()> {
    let env = TestEnv::new("explain").await?;
    let fields = spec_fields();
    assert!(fields.len() >= 10, "too few spec fields: {fields:?}");
    let mut plurals: Vec<&str> = fields.iter().map(|(p, _, _)| p.as_str()).collect();
    plurals.dedup();
    assert_eq!(plurals.len(), 5, "one entry per CRD: {plurals:?}");

    for plural in plurals {
        // The API server publishes a new CRD's OpenAPI a little after it is Established.
        let explained = wait_for(
            &format!("kubectl explain {plural}.spec"),
            Duration::from_secs(30),
            || async {
                env.cluster
                    .kubectl(
                        &[
                            "explain",
                            &format!("{plural}.spec"),
                            "--output=plaintext-openapiv2",
                        ],
                        None,
                    )
                    .await
                    .map(Some)
            },
        )
        .await?;
        let explained = squash(&explained);
        for (_, name, description) in fields.iter().filter(|(p, _, _)| p == plural) {
            assert!(
                explained.contains(&format!("{name} <")),
                "kubectl explain {plural}.spec does not list {name}:\n{explained}"
            );
            // kubectl re-wraps descriptions; compare with whitespace squashed.
            let description = squash(description);
            assert!(
                explained.contains(&description),
                "kubectl explain {plural}.spec lacks the description of {name} \
                 ({description:?}):\n{explained}"
            );
        }
    }

    let nested = env
        .cluster
        .kubectl(
            &[
                "explain",
                "key.spec.rotation.periodDays",
                "--output=plaintext-openapiv2",
            ],
            None,
        )
        .await?;
    assert!(
        squash(&nested).contains("Days between automatic rotations (90 to 2560)"),
        "{nested}"
    );
    env.pass();
    Ok(())
}

#[tokio::test]
async fn the_api_server_fills_in_defaults() -> Result<()> {
    let env = TestEnv::new("defaults").await?;
    env.apply(
        "apiVersion: kubekms.io/v1alpha1\nkind: Key\nmetadata:\n  name: bare\nspec:\n  \
         rotation:\n    enabled: true\n",
    )
    .await?;
    let key: Value =
        serde_json::from_str(&env.kubectl(&["get", "key", "bare", "-o", "json"]).await?)
            .context("kubectl get -o json")?;
    let spec = &key["spec"];
    assert_eq!(spec["keySpec"], "SYMMETRIC_DEFAULT", "{spec}");
    assert_eq!(spec["origin"], "Generated", "{spec}");
    assert_eq!(spec["enabled"], true, "{spec}");
    assert_eq!(spec["deletionWindowDays"], 30, "{spec}");
    assert_eq!(spec["rotation"]["periodDays"], 365, "{spec}");
    assert_eq!(spec["rotation"]["enabled"], true, "{spec}");
    env.pass();
    Ok(())
}

#[tokio::test]
async fn the_schema_rejects_invalid_manifests() -> Result<()> {
    let env = TestEnv::new("invalid").await?;
    let key = |name: &str, spec: &str| {
        format!(
            "apiVersion: kubekms.io/v1alpha1\nkind: Key\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    };
    let cases = [
        (
            "key",
            "short-window",
            key("short-window", "  deletionWindowDays: 3\n"),
            "spec.deletionWindowDays",
        ),
        (
            "key",
            "long-window",
            key("long-window", "  deletionWindowDays: 31\n"),
            "spec.deletionWindowDays",
        ),
        (
            "key",
            "fast-rotation",
            key(
                "fast-rotation",
                "  rotation:\n    enabled: true\n    periodDays: 30\n",
            ),
            "spec.rotation.periodDays",
        ),
        (
            "key",
            "bad-spec",
            key("bad-spec", "  keySpec: AES_128\n"),
            "spec.keySpec",
        ),
        (
            "key",
            "bad-origin",
            key("bad-origin", "  origin: AWS_CLOUDHSM\n"),
            "spec.origin",
        ),
        (
            "key",
            "bad-usage",
            key("bad-usage", "  keyUsage: WRAP_UNWRAP\n"),
            "spec.keyUsage",
        ),
        (
            "key",
            "bad-enabled",
            key("bad-enabled", "  enabled: \"sometimes\"\n"),
            "spec.enabled",
        ),
        (
            "alias",
            "no-target",
            "apiVersion: kubekms.io/v1alpha1\nkind: Alias\nmetadata:\n  name: no-target\nspec: {}\n"
                .to_owned(),
            "spec.keyRef",
        ),
    ];
    for (kind, name, manifest, field) in &cases {
        // --validate=false: the API server's schema must be what refuses, not kubectl.
        let result = env
            .cluster
            .kubectl(
                &["-n", &env.namespace, "apply", "--validate=false", "-f", "-"],
                Some(manifest),
            )
            .await;
        let error = match result {
            Ok(out) => panic!("{kind}/{name} was accepted ({out}):\n{manifest}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            error.contains(field) && error.contains("is invalid"),
            "{kind}/{name}: expected a schema error about {field}, got: {error}"
        );
        let listed = env.kubectl(&["get", kind, "-o", "name"]).await?;
        assert!(
            !listed.contains(&format!("/{name}\n")),
            "{kind}/{name} exists after being refused: {listed}"
        );
    }
    // The same manifests with the fields fixed go through, so the refusals were about those
    // fields.
    env.apply(&key("short-window", "  deletionWindowDays: 7\n"))
        .await?;
    env.apply(&key(
        "fast-rotation",
        "  rotation:\n    enabled: true\n    periodDays: 90\n",
    ))
    .await?;
    env.pass();
    Ok(())
}

#[tokio::test]
async fn every_example_passes_the_schema_as_written() -> Result<()> {
    let env = TestEnv::new("examples").await?;
    let examples = kubekms_e2e::repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .with_context(|| format!("reading {}", examples.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    assert!(files.len() >= 4, "expected the examples in {examples:?}");
    // Applied for real (no operator runs here, so nothing acts on them), without kubectl's own
    // validation: the API server's schema is the judge, and it must take every example.
    let dir = examples.to_string_lossy();
    let out = env
        .kubectl(&["apply", "--validate=false", "-f", &dir])
        .await?;
    assert!(out.lines().count() >= files.len(), "{out}");
    let listed = env.kubectl(&["get", "kubekms", "-o", "name"]).await?;
    // Besides kubekms.io objects the examples hold a workload (the injected Deployment).
    let ours = out.lines().filter(|l| l.contains(".kubekms.io/")).count();
    assert_eq!(listed.lines().count(), ours, "{out}\n{listed}");
    env.pass();
    Ok(())
}
