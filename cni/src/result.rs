//! Success results, per spec version: ADD's result (merged into a `prevResult`
//! when chained) and VERSION's answer.

use std::net::IpAddr;

use serde_json::{json, Map, Value};
use sluice_tables::MacAddr;

use crate::error::CniError;
use crate::version::{SpecVersion, SUPPORTED_VERSIONS};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<MacAddr>,
    /// Shown from 1.1.0 on.
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; `None` on the host.
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into this result's own `interfaces`; shifted past a prevResult's.
    pub interface: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gw: Option<IpAddr>,
}

/// What one ADD of this plugin contributes, independent of the spec version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Map<String, Value>,
}

pub fn cidr(address: IpAddr, prefix_len: u8) -> String {
    format!("{address}/{prefix_len}")
}

impl AddResult {
    /// The result JSON in `version`'s shape. With a `prevResult` (chained after
    /// another plugin), its entries come first and are kept as they are,
    /// unknown keys included; ours are appended and our `ips[].interface`
    /// indexes shifted past its interfaces.
    pub fn to_json(
        &self,
        version: SpecVersion,
        prev: Option<&Map<String, Value>>,
    ) -> Result<Value, CniError> {
        let mut out = prev.cloned().unwrap_or_default();
        out.insert("cniVersion".into(), json!(version.as_str()));
        let offset = array_mut(&mut out, "interfaces")?.len();

        let interfaces = array_mut(&mut out, "interfaces")?;
        for i in &self.interfaces {
            let mut o = Map::new();
            o.insert("name".into(), json!(i.name));
            if let Some(mac) = i.mac {
                o.insert("mac".into(), json!(mac.to_string()));
            }
            if let (true, Some(mtu)) = (version.interfaces_carry_mtu(), i.mtu) {
                o.insert("mtu".into(), json!(mtu));
            }
            if let Some(sandbox) = &i.sandbox {
                o.insert("sandbox".into(), json!(sandbox));
            }
            interfaces.push(Value::Object(o));
        }

        let ips = array_mut(&mut out, "ips")?;
        for ip in &self.ips {
            let mut o = Map::new();
            if version.ips_carry_version() {
                let family = if ip.address.is_ipv4() { "4" } else { "6" };
                o.insert("version".into(), json!(family));
            }
            o.insert("address".into(), json!(cidr(ip.address, ip.prefix_len)));
            if let Some(gateway) = ip.gateway {
                o.insert("gateway".into(), json!(gateway.to_string()));
            }
            o.insert("interface".into(), json!(offset + ip.interface));
            ips.push(Value::Object(o));
        }

        if self.routes.is_empty() {
            return Ok(finish_dns(out, &self.dns));
        }
        let routes = array_mut(&mut out, "routes")?;
        for r in &self.routes {
            let mut o = Map::new();
            o.insert("dst".into(), json!(cidr(r.dst, r.prefix_len)));
            if let Some(gw) = r.gw {
                o.insert("gw".into(), json!(gw.to_string()));
            }
            routes.push(Value::Object(o));
        }

        Ok(finish_dns(out, &self.dns))
    }
}

/// Our `dns` unless empty, then the prevResult's, else `{}`.
fn finish_dns(mut out: Map<String, Value>, dns: &Map<String, Value>) -> Value {
    if !dns.is_empty() || out.get("dns").is_none_or(Value::is_null) {
        out.insert("dns".into(), Value::Object(dns.clone()));
    }
    Value::Object(out)
}

/// `key` of a result object as an array, created empty when absent.
fn array_mut<'a>(
    object: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Vec<Value>, CniError> {
    let slot = object
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(items) => Ok(items),
        other => Err(CniError::Decode(format!(
            "prevResult.{key} must be an array, not {other}"
        ))),
    }
}

