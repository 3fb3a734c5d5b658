//! The plugin configuration a runtime writes on stdin: one plugin's entry of a
//! conflist with `name` and `cniVersion` filled in, `prevResult` and
//! `runtimeConfig` added, and for GC `cni.dev/valid-attachments`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_api::agent::Attachment;

use crate::error::CniError;
use crate::version::SpecVersion;

pub const DEFAULT_AGENT_SOCKET: &str = "/run/sluice/agent.sock";

#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub version: SpecVersion,
    pub name: String,
    /// `type` as given ("sluice-cni" in a conflist; not enforced, the binary
    /// may be installed under another name).
    pub plugin_type: String,
    /// `agentSocket`: the agent's unix socket.
    pub agent_socket: PathBuf,
    /// `logFile`: where to append log lines besides stderr.
    pub log_file: Option<PathBuf>,
    /// `prevResult`, already in `version`'s shape (the runtime converts it).
    pub prev_result: Option<Map<String, Value>>,
    /// `dns`: copied into ADD's result.
    pub dns: Option<Map<String, Value>>,
    /// GC's `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The `cniVersion` string of whatever arrived, for error replies; `None` when
/// stdin is not a JSON object with a string `cniVersion`.
pub fn version_hint(raw: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_string)
}

#[derive(Deserialize)]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Deserialize)]
struct Raw {
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    #[serde(rename = "agentSocket")]
    agent_socket: Option<String>,
    #[serde(rename = "logFile")]
    log_file: Option<String>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Map<String, Value>>,
    dns: Option<Map<String, Value>>,
    ipam: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Decodes and validates a plugin config. In this order: not JSON -> 6; a
/// `cniVersion` that is absent (which the spec reads as 0.1.0) or unsupported
/// -> 1; a field of the wrong type -> 6; no or an invalid `name`, a relative
/// path -> 7; an `ipam` section (addresses come from the agent) -> 2.
pub fn parse(raw: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| CniError::Decode(format!("network configuration is not valid JSON: {e}")))?;
    let Value::Object(object) = &value else {
        return Err(CniError::Decode(
            "network configuration is not a JSON object".into(),
        ));
    };
    let version = match object.get("cniVersion") {
        None => {
            return Err(CniError::IncompatibleVersion {
                given: "(none, which means 0.1.0)".into(),
            })
        }
        Some(Value::String(text)) => {
            SpecVersion::parse(text).ok_or_else(|| CniError::IncompatibleVersion {
                given: text.clone(),
            })?
        }
        Some(other) => {
            return Err(CniError::Decode(format!(
                "cniVersion must be a string, not {other}"
            )))
        }
    };
    let raw: Raw = serde_json::from_value(value.clone())
        .map_err(|e| CniError::Decode(format!("network configuration: {e}")))?;

    let name = raw.name.unwrap_or_default();
    if name.is_empty() {
        return Err(CniError::InvalidConfig("missing network name".into()));
    }
    validate_network_name(&name)?;
    if let Some(ipam) = raw.ipam.filter(|v| !v.is_null()) {
        return Err(CniError::UnsupportedField {
            key: "ipam".into(),
            value: ipam.to_string(),
        });
    }
    let absolute = |key: &str, path: String| -> Result<PathBuf, CniError> {
        let path = PathBuf::from(path);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(CniError::InvalidConfig(format!(
                "{key} must be an absolute path, not {}",
                path.display()
            )))
        }
    };
    Ok(NetConf {
        version,
        name,
        plugin_type: raw.plugin_type.unwrap_or_default(),
        agent_socket: absolute(
            "agentSocket",
            raw.agent_socket
                .unwrap_or_else(|| DEFAULT_AGENT_SOCKET.to_string()),
        )?,
        log_file: raw
            .log_file
            .filter(|p| !p.is_empty())
            .map(|p| absolute("logFile", p))
            .transpose()?,
        prev_result: raw.prev_result,
        dns: raw.dns,
        valid_attachments: raw.valid_attachments.map(|list| {
            list.into_iter()
                .map(|a| Attachment {
                    container_id: a.container_id,
                    ifname: a.ifname,
                })
                .collect()
        }),
    })
}

