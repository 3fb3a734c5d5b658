//! Engine flow events -> Hubble flows: the engine says what happened to a
//! frame (tuple, verdict, conntrack, service, policy rules by name), the
//! agent adds who the two ends are ([`FlowContext`]) and writes it in
//! Hubble's shape, following Hubble's own decoding rules where they apply:
//!
//! * `IP` / `l4` show the tuple as delivered (after service DNAT or reverse
//!   NAT); a masqueraded flow keeps the pod as `IP.source` with the node
//!   address in `source_xlated`, as Hubble shows SNAT. `sluice.original`
//!   keeps the tuple as received whenever a translation changed it.
//! * The source endpoint is the frame's real sender (the received source),
//!   the destination its real receiver (the delivered destination), so a
//!   service reply names the backend pod even though `IP.source` is the
//!   frontend.
//! * `traffic_direction` is relative to the local endpoint where the event
//!   is observed; trace events flip it for replies, drops do not (Hubble
//!   cannot know whether a dropped frame was a reply); policy verdicts and
//!   policy drops carry the direction of the decision. A policy verdict on
//!   a connection both of whose ends enforce policy becomes two flows, one
//!   per direction, as Cilium reports one per endpoint.
//! * `is_reply` is set on trace events with a conntrack view, on forwarded
//!   policy verdicts (false: verdicts are taken on first packets) and on
//!   DNS flows; never on drops.

use sluice_api::events::{
    CtState, Direction, EngineFlow, FlowKind, FlowTuple, FlowVerdict, RuleRef,
};
use sluice_api::hubble::{
    self, drop_reason, CiliumEventType, Dns, Endpoint, Flow, Icmp, Ip, Layer4, Layer7,
    NetworkInterface, Policy, Service, SluiceFlowInfo, Tcp, TcpFlags, TupleText, Udp,
};

use super::context::{FlowContext, Peer};
use super::summary;

/// Hubble's event types.
pub const EVENT_DROP: i32 = 1;
pub const EVENT_TRACE: i32 = 4;
pub const EVENT_POLICY_VERDICT: i32 = 5;
pub const EVENT_L7: i32 = 129;

/// `observation_source` of DNS flows (Cilium's is its DNS proxy).
pub const DNS_OBSERVATION_SOURCE: &str = "sluice-engine";

/// Where a forwarded frame went: Cilium's trace observation points TO_*
/// (the trace event's sub type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveredTo {
    Endpoint,
    Stack,
    Network,
}

impl DeliveredTo {
    fn name(self) -> &'static str {
        match self {
            DeliveredTo::Endpoint => "TO_ENDPOINT",
            DeliveredTo::Stack => "TO_STACK",
            DeliveredTo::Network => "TO_NETWORK",
        }
    }

    fn sub_type(self) -> i32 {
        match self {
            DeliveredTo::Endpoint => 0,
            DeliveredTo::Stack => 3,
            DeliveredTo::Network => 11,
        }
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "INGRESS",
        Direction::Egress => "EGRESS",
    }
}

/// The Hubble flows for one engine event (two for a policy verdict decided
/// in both directions, else one).
pub fn enrich(event: &EngineFlow, ctx: &FlowContext) -> Vec<Flow> {
    let base = base_flow(event, ctx);
    if event.kind != FlowKind::PolicyVerdict {
        return vec![base];
    }
    let Some(policy) = &event.policy else {
        return vec![base];
    };
    let directions: Vec<Direction> = match policy.denied_direction {
        Some(denied) => vec![denied],
        None => [
            (policy.egress_enforced, Direction::Egress),
            (policy.ingress_enforced, Direction::Ingress),
        ]
        .into_iter()
        .filter_map(|(enforced, d)| enforced.then_some(d))
        .collect(),
    };
    if directions.len() < 2 {
        return vec![with_direction_only(base, directions.first().copied())];
    }
    directions
        .into_iter()
        .map(|d| with_direction_only(base.clone(), Some(d)))
        .collect()
}

