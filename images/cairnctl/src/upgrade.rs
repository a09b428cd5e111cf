//! `cairnctl upgrade`: sends a signed bundle to a node through its API, has the node install
//! it into the inactive slot, and follows the node through its trial boot until it commits
//! or rolls back. The node's side is `cairn::update::service` (protocol in its docs).
//!
//! The upload resumes after a dropped connection: the node keeps what arrived, and the next
//! attempt asks the node how far it got and sends the rest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn::client::Client;
use cairn::update::service::{ApplyRequest, SHA256_HEADER};
use cairn::update::{staging, Report};
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame};
use hyper::{Method, StatusCode};

use crate::progress::mib;

/// Bytes per frame of the upload body.
const FRAME: usize = 256 << 10;
/// Upload attempts before giving up on a connection that keeps dropping.
const ATTEMPTS: u32 = 8;

/// Where the node gets the bundle.
#[derive(Clone, Debug)]
pub enum Source {
    /// Uploaded from this machine.
    File(PathBuf),
    /// Fetched by the node itself; `ca` (PEM) is trusted besides the node's system CAs.
    Url {
        url: String,
        sha256: String,
        ca: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub kubeconfig: PathBuf,
    /// The node to upgrade; the only one the server offers when `None`.
    pub node: Option<String>,
    pub source: Source,
    pub allow_downgrade: bool,
    /// Return once the node reboots into its trial instead of following it.
    pub no_wait: bool,
    /// How long the node may take to come back and commit.
    pub timeout: Duration,
    /// For tests: stop after the upload (no apply).
    pub upload_only: bool,
}

/// How an upgrade ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node runs the bundle's version, committed.
    Committed(Box<Report>),
    /// Installed; the node reboots into its trial (with `no_wait`).
    Pending,
    /// Uploaded only (`upload_only`).
    Uploaded,
    /// The node already runs this version.
    Current,
}

pub fn run(opts: &Options) -> Result<Outcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(upgrade(opts))
}

pub async fn upgrade(opts: &Options) -> Result<Outcome> {
    let client = Client::from_kubeconfig(&opts.kubeconfig)?;
    let node = match &opts.node {
        Some(n) => n.clone(),
        None => only_node(&client).await?,
    };
    let bundle = match &opts.source {
        Source::File(path) => path,
        Source::Url { url, sha256, ca } => {
            let report = report(&client, &node).await?;
            eprintln!(
                "{node}: runs Cairn {} on slot {} ({}, {}); fetching {url}",
                report.version, report.running.slot, report.board, report.arch
            );
            let ask = ApplyRequest {
                sha256: sha256.to_ascii_lowercase(),
                allow_downgrade: opts.allow_downgrade,
                reboot: true,
                url: Some(url.clone()),
                ca_cert: ca.clone(),
            };
            let version = apply(&client, &node, &ask).await?;
            return finish(&client, &node, &version, opts).await;
        }
    };
    let header = cairn_bundle::Manifest::peek_file(bundle)
        .with_context(|| format!("reading {}", bundle.display()))?;
    let report = report(&client, &node).await?;
    eprintln!(
        "{node}: runs Cairn {} on slot {} ({}, {}); bundle: Cairn {} for {} ({})",
        report.version,
        report.running.slot,
        report.board,
        report.arch,
        header.version,
        header.board,
        header.arch
    );
    if header.board != report.board {
        bail!(
            "{} is for board {}, node {node} is a {}",
            bundle.display(),
            header.board,
            report.board
        );
    }
    if report.version == header.version
        && report.running.state == "committed"
        && !opts.allow_downgrade
    {
        eprintln!(
            "{node} already runs Cairn {} (--allow-downgrade installs it again)",
            header.version
        );
        return Ok(Outcome::Current);
    }

    let size = std::fs::metadata(bundle)?.len();
    let started = Instant::now();
    let sha256 =
        staging::sha256_file(bundle).with_context(|| format!("hashing {}", bundle.display()))?;
    upload(&client, &node, bundle, &sha256, size, report).await?;
    eprintln!(
        "uploaded {} in {:.1} s",
        mib(size),
        started.elapsed().as_secs_f64()
    );
    if opts.upload_only {
        return Ok(Outcome::Uploaded);
    }

    let ask = ApplyRequest {
        sha256,
        allow_downgrade: opts.allow_downgrade,
        reboot: true,
        ..Default::default()
    };
    apply(&client, &node, &ask).await?;
    finish(&client, &node, &header.version, opts).await
}

