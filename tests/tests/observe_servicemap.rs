//! The agent's service map page in Debian's headless Chromium: after the
//! client talked to web (directly and through the `web` Service), asked dns
//! for a name, and the intruder was denied by web's policy, the page (its
//! scripts fetch `/api/servicemap`) shows those workloads as nodes and those
//! connections as edges with their protocol, port and verdict. The DOM is
//! taken with `--dump-dom` after the scripts ran; a screenshot is kept at
//! `target/test-artifacts/servicemap.png`.
//!
//! Chromium runs in the lab's node namespace with a fresh profile, and is
//! ended by its PID. Run as root:
//! `cargo test --release -p sluice-tests --test observe_servicemap`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{ensure, Context};
use sluice_tests::observe::artifact_path;
use sluice_tests::observe::chromium::{dump_dom, png_size, screenshot};
use sluice_tests::observe::lab::{
    ObserveLab, ObserveLabOptions, CLIENT, DNS, INTRUDER, SERVICE_PORT, WEB, WEB_PORT,
};
use sluice_tests::observe::observer::wait_for_flow;
use sluice_tests::observe::traffic::{dns_query, tcp_connect, Connect};
use sluice_tests::service_checks::{root_or_skip, Checks};

const HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9962);
const SCREEN: (u32, u32) = (1280, 800);

/// Values of attribute `name` in serialized HTML, with entities decoded.
fn attribute_values(dom: &str, name: &str) -> BTreeSet<String> {
    let marker = format!(" {name}=\"");
    dom.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &dom[at + marker.len()..];
            rest.find('"').map(|end| decode_entities(&rest[..end]))
        })
        .collect()
}

/// The opening tag of the first element whose tag holds `attribute`.
fn element_tag<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let at = dom.find(attribute)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

fn decode_entities(text: &str) -> String {
    text.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[test]
fn the_service_map_page_shows_the_workloads_and_their_connections() {
    if !root_or_skip("the_service_map_page_shows_the_workloads_and_their_connections") {
        return;
    }
    let observe = ObserveLab::start(&ObserveLabOptions {
        http: Some(HTTP),
        policies: true,
        dns_server: true,
    })
    .unwrap_or_else(|e| panic!("observe lab up: {e:#}"));
    let lab = &observe.lab;
    let web = observe.ip(WEB);
    let mut checks = Checks::new();
    checks.run(
        "traffic: client -> web (direct and service), client -> dns, intruder denied",
        || {
            ensure!(
                tcp_connect(lab, CLIENT, web, WEB_PORT)? == Connect::Open,
                "client -> web"
            );
            let via_service = tcp_connect(lab, CLIENT, observe.service_ip(), SERVICE_PORT)?;
            ensure!(
                via_service == Connect::Open,
                "client -> web service: {via_service:?}"
            );
            let answer = dns_query(lab, CLIENT, observe.ip(DNS), "www.observe.test")?;
            ensure!(answer.0 == 0, "DNS answer {answer:?}");
            let denied = tcp_connect(lab, INTRUDER, web, WEB_PORT)?;
            ensure!(denied == Connect::Timeout, "intruder -> web: {denied:?}");
            // The map is fed by the same stream: once the agent has the drop,
            // the page can show it.
            wait_for_flow(
                lab,
                &["--all", "--from-pod", "default/intruder"],
                "from the intruder",
                |_| true,
            )?;
            Ok(())
        },
    );

    let url = format!("http://{HTTP}/");
    let expected_nodes = [
        "default/client",
        "default/web",
        "default/dns",
        "default/intruder",
    ];
    let expected_edges = [
        "default/client->default/web tcp/8080 FORWARDED",
        "default/client->default/dns udp/53 FORWARDED",
        "default/intruder->default/web tcp/8080 DROPPED",
    ];
    checks.run(
        "the page's DOM holds the nodes and edges (SVG and tables)",
        || {
            let dom = dump_dom(lab, &url)?;
            let nodes = attribute_values(&dom, "data-node");
            let edges = attribute_values(&dom, "data-edge");
            for node in expected_nodes {
                ensure!(nodes.contains(node), "no node {node}; nodes {nodes:?}");
            }
            for edge in expected_edges {
                ensure!(edges.contains(edge), "no edge {edge:?}; edges {edges:?}");
            }
            // An SVG node group and a table row per workload; a path and a row per edge.
            for node in expected_nodes {
                let attr = format!("data-node=\"{node}\"");
                ensure!(
                    dom.matches(&attr).count() >= 2,
                    "{node}: not in both the graph and the table"
                );
            }
            ensure!(
                dom.contains("class=\"edge DROPPED\"") && dom.contains("class=\"edge FORWARDED\""),
                "no drawn DROPPED and FORWARDED edges"
            );
            ensure!(
                dom.contains("POLICY_DENIED"),
                "the drop reason is not on the page"
            );
            ensure!(
                dom.contains("web-ingress"),
                "the denying policy is not on the page"
            );
            // The status line carries the counts only after a successful render.
            let status = element_tag(&dom, "id=\"status\"")
                .ok_or_else(|| anyhow::anyhow!("no status element in the page"))?;
            ensure!(
                !status.contains("error") && status.contains("data-edges="),
                "the page did not render the map: {status}"
            );
            // Between the pods exactly the connections made: a reply counts on
            // its connection's edge, never on one of its own.
            let pod_edges: BTreeSet<&str> = edges
                .iter()
                .map(String::as_str)
                .filter(|e| e.starts_with("default/") && e.contains("->default/"))
                .collect();
            ensure!(
                pod_edges == expected_edges.into_iter().collect(),
                "edges between the pods {pod_edges:?}, expected exactly {expected_edges:?}"
            );
            Ok(())
        },
    );
    checks.run("a 1280x800 screenshot is kept as a test artifact", || {
        let path = artifact_path("servicemap.png")?;
        screenshot(lab, &url, &path, SCREEN)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        ensure!(
            png_size(&bytes)? == SCREEN,
            "{} is not {SCREEN:?}",
            path.display()
        );
        // A blank page of the same size, in the same run, as the baseline: the
        // drawn map (nodes, edges, tables) compresses far worse.
        let blank_path = lab.run_dir().join("blank.png");
        screenshot(lab, "about:blank", &blank_path, SCREEN)?;
        let blank = std::fs::metadata(&blank_path)?.len();
        ensure!(
            bytes.len() as u64 > 2 * blank,
            "the screenshot ({} bytes) is hardly more than a blank page ({blank} bytes)",
            bytes.len()
        );
        eprintln!(
            "screenshot: {} ({} bytes; blank {blank})",
            path.display(),
            bytes.len()
        );
        Ok(())
    });
    checks.finish();
}