/// A policy verdict flow about one direction: that direction, and only that
/// direction's rules.
fn with_direction_only(mut flow: Flow, direction: Option<Direction>) -> Flow {
    if let Some(d) = direction {
        flow.traffic_direction = direction_name(d).into();
        match d {
            Direction::Egress => flow.ingress_allowed_by.clear(),
            Direction::Ingress => flow.egress_allowed_by.clear(),
        }
    }
    flow
}

fn text_tuple(t: &FlowTuple) -> TupleText {
    TupleText {
        source: t.src.to_string(),
        destination: t.dst.to_string(),
        source_port: t.src_port.into(),
        destination_port: t.dst_port.into(),
    }
}

fn endpoint(peer: Peer) -> Endpoint {
    Endpoint {
        id: peer.endpoint_id,
        identity: peer.identity,
        namespace: peer.namespace,
        labels: peer.labels,
        pod_name: peer.pod_name,
        ..Default::default()
    }
}

fn tcp_flags(byte: u8) -> TcpFlags {
    TcpFlags {
        FIN: byte & 0x01 != 0,
        SYN: byte & 0x02 != 0,
        RST: byte & 0x04 != 0,
        PSH: byte & 0x08 != 0,
        ACK: byte & 0x10 != 0,
        URG: byte & 0x20 != 0,
        ECE: byte & 0x40 != 0,
        CWR: byte & 0x80 != 0,
        NS: false,
    }
}

