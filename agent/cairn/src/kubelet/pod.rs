//! One task per pod bound to this node: makes its sandbox (directory, volumes, network
//! namespace, cgroup), runs its init containers in order and then its containers, restarts
//! them as the restart policy says (with back-off), publishes the pod's status, and on
//! deletion stops everything within the grace period and cleans up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_runtime::{cgroup, netns, ContainerSpec, Exit, Mount};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::env::{self, PodFacts};
use super::network;
use super::probes::{self, Probes, Verdict};
use super::pull;
use super::status::{self, State, Terminated};
use super::volumes::{self, Refs};
use super::Shared;

/// First restart of a crashed container waits this long, doubling up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before ending starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Init or app container, by index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Init(usize),
    App(usize),
}

struct Slot {
    spec: Value,
    status: status::Container,
    /// Number of the next attempt (container ids end in it).
    attempt: u32,
    /// When a waiting container may be (re)started.
    not_before: Option<Instant>,
    backoff: Duration,
    running_since: Option<Instant>,
    /// The running container's prober, if it has probes.
    prober: Option<tokio::task::AbortHandle>,
}

struct Sandbox {
    dir: PathBuf,
    volumes: HashMap<String, PathBuf>,
    netns: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    etc: Vec<Mount>,
}

struct Worker {
    shared: Arc<Shared>,
    pod: Value,
    uid: String,
    sandbox: Option<Sandbox>,
    failure: Option<(String, String)>,
    /// The pod's address on the node's pod network (not with `hostNetwork`).
    ip: Option<std::net::Ipv4Addr>,
    /// The last sandbox error logged (a pod waiting for the network says so once).
    sandbox_error: Option<String>,
    init: Vec<Slot>,
    app: Vec<Slot>,
    exits: mpsc::UnboundedSender<(Which, String, Exit)>,
    verdicts: mpsc::UnboundedSender<((Which, String), Verdict)>,
    published: Value,
    start_time: String,
}

