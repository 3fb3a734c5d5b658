//! Golden tests for desired state: a directory of manifests (and the CNI
//! attachments of this node) in, a text dump of the engine tables and
//! identities out. Each case is tests/golden/<case>/:
//! - manifests/*.yaml: what the manifest source reads;
//! - attachments.txt (optional): one line per CNI ADD on this node,
//!   `<container-id> <namespace/pod or -> <host-ifindex> <container-mac>`;
//! - uplink.txt (optional): the uplink's addresses (NodePorts, hostPorts,
//!   masquerade), whitespace-separated; with it the node has an uplink and
//!   masquerades;
//! - expected.txt: the dump. `UPDATE_GOLDEN=1 cargo test -p sluice-agent --test golden`
//!   rewrites it; review the diff before committing.

use std::path::Path;

use sluice_agent::attachments::Attachments;
use sluice_agent::desired::{pod_cidrs, resolve, NodeConfig};
use sluice_agent::identity::IdentityAllocator;
use sluice_agent::lb_ids::LbIds;
use sluice_agent::objects::Kind;
use sluice_agent::source::manifests::ManifestLoader;
use sluice_agent::store::Store;
use sluice_api::agent::{host_ifname, Attachment, PodRef, RegisteredEndpoint};
use sluice_tables::{Cidr, LbConfig, MacAddr, Masquerade, Uplink};

fn config() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        cluster_name: "default".into(),
        gateway_mac: MacAddr([2, 0x53, 0x4c, 0, 0, 1]),
        mtu: 1500,
        veth_queues: 1,
        pod_cidrs: vec![
            Cidr::parse("10.200.0.0/24").unwrap(),
            Cidr::parse("fd00:200::/64").unwrap(),
        ],
        uplink: None,
        services: Default::default(),
        lb: LbConfig::default(),
        policy: Default::default(),
    }
}

/// The case's config: the default, with an uplink when `uplink.txt` names addresses.
fn case_config(dir: &Path) -> NodeConfig {
    let mut config = config();
    if let Ok(text) = std::fs::read_to_string(dir.join("uplink.txt")) {
        config.uplink = Some(Uplink {
            ifname: "uplink0".into(),
            ifindex: 2,
            mac: MacAddr([2, 0, 0, 0, 0, 0xfe]),
            next_hop_mac: MacAddr([2, 0, 0, 0, 0, 0xff]),
            pod_cidrs: Vec::new(),
            addrs: text
                .split_whitespace()
                .map(|a| a.parse().unwrap())
                .collect(),
        });
        config.lb.masquerade = Some(Masquerade {
            addrs: Vec::new(),
            port_min: 61000,
            port_max: 65535,
            non_masquerade_cidrs: vec![Cidr::parse("10.96.0.0/12").unwrap()],
        });
    }
    config
}

fn run_case(dir: &Path) -> String {
    let mut loader = ManifestLoader::default();
    let loaded = loader.load(&dir.join("manifests")).unwrap();
    let mut store = Store::default();
    store.replace_all(loaded.objects);
    store.set_errors("manifests", loaded.errors);
    let config = case_config(dir);

    let mut attachments = Attachments::in_memory();
    if let Ok(text) = std::fs::read_to_string(dir.join("attachments.txt")) {
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let attachment = Attachment {
                container_id: f[0].into(),
                ifname: "eth0".into(),
            };
            let pod = (f[1] != "-").then(|| {
                let (namespace, name) = f[1].split_once('/').unwrap();
                PodRef {
                    namespace: namespace.into(),
                    name: name.into(),
                }
            });
            let cidrs = pod_cidrs(&store, &config);
            attachments
                .allocate(&attachment, pod, "/proc/1/ns/net", &cidrs)
                .unwrap();
            if f[2] != "-" {
                assert!(attachments.register(RegisteredEndpoint {
                    host_ifname: host_ifname(&attachment),
                    attachment,
                    host_ifindex: f[2].parse().unwrap(),
                    container_mac: MacAddr::parse(f[3]).unwrap(),
                }));
            }
        }
    }
    let mut ids = IdentityAllocator::in_memory();
    let mut lb_ids = LbIds::in_memory();
    let desired = resolve(&store, &attachments, &config, &mut ids, &mut lb_ids).unwrap();
    let mut out = String::new();
    for kind in Kind::ALL {
        let n = store.of_kind(kind).count();
        if n > 0 {
            out.push_str(&format!("objects {kind} {n}\n"));
        }
    }
    for e in store.errors() {
        out.push_str(&format!("source-error {e}\n"));
    }
    out.push_str(&desired.dump());
    out
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 3,
        "golden cases missing under {}",
        root.display()
    );
    for case in cases {
        let got = run_case(&case);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "--- {} expected\n{expected}\n+++ got\n{got}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