fn layer4(tuple: &FlowTuple, event: &EngineFlow) -> Option<Layer4> {
    let ports = Udp {
        source_port: tuple.src_port.into(),
        destination_port: tuple.dst_port.into(),
    };
    let icmp = event.icmp.map(|(t, c)| Icmp {
        icmp_type: t.into(),
        code: c.into(),
    });
    match tuple.protocol {
        6 => Some(Layer4 {
            tcp: Some(Tcp {
                source_port: ports.source_port,
                destination_port: ports.destination_port,
                flags: Some(tcp_flags(event.tcp_flags)),
            }),
            ..Default::default()
        }),
        17 => Some(Layer4 {
            udp: Some(ports),
            ..Default::default()
        }),
        132 => Some(Layer4 {
            sctp: Some(ports),
            ..Default::default()
        }),
        1 => Some(Layer4 {
            icmpv4: Some(icmp.unwrap_or_default()),
            ..Default::default()
        }),
        58 => Some(Layer4 {
            icmpv6: Some(icmp.unwrap_or_default()),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Hubble's `Policy` for a rule: labels as Cilium derives them.
pub fn policy(rule: &RuleRef, ctx: &FlowContext) -> Policy {
    let mut labels = vec![
        format!("k8s:io.cilium.k8s.policy.derived-from={}", rule.kind),
        format!("k8s:io.cilium.k8s.policy.name={}", rule.name),
    ];
    if !rule.namespace.is_empty() {
        labels.push(format!(
            "k8s:io.cilium.k8s.policy.namespace={}",
            rule.namespace
        ));
    }
    if let Some(uid) = ctx.policy_uid(&rule.kind, &rule.namespace, &rule.name) {
        labels.push(format!("k8s:io.cilium.k8s.policy.uid={uid}"));
    }
    labels.sort();
    Policy {
        name: rule.name.clone(),
        namespace: rule.namespace.clone(),
        labels,
        revision: ctx.generation,
        kind: rule.kind.clone(),
    }
}

fn service(name: &str) -> Service {
    match name.split_once('/') {
        Some((namespace, name)) => Service {
            name: name.into(),
            namespace: namespace.into(),
        },
        None => Service {
            name: name.into(),
            namespace: String::new(),
        },
    }
}

fn layer7(event: &EngineFlow) -> Option<Layer7> {
    let dns = event.dns.as_ref()?;
    let mut rrtypes: Vec<String> = Vec::new();
    for ip in &dns.ips {
        let t = if ip.is_ipv4() { "A" } else { "AAAA" };
        if !rrtypes.iter().any(|r| r == t) {
            rrtypes.push(t.into());
        }
    }
    Some(Layer7 {
        l7_type: if dns.is_response {
            "RESPONSE"
        } else {
            "REQUEST"
        }
        .into(),
        latency_ns: 0,
        dns: Some(Dns {
            query: format!("{}.", dns.query),
            ips: dns.ips.iter().map(|ip| ip.to_string()).collect(),
            ttl: dns.ttl,
            cnames: Vec::new(),
            observation_source: DNS_OBSERVATION_SOURCE.into(),
            rcode: dns.rcode.into(),
            qtypes: vec![summary::qtype_name(dns.qtype)],
            rrtypes,
        }),
    })
}

fn base_flow(event: &EngineFlow, ctx: &FlowContext) -> Flow {
    let is_dns = event.kind == FlowKind::Dns;
    let delivered = event.translated.or(event.original);
    let mut flow = Flow {
        time: hubble::format_time(event.time_unix_ns),
        verdict: match event.verdict {
            FlowVerdict::Forwarded => "FORWARDED",
            FlowVerdict::Dropped => "DROPPED",
        }
        .into(),
        flow_type: if is_dns { "L7" } else { "L3_L4" }.into(),
        node_name: ctx.node_name.clone(),
        ..Default::default()
    };

    // Conntrack's view: a DNS answer is a reply whatever the engine tracked.
    let reply = match event.kind {
        FlowKind::Dns => event.dns.as_ref().map(|d| d.is_response),
        FlowKind::Trace if event.ct != CtState::Untracked => Some(event.ct == CtState::Reply),
        FlowKind::PolicyVerdict if event.verdict == FlowVerdict::Forwarded => Some(false),
        _ => None,
    };
    flow.is_reply = reply;
    flow.reply = reply == Some(true);

    if let (Some(original), Some(shown)) = (event.original, delivered) {
        let masquerade = event.service.is_none()
            && matches!(event.ct, CtState::New | CtState::Established)
            && shown.src != original.src;
        flow.ip = Some(Ip {
            source: if masquerade { original.src } else { shown.src }.to_string(),
            source_xlated: if masquerade {
                shown.src.to_string()
            } else {
                String::new()
            },
            destination: shown.dst.to_string(),
            ip_version: if shown.dst.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        });
        flow.l4 = layer4(&shown, event);
        flow.source = Some(endpoint(ctx.sender(original.src, event.ingress_ifindex)));
        flow.destination = Some(endpoint(ctx.peer(shown.dst)));
        if event.translated.is_some() {
            flow.sluice.get_or_insert_with(Default::default).original = Some(text_tuple(&original));
        }
        flow.traffic_direction = traffic_direction(event, ctx, &original, &shown, reply)
            .map(|d| direction_name(d).to_string())
            .unwrap_or_default();
        flow.summary = match (&event.dns, is_dns) {
            (Some(_), true) => String::new(),
            _ => summary::l4_summary(
                shown.protocol,
                flow.l4
                    .as_ref()
                    .and_then(|l| l.tcp.as_ref())
                    .and_then(|t| t.flags.as_ref()),
                event.icmp,
            ),
        };
    }

    if let Some(name) = &event.service {
        if reply == Some(true) {
            flow.source_service = Some(service(name));
        } else {
            flow.destination_service = Some(service(name));
        }
    }

    let observation = (event.kind == FlowKind::Trace).then(|| observation_point(event, ctx));
    flow.event_type = Some(match event.kind {
        FlowKind::Trace => CiliumEventType {
            event_type: EVENT_TRACE,
            sub_type: observation.map_or(0, DeliveredTo::sub_type),
        },
        FlowKind::Drop => CiliumEventType {
            event_type: EVENT_DROP,
            sub_type: 0,
        },
        FlowKind::PolicyVerdict => CiliumEventType {
            event_type: EVENT_POLICY_VERDICT,
            sub_type: 0,
        },
        FlowKind::Dns => CiliumEventType {
            event_type: EVENT_L7,
            sub_type: 0,
        },
    });
    if let Some(point) = observation {
        flow.trace_observation_point = point.name().into();
        flow.trace_reason = match event.ct {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Reply => "REPLY",
            CtState::Untracked => "",
        }
        .into();
    }

    if !is_dns {
        flow.interface = match (event.kind, event.egress_ifindex) {
            (FlowKind::Trace, Some(index)) => Some(NetworkInterface {
                index,
                name: event.egress_ifname.clone(),
            }),
            (FlowKind::Drop | FlowKind::PolicyVerdict, _) if event.ingress_ifindex != 0 => {
                Some(NetworkInterface {
                    index: event.ingress_ifindex,
                    name: event.ingress_ifname.clone(),
                })
            }
            _ => None,
        };
    }

    if let Some(drop) = &event.drop_reason {
        let (desc, number) = drop_reason::to_hubble(drop.number, &drop.name);
        if !is_dns {
            flow.drop_reason_desc = desc.into();
            flow.drop_reason = number;
            if let Some(t) = flow
                .event_type
                .as_mut()
                .filter(|t| t.event_type == EVENT_DROP)
            {
                t.sub_type = number as i32;
            }
        }
        flow.sluice.get_or_insert_with(Default::default).drop_reason = drop.name.clone();
    }

    if let Some(outcome) = &event.policy {
        if event.kind == FlowKind::PolicyVerdict && event.verdict == FlowVerdict::Forwarded {
            flow.egress_allowed_by = outcome
                .egress_allowed_by
                .iter()
                .map(|r| policy(r, ctx))
                .collect();
            flow.ingress_allowed_by = outcome
                .ingress_allowed_by
                .iter()
                .map(|r| policy(r, ctx))
                .collect();
        }
        if let Some(denied) = outcome.denied_direction {
            let blamed: Vec<Policy> = outcome.denied_by.iter().map(|r| policy(r, ctx)).collect();
            match denied {
                Direction::Egress => flow.egress_denied_by = blamed,
                Direction::Ingress => flow.ingress_denied_by = blamed,
            }
            flow.traffic_direction = direction_name(denied).into();
        }
    }

    if let Some(l7) = layer7(event) {
        if let (Some(dns), Some(d)) = (&l7.dns, &event.dns) {
            flow.summary = summary::dns_summary(dns, d.is_response);
        }
        flow.l7 = Some(l7);
    }

    let info = flow.sluice.get_or_insert_with(SluiceFlowInfo::default);
    info.worker = event.worker;
    info.len = event.len;
    flow
}

/// Where a forwarded frame was last seen: delivered to a local endpoint,
/// sent out the uplink, or handed to the node's stack.
fn observation_point(event: &EngineFlow, ctx: &FlowContext) -> DeliveredTo {
    match event.egress_ifindex {
        Some(i) if ctx.is_endpoint_interface(i) => DeliveredTo::Endpoint,
        _ if event.to_uplink => DeliveredTo::Network,
        _ => DeliveredTo::Stack,
    }
}

/// Hubble's direction rule (see the module docs); None when neither end is
/// a local endpoint.
fn traffic_direction(
    event: &EngineFlow,
    ctx: &FlowContext,
    original: &FlowTuple,
    delivered: &FlowTuple,
    reply: Option<bool>,
) -> Option<Direction> {
    let src_local = ctx.is_local(original.src);
    let dst_local = ctx.is_local(delivered.dst);
    // Is the observing endpoint the frame's source?
    let at_source = match event.kind {
        FlowKind::Trace
            if event
                .egress_ifindex
                .is_some_and(|i| ctx.is_endpoint_interface(i)) =>
        {
            false
        }
        _ if src_local => true,
        _ if dst_local => false,
        _ => return None,
    };
    let flip = match event.kind {
        FlowKind::Drop => false,
        _ => reply == Some(true),
    };
    Some(if at_source != flip {
        Direction::Egress
    } else {
        Direction::Ingress
    })
}
