//! The agent's HTTP server (`--prometheus-serve-addr`, Cilium's flag):
//! `GET /metrics` (Prometheus), `GET /` (the service map page),
//! `GET /api/servicemap` (its data, JSON) and `GET /healthz`.
//!
//! One task follows the flow stream and feeds both the Hubble metrics and
//! the service map; when it falls behind, what it missed is counted as lost
//! (never waited for: the stream does not block on its consumers).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sluice_api::events::LostSource;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::flows::FlowHub;
use crate::metrics::{self, Metrics};
use crate::servicemap::{ServiceMap, ServiceMapConfig};

/// The service map page: plain HTML and JavaScript, no external resources.
const SERVICE_MAP_PAGE: &str = include_str!("../assets/servicemap.html");

/// What the handlers read.
#[derive(Debug)]
pub struct HttpState {
    pub metrics: Metrics,
    pub service_map: Mutex<ServiceMap>,
}

impl HttpState {
    pub fn new(hub: Arc<FlowHub>, service_map: ServiceMapConfig) -> Arc<HttpState> {
        Arc::new(HttpState {
            metrics: Metrics::new(hub),
            service_map: Mutex::new(ServiceMap::new(service_map)),
        })
    }

    fn service_map(&self) -> MutexGuard<'_, ServiceMap> {
        self.service_map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `--prometheus-serve-addr`: where to serve, None when off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeAddr(pub Option<SocketAddr>);

/// The flag's value parser.
pub fn parse_serve_addr_flag(text: &str) -> Result<ServeAddr, String> {
    parse_serve_addr(text).map(ServeAddr)
}

/// Parses `--prometheus-serve-addr` as Cilium does: `host:port`, `[v6]:port`
/// or `:port` (every address). Empty means off (None).
pub fn parse_serve_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            format!("--prometheus-serve-addr {text:?}: {port:?} is not a port number")
        })?;
        return Ok(Some(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port,
        )));
    }
    text.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("--prometheus-serve-addr {text:?} is not an address like :9962, 10.0.0.1:9962 or [fd00::1]:9962")
    })
}

/// The routes over `state`.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/", get(page_handler))
        .route("/api/servicemap", get(service_map_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response(),
    }
}

async fn page_handler() -> Html<&'static str> {
    Html(SERVICE_MAP_PAGE)
}

async fn service_map_handler(State(state): State<Arc<HttpState>>) -> Response {
    let view = state.service_map().view(now_ms());
    Json(view).into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Follows the hub's live flows into the metrics and the service map until
/// the hub goes away.
/// Flows it missed count as lost at `HUBBLE_RING_BUFFER` (the hub's totals,
/// which `hubble_lost_events_total` and `sluice status` show).
pub fn spawn_flow_consumer(hub: Arc<FlowHub>, state: Arc<HttpState>) -> JoinHandle<()> {
    let mut flows = hub.subscribe();
    tokio::spawn(async move {
        loop {
            match flows.recv().await {
                Ok(flow) => {
                    state.metrics.observe(&flow);
                    state.service_map().record(&flow, now_ms());
                }
                Err(RecvError::Lagged(n)) => {
                    hub.count_lost(LostSource::HubbleRingBuffer, n);
                    state.service_map().lost(n);
                }
                Err(RecvError::Closed) => break,
            }
        }
    })
}

/// The running server: where it listens, and its tasks.
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    server: JoinHandle<()>,
    consumer: JoinHandle<()>,
}

impl HttpServer {
    pub fn abort(&self) {
        self.server.abort();
        self.consumer.abort();
    }
}

/// Binds `addr` (an unspecified IPv6 address falls back to IPv4's when the
/// host has no IPv6) and serves the routes; errors name the address.
pub async fn serve(addr: SocketAddr, hub: Arc<FlowHub>) -> anyhow::Result<HttpServer> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(_) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            tokio::net::TcpListener::bind(v4)
                .await
                .map_err(|e| anyhow::anyhow!("--prometheus-serve-addr: bind {v4}: {e}"))?
        }
        Err(e) => anyhow::bail!("--prometheus-serve-addr: bind {addr}: {e}"),
    };
    let local = listener.local_addr()?;
    let state = HttpState::new(Arc::clone(&hub), ServiceMapConfig::default());
    let consumer = spawn_flow_consumer(Arc::clone(&hub), Arc::clone(&state));
    let app = router(state);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("metrics and service map server stopped: {e}");
        }
    });
    tracing::info!(addr = %local, "serving /metrics and the service map");
    Ok(HttpServer {
        addr: local,
        server,
        consumer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_addresses_parse_as_ciliums_flag() {
        assert_eq!(parse_serve_addr("").unwrap(), None);
        assert_eq!(
            parse_serve_addr(":9962").unwrap(),
            Some("[::]:9962".parse().unwrap())
        );
        assert_eq!(
            parse_serve_addr("10.0.0.1:9962").unwrap(),
            Some("10.0.0.1:9962".parse().unwrap())
        );
        assert_eq!(
            parse_serve_addr("[fd00::1]:9962").unwrap(),
            Some("[fd00::1]:9962".parse().unwrap())
        );
        let err = parse_serve_addr(":http").unwrap_err();
        assert!(
            err.contains("--prometheus-serve-addr") && err.contains("\"http\""),
            "{err}"
        );
        assert!(parse_serve_addr("10.0.0.1")
            .unwrap_err()
            .contains("10.0.0.1"));
    }

    #[test]
    fn the_agent_flag_is_off_by_default_and_refuses_bad_addresses() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["sluice-agent", "--manifests", "/tmp"];
            argv.extend_from_slice(extra);
            crate::run::AgentArgs::try_parse_from(argv)
        };
        assert_eq!(parse(&[]).unwrap().prometheus_serve_addr, ServeAddr(None));
        assert_eq!(
            parse(&["--prometheus-serve-addr", ":9962"])
                .unwrap()
                .prometheus_serve_addr,
            ServeAddr(Some("[::]:9962".parse().unwrap()))
        );
        let err = parse(&["--prometheus-serve-addr", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"localhost\" is not an address"), "{err}");
    }
}
