//! The endpoint table: which pod owns which address, behind which interface.

use std::net::{Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// A 48-bit Ethernet address; serialized as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        MacAddr::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid MAC address {text:?}")))
    }
}

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff`.
    pub fn parse(text: &str) -> Option<MacAddr> {
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in out.iter_mut() {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(MacAddr(out))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Index of an endpoint inside one [`EndpointTable`] snapshot.
pub type EndpointId = u32;

/// One pod interface served by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Human name (namespace/pod), for counters and flows; never used per packet.
    pub name: String,
    /// Kernel ifindex of the node-side veth the pod is attached to.
    pub ifindex: u32,
    /// Node-side interface name (for attaching sockets and programs).
    pub ifname: String,
    /// The pod's own MAC (its eth0): frames from the pod must carry it, frames to
    /// the pod are addressed to it.
    pub mac: MacAddr,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Security identity; a placeholder until the agent assigns real ones.
    pub identity: u32,
}

/// The addresses the engine answers for as the pods' default gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub mac: MacAddr,
    pub ipv4: Ipv4Addr,
    /// Link-local or global address that pods use as their IPv6 next hop.
    pub ipv6: Ipv6Addr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("endpoint {name}: address {addr} is already owned by endpoint {owner}")]
    DuplicateAddress {
        name: String,
        addr: String,
        owner: String,
    },
    #[error("endpoint {name}: ifindex {ifindex} is already used by endpoint {owner}")]
    DuplicateInterface {
        name: String,
        ifindex: u32,
        owner: String,
    },
    #[error("endpoint {name}: has neither an IPv4 nor an IPv6 address")]
    NoAddress { name: String },
    #[error(transparent)]
    IpCache(#[from] crate::IpCacheError),
    #[error("{field}: {detail}")]
    UplinkInterface { field: &'static str, detail: String },
    /// A service or the load-balancing settings are inconsistent; `service` names
    /// it (`namespace/name port/protocol`, or `lb` for the settings).
    #[error("service {service}: {field}: {detail}")]
    Service {
        service: String,
        field: String,
        detail: String,
    },
    /// The compiled policy is inconsistent; `field` is its path in the node
    /// state, e.g. `policy.tables[3].entries[7].rule`.
    #[error("{field}: {detail}")]
    Policy { field: String, detail: String },
}

/// Endpoints indexed by address and by interface. Built once per snapshot;
/// lookups never allocate.
#[derive(Clone, Debug, Default)]
pub struct EndpointTable {
    endpoints: Vec<Endpoint>,
    by_ipv4: HashMap<Ipv4Addr, EndpointId>,
    by_ipv6: HashMap<Ipv6Addr, EndpointId>,
    by_ifindex: HashMap<u32, EndpointId>,
}

impl EndpointTable {
    /// Builds a table, refusing conflicting input as a whole (nothing half-applied).
    pub fn build(endpoints: Vec<Endpoint>) -> Result<EndpointTable, EndpointError> {
        let mut table = EndpointTable::default();
        for (index, ep) in endpoints.iter().enumerate() {
            let id = index as EndpointId;
            if ep.ipv4.is_none() && ep.ipv6.is_none() {
                return Err(EndpointError::NoAddress {
                    name: ep.name.clone(),
                });
            }
            if let Some(addr) = ep.ipv4 {
                if let Some(owner) = table.by_ipv4.insert(addr, id) {
                    return Err(EndpointError::DuplicateAddress {
                        name: ep.name.clone(),
                        addr: addr.to_string(),
                        owner: endpoints[owner as usize].name.clone(),
                    });
                }
            }
            if let Some(addr) = ep.ipv6 {
                if let Some(owner) = table.by_ipv6.insert(addr, id) {
                    return Err(EndpointError::DuplicateAddress {
                        name: ep.name.clone(),
                        addr: addr.to_string(),
                        owner: endpoints[owner as usize].name.clone(),
                    });
                }
            }
            if let Some(owner) = table.by_ifindex.insert(ep.ifindex, id) {
                return Err(EndpointError::DuplicateInterface {
                    name: ep.name.clone(),
                    ifindex: ep.ifindex,
                    owner: endpoints[owner as usize].name.clone(),
                });
            }
        }
        table.endpoints = endpoints;
        Ok(table)
    }

    pub fn get(&self, id: EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id as usize)
    }

    pub fn by_ipv4(&self, addr: Ipv4Addr) -> Option<&Endpoint> {
        self.by_ipv4.get(&addr).and_then(|id| self.get(*id))
    }

    pub fn by_ipv6(&self, addr: Ipv6Addr) -> Option<&Endpoint> {
        self.by_ipv6.get(&addr).and_then(|id| self.get(*id))
    }

    /// The endpoint attached behind a node-side interface.
    pub fn by_ifindex(&self, ifindex: u32) -> Option<&Endpoint> {
        self.by_ifindex.get(&ifindex).and_then(|id| self.get(*id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, ifindex: u32, v4: &str) -> Endpoint {
        Endpoint {
            name: name.into(),
            ifindex,
            ifname: format!("lxc{ifindex}"),
            mac: MacAddr([2, 0, 0, 0, 0, ifindex as u8]),
            ipv4: Some(v4.parse().unwrap()),
            ipv6: None,
            identity: 0,
        }
    }

    #[test]
    fn lookups_find_the_owner() {
        let t = EndpointTable::build(vec![ep("a", 5, "10.0.0.2"), ep("b", 6, "10.0.0.3")]).unwrap();
        assert_eq!(t.by_ipv4("10.0.0.3".parse().unwrap()).unwrap().name, "b");
        assert_eq!(t.by_ifindex(5).unwrap().name, "a");
        assert!(t.by_ipv4("10.0.0.4".parse().unwrap()).is_none());
    }

    #[test]
    fn duplicate_address_is_refused_with_both_names() {
        let err =
            EndpointTable::build(vec![ep("a", 5, "10.0.0.2"), ep("b", 6, "10.0.0.2")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoint b: address 10.0.0.2 is already owned by endpoint a"
        );
    }

    #[test]
    fn duplicate_interface_is_refused() {
        let err =
            EndpointTable::build(vec![ep("a", 5, "10.0.0.2"), ep("b", 5, "10.0.0.3")]).unwrap_err();
        assert!(matches!(
            err,
            EndpointError::DuplicateInterface { ifindex: 5, .. }
        ));
    }

    #[test]
    fn endpoint_json_uses_text_addresses() {
        let json = serde_json::to_string(&ep("a", 5, "10.0.0.2")).unwrap();
        assert!(json.contains("\"mac\":\"02:00:00:00:00:05\""), "{json}");
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ep("a", 5, "10.0.0.2"));
        let bad = json.replace("02:00:00:00:00:05", "02:00");
        let err = serde_json::from_str::<Endpoint>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid MAC address \"02:00\""), "{err}");
    }

    #[test]
    fn mac_parses_and_prints() {
        let m = MacAddr::parse("02:53:4c:00:00:01").unwrap();
        assert_eq!(m.to_string(), "02:53:4c:00:00:01");
        assert!(MacAddr::parse("02:53:4c:00:00").is_none());
        assert!(MacAddr::parse("02:53:4c:00:00:01:07").is_none());
    }
}