/// The addresses a result lists (`ips[].address`), for CHECK.
pub fn listed_addresses(result: &Map<String, Value>) -> Result<Vec<(IpAddr, u8)>, CniError> {
    let Some(ips) = result.get("ips").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let ips = ips
        .as_array()
        .ok_or_else(|| CniError::Decode("prevResult.ips must be an array".into()))?;
    ips.iter()
        .map(|ip| {
            let text = ip.get("address").and_then(Value::as_str).ok_or_else(|| {
                CniError::Decode(format!("prevResult.ips entry without an address: {ip}"))
            })?;
            parse_cidr(text).ok_or_else(|| {
                CniError::Decode(format!("prevResult.ips address {text:?} is not a CIDR"))
            })
        })
        .collect()
}

pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

/// VERSION's answer: `cniVersion` echoes the version the runtime asked with
/// (the newest when it named none).
pub fn version_reply(asked: Option<&str>) -> Value {
    json!({
        "cniVersion": asked.filter(|v| !v.is_empty()).unwrap_or(crate::version::LATEST.as_str()),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(text: &str) -> Option<MacAddr> {
        Some(MacAddr::parse(text).unwrap())
    }

    /// The result of the spec's bridge example (three interfaces, one address
    /// on the third, a default route, a nameserver).
    fn spec_bridge_example() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: mac("00:11:22:33:44:55"),
                    mtu: None,
                    sandbox: None,
                },
                Interface {
                    name: "veth3243".into(),
                    mac: mac("55:44:33:22:11:11"),
                    mtu: None,
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: mac("99:88:77:66:55:44"),
                    mtu: None,
                    sandbox: Some("/var/run/netns/blue".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.5".parse().unwrap(),
                prefix_len: 16,
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: 2,
            }],
            routes: vec![Route {
                dst: "0.0.0.0".parse().unwrap(),
                prefix_len: 0,
                gw: None,
            }],
            dns: json!({"nameservers": ["10.1.0.1"]})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    /// SPEC.md (spec-v1.0.0 and 1.1.0), "Add example": the bridge plugin's result.
    const SPEC_1X_BRIDGE_RESULT: &str = r#"{
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "dns": {"nameservers": ["10.1.0.1"]}
    }"#;

    #[test]
    fn one_x_results_match_the_spec_example() {
        for version in [SpecVersion::V1_0_0, SpecVersion::V1_1_0] {
            let mut expected: Value = serde_json::from_str(SPEC_1X_BRIDGE_RESULT).unwrap();
            expected["cniVersion"] = json!(version.as_str());
            assert_eq!(
                spec_bridge_example().to_json(version, None).unwrap(),
                expected,
                "{version}"
            );
        }
    }

    /// SPEC.md at spec-v0.4.0 (and the same shape at 0.3.x), "Network Configuration
    /// List Runtime Examples": the bridge plugin's result as `prevResult`
    /// (trailing commas of the spec's text removed; a gateway and route added
    /// as its Result section describes them).
    #[test]
    fn zero_x_results_carry_ip_versions_like_the_spec() {
        let mut example = spec_bridge_example();
        example.ips[0].address = "10.0.0.5".parse().unwrap();
        example.ips[0].prefix_len = 32;
        example.ips[0].gateway = None;
        example.routes.clear();
        for version in [
            SpecVersion::V0_3_0,
            SpecVersion::V0_3_1,
            SpecVersion::V0_4_0,
        ] {
            let expected = json!({
                "cniVersion": version.as_str(),
                "ips": [{"version": "4", "address": "10.0.0.5/32", "interface": 2}],
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                    {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
                ],
                "dns": {"nameservers": ["10.1.0.1"]}
            });
            assert_eq!(
                example.to_json(version, None).unwrap(),
                expected,
                "{version}"
            );
        }
    }

    fn ours() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "lxc0123456789a".into(),
                    mac: mac("aa:bb:cc:00:00:01"),
                    mtu: Some(1500),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: mac("aa:bb:cc:00:00:02"),
                    mtu: Some(1500),
                    sandbox: Some("/proc/42/ns/net".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.5".parse().unwrap(),
                    prefix_len: 32,
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    interface: 1,
                },
                IpConfig {
                    address: "fd00:10:244:1::5".parse().unwrap(),
                    prefix_len: 128,
                    gateway: Some("fe80::1".parse().unwrap()),
                    interface: 1,
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0".parse().unwrap(),
                    prefix_len: 0,
                    gw: Some("10.244.1.1".parse().unwrap()),
                },
                Route {
                    dst: "::".parse().unwrap(),
                    prefix_len: 0,
                    gw: Some("fe80::1".parse().unwrap()),
                },
            ],
            dns: Map::new(),
        }
    }

    #[test]
    fn dual_stack_result_per_version() {
        let v = ours().to_json(SpecVersion::V0_4_0, None).unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][1]["version"], "6");
        assert_eq!(v["ips"][1]["address"], "fd00:10:244:1::5/128");
        assert_eq!(v["ips"][1]["gateway"], "fe80::1");
        assert!(v["interfaces"][0].get("mtu").is_none());
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["routes"][1], json!({"dst": "::/0", "gw": "fe80::1"}));
        assert_eq!(v["dns"], json!({}));

        let v = ours().to_json(SpecVersion::V1_0_0, None).unwrap();
        assert!(v["ips"][0].get("version").is_none());
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert_eq!(v["ips"][0]["interface"], 1);

        let v = ours().to_json(SpecVersion::V1_1_0, None).unwrap();
        assert_eq!(
            v["interfaces"][1],
            json!({"name": "eth0", "mac": "aa:bb:cc:00:00:02", "mtu": 1500, "sandbox": "/proc/42/ns/net"})
        );
    }

    #[test]
    fn prev_result_is_passed_through_and_ours_appended() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "dummy0", "mac": "00:00:00:00:00:09", "custom": true}],
            "ips": [{"address": "192.0.2.9/24", "interface": 0}],
            "routes": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}],
            "dns": {"nameservers": ["192.0.2.53"]},
            "extra": "kept"
        });
        let v = ours()
            .to_json(SpecVersion::V1_0_0, Some(prev.as_object().unwrap()))
            .unwrap();
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(v["interfaces"][0]["custom"], true);
        assert_eq!(v["interfaces"][2]["name"], "eth0");
        assert_eq!(v["ips"][0]["interface"], 0);
        assert_eq!(
            v["ips"][1]["interface"], 2,
            "shifted past prevResult's interface"
        );
        assert_eq!(v["ips"][2]["interface"], 2);
        assert_eq!(v["routes"].as_array().unwrap().len(), 3);
        assert_eq!(
            v["dns"]["nameservers"][0], "192.0.2.53",
            "our empty dns keeps theirs"
        );
        assert_eq!(v["extra"], "kept");

        let bad = json!({"interfaces": "nope"});
        let err = ours()
            .to_json(SpecVersion::V1_0_0, Some(bad.as_object().unwrap()))
            .unwrap_err();
        assert_eq!(err.code(), 6);
    }

    #[test]
    fn listed_addresses_and_cidrs() {
        let v = ours().to_json(SpecVersion::V0_3_1, None).unwrap();
        let listed = listed_addresses(v.as_object().unwrap()).unwrap();
        assert_eq!(
            listed,
            vec![
                ("10.244.1.5".parse().unwrap(), 32),
                ("fd00:10:244:1::5".parse().unwrap(), 128)
            ]
        );
        assert_eq!(parse_cidr("10.0.0.1/33"), None);
        assert_eq!(parse_cidr("10.0.0.1"), None);
        let bad = json!({"ips": [{"address": "x/1"}]});
        assert_eq!(
            listed_addresses(bad.as_object().unwrap())
                .unwrap_err()
                .code(),
            6
        );
    }

    #[test]
    fn version_reply_echoes_the_asked_version() {
        assert_eq!(
            version_reply(Some("0.4.0")),
            json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        assert_eq!(version_reply(None)["cniVersion"], "1.1.0");
    }
}
