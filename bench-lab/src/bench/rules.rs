//! Netfilter rule sets for the kernel baselines of `sluice-lab bench scenarios`, loaded ONLY
//! in a lab's node namespace (see [`load`], which checks that first):
//!
//! - [`conntrack_rules`]: an nftables forward chain matching `ct state`, so that nf_conntrack
//!   tracks every forwarded flow (V0-ct).
//! - [`kube_proxy_iptables`]: the nat table kube-proxy's iptables mode writes for N
//!   ClusterIP services with two endpoints each (V3), for one `iptables-restore`.
//! - [`kube_proxy_nftables`]: the `ip kube-proxy` table of kube-proxy's nftables mode (V3n),
//!   for one `nft -f`.
//!
//! Service `i` (0-based) has ClusterIP [`cluster_ip`]`(i)` (10.96.0.0/16 for the first
//! [`SERVICES_PER_CIDR`], then 10.97.0.0/16), TCP port [`SERVICE_PORT`], and two endpoints
//! that both DNAT to pod 2 at [`TARGET_PORT`] ([`kube_proxy_iptables_to`] takes other
//! endpoints): the measured traffic goes to the last service's ClusterIP, behind every
//! other service rule.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::labkit::ensure_node_netns_is_not_ours;
use crate::Lab;

/// The port every Service exposes.
pub const SERVICE_PORT: u16 = 80;
/// The port the servers in pod 2 listen on (also the endpoints' target port).
pub const TARGET_PORT: u16 = 8080;
/// Services numbered into one /16 before the next one starts (10.96.0.1 .. 10.96.253.232).
pub const SERVICES_PER_CIDR: usize = 65_000;
/// Most services a rule set can have: two /16s (10.96.0.0/16 and 10.97.0.0/16).
pub const MAX_SERVICES: usize = 2 * SERVICES_PER_CIDR;
/// Pod CIDR of the lab (kube-proxy's `--cluster-cidr`): sources outside are masqueraded.
const CLUSTER_CIDR: &str = "10.200.0.0/16";
/// How long one `iptables-restore` / `nft -f` may take (10k services in nft take tens of
/// seconds: every anonymous verdict map gets a name by a linear search of the table's sets).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(240);

/// ClusterIP of service `i`: 10.96.0.0 + i + 1 for the first [`SERVICES_PER_CIDR`], then
/// 10.97.0.0 + (i - SERVICES_PER_CIDR) + 1 (so neither /16's network or broadcast address
/// is a service).
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    let (base, offset) = if i < SERVICES_PER_CIDR {
        (Ipv4Addr::new(10, 96, 0, 0), i)
    } else {
        (Ipv4Addr::new(10, 97, 0, 0), i - SERVICES_PER_CIDR)
    };
    let n = u32::try_from(offset + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(base).saturating_add(n))
}

