//! Debian's Prometheus scrapes the agent's `/metrics` (`--prometheus-serve-addr`)
//! during a lab run, and PromQL answers what the test did:
//!
//! - the scrape target is up;
//! - `sluice_forward_count_total` grows with allowed traffic (client -> web);
//! - N UDP datagrams the web policy denies are exactly N engine drops
//!   (`sluice_drop_count_total{reason="policy_denied"}`) and exactly N Hubble
//!   drop events (`hubble_flows_processed_total{type="Drop",protocol="UDP"}`);
//! - `hubble_drop_total{reason="POLICY_DENIED",protocol="UDP"}` counts at
//!   least those N and exactly the DROPPED UDP flows `sluice observe` shows
//!   (Hubble counts every DROPPED flow: drop and policy-verdict events);
//! - `hubble_tcp_flags_total{flag="SYN"}` saw the client's SYNs.
//!
//! Prometheus runs in the lab's node namespace on its loopback, with its own
//! config and storage directory; it is ended by its PID and its directory
//! removed when the test ends. Run as root:
//! `cargo test --release -p sluice-tests --test observe_prometheus`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::ensure;
use sluice_tests::observe::lab::{ObserveLab, ObserveLabOptions, CLIENT, INTRUDER, WEB, WEB_PORT};
use sluice_tests::observe::observer::{observe_json, text};
use sluice_tests::observe::prometheus::Prometheus;
use sluice_tests::observe::traffic::{tcp_connect, udp_send, Connect};
use sluice_tests::service_checks::{root_or_skip, Checks};

/// The node namespace's loopback: the agent's metrics and Prometheus's API.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Cilium's agent metrics port.
const METRICS_PORT: u16 = 9962;
const PROMETHEUS_PORT: u16 = 9090;
/// Denied datagrams the test sends: the exact count the metrics must show.
const DENIED_DATAGRAMS: u32 = 7;
/// Scrapes are every second; a value may take a few to show up.
const METRIC_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn prometheus_scrapes_the_agent_and_promql_returns_the_counts() {
    if !root_or_skip("prometheus_scrapes_the_agent_and_promql_returns_the_counts") {
        return;
    }
    let metrics = SocketAddr::new(LOOPBACK, METRICS_PORT);
    let observe = ObserveLab::start(&ObserveLabOptions {
        http: Some(metrics),
        policies: true,
        dns_server: false,
    })
    .unwrap_or_else(|e| panic!("observe lab up: {e:#}"));
    let lab = &observe.lab;
    let prometheus = Prometheus::start(lab, metrics, SocketAddr::new(LOOPBACK, PROMETHEUS_PORT))
        .unwrap_or_else(|e| panic!("prometheus up: {e:#}"));
    let web = observe.ip(WEB);

    let mut checks = Checks::new();
    checks.run("the agent's metrics target is up", || {
        let deadline = std::time::Instant::now() + METRIC_TIMEOUT;
        loop {
            let targets = prometheus.targets(lab)?;
            let up = targets.iter().any(|(url, health, _)| {
                url == &format!("http://{metrics}/metrics") && health == "up"
            });
            if up {
                return Ok(());
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "targets after {METRIC_TIMEOUT:?}: {targets:?}\n{}",
                prometheus.log_tail(20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    checks.run(
        "sluice_forward_count_total grows with allowed traffic",
        || {
            let query = "sum(sluice_forward_count_total)";
            let before = prometheus
                .query(lab, query)?
                .first()
                .map(|(_, v)| *v)
                .unwrap_or(0.0);
            for _ in 0..3 {
                let got = tcp_connect(lab, CLIENT, web, WEB_PORT)?;
                ensure!(got == Connect::Open, "client -> web:{WEB_PORT}: {got:?}");
            }
            // Three connections are at least 3 x (SYN, ACK, request, FIN) each way.
            let after =
                prometheus.wait_value(lab, query, METRIC_TIMEOUT, |v| v >= before + 12.0)?;
            eprintln!("{query}: {before} -> {after}");
            Ok(())
        },
    );
    checks.run("hubble_tcp_flags_total counted the SYNs", || {
        let query = r#"sum(hubble_tcp_flags_total{flag="SYN"})"#;
        prometheus.wait_value(lab, query, METRIC_TIMEOUT, |v| v >= 3.0)?;
        Ok(())
    });
    checks.run("denied datagrams: exact engine and Hubble drop counts", || {
        udp_send(lab, INTRUDER, web, 5353, DENIED_DATAGRAMS)?;
        let n = f64::from(DENIED_DATAGRAMS);
        let engine = r#"sum(sluice_drop_count_total{reason="policy_denied"})"#;
        let got = prometheus.wait_value(lab, engine, METRIC_TIMEOUT, |v| v >= n)?;
        ensure!(got == n, "{engine} = {got}, expected exactly {n}");
        let events =
            r#"sum(hubble_flows_processed_total{type="Drop",verdict="DROPPED",protocol="UDP"})"#;
        let got = prometheus.wait_value(lab, events, METRIC_TIMEOUT, |v| v >= n)?;
        ensure!(got == n, "{events} = {got}, expected exactly {n}");
        let drops = r#"sum(hubble_drop_total{reason="POLICY_DENIED",protocol="UDP"})"#;
        let got = prometheus.wait_value(lab, drops, METRIC_TIMEOUT, |v| v >= n)?;
        let flows = observe_json(
            lab,
            &["--all", "--verdict", "DROPPED", "--protocol", "udp", "--drop-reason-desc", "POLICY_DENIED"],
        )?;
        ensure!(
            flows.iter().all(|f| text(f, &["source", "pod_name"]) == "intruder"),
            "denied UDP flows from elsewhere: {flows:?}"
        );
        ensure!(
            got == flows.len() as f64,
            "{drops} = {got}, but sluice observe shows {} such flows",
            flows.len()
        );
        Ok(())
    });
    checks.run(
        "hubble_flows_processed_total and the lost-event counter exist",
        || {
            prometheus.wait_value(
                lab,
                "sum(hubble_flows_processed_total)",
                METRIC_TIMEOUT,
                |v| v > 0.0,
            )?;
            let lost = prometheus.query(lab, "sum(hubble_lost_events_total)")?;
            ensure!(
                lost.iter().all(|(_, v)| *v == 0.0),
                "events were lost in a quiet lab: {lost:?}"
            );
            Ok(())
        },
    );
    drop(prometheus);
    checks.finish();
}
