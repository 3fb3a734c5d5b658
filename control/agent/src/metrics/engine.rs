//! Engine counters as Prometheus metrics, read from the latest stats
//! document at scrape time (a collector: nothing to keep in sync between
//! scrapes), with Cilium's agent metric names under the `sluice_` prefix
//! where the meaning matches (`cilium_forward_count_total` ->
//! `sluice_forward_count_total`, `cilium_drop_count_total` ->
//! `sluice_drop_count_total`, `cilium_bpf_map_pressure` for the conntrack
//! map -> `sluice_conntrack_pressure`), and the lost-event totals as
//! `hubble_lost_events_total{source}`.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sluice_api::events::LostSource;

use super::engine_stats::EngineStats;
use super::hubble::Labels;
use crate::flows::FlowHub;

/// Reads the hub's latest stats and lost totals on every scrape.
#[derive(Debug)]
pub struct EngineCollector {
    pub hub: Arc<FlowHub>,
}

/// One metric family being written: descriptor first, then its samples.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    metric_type: MetricType,
    samples: Vec<(Labels, Sample)>,
}

enum Sample {
    Counter(u64),
    Gauge(f64),
}

impl Sample {
    fn encode(&self, metric: MetricEncoder) -> fmt::Result {
        match self {
            Sample::Counter(v) => ConstCounter::new(*v).encode(metric),
            Sample::Gauge(v) => ConstGauge::new(*v).encode(metric),
        }
    }
}

impl Family<'_> {
    fn encode(self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        if self.samples.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.metric_type)?;
        if let [(labels, sample)] = self.samples.as_slice() {
            if labels.is_empty() {
                // One sample without labels: `name value`, not `name{} value`.
                return sample.encode(metric);
            }
        }
        for (labels, sample) in &self.samples {
            sample.encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

fn counter<'a>(name: &'a str, help: &'a str, samples: Vec<(Labels, u64)>) -> Family<'a> {
    Family {
        name,
        help,
        metric_type: MetricType::Counter,
        samples: samples
            .into_iter()
            .map(|(l, v)| (l, Sample::Counter(v)))
            .collect(),
    }
}

fn gauge<'a>(name: &'a str, help: &'a str, samples: Vec<(Labels, f64)>) -> Family<'a> {
    Family {
        name,
        help,
        metric_type: MetricType::Gauge,
        samples: samples
            .into_iter()
            .map(|(l, v)| (l, Sample::Gauge(v)))
            .collect(),
    }
}

/// Hubble's `source` label: the lost event source's name, lowercased.
fn lost_source_label(source: LostSource) -> &'static str {
    match source {
        LostSource::PerfEventRingBuffer => "perf_event_ring_buffer",
        LostSource::ObserverEventsQueue => "observer_events_queue",
        LostSource::HubbleRingBuffer => "hubble_ring_buffer",
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // Every source, also at zero, so queries find the series from the start.
        let totals = self.hub.lost_totals();
        let lost: Vec<(Labels, u64)> = [
            LostSource::HubbleRingBuffer,
            LostSource::ObserverEventsQueue,
            LostSource::PerfEventRingBuffer,
        ]
        .into_iter()
        .map(|source| {
            let n = totals
                .iter()
                .filter(|(s, _)| *s == source)
                .map(|(_, n)| n)
                .sum();
            (vec![("source", lost_source_label(source).to_string())], n)
        })
        .collect();
        counter("hubble_lost_events", "Number of lost events", lost).encode(&mut encoder)?;

        // Without an engine document there are no engine metrics at all
        // (absent, not zero: a scrape must not claim counts it never read).
        let Some(document) = self.hub.latest_stats() else {
            return Ok(());
        };
        let stats = match EngineStats::parse(&document) {
            Ok(stats) => stats,
            Err(error) => {
                tracing::warn!("metrics: {error}");
                return Ok(());
            }
        };
        for family in engine_families(&stats) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

fn direction(name: &str) -> (&'static str, String) {
    ("direction", name.to_string())
}

/// Every engine metric family for one stats document.
fn engine_families(stats: &EngineStats) -> Vec<Family<'static>> {
    let mut families = Vec::new();
    let totals = &stats.totals;
    if let Some(forwarded) = &totals.forwarded {
        families.push(counter(
            "sluice_forward_count",
            "Total forwarded packets, by direction (EGRESS: from a pod, INGRESS: from the uplink)",
            vec![
                (vec![direction("EGRESS")], forwarded.egress.packets),
                (vec![direction("INGRESS")], forwarded.ingress.packets),
            ],
        ));
        families.push(counter(
            "sluice_forward_bytes",
            "Total forwarded bytes (as sent), by direction",
            vec![
                (vec![direction("EGRESS")], forwarded.egress.bytes),
                (vec![direction("INGRESS")], forwarded.ingress.bytes),
            ],
        ));
    }
    families.push(counter(
        "sluice_received_packets",
        "Frames the engine received on all its sockets",
        vec![(vec![], totals.rx_packets)],
    ));
    families.push(counter(
        "sluice_transmitted_packets",
        "Frames the engine transmitted on all its sockets",
        vec![(vec![], totals.tx_packets)],
    ));
    families.extend(drop_families(stats));
    families.extend(conntrack_families(stats));
    let busy: Vec<(Labels, f64)> = stats
        .workers
        .iter()
        .filter_map(|w| {
            w.busy_ratio()
                .map(|r| (vec![("worker", w.worker.to_string())], r))
        })
        .collect();
    families.push(gauge(
        "sluice_worker_busy_ratio",
        "Share of a worker's time spent on passes that received frames (0..1)",
        busy,
    ));
    if let Some(emitted) = totals.events_emitted {
        families.push(counter(
            "sluice_events_emitted",
            "Flow events the engine's workers queued for the events socket",
            vec![(vec![], emitted)],
        ));
    }
    if let Some(lost) = totals.events_lost {
        families.push(counter(
            "sluice_events_lost",
            "Flow events lost because a worker's event queue was full",
            vec![(vec![], lost)],
        ));
    }
    families.push(gauge(
        "sluice_endpoints",
        "Local endpoints in the engine's published tables",
        vec![(vec![], stats.endpoints as f64)],
    ));
    families.push(gauge(
        "sluice_engine_tables_generation",
        "Generation of the node state the engine's tables were built from",
        vec![(vec![], stats.generation as f64)],
    ));
    families
}

/// Drops by reason (Sluice's reason names) and, when the engine splits
/// them, by direction (else an empty direction); reasons at zero are left
/// out as Cilium does. Bytes are counted per direction only (the engine
/// keeps no bytes per reason), so `sluice_drop_bytes_total` has no reason.
fn drop_families(stats: &EngineStats) -> Vec<Family<'static>> {
    let mut packets = Vec::new();
    for row in stats.drops.iter().filter(|r| r.count > 0) {
        let reason = ("reason", row.name.clone());
        match (row.ingress, row.egress) {
            (Some(ingress), Some(egress)) => {
                for (dir, n) in [("EGRESS", egress), ("INGRESS", ingress)] {
                    if n > 0 {
                        packets.push((vec![reason.clone(), direction(dir)], n));
                    }
                }
            }
            _ => packets.push((vec![reason, direction("")], row.count)),
        }
    }
    let mut families = vec![counter(
        "sluice_drop_count",
        "Total dropped packets, by reason and direction",
        packets,
    )];
    if let Some(dropped) = &stats.totals.dropped {
        families.push(counter(
            "sluice_drop_bytes",
            "Total dropped bytes (as received), by direction",
            vec![
                (vec![direction("EGRESS")], dropped.egress.bytes),
                (vec![direction("INGRESS")], dropped.ingress.bytes),
            ],
        ));
    }
    families
}

