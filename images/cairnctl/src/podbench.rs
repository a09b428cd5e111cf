//! `cairnctl bench-pods`: what running pods costs a node, on real QEMU nodes of a board
//! (TCG, one vCPU, the board's memory unless said otherwise), driven through the API as a
//! user would, with the test images the default recipe bakes in (so no pull is timed).
//!
//! - **RSS** of the `cairn` process (server and its own worker), read from the node's
//!   `/proc/<pid>/status` by a probe pod that mounts the host's `/proc` (the probe is the one
//!   pod running when "idle"): idle 30 s after the node is Ready, and with 20 more pods
//!   running.
//! - **Pod start latency**: one pod at a time, from the create request to the API showing it
//!   `Running` (polled every 20 ms), for 20 pods; p50 and p99 (with 20 samples, the slowest).
//! - **100 pods**: a Deployment of 100 replicas, from create to all `Running`.
//! - **An agent's idle RSS**: a second VM joins the first on a host bridge (needs root).
//! - **A 256 MiB node**: a fresh server booted with 256 MiB runs the probe and 4 test pods;
//!   its `MemAvailable` is reported.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::{json, Value};

use crate::qemu::{self, Lan, Tap, Vm, VmOptions};

const BOOT: Duration = Duration::from_secs(600);
/// Pods started one by one for the latency figures.
const SERIAL_PODS: usize = 20;
const MANY_PODS: usize = 100;

#[derive(Debug, Default)]
pub struct Row {
    pub board: String,
    pub server_idle_rss_kib: u64,
    pub server_rss_20_pods_kib: u64,
    pub start_p50_ms: u64,
    pub start_p99_ms: u64,
    pub hundred_pods_s: f64,
    pub agent_idle_rss_kib: Option<u64>,
    /// Pods Running on a 256 MiB node, and its MemAvailable then.
    pub small_node: Option<(usize, u64)>,
}

/// The probe: a pod that sees the node's processes through its `/proc`.
fn probe(node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "probe",
                "image": "cairn.local/test/busybox:latest",
                "command": ["sleep", "86400"],
                "volumeMounts": [{"name": "proc", "mountPath": "/host/proc", "readOnly": true}],
            }],
            "volumes": [{"name": "proc", "hostPath": {"path": "/proc"}}],
        },
    })
}

/// Prints the VmRSS (KiB) of the node's `cairn server` or `cairn agent` process.
const RSS_SCRIPT: &str = r#"for d in /host/proc/[0-9]*; do
  set -- $(tr '\0' ' ' < $d/cmdline 2>/dev/null)
  case "$1:$2" in *cairn:server|*cairn:agent) awk '/^VmRSS/ {print $2}' $d/status;; esac
done"#;

fn sleeper(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "serial"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": "cairn.local/test/busybox:latest",
                "command": ["sleep", "86400"],
            }],
        },
    })
}

/// A node under test: its VM and a client of its API.
struct Node {
    vm: Vm,
    o: VmOptions,
    client: cairn::client::Client,
}

impl Node {
    fn boot(o: VmOptions) -> Result<Node> {
        qemu::prepare(&o)?;
        let mut vm = Vm::launch(&o)?;
        vm.wait_for("cairn: ready", 0, BOOT)?;
        let client = cairn::client::Client::from_kubeconfig(&o.kubeconfig())?;
        Ok(Node { vm, o, client })
    }

    fn off(mut self) {
        let _ = self.vm.powerdown();
        if !matches!(self.vm.wait(Duration::from_secs(120)), Ok(Some(_))) {
            self.vm.kill();
        }
    }

