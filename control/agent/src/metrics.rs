//! Prometheus metrics of the agent's HTTP server (`/metrics`): Hubble's
//! flow metrics counted from the flow stream ([`hubble`]) and the engine's
//! counters and lost-event totals read at scrape time ([`engine`]), in one
//! registry built once.

pub mod engine;
pub mod engine_stats;
pub mod flow_labels;
pub mod hubble;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use sluice_api::hubble::Flow;

use crate::flows::FlowHub;

/// The content type of [`Metrics::render`]'s text (OpenMetrics, what the
/// prometheus-client encoder writes; Prometheus asks for it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    hubble: hubble::HubbleMetrics,
}

impl Metrics {
    pub fn new(hub: Arc<FlowHub>) -> Metrics {
        let mut registry = Registry::default();
        let hubble = hubble::HubbleMetrics::default();
        hubble.register(&mut registry);
        registry.register_collector(Box::new(engine::EngineCollector { hub }));
        Metrics { registry, hubble }
    }

    /// Counts one flow of the stream.
    pub fn observe(&self, flow: &Flow) {
        self.hubble.observe(flow);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
