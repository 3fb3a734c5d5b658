//! `sluice observe --input-file` on saved Hubble JSON: the real binary,
//! filters applied locally, exact output lines.

use std::process::Command;

fn input() -> std::path::PathBuf {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/tests/data/hubble");
    let mut text = String::new();
    for name in [
        "trace_to_endpoint_syn",
        "drop_policy_denied",
        "policy_verdict_allowed",
        "l7_dns_request",
    ] {
        text.push_str(&std::fs::read_to_string(format!("{data}/{name}.json")).unwrap());
    }
    // One file per call: the tests run in parallel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("sluice-observe-{}-{n}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn observe(args: &[&str]) -> Vec<String> {
    let path = input();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("observe")
        .arg("--input-file")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

const TRACE: &str = "Nov 28 02:11:20.123: shop/client-7d9f:41234 (ID:1234) -> shop/web-1:80 (ID:5678) to-endpoint FORWARDED (TCP Flags: SYN)";
const DROP: &str = "Nov 28 02:11:21.000: shop/client-7d9f:41240 (ID:1234) -> db/postgres-0:5432 (ID:9012) Policy denied DROPPED (TCP Flags: SYN)";
const VERDICT: &str = "Nov 28 02:11:22.500: shop/client-7d9f:41250 (ID:1234) <> shop/web-1:80 (ID:5678) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)";
const DNS: &str = "Nov 28 02:11:23.250: shop/client-7d9f:53111 (ID:1234) -> kube-system/kube-dns:53 (world) dns-request proxy FORWARDED (DNS Query example.com. A)";

#[test]
fn compact_prints_every_flow_like_hubble() {
    assert_eq!(observe(&[]), [TRACE, DROP, VERDICT, DNS]);
}

#[test]
fn filters_apply_locally() {
    assert_eq!(observe(&["--verdict", "DROPPED"]), [DROP]);
    assert_eq!(
        observe(&["--not", "--verdict", "DROPPED", "--to-port", "80"]),
        [TRACE, VERDICT]
    );
    assert_eq!(
        observe(&["--from-pod", "shop/client", "--to-port", "5432"]),
        [DROP]
    );
    assert_eq!(observe(&["--protocol", "dns"]), [DNS]);
    assert_eq!(observe(&["-t", "trace:to-endpoint"]), [TRACE]);
    assert_eq!(observe(&["-t", "policy-verdict"]), [VERDICT]);
    assert_eq!(observe(&["-t", "l7"]), [DNS]);
    assert_eq!(observe(&["--drop-reason-desc", "POLICY_DENIED"]), [DROP]);
    assert_eq!(observe(&["--ip", "10.0.2.7"]), [DROP]);
    assert_eq!(observe(&["--to-ip", "10.0.1.0/24"]), [TRACE, VERDICT]);
    assert_eq!(observe(&["-n", "db"]), [DROP]);
    assert_eq!(observe(&["--pod", "shop/web"]), [TRACE, VERDICT]);
    assert_eq!(observe(&["-l", "app=postgres"]), [DROP]);
    assert_eq!(observe(&["--to-label", "reserved:world"]), [DNS]);
    assert_eq!(observe(&["--to-service", "kube-system/kube-dns"]), [DNS]);
    assert_eq!(observe(&["--to-identity", "9012"]), [DROP]);
    assert_eq!(observe(&["--identity", "world"]), [DNS]);
    assert_eq!(observe(&["--traffic-direction", "egress"]), [DROP, DNS]);
    assert_eq!(observe(&["--from-port", "53111"]), [DNS]);
    assert_eq!(observe(&["--port", "41250"]), [VERDICT]);
}

#[test]
fn selection_and_time_windows() {
    assert_eq!(observe(&["--first", "2"]), [TRACE, DROP]);
    assert_eq!(observe(&["--last", "1"]), [DNS]);
    assert_eq!(
        observe(&[
            "--since",
            "2026-11-28T02:11:21Z",
            "--until",
            "2026-11-28T02:11:23Z"
        ]),
        [DROP, VERDICT]
    );
    // Relative: the saved flows are less than ten years old.
    assert!(observe(&["--until", "87600h"]).is_empty());
    assert_eq!(observe(&["--since", "87600h"]).len(), 4);
}

#[test]
fn policy_names_and_node() {
    assert_eq!(
        observe(&["--verdict", "DROPPED", "--print-policy-names", "--print-node-name"]),
        ["Nov 28 02:11:21.000 [node-a]: shop/client-7d9f:41240 (ID:1234) -> db/postgres-0:5432 (ID:9012) Policy denied DROPPED BY client-egress (CiliumNetworkPolicy) (TCP Flags: SYN)"]
    );
    assert_eq!(
        observe(&["-t", "policy-verdict", "--print-policy-names"]),
        ["Nov 28 02:11:22.500: shop/client-7d9f:41250 (ID:1234) <> shop/web-1:80 (ID:5678) policy-verdict:L3-L4 INGRESS ALLOWED BY web-ingress (CiliumNetworkPolicy) (TCP Flags: SYN)"]
    );
}

#[test]
fn other_formats() {
    let dict = observe(&["-o", "dict", "--first", "2"]);
    assert_eq!(
        dict,
        [
            "  TIMESTAMP: Nov 28 02:11:20.123",
            "     SOURCE: shop/client-7d9f:41234",
            "DESTINATION: shop/web-1:80",
            "       TYPE: to-endpoint",
            "    VERDICT: FORWARDED",
            "    SUMMARY: TCP Flags: SYN",
            "------------",
            "  TIMESTAMP: Nov 28 02:11:21.000",
            "     SOURCE: shop/client-7d9f:41240",
            "DESTINATION: db/postgres-0:5432",
            "       TYPE: Policy denied",
            "    VERDICT: DROPPED",
            "    SUMMARY: TCP Flags: SYN",
        ]
    );
    let table = observe(&["-o", "table", "--verdict", "DROPPED"]);
    assert_eq!(
        table,
        [
            "TIMESTAMP             SOURCE                   DESTINATION          TYPE            VERDICT   SUMMARY",
            "Nov 28 02:11:21.000   shop/client-7d9f:41240   db/postgres-0:5432   Policy denied   DROPPED   TCP Flags: SYN",
        ]
    );
    let json = observe(&["-o", "json", "--verdict", "DROPPED"]);
    assert_eq!(json.len(), 1);
    let value: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(value["flow"]["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(value["node_name"], "node-a");
    assert_eq!(observe(&["-o", "jsonpb", "--verdict", "DROPPED"]), json);
}
