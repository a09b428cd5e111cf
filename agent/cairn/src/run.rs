//! `cairn server` and `cairn agent`: certificates, then HTTPS until a signal.
//!
//! The server serves the Kubernetes API (`cairn_apiserver`) over the SQLite store in
//! `DATA/server/db/state.db`; the agent serves health and version only until the kubelet exists.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use cairn_config::{NodeConfig, Role};
use cairn_store::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use cairn::health::{self, version::VersionInfo, Router};
use cairn::{kubeconfig, node_status, pki, procfs, seed, token, update};

use crate::cli::{AgentArgs, CommonArgs, ServerArgs};

/// Read when `--node-config` is not given; missing or invalid means defaults, as for init.
const DEFAULT_NODE_CONFIG: &str = "/boot/cairn/node.yaml";

/// Where the server keeps its state under the data dir (the K3s layout, minus `rancher/k3s`).
pub struct ServerPaths {
    pub tls: PathBuf,
    pub db: PathBuf,
    pub node_token: PathBuf,
    pub admin_kubeconfig: PathBuf,
    /// Auto-deployed manifests (`cairn_controllers::manifests`).
    pub manifests: PathBuf,
}

impl ServerPaths {
    pub fn new(data_dir: &Path) -> ServerPaths {
        let server = data_dir.join("server");
        ServerPaths {
            tls: server.join("tls"),
            db: server.join("db").join("state.db"),
            node_token: server.join("node-token"),
            admin_kubeconfig: server.join("cred").join("admin.kubeconfig"),
            manifests: server.join("manifests"),
        }
    }
}

pub fn server(args: ServerArgs) -> Result<()> {
    let node = load_node_config(args.common.node_config.as_deref())?;
    if args.disable_agent {
        eprintln!("cairn: --disable-agent: this server runs no workloads");
    }
    let paths = ServerPaths::new(&args.common.data_dir);
    let imported = seed::import(&args.secrets_dir, &paths.tls, &paths.node_token)
        .with_context(|| format!("importing secrets from {}", args.secrets_dir.display()))?;
    let what: Vec<&str> = [
        (imported.ca, "the cluster CA"),
        (imported.token, "the server token"),
    ]
    .iter()
    .filter_map(|&(done, name)| done.then_some(name))
    .collect();
    if !what.is_empty() {
        eprintln!(
            "cairn: imported {} from {}",
            what.join(" and "),
            args.secrets_dir.display()
        );
    }
    serve(
        Role::Server,
        &args.common,
        &node,
        args.write_kubeconfig.as_deref(),
        !args.disable_agent,
        cairn_controllers::Parts {
            controllers: !args.disable_controller_manager,
            scheduler: !args.disable_scheduler,
            cluster_cidr: Some(args.cluster_cidr),
        },
        None,
    )
}

pub fn agent(args: AgentArgs) -> Result<()> {
    let node = load_node_config(args.common.node_config.as_deref())?;
    let Some(server) = args.server.or_else(|| node.server.clone()) else {
        bail!("an agent needs a server: --server URL, CAIRN_URL or `server:` in the node config");
    };
    let Some(text) = args.token.or_else(|| node.token.clone()) else {
        bail!(
            "an agent needs a join token: --token, CAIRN_TOKEN or `token:` in the node config \
               (on the server: DATA/server/node-token, or `cairn token create`)"
        );
    };
    let token = token::JoinToken::parse(text.as_str()).context("the join token")?;
    let join = Join {
        server: server.as_str().trim_end_matches('/').to_owned(),
        token,
    };
    let none = cairn_controllers::Parts {
        controllers: false,
        scheduler: false,
        cluster_cidr: None,
    };
    serve(
        Role::Agent,
        &args.common,
        &node,
        None,
        false,
        none,
        Some(join),
    )
}

/// Where the start goes on the way to ready, step by step: `cairn: steps_ms tls=N ...`
/// just before the ready line (`cairnctl bench` shows it beside init's steps). Each step
/// begins where the previous one ended.
struct Steps {
    last: Instant,
    done: Vec<(&'static str, u128)>,
}

impl Steps {
    fn start() -> Steps {
        Steps {
            last: Instant::now(),
            done: Vec::new(),
        }
    }

