//! Command-line interface (clap derive).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn::kubelet::image_gc::{self, EvictionHard};
use cairn_config::{Hostname, HttpsUrl, Token};
use clap::{Args, Parser, Subcommand};

/// `cairn --version`: the crate version and the Kubernetes version it speaks.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (Kubernetes v1.35.0)");

const EXAMPLES: &str = "\
Examples:
  cairn server                                   # control plane on 0.0.0.0:6443
  cairn server --write-kubeconfig /run/cairn/admin.kubeconfig
  cairn agent --server https://10.0.0.1:6443 --token K10...
  cairn token create --ttl 2h                    # a join token for agents
  cairn config render /boot/cairn/node.yaml     # validate, print KEY=VALUE lines for init";

const SERVER_EXAMPLES: &str = "\
State under the data dir: server/tls/ (CA and certificates), server/db/state.db (the
datastore), server/node-token (the join token), server/cred/admin.kubeconfig.

Examples:
  cairn server
  cairn server --data-dir /tmp/cairn --https-listen-port 0 --bind-address 127.0.0.1 --disable-agent
  cairn server --write-kubeconfig ~/.kube/cairn && kubectl --kubeconfig ~/.kube/cairn get ns";

const TOKEN_EXAMPLES: &str = "\
Tokens are bootstrap-token Secrets (kube-system/bootstrap-token-<id>); deleting one revokes
it. The commands talk to the server with the admin kubeconfig.

Examples:
  cairn token create --ttl 2h --description \"rack 3\"
  cairn token list
  cairn token delete abcdef";

const AGENT_EXAMPLES: &str = "\
The token is the server's DATA/server/node-token or one from `cairn token create` on the
server. The agent checks the server's CA against the hash in the token, then gets its node
certificate through a CertificateSigningRequest (kept in DATA/agent/client) and registers
its Node. A name another machine holds waits for the admin: `kubectl delete node NAME`, or
`kubectl certificate approve` of the request the agent names.

Examples:
  cairn agent --server https://10.0.0.1:6443 --token K10...
  CAIRN_URL=https://10.0.0.1:6443 CAIRN_TOKEN=K10... cairn agent";

const RENDER_EXAMPLES: &str = "\
Output (one KEY=VALUE per line, no quoting):
  CAIRN_ROLE=server
  CAIRN_HOSTNAME=edge-1
  CAIRN_NET_INTERFACE=
  CAIRN_NET_MODE=dhcp
  CAIRN_NET_ADDRESS=
  CAIRN_NET_GATEWAY=
  CAIRN_NET_DNS=192.168.1.1

Exit status: 0 valid (a missing file means defaults), 2 invalid (`file:line:column: message`
on stderr).";

