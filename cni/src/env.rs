//! The CNI_* environment: which command, which attachment, which pod.

use std::fmt;
use std::path::PathBuf;

use sluice_api::agent::{Attachment, PodRef};

use crate::error::CniError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// The variables the spec requires for this command (besides CNI_COMMAND).
    /// CNI_PATH is listed as required by the spec but this plugin delegates to
    /// no other plugin, so it is read and never insisted on.
    fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            // containerd sends DEL with an empty CNI_NETNS.
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Status | Command::Gc => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CNI_ARGS as this plugin uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// From K8S_POD_NAMESPACE and K8S_POD_NAME, when both are there.
    pub pod: Option<PodRef>,
    /// Every other key (IgnoreUnknown, K8S_POD_INFRA_CONTAINER_ID, ...), kept for logs.
    pub other: Vec<(String, String)>,
}

/// Parses `K=V;K2=V2`. Unknown keys are accepted (as if IgnoreUnknown=1 were
/// always set); empty segments are skipped; a segment without `=` or with an
/// empty key is an error naming CNI_ARGS.
pub fn parse_cni_args(text: &str) -> Result<CniArgs, CniError> {
    let mut args = CniArgs::default();
    let (mut namespace, mut name) = (None, None);
    for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::InvalidEnv(format!(
                "invalid CNI_ARGS: {pair:?} is not KEY=VALUE"
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(CniError::InvalidEnv(format!(
                "invalid CNI_ARGS: {pair:?} has an empty key"
            )));
        }
        match key {
            "K8S_POD_NAMESPACE" => namespace = Some(value.to_string()),
            "K8S_POD_NAME" => name = Some(value.to_string()),
            _ => args.other.push((key.to_string(), value.to_string())),
        }
    }
    if let (Some(namespace), Some(name)) = (namespace, name) {
        if !namespace.is_empty() && !name.is_empty() {
            args.pod = Some(PodRef { namespace, name });
        }
    }
    Ok(args)
}

/// Everything the environment says about one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Empty for VERSION, STATUS and GC.
    pub container_id: String,
    /// Empty when the runtime gave none (DEL from containerd, VERSION, ...).
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// Only CNI_COMMAND: enough to know how to read stdin.
pub fn command(get: &dyn Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match get("CNI_COMMAND").filter(|c| !c.is_empty()) {
        None => Err(CniError::InvalidEnv(
            "required environment variables missing: CNI_COMMAND".into(),
        )),
        Some(text) => Command::parse(&text)
            .ok_or_else(|| CniError::InvalidEnv(format!("unknown CNI_COMMAND: {text:?}"))),
    }
}

/// Reads and validates the environment through `get` (std::env::var in the
/// binary, a map in tests). Empty values count as unset.
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let command = command(get)?;
    let var = |name: &str| get(name).filter(|v| !v.is_empty());
    let missing: Vec<&str> = command
        .required()
        .iter()
        .copied()
        .filter(|name| var(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::InvalidEnv(format!(
            "required environment variables missing for {command}: {}",
            missing.join(", ")
        )));
    }
    let container_id = var("CNI_CONTAINERID").unwrap_or_default();
    let ifname = var("CNI_IFNAME").unwrap_or_default();
    if command.required().contains(&"CNI_CONTAINERID") {
        validate_container_id(&container_id)?;
    }
    if command.required().contains(&"CNI_IFNAME") {
        validate_ifname(&ifname)?;
    }
    Ok(Env {
        command,
        container_id,
        netns: var("CNI_NETNS").unwrap_or_default(),
        ifname,
        args: parse_cni_args(&var("CNI_ARGS").unwrap_or_default())?,
        path: var("CNI_PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .filter(|d| !d.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The spec: not empty, starts alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::InvalidEnv(format!(
            "invalid CNI_CONTAINERID {id:?}: must start with a letter or digit, then letters, digits, '_', '.' or '-'"
        )))
    }
}

