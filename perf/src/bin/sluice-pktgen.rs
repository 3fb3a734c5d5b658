//! `sluice-pktgen`: an AF_XDP packet generator and two sinks, for the namespace lab.
//!
//! ```text
//! sluice-pktgen tx   --dev eth0 --src-mac M --dst-mac M --src-ip A[-B] --dst-ip A[-B]
//!                    [--src-port P[-Q]] [--dst-port P[-Q]] [--size 64] [--flows N]
//!                    [--rate PPS|max] --duration SECS [--cpu N] [--queue 0] [--json]
//! sluice-pktgen rx   --dev eth0 --duration SECS [--queue 0] [--json]   # AF_XDP receive + drop
//! sluice-pktgen sink --dev eth0 --duration SECS [--json]               # XDP_DROP counter
//! ```
//!
//! Interface names resolve in the caller's network namespace: run it inside a pod with
//! `nsenter --net=/run/netns/<pod> -- sluice-pktgen ...`. Every run is bounded by
//! `--duration` (at most 600 s); SIGINT/SIGTERM end it early with a report.
//!
//! `tx` needs no XDP program: an AF_XDP socket bound to a queue can transmit without
//! one. On a veth the socket is in copy mode, where the kernel only sends inside the
//! `sendto` kick that `WorkerIo::flush` makes, 32 frames per call; so the loop is
//! "take up to a batch of frames, stage them, flush". See `sluice_perf::pktgen` for the
//! templates, sizes and the pacer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use sluice_perf::pktgen::{
    loadavg, parse_mac, rates, DevCounters, FlowSpec, GenReport, IpRange, Pacer, PortRange, Rate,
    SinkReport, Templates, XskCounters, MAX_DURATION_SECS,
};
use sluice_xdp::{AttachMode, PodProgram, Sink};
use sluice_xsk::{BindMode, PortId, WorkerIo, XskConfig, XskError, XskStats};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-pktgen",
    about = "AF_XDP packet generator and sinks (run inside a lab namespace, as root)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send UDP frames from an AF_XDP socket on DEV, as fast as possible or at a rate.
    Tx(TxArgs),
    /// Count and drop what arrives on DEV through an AF_XDP socket (sluice_pod program).
    Rx(RxArgs),
    /// Count and drop what arrives on DEV with an XDP_DROP program (sluice_sink).
    Sink(SinkArgs),
}

#[derive(clap::Args, Debug)]
struct TxArgs {
    #[arg(long)]
    dev: String,
    #[arg(long, default_value_t = 0)]
    queue: u32,
    #[arg(long, value_parser = parse_mac)]
    src_mac: [u8; 6],
    #[arg(long, value_parser = parse_mac)]
    dst_mac: [u8; 6],
    /// Source address or inclusive range A-B (IPv4 or IPv6).
    #[arg(long)]
    src_ip: IpRange,
    /// Destination address or range, same family as --src-ip.
    #[arg(long)]
    dst_ip: IpRange,
    #[arg(long, default_value = "10000")]
    src_port: PortRange,
    #[arg(long, default_value = "9")]
    dst_port: PortRange,
    /// Frame size including the 4-byte FCS: 64 puts 60 bytes on the veth.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows to cycle through (default: every combination of the ranges once).
    #[arg(long)]
    flows: Option<u64>,
    /// `max` or packets per second (`10000`, `10k`, `1.5M`).
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Seconds to send (at most 600).
    #[arg(long)]
    duration: f64,
    /// Pin the sending thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Frames staged per flush.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// UMEM frames.
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct RxArgs {
    #[arg(long)]
    dev: String,
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Seconds to count (at most 600).
    #[arg(long)]
    duration: f64,
    /// Pin the receiving thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct SinkArgs {
    #[arg(long)]
    dev: String,
    /// Seconds to count (at most 600).
    #[arg(long)]
    duration: f64,
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Tx(args) => tx(&args).map(|r| print_report(&r, args.json, describe_gen(&r))),
        Cmd::Rx(args) => rx(&args).map(|r| print_report(&r, args.json, describe_sink(&r))),
        Cmd::Sink(args) => sink(&args).map(|r| print_report(&r, args.json, describe_sink(&r))),
    };
    if let Err(err) = result {
        eprintln!("sluice-pktgen: {err:#}");
        std::process::exit(1);
    }
}

