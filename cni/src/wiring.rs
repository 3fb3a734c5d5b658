//! The veth pair of one attachment: create and configure both ends, undo it,
//! compare it with what it should be.
//!
//! [`wire`] works in the calling thread's netns (the node's) for the host end
//! and on a thread inside the container's netns for the other. The peer is
//! created directly inside the container's netns under its final name (one
//! RTM_NEWLINK with IFLA_NET_NS_FD on the peer), so there is never a moment
//! where it exists on the node or under a temporary name. Any failure after the
//! pair exists deletes the host end, which takes the peer (and with it the
//! addresses and routes on it) along: nothing is left behind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use sluice_api::agent::IpAssignment;
use sluice_tables::MacAddr;

use crate::ethtool;
use crate::netns::{NetError, Netns, Rtnl, EEXIST};
use crate::sysctl::{self, Family};

/// Everything needed to wire one attachment (from the agent's allocation and
/// the CNI environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireSpec {
    pub host_ifname: String,
    pub container_ifname: String,
    /// CNI_NETNS.
    pub netns_path: String,
    pub mtu: u32,
    /// TX/RX queues of both ends (one per engine worker).
    pub queues: u32,
    pub ipv4: Option<IpAssignment>,
    pub ipv6: Option<IpAssignment>,
}

/// What [`wire`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wired {
    pub host_ifindex: u32,
    pub host_mac: MacAddr,
    pub container_ifindex: u32,
    pub container_mac: MacAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Nothing was created.
    #[error("interface {name} already exists in {place}")]
    Exists { name: String, place: String },
    /// Nothing was created.
    #[error("{0}")]
    Before(NetError),
    /// The pair existed; `rollback` says how undoing it went.
    #[error("{error}; {rollback}")]
    Failed { error: NetError, rollback: String },
}

impl WireError {
    /// The underlying error, if any.
    pub fn net_error(&self) -> Option<&NetError> {
        match self {
            WireError::Exists { .. } => None,
            WireError::Before(e) | WireError::Failed { error: e, .. } => Some(e),
        }
    }
}

impl From<NetError> for WireError {
    fn from(e: NetError) -> WireError {
        WireError::Before(e)
    }
}

impl WireSpec {
    /// Rejects what the kernel would choke on halfway through.
    pub fn validate(&self) -> Result<(), String> {
        for name in [&self.host_ifname, &self.container_ifname] {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ':', ' ']) {
                return Err(format!("invalid interface name {name:?}"));
            }
        }
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err("no address to configure (neither IPv4 nor IPv6)".into());
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(format!("MTU {} is outside 68..=65535", self.mtu));
        }
        if let Some(v4) = &self.ipv4 {
            if !(v4.address.is_ipv4()
                && v4.gateway.is_ipv4()
                && !v4.gateway.is_unspecified()
                && v4.prefix_len <= 32)
            {
                return Err(format!("invalid IPv4 assignment {v4:?}"));
            }
        }
        if let Some(v6) = &self.ipv6 {
            if !(v6.address.is_ipv6()
                && v6.gateway.is_ipv6()
                && !v6.gateway.is_unspecified()
                && v6.prefix_len <= 128)
            {
                return Err(format!("invalid IPv6 assignment {v6:?}"));
            }
            if self.mtu < 1280 {
                return Err(format!("MTU {} is below IPv6's minimum of 1280", self.mtu));
            }
        }
        Ok(())
    }
}

/// Whether `ifname` exists in the netns at `netns_path`.
pub fn container_interface_exists(netns_path: &str, ifname: &str) -> Result<bool, NetError> {
    let netns = Netns::open(netns_path)?;
    netns.run(|| Ok(Rtnl::connect()?.link_by_name(ifname)?.is_some()))
}

