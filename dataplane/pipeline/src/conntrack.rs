//! The conntrack stage: every IPv4/IPv6 packet with a flow key, from a pod or
//! from the uplink, after the family checks and before routing.
//!
//! 1. Tracked (`observe`): apply the entry's rewrites. A service flow whose
//!    backend is gone (not merely terminating) is removed and handled as new,
//!    so removing one backend moves only the flows that were on it.
//! 2. New, to a service frontend: [`service::choose`] a backend (source ranges,
//!    affinity, selection), DNAT to it; hairpin (client is the backend) also
//!    SNATs to the frontend address; outside traffic to a backend elsewhere is
//!    masqueraded so the replies return here. No backend: reject or drop.
//! 3. New, from a pod to outside the cluster: masquerade (SNAT to the node).
//! 4. Any other new flow is tracked without rewrites, if it is routable.
//! 5. ICMP errors about a tracked flow are translated so their receiver sees
//!    an error about the packet it sent.
//!
//! Network policy ([`policy`]) checks every new flow once its destination
//! is final (after the service choice, before the insert), re-checks a
//! tracked flow whose verdict is from an older policy revision, inspects
//! the DNS flows, and checks untracked packets (and ICMP errors about no
//! flow) one by one.
//!
//! Routing by the (new) destination is the caller's.

use core::net::{IpAddr, SocketAddr};

use sluice_conntrack::{flags, Direction, FlowKey, FlowTables, Rewrites, Seen};
use sluice_tables::{NoBackendResponse, Tables};
use sluice_wire::ip_protocol::{ICMPV6, SCTP, TCP, UDP};
use sluice_wire::{checksum, tcp};

use crate::flow_key::{self, Classified, QuotedPacket};
use crate::flows::{self, NewFlow};
use crate::icmp_error::ReplyLink;
use crate::nat::{self, End, Headers};
use crate::service::{self, Choice};
use crate::{masquerade, observe, policy, reject, route, DropReason, Verdict};
use crate::{CtOutcome, Observation};

/// Where the packet came from and what the stage may use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stage<'a> {
    pub tables: &'a Tables,
    pub flows: &'a FlowTables,
    pub now_ns: u64,
    pub from_uplink: bool,
    /// The ingress, and the MACs an answer to the sender uses.
    pub link: ReplyLink,
}

/// What the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Route by the packet's destination as it is now. `translated`: an
    /// address changed, so the packet may leave where it came in (hairpin) and
    /// outside traffic may leave through the uplink again.
    Route { translated: bool },
    /// The stage answered the packet itself (a reject).
    Answered(Verdict),
}

const UNTRANSLATED: Outcome = Outcome::Route { translated: false };

