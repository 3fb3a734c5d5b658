//! The pure part of `sluice-pktgen` (`src/bin/sluice-pktgen.rs`): address and port
//! ranges, flows, per-flow frame templates with correct checksums, the token-bucket
//! pacer, the JSON reports of the generator and the sinks, and loss.
//!
//! # Sizes
//!
//! `size` is the frame size including the 4-byte Ethernet FCS, as trafgen and RFC 2544
//! count it: `--size 64` puts 60-byte frames on the veth (which has no FCS). Bit rates
//! in the reports count `size` bytes per frame (FCS included, preamble and inter-frame
//! gap not); `l1_bits_per_second` adds the 20 bytes of preamble + IFG of real Ethernet.
//!
//! # Templates
//!
//! The frames of all flows differ only in their headers (Ethernet + IP + UDP, 42 bytes
//! for IPv4, 62 for IPv6); the payload is zeros. [`Templates`] keeps one header per flow
//! and one payload length. The generator writes a whole frame into every UMEM chunk once
//! at start; afterwards a frame taken for sending gets only its 42/62 header bytes
//! rewritten for the next flow, and with one flow nothing is written at all.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_wire::checksum;
use sluice_wire::ip_protocol::UDP;
use sluice_wire::{ethertype, EthernetRepr, Ipv4Repr, Ipv6Repr, UdpRepr};

/// Bytes of the Ethernet FCS, counted in `size` but not present on a veth.
pub const FCS: usize = 4;
/// Preamble, start-of-frame delimiter and inter-frame gap of real Ethernet.
pub const L1_OVERHEAD: usize = 20;
/// The smallest Ethernet frame including its FCS.
pub const MIN_SIZE: usize = 64;
/// Upper bound on flows (headers are kept in memory: 62 MiB for IPv6 at the bound).
pub const MAX_FLOWS: u64 = 1 << 20;
/// Hard cap on `--duration`.
pub const MAX_DURATION_SECS: f64 = 600.0;

const ETH_LEN: usize = 14;
const UDP_LEN: usize = 8;

/// Parse errors of the command-line values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(text: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(text.into()))
}

/// `A` or `A-B` (inclusive), IPv4 or IPv6; both ends of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    count: u64,
}

impl IpRange {
    pub fn single(addr: IpAddr) -> IpRange {
        IpRange {
            first: addr,
            count: 1,
        }
    }

    /// Addresses in the range (at least 1).
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn is_ipv4(&self) -> bool {
        self.first.is_ipv4()
    }

    /// The `i % len`-th address.
    pub fn nth(&self, i: u64) -> IpAddr {
        let k = i % self.count;
        match self.first {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + k as u32)),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(k))),
        }
    }
}

impl FromStr for IpRange {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<IpRange, ParseError> {
        let parse = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| ParseError(format!("{s:?} is not an IP address")))
        };
        // IPv6 addresses contain no '-', so the first '-' separates the ends.
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let a = parse(text)?;
                (a, a)
            }
        };
        let count = match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(b) >= u32::from(a) => {
                u128::from(u32::from(b) - u32::from(a)) + 1
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(b) >= u128::from(a) => {
                (u128::from(b) - u128::from(a)).saturating_add(1)
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                return err(format!("{text:?}: the range ends below its start"))
            }
            _ => return err(format!("{text:?}: both ends must be IPv4 or both IPv6")),
        };
        if count > u128::from(MAX_FLOWS) {
            return err(format!("{text:?}: more than {MAX_FLOWS} addresses"));
        }
        Ok(IpRange {
            first: a,
            count: count as u64,
        })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 1 {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.nth(self.count - 1))
        }
    }
}