/// Creates and configures the pair; see the module doc. On error nothing of it
/// is left (see [`WireError`]).
pub fn wire(spec: &WireSpec) -> Result<Wired, WireError> {
    spec.validate()
        .map_err(|m| WireError::Before(NetError::Other(m)))?;
    let netns = Netns::open(&spec.netns_path)?;
    let node = Rtnl::connect()?;
    if node.link_by_name(&spec.host_ifname)?.is_some() {
        return Err(WireError::Exists {
            name: spec.host_ifname.clone(),
            place: "the node's network namespace".into(),
        });
    }
    if netns.run(|| {
        Ok(Rtnl::connect()?
            .link_by_name(&spec.container_ifname)?
            .is_some())
    })? {
        return Err(WireError::Exists {
            name: spec.container_ifname.clone(),
            place: spec.netns_path.clone(),
        });
    }

    let queues = spec.queues.max(1);
    let peer = LinkUnspec::new_with_name(&spec.container_ifname)
        .mtu(spec.mtu)
        .append_extra_attribute(LinkAttribute::NumTxQueues(queues))
        .append_extra_attribute(LinkAttribute::NumRxQueues(queues))
        .setns_by_fd(netns.raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(spec.host_ifname.clone())
        .mtu(spec.mtu)
        .append_extra_attribute(LinkAttribute::NumTxQueues(queues))
        .append_extra_attribute(LinkAttribute::NumRxQueues(queues))
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    if let Err(e) = node.block_on(node.handle().link().add(pair).execute()) {
        let e = NetError::netlink(
            format!(
                "creating veth {} with peer {} in {}",
                spec.host_ifname, spec.container_ifname, spec.netns_path
            ),
            e,
        );
        // Creation is atomic; EEXIST means one of the names appeared since the
        // checks above. Either way nothing of ours exists.
        if e.errno() == Some(EEXIST) {
            return Err(WireError::Exists {
                name: format!("{} or {}", spec.host_ifname, spec.container_ifname),
                place: format!("the node's network namespace or {}", spec.netns_path),
            });
        }
        return Err(WireError::Before(e));
    }

    let host = match node.link_by_name(&spec.host_ifname) {
        Ok(Some(link)) => link,
        Ok(None) => {
            return Err(WireError::Failed {
                error: NetError::Other(format!(
                    "veth {} vanished right after its creation",
                    spec.host_ifname
                )),
                rollback: "nothing to roll back".into(),
            })
        }
        Err(error) => {
            let rollback = rollback_by_name(&node, &spec.host_ifname);
            return Err(WireError::Failed { error, rollback });
        }
    };

    let configured = configure_host(&node, spec, host.index)
        .and_then(|()| netns.run(|| configure_container(spec)));
    match configured {
        Ok((container_ifindex, container_mac)) => Ok(Wired {
            host_ifindex: host.index,
            host_mac: host.mac.unwrap_or(MacAddr([0; 6])),
            container_ifindex,
            container_mac,
        }),
        Err(error) => {
            let rollback = match node.delete_link(host.index) {
                Ok(_) => format!(
                    "rolled back: deleted {} and its peer {}",
                    spec.host_ifname, spec.container_ifname
                ),
                Err(e) => format!("rollback failed, {} is left: {e}", spec.host_ifname),
            };
            Err(WireError::Failed { error, rollback })
        }
    }
}

fn rollback_by_name(node: &Rtnl, name: &str) -> String {
    match unwire_with(node, name) {
        Ok(true) => format!("rolled back: deleted {name} and its peer"),
        Ok(false) => format!("rolled back: {name} was already gone"),
        Err(e) => format!("rollback failed, {name} may be left: {e}"),
    }
}

/// Node side: no IPv6 link-local address on the host end (addrgenmode none,
/// set while the link is still down), no DAD, no forwarding, then up.
fn configure_host(node: &Rtnl, spec: &WireSpec, index: u32) -> Result<(), NetError> {
    let name = &spec.host_ifname;
    if std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{name}")).is_dir() {
        node.set_link(
            &format!("setting addrgenmode none on {name}"),
            LinkUnspec::new_with_index(index)
                .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                    vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
                )]))
                .build(),
        )?;
        sysctl::set(Family::Ipv6, name, "accept_dad", "0")?;
        sysctl::set(Family::Ipv6, name, "forwarding", "0")?;
    }
    sysctl::set(Family::Ipv4, name, "forwarding", "0")?;
    node.set_link(
        &format!("setting {name} up"),
        LinkUnspec::new_with_index(index).up().build(),
    )
}

