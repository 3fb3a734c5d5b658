//! What the lab tests read back from a running engine: its open ports and the
//! XDP programs on the node's interfaces.

use std::time::Duration;

use serde_json::Value;
use sluice_lab::Lab;

/// `(ifname, worker, opened_ms)` of every port that is up, sorted.
pub fn open_ports(stats: &Value) -> Vec<(String, u64, u64)> {
    let mut ports: Vec<(String, u64, u64)> = stats["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "up")
        .map(|p| {
            (
                p["ifname"].as_str().unwrap().to_string(),
                p["worker"].as_u64().unwrap(),
                p["opened_ms"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("an up port without opened_ms: {p}")),
            )
        })
        .collect();
    ports.sort();
    ports
}

/// The id of the XDP program on a node interface, from `ip -j -d link`.
pub fn xdp_prog_id(lab: &Lab, ifname: &str) -> u64 {
    let out = lab
        .exec_node(
            &["ip", "-j", "-d", "link", "show", "dev", ifname],
            Duration::from_secs(5),
        )
        .unwrap();
    let links: Value = serde_json::from_str(&out.stdout).unwrap();
    links[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {ifname}: {}", out.stdout))
}
