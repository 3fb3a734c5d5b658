//! Network policy at the conntrack stage: a new connection is checked once,
//! after the service choice (so ports are backend ports), and the verdict is
//! kept in its conntrack entries as the policy revision it was allowed at.
//!
//! * A connection needs the egress of its source, when the source is a pod
//!   on this node (the peer is the translated destination), and the ingress
//!   of its destination, when that is a pod on this node (the peer is the
//!   original source). A frame from the uplink has no local source.
//! * The peer's identity is the ipcache's longest prefix match, else
//!   `world-ipv4` / `world-ipv6`.
//! * TCP, UDP and SCTP match on the destination port; ICMP echo (and any
//!   other ICMP message that is checked) on the ICMP type. Protocols without
//!   ports are checked on every packet, with port 0. ICMP errors about a
//!   tracked flow follow their flow unchecked.
//! * Verdict cache: a tracked packet in the original direction whose entry
//!   holds another word than the tables' ([`revision_word`]: the policy
//!   revision, 0 without policy) is checked again: denied, the flow is
//!   removed and the packet dropped; allowed, the entry gets the current
//!   word. Replies of allowed flows pass. So a policy change reaches
//!   existing connections at their next packet, as in Cilium, which looks
//!   its policy map up per packet.
//! * DNS: a connection allowed by an entry with DNS rules is flagged
//!   [`flags::DNS`]; each of its queries is checked against the rules
//!   ([`dns::query`], refused ones are answered REFUSED) and its answers
//!   fill the FQDN cache ([`dns::answer`]) that toFQDNs entries read.

use core::net::{IpAddr, SocketAddr};

use sluice_conntrack::{flags, Direction, FlowKey, Tracked};
use sluice_tables::{Decision, EndpointTables, PolicyDirection, PolicyQuery, Tables};
use sluice_wire::ip_protocol::{ICMP, ICMPV6};

use crate::conntrack::Stage;
use crate::nat::{End, Headers};
use crate::{dns, DropReason, Observation, PolicyNote, Verdict};

/// What an allowed connection carries into its conntrack entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The policy word ([`revision_word`]).
    pub policy: u32,
    /// [`flags::DNS`] when its queries are checked, else 0.
    pub flags: u16,
    /// Index into the policy's `dns_rules` of the allowing entry.
    dns: Option<u32>,
}

/// The conntrack policy word for the tables: the revision's low 32 bits
/// (never 0) while some policy is enforced, 0 while none is. A flow whose
/// word differs is re-checked; so without policy the words stay 0 however
/// often the ipcache changes, and the first policy re-checks every flow.
#[inline]
pub(crate) fn revision_word(tables: &Tables) -> u32 {
    if tables.policy.enforces() {
        (tables.policy_revision as u32).max(1)
    } else {
        0
    }
}

/// The facts of a connection that policy looks at.
#[derive(Clone, Copy, Debug)]
struct Connection {
    /// The original source.
    src: IpAddr,
    /// The destination after service translation.
    dst: IpAddr,
    protocol: u8,
    /// The destination port after service translation, or the ICMP type.
    port: u16,
}

/// The port a rule matches for the packet at `h`: the ICMP type for ICMP
/// and ICMPv6, else `dst_port`.
fn port_for(frame: &[u8], h: &Headers, dst_port: u16) -> u16 {
    match h.protocol {
        ICMP | ICMPV6 => frame.get(h.l4).copied().map_or(0, u16::from),
        _ => dst_port,
    }
}

