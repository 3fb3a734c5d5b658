//! The whole pipeline over arbitrary frames against the fixture tables: no
//! panic, and a forwarded frame never exceeds its chunk.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{split_pipeline_input, CHUNK};
use sluice_pipeline::{fixtures, process, FlowTables, Verdict};
use sluice_tables::Tables;

/// The service tables: the fixture pods and uplink plus services and masquerade.
static TABLES: OnceLock<Tables> = OnceLock::new();
/// One flow table for the whole run, so inputs also meet tracked flows.
static FLOWS: OnceLock<FlowTables> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let tables = TABLES.get_or_init(fixtures::service_tables);
    let flows = FLOWS.get_or_init(fixtures::flows);
    let Some((ingress, frame)) = split_pipeline_input(data) else {
        return;
    };
    let mut chunk = [0u8; CHUNK];
    let copied = frame.len().min(CHUNK);
    chunk[..copied].copy_from_slice(&frame[..copied]);
    // An input longer than the chunk is passed with its real length, which
    // the pipeline must refuse.
    if let Verdict::Forward { len, .. } | Verdict::Reject { len, .. } =
        process(&mut chunk, frame.len(), ingress, tables, flows, 0)
    {
        assert!(len <= CHUNK);
    }
});
