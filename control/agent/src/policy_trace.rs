//! `sluice policy trace`: the policy verdict for one new connection,
//! computed on the agent's current desired state with the code the engine
//! runs (`sluice_tables::IpCache` for the peers' identities,
//! `sluice_tables::PolicyTables::lookup` for each direction).
//!
//! Both ends are resolved to an address of one family and an identity (the
//! ipcache's longest prefix match; world-ipv4 / world-ipv6 when nothing
//! covers the address) and, when the address is a local endpoint's, to that
//! endpoint. A destination that is a Service frontend is translated to each
//! of the backends the engine would pick from (ready ones, else terminating
//! ones) and each is traced, with the backend's port, as the engine checks
//! policy after the service translation. The source's egress is looked up
//! when the source is local, the destination's ingress when it is; traffic
//! from the host to a local endpoint passes ingress with
//! `--allow-localhost=always`, as in the engine.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_api::agent::{
    DirectionTrace, PolicyTrace, TraceDecision, TracePath, TracePeer, TraceProtocol, TraceRequest,
};
use sluice_tables::policy::identity;
use sluice_tables::{
    BackendState, Decision, IpCache, L4Protocol, Peer, PolicyDirection, PolicyQuery, PolicyTables,
    Service,
};

use crate::desired::{pod_ips, Desired};
use crate::objects::{Kind, Object};
use crate::policy::policy_label;
use crate::store::Store;

/// Why a connection could not be traced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    #[error("{side} {text:?}: no local endpoint or pod of that name (give namespace/pod, an IP address, world or host)")]
    UnknownPeer { side: &'static str, text: String },
    #[error("{side} {text:?} has no address (the pod is not running or not addressed yet)")]
    NoAddress { side: &'static str, text: String },
    #[error("the source and the destination have no address family in common")]
    NoCommonFamily,
    #[error("--dport is needed for {0}")]
    NoPort(&'static str),
    #[error("the desired policy state does not build: {0}")]
    BadState(String),
}

/// One end as asked, before the family is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// An address no ipcache entry covers (`world`).
    World,
    /// This node (`host`): its InternalIP of the family, if known.
    Host,
    /// An address as given.
    Addr(IpAddr),
    /// A local endpoint or a pod, by name, with its addresses.
    Named {
        v4: Option<IpAddr>,
        v6: Option<IpAddr>,
    },
}

impl End {
    fn address(&self, v6: bool) -> Option<IpAddr> {
        match self {
            End::World | End::Host => Some(if v6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }),
            End::Addr(ip) => (ip.is_ipv6() == v6).then_some(*ip),
            End::Named { v4, v6: six } => {
                if v6 {
                    *six
                } else {
                    *v4
                }
            }
        }
    }
}

fn resolve_end(
    desired: &Desired,
    store: &Store,
    side: &'static str,
    text: &str,
) -> Result<End, TraceError> {
    let text = text.trim();
    if let Some(e) = desired.endpoints.iter().find(|e| e.name == text) {
        // A registered endpoint's addresses are the ones the engine serves.
        if e.host_ifname.is_some() {
            return Ok(End::Named {
                v4: e.ipv4,
                v6: e.ipv6,
            });
        }
    }
    match text {
        "world" => return Ok(End::World),
        "host" => return Ok(End::Host),
        _ => {}
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(End::Addr(ip));
    }
    let unknown = || TraceError::UnknownPeer {
        side,
        text: text.to_string(),
    };
    let (namespace, name) = text.split_once('/').ok_or_else(unknown)?;
    let Some(Object::Pod(pod)) = store.get(Kind::Pod, namespace, name) else {
        return Err(unknown());
    };
    let ips = pod_ips(pod);
    if ips.is_empty() {
        return Err(TraceError::NoAddress {
            side,
            text: text.to_string(),
        });
    }
    Ok(End::Named {
        v4: ips.iter().copied().find(IpAddr::is_ipv4),
        v6: ips.iter().copied().find(IpAddr::is_ipv6),
    })
}

/// The family both ends have: IPv4 when both can, else IPv6.
fn family(src: &End, dst: &End) -> Result<bool, TraceError> {
    [false, true]
        .into_iter()
        .find(|&v6| src.address(v6).is_some() && dst.address(v6).is_some())
        .ok_or(TraceError::NoCommonFamily)
}