/// The spec (and Linux): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("contains '/', ':', whitespace or a control character")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(CniError::InvalidEnv(format!(
            "invalid CNI_IFNAME {name:?}: {why}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&|k| map.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr-1_a.b"),
        ("CNI_NETNS", "/proc/42/ns/net"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc",
        ),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn a_full_add_environment_parses() {
        let env = env_of(ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.container_id, "ctr-1_a.b");
        assert_eq!(env.netns, "/proc/42/ns/net");
        assert_eq!(env.ifname, "eth0");
        assert_eq!(
            env.args.pod,
            Some(PodRef {
                namespace: "default".into(),
                name: "web-0".into()
            })
        );
        assert_eq!(env.args.other.len(), 2);
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(
            env.attachment(),
            Attachment {
                container_id: "ctr-1_a.b".into(),
                ifname: "eth0".into()
            }
        );
    }

    fn without(name: &str, command: &str) -> Vec<(&'static str, String)> {
        ADD.iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| {
                (
                    *k,
                    if *k == "CNI_COMMAND" {
                        command.to_string()
                    } else {
                        v.to_string()
                    },
                )
            })
            .collect()
    }

    fn env_owned(pairs: &[(&'static str, String)]) -> Result<Env, CniError> {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env_of(&borrowed)
    }

    #[test]
    fn missing_variables_are_named_with_code_4() {
        for (var, command) in [
            ("CNI_NETNS", "ADD"),
            ("CNI_NETNS", "CHECK"),
            ("CNI_CONTAINERID", "ADD"),
            ("CNI_CONTAINERID", "DEL"),
            ("CNI_IFNAME", "DEL"),
            ("CNI_COMMAND", "ADD"),
        ] {
            let err = env_owned(&without(var, command)).unwrap_err();
            assert_eq!(err.code(), 4, "{var} {command}");
            assert!(err.to_string().contains(var), "{var} {command}: {err}");
        }
        // Empty counts as missing.
        let mut empty = without("CNI_NETNS", "ADD");
        empty.push(("CNI_NETNS", String::new()));
        assert!(env_owned(&empty)
            .unwrap_err()
            .to_string()
            .contains("CNI_NETNS"));
        // Several at once are all named.
        let err = env_of(&[("CNI_COMMAND", "CHECK")]).unwrap_err();
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn del_needs_no_netns_and_version_status_gc_need_nothing() {
        let env = env_owned(&without("CNI_NETNS", "DEL")).unwrap();
        assert_eq!(env.command, Command::Del);
        assert_eq!(env.netns, "");
        for command in ["VERSION", "STATUS", "GC"] {
            assert_eq!(
                env_of(&[("CNI_COMMAND", command)])
                    .unwrap()
                    .command
                    .as_str(),
                command
            );
        }
    }

    #[test]
    fn unknown_command_is_code_4_naming_it() {
        let err = env_of(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!(err.code(), 4);
        assert!(err.to_string().contains("FROB"), "{err}");
        // Commands are case-sensitive in the spec.
        assert_eq!(env_of(&[("CNI_COMMAND", "add")]).unwrap_err().code(), 4);
    }

    #[test]
    fn invalid_container_id_and_ifname_are_code_4() {
        for id in ["-lead", "has space", "a/b", "_x"] {
            let mut pairs = without("CNI_CONTAINERID", "ADD");
            pairs.push(("CNI_CONTAINERID", id.to_string()));
            let err = env_owned(&pairs).unwrap_err();
            assert_eq!(err.code(), 4);
            assert!(err.to_string().contains("CNI_CONTAINERID"), "{err}");
        }
        for name in ["..", ".", "eth0:1", "a/b", "e th", "abcdefghijklmnop"] {
            let mut pairs = without("CNI_IFNAME", "ADD");
            pairs.push(("CNI_IFNAME", name.to_string()));
            let err = env_owned(&pairs).unwrap_err();
            assert_eq!(err.code(), 4, "{name}");
            assert!(err.to_string().contains("CNI_IFNAME"), "{err}");
        }
        // 15 bytes is the longest valid name.
        assert!(validate_ifname("abcdefghijklmno").is_ok());
    }

    #[test]
    fn cni_args_ignore_unknown_keys_and_reject_malformed_pairs() {
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        let args = parse_cni_args("FOO=bar;;K8S_POD_NAME=p;").unwrap();
        assert_eq!(args.pod, None, "a name without a namespace is no pod");
        assert_eq!(args.other, vec![("FOO".to_string(), "bar".to_string())]);
        let args = parse_cni_args("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1").unwrap();
        assert_eq!(args.pod.unwrap().namespace, "kube-system");
        for bad in ["FOO", "=v", "A=1;NOEQUALS"] {
            let err = parse_cni_args(bad).unwrap_err();
            assert_eq!(err.code(), 4);
            assert!(err.to_string().contains("CNI_ARGS"), "{err}");
        }
        let mut pairs = without("CNI_ARGS", "ADD");
        pairs.push(("CNI_ARGS", "garbage".into()));
        assert!(env_owned(&pairs)
            .unwrap_err()
            .to_string()
            .contains("CNI_ARGS"));
    }
}