fn print_report<T: Serialize>(report: &T, json: bool, text: String) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("sluice-pktgen: cannot serialize the report: {e}"),
        }
    } else {
        println!("{text}");
    }
}

fn describe_gen(r: &GenReport) -> String {
    let rate = r
        .rate_pps
        .map_or_else(|| "max".to_string(), |p| format!("{p} pps"));
    let mut s = format!(
        "tx {} q{}: {} frames sent ({} queued) in {:.3} s = {:.0} pps, {:.1} Mbit/s \
         ({} B frames incl. FCS, {} B on the wire; {:.1} Mbit/s with preamble+IFG); \
         {} flow(s), rate {rate}, batch {}",
        r.dev,
        r.queue,
        r.sent,
        r.queued,
        r.elapsed_s,
        r.pps,
        r.bits_per_second / 1e6,
        r.frame_size,
        r.frame_bytes,
        r.l1_bits_per_second / 1e6,
        r.flows,
        r.batch,
    );
    s.push_str(&format!(
        "\nxsk: tx_invalid_descs {} tx_ring_empty_descs {}",
        r.xsk.tx_invalid_descs, r.xsk.tx_ring_empty_descs
    ));
    if let Some(d) = &r.dev_counters {
        s.push_str(&format!(
            "\n{}: tx_packets +{} tx_bytes +{} tx_dropped +{}",
            r.dev, d.tx_packets, d.tx_bytes, d.tx_dropped
        ));
    }
    s.push_str(&format!("\nload average {}", r.loadavg));
    s
}

fn describe_sink(r: &SinkReport) -> String {
    let mut s = format!(
        "{} {}: {} frames, {} bytes in {:.3} s = {:.0} pps, {:.1} Mbit/s (incl. FCS)",
        r.kind,
        r.dev,
        r.packets,
        r.bytes,
        r.elapsed_s,
        r.pps,
        r.bits_per_second / 1e6
    );
    if let Some(x) = &r.xsk {
        s.push_str(&format!(
            "\nxsk: rx_ring_full {} rx_dropped {} rx_fill_ring_empty_descs {} rx_invalid_descs {}",
            x.rx_ring_full, x.rx_dropped, x.rx_fill_ring_empty_descs, x.rx_invalid_descs
        ));
    }
    if let Some(p) = r.passed_no_socket {
        s.push_str(&format!(
            "\npassed to the kernel (no socket on their queue): {p}"
        ));
    }
    s.push_str(&format!("\nload average {}", r.loadavg));
    s
}

fn check_duration(secs: f64) -> Result<Duration> {
    ensure!(
        secs > 0.0 && secs <= MAX_DURATION_SECS,
        "--duration must be above 0 and at most {MAX_DURATION_SECS} s"
    );
    Ok(Duration::from_secs_f64(secs))
}

/// Set by SIGINT/SIGTERM: loops stop at their next check and report.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
        eprintln!("sluice-pktgen: no signal handler ({e}); runs until --duration");
    }
    stop
}

fn pin(cpu: Option<usize>) -> Result<()> {
    if let Some(id) = cpu {
        ensure!(
            core_affinity::set_for_current(core_affinity::CoreId { id }),
            "cannot pin to CPU {id}"
        );
    }
    Ok(())
}

/// Opens the AF_XDP socket; retries for up to 3 s while the queue is busy, which it
/// stays for a moment after the previous socket on it closed (the kernel releases the
/// buffer pool from a work queue).
fn open_port(io: &mut WorkerIo, dev: &str, queue: u32) -> Result<PortId> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        match io.open_port(dev, queue) {
            Err(XskError::PortSetup { source, .. })
                if source.kind() == std::io::ErrorKind::ResourceBusy && Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other.with_context(|| format!("AF_XDP socket on {dev} queue {queue}")),
        }
    }
}

fn xsk_counters(s: XskStats) -> XskCounters {
    XskCounters {
        rx_dropped: s.rx_dropped,
        rx_invalid_descs: s.rx_invalid_descs,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        tx_invalid_descs: s.tx_invalid_descs,
        tx_ring_empty_descs: s.tx_ring_empty_descs,
    }
}

