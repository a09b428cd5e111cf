//! The pod network for real (as root): every test runs in a network namespace of its own
//! standing in for the node's, with pod namespaces pinned as the kubelet pins them, so nothing
//! here touches the machine's own interfaces, forwarding setting or nf_tables rules.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_net::{nft, Config, Error, Ipv4Cidr, Network};
use cairn_runtime::netns;

/// Runs `f` on a thread inside a fresh network namespace: the test's "node".
fn on_a_node<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the network tests make namespaces and interfaces: they need root"
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a namespace");
            f()
        })
        .join()
        .unwrap()
    })
}

/// Runs `f` on a thread inside the namespace pinned at `ns`.
fn inside<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(ns).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

struct Scratch {
    dir: PathBuf,
    pods: Vec<PathBuf>,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(format!("/run/cairn-net-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            pods: Vec::new(),
        }
    }

    /// A pinned pod namespace with its loopback up.
    fn pod(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join("netns").join(name);
        netns::create(&path).unwrap();
        self.pods.push(path.clone());
        path
    }

    fn config(&self, bridge: &str, pod: &str, cluster: &str) -> Config {
        Config::new(
            bridge,
            pod.parse().unwrap(),
            cluster.parse().unwrap(),
            &self.dir.join(format!("state-{bridge}")),
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.pods {
            let _ = netns::remove(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listener on `ip:port` inside `ns` that answers one connection with the address the
/// connection came from.
fn serve_once(ns: &Path, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let ns = ns.to_owned();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut stream, peer) = listener.accept().unwrap();
        stream.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    ready.recv().unwrap();
    handle
}

/// Connects from inside `ns` (None: the calling thread's namespace) and returns what the
/// listener answered: the address it saw.
fn seen_from(ns: Option<&Path>, addr: SocketAddr) -> String {
    let connect = || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut seen = String::new();
        s.read_to_string(&mut seen).unwrap();
        seen
    };
    match ns {
        Some(ns) => inside(ns, connect),
        None => connect(),
    }
}

#[test]
fn pods_reach_each_other_the_gateway_and_the_outside_through_masquerade() {
    let mut scratch = Scratch::new("reach");
    let (a, b, outside) = (scratch.pod("a"), scratch.pod("b"), scratch.pod("outside"));
    on_a_node(|| {
        let config = scratch.config("ctreach0", "10.77.1.0/24", "10.77.0.0/16");
        let net = Network::setup(config.clone()).unwrap();
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 77, 1, 1));
        let ip_a = net.attach(&a, "pod-a").unwrap();
        let ip_b = net.attach(&b, "pod-b").unwrap();
        assert_ne!(ip_a, ip_b);
        for ip in [ip_a, ip_b] {
            assert!(config.pod_cidr.contains(ip) && ip != net.gateway(), "{ip}");
        }
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap()
                .trim(),
            "1"
        );

        // Pod to pod: straight across the bridge, no address translation.
        let listener = serve_once(&a, SocketAddr::new(ip_a.into(), 8080));
        assert_eq!(
            seen_from(Some(&b), SocketAddr::new(ip_a.into(), 8080)),
            ip_b.to_string()
        );
        listener.join().unwrap();

        // Pod to the node, at the gateway address.
        let gateway = SocketAddr::new(net.gateway().into(), 8081);
        let node = TcpListener::bind(gateway).unwrap();
        let node_side = std::thread::spawn(move || {
            let (_, peer) = node.accept().unwrap();
            peer.ip().to_string()
        });
        inside(&b, || {
            TcpStream::connect_timeout(&gateway, Duration::from_secs(5)).unwrap()
        });
        assert_eq!(node_side.join().unwrap(), ip_b.to_string());

        // Pod to a host outside the cluster range (a second network on the node stands in for
        // the world): the node's masquerade rule rewrites the source to the node's address.
        let world =
            Network::setup(scratch.config("ctworld0", "198.51.100.0/24", "198.51.100.0/24"))
                .unwrap();
        let far = world.attach(&outside, "far-host").unwrap();
        let listener = serve_once(&outside, SocketAddr::new(far.into(), 80));
        assert_eq!(
            seen_from(Some(&a), SocketAddr::new(far.into(), 80)),
            world.gateway().to_string(),
            "pod traffic leaving the cluster range is masqueraded"
        );
        listener.join().unwrap();

        // Setting up again changes nothing: same bridge, one rule.
        assert_eq!(nft::rule_count(cairn_net::TABLE, "ctreach0").unwrap(), 1);
        drop(net);
        let again = Network::setup(config.clone()).unwrap();
        assert_eq!(nft::rule_count(cairn_net::TABLE, "ctreach0").unwrap(), 1);
        let listener = serve_once(&a, SocketAddr::new(ip_a.into(), 8082));
        assert_eq!(
            seen_from(Some(&b), SocketAddr::new(ip_a.into(), 8082)),
            ip_b.to_string()
        );
        listener.join().unwrap();

        // Taken down: bridge, chain and (now empty of chains of this bridge) table go.
        cairn_net::teardown("ctreach0", cairn_net::TABLE).unwrap();
        assert_eq!(
            nft::rule_count(cairn_net::TABLE, "ctreach0").unwrap_or(0),
            0
        );
        drop(again);
    });
}