/// The Cairn node daemon.
#[derive(Debug, Parser)]
#[command(name = "cairn", version = VERSION, after_help = EXAMPLES)]
#[command(about = "The Cairn node daemon: a small Kubernetes-compatible orchestrator")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: the Kubernetes API over HTTPS, backed by SQLite
    #[command(after_help = SERVER_EXAMPLES)]
    Server(ServerArgs),
    /// Run a worker node: join a server with a token, register the Node, renew its Lease
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),
    /// Create, list and delete join tokens for agents
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
    /// Work with the node config (/boot/cairn/node.yaml)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// A/B updates of this node: install a signed bundle, show the slots
    #[command(after_help = UPDATE_EXAMPLES)]
    Update(UpdateArgs),
    /// Check and replace the server's certificates (DATA/server/tls)
    #[command(after_help = CERTIFICATE_EXAMPLES)]
    Certificate(CertificateArgs),
    /// Internal: the per-container process the kubelet starts (cairn_runtime::shim)
    #[command(name = "container-shim", hide = true)]
    ContainerShim {
        /// The container's directory (holding spec.json)
        dir: std::path::PathBuf,
    },
    /// Internal: runs a command inside a running container (cairn_runtime::exec)
    #[command(name = "container-exec", hide = true)]
    ContainerExec {
        /// The container's directory (holding spec.json and pid)
        dir: std::path::PathBuf,
        /// Stdin is a terminal: make it the command's controlling terminal
        #[arg(long)]
        tty: bool,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

const CERTIFICATE_EXAMPLES: &str = "\
A running server checks its certificates every minute: it renews the serving and admin
certificates 90 days before they expire and loads what these commands change without a
restart (a new CA makes it restart itself to load it). A stopped server does the same when
it starts.

Examples:
  cairn certificate check
  cairn certificate rotate           # new serving and admin certificates and keys
  cairn certificate rotate-ca --yes  # a new cluster CA: every kubeconfig and join token changes";

#[derive(Debug, Args)]
pub struct CertificateArgs {
    /// The server's data dir
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/cairn",
        global = true
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: CertificateCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Print when each certificate expires
    Check,
    /// Replace the serving and admin certificates and their keys
    Rotate,
    /// Replace the cluster CA and everything it signed (the old one is kept as ca.*.old)
    RotateCa {
        /// Confirm: clients and agents need the new kubeconfig and join token afterwards
        #[arg(long)]
        yes: bool,
    },
}

const UPDATE_EXAMPLES: &str = "Examples:
  cairn update apply /var/lib/cairn/update.cairnb    # verify, write slot B (or A), reboot into it once
  cairn update status

The new slot boots once on trial and is kept only if the node is healthy (a server: its
API answers and its Node is Ready with the new version) within `update.healthDeadlineSeconds`
of the node config (default 300); otherwise the node reboots into the slot it ran before and
`status` says why.";

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The node's data dir (where the last update's record is kept)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/cairn",
        global = true
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: UpdateCommand,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify BUNDLE, write it into the inactive slot, put that slot on trial and reboot
    Apply {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Install even if the bundle is not newer than the running version
        #[arg(long)]
        allow_downgrade: bool,
        /// Do not reboot afterwards (the trial happens at the next reboot)
        #[arg(long)]
        no_reboot: bool,
    },
    /// Print the running slot and version, the other slot, and the last update's result
    Status,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Kubeconfig with admin rights [default: DATA/server/cred/admin.kubeconfig]
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data dir (to find the admin kubeconfig)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/cairn",
        global = true
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (K10<ca-hash>::<id>.<secret>)
    Create {
        /// Lifetime: 90s, 30m, 24h, 7d; 0 never expires
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
        ttl: u64,
        /// A note shown by `token list`
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Extra groups (comma-separated, each system:bootstrappers:...)
        #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// List tokens with their expiry
    #[command(alias = "ls")]
    List,
    /// Delete (revoke) tokens by id or whole token
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// A lifetime in seconds from `90s`, `30m`, `24h`, `7d` or `0`.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    let (number, unit) = text.split_at(
        text.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .len(),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, like 30m or 24h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Options both roles take.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Directory for state and certificates
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cairn")]
    pub data_dir: PathBuf,
    /// HTTPS port (0 picks a free port, printed on stderr)
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Node config to read (hostname, server, token) [default: /boot/cairn/node.yaml if present]
    #[arg(long, value_name = "FILE")]
    pub node_config: Option<PathBuf>,
    /// The Node's name [default: `hostname:` of the node config, else the kernel's hostname]
    #[arg(long, value_name = "NAME", env = "CAIRN_NODE_NAME")]
    pub node_name: Option<Hostname>,
    /// The cgroup v2 mount pods' cgroups are made in (without one, pods run without limits)
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Port of the kubelet's HTTPS endpoint, which the API server reaches for `kubectl logs`
    /// (0 picks a free port)
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Percent of the data partition in use at which the kubelet removes unused images
    #[arg(long, value_name = "PERCENT", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Percent in use that image garbage collection brings the data partition down to
    #[arg(long, value_name = "PERCENT", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// Images stored or used more recently than this are never removed (2m, 90s, 1h30m)
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = image_gc::parse_duration)]
    pub minimum_image_ttl_duration: Duration,
    /// Free space and inodes of the data partition under which the Node reports DiskPressure
    /// (nodefs.available, nodefs.inodesFree; percentages or quantities like 1Gi)
    #[arg(long, value_name = "SIGNAL<VALUE,...", default_value = image_gc::DEFAULT_EVICTION_HARD)]
    pub eviction_hard: EvictionHard,
}