#[inline]
pub(crate) fn run(
    frame: &mut [u8],
    h: &Headers,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Outcome, DropReason> {
    match flow_key::classify(frame, h) {
        Classified::Untracked => Ok(untracked(frame, h, stage, observation)),
        Classified::IcmpError(quoted) => Ok(icmp_error(frame, h, &quoted, stage, observation)),
        Classified::Flow { key, tcp_flags } => flow(frame, h, &key, tcp_flags, stage, observation),
    }
}

/// A packet conntrack does not track is routed as it is, if policy lets it.
fn untracked(
    frame: &[u8],
    h: &Headers,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Outcome {
    match policy::untracked(frame, h, stage, observation) {
        Some(verdict) => Outcome::Answered(verdict),
        None => UNTRANSLATED,
    }
}

fn flow(
    frame: &mut [u8],
    h: &Headers,
    key: &FlowKey,
    tcp_flags: u8,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Outcome, DropReason> {
    let Stage {
        tables,
        flows,
        now_ns,
        ..
    } = *stage;
    if let Some(entry) = flows.conntrack.track(key, Seen { tcp_flags }, now_ns) {
        let backend_gone = entry.flags() & flags::SERVICE != 0
            && entry.direction() == Direction::Original
            && tables
                .services
                .backend(entry.service_id(), entry.backend_id())
                .is_none();
        if !backend_gone {
            observation.ct = match entry.direction() {
                Direction::Original => CtOutcome::Established,
                Direction::Reply => CtOutcome::Reply,
            };
            if entry.flags() & flags::SERVICE != 0 {
                observation.service = Some(entry.service_id());
            }
            if policy::needs_check(&entry, tables) {
                if let Some(verdict) = policy::tracked(frame, h, key, &entry, stage, observation) {
                    return Ok(Outcome::Answered(verdict));
                }
            }
            if !entry.has_rewrites() {
                return Ok(UNTRANSLATED);
            }
            return translate(frame, h, &entry.rewrites(), observation);
        }
        flows.conntrack.remove_flow(key);
    }
    new_flow(frame, h, key, tcp_flags, stage, observation)
}

/// A packet whose flow is not tracked: opens one (after the service choice
/// and the policy check), or is refused. Not inlined, so that the tracked
/// path above, which almost every packet takes, stays small.
#[inline(never)]
fn new_flow(
    frame: &mut [u8],
    h: &Headers,
    key: &FlowKey,
    tcp_flags: u8,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Outcome, DropReason> {
    let Stage {
        tables,
        flows,
        now_ns,
        ..
    } = *stage;
    // A reset opens nothing (the kernel marks it invalid); route it as it is.
    if key.protocol == TCP && tcp_flags & tcp::flags::RST != 0 {
        return Ok(UNTRANSLATED);
    }
    let external = if stage.from_uplink {
        flags::EXTERNAL
    } else {
        0
    };
    if matches!(key.protocol, TCP | UDP | SCTP) {
        if let Some((entry, frontend)) = tables.services.lookup(key.dst, key.dst_port, key.protocol)
        {
            observation.service = Some(entry.service.id);
            let backend = match service::choose(
                tables,
                flows,
                entry,
                frontend,
                key,
                stage.from_uplink,
                now_ns,
            )? {
                Choice::Backend(b) => b,
                Choice::NoBackend => return no_backend(frame, h, frontend.addr, stage),
            };
            let to = SocketAddr::new(backend.addr, backend.port);
            let admitted = match policy::admit_new(frame, h, key, to, stage, observation) {
                Ok(admitted) => admitted,
                Err(verdict) => return Ok(Outcome::Answered(verdict)),
            };
            let mut new = NewFlow {
                rewrites: Rewrites {
                    src: None,
                    dst: Some(to),
                },
                service_id: entry.service.id,
                backend_id: backend.id,
                flags: flags::SERVICE | external | admitted.flags,
                tcp_flags,
                policy: admitted.policy,
            };
            if backend.addr == key.src {
                // Hairpin: the backend would answer itself directly; make it
                // answer the frontend, which this engine translates back.
                new.rewrites.src = Some(SocketAddr::new(frontend.addr, key.src_port));
                new.flags |= flags::HAIRPIN;
            }
            let remote = stage.from_uplink && !route::is_local_endpoint(tables, backend.addr);
            let snat = if remote {
                masquerade::node_address(tables, backend.addr)
            } else {
                None
            };
            let created = match snat {
                Some((addr, range)) => {
                    new.flags |= flags::MASQUERADE;
                    masquerade::insert(flows, key, new, addr, range, now_ns)?
                }
                None => flows::insert(flows, key, new, now_ns)?,
            };
            observation.ct = CtOutcome::New;
            return translate(frame, h, &created.rewrites, observation);
        }
    }
    if !stage.from_uplink {
        if let (Some(addr), Some(range)) = (
            masquerade::address_for(tables, key.dst),
            tables.lb.masquerade.as_ref(),
        ) {
            let admitted =
                match policy::admit_new(frame, h, key, destination(key), stage, observation) {
                    Ok(admitted) => admitted,
                    Err(verdict) => return Ok(Outcome::Answered(verdict)),
                };
            let new = NewFlow::plain(
                flags::MASQUERADE | admitted.flags,
                tcp_flags,
                admitted.policy,
            );
            let created = masquerade::insert(flows, key, new, addr, range, now_ns)?;
            observation.ct = CtOutcome::New;
            return translate(frame, h, &created.rewrites, observation);
        }
    }
    // Only what will be routed is tracked: an unroutable packet from outside
    // must not fill the table.
    let egress = route::egress(tables, key.dst, !stage.from_uplink).ok_or(DropReason::NoRoute)?;
    if egress.ifindex == stage.link.ifindex {
        return Err(DropReason::SameInterface);
    }
    let admitted = match policy::admit_new(frame, h, key, destination(key), stage, observation) {
        Ok(admitted) => admitted,
        Err(verdict) => return Ok(Outcome::Answered(verdict)),
    };
    let new = NewFlow::plain(external | admitted.flags, tcp_flags, admitted.policy);
    let created = flows::insert(flows, key, new, now_ns)?;
    observation.ct = CtOutcome::New;
    translate(frame, h, &created.rewrites, observation)
}

/// The destination of an untranslated flow.
fn destination(key: &FlowKey) -> SocketAddr {
    SocketAddr::new(key.dst, key.dst_port)
}

/// Applies an entry's rewrites to the packet, noting the tuple it leaves with.
fn translate(
    frame: &mut [u8],
    h: &Headers,
    rewrites: &Rewrites,
    observation: &mut Observation,
) -> Result<Outcome, DropReason> {
    if rewrites.src.is_none() && rewrites.dst.is_none() {
        return Ok(UNTRANSLATED);
    }
    nat::apply(frame, h, rewrites).map_err(|_| DropReason::Truncated)?;
    observe::departure(frame, h, observation);
    Ok(Outcome::Route { translated: true })
}

/// A new connection to a frontend without backends: counted as
/// `service_no_backend`, refused with an answer unless configured to drop.
fn no_backend(
    frame: &mut [u8],
    h: &Headers,
    frontend: IpAddr,
    stage: &Stage<'_>,
) -> Result<Outcome, DropReason> {
    if stage.tables.lb.no_backend == NoBackendResponse::Drop {
        return Err(DropReason::ServiceNoBackend);
    }
    let verdict = if h.protocol == TCP {
        reject::tcp_reset(frame, h, stage.link)?
    } else {
        reject::port_unreachable(frame, h, frontend, stage.link)?
    };
    Ok(Outcome::Answered(verdict))
}

/// Translates an ICMP error about a packet of a tracked flow. The error goes
/// the way of the entry that matches the quoted packet's reverse, so that
/// entry's rewrites apply: its destination rewrite to the outer destination
/// (the quoted source), its source rewrite to the outer source when the error
/// comes from the quoted destination itself (a router on the path keeps its
/// own address), and both to the quote, reversed. The outer IPv4 header
/// checksum is updated; the outer ICMP checksum is recomputed over the
/// message. Quoted checksums are updated incrementally when the field is in
/// the quote (best effort: an SCTP CRC in a quote is left as it was).
/// An error matching no flow is routed as it is. The observation sees the
/// error as a packet of its flow, in the direction of the entry it matched
/// (ESTABLISHED or REPLY).
fn icmp_error(
    frame: &mut [u8],
    h: &Headers,
    quoted: &QuotedPacket,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Outcome {
    let Some(entry) = stage
        .flows
        .conntrack
        .lookup(&quoted.key.reversed(), stage.now_ns)
    else {
        // About no flow of ours: a message like any other.
        return untracked(frame, h, stage, observation);
    };
    observation.ct = match entry.direction {
        Direction::Original => CtOutcome::Established,
        Direction::Reply => CtOutcome::Reply,
    };
    if entry.flags & flags::SERVICE != 0 {
        observation.service = Some(entry.service_id);
    }
    let rewrites = entry.rewrites;
    if rewrites.src.is_none() && rewrites.dst.is_none() {
        return UNTRANSLATED;
    }
    let inner = &quoted.headers;
    let (Some(outer_src), Some(outer_dst)) = (h.addr(frame, End::Src), h.addr(frame, End::Dst))
    else {
        return UNTRANSLATED;
    };
    if let Some(to) = rewrites.dst {
        if outer_dst == quoted.key.src {
            let _ = nat::set_addr(frame, h, End::Dst, to.ip());
        }
        nat::apply_to_quote(frame, inner, End::Src, to);
    }
    if let Some(to) = rewrites.src {
        if outer_src == quoted.key.dst {
            let _ = nat::set_addr(frame, h, End::Src, to.ip());
        }
        nat::apply_to_quote(frame, inner, End::Dst, to);
    }
    refill_icmp_checksum(frame, h);
    observe::departure(frame, h, observation);
    Outcome::Route { translated: true }
}

/// Recomputes the ICMP/ICMPv6 checksum of the message at `h`.
fn refill_icmp_checksum(frame: &mut [u8], h: &Headers) {
    let pseudo = match (h.addr(frame, End::Src), h.addr(frame, End::Dst)) {
        (Some(IpAddr::V6(s)), Some(IpAddr::V6(d))) if h.protocol == ICMPV6 => {
            checksum::pseudo_header_v6(s, d, ICMPV6, (h.end - h.l4) as u32)
        }
        _ => 0,
    };
    let Some(message) = frame.get_mut(h.l4..h.end) else {
        return;
    };
    if message.len() < 4 {
        return;
    }
    message[2] = 0;
    message[3] = 0;
    let csum = checksum::finish(pseudo + checksum::sum(message));
    message[2..4].copy_from_slice(&csum.to_be_bytes());
}