fn tx(args: &TxArgs) -> Result<GenReport> {
    let duration = check_duration(args.duration)?;
    ensure!(
        (1..=1024).contains(&args.batch),
        "--batch must be 1 to 1024"
    );
    ensure!(
        (256..=1 << 18).contains(&args.frames) && args.frames.is_power_of_two(),
        "--frames must be a power of two from 256 to 262144"
    );
    let spec = FlowSpec {
        src_mac: args.src_mac,
        dst_mac: args.dst_mac,
        src_ip: args.src_ip,
        dst_ip: args.dst_ip,
        src_port: args.src_port,
        dst_port: args.dst_port,
        size: args.size,
        flows: args.flows,
    };
    // Chunks of 2048 B hold 1792-byte frames after the 256 B of headroom; 4096 B chunks
    // 3840-byte ones.
    let frame_size: u32 = if spec.frame_len() <= 2048 - 256 {
        2048
    } else {
        4096
    };
    spec.validate(frame_size as usize - 256)
        .map_err(anyhow::Error::msg)?;
    let templates = Templates::build(&spec).map_err(anyhow::Error::msg)?;
    let flows = templates.flows();
    let frame_len = templates.frame_len();
    pin(args.cpu)?;
    let stop = stop_flag();

    // The ring sizes: TX deep enough for the kernel to find work while we refill;
    // RX/fill minimal (nothing is received; the fill ring parks its frames).
    let ring = (args.frames / 2).min(4096);
    let cfg = XskConfig {
        frame_count: args.frames,
        frame_size,
        rx_ring: 64,
        fill_ring: 64,
        tx_ring: ring,
        comp_ring: ring,
        hugepages: false,
        need_wakeup: true,
        bind_mode: BindMode::Auto,
    };
    let mut io = WorkerIo::new(&cfg).context("creating the UMEM")?;
    // Fill the UMEM once: every chunk gets a whole frame (flows in turn).
    let mut all = Vec::with_capacity(args.frames as usize);
    while let Some(mut frame) = io.alloc_frame() {
        templates.write_frame(all.len() % flows, io.buffer_mut(&mut frame));
        all.push(frame);
    }
    for frame in all.drain(..) {
        io.release(frame);
    }
    let port = open_port(&mut io, &args.dev, args.queue)?;
    // Frames in the pool when nothing is in flight (the fill ring holds the rest).
    let idle_free = io.free_frames() as u64;
    let dev_before = DevCounters::read(&args.dev);

    let start = Instant::now();
    let deadline = start + duration;
    let mut pacer = match args.rate {
        Rate::Max => None,
        // Up to 10 ms of credit (at least two batches) survives a late wakeup.
        Rate::Pps(pps) => Some((
            Pacer::new(pps, (2 * args.batch).max((pps / 100) as usize), start),
            // Send in chunks of about 1 ms of packets, between 1 and a batch.
            ((pps / 1000) as usize).clamp(1, args.batch),
        )),
    };
    let multi = flows > 1;
    let mut next_flow = 0usize;
    let mut queued = 0u64;
    let mut end;
    // Steady state: no allocation; one clock read per batch.
    loop {
        end = Instant::now();
        if end >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let want = match &mut pacer {
            None => args.batch,
            Some((p, chunk)) => {
                let n = p.grant(end, args.batch);
                if n == 0 {
                    let wait = p.wait_for(*chunk).min(deadline - end);
                    if wait > Duration::from_micros(20) {
                        std::thread::sleep(wait);
                    }
                    // Completions come back while we wait.
                    io.flush().context("flushing TX")?;
                    continue;
                }
                n
            }
        };
        let mut staged = 0;
        while staged < want {
            let Some(mut frame) = io.alloc_frame() else {
                break;
            };
            if multi {
                templates.write_header(next_flow, io.buffer_mut(&mut frame));
                next_flow += 1;
                if next_flow == flows {
                    next_flow = 0;
                }
            }
            frame.set_len(frame_len);
            if let Err(frame) = io.transmit(port, frame) {
                io.release(frame);
                break;
            }
            staged += 1;
        }
        if let Some((p, _)) = &mut pacer {
            p.refund(want - staged);
        }
        queued += staged as u64;
        io.flush().context("flushing TX")?;
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    // Let the kernel finish what is on the ring (bounded).
    let drain_until = Instant::now() + Duration::from_millis(500);
    while (io.free_frames() as u64) < idle_free && Instant::now() < drain_until {
        io.flush().context("flushing TX")?;
        std::thread::sleep(Duration::from_micros(200));
    }
    let in_flight = idle_free.saturating_sub(io.free_frames() as u64);
    let sent = queued.saturating_sub(in_flight);
    let xsk = xsk_counters(io.port_stats(port).context("reading XDP_STATISTICS")?);
    let dev_counters = match (dev_before, DevCounters::read(&args.dev)) {
        (Some(a), Some(b)) => Some(b.since(&a)),
        _ => None,
    };
    let (pps, bits_per_second, l1_bits_per_second) = rates(sent, elapsed, spec.size);
    Ok(GenReport {
        dev: args.dev.clone(),
        queue: args.queue,
        family: if spec.is_ipv4() { "ipv4" } else { "ipv6" }.to_string(),
        frame_size: spec.size,
        frame_bytes: frame_len,
        flows: flows as u64,
        rate_pps: match args.rate {
            Rate::Max => None,
            Rate::Pps(p) => Some(p),
        },
        batch: args.batch,
        cpu: args.cpu,
        duration_s: args.duration,
        elapsed_s: elapsed,
        queued,
        sent,
        pps,
        bits_per_second,
        l1_bits_per_second,
        xsk,
        dev_counters,
        loadavg: loadavg(),
    })
}

fn rx(args: &RxArgs) -> Result<SinkReport> {
    let duration = check_duration(args.duration)?;
    pin(args.cpu)?;
    let stop = stop_flag();
    let cfg = XskConfig {
        frame_count: 4096,
        frame_size: 4096,
        rx_ring: 2048,
        fill_ring: 2048,
        tx_ring: 64,
        comp_ring: 64,
        hugepages: false,
        need_wakeup: true,
        bind_mode: BindMode::Auto,
    };
    let mut io = WorkerIo::new(&cfg).context("creating the UMEM")?;
    let port = open_port(&mut io, &args.dev, args.queue)?;
    let mut program = PodProgram::attach(&args.dev, AttachMode::Native)
        .with_context(|| format!("attaching {} to {}", PodProgram::NAME, args.dev))?;
    program
        .register_socket(args.queue, io.port_fd(port))
        .context("registering the socket")?;

    const BATCH: usize = 64;
    let mut batch = Vec::with_capacity(BATCH);
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut idle = 0u32;
    let start = Instant::now();
    let deadline = start + duration;
    let mut end;
    loop {
        end = Instant::now();
        if end >= deadline || stop.load(Ordering::Relaxed) {
            break;
        }
        let n = io.receive(port, &mut batch, BATCH).context("receiving")?;
        for frame in batch.drain(..) {
            bytes += frame.len() as u64;
            io.release(frame);
        }
        packets += n as u64;
        io.flush().context("refilling")?;
        if n == 0 {
            idle += 1;
            // Busy while traffic flows; nap when there has been none for a while.
            if idle > 1024 {
                std::thread::sleep(Duration::from_micros(50));
            }
        } else {
            idle = 0;
        }
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    let mut report = SinkReport::new("afxdp", &args.dev, args.duration, elapsed, packets, bytes);
    report.xsk = Some(xsk_counters(
        io.port_stats(port).context("reading XDP_STATISTICS")?,
    ));
    report.passed_no_socket = program.stats().ok().map(|s| s.no_socket);
    // Detach before the socket closes.
    drop(program);
    Ok(report)
}

fn sink(args: &SinkArgs) -> Result<SinkReport> {
    let duration = check_duration(args.duration)?;
    let stop = stop_flag();
    let sink = Sink::attach(&args.dev, AttachMode::Native)
        .with_context(|| format!("attaching {} to {}", Sink::NAME, args.dev))?;
    let (p0, b0) = sink.counts().context("reading the sink's counts")?;
    let start = Instant::now();
    let deadline = start + duration;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
    let (p1, b1) = sink.counts().context("reading the sink's counts")?;
    let elapsed = start.elapsed().as_secs_f64();
    if p1 < p0 {
        bail!("the sink's counter went backwards");
    }
    Ok(SinkReport::new(
        "xdp_drop",
        &args.dev,
        args.duration,
        elapsed,
        p1 - p0,
        b1.wrapping_sub(b0),
    ))
}
