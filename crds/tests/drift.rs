//! The committed `kubekms.io.yaml` must be what `crdgen` prints today, and what it prints must
//! be a CRD set the Kubernetes 1.20 API server accepts and `kubectl explain` can describe.

// The helpers below are test code too, though outside `#[test]` functions.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;

/// The committed file, found through the `CARGO_MANIFEST_DIR` cargo sets when it runs the
/// test (a binary reused from another checkout's build must not read that checkout's file).
fn committed_path() -> String {
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    format!("{dir}/kubekms.io.yaml")
}
const REGENERATE: &str = "cargo run -p kubekms-crds --bin crdgen > crds/kubekms.io.yaml";

fn generated() -> String {
    kubekms_crds::crds_yaml().expect("CRDs serialize to YAML")
}

#[test]
fn committed_yaml_matches_the_types() {
    let path = committed_path();
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}); run `{REGENERATE}`"));
    let generated = generated();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (c, g))| c != g)
            .map(|(i, (c, g))| {
                format!(
                    "first difference at line {}:\n  committed: {c}\n  generated: {g}",
                    i + 1
                )
            })
            .unwrap_or_else(|| {
                format!(
                    "committed has {} lines, generated {}",
                    committed.lines().count(),
                    generated.lines().count()
                )
            });
        panic!(
            "crds/kubekms.io.yaml is out of date with the types in crds/src; run `{REGENERATE}` \
             and commit the result.\n{first_difference}"
        );
    }
}

fn documents() -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&generated()).expect("the YAML stream parses back")
}

#[test]
fn yaml_round_trips_to_the_same_crds() {
    let expected: Vec<Value> = kubekms_crds::crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRD to JSON"))
        .collect();
    assert_eq!(documents(), expected);
}

#[test]
fn five_namespaced_crds_with_status_short_names_and_columns() {
    let docs = documents();
    let names: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap(),
                d["spec"]["names"]["shortNames"][0].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("keys.kubekms.io", "kmskey"),
            ("aliases.kubekms.io", "kmsalias"),
            ("keypolicies.kubekms.io", "kmspolicy"),
            ("importedmaterials.kubekms.io", "kmsimport"),
            ("datakeys.kubekms.io", "kmsdatakey"),
        ]
    );
    for doc in &docs {
        assert_eq!(doc["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(doc["spec"]["group"], "kubekms.io");
        assert_eq!(doc["spec"]["scope"], "Namespaced");
        let versions = doc["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1);
        let v = &versions[0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"]["status"], serde_json::json!({}));
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns.last(), Some(&"Age"), "{columns:?}");
    }
    let key_columns: Vec<&Value> = docs[0]["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(
        key_columns,
        ["KeySpec", "State", "Version", "Next Rotation", "Age"]
    );
}

/// Walks a schema node, collecting what Kubernetes 1.20 would refuse or `kubectl explain` would
/// show badly.
fn check_schema(path: &str, node: &Value, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    for forbidden in [
        "x-kubernetes-validations", // CEL: not in 1.20
        "$ref",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "const",
        "nullable", // published without a type by 1.20: `kubectl explain` shows `<>`
    ] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: has {forbidden}"));
        }
    }
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !preserves {
        problems.push(format!("{path}: no type (not a structural schema)"));
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array) {
        if values.iter().any(Value::is_null) {
            problems.push(format!("{path}: null among enum values"));
        }
    }
    if let Some(default) = obj.get("default") {
        if default.as_str() == Some("") {
            // Kubernetes 1.20 reads `default: ""` back as null and refuses the CRD.
            problems.push(format!("{path}: empty-string default"));
        }
    }
    if let Some(properties) = obj.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let child = format!("{path}.{name}");
            if property
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{child}: no description for kubectl explain"));
            }
            check_schema(&child, property, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_schema(&format!("{path}[]"), items, problems);
    }
    if let Some(additional) = obj.get("additionalProperties") {
        if additional.is_object() {
            check_schema(&format!("{path}{{}}"), additional, problems);
        }
    }
}

#[test]
fn schemas_suit_kubernetes_1_20_and_kubectl_explain() {
    let mut problems = Vec::new();
    for doc in documents() {
        let kind = doc["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let version = &doc["spec"]["versions"][0];
        assert!(version.get("selectableFields").is_none(), "{kind}: 1.30+");
        let root = &version["schema"]["openAPIV3Schema"];
        for part in ["spec", "status"] {
            let schema = &root["properties"][part];
            assert!(schema.is_object(), "{kind} has no {part}");
            if schema.get("description").is_none() {
                problems.push(format!("{kind}.{part}: no description"));
            }
            check_schema(&format!("{kind}.{part}"), schema, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn spec_defaults_are_in_the_schema() {
    let docs = documents();
    let key_spec = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["properties"];
    assert_eq!(key_spec["keySpec"]["default"], "SYMMETRIC_DEFAULT");
    assert_eq!(key_spec["origin"]["default"], "Generated");
    assert_eq!(key_spec["enabled"]["default"], true);
    assert_eq!(key_spec["deletionWindowDays"]["default"], 30);
    assert_eq!(key_spec["deletionWindowDays"]["minimum"], 7.0);
    assert_eq!(key_spec["deletionWindowDays"]["maximum"], 30.0);
    let rotation = &key_spec["rotation"]["properties"];
    assert_eq!(rotation["periodDays"]["default"], 365);
    assert_eq!(rotation["periodDays"]["minimum"], 90.0);
    assert_eq!(rotation["periodDays"]["maximum"], 2560.0);

    let import_spec = &docs[3]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["properties"];
    assert_eq!(
        import_spec["wrappingAlgorithm"]["default"],
        "RSA_AES_KEY_WRAP_SHA_256"
    );
    assert_eq!(import_spec["wrappingKeySpec"]["default"], "RSA_4096");
    let secret_ref = &import_spec["materialSecretRef"]["properties"];
    assert_eq!(secret_ref["key"]["default"], "material");
    assert_eq!(secret_ref["tokenKey"]["default"], "importToken");
}