/// After a successful apply: follow the node through its trial, unless told not to.
async fn finish(client: &Client, node: &str, version: &str, opts: &Options) -> Result<Outcome> {
    if opts.no_wait {
        eprintln!("{node} reboots into the trial of Cairn {version}");
        return Ok(Outcome::Pending);
    }
    follow(client, node, version, opts.timeout)
        .await
        .map(|r| Outcome::Committed(Box::new(r)))
}

/// `cairnctl upgrade --all`: every node the server offers, one at a time, agents before
/// servers (a control plane is upgraded last, once its workers run the new version), each
/// followed until it commits. Stops at the first node that fails or rolls back; the nodes
/// after it are left as they are. Returns each upgraded node with its outcome.
pub fn run_all(opts: &Options) -> Result<Vec<(String, Outcome)>> {
    if opts.no_wait {
        bail!("--all waits for each node to come back healthy before the next: drop --no-wait");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = Client::from_kubeconfig(&opts.kubeconfig)?;
    let order = rt.block_on(async {
        let names = offered_nodes(&client).await?;
        // Roles come from the Node objects; a node without one counts as a server (last).
        let nodes = client
            .request(Method::GET, "/api/v1/nodes", None)
            .await
            .unwrap_or_default();
        anyhow::Ok(upgrade_order(&names, &nodes))
    })?;
    if order.is_empty() {
        bail!("the server offers no node to update");
    }
    eprintln!(
        "upgrading {} node(s) in this order: {}",
        order.len(),
        order.join(", ")
    );
    let mut done = Vec::new();
    for (i, name) in order.iter().enumerate() {
        let one = Options {
            node: Some(name.clone()),
            ..opts.clone()
        };
        match rt.block_on(upgrade(&one)) {
            Ok(outcome) => done.push((name.clone(), outcome)),
            Err(e) => {
                let rest = &order[i + 1..];
                let left = if rest.is_empty() {
                    String::new()
                } else {
                    format!("; not upgraded: {}", rest.join(", "))
                };
                return Err(e.context(format!("stopped at node {name}{left}")));
            }
        }
    }
    Ok(done)
}

/// The order `--all` upgrades `names` in: agents first, then control-plane nodes (by the
/// `node-role.kubernetes.io/control-plane` label of their Node in `nodes`, a NodeList;
/// without a Node, a server), by name within each group.
pub fn upgrade_order(names: &[String], nodes: &serde_json::Value) -> Vec<String> {
    let is_server = |name: &str| {
        nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["metadata"]["name"] == name)
            .is_none_or(|n| {
                !n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_null()
            })
    };
    let mut order: Vec<String> = names.to_vec();
    order.sort_by_key(|n| (is_server(n), n.clone()));
    order.dedup();
    order
}

/// The names of the nodes the server's update endpoint offers.
async fn offered_nodes(client: &Client) -> Result<Vec<String>> {
    let list = client
        .request(Method::GET, "/cairn/v1/nodes", None)
        .await
        .context("asking the server which nodes it can update")?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node"].as_str().map(str::to_owned))
        .collect())
}

/// The node the server offers when there is exactly one.
async fn only_node(client: &Client) -> Result<String> {
    let names = offered_nodes(client).await?;
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("the server offers no node to update"),
        many => bail!(
            "the server offers several nodes ({}): pick one with --node",
            many.join(", ")
        ),
    }
}

pub async fn report(client: &Client, node: &str) -> Result<Report> {
    let v = client
        .request(Method::GET, &format!("/cairn/v1/nodes/{node}/update"), None)
        .await?;
    serde_json::from_value(v).context("the node's update report")
}

