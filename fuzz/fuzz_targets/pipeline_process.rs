//! The whole pipeline over arbitrary frames against the fixture tables: no
//! panic, and a forwarded frame never exceeds its chunk.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::{split_pipeline_input, CHUNK};
use sluice_pipeline::{fixtures, process, Verdict};
use sluice_tables::Tables;

static TABLES: OnceLock<Tables> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let tables = TABLES.get_or_init(fixtures::tables);
    let Some((ingress, frame)) = split_pipeline_input(data) else {
        return;
    };
    let mut chunk = [0u8; CHUNK];
    let copied = frame.len().min(CHUNK);
    chunk[..copied].copy_from_slice(&frame[..copied]);
    // An input longer than the chunk is passed with its real length, which
    // the pipeline must refuse.
    if let Verdict::Forward { len, .. } = process(&mut chunk, frame.len(), ingress, tables, 0) {
        assert!(len <= CHUNK);
    }
});
