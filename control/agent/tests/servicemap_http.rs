//! The HTTP server over a real TCP listener on 127.0.0.1:0: /metrics,
//! /api/servicemap fed by flows pushed into the hub, the page, /healthz.

use std::sync::Arc;
use std::time::Duration;

use sluice_agent::flows::FlowHub;
use sluice_agent::http;
use sluice_agent::servicemap::ServiceMapView;
use sluice_api::hubble::{CiliumEventType, Endpoint, Flow, Ip, Layer4, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET; (status, headers, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn flow(src_app: &str, dst_app: &str, verdict: &str) -> Flow {
    let endpoint = |app: &str| {
        Some(Endpoint {
            identity: 1000,
            namespace: "demo".into(),
            pod_name: format!("{app}-1"),
            labels: vec![format!("k8s:app={app}")],
            ..Endpoint::default()
        })
    };
    Flow {
        time: "2026-11-28T02:11:20.000000001Z".into(),
        verdict: verdict.into(),
        ip: Some(Ip {
            source: "10.200.0.2".into(),
            destination: "10.200.0.3".into(),
            ip_version: "IPv4".into(),
            ..Ip::default()
        }),
        l4: Some(Layer4 {
            tcp: Some(Tcp {
                source_port: 40000,
                destination_port: 80,
                flags: None,
            }),
            ..Layer4::default()
        }),
        source: endpoint(src_app),
        destination: endpoint(dst_app),
        flow_type: "L3_L4".into(),
        event_type: Some(CiliumEventType {
            event_type: 4,
            sub_type: 0,
        }),
        ..Flow::default()
    }
}

#[tokio::test]
async fn routes_serve_metrics_the_map_and_the_page() {
    let hub = Arc::new(FlowHub::new(64));
    let addr = http::parse_serve_addr("127.0.0.1:0").unwrap().unwrap();
    let server = http::serve(addr, Arc::clone(&hub)).await.unwrap();
    assert_ne!(server.addr.port(), 0);

    hub.push(flow("client", "web", "FORWARDED"));
    hub.push(flow("client", "web", "FORWARDED"));
    hub.push(flow("client", "db", "DROPPED"));
    hub.set_stats(serde_json::json!({"conntrack": {"capacity": 100, "entries": 5}}));

    // The consumer runs on its own task: wait until it has seen all three.
    let mut view = ServiceMapView::default();
    for _ in 0..100 {
        let (status, head, body) = get(server.addr, "/api/servicemap").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        view = serde_json::from_str(&body).unwrap();
        if view.edges.iter().map(|e| e.flows).sum::<u64>() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let edges: Vec<(&str, u64)> = view
        .edges
        .iter()
        .map(|e| (e.id.as_str(), e.flows))
        .collect();
    assert_eq!(
        edges,
        [
            ("demo/client->demo/db tcp/80 DROPPED", 1),
            ("demo/client->demo/web tcp/80 FORWARDED", 2),
        ]
    );
    // Three flows within the last second: a rate of 0.2 + 0.1 over 10 s.
    assert!(view.edges.iter().all(|e| e.rate > 0.0), "{view:?}");

    let (status, head, body) = get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        body.contains(
            "hubble_flows_processed_total{protocol=\"TCP\",type=\"Trace\",subtype=\"to-endpoint\",verdict=\"FORWARDED\"} 2\n"
        ),
        "{body}"
    );
    assert!(body.contains("sluice_conntrack_entries 5.0\n"), "{body}");
    assert!(body.ends_with("# EOF\n"));

    let (status, head, page) = get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    for needle in [
        "fetch(\"/api/servicemap\"",
        "setInterval(refresh, 1000)",
        "id=\"graph\"",
        "id=\"edge-rows\"",
        "id=\"node-rows\"",
        "tr.dataset.edge = edge.id",
        "\"data-edge\": edge.id",
        "\"data-node\": node.id",
    ] {
        assert!(page.contains(needle), "page lacks {needle}");
    }
    assert!(
        !page.contains("http://") || !page.contains("<script src"),
        "no external scripts"
    );

    let (status, _, body) = get(server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = get(server.addr, "/nothing").await;
    assert_eq!(status, 404);
    server.abort();
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_the_flag_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::serve(addr, Arc::new(FlowHub::new(4)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--prometheus-serve-addr") && err.contains(&addr.to_string()),
        "{err}"
    );
}
