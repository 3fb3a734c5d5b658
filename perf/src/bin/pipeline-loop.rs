//! Runs `process()` in a loop over one case, for callgrind (`perf/profile.sh`).
//!
//! ```text
//! pipeline-loop [MILLIONS] [CASE]
//! ```
//! MILLIONS of frames (default 1), CASE one of the names from
//! `sluice_perf::cases()` (default `ipv4_udp_64B_fwd`) or `mixed` (the
//! long-flow cases without policy in turn). A case's clock step makes each
//! frame a new connection (`_new` cases). Each frame is copied into the chunk first, as the engine's rx does not
//! but the pipeline rewrites the frame in place; the copy shows separately in the
//! profile (`memcpy`), `sluice_pipeline::process` is the cost of the pipeline.
//! Verdicts are counted as the engine counts them (drops by `DropReason::index`).

use std::process::ExitCode;

use sluice_perf::{case, cases, check, Case, Counters};
use sluice_pipeline::fixtures;
use sluice_pipeline::process;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let millions: u64 = match args.next().map(|a| a.parse()) {
        None => 1,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("usage: pipeline-loop [MILLIONS] [CASE|mixed]: {e}");
            return ExitCode::from(2);
        }
    };
    let name = args.next().unwrap_or_else(|| "ipv4_udp_64B_fwd".into());
    let selected: Vec<Case> = if name == "mixed" {
        // The long-flow cases against the plain fixture tables.
        cases()
            .into_iter()
            .filter(|c| c.now_step_ns == 0 && !c.name.ends_with("_policy1k"))
            .collect()
    } else {
        match case(&name) {
            Some(c) => vec![c],
            None => {
                let names: Vec<_> = cases().iter().map(|c| c.name).collect();
                eprintln!("unknown case {name:?}; one of {names:?} or mixed");
                return ExitCode::from(2);
            }
        }
    };
    if let Err(e) = check(&cases()) {
        eprintln!("fixture verdict changed: {e}");
        return ExitCode::FAILURE;
    }

    let tables = (selected[0].tables)();
    let step = selected[0].now_step_ns;
    let flows = fixtures::flows();
    let mut chunk = vec![0u8; fixtures::DEFAULT_CAPACITY];
    let mut counters = Counters::default();
    let frames = millions * 1_000_000;
    for i in 0..frames {
        let f = &selected[(i % selected.len() as u64) as usize].fixture;
        let len = f.input.len();
        chunk[..len].copy_from_slice(&f.input);
        let now = i.wrapping_mul(step.max(1));
        let verdict = process(&mut chunk, len, f.ingress_ifindex, &tables, &flows, now);
        counters.count(std::hint::black_box(verdict));
    }
    let dropped: u64 = counters.drops.iter().sum();
    println!(
        "case {name}: {frames} frames, {} forwarded, {dropped} dropped",
        counters.forwarded
    );
    ExitCode::SUCCESS
}