/// `P` or `P-Q` (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    count: u32,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            count: 1,
        }
    }

    /// Ports in the range (at least 1).
    pub fn len(&self) -> u64 {
        u64::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i % len`-th port.
    pub fn nth(&self, i: u64) -> u16 {
        self.first + (i % u64::from(self.count)) as u16
    }
}

impl FromStr for PortRange {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<PortRange, ParseError> {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| ParseError(format!("{s:?} is not a port (0-65535)")))
        };
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let a = parse(text)?;
                (a, a)
            }
        };
        if b < a {
            return err(format!("{text:?}: the range ends below its start"));
        }
        Ok(PortRange {
            first: a,
            count: u32::from(b - a) + 1,
        })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 1 {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.nth(u64::from(self.count) - 1))
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], ParseError> {
    let mut out = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut out {
        let part = parts.next().unwrap_or("");
        if part.is_empty() || part.len() > 2 {
            return err(format!("{text:?} is not a MAC address"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| ParseError(format!("{text:?} is not a MAC address")))?;
    }
    if parts.next().is_some() {
        return err(format!("{text:?} is not a MAC address"));
    }
    Ok(out)
}

/// `max` or packets per second, with an optional `k` or `M` suffix (`10k`, `1.5M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Max,
    Pps(u64),
}

impl FromStr for Rate {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Rate, ParseError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        let (num, scale) = match t.as_bytes().last() {
            Some(b'k' | b'K') => (&t[..t.len() - 1], 1e3),
            Some(b'm' | b'M') => (&t[..t.len() - 1], 1e6),
            _ => (t, 1.0),
        };
        let value: f64 = num
            .parse()
            .map_err(|_| ParseError(format!("{text:?}: a rate is `max` or packets/s")))?;
        let pps = value * scale;
        if !(1.0..=1e9).contains(&pps) {
            return err(format!("{text:?}: the rate must be 1 to 1e9 packets/s"));
        }
        Ok(Rate::Pps(pps.round() as u64))
    }
}

/// One flow's addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpRange,
    pub dst_ip: IpRange,
    pub src_port: PortRange,
    pub dst_port: PortRange,
    /// Frame size including the FCS.
    pub size: usize,
    /// `None`: every combination of the ranges once.
    pub flows: Option<u64>,
}

impl FlowSpec {
    /// Every combination of the ranges (saturating).
    pub fn combinations(&self) -> u64 {
        self.src_port
            .len()
            .saturating_mul(self.dst_port.len())
            .saturating_mul(self.src_ip.len())
            .saturating_mul(self.dst_ip.len())
    }

    /// Flows cycled through: `--flows`, else every combination.
    pub fn flow_count(&self) -> u64 {
        self.flows.unwrap_or_else(|| self.combinations())
    }

    pub fn is_ipv4(&self) -> bool {
        self.src_ip.is_ipv4()
    }

    /// Bytes of one frame on a veth (no FCS).
    pub fn frame_len(&self) -> usize {
        self.size - FCS
    }

    /// Ethernet + IP + UDP header bytes.
    pub fn header_len(&self) -> usize {
        ETH_LEN + if self.is_ipv4() { 20 } else { 40 } + UDP_LEN
    }

    /// Flow `i`: the ranges as digits of a mixed-radix counter, the source port
    /// fastest, then the destination port, the source address, the destination
    /// address. `i` wraps at [`FlowSpec::combinations`].
    pub fn flow(&self, i: u64) -> Flow {
        let mut rest = i % self.combinations().max(1);
        let mut digit = |len: u64| {
            let d = rest % len;
            rest /= len;
            d
        };
        let src_port = self.src_port.nth(digit(self.src_port.len()));
        let dst_port = self.dst_port.nth(digit(self.dst_port.len()));
        let src_ip = self.src_ip.nth(digit(self.src_ip.len()));
        let dst_ip = self.dst_ip.nth(digit(self.dst_ip.len()));
        Flow {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        }
    }