impl CommonArgs {
    /// The kubelet's image garbage collection and disk pressure settings.
    pub fn image_gc(&self) -> Result<image_gc::Policy, String> {
        image_gc::Policy::new(
            self.image_gc_high_threshold,
            self.image_gc_low_threshold,
            self.minimum_image_ttl_duration,
            self.eviction_hard.clone(),
        )
    }
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also write the admin kubeconfig (mode 0600) to FILE
    #[arg(long, value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Run only the control plane, no workloads on this node (no root needed)
    #[arg(long)]
    pub disable_agent: bool,
    /// Run no controllers (Deployments, ReplicaSets, garbage collection, default service
    /// accounts): objects are stored and nothing acts on them
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Run no scheduler: pods stay pending unless something else binds them
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Cluster secrets to import on first start (made by `cairnctl gen secrets`)
    #[arg(long, value_name = "DIR", default_value = "/boot/cairn/secrets")]
    pub secrets_dir: PathBuf,
    /// The pods' address range: every node gets a /24 of it for its pods
    #[arg(long, value_name = "CIDR", default_value = cairn_controllers::nodeipam::DEFAULT_CLUSTER_CIDR, value_parser = parse_cluster_cidr)]
    pub cluster_cidr: cairn_net::Ipv4Cidr,
}

/// An IPv4 network of at least one node's /24.
pub fn parse_cluster_cidr(text: &str) -> Result<cairn_net::Ipv4Cidr, String> {
    let cidr: cairn_net::Ipv4Cidr = text.parse()?;
    cairn_controllers::nodeipam::NodeIpam::new(cidr)?;
    Ok(cidr)
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Server to join [default: `server:` of the node config]
    #[arg(long, value_name = "URL", env = "CAIRN_URL")]
    pub server: Option<HttpsUrl>,
    /// Join token [default: `token:` of the node config]
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CAIRN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Token>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a node config and print it as KEY=VALUE lines for init
    #[command(after_help = RENDER_EXAMPLES)]
    Render {
        /// The node config, e.g. /boot/cairn/node.yaml
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["cairn", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.common.data_dir, PathBuf::from("/var/lib/cairn"));
        assert_eq!(args.common.https_listen_port, 6443);
        assert_eq!(args.common.bind_address.to_string(), "0.0.0.0");
        assert!(args.write_kubeconfig.is_none());
        assert_eq!(args.cluster_cidr.to_string(), "10.42.0.0/16");
        let small = Cli::try_parse_from(["cairn", "server", "--cluster-cidr", "10.42.0.0/25"]);
        assert!(small
            .unwrap_err()
            .to_string()
            .contains("smaller than one node's /24"));
    }

    #[test]
    fn image_gc_flags() {
        let common = |args: &[&str]| {
            let all = ["cairn", "agent"].iter().chain(args).copied();
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Agent(a)) => Ok(a.common),
                Ok(_) => panic!(),
                Err(e) => Err(e.to_string()),
            }
        };
        let defaults = common(&[]).unwrap().image_gc().unwrap();
        assert_eq!(defaults, image_gc::Policy::default());
        let set = common(&[
            "--image-gc-high-threshold=70",
            "--image-gc-low-threshold=50",
            "--minimum-image-ttl-duration=5m",
            "--eviction-hard=nodefs.available<1Gi",
        ])
        .unwrap()
        .image_gc()
        .unwrap();
        assert_eq!((set.high_percent, set.low_percent), (70, 50));
        assert_eq!(set.min_age, Duration::from_secs(300));
        assert!(
            set.eviction.inodes_free.is_empty(),
            "given thresholds replace the defaults"
        );
        let low_above_high = common(&["--image-gc-low-threshold=90"]).unwrap().image_gc();
        assert!(low_above_high
            .unwrap_err()
            .contains("above --image-gc-high-threshold 85"));
        assert!(common(&["--image-gc-high-threshold=101"]).is_err());
        assert!(common(&["--minimum-image-ttl-duration=soon"])
            .unwrap_err()
            .contains("duration"));
        assert!(common(&["--eviction-hard=disk<1"])
            .unwrap_err()
            .contains("unknown eviction signal"));
    }

    #[test]
    fn agent_validates_its_url() {
        let ok = Cli::try_parse_from(["cairn", "agent", "--server", "https://10.0.0.1:6443"]);
        assert!(ok.is_ok());
        let bad = Cli::try_parse_from(["cairn", "agent", "--server", "http://10.0.0.1"]);
        assert!(bad.unwrap_err().to_string().contains("invalid server URL"));
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("0"), Ok(0));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("2").unwrap_err().contains("unit"));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("2w").is_err());
        let cli = Cli::try_parse_from(["cairn", "token", "create", "--ttl", "5m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(TokenArgs {
                command: TokenCommand::Create { ttl: 300, .. },
                ..
            })
        ));
    }

    #[test]
    fn render_takes_a_file() {
        let cli = Cli::try_parse_from(["cairn", "config", "render", "n.yaml"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Config(ConfigCommand::Render { .. })
        ));
    }
}