/// Container side, on a thread inside its netns: lo up; no DAD; tx checksum
/// offload off; up; /32 and /128 addresses; an on-link route to the IPv4
/// gateway and default routes through the gateways.
fn configure_container(spec: &WireSpec) -> Result<(u32, MacAddr), NetError> {
    let rtnl = Rtnl::connect()?;
    let name = &spec.container_ifname;
    if let Some(lo) = rtnl.link_by_name("lo")? {
        if !lo.up {
            rtnl.set_link(
                "setting lo up",
                LinkUnspec::new_with_index(lo.index).up().build(),
            )?;
        }
    }
    let link = rtnl.link_by_name(name)?.ok_or_else(|| {
        NetError::Other(format!(
            "{name} is not in {} after its creation",
            spec.netns_path
        ))
    })?;
    let mac = link
        .mac
        .ok_or_else(|| NetError::Other(format!("{name} has no MAC address")))?;
    if spec.ipv6.is_some() {
        sysctl::set(Family::Ipv6, name, "accept_dad", "0")?;
    }
    ethtool::disable_tx_checksum(link.index)
        .map_err(|e| NetError::io(format!("turning tx checksum offload off on {name}"), e))?;
    rtnl.set_link(
        &format!("setting {name} up"),
        LinkUnspec::new_with_index(link.index).up().build(),
    )?;
    if let Some(v4) = &spec.ipv4 {
        rtnl.add_address(link.index, v4.address, v4.prefix_len, false)?;
    }
    if let Some(v6) = &spec.ipv6 {
        rtnl.add_address(link.index, v6.address, v6.prefix_len, true)?;
    }
    if let Some(IpAssignment {
        gateway: IpAddr::V4(gateway),
        ..
    }) = &spec.ipv4
    {
        rtnl.add_route(
            &format!("adding route {gateway}/32 dev {name} scope link"),
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(*gateway, 32)
                .output_interface(link.index)
                .scope(RouteScope::Link)
                .build(),
        )?;
        rtnl.add_route(
            &format!("adding route default via {gateway} dev {name}"),
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(*gateway)
                .output_interface(link.index)
                .build(),
        )?;
    }
    if let Some(IpAssignment {
        gateway: IpAddr::V6(gateway),
        ..
    }) = &spec.ipv6
    {
        if !gateway.is_unicast_link_local() {
            rtnl.add_route(
                &format!("adding route {gateway}/128 dev {name}"),
                RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(*gateway, 128)
                    .output_interface(link.index)
                    .build(),
            )?;
        }
        rtnl.add_route(
            &format!("adding route default via {gateway} dev {name}"),
            RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(*gateway)
                .output_interface(link.index)
                .build(),
        )?;
    }
    Ok((link.index, mac))
}

/// Deletes the node-side veth `host_ifname` (and so its peer) if it exists.
/// `true` when something was deleted. Idempotent.
pub fn unwire(host_ifname: &str) -> Result<bool, NetError> {
    unwire_with(&Rtnl::connect()?, host_ifname)
}

fn unwire_with(node: &Rtnl, host_ifname: &str) -> Result<bool, NetError> {
    match node.link_by_name(host_ifname)? {
        None => Ok(false),
        Some(link) => node.delete_link(link.index),
    }
}

/// Compares both ends with `spec`; each difference is one line. Routes added
/// by others are allowed; ours must be there.
pub fn check(spec: &WireSpec) -> Result<Vec<String>, NetError> {
    let mut problems = Vec::new();
    let node = Rtnl::connect()?;
    match node.link_by_name(&spec.host_ifname)? {
        None => problems.push(format!("host veth {} is missing", spec.host_ifname)),
        Some(host) => {
            if !host.up {
                problems.push(format!("host veth {} is down", spec.host_ifname));
            }
            if host.mtu != Some(spec.mtu) {
                problems.push(format!(
                    "host veth {} has MTU {:?}, expected {}",
                    spec.host_ifname, host.mtu, spec.mtu
                ));
            }
        }
    }
    let netns = Netns::open(&spec.netns_path)?;
    problems.extend(netns.run(|| check_container(spec))?);
    Ok(problems)
}

