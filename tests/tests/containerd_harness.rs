//! The containerd harness end to end, with the reference CNI plugins (bridge +
//! host-local) standing in for sluice-cni: a real containerd, two busybox
//! containers started by `ctr run --cni` whose plugins run in a lab's node
//! namespace, ping and TCP between them, CNI DEL on kill, and nothing left in
//! the root namespace, /etc/cni, /run/containerd or the cgroup tree.

use sluice_tests::root_state::root_state;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_lab::command::{is_root, netns_path, run_ok, SETUP_TIMEOUT};
use sluice_lab::{Lab, LabSpec};
use sluice_tests::containerd::{
    check_prerequisites, mounts_under, reference_plugin, shims_for, CniNetwork, Containerd,
    ScratchDir,
};

/// The tests compare machine-wide state before and after: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const SUBNET: &str = "10.88.0.0/24";
const NETWORK: &str = "harness";

fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipping {test}: containerd tests need root");
    false
}

/// Fails (never skips) when the runtime is not installed: CI installs it.
fn prerequisites() {
    if let Err(err) = check_prerequisites() {
        panic!("{err:#}");
    }
}

/// The bridge + host-local conflist, IPAM state under `ipam_dir`.
fn bridge_conflist(ipam_dir: &Path) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": SUBNET}]],
                "dataDir": ipam_dir,
            },
        }],
    })
    .to_string()
}

/// host-local's allocations: the files named after an address.
fn allocations(ipam_dir: &Path) -> BTreeSet<String> {
    let dir = ipam_dir.join(NETWORK);
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cgroups_named(namespace: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let candidate = hierarchy.path().join(namespace);
        if candidate.exists() {
            found.push(candidate);
        }
    }
    let v2 = Path::new("/sys/fs/cgroup").join(namespace);
    if v2.exists() {
        found.push(v2);
    }
    found
}

