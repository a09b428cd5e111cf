//! Two nodes of the real x86_64 image on a network the test makes: a server VM and an agent
//! VM on tap devices of one host bridge (the host is on it too, so kubectl reaches the
//! server's address directly). The agent joins with the server's token from its node config,
//! a DaemonSet runs a pod on each node, the API server reaches the agent's kubelet for logs
//! and exec, and a wrong token is refused by the server. Then `cairnctl upgrade --all`
//! updates the cluster through the server alone: the agent first, then the server, each
//! rebooted into its trial and followed until it commits (QEMU relaunched across guest
//! reboots, as `make qemu` does). Needs root (the bridge and taps), `make image
//! BOARD=qemu-x86_64` and kubectl.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use cairnctl::qemu::{self, Lan, Tap, VmOptions};
use cairnctl::upgrade::{self, Outcome};

mod common;
use common::{built_board, make_bundle, KeptVm};

const BOOT: Duration = Duration::from_secs(420);
const SUBNET: [u8; 3] = [192, 168, 213];
const BRIDGE: &str = "cairnlan0";

/// The address `.host` of the test network.
fn addr(host: u8) -> Ipv4Addr {
    let [a, b, c] = SUBNET;
    Ipv4Addr::new(a, b, c, host)
}

/// A node of the cluster: its options and, once launched, its VM (relaunched when the guest
/// reboots).
struct Node {
    o: VmOptions,
    vm: Option<KeptVm>,
}

impl Node {
    fn prepare(run: &str, host: u8, yaml: &str, secrets: bool) -> Node {
        let (board, out) = built_board("qemu-x86_64");
        let mut o = VmOptions::headless(board, out, run, 0);
        o.tap = Some(Tap {
            ifname: format!("{BRIDGE}{}", run.chars().last().unwrap()),
            mac: format!("52:54:00:c4:d5:{host:02x}"),
            address: addr(host),
        });
        if !secrets {
            o.secrets = None;
        }
        qemu::prepare(&o).unwrap();
        cairnctl::config::set(&o.node_disk(), yaml, &format!("{run} node.yaml")).unwrap();
        // From now on the disk with its config is the node's.
        o.fresh = false;
        Node { o, vm: None }
    }

    fn launch(&mut self) {
        self.vm = Some(KeptVm::start(self.o.clone()));
    }

    fn vm(&self) -> &KeptVm {
        self.vm.as_ref().expect("launched")
    }

    fn console_tail(&self) -> String {
        qemu::tail(&qemu::read_lossy(&self.o.console_log()), 30)
    }
}

/// The real kubectl against the server; panics with both consoles on failure.
fn kubectl(kubeconfig: &Path, nodes: &[&Node], args: &[&str]) -> String {
    common::kubectl(kubeconfig, args, || consoles(nodes))
}