struct View<'a> {
    desired: &'a Desired,
    ipcache: IpCache,
    tables: PolicyTables,
}

impl View<'_> {
    fn world(v6: bool) -> u32 {
        if v6 {
            identity::WORLD_IPV6
        } else {
            identity::WORLD_IPV4
        }
    }

    fn endpoint_at(&self, ip: IpAddr) -> Option<String> {
        self.desired
            .state
            .endpoints
            .iter()
            .find(|e| e.ipv4.map(IpAddr::V4) == Some(ip) || e.ipv6.map(IpAddr::V6) == Some(ip))
            .map(|e| e.name.clone())
    }

    /// This node's address of the family (an ipcache entry of identity host).
    fn host_addr(&self, v6: bool) -> Option<IpAddr> {
        self.desired
            .state
            .ipcache
            .iter()
            .find(|e| {
                e.identity == identity::HOST && e.prefix_len.is_none() && e.ip.is_ipv6() == v6
            })
            .map(|e| e.ip)
    }

    fn peer(&self, name: &str, end: &End, v6: bool) -> TracePeer {
        match end {
            End::World => TracePeer {
                name: name.to_string(),
                addr: end.address(v6).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                identity: View::world(v6),
                endpoint: None,
            },
            End::Host => TracePeer {
                name: name.to_string(),
                addr: self
                    .host_addr(v6)
                    .or(end.address(v6))
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                identity: identity::HOST,
                endpoint: None,
            },
            End::Addr(_) | End::Named { .. } => {
                let addr = end.address(v6).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                TracePeer {
                    name: name.to_string(),
                    addr,
                    identity: self.ipcache.identity_of(addr),
                    endpoint: self.endpoint_at(addr),
                }
            }
        }
    }

    fn direction(
        &self,
        endpoint: &str,
        direction: PolicyDirection,
        peer: &TracePeer,
        protocol: u8,
        port: u16,
    ) -> DirectionTrace {
        let state = self.tables.state();
        if direction == PolicyDirection::Ingress
            && peer.identity == identity::HOST
            && state.config.allow_localhost
        {
            return DirectionTrace {
                endpoint: endpoint.to_string(),
                decision: TraceDecision::AllowedLocalhost,
                rule: None,
                dns: false,
                selected_by: Vec::new(),
            };
        }
        let query = PolicyQuery {
            peer_identity: peer.identity,
            peer_addr: peer.addr,
            protocol,
            port,
        };
        // toFQDNs peers are known only to the engine's DNS cache.
        let decision = self
            .tables
            .lookup(endpoint, direction, &query, &|_, _| false);
        let origin = |rule: u32| state.rules.get(rule as usize).cloned();
        let (decision, rule, dns) = match decision {
            Decision::NotEnforced => (TraceDecision::NotEnforced, None, false),
            Decision::Allowed { rule, dns } => {
                (TraceDecision::Allowed, origin(rule), dns.is_some())
            }
            Decision::Denied { rule } => (TraceDecision::Denied, origin(rule), false),
            Decision::NoAllowRule { rule } => {
                (TraceDecision::NoAllowRule, rule.and_then(origin), false)
            }
        };
        let selected_by = if decision == TraceDecision::NoAllowRule {
            self.desired
                .policies
                .iter()
                .filter(|p| p.endpoints.iter().any(|e| e == endpoint))
                .map(|p| policy_label(&p.kind, &p.namespace, &p.name))
                .collect()
        } else {
            Vec::new()
        };
        DirectionTrace {
            endpoint: endpoint.to_string(),
            decision,
            rule,
            dns,
            selected_by,
        }
    }

    /// Whether an endpoint's table in `direction` has toFQDNs entries.
    fn has_fqdn_entries(&self, endpoint: &str, direction: PolicyDirection) -> bool {
        let state = self.tables.state();
        state
            .endpoints
            .iter()
            .filter(|e| e.endpoint == endpoint)
            .filter_map(|e| {
                let index = match direction {
                    PolicyDirection::Ingress => e.ingress,
                    PolicyDirection::Egress => e.egress,
                };
                state.tables.get(index as usize)
            })
            .any(|t| t.entries.iter().any(|x| matches!(x.peer, Peer::Fqdn(_))))
    }

    fn path(&self, src: &TracePeer, dst: TracePeer, protocol: u8, port: u16) -> TracePath {
        let egress = src
            .endpoint
            .as_deref()
            .map(|e| self.direction(e, PolicyDirection::Egress, &dst, protocol, port));
        let ingress = dst
            .endpoint
            .as_deref()
            .map(|e| self.direction(e, PolicyDirection::Ingress, src, protocol, port));
        let allowed = egress.iter().chain(&ingress).all(|d| d.decision.allows());
        TracePath {
            dst,
            protocol,
            port,
            egress,
            ingress,
            allowed,
        }
    }

    /// The service whose frontend is `addr:port` for `protocol`, if any.
    fn service_at(&self, addr: IpAddr, port: u16, protocol: u8) -> Option<&Service> {
        let l4 = match protocol {
            6 => L4Protocol::Tcp,
            17 => L4Protocol::Udp,
            132 => L4Protocol::Sctp,
            _ => return None,
        };
        self.desired.state.services.iter().find(|s| {
            s.protocol == l4 && s.frontends.iter().any(|f| f.addr == addr && f.port == port)
        })
    }
}