#[test]
fn two_busybox_containers_wired_by_reference_plugins_ping_and_clean_up() {
    if !root_or_skip("two_busybox_containers_wired_by_reference_plugins_ping_and_clean_up") {
        return;
    }
    prerequisites();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let started = Instant::now();
    let before = root_state();

    let lab = Lab::new(LabSpec::kernel(1)).expect("lab up");
    let node = netns_path(lab.node_netns());
    let scratch = ScratchDir::new("ctr-harness").unwrap();
    let ipam = scratch.path().join("ipam");
    let (namespace, address, shim_sockets);
    {
        let t = Instant::now();
        let ctd = Containerd::start(scratch.path().join("containerd")).expect("containerd");
        namespace = ctd.namespace().to_string();
        address = ctd.address().to_path_buf();
        let image = ctd.import_busybox().expect("image");
        eprintln!("containerd up and image imported in {:?}", t.elapsed());

        let plugins = [
            reference_plugin("bridge").unwrap(),
            reference_plugin("host-local").unwrap(),
        ];
        let net = CniNetwork::new(
            scratch.path().join("cni"),
            &node,
            "10-harness.conflist",
            &bridge_conflist(&ipam),
            &plugins,
        )
        .unwrap();

        let t = Instant::now();
        let c1 = ctd
            .run(&net, "c1", &image, &["sleep", "3600"])
            .expect("c1 runs");
        let c2 = ctd
            .run(&net, "c2", &image, &["sleep", "3600"])
            .expect("c2 runs");
        eprintln!("two containers running in {:?}", t.elapsed());

        for c in [&c1, &c2] {
            let socket = ctd.shim_socket_path(c.id());
            assert!(socket.exists(), "shim socket {}", socket.display());
        }

        // Addresses: the CNI result, eth0 inside (ctr exec), the netns path.
        let (ip1, ip2) = (c1.ipv4().unwrap(), c2.ipv4().unwrap());
        assert_ne!(ip1, ip2);
        for (c, ip) in [(&c1, ip1), (&c2, ip2)] {
            let result = c.cni_result().unwrap();
            assert_eq!(result["cniVersion"], "1.0.0", "{result}");
            assert_eq!(result["ips"][0]["gateway"], "10.88.0.1", "{result}");
            let inside = c.exec(&["ip", "-4", "addr", "show", "eth0"]).unwrap();
            assert!(inside.success(), "{inside:?}");
            assert!(
                inside.stdout.contains(&format!("inet {ip}/24")),
                "{inside:?}"
            );
            let host_view = run_ok(
                &mut c.host_command(&["ip", "-4", "-o", "addr"]),
                SETUP_TIMEOUT,
            )
            .unwrap();
            assert!(
                host_view.stdout.contains(&format!("{ip}/24")),
                "{host_view:?}"
            );
            assert_eq!(
                c.cni_cache_entry().unwrap()["containerId"],
                format!("{namespace}-{}", c.id())
            );
        }
        assert_eq!(
            allocations(&ipam),
            BTreeSet::from([ip1.to_string(), ip2.to_string()])
        );
        // The host side lives in the node namespace.
        let bridge = lab
            .exec_node(&["ip", "-4", "-o", "addr", "show", "cni0"], SETUP_TIMEOUT)
            .unwrap();
        assert!(bridge.stdout.contains("10.88.0.1/24"), "{bridge:?}");

        // ICMP both ways, then TCP: busybox httpd in c1, wget from c2.
        for (from, to) in [(&c1, ip2), (&c2, ip1)] {
            let ping = from
                .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &to.to_string()])
                .unwrap();
            assert!(ping.success(), "{} -> {to}: {ping:?}", from.id());
            assert!(ping.stdout.contains("3 packets received"), "{ping:?}");
        }
        let httpd = c1
            .exec(&[
                "sh",
                "-c",
                "httpd -p 8080 -h /etc </dev/null >/dev/null 2>&1",
            ])
            .unwrap();
        assert!(httpd.success(), "{httpd:?}");
        let url = format!("http://{ip1}:8080/passwd");
        // Not `wget -T`: busybox 1.35's wget segfaults with it.
        let wget = c2
            .exec(&["timeout", "10", "wget", "-q", "-O", "-", &url])
            .unwrap();
        assert!(wget.stdout.starts_with("root:x:0:0:"), "{wget:?}");

        // A command that ends by itself, with ADD and DEL around it.
        let once = ctd
            .run_to_completion(
                &net,
                "once",
                &image,
                &["ip", "-4", "-o", "addr"],
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(once.success(), "{once:?}\n{}", ctd.log_tail(30));
        assert!(once.stdout.contains("10.88.0."), "{once:?}");

        // Killing runs DEL: host-local releases, libcni forgets, ctr reports 137.
        shim_sockets = [ctd.shim_socket_path("c1"), ctd.shim_socket_path("c2")];
        let t = Instant::now();
        let out1 = c1.kill().unwrap();
        let out2 = c2.kill().unwrap();
        eprintln!("both killed and deleted in {:?}", t.elapsed());
        for out in [&out1, &out2] {
            assert_eq!(out.status.code(), Some(137), "{out:?}");
            assert!(!out.stderr.contains("level=error"), "{out:?}");
        }
        assert_eq!(allocations(&ipam), BTreeSet::new());
        assert_eq!(net.cached_results().unwrap(), Vec::new());
        assert_eq!(ctd.containers().unwrap(), Vec::<String>::new());
        let veths = lab
            .exec_node(&["ip", "-o", "link", "show", "type", "veth"], SETUP_TIMEOUT)
            .unwrap();
        assert_eq!(
            veths.stdout.lines().count(),
            1,
            "only the lab's lxc1: {veths:?}"
        );
    }

    // containerd, its shims and every trace of them are gone.
    assert!(!shim_sockets.iter().any(|s| s.exists()), "{shim_sockets:?}");
    assert_eq!(shims_for(&address), Vec::<u32>::new());
    assert_eq!(cgroups_named(&namespace), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(scratch.path()), Vec::<PathBuf>::new());
    drop(scratch);
    drop(lab);
    let after = root_state();
    assert_eq!(before, after);
    eprintln!("whole test in {:?}", started.elapsed());
}

#[test]
fn a_failed_add_is_reported_and_leaves_no_container() {
    if !root_or_skip("a_failed_add_is_reported_and_leaves_no_container") {
        return;
    }
    prerequisites();
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = root_state();

    let lab = Lab::new(LabSpec::kernel(1)).expect("lab up");
    let node = netns_path(lab.node_netns());
    let scratch = ScratchDir::new("ctr-harness-fail").unwrap();
    let namespace;
    {
        let ctd = Containerd::start(scratch.path().join("containerd")).expect("containerd");
        namespace = ctd.namespace().to_string();
        let image = ctd.import_busybox().expect("image");
        // The plugin the config names is not exposed: ADD fails.
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "broken",
            "plugins": [{"type": "sluice-absent"}],
        });
        let plugins = [reference_plugin("bridge").unwrap()];
        let net = CniNetwork::new(
            scratch.path().join("cni"),
            &node,
            "10-broken.conflist",
            &conf.to_string(),
            &plugins,
        )
        .unwrap();
        let err = ctd
            .run(&net, "doomed", &image, &["sleep", "3600"])
            .map(|c| c.id().to_string())
            .unwrap_err();
        let text = format!("{err:#}");
        eprintln!("a failed ADD, as run() reports it:\n{text}");
        assert!(text.contains("sluice-absent"), "{text}");
        assert_eq!(ctd.containers().unwrap(), Vec::<String>::new());
        assert_eq!(ctd.tasks().unwrap(), Vec::new());
    }
    assert_eq!(cgroups_named(&namespace), Vec::<PathBuf>::new());
    drop(scratch);
    drop(lab);
    assert_eq!(before, root_state());
}
