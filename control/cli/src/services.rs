//! `sluice service list`: the services the agent hands the engine.

use std::fmt::Write as _;
use std::net::SocketAddr;

use sluice_tables::{
    BackendState, FrontendKind, L4Protocol, LbAlgorithm, LbConfig, NoBackendResponse, Service,
};

fn protocol(p: L4Protocol) -> &'static str {
    match p {
        L4Protocol::Tcp => "TCP",
        L4Protocol::Udp => "UDP",
        L4Protocol::Sctp => "SCTP",
    }
}

fn kind(k: FrontendKind) -> &'static str {
    match k {
        FrontendKind::ClusterIp => "ClusterIP",
        FrontendKind::NodePort => "NodePort",
        FrontendKind::LoadBalancer => "LoadBalancer",
        FrontendKind::ExternalIp => "ExternalIP",
        FrontendKind::HostPort => "HostPort",
    }
}

/// The table `sluice service list` prints.
pub fn render(services: &[Service], lb: &LbConfig) -> String {
    let mut out = String::new();
    let masquerade = match &lb.masquerade {
        None => "off".to_string(),
        Some(m) => {
            let addrs: Vec<String> = m.addrs.iter().map(|a| a.to_string()).collect();
            format!("{} ports {}-{}", addrs.join(","), m.port_min, m.port_max)
        }
    };
    let _ = writeln!(
        out,
        "Maglev table size {} · no backend: {} · masquerade: {masquerade}",
        lb.maglev_table_size,
        match lb.no_backend {
            NoBackendResponse::Reject => "reject",
            NoBackendResponse::Drop => "drop",
        }
    );
    let _ = writeln!(
        out,
        "{:>5}  {:<32} {:<14} {:<5} {:<9} {:<9} {:<7} {:<7}",
        "ID", "SERVICE", "PORT", "PROTO", "ALGORITHM", "AFFINITY", "EXT-TP", "INT-TP"
    );
    for s in services {
        let policy = |local: bool| if local { "Local" } else { "Cluster" };
        let _ = writeln!(
            out,
            "{:>5}  {:<32} {:<14} {:<5} {:<9} {:<9} {:<7} {:<7}",
            s.id,
            s.name,
            if s.port_name.is_empty() {
                "-"
            } else {
                &s.port_name
            },
            protocol(s.protocol),
            match s.algorithm {
                LbAlgorithm::Random => "random",
                LbAlgorithm::Maglev => "maglev",
            },
            s.affinity_timeout_s
                .map_or("-".to_string(), |t| format!("{t}s")),
            policy(s.external_traffic_local),
            policy(s.internal_traffic_local),
        );
        for f in &s.frontends {
            let _ = writeln!(
                out,
                "         frontend {:<12} {}/{}",
                kind(f.kind),
                SocketAddr::new(f.addr, f.port),
                protocol(s.protocol)
            );
        }
        if s.backends.is_empty() {
            let _ = writeln!(out, "         backend  (none)");
        }
        for b in &s.backends {
            let _ = writeln!(
                out,
                "         backend  {:<5} {:<40} {}{}",
                b.id,
                SocketAddr::new(b.addr, b.port).to_string(),
                match b.state {
                    BackendState::Ready => "ready",
                    BackendState::Terminating => "terminating",
                },
                if b.local { " local" } else { "" }
            );
        }
        if !s.source_ranges.is_empty() {
            let r: Vec<String> = s.source_ranges.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(out, "         source ranges {}", r.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_tables::{Backend, Frontend};

    #[test]
    fn a_service_shows_frontends_backends_and_policies() {
        let s = Service {
            id: 3,
            name: "default/web".into(),
            port_name: "http".into(),
            protocol: L4Protocol::Tcp,
            frontends: vec![Frontend {
                kind: FrontendKind::ClusterIp,
                addr: "fd00:96::10".parse().unwrap(),
                port: 80,
            }],
            backends: vec![Backend {
                id: 7,
                addr: "10.200.0.5".parse().unwrap(),
                port: 8080,
                state: BackendState::Terminating,
                local: true,
            }],
            algorithm: LbAlgorithm::Maglev,
            affinity_timeout_s: Some(600),
            external_traffic_local: false,
            internal_traffic_local: true,
            source_ranges: Vec::new(),
        };
        let text = render(&[s], &LbConfig::default());
        assert!(
            text.starts_with("Maglev table size 16381 · no backend: reject · masquerade: off\n")
        );
        assert!(text.contains("default/web"), "{text}");
        assert!(text.contains(" maglev "), "{text}");
        assert!(text.contains(" 600s "), "{text}");
        assert!(text.contains("Cluster Local"), "{text}");
        assert!(
            text.contains("frontend ClusterIP    [fd00:96::10]:80/TCP"),
            "{text}"
        );
        assert!(text.contains("10.200.0.5:8080"), "{text}");
        assert!(text.contains("terminating local"), "{text}");
    }
}