#[test]
fn addresses_survive_a_restart_and_are_freed_on_detach() {
    let mut scratch = Scratch::new("keep");
    let (a, b) = (scratch.pod("a"), scratch.pod("b"));
    on_a_node(|| {
        let config = scratch.config("ctkeep0", "10.78.2.0/24", "10.78.0.0/16");
        let net = Network::setup(config.clone()).unwrap();
        let ip_a = net.attach(&a, "pod-a").unwrap();
        let ip_b = net.attach(&b, "pod-b").unwrap();
        assert_eq!(
            net.attach(&a, "pod-a").unwrap(),
            ip_a,
            "attaching twice changes nothing"
        );

        // A restart of cairn: a new Network over the same state re-adopts the pods.
        drop(net);
        let net = Network::setup(config.clone()).unwrap();
        assert_eq!(net.address_of("pod-a").unwrap(), Some(ip_a));
        assert_eq!(net.attach(&a, "pod-a").unwrap(), ip_a);
        assert_eq!(net.attach(&b, "pod-b").unwrap(), ip_b);
        let listener = serve_once(&a, SocketAddr::new(ip_a.into(), 9000));
        assert_eq!(
            seen_from(Some(&b), SocketAddr::new(ip_a.into(), 9000)),
            ip_b.to_string()
        );
        listener.join().unwrap();

        // Detach deletes the pair and frees the address.
        net.detach("pod-b").unwrap();
        assert_eq!(net.address_of("pod-b").unwrap(), None);
        assert!(!config.state_dir.join(ip_b.to_string()).exists());
        let pod_links = inside(&b, || {
            std::fs::read_to_string("/proc/thread-self/net/dev")
                .unwrap()
                .lines()
                .count()
                - 2
        });
        assert_eq!(pod_links, 1, "only lo is left in the pod");
        net.detach("pod-b").unwrap();

        // Pods that went away while cairn was down lose their addresses.
        let freed = net.retain(|key| key != "pod-a").unwrap();
        assert_eq!(freed, vec![(ip_a, "pod-a".to_owned())]);
        assert_eq!(net.address_of("pod-a").unwrap(), None);
    });
}

#[test]
fn a_full_range_fails_clearly_until_an_address_is_freed() {
    let mut scratch = Scratch::new("full");
    let (a, b) = (scratch.pod("a"), scratch.pod("b"));
    on_a_node(|| {
        // A /30: network, gateway, one pod address, broadcast.
        let net =
            Network::setup(scratch.config("ctfull0", "10.79.0.0/30", "10.79.0.0/16")).unwrap();
        assert_eq!(
            net.attach(&a, "pod-a").unwrap(),
            Ipv4Addr::new(10, 79, 0, 2)
        );
        let err = net.attach(&b, "pod-b").unwrap_err();
        assert!(matches!(err, Error::Exhausted { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "no free pod address left in 10.79.0.0/30: all 1 are taken by pods of this node"
        );
        net.detach("pod-a").unwrap();
        assert_eq!(
            net.attach(&b, "pod-b").unwrap(),
            Ipv4Addr::new(10, 79, 0, 2)
        );
    });
}

#[test]
fn bad_configurations_are_refused_before_touching_anything() {
    let scratch = Scratch::new("bad");
    on_a_node(|| {
        let outside = scratch.config("ctbad0", "10.80.0.0/24", "10.81.0.0/16");
        let err = Network::setup(outside).err().unwrap().to_string();
        assert!(
            err.contains("not inside the cluster's 10.81.0.0/16"),
            "{err}"
        );
        let long = scratch.config("a-very-long-bridge-name", "10.80.0.0/24", "10.80.0.0/16");
        assert!(Network::setup(long).is_err());
        let _: Ipv4Cidr = "10.80.0.0/24".parse().unwrap();
    });
}