fn check_container(spec: &WireSpec) -> Result<Vec<String>, NetError> {
    let mut problems = Vec::new();
    let rtnl = Rtnl::connect()?;
    let name = &spec.container_ifname;
    let Some(link) = rtnl.link_by_name(name)? else {
        problems.push(format!("{name} is missing from {}", spec.netns_path));
        return Ok(problems);
    };
    if !link.up {
        problems.push(format!("{name} is down"));
    }
    if link.mtu != Some(spec.mtu) {
        problems.push(format!(
            "{name} has MTU {:?}, expected {}",
            link.mtu, spec.mtu
        ));
    }
    let addresses = rtnl.addresses(link.index)?;
    for assignment in spec.ipv4.iter().chain(spec.ipv6.iter()) {
        let wanted = (assignment.address, assignment.prefix_len);
        if !addresses.contains(&wanted) {
            problems.push(format!(
                "{name} lacks address {}/{}",
                assignment.address, assignment.prefix_len
            ));
        }
    }
    let mut wanted_routes = Vec::new();
    if let Some(v4) = &spec.ipv4 {
        wanted_routes.push((AddressFamily::Inet, v4.gateway));
    }
    if let Some(v6) = &spec.ipv6 {
        wanted_routes.push((AddressFamily::Inet6, v6.gateway));
    }
    for (family, gateway) in wanted_routes {
        let routes = rtnl.routes(family)?;
        let default = routes
            .iter()
            .any(|r| r.prefix_len == 0 && r.gateway == Some(gateway) && r.oif == Some(link.index));
        if !default {
            problems.push(format!("no default route via {gateway} dev {name}"));
        }
        if gateway.is_ipv4() {
            let on_link = routes
                .iter()
                .any(|r| r.dst == Some(gateway) && r.prefix_len == 32 && r.oif == Some(link.index));
            if !on_link {
                problems.push(format!("no on-link route to {gateway} dev {name}"));
            }
        }
    }
    let active = ethtool::active_features(link.index)
        .map_err(|e| NetError::io(format!("reading the features of {name}"), e))?;
    let on: Vec<&str> = ethtool::TX_CHECKSUM_FEATURES
        .iter()
        .copied()
        .filter(|f| active.iter().any(|a| a == f))
        .collect();
    if !on.is_empty() {
        problems.push(format!("{name} still has {} on", on.join(", ")));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WireSpec {
        WireSpec {
            host_ifname: "lxc0123456789a".into(),
            container_ifname: "eth0".into(),
            netns_path: "/proc/1/ns/net".into(),
            mtu: 1500,
            queues: 1,
            ipv4: Some(IpAssignment {
                address: "10.244.0.5".parse().unwrap(),
                prefix_len: 32,
                gateway: "10.244.0.1".parse().unwrap(),
            }),
            ipv6: Some(IpAssignment {
                address: "fd00::5".parse().unwrap(),
                prefix_len: 128,
                gateway: "fe80::1".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn validate_rejects_what_the_kernel_would_refuse_halfway() {
        assert_eq!(spec().validate(), Ok(()));
        let mut s = spec();
        s.ipv4 = None;
        s.ipv6 = None;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.ipv4.as_mut().unwrap().gateway = "fe80::1".parse().unwrap();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.ipv4.as_mut().unwrap().gateway = "0.0.0.0".parse().unwrap();
        assert!(s.validate().is_err(), "no gateway is no usable gateway");
        let mut s = spec();
        s.mtu = 1200;
        assert!(s.validate().unwrap_err().contains("1280"));
        s.ipv6 = None;
        assert_eq!(s.validate(), Ok(()));
        let mut s = spec();
        s.host_ifname = "lxc0123456789abc".into();
        assert!(s.validate().is_err());
    }
}