    /// Checks sizes, families and the flow count; `max_frame` is the largest frame
    /// (without FCS) the transmit buffers hold.
    pub fn validate(&self, max_frame: usize) -> Result<(), ParseError> {
        if self.src_ip.is_ipv4() != self.dst_ip.is_ipv4() {
            return err("--src-ip and --dst-ip must be of one family");
        }
        let min = MIN_SIZE.max(self.header_len() + FCS);
        if self.size < min || self.size - FCS > max_frame {
            return err(format!(
                "--size must be {min} to {} (bytes including the 4-byte FCS)",
                max_frame + FCS
            ));
        }
        let flows = self.flow_count();
        if flows == 0 || flows > MAX_FLOWS {
            return err(format!("--flows must be 1 to {MAX_FLOWS}"));
        }
        Ok(())
    }
}

/// One header per flow and the shared (zero) payload length.
#[derive(Debug, Clone)]
pub struct Templates {
    header_len: usize,
    frame_len: usize,
    headers: Vec<u8>,
}

impl Templates {
    /// Emits every flow's headers with sluice-wire, IPv4 header checksum and UDP
    /// checksum (over the pseudo-header, the UDP header and the zero payload) filled.
    pub fn build(spec: &FlowSpec) -> Result<Templates, ParseError> {
        spec.validate(usize::MAX - FCS)?;
        let header_len = spec.header_len();
        let frame_len = spec.frame_len();
        let flows = spec.flow_count() as usize;
        let mut headers = vec![0u8; flows * header_len];
        let udp_len = frame_len - header_len + UDP_LEN;
        for (i, h) in headers.chunks_exact_mut(header_len).enumerate() {
            let flow = spec.flow(i as u64);
            let too_small = |_| ParseError("template buffer too small".into());
            let (ip_len, pseudo) = match (flow.src_ip, flow.dst_ip) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    EthernetRepr {
                        dst: spec.dst_mac,
                        src: spec.src_mac,
                        ethertype: ethertype::IPV4,
                    }
                    .emit(h)
                    .map_err(too_small)?;
                    Ipv4Repr {
                        src,
                        dst,
                        protocol: UDP,
                        ttl: 64,
                        tos: 0,
                        ident: 0,
                        dont_frag: false,
                        more_frags: false,
                        frag_offset: 0,
                        payload_len: udp_len,
                    }
                    .emit(&mut h[ETH_LEN..])
                    .map_err(too_small)?;
                    (
                        20,
                        checksum::pseudo_header_v4(src, dst, UDP, udp_len as u32),
                    )
                }
                (IpAddr::V6(src), IpAddr::V6(dst)) => {
                    EthernetRepr {
                        dst: spec.dst_mac,
                        src: spec.src_mac,
                        ethertype: ethertype::IPV6,
                    }
                    .emit(h)
                    .map_err(too_small)?;
                    Ipv6Repr {
                        src,
                        dst,
                        next_header: UDP,
                        hop_limit: 64,
                        traffic_class: 0,
                        flow_label: 0,
                        payload_len: udp_len,
                    }
                    .emit(&mut h[ETH_LEN..])
                    .map_err(too_small)?;
                    (
                        40,
                        checksum::pseudo_header_v6(src, dst, UDP, udp_len as u32),
                    )
                }
                _ => return err("--src-ip and --dst-ip must be of one family"),
            };
            let udp = &mut h[ETH_LEN + ip_len..];
            UdpRepr {
                src_port: flow.src_port,
                dst_port: flow.dst_port,
                payload_len: udp_len - UDP_LEN,
            }
            .emit(udp)
            .map_err(too_small)?;
            // The payload is zeros and adds nothing to the sum.
            let sum = pseudo + checksum::sum(&udp[..UDP_LEN]);
            let csum = checksum::udp_nonzero(checksum::finish(sum));
            udp[6..8].copy_from_slice(&csum.to_be_bytes());
        }
        Ok(Templates {
            header_len,
            frame_len,
            headers,
        })
    }

    pub fn flows(&self) -> usize {
        self.headers.len() / self.header_len
    }

    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Bytes of a frame on the veth (no FCS).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Flow `i`'s headers.
    pub fn header(&self, i: usize) -> &[u8] {
        &self.headers[i * self.header_len..(i + 1) * self.header_len]
    }

    /// Writes flow `i`'s headers into the start of `buf` (the payload is left alone).
    #[inline]
    pub fn write_header(&self, i: usize, buf: &mut [u8]) {
        buf[..self.header_len].copy_from_slice(self.header(i));
    }

    /// Writes flow `i`'s whole frame (headers and zero payload) into `buf`.
    pub fn write_frame(&self, i: usize, buf: &mut [u8]) {
        self.write_header(i, buf);
        buf[self.header_len..self.frame_len].fill(0);
    }

    /// Flow `i`'s whole frame.
    pub fn frame(&self, i: usize) -> Vec<u8> {
        let mut v = vec![0u8; self.frame_len];
        self.write_frame(i, &mut v);
        v
    }
}