    fn end(&mut self, name: &'static str) {
        let now = Instant::now();
        self.done
            .push((name, now.duration_since(self.last).as_millis()));
        self.last = now;
    }

    /// `name=ms` pairs in the order they were taken.
    fn summary(&self) -> String {
        let pairs: Vec<String> = self
            .done
            .iter()
            .map(|(n, ms)| format!("{n}={ms}"))
            .collect();
        pairs.join(" ")
    }
}

/// What an agent joins with.
struct Join {
    server: String,
    token: token::JoinToken,
}

fn load_node_config(explicit: Option<&Path>) -> Result<NodeConfig> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_NODE_CONFIG));
    let name = path.display().to_string();
    let parsed = match fs::read_to_string(path) {
        Ok(text) => NodeConfig::parse(&text, &name).map_err(anyhow::Error::from),
        Err(e) if e.kind() == io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(NodeConfig::default());
        }
        Err(e) => Err(anyhow::Error::from(e).context(name)),
    };
    match (parsed, explicit) {
        (Ok(config), _) => Ok(config),
        (Err(e), Some(_)) => Err(e),
        (Err(e), None) => {
            eprintln!("cairn: {e:#}; using defaults");
            Ok(NodeConfig::default())
        }
    }
}

/// Runs `role` until a signal. `register` (a server that is also a worker): keep this node's
/// Node object in the API ([`node_status`]); the trial boot then also waits for it to be Ready.
fn serve(
    role: Role,
    args: &CommonArgs,
    node: &NodeConfig,
    kubeconfig: Option<&Path>,
    register: bool,
    parts: cairn_controllers::Parts,
    join: Option<Join>,
) -> Result<()> {
    let mut steps = Steps::start();
    let role_name = role.as_str();
    let paths = ServerPaths::new(&args.data_dir);
    let tls_dir = match role {
        Role::Server => paths.tls.clone(),
        Role::Agent => args.data_dir.join(role_name).join("tls"),
    };
    eprintln!(
        "cairn: {role_name} starting, data dir {}",
        args.data_dir.display()
    );

    let hostname = node
        .hostname
        .as_ref()
        .map(|h| h.to_string())
        .or_else(procfs::kernel_hostname);
    let mut ips: Vec<IpAddr> = procfs::local_ipv4_addrs()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    if !args.bind_address.is_unspecified() {
        ips.push(args.bind_address);
    }
    if let Some(warning) = pki::clock_warning(SystemTime::now()) {
        eprintln!("cairn: warning: {warning}");
    }
    let names = pki::ServingNames::new(hostname.as_deref(), ips);
    let (certs, report) = pki::ensure(&tls_dir, &names, SystemTime::now())
        .with_context(|| format!("certificates in {}", tls_dir.display()))?;
    eprintln!(
        "cairn: tls {}: {}",
        tls_dir.display(),
        report.lines.join(", ")
    );
    eprintln!("cairn: serving names {}", names.all().join(","));
    let (tls, serving_cert) = pki::tls::server_config_with(&certs).context("TLS configuration")?;
    steps.end("tls");
    let api_server = match role {
        Role::Server => {
            let (key, made) = pki::ensure_service_account_key(&tls_dir)
                .with_context(|| format!("service-account key in {}", tls_dir.display()))?;
            if made {
                eprintln!("cairn: service-account key created");
            }
            let signer =
                cairn_apiserver::serviceaccount::TokenSigner::from_pem(&key).map_err(|e| {
                    anyhow::anyhow!("{}/{}: {e}", tls_dir.display(), pki::SERVICE_ACCOUNT_KEY)
                })?;
            steps.end("sa_key");
            let (api, token) = open_api(&paths, &certs)?;
            steps.end("datastore");
            let mut server = cairn_apiserver::Server::new(api.with_token_signer(signer));
            server.cacerts = Some(certs.ca_cert.as_str().into());
            server.server_token = Some(token.credential.as_str().into());
            let kubelets = match (pki::CaSigner {
                dir: tls_dir.clone(),
            })
            .kubelet_client()
            {
                Ok(pair) => {
                    let proxy = cairn::nodeproxy::KubeletProxy::new(pair);
                    server.node_proxy = Some(Arc::new(proxy.clone()));
                    Some(proxy)
                }
                Err(e) => {
                    eprintln!(
                        "cairn: warning: {e}: `kubectl logs` and agent updates will not work"
                    );
                    None
                }
            };
            steps.end("kubelet_client");
            Some((server, (token, kubelets)))
        }
        Role::Agent => None,
    };
    let (api_server, server_side) = api_server.unzip();
    let (server_token, kubelets) = server_side.unzip();
    let kubelets = kubelets.flatten();
    let metrics = api_server.as_ref().map(|s| s.metrics.clone());
    if let Some(metrics) = &metrics {
        set_certificate_metrics(metrics, &certs);
    }
    // Booted from an A/B slot (not a development host): the gate settles the last update,
    // and the server also takes update bundles (`cairnctl upgrade`).
    let ab_node = update::Node::detect(&args.data_dir).ok();
    let node_name = args
        .node_name
        .as_ref()
        .map(|n| n.to_string())
        .or_else(|| hostname.as_ref().map(|h| h.to_lowercase()))
        .unwrap_or_else(|| "localhost".into());
    let os_version = ab_node
        .as_ref()
        .and_then(|n| n.release().ok())
        .map_or_else(|| env!("CARGO_PKG_VERSION").to_owned(), |r| r.version);
    let deadline = Duration::from_secs(node.update.health_deadline_seconds.into());
    steps.end("slots");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let bind = SocketAddr::new(args.bind_address, args.https_listen_port);
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("listening on {bind}"))?;
        let local = listener.local_addr().context("local address")?;
        eprintln!("cairn: listening on https://{local}");
        if role == Role::Server {
            write_kubeconfig(&paths.admin_kubeconfig, local, &certs)?;
            if let Some(path) = kubeconfig {
                write_kubeconfig(path, local, &certs)?;
            }
        }
        steps.end("listen");
        eprintln!("cairn: steps_ms {}", steps.summary());
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}", procfs::ready_line())
            .and_then(|()| stdout.flush())
            .ok();
        drop(stdout);
        if let Some(server) = &api_server {
            if cairn_apiserver::bootstrap::ensure_kubernetes_service(&server.api, local.port())
                .map_err(|e| anyhow::anyhow!("creating the kubernetes Service: {e}"))?
            {
                eprintln!("cairn: created service default/kubernetes (10.43.0.1)");
            }
            let signer = Arc::new(pki::CaSigner {
                dir: tls_dir.clone(),
            });
            cairn_controllers::spawn(server.api.clone(), parts, Some(signer));
            if parts.controllers {
                // Baked into the image first; the data partition's files override them.
                let dirs = vec![
                    PathBuf::from(cairn::BAKED_MANIFESTS),
                    paths.manifests.clone(),
                ];
                fs::create_dir_all(&paths.manifests).ok();
                let client = cairn_controllers::Client::new(server.api.clone());
                // `CAIRN_MANIFESTS_SECONDS` overrides the scan interval (tests).
                let interval = std::env::var("CAIRN_MANIFESTS_SECONDS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .map_or(cairn_controllers::manifests::INTERVAL, Duration::from_secs);
                tokio::spawn(cairn_controllers::manifests::run(client, dirs, interval));
            }
        }
        let url = format!("https://127.0.0.1:{}", local.port());
        let admin = Some((
            certs.admin.cert.clone().into_bytes(),
            certs.admin.key.clone().into_bytes(),
        ));
        let api_client = cairn::client::Client::new(&url, &certs.ca_cert, admin, None)
            .map_err(anyhow::Error::msg)
            .context("a client of this node's API")?;
        let register = register && role == Role::Server;
        // The server takes update bundles for itself (`cairnctl upgrade`), draining its own
        // Node before the reboot when it has one, and passes those for its agents on to them.
        let updates = ab_node.clone().filter(|_| role == Role::Server).map(|n| {
            let drain = register.then(|| api_client.clone());
            let service =
                update::service::UpdateService::new(&node_name, n, reboot_into_trial(), drain);
            match kubelets.clone() {
                Some(kubelets) => service.with_relay(update::service::Relay {
                    api: api_client.clone(),
                    kubelets,
                }),
                None => service,
            }
        });
        // An agent's trial passes its gate when its Node is Ready, read with the credentials
        // it joins with.
        let joined_client = Arc::new(tokio::sync::OnceCell::new());
        // The server's own worker joins over loopback exactly as an agent does.
        let own_worker = server_token.filter(|_| register).map(|token| Join {
            server: url.clone(),
            token,
        });
        if let Some(join) = join.or(own_worker) {
            let labels = node
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut facts = node_status::Facts::gather(&node_name, role, &os_version, labels);
            let dir = args.data_dir.join("agent").join("client");
            let kubelet = kubelet_config(args, &node_name, &facts)?;
            if let Some(k) = &kubelet {
                facts.kubelet_port = k.listener.local_addr().map(|a| a.port()).unwrap_or(0);
            }
            tokio::spawn(run_agent(
                join,
                facts,
                dir,
                ab_node.clone(),
                kubelet,
                joined_client.clone(),
            ));
        }
        if let Some(ab) = ab_node.clone() {
            let drain = register.then(|| (api_client.clone(), node_name.clone()));
            tokio::spawn(watch_for_bundles(ab, drain));
        }
        if let Some((ab, trial)) = ab_node.and_then(update_on_start) {
            let health = Health {
                client: api_client,
                node: (register || role == Role::Agent)
                    .then(|| (node_name.clone(), os_version.clone())),
                joined: (role == Role::Agent).then_some(joined_client),
            };
            tokio::spawn(run_trial(ab, trial, health, deadline));
        }

        let ca_changed = Arc::new(tokio::sync::Notify::new());
        let kubeconfigs = match role {
            Role::Server => std::iter::once(paths.admin_kubeconfig.clone())
                .chain(kubeconfig.map(Path::to_path_buf))
                .collect(),
            Role::Agent => Vec::new(),
        };
        tokio::spawn(
            CertificateCheck {
                dir: tls_dir.clone(),
                names: names.clone(),
                serving: serving_cert,
                current: certs.clone(),
                kubeconfigs,
                local,
                metrics: metrics.clone(),
                ca_changed: ca_changed.clone(),
            }
            .run(),
        );
        let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shutdown = {
            let restart = restart.clone();
            async move {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                    _ = ca_changed.notified() => {
                        restart.store(true, std::sync::atomic::Ordering::SeqCst);
                        "the cluster CA changed on disk"
                    }
                };
                eprintln!("cairn: {name}, shutting down");
            }
        };
        match api_server {
            Some(mut server) => {
                server.extension =
                    updates.map(|u| Arc::new(u) as Arc<dyn cairn_apiserver::Extension>);
                cairn_apiserver::serve(listener, tls, server, shutdown).await;
            }
            None => {
                let router = Router::new(&VersionInfo::current());
                health::serve(listener, tls, router, shutdown).await;
            }
        }
        if restart.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("exiting to load the new cluster CA (init starts cairn again)");
        }
        eprintln!("cairn: stopped");
        Ok(())
    })
}