/// Traces `request` on `desired` (`store` resolves pods that are not local
/// endpoints to their addresses).
pub fn trace(
    desired: &Desired,
    store: &Store,
    request: &TraceRequest,
) -> Result<PolicyTrace, TraceError> {
    let src_end = resolve_end(desired, store, "--src", &request.src)?;
    let dst_end = resolve_end(desired, store, "--dst", &request.dst)?;
    let v6 = family(&src_end, &dst_end)?;
    let view = View {
        desired,
        ipcache: IpCache::build(&desired.state.ipcache)
            .map_err(|e| TraceError::BadState(e.to_string()))?,
        tables: PolicyTables::build(&desired.state.policy)
            .map_err(|e| TraceError::BadState(e.to_string()))?,
    };
    let (protocol, port) = match request.protocol {
        TraceProtocol::Tcp => (6, request.dport.ok_or(TraceError::NoPort("tcp"))?),
        TraceProtocol::Udp => (17, request.dport.ok_or(TraceError::NoPort("udp"))?),
        TraceProtocol::Sctp => (132, request.dport.ok_or(TraceError::NoPort("sctp"))?),
        // The "port" of an ICMP rule is the type; echo request by default.
        TraceProtocol::Icmp if v6 => (58, request.dport.unwrap_or(128)),
        TraceProtocol::Icmp => (1, request.dport.unwrap_or(8)),
    };
    let src = view.peer(request.src.trim(), &src_end, v6);
    let dst = view.peer(request.dst.trim(), &dst_end, v6);
    let mut notes = Vec::new();
    let (service, paths) = match view.service_at(dst.addr, port, protocol) {
        Some(service) => {
            let ready: Vec<_> = service
                .backends
                .iter()
                .filter(|b| b.state == BackendState::Ready)
                .collect();
            let candidates = if ready.is_empty() {
                service
                    .backends
                    .iter()
                    .filter(|b| b.state == BackendState::Terminating)
                    .collect()
            } else {
                ready
            };
            if candidates.is_empty() {
                notes.push(format!(
                    "service {} has no backend: the engine answers service_no_backend",
                    service.name
                ));
            }
            let paths = candidates
                .into_iter()
                .filter(|b| b.addr.is_ipv6() == v6)
                .map(|b| {
                    let end = End::Addr(b.addr);
                    let name = view.endpoint_at(b.addr).unwrap_or(b.addr.to_string());
                    view.path(&src, view.peer(&name, &end, v6), protocol, b.port)
                })
                .collect();
            (Some(service.name.clone()), paths)
        }
        None => (None, vec![view.path(&src, dst.clone(), protocol, port)]),
    };
    if src.endpoint.is_none() && paths.iter().all(|p| p.dst.endpoint.is_none()) {
        notes.push(
            "neither end is an endpoint on this node: this node enforces nothing for it".into(),
        );
    }
    let fqdn = src
        .endpoint
        .as_deref()
        .is_some_and(|e| view.has_fqdn_entries(e, PolicyDirection::Egress));
    if fqdn {
        notes.push(
            "toFQDNs rules were not evaluated: the addresses they allow are known only to the \
             engine's DNS cache"
                .into(),
        );
    }
    let allowed = !paths.is_empty() && paths.iter().all(|p| p.allowed);
    Ok(PolicyTrace {
        src,
        dst,
        service,
        paths,
        allowed,
        notes,
    })
}