/// Token bucket refilled from the clock the caller reads once per batch.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    tokens: f64,
    burst: f64,
    last: Instant,
}

impl Pacer {
    /// `rate` packets per second; at most `burst` packets of credit build up (so a
    /// late wakeup is caught up by at most that much).
    pub fn new(rate: u64, burst: usize, now: Instant) -> Pacer {
        Pacer {
            rate: rate as f64,
            tokens: 0.0,
            burst: burst.max(1) as f64,
            last: now,
        }
    }

    /// Adds the credit since the last call and takes up to `max` whole packets of it.
    pub fn grant(&mut self, now: Instant, max: usize) -> usize {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        let n = (self.tokens.floor() as usize).min(max);
        self.tokens -= n as f64;
        n
    }

    /// Gives back credit for packets granted but not sent (ring or pool full).
    pub fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }

    /// How long until `want` packets of credit are there.
    pub fn wait_for(&self, want: usize) -> Duration {
        let missing = (want as f64 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }
}

/// Interface counters from `/proc/net/dev` (the reader's network namespace, unlike
/// /sys/class/net under `nsenter --net`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

impl DevCounters {
    /// `dev`'s line of a /proc/net/dev text.
    pub fn parse(text: &str, dev: &str) -> Option<DevCounters> {
        text.lines().find_map(|line| {
            let (name, rest) = line.split_once(':')?;
            if name.trim() != dev {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            // rx: bytes packets errs drop fifo frame compressed multicast, then tx:
            // bytes packets errs drop fifo colls carrier compressed.
            (v.len() >= 16).then(|| DevCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_dropped: v[11],
            })
        })
    }

    /// Reads `dev` from /proc/net/dev.
    pub fn read(dev: &str) -> Option<DevCounters> {
        DevCounters::parse(&std::fs::read_to_string("/proc/net/dev").ok()?, dev)
    }

    /// Counter increases since `earlier` (wrapping).
    pub fn since(&self, earlier: &DevCounters) -> DevCounters {
        DevCounters {
            rx_packets: self.rx_packets.wrapping_sub(earlier.rx_packets),
            rx_bytes: self.rx_bytes.wrapping_sub(earlier.rx_bytes),
            rx_dropped: self.rx_dropped.wrapping_sub(earlier.rx_dropped),
            tx_packets: self.tx_packets.wrapping_sub(earlier.tx_packets),
            tx_bytes: self.tx_bytes.wrapping_sub(earlier.tx_bytes),
            tx_dropped: self.tx_dropped.wrapping_sub(earlier.tx_dropped),
        }
    }
}