/// Same rule as container ids (libcni's ValidateNetworkName).
fn validate_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::InvalidConfig(format!(
            "invalid network name {name:?}: must start with a letter or digit, then letters, digits, '_', '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(value: Value) -> Result<NetConf, CniError> {
        parse(value.to_string().as_bytes())
    }

    #[test]
    fn every_supported_version_parses_with_defaults() {
        for version in crate::version::SUPPORTED_VERSIONS {
            let c = conf(json!({"cniVersion": version, "name": "sluice", "type": "sluice-cni"}))
                .unwrap();
            assert_eq!(c.version.as_str(), version);
            assert_eq!(c.name, "sluice");
            assert_eq!(c.plugin_type, "sluice-cni");
            assert_eq!(c.agent_socket, PathBuf::from("/run/sluice/agent.sock"));
            assert_eq!(c.log_file, None);
            assert_eq!(c.prev_result, None);
        }
    }

    #[test]
    fn plugin_keys_prev_result_and_runtime_config() {
        let c = conf(json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "sluice-cni",
            "agentSocket": "/tmp/agent.sock",
            "logFile": "/var/log/sluice-cni.log",
            "runtimeConfig": {"portMappings": []},
            "capabilities": {"portMappings": true},
            "dns": {"nameservers": ["10.96.0.10"]},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "x"}], "ips": []},
            "somethingElse": 1
        }))
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/agent.sock"));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/sluice-cni.log")));
        assert_eq!(c.prev_result.unwrap()["interfaces"][0]["name"], "x");
        assert_eq!(c.dns.unwrap()["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn gc_valid_attachments() {
        let c = conf(json!({
            "cniVersion": "1.1.0", "name": "n",
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        let err = conf(json!({"cniVersion": "1.1.0", "name": "n",
            "cni.dev/valid-attachments": [{"containerID": 5}]}))
        .unwrap_err();
        assert_eq!(err.code(), 6, "{err}");
    }

    #[test]
    fn malformed_json_is_code_6() {
        for raw in [&b"{not json"[..], b"", b"[1,2]", b"\"x\""] {
            assert_eq!(parse(raw).unwrap_err().code(), 6, "{raw:?}");
        }
        let err = conf(json!({"cniVersion": 1, "name": "n"})).unwrap_err();
        assert_eq!(err.code(), 6);
        let err = conf(json!({"cniVersion": "1.0.0", "name": "n", "agentSocket": 7})).unwrap_err();
        assert_eq!(err.code(), 6);
        let err = conf(json!({"cniVersion": "1.0.0", "name": "n", "prevResult": "x"})).unwrap_err();
        assert_eq!(err.code(), 6);
    }

    #[test]
    fn unsupported_or_missing_version_is_code_1() {
        for v in ["0.2.0", "0.1.0", "2.0.0", "1.0", ""] {
            let err = conf(json!({"cniVersion": v, "name": "n"})).unwrap_err();
            assert_eq!(err.code(), 1, "{v}");
            assert!(
                err.to_string().contains("1.1.0"),
                "lists what is supported: {err}"
            );
        }
        assert_eq!(conf(json!({"name": "n"})).unwrap_err().code(), 1);
        assert_eq!(
            version_hint(br#"{"cniVersion":"0.2.0","name":"n"}"#).as_deref(),
            Some("0.2.0")
        );
        assert_eq!(version_hint(b"{oops"), None);
    }

    #[test]
    fn invalid_config_is_code_7_and_ipam_is_code_2() {
        assert_eq!(conf(json!({"cniVersion": "1.0.0"})).unwrap_err().code(), 7);
        assert_eq!(
            conf(json!({"cniVersion": "1.0.0", "name": ""}))
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            conf(json!({"cniVersion": "1.0.0", "name": "a b"}))
                .unwrap_err()
                .code(),
            7
        );
        let err = conf(json!({"cniVersion": "1.0.0", "name": "n", "agentSocket": "rel/sock"}))
            .unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("agentSocket"));
        let err = conf(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local"}}))
            .unwrap_err();
        assert_eq!(err.code(), 2);
        assert!(err.to_string().contains("ipam") && err.to_string().contains("host-local"));
        // An explicit null is no section.
        assert!(conf(json!({"cniVersion": "1.0.0", "name": "n", "ipam": null})).is_ok());
    }
}
