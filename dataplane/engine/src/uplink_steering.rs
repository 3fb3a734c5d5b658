//! What the uplink program steers to the engine besides the pod CIDRs: the node's
//! own addresses with the service ports served on them (NodePorts, hostPorts),
//! whole addresses that only services use (LoadBalancer ingress IPs, externalIPs,
//! hostIPs that are not node addresses), and the masquerade port range whose
//! replies come back to the node addresses.
//!
//! Kept in step with every published state by applying the difference to the
//! program's maps, so a service change never re-attaches the uplink (established
//! flows keep going). ClusterIPs are not steered: they are not reachable from
//! outside the cluster (Cilium's `bpf.lbExternalClusterIP` default).

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Context;
use sluice_tables::{FrontendKind, L4Protocol, Tables};
use sluice_xdp::{L4Proto, PortKind, UplinkProgram};

/// The steering wanted for one state (or applied so far).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UplinkSteering {
    /// Frames to these go to the kernel unless their port is in `ports`.
    pub node_addrs: BTreeSet<IpAddr>,
    /// Every frame to these goes to the engine.
    pub service_addrs: BTreeSet<IpAddr>,
    /// (protocol, port) the engine owns on every node address.
    pub ports: BTreeSet<(L4Protocol, u16)>,
    /// The masquerade source-port range, when masquerading is on.
    pub masquerade: Option<(u16, u16)>,
}

impl UplinkSteering {
    /// What `tables` needs steered; empty without an uplink.
    pub fn desired(tables: &Tables) -> UplinkSteering {
        let mut steering = UplinkSteering::default();
        let Some(uplink) = &tables.uplink else {
            return steering;
        };
        steering.node_addrs = uplink.addrs.iter().copied().collect();
        for entry in tables.services.iter() {
            let service = &entry.service;
            for frontend in &service.frontends {
                match frontend.kind {
                    FrontendKind::ClusterIp => {}
                    FrontendKind::NodePort | FrontendKind::HostPort
                        if steering.node_addrs.contains(&frontend.addr) =>
                    {
                        steering.ports.insert((service.protocol, frontend.port));
                    }
                    FrontendKind::NodePort
                    | FrontendKind::HostPort
                    | FrontendKind::LoadBalancer
                    | FrontendKind::ExternalIp => {
                        steering.service_addrs.insert(frontend.addr);
                    }
                }
            }
        }
        steering.masquerade = tables
            .lb
            .masquerade
            .as_ref()
            .map(|m| (m.port_min, m.port_max));
        steering
    }

    /// Changes `program`'s maps from `self` (what is applied) to `next`:
    /// removals first, then additions. Returns what is applied afterwards, which
    /// is `next` unless an update failed (the error says which).
    pub fn apply(
        &self,
        next: &UplinkSteering,
        program: &mut UplinkProgram,
    ) -> (UplinkSteering, anyhow::Result<()>) {
        let mut applied = self.clone();
        let result = (|| -> anyhow::Result<()> {
            for &(protocol, port) in self.ports.difference(&next.ports) {
                program
                    .remove_port(xdp_proto(protocol), port)
                    .with_context(|| format!("stop steering {protocol:?} port {port}"))?;
                applied.ports.remove(&(protocol, port));
            }
            for addr in self.service_addrs.difference(&next.service_addrs) {
                program
                    .remove_address(*addr)
                    .with_context(|| format!("stop steering service address {addr}"))?;
                applied.service_addrs.remove(addr);
            }
            for addr in self.node_addrs.difference(&next.node_addrs) {
                program
                    .remove_node_address(*addr)
                    .with_context(|| format!("forget node address {addr}"))?;
                applied.node_addrs.remove(addr);
            }
            for addr in next.node_addrs.difference(&self.node_addrs) {
                program
                    .add_node_address(*addr)
                    .with_context(|| format!("add node address {addr}"))?;
                applied.node_addrs.insert(*addr);
            }
            for addr in next.service_addrs.difference(&self.service_addrs) {
                program
                    .add_address(*addr)
                    .with_context(|| format!("steer service address {addr}"))?;
                applied.service_addrs.insert(*addr);
            }
            for &(protocol, port) in next.ports.difference(&self.ports) {
                program
                    .add_port(xdp_proto(protocol), port, PortKind::NodePort)
                    .with_context(|| format!("steer {protocol:?} port {port} on node addresses"))?;
                applied.ports.insert((protocol, port));
            }
            if self.masquerade != next.masquerade {
                program
                    .set_masquerade_range(next.masquerade)
                    .context("set the masquerade port range")?;
                applied.masquerade = next.masquerade;
            }
            Ok(())
        })();
        (applied, result)
    }
}