fn consoles(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "console of {}:\n{}",
                n.o.run_dir.display(),
                n.console_tail()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn wait_kubectl(k: &Path, nodes: &[&Node], args: &[&str], what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + BOOT;
    loop {
        let out = kubectl(k, nodes, args);
        if done(&out) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {out}\n{}",
            consoles(nodes)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn qemu_x86_64_agent_joins_a_server_and_runs_a_daemonset() {
    let _lan = Lan::make(
        BRIDGE,
        SUBNET,
        &[&format!("{BRIDGE}s"), &format!("{BRIDGE}a")],
    )
    .unwrap_or_else(|e| panic!("{e:#}: the cluster test makes a bridge and taps, as root"));
    let network = |host: u8| {
        format!(
            "network:\n  mode: static\n  address: {}/24\n  gateway: {}\n",
            addr(host),
            addr(254)
        )
    };
    let mut server = Node::prepare(
        "cluster-s",
        1,
        &format!("hostname: server-1\nrole: server\n{}", network(1)),
        true,
    );
    let secrets = server.o.secrets.clone().unwrap();
    let token = std::fs::read_to_string(secrets.join("node-token")).unwrap();
    let mut agent = Node::prepare(
        "cluster-a",
        2,
        &format!(
            "hostname: agent-1\nrole: agent\nserver: https://{}:6443\ntoken: {}\n{}",
            addr(1),
            token.trim(),
            network(2)
        ),
        false,
    );
    let k = server.o.kubeconfig();
    server.launch();
    agent.launch();
    server.vm().wait_for("cairn: ready", 0, BOOT);

    // Both nodes Ready: the agent found the server across the network and joined.
    let ready = [
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#,
    ];
    wait_kubectl(&k, &[&server, &agent], &ready, "two Ready nodes", |out| {
        out.contains("server-1=True") && out.contains("agent-1=True")
    });
    let agent_ip = kubectl(
        &k,
        &[&server, &agent],
        &[
            "get",
            "node",
            "agent-1",
            "-o",
            r#"jsonpath={.status.addresses[?(@.type=="InternalIP")].address}"#,
        ],
    );
    assert_eq!(agent_ip, addr(2).to_string());

    // A wrong token is refused by the server (the agent's own join code, from the host).
    let mut bad = cairn::token::JoinToken::parse(&token).unwrap();
    bad.credential = "server:0123456789abcdef0123456789abcdef".into();
    let creds_dir = server.o.run_dir.join("refused-agent");
    let _ = std::fs::remove_dir_all(&creds_dir);
    let refused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cairn::join::join(
            &server.o.api_url(),
            &bad,
            "intruder",
            &cairn::join::Credentials::new(&creds_dir),
        ));
    match refused {
        Err(e @ cairn::join::JoinError::TokenRefused(_)) => {
            assert!(
                e.to_string().contains("the server refused the join token"),
                "{e}"
            )
        }
        Err(e) => panic!("a wrong token failed otherwise: {e}"),
        Ok(_) => panic!("a wrong token joined"),
    }
    let nodes = kubectl(&k, &[&server, &agent], &["get", "nodes", "-o", "name"]);
    assert!(!nodes.contains("intruder"), "{nodes}");

    // A DaemonSet: a pod on each node, its logs and exec through the API server to the
    // agent's kubelet.
    let ds = server.o.run_dir.join("daemonset.yaml");
    std::fs::write(
        &ds,
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: cairn.local/test/busybox:latest
        command: [sh, -c, 'echo on $NODE; exec sleep 3600']
        env:
        - name: NODE
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
"#,
    )
    .unwrap();
    kubectl(
        &k,
        &[&server, &agent],
        &["apply", "-f", ds.to_str().unwrap()],
    );
    let placed = [
        "get",
        "pods",
        "-l",
        "app=everywhere",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}={.status.phase} {end}",
    ];
    wait_kubectl(
        &k,
        &[&server, &agent],
        &placed,
        "a running pod on each node",
        |out| out.contains("server-1=Running") && out.contains("agent-1=Running"),
    );
    let pod = kubectl(
        &k,
        &[&server, &agent],
        &[
            "get",
            "pods",
            "-l",
            "app=everywhere",
            "--field-selector",
            "spec.nodeName=agent-1",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let logs = kubectl(&k, &[&server, &agent], &["logs", &pod]);
    assert_eq!(logs, "on agent-1\n");
    let host = kubectl(
        &k,
        &[&server, &agent],
        &["exec", &pod, "--", "cat", "/proc/sys/kernel/hostname"],
    );
    assert_eq!(
        host.trim(),
        pod,
        "exec runs in the pod's UTS namespace on the agent"
    );
    kubectl(
        &k,
        &[&server, &agent],
        &["delete", "daemonset", "everywhere"],
    );

    // The whole cluster to a new version through the server's address alone: the agent
    // first (the server passes its upload and apply on to the agent's kubelet), then the
    // server; each reboots into its trial and commits once its Node is Ready again.
    let version = "90.1.0";
    let bundle = make_bundle("qemu-x86_64", version, false);
    let opts = upgrade::Options {
        kubeconfig: k.clone(),
        node: None,
        source: upgrade::Source::File(bundle),
        allow_downgrade: false,
        no_wait: false,
        timeout: BOOT,
        upload_only: false,
    };
    let done = upgrade::run_all(&opts)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", consoles(&[&server, &agent])));
    let names: Vec<&str> = done.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["agent-1", "server-1"], "agents before servers");
    for (name, outcome) in &done {
        let Outcome::Committed(r) = outcome else {
            panic!("{name}: {outcome:?}")
        };
        assert_eq!(
            (r.version.as_str(), r.running.slot.as_str()),
            (version, "b"),
            "{name}"
        );
        assert_eq!(r.last.as_ref().unwrap().result, "committed", "{name}");
    }
    let launches = |n: &Node| n.vm().launches.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        (launches(&agent), launches(&server)),
        (2, 2),
        "one reboot each"
    );
    let images = [
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.nodeInfo.osImage} {end}",
    ];
    wait_kubectl(
        &k,
        &[&server, &agent],
        &images,
        "both Nodes on the new version",
        |out| {
            out.contains(&format!("server-1=Cairn {version}"))
                && out.contains(&format!("agent-1=Cairn {version}"))
        },
    );
    // `cairnctl status` lists both, from the server.
    let reports = upgrade::status_reports(&k).unwrap();
    let mut listed: Vec<&str> = reports.iter().map(|r| r.node.as_str()).collect();
    listed.sort();
    assert_eq!(listed, ["agent-1", "server-1"]);
}