/// Runs the pod until it is deleted (`updates` says `None` or closes).
pub async fn run(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Value>>) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (verdicts, mut verdicts_rx) = mpsc::unbounded_channel();
    let mut w = Worker::new(shared, pod, tx, verdicts);
    w.adopt();
    // Whether the API still has the pod (terminating) when the worker stops.
    let mut terminating = false;
    loop {
        if w.pod["metadata"]["deletionTimestamp"].is_string() {
            terminating = true;
            break;
        }
        w.sync().await;
        let wake = w.next_wake();
        tokio::select! {
            changed = updates.changed() => {
                match (changed, updates.borrow_and_update().clone()) {
                    (Ok(()), Some(pod)) => w.pod = pod,
                    _ => break,
                }
            }
            Some((which, id, exit)) = rx.recv() => w.exited(which, &id, exit),
            Some(((which, id), verdict)) = verdicts_rx.recv() => w.verdict(which, &id, verdict),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    w.terminate(&mut rx).await;
    if terminating {
        w.finish_deletion().await;
    }
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        pod: Value,
        exits: mpsc::UnboundedSender<(Which, String, Exit)>,
        verdicts: mpsc::UnboundedSender<((Which, String), Verdict)>,
    ) -> Worker {
        let slots = |list: &str| -> Vec<Slot> {
            pod["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| Slot {
                    status: status::Container::new(
                        c["name"].as_str().unwrap_or_default(),
                        c["image"].as_str().unwrap_or_default(),
                    ),
                    spec: c.clone(),
                    attempt: 0,
                    not_before: None,
                    backoff: INITIAL_BACKOFF,
                    running_since: None,
                    prober: None,
                })
                .collect()
        };
        let (init, app) = (slots("initContainers"), slots("containers"));
        let mut init = init;
        for s in &mut init {
            s.status.state = State::Waiting {
                reason: "PodInitializing".into(),
                message: String::new(),
            };
        }
        let mut app = app;
        if !init.is_empty() {
            for s in &mut app {
                s.status.state = State::Waiting {
                    reason: "PodInitializing".into(),
                    message: String::new(),
                };
            }
        }
        Worker {
            uid: pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            published: pod["status"].clone(),
            start_time: now(),
            shared,
            pod,
            sandbox: None,
            failure: None,
            ip: None,
            sandbox_error: None,
            init,
            app,
            exits,
            verdicts,
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            self.pod["metadata"]["name"].as_str().unwrap_or_default()
        )
    }

    fn slot(&mut self, which: Which) -> &mut Slot {
        match which {
            Which::Init(i) => &mut self.init[i],
            Which::App(i) => &mut self.app[i],
        }
    }

    /// `<pod uid>_<container>_`: what every attempt's container id starts with.
    fn container_prefix(&self, which: Which) -> String {
        let name = match which {
            Which::Init(i) => &self.init[i].status.name,
            Which::App(i) => &self.app[i].status.name,
        };
        format!("{}_{}_", self.uid, name)
    }

    fn container_id(&self, which: Which, attempt: u32) -> String {
        format!("{}{attempt}", self.container_prefix(which))
    }

    fn restart_policy(&self) -> &str {
        self.pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
    }

    /// Finds containers an earlier `cairn` started for this pod (they outlive it).
    fn adopt(&mut self) {
        let ids = self.shared.runtime.ids();
        let all: Vec<Which> = (0..self.init.len())
            .map(Which::Init)
            .chain((0..self.app.len()).map(Which::App))
            .collect();
        for which in all {
            let prefix = self.container_prefix(which);
            let latest = ids
                .iter()
                .filter_map(|id| id.strip_prefix(prefix.as_str())?.parse::<u32>().ok())
                .max();
            let Some(attempt) = latest else { continue };
            let id = self.container_id(which, attempt);
            let runtime = self.shared.runtime.clone();
            let slot = self.slot(which);
            slot.attempt = attempt + 1;
            slot.status.restarts = attempt;
            match runtime.exit(&id) {
                Some(exit) => slot.status.state = State::Terminated(terminated(&id, &exit)),
                None => {
                    let started_at = runtime
                        .started(&id)
                        .map(|s| s.started_at)
                        .unwrap_or_default();
                    slot.status.state = State::Running {
                        id: id.clone(),
                        started_at,
                    };
                    slot.running_since = Some(Instant::now());
                    let tx = self.exits.clone();
                    self.watch_probes(which, &id);
                    tokio::spawn(async move {
                        let exit = runtime.wait(&id, None).await;
                        let _ = tx.send((which, id, exit));
                    });
                }
            }
        }
        if self.init.iter().all(|s| s.status.succeeded()) && !self.init.is_empty() {
            for s in &mut self.app {
                if matches!(&s.status.state, State::Waiting { reason, .. } if reason == "PodInitializing")
                {
                    s.status.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: String::new(),
                    };
                }
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.init
            .iter()
            .chain(&self.app)
            .filter_map(|s| s.not_before)
            .min()
            .unwrap_or(far)
            .max(Instant::now() + Duration::from_millis(10))
    }

    async fn sync(&mut self) {
        if self.sandbox.is_none() {
            match self.make_sandbox().await {
                Ok(s) => {
                    self.sandbox = Some(s);
                    self.failure = None;
                    self.sandbox_error = None;
                }
                Err(message) => {
                    if self.sandbox_error.as_ref() != Some(&message) {
                        eprintln!("cairn: kubelet: pod {}: {message}", self.name());
                        self.sandbox_error = Some(message.clone());
                    }
                    // Waiting for the node's network: look again soon, it comes up by itself.
                    let network_down = self
                        .failure
                        .as_ref()
                        .is_some_and(|(reason, _)| reason == network::NOT_READY);
                    let pause = Duration::from_secs(if network_down { 1 } else { 5 });
                    for s in self.init.iter_mut().chain(&mut self.app) {
                        s.status.state = State::Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        };
                        s.not_before = Some(Instant::now() + pause);
                    }
                    self.publish().await;
                    // Try again after a pause (a ConfigMap may appear).
                    return;
                }
            }
        }
        let policy = self.restart_policy().to_owned();
        let mut initialized = true;
        for i in 0..self.init.len() {
            if self.init[i].status.succeeded() {
                continue;
            }
            initialized = false;
            let slot = &self.init[i];
            let due = slot.not_before.is_none_or(|t| t <= Instant::now());
            match &slot.status.state {
                State::Running { .. } => {}
                State::Terminated(_) if policy == "Never" => {}
                State::Terminated(_) | State::Waiting { .. } if due => {
                    self.start(Which::Init(i)).await
                }
                _ => {}
            }
            break;
        }
        if initialized {
            for i in 0..self.app.len() {
                let slot = &self.app[i];
                let due = slot.not_before.is_none_or(|t| t <= Instant::now());
                let start = match &slot.status.state {
                    State::Running { .. } => false,
                    State::Terminated(t) => due && restarts(&policy, t.exit_code),
                    State::Waiting { .. } => due,
                };
                if start {
                    self.start(Which::App(i)).await;
                }
            }
        }
        self.publish().await;
    }

    async fn make_sandbox(&mut self) -> Result<Sandbox, String> {
        self.failure = None;
        let shared = self.shared.clone();
        let dir = shared.pods_dir.join(&self.uid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let host_network = self.pod["spec"]["hostNetwork"].as_bool().unwrap_or(false);
        let netns = if host_network {
            None
        } else {
            let path = shared.netns_dir.join(&self.uid);
            if !netns::exists(&path) {
                let p = path.clone();
                tokio::task::spawn_blocking(move || netns::create(&p))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("network namespace: {e}"))?;
            }
            match shared.network.attach(&path, &self.uid).await {
                Ok(ip) => self.ip = Some(ip),
                Err((reason, message)) => {
                    self.failure = Some((reason, message.clone()));
                    return Err(message);
                }
            }
            Some(path)
        };
        let cgroup = match shared.runtime.cgroups() {
            Some(h) => Some(
                h.pod(&self.uid, &pod_resources(&self.pod))
                    .map_err(|e| format!("cgroup: {e}"))?,
            ),
            None => None,
        };
        let refs = Refs::fetch(&shared.client, &self.pod)
            .await
            .map_err(|e| e.to_string())?;
        let facts = PodFacts {
            pod: &self.pod,
            node_name: &shared.node_name,
            host_ip: &shared.host_ip,
            pod_ip: &self.pod_ip().unwrap_or_default(),
        };
        let volumes = volumes::prepare(
            &shared.client,
            &self.pod,
            &dir.join("volumes"),
            &refs,
            &facts,
        )
        .await?;
        let etc = self
            .etc_files(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Sandbox {
            dir,
            volumes,
            netns,
            cgroup,
            etc,
        })
    }

    fn host_network(&self) -> bool {
        self.pod["spec"]["hostNetwork"].as_bool().unwrap_or(false)
    }

    /// The pod's address: the node's with `hostNetwork`, else its own on the pod network once
    /// the sandbox has one.
    fn pod_ip(&self) -> Option<String> {
        if self.host_network() {
            return Some(self.shared.host_ip.clone());
        }
        self.ip.map(|ip| ip.to_string())
    }

    fn hostname(&self) -> String {
        if self.host_network() {
            return crate::procfs::kernel_hostname()
                .unwrap_or_else(|| self.shared.node_name.clone());
        }
        let name = self.pod["spec"]["hostname"]
            .as_str()
            .or(self.pod["metadata"]["name"].as_str())
            .unwrap_or("pod");
        name.chars().take(63).collect()
    }

    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for the pod's containers.
    fn etc_files(&self, dir: &std::path::Path) -> std::io::Result<Vec<Mount>> {
        let hostname = self.hostname();
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(ip) = self.pod_ip() {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        std::fs::write(dir.join("hosts"), hosts)?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        let mut mounts = vec![
            Mount {
                source: dir.join("hosts"),
                target: "/etc/hosts".into(),
                readonly: false,
            },
            Mount {
                source: dir.join("hostname"),
                target: "/etc/hostname".into(),
                readonly: false,
            },
        ];
        let resolv = std::path::Path::new("/etc/resolv.conf");
        if resolv.exists() {
            std::fs::copy(resolv, dir.join("resolv.conf"))?;
            mounts.push(Mount {
                source: dir.join("resolv.conf"),
                target: "/etc/resolv.conf".into(),
                readonly: false,
            });
        }
        Ok(mounts)
    }

    /// Starts attempt `slot.attempt` of a container.
    async fn start(&mut self, which: Which) {
        let attempt = self.slot(which).attempt;
        let id = self.container_id(which, attempt);
        let spec_value = self.slot(which).spec.clone();
        let secrets = self.pull_secrets().await;
        let got = pull::image(
            self.shared.images.clone(),
            &self.shared.registries,
            &spec_value,
            &secrets,
        )
        .await;
        let image = match got {
            Ok(outcome) => {
                for (kind, reason, message) in &outcome.events {
                    self.event(&spec_value, kind, reason, message);
                }
                // For the image garbage collector (in memory; no write).
                self.shared.images.mark_used(&outcome.image.id);
                outcome.image
            }
            Err(f) => {
                for (kind, reason, message) in &f.events {
                    self.event(&spec_value, kind, reason, message);
                }
                let slot = self.slot(which);
                let reason = if f.reason == "ErrImagePull"
                    && (slot.backoff > INITIAL_BACKOFF
                        || matches!(&slot.status.state, State::Waiting { reason, .. } if reason == "ErrImagePull"))
                {
                    "ImagePullBackOff"
                } else {
                    f.reason
                };
                slot.status.state = State::Waiting {
                    reason: reason.into(),
                    message: f.message,
                };
                back_off(slot);
                return;
            }
        };
        let spec = match self.container_spec(&id, &spec_value, &image).await {
            Ok(spec) => spec,
            Err(message) => {
                let slot = self.slot(which);
                slot.status.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message,
                };
                back_off(slot);
                return;
            }
        };
        // Keep one earlier attempt for `kubectl logs --previous`; older ones go.
        if attempt >= 2 {
            let old = self.container_id(which, attempt - 2);
            let runtime = self.shared.runtime.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.remove(&old)).await;
        }
        let runtime = self.shared.runtime.clone();
        let result = runtime.start(&spec).await;
        let previous = match &self.slot(which).status.state {
            State::Terminated(t) => Some(t.clone()),
            _ => None,
        };
        let slot = self.slot(which);
        slot.attempt += 1;
        slot.status.image_id = format!("{}@{}", repository(&image.reference), image.digest);
        if let Some(p) = previous {
            slot.status.last = Some(p);
            slot.status.restarts += 1;
        } else if attempt > 0 {
            slot.status.restarts += 1;
        }
        match result {
            Ok((started, shim)) => {
                slot.status.state = State::Running {
                    id: id.clone(),
                    started_at: started.started_at,
                };
                slot.running_since = Some(Instant::now());
                slot.not_before = None;
                let tx = self.exits.clone();
                self.watch_probes(which, &id);
                tokio::spawn(async move {
                    let exit = runtime.wait(&id, Some(shim)).await;
                    let _ = tx.send((which, id, exit));
                });
            }
            Err(e) => {
                let exit = runtime.exit(&id).unwrap_or_else(|| Exit {
                    exit_code: 128,
                    signal: None,
                    oom_killed: false,
                    started_at: None,
                    finished_at: cairn_runtime::logs::rfc3339_nanos(jiff::Timestamp::now()),
                    start_error: Some(e.to_string()),
                });
                slot.status.state = State::Terminated(terminated(&id, &exit));
                slot.status.ready = false;
                back_off(slot);
            }
        }
    }

    fn exited(&mut self, which: Which, id: &str, exit: Exit) {
        let policy = self.restart_policy().to_owned();
        let name = self.name();
        let spec = self.slot(which).spec.clone();
        let message = termination_message(&self.shared, &self.uid, id, &spec, exit.exit_code);
        let slot = self.slot(which);
        if !matches!(&slot.status.state, State::Running { id: running, .. } if running == id) {
            return;
        }
        if slot
            .running_since
            .is_some_and(|t| t.elapsed() >= BACKOFF_RESET)
        {
            slot.backoff = INITIAL_BACKOFF;
        }
        slot.running_since = None;
        slot.status.ready = false;
        slot.status.started = false;
        if let Some(prober) = slot.prober.take() {
            prober.abort();
        }
        let mut t = terminated(id, &exit);
        t.message = t.message.or(message);
        eprintln!(
            "cairn: kubelet: pod {name} container {} exited with {} ({})",
            slot.status.name, t.exit_code, t.reason
        );
        let again = match which {
            Which::Init(_) => t.exit_code != 0 && policy != "Never",
            Which::App(_) => restarts(&policy, t.exit_code),
        };
        slot.status.state = State::Terminated(t);
        if again {
            if slot.status.restarts == 0 {
                // The first restart is immediate; back-off starts with the second.
                slot.not_before = Some(Instant::now());
            } else {
                back_off(slot);
            }
        }
    }

    /// A container has just started running (or was found running): without probes it is
    /// started and ready at once; with probes, its prober decides ([`Worker::verdict`]).
    fn watch_probes(&mut self, which: Which, id: &str) {
        let spec = self.slot(which).spec.clone();
        let probes = match which {
            // Init containers run to completion; they have no probes.
            Which::Init(_) => Probes::default(),
            Which::App(_) => Probes::parse(&spec).unwrap_or_else(|message| {
                self.event(
                    &spec,
                    "Warning",
                    "Unhealthy",
                    &format!("probe ignored: {message}"),
                );
                Probes::default()
            }),
        };
        let slot = self.slot(which);
        if let Some(old) = slot.prober.take() {
            old.abort();
        }
        if probes.is_empty() {
            slot.status.started = true;
            slot.status.ready = true;
            return;
        }
        slot.status.started = false;
        slot.status.ready = false;
        let target = probes::Target {
            runtime: self.shared.runtime.clone(),
            id: id.to_owned(),
            // Known before the sandbox is (re)made: containers found running are probed too.
            netns: (!self.host_network()).then(|| self.shared.netns_dir.join(&self.uid)),
            address: self.pod_ip().unwrap_or_else(|| "127.0.0.1".to_owned()),
        };
        let task = tokio::spawn(probes::run(
            target,
            probes,
            (which, id.to_owned()),
            self.verdicts.clone(),
        ));
        self.slot(which).prober = Some(task.abort_handle());
    }

    /// What a container's prober concluded.
    fn verdict(&mut self, which: Which, id: &str, verdict: Verdict) {
        let spec = self.slot(which).spec.clone();
        if !matches!(&self.slot(which).status.state, State::Running { id: running, .. } if running == id)
        {
            return;
        }
        let has_readiness = spec["readinessProbe"].is_object();
        let slot = self.slot(which);
        match verdict {
            Verdict::Started => {
                slot.status.started = true;
                if !has_readiness {
                    slot.status.ready = true;
                }
            }
            Verdict::Ready(ready) => slot.status.ready = ready && slot.status.started,
            Verdict::Unhealthy(kind, message) => {
                self.event(
                    &spec,
                    "Warning",
                    "Unhealthy",
                    &format!("{} probe failed: {message}", kind.label()),
                );
            }
            Verdict::Failed(kind, _) => {
                slot.status.ready = false;
                let name = slot.status.name.clone();
                let restart = if self.restart_policy() == "Never" {
                    "will be killed"
                } else {
                    "will be restarted"
                };
                self.event(
                    &spec,
                    "Normal",
                    "Killing",
                    &format!(
                        "Container {name} failed {} probe, {restart}",
                        kind.label().to_lowercase()
                    ),
                );
                let grace = spec[match kind {
                    probes::Kind::Startup => "startupProbe",
                    _ => "livenessProbe",
                }]["terminationGracePeriodSeconds"]
                    .as_u64()
                    .or(self.pod["spec"]["terminationGracePeriodSeconds"].as_u64())
                    .unwrap_or(30);
                let runtime = self.shared.runtime.clone();
                let id = id.to_owned();
                tokio::spawn(async move {
                    let _ = runtime.signal(&id, nix::sys::signal::Signal::SIGTERM);
                    let deadline = Instant::now() + Duration::from_secs(grace);
                    while runtime.running(&id) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = runtime.signal(&id, nix::sys::signal::Signal::SIGKILL);
                });
            }
        }
    }

    /// The data of the pod's `imagePullSecrets` (those that exist).
    async fn pull_secrets(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let ns = self.pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let mut out = Vec::new();
        for s in self.pod["spec"]["imagePullSecrets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(name) = s["name"].as_str() else {
                continue;
            };
            let path = format!("/api/v1/namespaces/{ns}/secrets/{name}");
            match self
                .shared
                .client
                .request(hyper::Method::GET, &path, None)
                .await
            {
                Ok(secret) => out.push(volumes::decode(&secret, true)),
                Err(e) => eprintln!(
                    "cairn: kubelet: pod {}: image pull secret {name}: {e}",
                    self.name()
                ),
            }
        }
        out
    }

    /// Records an event about container `c` of this pod (best effort, in the background).
    fn event(&self, c: &Value, kind: &str, reason: &str, message: &str) {
        let meta = &self.pod["metadata"];
        let namespace = meta["namespace"].as_str().unwrap_or("default").to_owned();
        let name = meta["name"].as_str().unwrap_or_default();
        let container = c["name"].as_str().unwrap_or_default();
        let now = cairn_runtime::logs::rfc3339_nanos(jiff::Timestamp::now());
        let seconds = now.split('.').next().unwrap_or(&now).to_owned() + "Z";
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": namespace,
                "name": name,
                "uid": self.uid,
                "fieldPath": format!("spec.containers{{{container}}}"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "count": 1,
            "firstTimestamp": seconds,
            "lastTimestamp": seconds,
            "source": {"component": "kubelet", "host": self.shared.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.shared.node_name,
        });
        let client = self.shared.client.clone();
        let path = format!("/api/v1/namespaces/{namespace}/events");
        tokio::spawn(async move {
            let _ = client
                .request(hyper::Method::POST, &path, Some(&event))
                .await;
        });
    }

    async fn container_spec(
        &self,
        id: &str,
        c: &Value,
        image: &cairn_images::Image,
    ) -> Result<ContainerSpec, String> {
        let sandbox = self.sandbox.as_ref().ok_or("no sandbox")?;
        let shared = &self.shared;
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let mut refs = Refs::fetch(&shared.client, &self.pod)
            .await
            .map_err(|e| e.to_string())?;
        let pod_ip = self.pod_ip().unwrap_or_default();
        let facts = PodFacts {
            pod: &self.pod,
            node_name: &shared.node_name,
            host_ip: &shared.host_ip,
            pod_ip: &pod_ip,
        };
        let env = env::build(&image.config.env, c, &facts, &mut refs)?;
        let vars: Vec<(String, String)> = env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let expand = |list: Vec<String>| {
            list.into_iter()
                .map(|s| env::expand(&s, &vars))
                .collect::<Vec<_>>()
        };
        let args = match (strings(&c["command"]), strings(&c["args"])) {
            (Some(cmd), Some(a)) => [expand(cmd), expand(a)].concat(),
            (Some(cmd), None) => expand(cmd),
            (None, Some(a)) => [image.config.entrypoint.clone(), expand(a)].concat(),
            (None, None) => [image.config.entrypoint.clone(), image.config.cmd.clone()].concat(),
        };
        if args.is_empty() {
            return Err(format!(
                "no command specified: the image {} has neither entrypoint nor cmd",
                image.reference
            ));
        }
        let security = |key: &str| {
            c["securityContext"][key]
                .as_u64()
                .or(self.pod["spec"]["securityContext"][key].as_u64())
        };
        let (image_uid, image_gid) = parse_user(&image.config.user)?;
        let uid = security("runAsUser").map(|u| u as u32).unwrap_or(image_uid);
        let gid = security("runAsGroup")
            .map(|g| g as u32)
            .unwrap_or(image_gid);
        let supplementary_gids = self.pod["spec"]["securityContext"]["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_u64().map(|g| g as u32))
            .collect();
        let mut mounts = sandbox.etc.clone();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            let mut source = sandbox
                .volumes
                .get(name)
                .cloned()
                .ok_or_else(|| format!("volume {name:?} is not defined in the pod"))?;
            if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                if sub.split('/').any(|p| p == "..") {
                    return Err(format!("subPath {sub:?} may not contain '..'"));
                }
                source = source.join(sub);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
                }
            }
            mounts.push(Mount {
                source,
                target: m["mountPath"].as_str().unwrap_or_default().to_owned(),
                readonly: m["readOnly"].as_bool().unwrap_or(false),
            });
        }
        // The termination message file (`terminationMessagePath`), read when the container ends.
        let message = sandbox.dir.join("termination").join(id);
        if let Some(parent) = message.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&message, b"").map_err(|e| e.to_string())?;
        std::fs::set_permissions(
            &message,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .map_err(|e| e.to_string())?;
        mounts.push(Mount {
            source: message,
            target: c["terminationMessagePath"]
                .as_str()
                .unwrap_or("/dev/termination-log")
                .to_owned(),
            readonly: false,
        });
        let cgroup = match (shared.runtime.cgroups(), &sandbox.cgroup) {
            (Some(h), Some(pod)) => Some(
                h.container(pod, id, &container_resources(c))
                    .map_err(|e| format!("cgroup: {e}"))?,
            ),
            _ => None,
        };
        let name = c["name"].as_str().unwrap_or_default();
        let attempt = id.rsplit('_').next().unwrap_or("0");
        let log = shared
            .logs_dir
            .join(self.log_dir_name())
            .join(name)
            .join(format!("{attempt}.log"));
        let cwd = c["workingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| match image.config.working_dir.as_str() {
                "" => "/".to_owned(),
                dir => dir.to_owned(),
            });
        Ok(ContainerSpec {
            id: id.to_owned(),
            layers: image.layers.clone(),
            args,
            env,
            cwd,
            uid,
            gid,
            supplementary_gids,
            hostname: self.hostname(),
            mounts,
            netns: sandbox.netns.clone(),
            cgroup,
            log,
            log_max_bytes: shared.log_max_bytes,
            readonly_rootfs: c["securityContext"]["readOnlyRootFilesystem"]
                .as_bool()
                .unwrap_or(false),
            stdin: c["stdin"].as_bool().unwrap_or(false),
        })
    }

    /// `<namespace>_<name>_<uid>`, the kubelet's directory name under `/var/log/pods`.
    fn log_dir_name(&self) -> String {
        format!(
            "{}_{}_{}",
            self.pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            self.pod["metadata"]["name"].as_str().unwrap_or_default(),
            self.uid
        )
    }

    async fn publish(&mut self) {
        let init: Vec<status::Container> = self.init.iter().map(|s| s.status.clone()).collect();
        let app: Vec<status::Container> = self.app.iter().map(|s| s.status.clone()).collect();
        let pod_ip = self.pod_ip();
        let failure = self.failure.as_ref().map(|(r, m)| (r.as_str(), m.as_str()));
        let facts = status::Pod {
            restart_policy: self.restart_policy(),
            host_ip: &self.shared.host_ip,
            pod_ip: pod_ip.as_deref(),
            start_time: &self.start_time,
            initialized: self.init.iter().all(|s| s.status.succeeded()),
            failure,
        };
        let now = now();
        let status = status::build(&facts, &init, &app, &self.published, &now);
        if status == self.published {
            return;
        }
        let mut patch = status.clone();
        if let (Some(new), Some(old)) = (patch.as_object_mut(), self.published.as_object()) {
            for key in old.keys() {
                if !new.contains_key(key) {
                    new.insert(key.clone(), Value::Null);
                }
            }
        }
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            self.pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            self.pod["metadata"]["name"].as_str().unwrap_or_default()
        );
        let body = json!({"status": patch});
        match self
            .shared
            .client
            .request(hyper::Method::PATCH, &path, Some(&body))
            .await
        {
            Ok(_) => self.published = status,
            Err(e) => eprintln!("cairn: kubelet: pod {}: status: {e}", self.name()),
        }
    }

    /// The graceful deletion's last step, once everything has stopped: delete the pod from
    /// the API for good (grace 0), this pod only (uid precondition: a pod of the same name
    /// made meanwhile is not ours). Gone already, or replaced: nothing to do. Any other
    /// failure is retried by a new worker the next time the pod is listed or changes.
    async fn finish_deletion(&self) {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            self.pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default"),
            self.pod["metadata"]["name"].as_str().unwrap_or_default()
        );
        let options = json!({
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        });
        match self
            .shared
            .client
            .request(hyper::Method::DELETE, &path, Some(&options))
            .await
        {
            Ok(_) => {}
            Err(crate::client::ClientError::Status { code, .. })
                if code == hyper::StatusCode::NOT_FOUND || code == hyper::StatusCode::CONFLICT => {}
            Err(e) => eprintln!("cairn: kubelet: pod {}: final deletion: {e}", self.name()),
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after the grace period) and removes the
    /// pod's containers, namespace, cgroup, volumes and logs.
    async fn terminate(&mut self, exits: &mut mpsc::UnboundedReceiver<(Which, String, Exit)>) {
        let grace = self.pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .or(self.pod["spec"]["terminationGracePeriodSeconds"].as_u64())
            .unwrap_or(30);
        let runtime = self.shared.runtime.clone();
        let mut running: Vec<String> = self
            .init
            .iter()
            .chain(&self.app)
            .filter_map(|s| match &s.status.state {
                State::Running { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        for id in &running {
            let _ = runtime.signal(id, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(grace);
        while !running.is_empty() {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some((_, id, _))) => running.retain(|r| *r != id),
                _ => break,
            }
        }
        let prefix = format!("{}_", self.uid);
        let _ = tokio::task::spawn_blocking(move || {
            for id in runtime
                .ids()
                .into_iter()
                .filter(|id| id.starts_with(&prefix))
            {
                if let Err(e) = runtime.remove(&id) {
                    eprintln!("cairn: kubelet: removing container {id}: {e}");
                }
            }
        })
        .await;
        let shared = self.shared.clone();
        let uid = self.uid.clone();
        let logs = shared.logs_dir.join(self.log_dir_name());
        let cleaned = tokio::task::spawn_blocking(move || cleanup(&shared, &uid, &logs)).await;
        if let Ok(Err(e)) = cleaned {
            eprintln!("cairn: kubelet: cleaning up pod {}: {e}", self.name());
        }
        eprintln!("cairn: kubelet: pod {} stopped and removed", self.name());
    }
}

/// Removes what a pod left on the node: interface and address, namespace, cgroup, directory
/// and logs.
pub fn cleanup(shared: &Shared, uid: &str, logs: &std::path::Path) -> std::io::Result<()> {
    if let Err(e) = shared.network.detach(uid) {
        eprintln!("cairn: kubelet: pod {uid}: freeing its network: {e}");
    }
    netns::remove(&shared.netns_dir.join(uid))?;
    if let Some(h) = shared.runtime.cgroups() {
        cgroup::remove_pod(&h.root().join("kubepods").join(format!("pod{uid}")))?;
    }
    let dir = shared.pods_dir.join(uid);
    for d in [dir.as_path(), logs] {
        match std::fs::remove_dir_all(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The most a termination message keeps (the kubelet's limits).
const MESSAGE_BYTES: usize = 4096;
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

/// What the container wrote to its termination message file, or with
/// `terminationMessagePolicy: FallbackToLogsOnError` and a failure, the end of its log.
fn termination_message(
    shared: &Shared,
    uid: &str,
    id: &str,
    spec: &Value,
    exit_code: i32,
) -> Option<String> {
    let file = shared.pods_dir.join(uid).join("termination").join(id);
    if let Ok(bytes) = std::fs::read(&file) {
        if !bytes.is_empty() {
            let bytes = &bytes[..bytes.len().min(MESSAGE_BYTES)];
            return Some(String::from_utf8_lossy(bytes).into_owned());
        }
    }
    if exit_code == 0 || spec["terminationMessagePolicy"].as_str() != Some("FallbackToLogsOnError")
    {
        return None;
    }
    let log = shared.runtime.spec(id)?.log;
    let opts = cairn_runtime::logs::ReadOptions {
        tail_lines: Some(FALLBACK_LINES),
        ..Default::default()
    };
    let records = cairn_runtime::logs::read(&log, &opts).ok()?;
    let text = cairn_runtime::logs::render(&records, &Default::default());
    let tail = &text[text.len().saturating_sub(FALLBACK_BYTES)..];
    (!tail.is_empty()).then(|| String::from_utf8_lossy(tail).into_owned())
}

fn restarts(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn back_off(slot: &mut Slot) {
    slot.not_before = Some(Instant::now() + slot.backoff);
    if let State::Terminated(t) = &slot.status.state {
        let message = format!(
            "back-off {}s restarting failed container={}",
            slot.backoff.as_secs(),
            slot.status.name
        );
        slot.status.last = Some(t.clone());
        slot.status.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message,
        };
    }
    slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
}

fn terminated(id: &str, exit: &Exit) -> Terminated {
    let reason = if exit.start_error.is_some() && exit.started_at.is_none() {
        "StartError"
    } else if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Terminated {
        id: id.to_owned(),
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: reason.to_owned(),
        message: exit.start_error.clone(),
        started_at: exit.started_at.clone(),
        finished_at: exit.finished_at.clone(),
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `registry/repo:tag` → `registry/repo` (for `imageID`, `repo@sha256:...`).
fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    }
}

/// An image's `User`: `uid`, `uid:gid` or `root`. Names other than root need the image's
/// `/etc/passwd`, which is not read yet.
fn parse_user(user: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let uid = match u {
        "root" => 0,
        n => n.parse().map_err(|_| {
            format!("the image's user {user:?} is not numeric (set securityContext.runAsUser)")
        })?,
    };
    let gid = match g {
        "" => uid,
        "root" => 0,
        n => n.parse().map_err(|_| {
            format!("the image's group {g:?} is not numeric (set securityContext.runAsGroup)")
        })?,
    };
    Ok((uid, gid))
}

fn milli(v: &Value) -> Option<u64> {
    (!v.is_null()).then(|| (cairn_controllers::scheduler::quantity(v) * 1000.0).round() as u64)
}

fn bytes(v: &Value) -> Option<u64> {
    (!v.is_null()).then(|| cairn_controllers::scheduler::quantity(v).round() as u64)
}

fn container_resources(c: &Value) -> cgroup::Resources {
    let r = &c["resources"];
    cgroup::Resources::from_kubernetes(
        milli(&r["requests"]["cpu"]),
        milli(&r["limits"]["cpu"]),
        bytes(&r["limits"]["memory"]),
    )
}

/// The pod's cgroup gets the sum of its containers' limits when every container has one.
fn pod_resources(pod: &Value) -> cgroup::Resources {
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let sum = |f: &dyn Fn(&Value) -> Option<u64>| -> Option<u64> {
        containers.iter().map(|c| f(c)).sum::<Option<u64>>()
    };
    let cpu_limit = sum(&|c| milli(&c["resources"]["limits"]["cpu"]));
    let mem_limit = sum(&|c| bytes(&c["resources"]["limits"]["memory"]));
    let cpu_request: u64 = containers
        .iter()
        .filter_map(|c| milli(&c["resources"]["requests"]["cpu"]))
        .sum();
    cgroup::Resources::from_kubernetes(
        (cpu_request > 0).then_some(cpu_request),
        cpu_limit,
        mem_limit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_users_and_repositories_are_read_like_the_kubelet() {
        assert_eq!(parse_user("").unwrap(), (0, 0));
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
        assert!(parse_user("nobody").unwrap_err().contains("runAsUser"));
        assert_eq!(
            repository("cairn.local/test/busybox:latest"),
            "cairn.local/test/busybox"
        );
        assert_eq!(repository("host:5000/x@sha256:ab"), "host:5000/x");
        assert_eq!(repository("host:5000/x"), "host:5000/x");
    }

    #[test]
    fn pod_limits_are_summed_only_when_every_container_has_one() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}},
            {"resources": {"limits": {"cpu": "1", "memory": "32Mi"}}}
        ]}});
        let r = pod_resources(&pod);
        assert_eq!(r.cpu_quota_micros, Some(150_000));
        assert_eq!(r.memory_max, Some(96 << 20));
        assert_eq!(r.cpu_weight, Some(cgroup::weight_from_millicores(100)));
        let open =
            json!({"spec": {"containers": [{"resources": {"limits": {"memory": "64Mi"}}}, {}]}});
        assert_eq!(pod_resources(&open).memory_max, None);
    }
}