fn xdp_proto(protocol: L4Protocol) -> L4Proto {
    match protocol {
        L4Protocol::Tcp => L4Proto::Tcp,
        L4Protocol::Udp => L4Proto::Udp,
        L4Protocol::Sctp => L4Proto::Sctp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tables::{
        Backend, BackendState, Cidr, Frontend, LbConfig, MacAddr, Masquerade, NodeState, Service,
        Uplink,
    };

    fn service(id: u32, protocol: L4Protocol, frontends: Vec<Frontend>) -> Service {
        Service {
            id,
            name: format!("default/s{id}"),
            port_name: String::new(),
            protocol,
            frontends,
            backends: vec![Backend {
                id: id * 10,
                addr: "10.200.0.2".parse().unwrap(),
                port: 8080,
                state: BackendState::Ready,
                local: true,
            }],
            algorithm: Default::default(),
            affinity_timeout_s: None,
            external_traffic_local: false,
            internal_traffic_local: false,
            source_ranges: Vec::new(),
        }
    }

    fn frontend(kind: FrontendKind, addr: &str, port: u16) -> Frontend {
        Frontend {
            kind,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    fn tables(services: Vec<Service>, masquerade: bool) -> Tables {
        let mut state = NodeState::empty();
        state.uplink = Some(Uplink {
            ifname: "uplink0".into(),
            ifindex: 9,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            next_hop_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            pod_cidrs: vec![Cidr::parse("10.200.0.0/24").unwrap()],
            addrs: vec!["192.168.254.1".parse().unwrap()],
        });
        state.services = services;
        state.lb = LbConfig {
            masquerade: masquerade.then(|| Masquerade {
                addrs: vec!["192.168.254.1".parse().unwrap()],
                port_min: 61000,
                port_max: 65535,
                non_masquerade_cidrs: Vec::new(),
            }),
            ..LbConfig::default()
        };
        Tables::build(state).unwrap()
    }

    #[test]
    fn node_ports_on_node_addresses_and_whole_addresses_for_lb_and_external_ips() {
        let t = tables(
            vec![
                service(
                    1,
                    L4Protocol::Tcp,
                    vec![
                        frontend(FrontendKind::ClusterIp, "10.96.0.10", 80),
                        frontend(FrontendKind::NodePort, "192.168.254.1", 30080),
                        frontend(FrontendKind::LoadBalancer, "192.168.250.10", 80),
                    ],
                ),
                service(
                    2,
                    L4Protocol::Udp,
                    vec![
                        frontend(FrontendKind::NodePort, "192.168.254.1", 30053),
                        frontend(FrontendKind::ExternalIp, "192.168.250.11", 53),
                        // A hostIP that is not a node address: the whole address.
                        frontend(FrontendKind::HostPort, "192.168.250.12", 8053),
                    ],
                ),
            ],
            true,
        );
        let want = UplinkSteering::desired(&t);
        assert_eq!(
            want.node_addrs,
            ["192.168.254.1".parse().unwrap()].into_iter().collect()
        );
        assert_eq!(
            want.ports,
            [(L4Protocol::Tcp, 30080), (L4Protocol::Udp, 30053)]
                .into_iter()
                .collect()
        );
        let addrs: Vec<String> = want.service_addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["192.168.250.10", "192.168.250.11", "192.168.250.12"]
        );
        assert_eq!(want.masquerade, Some((61000, 65535)));
    }

    #[test]
    fn nothing_is_steered_without_an_uplink_or_for_cluster_ips() {
        let mut t = tables(
            vec![service(
                1,
                L4Protocol::Tcp,
                vec![frontend(FrontendKind::ClusterIp, "10.96.0.10", 80)],
            )],
            false,
        );
        let only_cluster_ip = UplinkSteering::desired(&t);
        assert!(only_cluster_ip.ports.is_empty() && only_cluster_ip.service_addrs.is_empty());
        assert_eq!(only_cluster_ip.masquerade, None);
        t.uplink = None;
        assert_eq!(UplinkSteering::desired(&t), UplinkSteering::default());
    }
}