/// The AF_XDP socket's kernel counters (`XDP_STATISTICS`) a report carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XskCounters {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_invalid_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// What `sluice-pktgen tx` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenReport {
    pub dev: String,
    pub queue: u32,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Frame size including the FCS (what `--size` said).
    pub frame_size: usize,
    /// Bytes of each frame on the veth (no FCS).
    pub frame_bytes: usize,
    pub flows: u64,
    /// Target packets per second; `None` for `--rate max`.
    pub rate_pps: Option<u64>,
    pub batch: usize,
    pub cpu: Option<usize>,
    /// `--duration`.
    pub duration_s: f64,
    /// From the first batch to the end of the sending loop.
    pub elapsed_s: f64,
    /// Frames put on the TX ring.
    pub queued: u64,
    /// Frames the kernel completed (sent) by the end, after draining the ring.
    pub sent: u64,
    /// `sent / elapsed_s`.
    pub pps: f64,
    /// `pps * frame_size * 8`: frame bytes including the FCS.
    pub bits_per_second: f64,
    /// Adds preamble and inter-frame gap (20 bytes per frame).
    pub l1_bits_per_second: f64,
    /// The socket's kernel counters at the end.
    pub xsk: XskCounters,
    /// `dev`'s /proc/net/dev counter increases over the run.
    pub dev_counters: Option<DevCounters>,
    /// /proc/loadavg at the end.
    pub loadavg: String,
}

/// What `sluice-pktgen rx` or `sink` counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// `afxdp` (receive and release) or `xdp_drop` (the Sink program's counters).
    pub kind: String,
    pub dev: String,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub packets: u64,
    /// Frame bytes as received (no FCS).
    pub bytes: u64,
    pub pps: f64,
    /// Received bytes plus 4 per frame (the FCS), times 8, per second: comparable to
    /// [`GenReport::bits_per_second`].
    pub bits_per_second: f64,
    /// Average frame bytes (no FCS).
    pub avg_frame_bytes: Option<f64>,
    /// AF_XDP only: the socket's kernel counters (`rx_ring_full` = frames lost because
    /// the receiver was too slow).
    pub xsk: Option<XskCounters>,
    /// AF_XDP only: frames the XDP program passed to the kernel (no socket on their
    /// queue).
    pub passed_no_socket: Option<u64>,
    pub loadavg: String,
}

impl SinkReport {
    /// Builds the rates from the counts.
    pub fn new(
        kind: &str,
        dev: &str,
        duration_s: f64,
        elapsed_s: f64,
        packets: u64,
        bytes: u64,
    ) -> SinkReport {
        let secs = elapsed_s.max(1e-9);
        SinkReport {
            kind: kind.to_string(),
            dev: dev.to_string(),
            duration_s,
            elapsed_s,
            packets,
            bytes,
            pps: packets as f64 / secs,
            bits_per_second: (bytes + FCS as u64 * packets) as f64 * 8.0 / secs,
            avg_frame_bytes: (packets > 0).then(|| bytes as f64 / packets as f64),
            xsk: None,
            passed_no_socket: None,
            loadavg: loadavg(),
        }
    }

    /// `1 - received / sent` against a generator's report.
    pub fn loss_against(&self, gen: &GenReport) -> Option<f64> {
        loss(gen.sent, self.packets)
    }
}

/// `1 - received / sent`; `None` when nothing was sent. Negative when more arrived
/// than was sent (other traffic reached the sink too).
pub fn loss(sent: u64, received: u64) -> Option<f64> {
    (sent > 0).then(|| 1.0 - received as f64 / sent as f64)
}

/// Rates for a generator's count.
pub fn rates(packets: u64, elapsed_s: f64, frame_size: usize) -> (f64, f64, f64) {
    let pps = packets as f64 / elapsed_s.max(1e-9);
    (
        pps,
        pps * frame_size as f64 * 8.0,
        pps * (frame_size + L1_OVERHEAD) as f64 * 8.0,
    )
}

