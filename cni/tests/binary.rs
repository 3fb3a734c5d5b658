//! The real binary, driven like a runtime drives it: CNI_* variables, config on
//! stdin, result or error JSON on stdout, logs on stderr. None of these needs
//! root or touches a network namespace (they stop before any netlink work).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// stdout parsed: it must hold exactly one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {:?}; stderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// A spec error: non-zero exit, error JSON with exactly the spec's keys.
    fn error(&self) -> Value {
        assert_ne!(
            self.code,
            Some(0),
            "expected failure; stdout {}",
            self.stdout
        );
        let v = self.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{v}");
        for key in ["cniVersion", "code", "msg", "details"] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        v
    }
}

fn plugin(env: &[(&str, &str)], stdin: &str) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-cni"));
    command
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn sluice-cni");
    // The plugin may answer before reading stdin (a broken pipe is fine then).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn conf(version: &str) -> String {
    json!({
        "cniVersion": version,
        "name": "sluice",
        "type": "sluice-cni",
        "agentSocket": "/nonexistent/sluice-cni-test/agent.sock",
    })
    .to_string()
}

const ADD_ENV: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/nonexistent/netns/x"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn with(
    base: &[(&'static str, &'static str)],
    changes: &[(&'static str, Option<&'static str>)],
) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<(&str, &str)> = base
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .copied()
        .collect();
    env.extend(changes.iter().filter_map(|(k, v)| v.map(|v| (*k, v))));
    env
}

#[test]
fn version_lists_the_supported_versions_in_the_asked_version() {
    for asked in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let out = plugin(
            &[("CNI_COMMAND", "VERSION")],
            &json!({"cniVersion": asked}).to_string(),
        );
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(
            out.json(),
            json!({"cniVersion": asked, "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }
    let out = plugin(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(out.code, Some(0));
    assert_eq!(out.json()["cniVersion"], "1.1.0");
}

#[test]
fn unknown_or_missing_command_is_code_4_naming_it() {
    let out = plugin(&[("CNI_COMMAND", "FROB")], &conf("1.0.0"));
    let e = out.error();
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("FROB"), "{e}");
    assert_eq!(e["cniVersion"], "1.0.0", "answered in the config's version");

    let out = plugin(&[], &conf("1.0.0"));
    let e = out.error();
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{e}");
    assert!(
        out.stderr.contains("CNI protocol versions supported"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_netns_on_add_and_check_is_code_4_naming_it() {
    for command in ["ADD", "CHECK"] {
        let env = with(
            ADD_ENV,
            &[("CNI_COMMAND", Some(command)), ("CNI_NETNS", None)],
        );
        let e = plugin(&env, &conf("1.0.0")).error();
        assert_eq!(e["code"], 4, "{command}");
        assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    }
    let env = with(ADD_ENV, &[("CNI_IFNAME", Some("bad/name"))]);
    let e = plugin(&env, &conf("1.0.0")).error();
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{e}");
}

#[test]
fn a_netns_path_that_does_not_exist_is_code_4() {
    let out = plugin(ADD_ENV, &conf("1.0.0"));
    let e = out.error();
    assert_eq!(e["code"], 4, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    assert!(!out.stderr.is_empty(), "the failure is logged on stderr");
}

#[test]
fn malformed_json_is_code_6() {
    let out = plugin(ADD_ENV, "{\"cniVersion\": \"1.0.0\", ");
    let e = out.error();
    assert_eq!(e["code"], 6);
    assert_eq!(e["cniVersion"], "1.1.0", "no readable version: the newest");
}

#[test]
fn unsupported_version_is_code_1_answered_in_that_version() {
    for version in ["0.2.0", "0.1.0", "9.9.9"] {
        let e = plugin(ADD_ENV, &conf(version)).error();
        assert_eq!(e["code"], 1, "{version}");
        assert_eq!(e["cniVersion"], version);
    }
}

#[test]
fn commands_newer_than_the_config_version_are_code_1() {
    let check = with(ADD_ENV, &[("CNI_COMMAND", Some("CHECK"))]);
    let e = plugin(&check, &conf("0.3.1")).error();
    assert_eq!(e["code"], 1);
    assert!(e["msg"].as_str().unwrap().contains("CHECK"), "{e}");
    for command in ["STATUS", "GC"] {
        let e = plugin(&[("CNI_COMMAND", command)], &conf("1.0.0")).error();
        assert_eq!(e["code"], 1, "{command}");
    }
}

#[test]
fn status_without_an_agent_is_code_50() {
    let out = plugin(&[("CNI_COMMAND", "STATUS")], &conf("1.1.0"));
    let e = out.error();
    assert_eq!(e["code"], 50);
    assert_eq!(e["cniVersion"], "1.1.0");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/sluice-cni-test/agent.sock"),
        "names the socket: {e}"
    );
}

#[test]
fn gc_needs_its_list_and_an_agent() {
    let e = plugin(&[("CNI_COMMAND", "GC")], &conf("1.1.0")).error();
    assert_eq!(e["code"], 7);
    assert!(
        e["msg"].as_str().unwrap().contains("valid-attachments"),
        "{e}"
    );

    let mut gc: Value = serde_json::from_str(&conf("1.1.0")).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    let e = plugin(&[("CNI_COMMAND", "GC")], &gc.to_string()).error();
    assert_eq!(e["code"], 11, "agent unreachable: try again later");
}

#[test]
fn ipam_sections_and_bad_names_are_refused() {
    let mut with_ipam: Value = serde_json::from_str(&conf("1.0.0")).unwrap();
    with_ipam["ipam"] = json!({"type": "host-local"});
    let e = plugin(ADD_ENV, &with_ipam.to_string()).error();
    assert_eq!(e["code"], 2);
    assert!(
        e["msg"].as_str().unwrap().contains("host-local"),
        "key and value: {e}"
    );

    let e = plugin(ADD_ENV, &json!({"cniVersion": "0.4.0"}).to_string()).error();
    assert_eq!(e["code"], 7);

    // A prevResult that cannot be extended is refused before anything is made
    // (6, not the 4 that the nonexistent CNI_NETNS would give later).
    let mut bad_prev: Value = serde_json::from_str(&conf("1.0.0")).unwrap();
    bad_prev["prevResult"] = json!({"interfaces": "not a list"});
    let e = plugin(ADD_ENV, &bad_prev.to_string()).error();
    assert_eq!(e["code"], 6, "{e}");
}

#[test]
fn log_file_gets_the_lines_too() {
    let dir = std::env::temp_dir().join(format!("sluice-cni-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("cni.log");
    let mut c: Value = serde_json::from_str(&conf("1.1.0")).unwrap();
    c["logFile"] = json!(log.to_str().unwrap());
    let out = plugin(&[("CNI_COMMAND", "STATUS")], &c.to_string());
    out.error();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(text.contains("error 50"), "{text:?}");
    assert!(out.stderr.contains("error 50"), "{}", out.stderr);
}