fn conntrack_families(stats: &EngineStats) -> Vec<Family<'static>> {
    let ct = &stats.conntrack;
    let pressure = if ct.capacity > 0 {
        ct.entries as f64 / ct.capacity as f64
    } else {
        ct.pressure_permille as f64 / 1000.0
    };
    vec![
        gauge(
            "sluice_conntrack_entries",
            "Connection tracking entries in use",
            vec![(vec![], ct.entries as f64)],
        ),
        gauge(
            "sluice_conntrack_capacity",
            "Connection tracking entries the table holds at most",
            vec![(vec![], ct.capacity as f64)],
        ),
        gauge(
            "sluice_conntrack_pressure",
            "Fill of the connection tracking table, entries / capacity (0..1, as cilium_bpf_map_pressure)",
            vec![(vec![], pressure)],
        ),
        counter(
            "sluice_conntrack_inserts",
            "Connection tracking entries created",
            vec![(vec![], ct.inserts)],
        ),
        counter(
            "sluice_conntrack_insert_failures",
            "New flows refused because the connection tracking table was full",
            vec![(vec![], ct.insert_failures)],
        ),
        counter(
            "sluice_conntrack_gc_expired",
            "Connection tracking entries removed by garbage collection after their timeout",
            vec![(vec![], ct.expired)],
        ),
        counter(
            "sluice_conntrack_gc_evictions",
            "Connection tracking entries evicted before their timeout to make room",
            vec![(vec![], ct.evictions)],
        ),
    ]
}