/// A worker: joins its server (retrying while the server cannot be reached), then keeps its
/// Node and Lease. A join the server refuses ends an agent with the reason (the token, the
/// server or the node's name must change first); a server's own worker logs it and tries
/// again later, leaving the control plane up.
async fn run_agent(
    join: Join,
    mut facts: node_status::Facts,
    dir: PathBuf,
    updates: Option<update::Node>,
    kubelet: Option<cairn::kubelet::Config>,
    joined_client: Arc<tokio::sync::OnceCell<cairn::client::Client>>,
) {
    let agent = facts.role == Role::Agent;
    let creds = cairn::join::Credentials::new(&dir);
    let mut said = String::new();
    let joined = loop {
        match cairn::join::join(&join.server, &join.token, &facts.name, &creds).await {
            Ok(joined) => break joined,
            Err(e @ cairn::join::JoinError::Client(_)) => {
                let e = e.to_string();
                if e != said {
                    eprintln!("cairn: joining {}: {e} (retrying)", join.server);
                    said = e;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) if agent => {
                eprintln!("cairn: FATAL: joining {}: {e}", join.server);
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("cairn: this server's worker cannot join: {e} (trying again in 60 s)");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    };
    facts.key_id = Some(joined.key_id);
    let _ = joined_client.set(joined.client.clone());
    if let Some(mut config) = kubelet {
        // An agent takes update bundles through its kubelet port, from the API server.
        if let Some(node) = updates.clone().filter(|_| agent) {
            config.updates = Some(update::service::UpdateService::new(
                &facts.name,
                node,
                reboot_into_trial(),
                Some(joined.client.clone()),
            ));
        }
        let client = joined.client.clone();
        tokio::spawn(async move {
            if let Err(e) = cairn::kubelet::run(client, config).await {
                eprintln!("cairn: kubelet: {e}; pods bound to this node will not run");
            }
        });
    }
    node_status::Publisher::new(joined.client, facts, updates)
        .run()
        .await;
}

/// Where the kubelet keeps its state; `None` (no pods run here) when not root, as on a
/// development host running `cairn server` as a user.
fn kubelet_config(
    args: &CommonArgs,
    node_name: &str,
    facts: &node_status::Facts,
) -> Result<Option<cairn::kubelet::Config>> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cairn: kubelet: not running as root: pods bound to this node will not run");
        return Ok(None);
    }
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), args.kubelet_port);
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("the kubelet's port {addr} (--kubelet-port)"))?;
    listener.set_nonblocking(true)?;
    let data_dir = args.data_dir.join("agent");
    let shim = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    Ok(Some(cairn::kubelet::Config {
        listener,
        node_name: node_name.to_owned(),
        host_ip: facts
            .addresses
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        image_dirs: vec![data_dir.join("images"), PathBuf::from(cairn::BAKED_IMAGES)],
        image_gc: args.image_gc().map_err(anyhow::Error::msg)?,
        node_status: facts.kubelet_status.clone(),
        data_dir,
        shim,
        cgroup_root: args.cgroup_root.clone(),
        netns_dir: PathBuf::from("/run/cairn/netns"),
        // `CAIRN_POD_BRIDGE` gives test servers on one machine bridges of their own.
        bridge: std::env::var("CAIRN_POD_BRIDGE")
            .unwrap_or_else(|_| cairn_net::DEFAULT_BRIDGE.to_owned()),
        log_max_bytes: 10 << 20,
        updates: None,
    }))
}

