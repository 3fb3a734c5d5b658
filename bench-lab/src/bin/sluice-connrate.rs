//! `sluice-connrate`: new TCP connections per second (a TCP_CRR-style loop), bounded in time.
//!
//! `sluice-connrate server --listen ADDR:PORT --seconds T` accepts connections, reads one
//! byte, answers one byte and closes (the server closes first, so TIME_WAIT stays on the
//! server side and the client's ports can be reused at once). It exits after `T` seconds
//! whatever happens.
//!
//! `sluice-connrate client --connect ADDR:PORT --seconds T --parallel P` runs `P` threads,
//! each doing connect, write 1 byte, read 1 byte, read EOF, close, as fast as it can until
//! `T` seconds have passed, and prints one JSON line: completed connections, errors,
//! elapsed seconds, rate, and percentiles of the per-connection time (connect to EOF). Every
//! socket operation has a 1 s timeout; the client stops early after 1000 errors.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

const IO_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_ERRORS: u64 = 1000;
const MAX_SECONDS: f64 = 600.0;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-connrate",
    about = "TCP connect/request/response/close loop, bounded in time"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Accept, read 1 byte, write 1 byte, close; exit after --seconds.
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        seconds: f64,
        /// Threads calling accept on the one listener.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Open and close connections as fast as possible for --seconds; print JSON.
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        seconds: f64,
        /// Concurrent connection loops.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Server {
            listen,
            seconds,
            threads,
        } => server(listen, seconds, threads),
        Cmd::Client {
            connect,
            seconds,
            parallel,
        } => client(connect, seconds, parallel),
    };
    if let Err(err) = result {
        eprintln!("sluice-connrate: {err:#}");
        std::process::exit(1);
    }
}

fn check_bounds(seconds: f64, threads: usize) -> Result<()> {
    if !(seconds > 0.0 && seconds <= MAX_SECONDS) {
        bail!("--seconds must be above 0 and at most {MAX_SECONDS}");
    }
    if !(1..=64).contains(&threads) {
        bail!("1 to 64 threads");
    }
    Ok(())
}

fn server(listen: SocketAddr, seconds: f64, threads: usize) -> Result<()> {
    check_bounds(seconds, threads)?;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    // The hard bound: whatever accept() is doing, the process ends here.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        std::process::exit(0);
    });
    let listener = Arc::new(listener);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = listener.clone();
            std::thread::spawn(move || loop {
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_nodelay(true);
                let mut byte = [0u8; 1];
                if matches!(stream.read(&mut byte), Ok(1)) {
                    let _ = stream.write_all(&byte);
                }
                drop(stream);
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

/// One connection: connect, 1-byte request, 1-byte response, EOF, close.
fn one(to: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"x")?;
    let mut buf = [0u8; 8];
    let n = stream.read(&mut buf)?;
    if n != 1 {
        return Err(std::io::Error::other("no response byte"));
    }
    // The server closes after answering: wait for its FIN, then close our side.
    let _ = stream.read(&mut buf);
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(f64::from(sorted[rank.clamp(1, sorted.len()) - 1]))
}

fn client(to: SocketAddr, seconds: f64, parallel: usize) -> Result<()> {
    check_bounds(seconds, parallel)?;
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..parallel)
        .map(|_| {
            let errors = errors.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Microseconds per connection (u32: a connection takes at most a few s).
                let mut times: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut last_error = None;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let t0 = Instant::now();
                    match one(to) {
                        Ok(()) => {
                            times.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX))
                        }
                        Err(err) => {
                            last_error = Some(err.to_string());
                            if errors.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_ERRORS {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
                (times, last_error)
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut last_error = None;
    for handle in handles {
        let (mine, err) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        times.extend(mine);
        if err.is_some() {
            last_error = err;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_unstable();
    let connections = times.len() as u64;
    let report = serde_json::json!({
        "connections": connections,
        "errors": errors.load(Ordering::Relaxed),
        "last_error": last_error,
        "seconds": elapsed,
        "parallel": parallel,
        "connections_per_second": connections as f64 / elapsed,
        "conn_us_p50": percentile(&times, 50.0),
        "conn_us_p99": percentile(&times, 99.0),
    });
    println!("{report}");
    if connections == 0 {
        bail!(
            "no connection completed ({})",
            last_error.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn loopback_round_trip() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..3 {
                let (mut s, _) = listener.accept().unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
            }
        });
        for _ in 0..3 {
            one(addr).unwrap();
        }
    }
}