    /// `kubectl exec probe -- sh -c SCRIPT`: its output.
    fn exec_probe(&self, script: &str) -> Result<String> {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.o.kubeconfig())
            .args(["exec", "probe", "--", "sh", "-c", script])
            .output()
            .context("running kubectl (`make deps` installs it)")?;
        if !out.status.success() {
            bail!(
                "kubectl exec probe: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn rss_kib(&self) -> Result<u64> {
        let out = self.exec_probe(RSS_SCRIPT)?;
        out.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no cairn process found by the probe: {out:?}"))
    }

    fn mem_available_kib(&self) -> Result<u64> {
        let out = self.exec_probe("awk '/^MemAvailable/ {print $2}' /host/proc/meminfo")?;
        out.trim().parse().context("MemAvailable")
    }
}

async fn wait_ready_node(client: &cairn::client::Client, name: Option<&str>) -> Result<String> {
    let deadline = Instant::now() + BOOT;
    while Instant::now() < deadline {
        if let Ok(list) = client.request(Method::GET, "/api/v1/nodes", None).await {
            for n in list["items"].as_array().into_iter().flatten() {
                let ready = n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let node = n["metadata"]["name"].as_str().unwrap_or_default();
                if ready && name.is_none_or(|want| want == node) {
                    return Ok(node.to_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no Ready node within {} s", BOOT.as_secs())
}

/// Creates `pod` and waits until it runs: the time that took.
async fn start_pod(client: &cairn::client::Client, pod: &Value) -> Result<Duration> {
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    let started = Instant::now();
    client
        .request(Method::POST, "/api/v1/namespaces/default/pods", Some(pod))
        .await
        .with_context(|| format!("creating pod {name}"))?;
    let deadline = started + BOOT;
    loop {
        let p = client.request(Method::GET, &path, None).await?;
        match p["status"]["phase"].as_str() {
            Some("Running") => return Ok(started.elapsed()),
            Some("Failed") => bail!("pod {name} failed: {}", p["status"]),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!(
                "pod {name} not Running within {} s: {}",
                BOOT.as_secs(),
                p["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pods of `default` that `selector` (URL-encoded) picks.
async fn pods(client: &cairn::client::Client, selector: &str) -> Result<Vec<Value>> {
    let list = client
        .request(
            Method::GET,
            &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
            None,
        )
        .await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

async fn running(client: &cairn::client::Client, selector: &str) -> Result<usize> {
    Ok(pods(client, selector)
        .await?
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count())
}

async fn wait_gone(client: &cairn::client::Client, selector: &str) -> Result<()> {
    let deadline = Instant::now() + BOOT;
    while !pods(client, selector).await?.is_empty() {
        if Instant::now() > deadline {
            bail!("pods {selector} still there after {} s", BOOT.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_millis() as u64
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Everything above for one board; `lan` (root) adds the agent and the small node.
pub fn measure(repo: &Path, board_name: &str, with_agent: bool) -> Result<Row> {
    let board = crate::board::load(&repo.join("board-configs"), board_name)?;
    let out = repo.join("out").join(board_name);
    let rt = runtime()?;
    let mut row = Row {
        board: board_name.into(),
        ..Row::default()
    };
    let port = free_port()?;
    let o = VmOptions::headless(board.clone(), out.clone(), "bench-pods", port);
    eprintln!("{board_name}: booting a server");
    let node = Node::boot(o)?;
    let name = rt.block_on(wait_ready_node(&node.client, None))?;
    rt.block_on(start_pod(&node.client, &probe(&name)))?;
    std::thread::sleep(Duration::from_secs(30));
    row.server_idle_rss_kib = node.rss_kib()?;

    eprintln!("{board_name}: starting {SERIAL_PODS} pods one at a time");
    let mut times = Vec::new();
    for i in 0..SERIAL_PODS {
        times.push(rt.block_on(start_pod(&node.client, &sleeper(&format!("serial-{i}"))))?);
    }
    times.sort();
    row.start_p50_ms = percentile(&times, 0.50);
    row.start_p99_ms = percentile(&times, 0.99);
    std::thread::sleep(Duration::from_secs(10));
    row.server_rss_20_pods_kib = node.rss_kib()?;
    rt.block_on(async {
        node.client
            .request(
                Method::DELETE,
                "/api/v1/namespaces/default/pods?labelSelector=bench%3Dserial",
                None,
            )
            .await?;
        wait_gone(&node.client, "bench%3Dserial").await
    })?;

    eprintln!("{board_name}: a Deployment of {MANY_PODS} pods");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "many", "namespace": "default"},
        "spec": {
            "replicas": MANY_PODS,
            "selector": {"matchLabels": {"bench": "many"}},
            "template": sleeper("many")
                .get("spec")
                .map(|spec| json!({"metadata": {"labels": {"bench": "many"}}, "spec": spec}))
                .expect("a pod spec"),
        },
    });
    let started = Instant::now();
    rt.block_on(async {
        node.client
            .request(
                Method::POST,
                "/apis/apps/v1/namespaces/default/deployments",
                Some(&deployment),
            )
            .await?;
        let deadline = started + BOOT * 2;
        loop {
            let n = running(&node.client, "bench%3Dmany").await?;
            if n >= MANY_PODS {
                return anyhow::Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{n} of {MANY_PODS} pods Running after {} s",
                    (BOOT * 2).as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })?;
    row.hundred_pods_s = started.elapsed().as_secs_f64();
    node.off();

    if with_agent {
        eprintln!("{board_name}: a server and an agent on a host bridge");
        row.agent_idle_rss_kib = Some(agent_rss(&rt, &board, &out)?);
        eprintln!("{board_name}: a 256 MiB server with 5 pods");
        row.small_node = Some(small_node(&rt, &board, &out)?);
    }
    Ok(row)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn agent_rss(rt: &tokio::runtime::Runtime, board: &crate::board::Board, out: &Path) -> Result<u64> {
    let lan = Lan::make(
        "cairnbench0",
        [192, 168, 214],
        &["cairnbench0s", "cairnbench0a"],
    )?;
    let on_lan =
        |run: &str, tap: &str, host: u8, secrets: bool, yaml: String| -> Result<VmOptions> {
            let mut o = VmOptions::headless(board.clone(), out.to_path_buf(), run, 0);
            o.tap = Some(Tap {
                ifname: tap.into(),
                mac: format!("52:54:00:c4:d6:{host:02x}"),
                address: lan.address(host),
            });
            if !secrets {
                o.secrets = None;
            }
            qemu::prepare(&o)?;
            crate::config::set(&o.node_disk(), &yaml, run)?;
            o.fresh = false;
            Ok(o)
        };
    let network = |host: u8| {
        format!(
            "network:\n  mode: static\n  address: {}/24\n  gateway: {}\n",
            lan.address(host),
            lan.address(254)
        )
    };
    let so = on_lan(
        "bench-server",
        "cairnbench0s",
        1,
        true,
        format!("hostname: server-1\nrole: server\n{}", network(1)),
    )?;
    let token = std::fs::read_to_string(so.secrets.as_ref().expect("secrets").join("node-token"))?;
    let ao = on_lan(
        "bench-agent",
        "cairnbench0a",
        2,
        false,
        format!(
            "hostname: agent-1\nrole: agent\nserver: https://{}:6443\ntoken: {}\n{}",
            lan.address(1),
            token.trim(),
            network(2)
        ),
    )?;
    let server = Node::boot(so)?;
    let mut agent_vm = Vm::launch(&ao)?;
    rt.block_on(wait_ready_node(&server.client, Some("agent-1")))?;
    rt.block_on(start_pod(&server.client, &probe("agent-1")))?;
    std::thread::sleep(Duration::from_secs(30));
    let rss = server.rss_kib();
    let _ = agent_vm.powerdown();
    if !matches!(agent_vm.wait(Duration::from_secs(120)), Ok(Some(_))) {
        agent_vm.kill();
    }
    server.off();
    drop(lan);
    rss
}

fn small_node(
    rt: &tokio::runtime::Runtime,
    board: &crate::board::Board,
    out: &Path,
) -> Result<(usize, u64)> {
    let mut o = VmOptions::headless(
        board.clone(),
        out.to_path_buf(),
        "bench-small",
        free_port()?,
    );
    o.memory_mib = Some(256);
    let node = Node::boot(o)?;
    let name = rt.block_on(wait_ready_node(&node.client, None))?;
    rt.block_on(start_pod(&node.client, &probe(&name)))?;
    let mut pods = 1;
    for i in 0..4 {
        let mut pod = sleeper(&format!("small-{i}"));
        if i % 2 == 1 {
            pod["spec"]["containers"][0]["image"] = "cairn.local/test/httpd:latest".into();
            pod["spec"]["containers"][0]
                .as_object_mut()
                .expect("a container")
                .remove("command");
        }
        if rt.block_on(start_pod(&node.client, &pod)).is_ok() {
            pods += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let available = node.mem_available_kib()?;
    node.off();
    Ok((pods, available))
}

pub fn print(rows: &[Row]) {
    let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
    println!(
        "| board | server+worker idle RSS MiB | with 20 pods MiB | pod start p50 ms | p99 ms | 100 pods s | agent idle RSS MiB | 256 MiB node: pods Running, MemAvailable MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            r.board,
            mib(r.server_idle_rss_kib),
            mib(r.server_rss_20_pods_kib),
            r.start_p50_ms,
            r.start_p99_ms,
            r.hundred_pods_s,
            r.agent_idle_rss_kib.map_or("-".into(), mib),
            r.small_node
                .map_or("-".into(), |(n, avail)| format!("{n}, {}", mib(avail))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_few_samples() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        let s = ms(&[100, 200, 300, 400, 1000]);
        assert_eq!(percentile(&s, 0.5), 300);
        assert_eq!(percentile(&s, 0.99), 1000);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
