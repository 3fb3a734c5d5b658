//! The node's uplink: where traffic between the pods and the outside enters and leaves.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{EndpointError, MacAddr};

/// An IP prefix; serialized as `10.200.0.0/24` or `fd00:200::/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parses `addr/len`; the length must fit the family.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, len) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix_len: u8 = len.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Cidr { addr, prefix_len })
    }

    /// Whether `ip` lies inside the prefix (host bits of `addr` ignored).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid CIDR {text:?}")))
    }
}

/// The node's uplink as the engine uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// Interface name in the node namespace.
    pub ifname: String,
    /// Its kernel ifindex.
    pub ifindex: u32,
    /// The node's MAC on the uplink: source of frames the engine sends out.
    pub mac: MacAddr,
    /// Where off-node traffic goes (the next router's MAC).
    pub next_hop_mac: MacAddr,
    /// Prefixes whose traffic arriving on the uplink belongs to the engine.
    pub pod_cidrs: Vec<Cidr>,
    /// The node's own addresses on the uplink: where NodePorts and hostPorts
    /// are served and what masqueraded traffic leaves from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<IpAddr>,
}

impl Uplink {
    /// Checks the fields; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), EndpointError> {
        let bad = |field: &'static str, detail: String| {
            Err(EndpointError::UplinkInterface { field, detail })
        };
        if self.ifname.is_empty() || self.ifname.len() > 15 {
            return bad(
                "uplink.ifname",
                format!("{:?} is not an interface name", self.ifname),
            );
        }
        if self.ifindex == 0 {
            return bad("uplink.ifindex", "must not be 0".into());
        }
        for (field, mac) in [
            ("uplink.mac", self.mac),
            ("uplink.next_hop_mac", self.next_hop_mac),
        ] {
            if mac.0 == [0; 6] || mac.0[0] & 1 != 0 {
                return bad(field, format!("{mac} is not a unicast MAC address"));
            }
        }
        Ok(())
    }

    /// Whether `ip` is inside one of the pod CIDRs. Does not allocate.
    pub fn in_pod_cidrs(&self, ip: IpAddr) -> bool {
        self.pod_cidrs.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink() -> Uplink {
        Uplink {
            ifname: "uplink0".into(),
            ifindex: 7,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            next_hop_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            pod_cidrs: vec![
                Cidr::parse("10.200.0.0/24").unwrap(),
                Cidr::parse("fd00:200::/64").unwrap(),
            ],
            addrs: Vec::new(),
        }
    }

    #[test]
    fn cidrs_parse_print_and_match() {
        let c = Cidr::parse("10.200.0.0/24").unwrap();
        assert_eq!(c.to_string(), "10.200.0.0/24");
        assert!(c.contains("10.200.0.11".parse().unwrap()));
        assert!(!c.contains("10.201.0.11".parse().unwrap()));
        assert!(!c.contains("fd00:200::11".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        let c6 = Cidr::parse("fd00:200::/64").unwrap();
        assert!(c6.contains("fd00:200::11".parse().unwrap()));
        assert!(!c6.contains("fd00:201::11".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn uplink_json_uses_text_and_errors_name_the_field() {
        let json = serde_json::to_string(&uplink()).unwrap();
        assert!(json.contains("\"10.200.0.0/24\""), "{json}");
        assert_eq!(serde_json::from_str::<Uplink>(&json).unwrap(), uplink());
        let err = serde_json::from_str::<Uplink>(&json.replace("/24", "/40"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid CIDR \"10.200.0.0/40\""), "{err}");
        let mut u = uplink();
        u.next_hop_mac = MacAddr([0; 6]);
        assert!(u
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("uplink.next_hop_mac:"));
        let mut u = uplink();
        u.ifindex = 0;
        assert!(u
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("uplink.ifindex:"));
        assert!(uplink().validate().is_ok());
    }
}
