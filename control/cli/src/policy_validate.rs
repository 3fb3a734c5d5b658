//! `sluice policy validate <files>`: offline parsing and validation of
//! policy manifests with the code the agent runs (`sluice_policy::parse`),
//! so a policy that passes here is one the agent applies. Files may hold
//! several YAML or JSON documents and `v1 List`s; documents of other kinds
//! are reported as skipped, not as errors.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde_json::Value;
use sluice_policy::parse::{documents, is_policy, parse_object};

/// Validates every policy document of `paths`. The report has one line per
/// valid policy (`ok  CiliumNetworkPolicy default/web (2 rules)`), every
/// error (`file: document N (Kind ns/name): field: problem`), one line per
/// skipped document, and a summary; `ok` is false when any file could not
/// be read or any policy is invalid or defined twice.
pub fn validate_files(paths: &[PathBuf]) -> (String, bool) {
    let mut report = String::new();
    let mut ok = true;
    let (mut valid, mut invalid, mut skipped) = (0usize, 0usize, 0usize);
    // Policy -> where it was first defined: a second definition would
    // replace the first in the agent.
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for path in paths {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                let _ = writeln!(report, "{file}: cannot read: {e}");
                ok = false;
                continue;
            }
        };
        for document in documents(&text) {
            let origin = format!("{file}: {}", document.at);
            let value = match document.value {
                Ok(value) => value,
                Err(e) => {
                    let _ = writeln!(report, "{origin}: not YAML: {e}");
                    ok = false;
                    invalid += 1;
                    continue;
                }
            };
            if !is_policy(&value) {
                let _ = writeln!(report, "skip {origin} ({}): not a policy", label(&value));
                skipped += 1;
                continue;
            }
            match parse_object(&value, &origin) {
                Ok(policy) => {
                    let name = policy.label();
                    if let Some(first) = defined.get(&name) {
                        let _ = writeln!(report, "{origin} ({name}): also defined in {first}");
                        ok = false;
                        invalid += 1;
                        continue;
                    }
                    defined.insert(name.clone(), origin);
                    let rules = policy.rules.len();
                    let plural = if rules == 1 { "" } else { "s" };
                    let _ = writeln!(report, "ok  {name} ({rules} rule{plural})");
                    valid += 1;
                }
                Err(errors) => {
                    for error in errors {
                        let _ = writeln!(report, "{error}");
                    }
                    ok = false;
                    invalid += 1;
                }
            }
        }
    }
    let _ = writeln!(
        report,
        "{valid} valid, {invalid} invalid, {skipped} skipped"
    );
    (report, ok)
}

/// `Kind namespace/name` of a document that is not a policy, as far as it
/// says.
fn label(value: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let kind = text(value.get("kind")).unwrap_or_else(|| "no kind".into());
    let metadata = value.get("metadata");
    let name = text(metadata.and_then(|m| m.get("name"))).unwrap_or_else(|| "?".into());
    match text(metadata.and_then(|m| m.get("namespace"))) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "sluice-policy-validate-{test}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
specs:
- endpointSelector: {matchLabels: {app: web}}
  ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
- endpointSelector: {matchLabels: {app: web}}
  egress: [{toEntities: [world]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;

    #[test]
    fn valid_policies_are_listed_and_other_kinds_skipped() {
        let scratch = Scratch::new("valid");
        let good = scratch.file("good.yaml", GOOD);
        let list = scratch.file(
            "list.json",
            r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                 "metadata": {"name": "all"},
                 "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]}},
                {"kind": "ConfigMap", "metadata": {"name": "c"}}]}"#,
        );
        let (report, ok) = validate_files(&[good.clone(), list.clone()]);
        let good = good.display();
        let list = list.display();
        assert_eq!(
            report,
            format!(
                "skip {good}: document 1 (Namespace shop): not a policy\n\
                 ok  CiliumNetworkPolicy shop/web (2 rules)\n\
                 ok  NetworkPolicy shop/deny-all (1 rule)\n\
                 ok  CiliumClusterwideNetworkPolicy all (1 rule)\n\
                 skip {list}: document 1 item 1 (ConfigMap c): not a policy\n\
                 3 valid, 0 invalid, 2 skipped\n"
            )
        );
        assert!(ok);
    }

    #[test]
    fn errors_fail_the_run_and_name_file_document_object_and_field() {
        let scratch = Scratch::new("invalid");
        let bad = scratch.file(
            "bad.yaml",
            r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {}
  ingress: [{toPorts: [{ports: [{port: "99999", protocol: tcp}]}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}}
---
kind: [
"#,
        );
        let again = scratch.file("again.yaml", GOOD);
        let missing = scratch.0.join("missing.yaml");
        let (report, ok) = validate_files(&[again.clone(), bad.clone(), missing.clone()]);
        assert!(!ok);
        let lines: Vec<&str> = report.lines().collect();
        let (again, bad) = (again.display(), bad.display());
        assert_eq!(lines[..5], [
            format!("skip {again}: document 1 (Namespace shop): not a policy"),
            "ok  CiliumNetworkPolicy shop/web (2 rules)".to_string(),
            "ok  NetworkPolicy shop/deny-all (1 rule)".to_string(),
            format!("{bad}: document 1 (CiliumNetworkPolicy shop/web): spec.ingress[0].toPorts[0].ports[0].port: \"99999\" is not a port (0-65535) or a port name"),
            format!("{bad}: document 1 (CiliumNetworkPolicy shop/web): spec.ingress[0].toPorts[0].ports[0].protocol: \"tcp\" is not one of TCP, UDP, SCTP, ANY"),
        ]);
        assert_eq!(
            lines[5],
            format!("{bad}: document 2 (NetworkPolicy shop/deny-all): also defined in {again}: document 3")
        );
        assert!(
            lines[6].starts_with(&format!("{bad}: document 3: not YAML: ")),
            "{}",
            lines[6]
        );
        assert!(
            lines[7].starts_with(&format!("{}: cannot read: ", missing.display())),
            "{}",
            lines[7]
        );
        assert_eq!(lines[8], "2 valid, 3 invalid, 1 skipped");
        assert_eq!(lines.len(), 9);
    }
}
