//! Root lab test of `sluice-pktgen`: a two-pod kernel-mode lab, `tx` at 10,000 pps for
//! 1 s from pod 1 (an AF_XDP socket on eth0 with no XDP program there: TX-only needs
//! none) through the node's routing to `sink` (XDP_DROP counter) on pod 2's eth0.
//! Skipped when not root.

use std::fs;
use std::time::{Duration, Instant};

use sluice_lab::command::{ip, is_root, run_ok, SETUP_TIMEOUT};
use sluice_lab::{Lab, LabSpec};
use sluice_perf::pktgen::{GenReport, SinkReport};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-pktgen");

fn link_json(netns: &str, dev: &str) -> serde_json::Value {
    let out = run_ok(
        &mut ip(&["-n", netns, "-j", "link", "show", "dev", dev]),
        SETUP_TIMEOUT,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn tx_at_a_fixed_rate_arrives_at_the_sink() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new(LabSpec::kernel(2)).expect("lab");
    let node = lab.node_netns().to_string();
    let (p1, p2) = (lab.pod(1).unwrap().clone(), lab.pod(2).unwrap().clone());
    // The sink drops ARP too: the node gets pod 2's MAC here instead of asking.
    run_ok(
        &mut ip(&[
            "-n",
            &node,
            "neigh",
            "replace",
            &p2.ipv4.to_string(),
            "lladdr",
            &p2.mac.to_string(),
            "dev",
            &p2.node_ifname,
            "nud",
            "permanent",
        ]),
        SETUP_TIMEOUT,
    )
    .unwrap();
    let gateway = link_json(&node, &p1.node_ifname)["address"]
        .as_str()
        .unwrap()
        .to_string();

    let sink = lab
        .spawn(
            2,
            "pktgen-sink",
            &[BIN, "sink", "--dev", "eth0", "--duration", "6", "--json"],
        )
        .unwrap();
    // Wait until the sink's program is on pod 2's eth0.
    let deadline = Instant::now() + Duration::from_secs(10);
    while link_json(&p2.netns, "eth0").get("xdp").is_none() {
        assert!(
            Instant::now() < deadline,
            "the sink did not attach\n{}",
            lab.log_tail("pktgen-sink", 10)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    #[rustfmt::skip]
    let out = lab
        .exec_timeout(1, &[
            BIN, "tx", "--dev", "eth0",
            "--src-mac", &p1.mac.to_string(), "--dst-mac", &gateway,
            "--src-ip", &p1.ipv4.to_string(), "--dst-ip", &p2.ipv4.to_string(),
            "--src-port", "10000-10003", "--dst-port", "9",
            "--size", "64", "--rate", "10000", "--duration", "1", "--json",
        ], Duration::from_secs(20))
        .unwrap();
    assert!(out.success(), "tx failed: {}\n{}", out.stdout, out.stderr);
    let gen: GenReport = serde_json::from_str(&out.stdout).expect("tx JSON");
    assert!(
        lab.wait_process(sink, Duration::from_secs(15))
            .unwrap()
            .is_some_and(|s| s.success()),
        "sink failed\n{}",
        lab.log_tail("pktgen-sink", 10)
    );
    let text = fs::read_to_string(lab.run_dir().join("pktgen-sink.stdout.log")).unwrap();
    let got: SinkReport = serde_json::from_str(&text).expect("sink JSON");
    lab.teardown().unwrap();

    eprintln!(
        "sent {} in {:.3} s ({:.0} pps), sink {} frames",
        gen.sent, gen.elapsed_s, gen.pps, got.packets
    );
    assert_eq!((gen.frame_size, gen.frame_bytes, gen.flows), (64, 60, 4));
    assert_eq!(gen.xsk.tx_invalid_descs, 0);
    // The fixed rate holds within 10%.
    assert!(
        (9_000.0..=11_000.0).contains(&gen.pps),
        "rate {:.0} pps, wanted 10000",
        gen.pps
    );
    assert!(
        (9_000..=11_000).contains(&gen.sent),
        "sent {} in 1 s",
        gen.sent
    );
    // What the kernel sent on eth0 is what we counted, give or take the pod's own
    // control traffic (IPv6 neighbour discovery and the like).
    if let Some(d) = gen.dev_counters {
        assert!(
            (gen.sent..=gen.sent + 20).contains(&d.tx_packets),
            "eth0 tx_packets +{}, sent {}",
            d.tx_packets,
            gen.sent
        );
    }
    // Received within 3% of sent; loss from the library.
    let loss = got.loss_against(&gen).unwrap();
    assert!(loss.abs() < 0.03, "loss {:.2}%", loss * 100.0);
    // 60-byte frames (a stray control frame of the pods' own may shift the average).
    let avg = got.avg_frame_bytes.unwrap();
    assert!((60.0..61.0).contains(&avg), "average frame {avg} bytes");
}