/// The first three fields of /proc/loadavg, or "" if unreadable.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::{Ipv4Packet, Ipv6Packet, UdpPacket};

    fn spec(src: &str, dst: &str, sport: &str, dport: &str, size: usize) -> FlowSpec {
        FlowSpec {
            src_mac: [2, 0, 0, 0, 0, 0x11],
            dst_mac: [2, 0, 0, 0, 0, 0x22],
            src_ip: src.parse().unwrap(),
            dst_ip: dst.parse().unwrap(),
            src_port: sport.parse().unwrap(),
            dst_port: dport.parse().unwrap(),
            size,
            flows: None,
        }
    }

    /// Parses a frame with sluice-wire and checks both checksums.
    fn check_frame(frame: &[u8]) -> Flow {
        let eth = EthernetRepr::parse(frame).unwrap();
        assert_eq!(eth.dst, [2, 0, 0, 0, 0, 0x22]);
        assert_eq!(eth.src, [2, 0, 0, 0, 0, 0x11]);
        match eth.ethertype {
            ethertype::IPV4 => {
                let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.total_len(), frame.len() - 14);
                let repr = Ipv4Repr::parse(&frame[14..]).unwrap();
                assert_eq!(repr.protocol, UDP);
                let udp = UdpPacket::new_checked(&frame[34..]).unwrap();
                assert_eq!(udp.len(), frame.len() - 34);
                assert_ne!(udp.checksum(), 0, "UDP checksum left empty");
                let pseudo = checksum::pseudo_header_v4(repr.src, repr.dst, UDP, udp.len() as u32);
                assert!(udp.verify_checksum(pseudo));
                Flow {
                    src_ip: repr.src.into(),
                    dst_ip: repr.dst.into(),
                    src_port: udp.src_port(),
                    dst_port: udp.dst_port(),
                }
            }
            ethertype::IPV6 => {
                let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
                assert_eq!(ip.payload_len(), frame.len() - 54);
                let repr = Ipv6Repr::parse(&frame[14..]).unwrap();
                assert_eq!(repr.next_header, UDP);
                let udp = UdpPacket::new_checked(&frame[54..]).unwrap();
                assert_ne!(udp.checksum(), 0);
                let pseudo = checksum::pseudo_header_v6(repr.src, repr.dst, UDP, udp.len() as u32);
                assert!(udp.verify_checksum(pseudo));
                Flow {
                    src_ip: repr.src.into(),
                    dst_ip: repr.dst.into(),
                    src_port: udp.src_port(),
                    dst_port: udp.dst_port(),
                }
            }
            other => panic!("ethertype {other:#x}"),
        }
    }

    #[test]
    fn size_64_is_60_bytes_on_the_wire() {
        let s = spec("10.200.0.11", "10.200.0.12", "10000", "9", 64);
        let t = Templates::build(&s).unwrap();
        assert_eq!((t.frame_len(), t.header_len(), t.flows()), (60, 42, 1));
        let frame = t.frame(0);
        assert_eq!(frame.len(), 60);
        assert!(frame[42..].iter().all(|&b| b == 0));
        let flow = check_frame(&frame);
        assert_eq!(flow, s.flow(0));
        assert_eq!(flow.src_port, 10000);
        // UDP length 26 = 8 + 18 bytes of payload; IP total length 46.
        assert_eq!(&frame[16..18], &46u16.to_be_bytes());
        assert_eq!(&frame[38..40], &26u16.to_be_bytes());
        // 1518-byte frames: 1514 on the wire, matching the MTU of 1500.
        let big = Templates::build(&spec("10.0.0.1", "10.0.0.2", "1", "2", 1518)).unwrap();
        assert_eq!(big.frame(0).len(), 1514);
        check_frame(&big.frame(0));
    }

    #[test]
    fn sizes_are_validated() {
        let mut s = spec("10.0.0.1", "10.0.0.2", "1", "2", 63);
        assert!(Templates::build(&s).is_err());
        s.size = 2048;
        assert!(s.validate(1792).is_err());
        assert!(s.validate(2044).is_ok());
        // IPv6 headers are 62 bytes: 66 is the smallest size.
        let v6 = spec("fd00::1", "fd00::2", "1", "2", 64);
        assert!(Templates::build(&v6).is_err());
        let v6 = FlowSpec { size: 66, ..v6 };
        let t = Templates::build(&v6).unwrap();
        assert_eq!((t.frame_len(), t.header_len()), (62, 62));
        check_frame(&t.frame(0));
        let mixed = spec("10.0.0.1", "fd00::2", "1", "2", 128);
        assert!(Templates::build(&mixed).is_err());
        let too_many = FlowSpec {
            flows: Some(MAX_FLOWS + 1),
            ..spec("10.0.0.1", "10.0.0.2", "1", "2", 64)
        };
        assert!(Templates::build(&too_many).is_err());
    }

    #[test]
    fn every_flow_has_correct_checksums() {
        let s = spec(
            "10.0.0.1-10.0.0.3",
            "10.1.0.1-10.1.0.2",
            "1000-1004",
            "53",
            64,
        );
        let t = Templates::build(&s).unwrap();
        assert_eq!(t.flows(), 30);
        let mut seen = std::collections::HashSet::new();
        for i in 0..t.flows() {
            let flow = check_frame(&t.frame(i));
            assert_eq!(flow, s.flow(i as u64));
            assert!(seen.insert(flow), "flow {i} repeats");
        }
        let v6 = spec("fd00::1-fd00::4", "fd00::ff", "7", "8-9", 200);
        let t = Templates::build(&v6).unwrap();
        assert_eq!(t.flows(), 8);
        for i in 0..8 {
            assert_eq!(check_frame(&t.frame(i)), v6.flow(i as u64));
        }
    }

    #[test]
    fn flows_cycle_source_port_fastest() {
        let s = spec("10.0.0.1-10.0.0.2", "10.1.0.1", "100-102", "9", 64);
        assert_eq!(s.combinations(), 6);
        let ports: Vec<_> = (0..7).map(|i| s.flow(i).src_port).collect();
        assert_eq!(ports, [100, 101, 102, 100, 101, 102, 100]);
        let ips: Vec<_> = (0..7).map(|i| s.flow(i).src_ip.to_string()).collect();
        assert_eq!(
            ips,
            ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.2", "10.0.0.1"]
        );
        // --flows below the combinations: the first N of them; above: they repeat.
        let four = FlowSpec {
            flows: Some(4),
            ..s.clone()
        };
        let t = Templates::build(&four).unwrap();
        assert_eq!(t.flows(), 4);
        assert_eq!(check_frame(&t.frame(3)), s.flow(3));
        let eight = FlowSpec {
            flows: Some(8),
            ..s.clone()
        };
        let t = Templates::build(&eight).unwrap();
        assert_eq!(t.header(7), Templates::build(&s).unwrap().header(1));
        // The runner's shape: N flows as N source ports.
        let runner = spec("10.200.0.11", "10.200.0.12", "10000-10003", "9", 64);
        let t = Templates::build(&runner).unwrap();
        let sports: Vec<u16> = (0..4).map(|i| check_frame(&t.frame(i)).src_port).collect();
        assert_eq!(sports, [10000, 10001, 10002, 10003]);
    }

    #[test]
    fn header_rewrite_turns_one_flow_into_another() {
        let s = spec("10.0.0.1", "10.0.0.2", "1-2", "9", 128);
        let t = Templates::build(&s).unwrap();
        let mut chunk = vec![0xaau8; 2048];
        t.write_frame(0, &mut chunk);
        t.write_header(1, &mut chunk);
        assert_eq!(&chunk[..t.frame_len()], &t.frame(1)[..]);
        assert_eq!(check_frame(&chunk[..t.frame_len()]).src_port, 2);
    }

    #[test]
    fn ranges_parse() {
        let r: IpRange = "10.0.0.250-10.0.1.4".parse().unwrap();
        assert_eq!(r.len(), 11);
        assert_eq!(r.nth(6).to_string(), "10.0.1.0");
        assert_eq!(r.to_string(), "10.0.0.250-10.0.1.4");
        assert!("10.0.0.2-10.0.0.1".parse::<IpRange>().is_err());
        assert!("10.0.0.1-fd00::1".parse::<IpRange>().is_err());
        assert!("10.0.0.0-10.255.255.255".parse::<IpRange>().is_err());
        let v6: IpRange = "fd00::fffe-fd00::1:1".parse().unwrap();
        assert_eq!(v6.len(), 4);
        assert_eq!(v6.nth(2).to_string(), "fd00::1:0");
        let p: PortRange = "65534-65535".parse().unwrap();
        assert_eq!((p.len(), p.nth(1), p.nth(2)), (2, 65535, 65534));
        assert!("9-8".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!(
            parse_mac("02:53:4c:00:00:01").unwrap(),
            [2, 0x53, 0x4c, 0, 0, 1]
        );
        assert!(parse_mac("02:53:4c:00:00").is_err());
        assert!(parse_mac("02:53:4c:00:00:01:02").is_err());
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("10k".parse::<Rate>().unwrap(), Rate::Pps(10_000));
        assert_eq!("1.5M".parse::<Rate>().unwrap(), Rate::Pps(1_500_000));
        assert_eq!("250".parse::<Rate>().unwrap(), Rate::Pps(250));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn pacer_holds_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(10_000, 128, t0);
        assert_eq!(p.grant(t0, 64), 0);
        // 1 ms = 10 packets of credit.
        assert_eq!(p.grant(t0 + Duration::from_millis(1), 64), 10);
        assert_eq!(p.wait_for(10), Duration::from_millis(1));
        // A long gap is capped at the burst.
        let at = t0 + Duration::from_secs(1);
        assert_eq!(p.grant(at, 1000), 128);
        p.refund(28);
        assert_eq!(p.grant(at, 1000), 28);
        // Over a simulated second of 100 µs steps: 10,000 packets.
        let mut p = Pacer::new(10_000, 64, t0);
        let total: usize = (1..=10_000)
            .map(|k| p.grant(t0 + Duration::from_micros(100 * k), 64))
            .sum();
        assert!((9_999..=10_000).contains(&total), "{total}");
    }

    #[test]
    fn proc_net_dev_parses() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
            eth0: 1200      20    0    3    0     0          0         0    60000    1000    0    7    0     0       0          0\n";
        let c = DevCounters::parse(text, "eth0").unwrap();
        assert_eq!(
            (
                c.rx_bytes,
                c.rx_packets,
                c.rx_dropped,
                c.tx_bytes,
                c.tx_packets,
                c.tx_dropped
            ),
            (1200, 20, 3, 60000, 1000, 7)
        );
        assert!(DevCounters::parse(text, "eth1").is_none());
        let later = DevCounters {
            tx_packets: 1500,
            ..c
        };
        assert_eq!(later.since(&c).tx_packets, 500);
    }

    #[test]
    fn loss_and_rates() {
        assert_eq!(loss(0, 0), None);
        assert_eq!(loss(1000, 750), Some(0.25));
        assert!(loss(100, 101).unwrap() < 0.0);
        let (pps, bps, l1) = rates(1_000_000, 2.0, 64);
        assert_eq!(pps, 500_000.0);
        assert_eq!(bps, 500_000.0 * 512.0);
        assert_eq!(l1, 500_000.0 * 84.0 * 8.0);
        // The sink sees 60-byte frames; its bit rate adds the FCS back.
        let s = SinkReport::new("xdp_drop", "eth0", 1.0, 2.0, 1_000_000, 60_000_000);
        assert_eq!(s.pps, 500_000.0);
        assert_eq!(s.bits_per_second, bps);
        assert_eq!(s.avg_frame_bytes, Some(60.0));
        let json = serde_json::to_string(&s).unwrap();
        let back: SinkReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