/// A kube-proxy-like 16-character chain suffix (kube-proxy uses base32 of a SHA-256).
fn chain_hash(text: &str) -> String {
    // FNV-1a, 64 bits: stable and short; collisions are irrelevant at 10k names but checked
    // by iptables-restore anyway (duplicate chain).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// nftables rules that make nf_conntrack track every forwarded flow (V0-ct).
pub fn conntrack_rules() -> String {
    "# sluice-lab bench scenarios, V0-ct: conntrack on every forwarded packet\n\
     table inet sluice-ct {\n\
     \tchain forward {\n\
     \t\ttype filter hook forward priority filter; policy accept;\n\
     \t\tct state invalid counter drop\n\
     \t\tct state established,related counter accept\n\
     \t\tct state new counter accept\n\
     \t}\n\
     }\n"
    .to_string()
}

/// kube-proxy iptables mode, nat table, `services` ClusterIP services with 2 endpoints each,
/// both `endpoint`:[`TARGET_PORT`].
pub fn kube_proxy_iptables(services: usize, endpoint: Ipv4Addr) -> String {
    let ep = SocketAddrV4::new(endpoint, TARGET_PORT);
    kube_proxy_iptables_to(services, &[ep, ep])
}

/// kube-proxy iptables mode, nat table, `services` ClusterIP services with one endpoint
/// per entry of `endpoints` (at least one): the KUBE-SVC chain picks endpoint `k` of `n`
/// with probability 1/(n-k), as kube-proxy writes it.
pub fn kube_proxy_iptables_to(services: usize, endpoints: &[SocketAddrV4]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for i in 0..services {
        let name = format!("default/svc{i}:http");
        let svc = format!("KUBE-SVC-{}", chain_hash(&format!("{name}:tcp")));
        let seps: Vec<String> = endpoints
            .iter()
            .enumerate()
            .map(|(e, ep)| format!("KUBE-SEP-{}", chain_hash(&format!("{name}:tcp:{e}:{ep}"))))
            .collect();
        let ip = cluster_ip(i);
        let _ = writeln!(chains, ":{svc} - [0:0]");
        for sep in &seps {
            let _ = writeln!(chains, ":{sep} - [0:0]");
        }
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"{name} cluster IP\" \
             -m tcp --dport {SERVICE_PORT} -j {svc}"
        );
        let _ = writeln!(
            rules,
            "-A {svc} ! -s {CLUSTER_CIDR} -d {ip}/32 -p tcp -m comment --comment \"{name} cluster \
             IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ"
        );
        for (k, (sep, ep)) in seps.iter().zip(endpoints).enumerate() {
            let left = endpoints.len() - k;
            let _ = if left > 1 {
                writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}\" -m statistic --mode random \
                     --probability {:.11} -j {sep}",
                    1.0 / left as f64
                )
            } else {
                writeln!(
                    rules,
                    "-A {svc} -m comment --comment \"{name} -> {ep}\" -j {sep}"
                )
            };
        }
        for (sep, ep) in seps.iter().zip(endpoints) {
            let _ = writeln!(
                rules,
                "-A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ",
                ep.ip()
            );
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT \
                 --to-destination {ep}"
            );
        }
    }
    format!(
        "# sluice-lab bench scenarios, V3: kube-proxy iptables mode shape, {services} services\n\
         *nat\n\
         :PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         :KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n\
         {chains}\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         {rules}\
         -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be \
         the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
         COMMIT\n"
    )
}

/// kube-proxy nftables mode: `table ip kube-proxy`, the `service-ips` verdict map keyed by
/// `ip daddr . meta l4proto . th dport`, a chain per service with `numgen random mod 2 vmap`
/// over its endpoint chains, and a DNAT per endpoint chain.
pub fn kube_proxy_nftables(services: usize, endpoint: Ipv4Addr) -> String {
    let t = "ip kube-proxy";
    let mut text = format!(
        "# sluice-lab bench scenarios, V3n: kube-proxy nftables mode shape, {services} services\n\
         add table {t} {{ comment \"rules for kube-proxy\" ; }}\n\
         add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}\n\
         add chain {t} nat-output {{ type nat hook output priority -100 ; }}\n\
         add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}\n\
         add chain {t} services\n\
         add chain {t} masquerading\n\
         add chain {t} mark-for-masquerade\n\
         add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
         add rule {t} nat-prerouting jump services\n\
         add rule {t} nat-output jump services\n\
         add rule {t} nat-postrouting jump masquerading\n\
         add rule {t} masquerading mark and 0x4000 == 0 return\n\
         add rule {t} masquerading mark set mark xor 0x4000\n\
         add rule {t} masquerading masquerade fully-random\n\
         add rule {t} mark-for-masquerade mark set mark or 0x4000\n\
         add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n"
    );
    for i in 0..services {
        let ip = cluster_ip(i);
        let hash = &chain_hash(&format!("default/svc{i}:http:tcp"))[..8];
        let svc = format!("service-{hash}-default/svc{i}/tcp/http");
        let eps: Vec<String> = (0..2)
            .map(|e| {
                format!("endpoint-{hash}{e}-default/svc{i}/tcp/http__{endpoint}/{TARGET_PORT}")
            })
            .collect();
        let _ = writeln!(text, "add chain {t} {svc}");
        for ep in &eps {
            let _ = writeln!(text, "add chain {t} {ep}");
            let _ = writeln!(
                text,
                "add rule {t} {ep} ip saddr {endpoint} jump mark-for-masquerade"
            );
            let _ = writeln!(
                text,
                "add rule {t} {ep} meta l4proto tcp dnat to {endpoint}:{TARGET_PORT}"
            );
        }
        let _ = writeln!(
            text,
            "add rule {t} {svc} ip daddr {ip} tcp dport {SERVICE_PORT} ip saddr != {CLUSTER_CIDR} \
             jump mark-for-masquerade"
        );
        let _ = writeln!(
            text,
            "add rule {t} {svc} numgen random mod 2 vmap {{ 0 : goto {} , 1 : goto {} }}",
            eps[0], eps[1]
        );
        let _ = writeln!(
            text,
            "add element {t} service-ips {{ {ip} . tcp . {SERVICE_PORT} : goto {svc} }}"
        );
    }
    text
}

