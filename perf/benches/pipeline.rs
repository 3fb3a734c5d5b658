//! Per-frame cost of `sluice_pipeline::process` on the common cases, and of the
//! endpoint lookup as the table grows.
//!
//! ```text
//! CARGO_TARGET_DIR=target-perf cargo bench -p sluice-perf --bench pipeline
//! ```
//! Every iteration handles a batch of 64 frames, each copied from its fixture
//! into its own 2048-byte chunk first (the pipeline rewrites frames in place).
//! The `copy` benchmark does only that copy, so `copy_process - copy` is the
//! pipeline; the summary printed at the end shows both side by side per frame.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice_perf::{cases, check, endpoint_table, shuffled, BATCH};
use sluice_pipeline::{fixtures, process};

const CHUNK: usize = fixtures::DEFAULT_CAPACITY;
const TABLE_SIZES: [u32; 3] = [10, 1_000, 100_000];

fn pipeline(c: &mut Criterion) {
    let cases = cases();
    check(&cases).expect("fixture verdicts");
    let mut chunks = vec![0u8; BATCH * CHUNK];
    for case in &cases {
        let tables = (case.tables)();
        // Pod-to-pod flows are tracked: after the first batch every frame is
        // a conntrack hit, the steady state of a long flow; `_new` cases step
        // the clock past the flow's timeout at every frame.
        let flows = fixtures::flows();
        let step = case.now_step_ns;
        let mut now = 0u64;
        let f = &case.fixture;
        let (input, len, ingress) = (&f.input[..], f.input.len(), f.ingress_ifindex);
        let mut group = c.benchmark_group(format!("pipeline_{}", case.name));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("copy", |b| {
            b.iter(|| {
                for chunk in chunks.chunks_exact_mut(CHUNK) {
                    chunk[..len].copy_from_slice(input);
                    black_box(&mut *chunk);
                }
            })
        });
        group.bench_function("copy_process", |b| {
            b.iter(|| {
                for chunk in chunks.chunks_exact_mut(CHUNK) {
                    chunk[..len].copy_from_slice(input);
                    now = now.wrapping_add(step);
                    black_box(process(chunk, len, ingress, &tables, &flows, now));
                }
            })
        });
        group.finish();
    }
}

fn endpoint_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint_lookup");
    group.throughput(Throughput::Elements(BATCH as u64));
    for n in TABLE_SIZES {
        let (table, addrs) = endpoint_table(n);
        // More addresses than a batch, in a scattered order, so the large
        // tables are not read from a warm cache line by line.
        let probes = shuffled(&addrs, 4096);
        let mut at = 0;
        group.bench_with_input(BenchmarkId::new("by_ipv4", n), &n, |b, _| {
            b.iter(|| {
                for addr in &probes[at..at + BATCH] {
                    black_box(table.by_ipv4(black_box(*addr)));
                }
                at = (at + BATCH) % probes.len();
            })
        });
    }
    group.finish();
}

/// Where criterion writes its estimates (its own rule: `CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("criterion"),
        None => PathBuf::from("target/criterion"),
    }
}

/// Median of one benchmark in nanoseconds per frame, if it ran.
fn median_per_frame(parts: &[&str]) -> Option<f64> {
    let mut path = criterion_dir();
    for p in parts {
        path.push(p);
    }
    path.push("new/estimates.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let ns = v["median"]["point_estimate"].as_f64()?;
    Some(ns / BATCH as f64)
}

fn summary() {
    println!();
    println!("Per frame, medians (batch of {BATCH}; copy = copying the fixture into its chunk):");
    println!(
        "{:<26} {:>10} {:>16} {:>12} {:>8}",
        "case", "copy ns", "copy+process ns", "process ns", "ratio"
    );
    for case in cases() {
        let group = format!("pipeline_{}", case.name);
        let copy = median_per_frame(&[&group, "copy"]);
        let both = median_per_frame(&[&group, "copy_process"]);
        if let (Some(copy), Some(both)) = (copy, both) {
            println!(
                "{:<26} {:>10.2} {:>16.2} {:>12.2} {:>8.1}",
                case.name,
                copy,
                both,
                both - copy,
                both / copy
            );
        }
    }
    for n in TABLE_SIZES {
        if let Some(ns) = median_per_frame(&["endpoint_lookup", "by_ipv4", &n.to_string()]) {
            println!("endpoint_lookup by_ipv4 n={n:<7} {ns:>8.2} ns per lookup");
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    pipeline(&mut c);
    endpoint_lookup(&mut c);
    c.final_summary();
    summary();
}