/// Sends the bundle from wherever the node's staged copy ends, again after each drop.
async fn upload(
    client: &Client,
    node: &str,
    bundle: &Path,
    sha256: &str,
    size: u64,
    mut report: Report,
) -> Result<()> {
    let path = format!("/cairn/v1/nodes/{node}/update/bundle");
    let mut attempt = 0;
    loop {
        let offset = match &report.upload {
            Some(u) if u.sha256 == sha256 && u.complete => return Ok(()),
            Some(u) if u.sha256 == sha256 => u.received,
            _ => 0,
        };
        if offset > 0 {
            eprintln!(
                "the node has {} of this bundle; sending the rest",
                mib(offset)
            );
        }
        let mut file = File::open(bundle)?;
        file.seek(SeekFrom::Start(offset))?;
        let body = FileBody {
            file,
            sent: offset,
            size,
            shown: 0,
        };
        let headers = [
            (
                "content-range",
                format!("bytes {offset}-{}/{size}", size - 1),
            ),
            (SHA256_HEADER, sha256.to_owned()),
            ("content-type", "application/octet-stream".to_owned()),
        ];
        let result = client.call(Method::PUT, &path, &headers, body).await;
        eprintln!();
        match result {
            Ok(resp) if resp.status().is_success() => {
                let bytes = resp.into_body().collect().await?.to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&bytes)?;
                if v["complete"].as_bool() == Some(true) {
                    return Ok(());
                }
                // The body ended early without an error: send the rest.
                attempt += 1;
                if attempt >= ATTEMPTS {
                    bail!("{node} keeps getting part of the bundle only: {v}");
                }
                eprintln!(
                    "{node} has {} bytes so far; sending the rest",
                    v["received"]
                );
            }
            Ok(resp) => {
                let code = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                // A conflict is a resume from the wrong place or a busy node: ask again.
                if code != StatusCode::CONFLICT && code != StatusCode::BAD_REQUEST {
                    bail!("{node} refused the upload ({code}): {message}");
                }
                attempt += 1;
                if attempt >= ATTEMPTS {
                    bail!("{node} refused the upload ({code}): {message}");
                }
                eprintln!("{node}: {message}; retrying");
            }
            Err(e) => {
                attempt += 1;
                if attempt >= ATTEMPTS {
                    return Err(anyhow!(e).context(format!(
                        "uploading to {node}: giving up after {ATTEMPTS} attempts"
                    )));
                }
                eprintln!("upload interrupted ({e}); resuming");
            }
        }
        tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
        report = loop {
            match self::report(client, node).await {
                Ok(r) => break r,
                Err(e) => {
                    attempt += 1;
                    if attempt >= ATTEMPTS {
                        return Err(e.context(format!("{node} does not answer")));
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
    }
}

/// Asks the node to install the staged (or, with a URL, fetched) bundle, printing its
/// progress lines; returns the version installed.
async fn apply(client: &Client, node: &str, ask: &ApplyRequest) -> Result<String> {
    let path = format!("/cairn/v1/nodes/{node}/update/apply");
    let ask = serde_json::to_vec(ask)?;
    let resp = client
        .call(
            Method::POST,
            &path,
            &[("content-type", "application/json".to_owned())],
            http_body_util::Full::new(Bytes::from(ask)),
        )
        .await?;
    let code = resp.status();
    let mut body = resp.into_body();
    if !code.is_success() {
        let bytes = body.collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        bail!(
            "{node} refused ({code}): {}",
            v["message"].as_str().unwrap_or("?")
        );
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let v: serde_json::Value = serde_json::from_slice(&line)?;
            if let Some(p) = v["progress"].as_str() {
                eprintln!("{node}: {p}");
            } else if let Some(e) = v["error"].as_str() {
                bail!("{node}: {e}");
            } else if v["result"].as_str() == Some("pending") {
                return Ok(v["version"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    // The connection ended without a verdict. The node goes on with a download or install
    // by itself: watch its report until the update is pending or nothing moves for a minute.
    let mut last_received = None;
    let mut still = Instant::now();
    loop {
        let r = report(client, node).await?;
        match &r.last {
            Some(last) if last.result == "pending" => return Ok(last.to_version.clone()),
            _ => {}
        }
        let received = r.upload.as_ref().map(|u| u.received);
        if received != last_received {
            last_received = received;
            still = Instant::now();
        }
        if still.elapsed() > Duration::from_secs(60) {
            bail!(
                "{node} ended the update without an answer; last update: {}",
                r.last.map_or("none".into(), |l| l.describe())
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits for the node to boot the new version and pass (or fail) its health gate.
async fn follow(client: &Client, node: &str, version: &str, timeout: Duration) -> Result<Report> {
    eprintln!(
        "waiting for {node} to reboot into Cairn {version} and pass its health gate (up to {} s)",
        timeout.as_secs()
    );
    let deadline = Instant::now() + timeout;
    let mut down = false;
    let mut last_line = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r = match report(client, node).await {
            Ok(r) => r,
            Err(_) => {
                if !down {
                    eprintln!("{node} is rebooting");
                    down = true;
                }
                continue;
            }
        };
        let Some(last) = r.last.clone().filter(|l| l.to_version == version) else {
            continue;
        };
        let line = format!(
            "{node}: slot {}; last update {}",
            r.running.describe(),
            last.describe()
        );
        if line != last_line {
            eprintln!("{line}");
            last_line = line;
        }
        match last.result.as_str() {
            "committed" if r.version == version => return Ok(r),
            "rolled-back" => bail!(
                "{node} rolled back to Cairn {}: {}",
                r.version,
                last.reason.as_deref().unwrap_or("no reason recorded")
            ),
            _ => {}
        }
    }
    bail!(
        "{node} did not commit Cairn {version} within {} s",
        timeout.as_secs()
    )
}

/// The bundle from an offset on, read in [`FRAME`] pieces, with a progress line.
struct FileBody {
    file: File,
    sent: u64,
    size: u64,
    shown: u64,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let left = self.size - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let mut buf = vec![0u8; FRAME.min(left as usize)];
        if let Err(e) = self.file.read_exact(&mut buf) {
            return Poll::Ready(Some(Err(e)));
        }
        self.sent += buf.len() as u64;
        if self.sent - self.shown >= 4 << 20 || self.sent == self.size {
            self.shown = self.sent;
            eprint!(
                "\ruploading {} / {} ({}%)",
                mib(self.sent),
                mib(self.size),
                self.sent * 100 / self.size
            );
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.size - self.sent)
    }
}

/// `cairnctl status`: one block per node the server offers.
pub fn print_status(kubeconfig: &Path) -> Result<()> {
    print!("{}", format_status(&status_reports(kubeconfig)?));
    Ok(())
}

/// The update state of every node the server offers (itself and the agents that answer).
pub fn status_reports(kubeconfig: &Path) -> Result<Vec<Report>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = Client::from_kubeconfig(kubeconfig)?;
        let list = client
            .request(Method::GET, "/cairn/v1/nodes", None)
            .await
            .context("asking the server for its nodes' update state")?;
        serde_json::from_value(list["items"].clone()).context("the server's node list")
    })
}

/// The `cairnctl status` table.
pub fn format_status(reports: &[Report]) -> String {
    let mut out = String::from("NODE\tVERSION\tRUNNING\tOTHER\tLAST UPDATE\n");
    for r in reports {
        let last = r.last.as_ref().map_or("none".to_string(), |l| l.describe());
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            r.node,
            r.version,
            r.running.describe(),
            r.other.describe(),
            last
        ));
    }
    align(&out)
}

/// Pads tab-separated columns to equal widths (the last column is not padded).
fn align(text: &str) -> String {
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let last = r.len().saturating_sub(1);
        for (i, cell) in r.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_upgrades_agents_before_servers() {
        let names: Vec<String> = ["cp-1", "w-2", "w-1", "lonely"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let node = |name: &str, server: bool| {
            let mut n = serde_json::json!({"metadata": {"name": name, "labels": {}}});
            if server {
                n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = "true".into();
            }
            n
        };
        let nodes = serde_json::json!({"items": [
            node("cp-1", true), node("w-1", false), node("w-2", false),
        ]});
        // `lonely` has no Node: treated as a server, so it goes with the servers.
        assert_eq!(
            upgrade_order(&names, &nodes),
            ["w-1", "w-2", "cp-1", "lonely"]
        );
        assert_eq!(
            upgrade_order(&names[..1], &serde_json::Value::Null),
            ["cp-1"]
        );
    }

    use super::*;
    use cairn::update::{Record, SlotReport};

    #[test]
    fn status_lines_up_columns_and_shows_the_reason() {
        let slot = |slot: &str, state: &str, version: Option<&str>| SlotReport {
            slot: slot.into(),
            state: state.into(),
            version: version.map(str::to_owned),
        };
        let reports = vec![
            Report {
                node: "edge-1".into(),
                version: "0.2.0".into(),
                running: slot("b", "committed", Some("0.2.0")),
                other: slot("a", "empty", None),
                last: Some(Record {
                    result: "rolled-back".into(),
                    from_version: "0.2.0".into(),
                    to_version: "0.3.0".into(),
                    slot: "a".into(),
                    reason: Some("not healthy within 300s".into()),
                    at: 0,
                }),
                ..Report::default()
            },
            Report {
                node: "gateway-long-name".into(),
                version: "0.1.0".into(),
                running: slot("a", "committed", Some("0.1.0")),
                other: slot("b", "empty", None),
                ..Report::default()
            },
        ];
        let text = format_status(&reports);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NODE"));
        let col = |l: &str| l.find("0.").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]), "columns line up:\n{text}");
        assert!(lines[1].ends_with("rolled-back 0.2.0 -> 0.3.0 (slot a): not healthy within 300s"));
        assert!(lines[1].contains("b: Cairn 0.2.0 (committed)"));
        assert!(lines[2].ends_with("none"));
    }
}