/// Which program loads a rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loader {
    /// `nft -f FILE`.
    Nft,
    /// `iptables-nft-restore FILE` (iptables over nf_tables, Debian 12's default `iptables`).
    IptablesNft,
    /// `iptables-legacy-restore FILE` (x_tables).
    IptablesLegacy,
}

impl Loader {
    pub fn program(self) -> &'static str {
        match self {
            Loader::Nft => "nft",
            Loader::IptablesNft => "iptables-nft-restore",
            Loader::IptablesLegacy => "iptables-legacy-restore",
        }
    }
}

/// What loading a rule set took.
#[derive(Debug, Clone, Serialize)]
pub struct RulesLoad {
    pub what: String,
    pub loader: Loader,
    pub services: usize,
    pub lines: usize,
    pub load_seconds: f64,
}

/// Writes `text` into the lab's run dir and loads it with `loader` in the lab's NODE
/// namespace (never anywhere else: checked first), with one command.
pub fn load(
    lab: &Lab,
    what: &str,
    loader: Loader,
    services: usize,
    text: &str,
) -> Result<RulesLoad> {
    load_within(lab, what, loader, services, text, LOAD_TIMEOUT)
}

/// [`load`] with a bound of its own: the loader is killed after `timeout` (an error saying
/// so), for rule sets so large that their load time is itself a result.
pub fn load_within(
    lab: &Lab,
    what: &str,
    loader: Loader,
    services: usize,
    text: &str,
    timeout: Duration,
) -> Result<RulesLoad> {
    ensure_node_netns_is_not_ours(lab)?;
    let path = lab.run_dir().join(format!("{what}.rules"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let file = path.display().to_string();
    let args: Vec<&str> = match loader {
        Loader::Nft => vec!["nft", "-f", &file],
        Loader::IptablesNft | Loader::IptablesLegacy => vec![loader.program(), &file],
    };
    let started = Instant::now();
    let out = lab.exec_node(&args, timeout)?;
    let load_seconds = started.elapsed().as_secs_f64();
    ensure!(
        out.success(),
        "{} in {} failed ({}): {}",
        args.join(" "),
        lab.node_netns(),
        out.status,
        out.stderr.trim()
    );
    Ok(RulesLoad {
        what: what.to_string(),
        loader,
        services,
        lines: text.lines().count(),
        load_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_count_up_from_10_96_0_1() {
        assert_eq!(cluster_ip(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(cluster_ip(255), Ipv4Addr::new(10, 96, 1, 0));
        assert_eq!(cluster_ip(9_999), Ipv4Addr::new(10, 96, 39, 16));
        assert_eq!(cluster_ip(64_999), Ipv4Addr::new(10, 96, 253, 232));
        // Past one /16: the second one, from its first host address.
        assert_eq!(cluster_ip(65_000), Ipv4Addr::new(10, 97, 0, 1));
        assert_eq!(cluster_ip(99_999), Ipv4Addr::new(10, 97, 136, 184));
        assert_eq!(
            cluster_ip(MAX_SERVICES - 1),
            Ipv4Addr::new(10, 97, 253, 232)
        );
        let mut all: Vec<Ipv4Addr> = (0..MAX_SERVICES).map(cluster_ip).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), MAX_SERVICES);
    }

    #[test]
    fn iptables_shape() {
        let text = kube_proxy_iptables(3, Ipv4Addr::new(10, 200, 0, 12));
        assert!(
            text.contains("*nat\n") && text.ends_with("COMMIT\n"),
            "{text}"
        );
        assert_eq!(text.matches("-A KUBE-SERVICES -d ").count(), 3);
        assert_eq!(text.matches("--mode random --probability 0.5").count(), 3);
        assert_eq!(
            text.matches("-j DNAT --to-destination 10.200.0.12:8080")
                .count(),
            6
        );
        assert!(text.contains("-A KUBE-SERVICES -d 10.96.0.3/32 -p tcp"));
        // The nodeports rule comes after every service rule.
        let last_service = text.rfind("-A KUBE-SERVICES -d ").unwrap();
        assert!(text.rfind("-j KUBE-NODEPORTS").unwrap() > last_service);
        // One declaration per chain: no duplicates.
        let decls: Vec<&str> = text.lines().filter(|l| l.starts_with(':')).collect();
        let mut unique = decls.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(decls.len(), unique.len());
        assert_eq!(decls.len(), 8 + 3 * 3);
    }

    #[test]
    fn iptables_endpoints_are_picked_as_kube_proxy_does() {
        let eps: Vec<SocketAddrV4> = (0..3)
            .map(|p| SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 3), 8080 + p))
            .collect();
        let text = kube_proxy_iptables_to(2, &eps);
        // Endpoint k of n with probability 1/(n-k); the last one takes the rest.
        assert_eq!(text.matches("--probability 0.33333333333 -j").count(), 2);
        assert_eq!(text.matches("--probability 0.50000000000 -j").count(), 2);
        assert_eq!(text.matches("--mode random").count(), 4);
        for ep in &eps {
            let dnat = format!("-j DNAT --to-destination {ep}\n");
            assert_eq!(text.matches(&dnat).count(), 2, "{ep}");
        }
        let svc1 = text
            .lines()
            .filter(|l| l.contains("\"default/svc1:http -> "))
            .collect::<Vec<_>>();
        assert_eq!(svc1.len(), 3);
        assert!(svc1[2].ends_with(&format!(
            "-> 10.200.0.3:8082\" -j KUBE-SEP-{}",
            chain_hash("default/svc1:http:tcp:2:10.200.0.3:8082")
        )));
        // Two endpoints on one address, as `kube_proxy_iptables` writes them.
        let same = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 12), TARGET_PORT);
        assert_eq!(
            kube_proxy_iptables_to(3, &[same, same]),
            kube_proxy_iptables(3, Ipv4Addr::new(10, 200, 0, 12))
        );
    }

    #[test]
    fn nftables_shape() {
        let text = kube_proxy_nftables(2, Ipv4Addr::new(10, 200, 0, 12));
        assert!(text.contains("vmap @service-ips"));
        assert_eq!(text.matches("numgen random mod 2 vmap").count(), 2);
        assert!(text.contains(
            "add element ip kube-proxy service-ips { 10.96.0.2 . tcp . 80 : goto service-"
        ));
        assert_eq!(
            text.matches("meta l4proto tcp dnat to 10.200.0.12:8080")
                .count(),
            4
        );
        assert!(conntrack_rules().contains("ct state new"));
    }
}