fn reboot_into_trial() -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(|| reboot_node("into the new slot's trial"))
}

/// Settles the last update (records a rollback) and returns the trial to gate, if this boot
/// is one.
fn update_on_start(node: update::Node) -> Option<(update::Node, update::gate::Trial)> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match update::gate::on_start(&node, &cmdline) {
        Ok(trial) => trial.map(|t| (node, t)),
        Err(e) => {
            eprintln!("cairn: update: {e}");
            None
        }
    }
}

/// What a trial boot must see to commit.
struct Health {
    /// This node's HTTPS endpoint (the API on a server).
    client: cairn::client::Client,
    /// On a node that registers itself: its name and the version its Node must report Ready.
    node: Option<(String, String)>,
    /// On an agent: its client of the server, once it has joined (the Node is read there).
    joined: Option<Arc<tokio::sync::OnceCell<cairn::client::Client>>>,
}

impl Health {
    async fn check(&self) -> Result<(), String> {
        let client = match &self.joined {
            Some(cell) => cell.get().ok_or("not joined to the server yet")?,
            None => &self.client,
        };
        match &self.node {
            // Reading the Node through the API also proves the API answers.
            Some((name, version)) => node_status::node_ready(client, name, version).await,
            None => self
                .client
                .request(hyper::Method::GET, "/version", None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// The health gate of a trial boot: this node answers over HTTPS (and, registered, its Node is
/// Ready with the new version) within the deadline, then the slot is committed; otherwise PID 1
/// is asked to reboot (into the old slot).
async fn run_trial(
    node: update::Node,
    trial: update::gate::Trial,
    health: Health,
    deadline: Duration,
) {
    let health = Arc::new(health);
    let healthy = || {
        let health = health.clone();
        async move { health.check().await }
    };
    match trial.run(&node, deadline, healthy).await {
        Ok(update::gate::Outcome::Committed) => {}
        Ok(update::gate::Outcome::Failed(_)) => reboot_node("into the previous slot"),
        Err(e) => {
            eprintln!("cairn: update: health gate: {e}");
            reboot_node("into the previous slot");
        }
    }
}

/// Air-gapped updates: installs a bundle found on a USB stick or in `DATA/update/inbox`
/// ([`update::inbox`]), then drains the node (when it has a Node) and reboots into the trial.
async fn watch_for_bundles(node: update::Node, drain: Option<(cairn::client::Client, String)>) {
    let mut watcher = update::inbox::Watcher::new(node);
    loop {
        let looked = tokio::task::spawn_blocking(move || {
            let node = watcher.node.clone();
            let installed = watcher.look(&mut |found| {
                update::apply(&node, &found.path, false, &mut |line| {
                    eprintln!("cairn: update: {line}");
                })
                .map(|m| {
                    eprintln!(
                        "cairn: update: Cairn {} from {} installed",
                        m.version, found.source
                    )
                })
                .map_err(|e| e.to_string())
            });
            (watcher, installed)
        })
        .await;
        let Ok((w, installed)) = looked else {
            eprintln!("cairn: update: the bundle watcher stopped");
            return;
        };
        watcher = w;
        if installed {
            if let Some((client, name)) = &drain {
                let line = node_status::drain_before_reboot(client, name).await;
                eprintln!("cairn: update: {line}");
            }
            reboot_node("into the new slot's trial");
            return;
        }
        tokio::time::sleep(update::inbox::POLL).await;
    }
}

fn reboot_node(into: &str) {
    eprintln!("cairn: update: rebooting {into}");
    if let Err(e) = update::request_reboot() {
        eprintln!("cairn: update: cannot signal PID 1: {e}");
    }
}

/// Opens the datastore, creates the system namespaces and makes sure the server token exists.
fn open_api(
    paths: &ServerPaths,
    certs: &pki::Pki,
) -> Result<(cairn_apiserver::Api, token::JoinToken)> {
    let (join, written) = token::ensure_server_token(&paths.node_token, &certs.ca_cert)
        .with_context(|| format!("server token {}", paths.node_token.display()))?;
    let pinned = &join.ca_hash[..12];
    let state = if written { "written" } else { "kept" };
    eprintln!(
        "cairn: server token {} {state} (pins CA sha256 {pinned}...)",
        paths.node_token.display()
    );
    let db_dir = paths.db.parent().expect("state.db has a directory");
    fs::create_dir_all(db_dir).with_context(|| format!("creating {}", db_dir.display()))?;
    let store = SqliteStore::open(&paths.db, SqliteOptions::default())
        .with_context(|| format!("opening the datastore {}", paths.db.display()))?;
    eprintln!(
        "cairn: datastore {} at revision {}",
        paths.db.display(),
        cairn_store::Store::current_revision(&store).unwrap_or(0)
    );
    let api = cairn_apiserver::Api::new(Arc::new(store));
    let created = cairn_apiserver::bootstrap::ensure_system_namespaces(&api)
        .map_err(|e| anyhow::anyhow!("creating the system namespaces: {e}"))?;
    if !created.is_empty() {
        eprintln!("cairn: created namespaces {}", created.join(", "));
    }
    let written = cairn_apiserver::authz::defaults::ensure(&api)
        .map_err(|e| anyhow::anyhow!("writing the default RBAC roles: {e}"))?;
    if !written.is_empty() {
        eprintln!(
            "cairn: wrote {} default RBAC roles and bindings",
            written.len()
        );
    }
    Ok((api, join))
}

fn set_certificate_metrics(metrics: &cairn_apiserver::metrics::Metrics, certs: &pki::Pki) {
    metrics.set_certificate("ca", &certs.ca_cert);
    metrics.set_certificate("serving", &certs.serving.cert);
    metrics.set_certificate("admin", &certs.admin.cert);
}

/// How often a running node looks at its certificates; `CAIRN_CERT_CHECK_SECONDS` overrides
/// it (tests).
fn certificate_check_interval() -> Duration {
    std::env::var("CAIRN_CERT_CHECK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// Renews certificates while the node runs ([`pki::ensure`] every minute) and puts what
/// changed on disk (a renewal, `cairn certificate rotate`) into service: the serving
/// certificate for new connections, the kubeconfigs for the new admin certificate, the
/// metrics. A new CA cannot be swapped into live TLS: it asks the node to restart.
struct CertificateCheck {
    dir: PathBuf,
    names: pki::ServingNames,
    serving: Arc<pki::tls::ServingCert>,
    current: pki::Pki,
    /// Admin kubeconfigs to rewrite when the admin certificate changes (servers).
    kubeconfigs: Vec<PathBuf>,
    local: SocketAddr,
    metrics: Option<Arc<cairn_apiserver::metrics::Metrics>>,
    ca_changed: Arc<tokio::sync::Notify>,
}

impl CertificateCheck {
    async fn run(mut self) {
        let every = certificate_check_interval();
        loop {
            tokio::time::sleep(every).await;
            let (dir, names) = (self.dir.clone(), self.names.clone());
            let checked =
                tokio::task::spawn_blocking(move || pki::ensure(&dir, &names, SystemTime::now()))
                    .await;
            let (certs, report) = match checked {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    eprintln!("cairn: tls {}: {e}", self.dir.display());
                    continue;
                }
                Err(e) => {
                    eprintln!("cairn: tls check failed: {e}");
                    continue;
                }
            };
            if certs.ca_cert != self.current.ca_cert {
                eprintln!(
                    "cairn: tls {}: {}",
                    self.dir.display(),
                    report.lines.join(", ")
                );
                self.ca_changed.notify_one();
                return;
            }
            let serving_changed = certs.serving.cert != self.current.serving.cert;
            let admin_changed = certs.admin.cert != self.current.admin.cert;
            if !serving_changed && !admin_changed {
                continue;
            }
            eprintln!(
                "cairn: tls {}: {}",
                self.dir.display(),
                report.lines.join(", ")
            );
            if serving_changed {
                if let Err(e) = self.serving.replace(&certs) {
                    eprintln!("cairn: tls: keeping the old serving certificate: {e}");
                    continue;
                }
            }
            if admin_changed {
                for path in &self.kubeconfigs {
                    if let Err(e) = write_kubeconfig(path, self.local, &certs) {
                        eprintln!("cairn: {e:#}");
                    }
                }
            }
            if let Some(metrics) = &self.metrics {
                set_certificate_metrics(metrics, &certs);
            }
            self.current = certs;
        }
    }
}

/// Writes the admin kubeconfig pointing at this server: loopback unless bound to one address.
fn write_kubeconfig(path: &Path, local: SocketAddr, certs: &pki::Pki) -> Result<()> {
    let host = match local.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("https://{}", SocketAddr::new(host, local.port()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = kubeconfig::render(&url, certs);
    // Unchanged since the last start (the usual boot): no write, no fsync on the way to
    // ready, no flash wear.
    let same = fs::read(path).is_ok_and(|old| old == text.as_bytes())
        && fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600);
    if same {
        eprintln!(
            "cairn: kubeconfig {} for {url} is up to date",
            path.display()
        );
        return Ok(());
    }
    pki::write_atomic(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("cairn: wrote kubeconfig {} for {url}", path.display());
    Ok(())
}