/// The check of a new flow `key` whose destination after translation is
/// `dst`: its verdict, and on success what its entries carry. A query on a
/// connection allowed with DNS rules is checked here too (the caller inserts
/// nothing when it is refused). Not inlined: the conntrack stage calls it
/// from three places, and its hit path stays small without three copies.
#[inline(never)]
pub(crate) fn admit_new(
    frame: &mut [u8],
    h: &Headers,
    key: &FlowKey,
    dst: SocketAddr,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Admitted, Verdict> {
    let connection = Connection {
        src: key.src,
        dst: dst.ip(),
        protocol: key.protocol,
        port: port_for(frame, h, dst.port()),
    };
    let admitted = admit(&connection, stage, observation)?;
    check_query(frame, h, admitted, stage, observation)?;
    Ok(admitted)
}

/// A tracked packet's policy step, when [`needs_check`] says it has one:
/// the verdict cache (original direction, stale word) and the DNS
/// inspection of DNS flows. `Some` is the packet's verdict (dropped or
/// answered); `None` lets it go on. Cold: once per flow and policy
/// revision, and on DNS flows.
#[cold]
#[inline(never)]
pub(crate) fn tracked(
    frame: &mut [u8],
    h: &Headers,
    key: &FlowKey,
    entry: &Tracked,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Option<Verdict> {
    let dns_flow = entry.flags() & flags::DNS != 0;
    if entry.direction() == Direction::Reply {
        if dns_flow {
            dns::answer(
                frame,
                h,
                stage.tables,
                &stage.flows.fqdn,
                stage.now_ns,
                &mut observation.dns,
            );
        }
        return None;
    }
    let word = revision_word(stage.tables);
    let stale = entry.policy() != word;
    let rewrites = entry.rewrites();
    let dst = rewrites
        .dst
        .unwrap_or(SocketAddr::new(key.dst, key.dst_port));
    let connection = Connection {
        src: key.src,
        dst: dst.ip(),
        protocol: key.protocol,
        port: port_for(frame, h, dst.port()),
    };
    let admitted = match admit(&connection, stage, observation) {
        Ok(admitted) => admitted,
        Err(verdict) => {
            stage.flows.conntrack.remove_flow(key);
            return Some(verdict);
        }
    };
    if stale {
        stage.flows.conntrack.set_policy(key, word);
    }
    if dns_flow {
        return check_query(frame, h, admitted, stage, observation).err();
    }
    None
}

/// Whether a tracked packet has a policy step: an original-direction packet
/// whose flow was allowed at another revision, or any packet of a DNS flow.
/// Inlined into the conntrack stage: two loads and compares per packet.
#[inline]
pub(crate) fn needs_check(entry: &Tracked, tables: &Tables) -> bool {
    (entry.policy() != revision_word(tables) && entry.direction() == Direction::Original)
        || entry.flags() & flags::DNS != 0
}

/// An untracked packet (a protocol without ports, an ICMP message that is
/// neither echo nor an error about a tracked flow): checked like a new
/// connection on every packet, with port 0 or the ICMP type. `None` lets it
/// go on.
#[inline(never)]
pub(crate) fn untracked(
    frame: &[u8],
    h: &Headers,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Option<Verdict> {
    if !stage.tables.policy.enforces() {
        return None;
    }
    let (Some(src), Some(dst)) = (h.addr(frame, End::Src), h.addr(frame, End::Dst)) else {
        return None;
    };
    let connection = Connection {
        src,
        dst,
        protocol: h.protocol,
        port: port_for(frame, h, 0),
    };
    admit(&connection, stage, observation).err()
}

/// The egress of a local source and the ingress of a local destination;
/// both must allow. The DNS rules of the allowing egress entry (else
/// ingress entry) come along. A local end's identity comes with its tables;
/// any other end's from the ipcache. While policy is enforced, the
/// observation gets the directions consulted and their allowing rules.
fn admit(
    connection: &Connection,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<Admitted, Verdict> {
    let tables = stage.tables;
    let policy = &tables.policy;
    let mut admitted = Admitted {
        policy: revision_word(tables),
        flags: 0,
        dns: None,
    };
    if !policy.enforces() {
        return Ok(admitted);
    }
    // A frame from the uplink has no local source, whatever its address says.
    let src = if stage.from_uplink {
        None
    } else {
        policy.local(connection.src)
    };
    let dst = policy.local(connection.dst);
    let identity = |local: Option<EndpointTables>, addr: IpAddr| match local {
        Some(end) => end.identity,
        None => tables.ipcache.identity_of(addr),
    };
    let fqdn = |selector: u32, addr: IpAddr| {
        stage
            .flows
            .fqdn
            .contains(policy.fqdn_key(selector), addr, stage.now_ns)
    };
    let mut note = PolicyNote {
        egress_enforced: false,
        egress_rule: Verdict::NO_RULE,
        ingress_enforced: false,
        ingress_rule: Verdict::NO_RULE,
    };
    let mut ask = |end: &EndpointTables, peer: IpAddr, peer_identity: u32, direction| {
        let query = PolicyQuery {
            peer_identity,
            peer_addr: peer,
            protocol: connection.protocol,
            port: connection.port,
        };
        let decision = policy.decide(end, direction, &query, fqdn);
        let allowing = match decision {
            Decision::Allowed { rule, .. } => rule,
            _ => Verdict::NO_RULE,
        };
        let enforced = !matches!(decision, Decision::NotEnforced);
        match direction {
            PolicyDirection::Egress => {
                (note.egress_enforced, note.egress_rule) = (enforced, allowing)
            }
            PolicyDirection::Ingress => {
                (note.ingress_enforced, note.ingress_rule) = (enforced, allowing)
            }
        }
        match decision {
            Decision::NotEnforced => Ok(()),
            Decision::Allowed { dns, .. } => {
                if admitted.dns.is_none() {
                    admitted.dns = dns;
                }
                Ok(())
            }
            Decision::Denied { rule } => Err(Verdict::PolicyDrop {
                reason: DropReason::PolicyDeniedByDenylist,
                rule,
                direction,
            }),
            Decision::NoAllowRule { rule } => Err(Verdict::PolicyDrop {
                reason: DropReason::PolicyDenied,
                rule: rule.unwrap_or(Verdict::NO_RULE),
                direction,
            }),
        }
    };
    let mut decided = Ok(());
    if let Some(end) = &src {
        let peer = identity(dst, connection.dst);
        decided = ask(end, connection.dst, peer, PolicyDirection::Egress);
    }
    if let (Ok(()), Some(end)) = (decided, &dst) {
        let peer = identity(src, connection.src);
        decided = ask(end, connection.src, peer, PolicyDirection::Ingress);
    }
    observation.policy = Some(note);
    decided?;
    if admitted.dns.is_some() {
        admitted.flags = flags::DNS;
    }
    Ok(admitted)
}

/// The DNS inspection of a query on a connection allowed with DNS rules.
fn check_query(
    frame: &mut [u8],
    h: &Headers,
    admitted: Admitted,
    stage: &Stage<'_>,
    observation: &mut Observation,
) -> Result<(), Verdict> {
    let Some(rules) = admitted
        .dns
        .and_then(|i| stage.tables.policy.state().dns_rules.get(i as usize))
    else {
        return Ok(());
    };
    match dns::query(frame, h, rules, stage.link, &mut observation.dns) {
        dns::DnsOutcome::Pass => Ok(()),
        dns::DnsOutcome::Refused(verdict) => Err(verdict),
    }
}
