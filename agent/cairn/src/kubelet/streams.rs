//! `kubectl exec` and `kubectl attach` on the kubelet: a WebSocket in Kubernetes' channel
//! protocol (`v5.channel.k8s.io`, else `v4.channel.k8s.io`), which the API server passes
//! through untouched.
//!
//! Every binary message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final
//! `Status` (success, or the exit code as `NonZeroExitCode`), 4 terminal resizes
//! (`{"Width":W,"Height":H}`); with v5, `[255, channel]` half-closes a channel (the client's
//! stdin ended). The session ends with the status and a normal WebSocket close.
//!
//! Requests that cannot be served (no such container, not running, a bad command) are
//! refused before the upgrade, with the reason in the body: kubectl then retries with SPDY,
//! which this kubelet refuses in turn with the same reason, so that is what the user reads.

use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::Shared;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The sub-protocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes a channel.
const CLOSE: u8 = 255;

/// How long output still drains after the command ended (a background process holding its
/// stdout open must not keep the session forever).
const DRAIN: Duration = Duration::from_secs(2);

type Refusal = (StatusCode, String);

/// What `kubectl exec` and `attach` ask for (the query of `PodExecOptions`/`PodAttachOptions`).
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

impl Options {
    pub fn parse(query: &str) -> Result<Options, String> {
        let mut o = Options::default();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = cairn_apiserver::request::decode(v).map_err(|e| e.to_string())?;
            let yes = matches!(v.as_str(), "true" | "1");
            match k {
                "stdin" | "input" => o.stdin = yes,
                "stdout" | "output" => o.stdout = yes,
                "stderr" | "error" => o.stderr = yes,
                "tty" => o.tty = yes,
                "command" => o.command.push(v),
                _ => {}
            }
        }
        if o.tty {
            // A terminal has one output; kubectl asks for no stderr with one.
            o.stderr = false;
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least one of stdin, stdout, stderr".into());
        }
        Ok(o)
    }
}

/// The running container of `pod` named `container`: its runtime id.
fn running_container(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Refusal> {
    let (_, id) = super::server::find_log(shared, ns, pod, container, false)?;
    if !shared.runtime.running(&id) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running in pod {pod}"),
        ));
    }
    Ok(id)
}

/// `/exec/<namespace>/<pod>/<container>?command=...&stdin=...`.
pub async fn exec(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Response<Body>, Refusal> {
    let opts = Options::parse(req.uri().query().unwrap_or_default())
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    if opts.command.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        ));
    }
    let id = running_container(shared, ns, pod, container)?;
    let mut cmd = shared
        .runtime
        .exec_command(&id, &opts.command, opts.tty)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let tty = opts.tty;
    let io = Io::open(&mut cmd, &opts).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("exec: a terminal or pipes for the command: {e}"),
        )
    })?;
    let (resp, socket) = upgrade(req)?;
    tokio::spawn(async move {
        if let Ok((ws, v5)) = socket.await {
            run_command(ws, v5, cmd, io, tty, opts.command).await;
        }
    });
    Ok(resp)
}

/// `/attach/<namespace>/<pod>/<container>?stdin=...&stdout=...`: the container's output
/// from now on (its log, demultiplexed) and, when its spec has `stdin: true`, its input.
pub async fn attach(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Response<Body>, Refusal> {
    let opts = Options::parse(req.uri().query().unwrap_or_default())
        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let (log, _) = super::server::find_log(shared, ns, pod, container, false)?;
    let id = running_container(shared, ns, pod, container)?;
    let stdin = match (opts.stdin, shared.runtime.stdin_path(&id)) {
        (true, Some(path)) => Some(
            tokio::net::unix::pipe::OpenOptions::new()
                .open_sender(&path)
                .map_err(|e| {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{}: {e}", path.display()),
                    )
                })?,
        ),
        // Input for a container that reads none is dropped, as kubectl warns.
        _ => None,
    };
    let (resp, socket) = upgrade(req)?;
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ok((ws, v5)) = socket.await else { return };
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (records_tx, mut records) = mpsc::channel::<Vec<cairn_runtime::logs::Record>>(4);
        let (out_tx, out_rx) = mpsc::channel::<Message>(16);
        let (sink, source) = ws.split();
        let writer = tokio::spawn(write_loop(sink, out_rx));
        let _ = out_tx.send(hello(&opts)).await;
        let input = tokio::spawn(read_loop(source, v5, stdin.map(boxed_writer), None));
        let output = async {
            while let Some(batch) = records.recv().await {
                for r in batch {
                    let channel = match r.stream.as_str() {
                        "stderr" if !opts.tty => STDERR,
                        _ => STDOUT,
                    };
                    if (channel == STDOUT && !opts.stdout) || (channel == STDERR && !opts.stderr) {
                        continue;
                    }
                    let mut text = r.text;
                    if !r.partial {
                        text.push(b'\n');
                    }
                    if out_tx.send(frame(channel, &text)).await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::select! {
            () = async {
                tokio::join!(super::server::tail(&shared, &log, &id, offset, records_tx), output);
            } => {
                let _ = out_tx.send(frame(ERROR, &success())).await;
                let _ = out_tx.send(normal_close()).await;
            }
            _ = input => {}
        }
        drop(out_tx);
        let _ = writer.await;
    });
    Ok(resp)
}

/// The command's end of the session: its pipes and, with a terminal (which `container-exec
/// --tty` makes inside the container and relays), the channel for window sizes.
struct Io {
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    sizes: Option<pipe::Sender>,
}

impl Io {
    /// Sets `cmd`'s stdio for `opts` (and fd 3 for window sizes with a terminal). Call
    /// [`Io::take`] after spawning.
    fn open(cmd: &mut tokio::process::Command, opts: &Options) -> std::io::Result<Io> {
        let pipe_or_null = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe_or_null(opts.stdin))
            .stdout(pipe_or_null(opts.stdout))
            // With a terminal, the command's output is all on stdout; this stderr carries only
            // a failure to start it, shown to the user the same way.
            .stderr(pipe_or_null(opts.stderr || opts.tty));
        let mut sizes = None;
        if opts.tty {
            let (tx, rx) = pipe::pipe()?;
            let rx = rx.into_blocking_fd()?;
            let raw = rx.as_raw_fd();
            // SAFETY: between fork and exec only dup2/fcntl run, both async-signal-safe;
            // `rx` outlives the spawn (it is moved into the closure).
            unsafe {
                cmd.pre_exec(move || {
                    let _ = &rx;
                    if raw == 3 {
                        nix::fcntl::fcntl(
                            3,
                            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                        )?;
                    } else {
                        nix::unistd::dup2(raw, 3)?;
                    }
                    Ok(())
                });
            }
            sizes = Some(tx);
        }
        Ok(Io {
            stdin: None,
            stdout: None,
            stderr: None,
            sizes,
        })
    }

    /// The child's pipes.
    fn take(&mut self, child: &mut tokio::process::Child) {
        if let Some(s) = child.stdin.take() {
            self.stdin = Some(boxed_writer(s));
        }
        if let Some(s) = child.stdout.take() {
            self.stdout = Some(Box::new(s));
        }
        if let Some(s) = child.stderr.take() {
            self.stderr = Some(Box::new(s));
        }
    }
}

fn boxed_writer(w: impl AsyncWrite + Send + Unpin + 'static) -> Box<dyn AsyncWrite + Send + Unpin> {
    Box::new(w)
}

/// Runs the command to its end, its streams on the socket; the client going away kills it.
async fn run_command(
    ws: Socket,
    v5: bool,
    mut cmd: tokio::process::Command,
    mut io: Io,
    tty: bool,
    command: Vec<String>,
) {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = finish(ws, failure(&format!("exec: {e}"))).await;
            return;
        }
    };
    // Our copies of the command's ends go, so their end is seen.
    drop(cmd);
    io.take(&mut child);
    let (out_tx, out_rx) = mpsc::channel::<Message>(16);
    let (sink, source) = ws.split();
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let _ = out_tx
        .send(frame(
            if io.stdout.is_some() { STDOUT } else { STDERR },
            b"",
        ))
        .await;
    let mut input = tokio::spawn(read_loop(source, v5, io.stdin.take(), io.sizes.take()));
    // With a terminal, what the command could not say on it (a failed start) is shown too.
    let err_channel = if tty { STDOUT } else { STDERR };
    let pumps: Vec<_> = [(STDOUT, io.stdout.take()), (err_channel, io.stderr.take())]
        .into_iter()
        .filter_map(|(ch, r)| r.map(|r| tokio::spawn(pump(r, ch, out_tx.clone()))))
        .collect();
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut input => {
            // The client went away: so does the command.
            let _ = child.kill().await;
            for p in pumps {
                p.abort();
            }
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(DRAIN, p).await.is_err() {
            abort.abort();
        }
    }
    let status = match status.ok().and_then(|s| s.code()) {
        Some(0) => success(),
        Some(code) => exit_failure(&command, code),
        None => failure("exec: the command's status was lost"),
    };
    let _ = out_tx.send(frame(ERROR, &status)).await;
    let _ = out_tx.send(normal_close()).await;
    drop(out_tx);
    input.abort();
    let _ = writer.await;
}

/// Copies one output of the command into its channel.
async fn pump(mut r: Box<dyn AsyncRead + Send + Unpin>, channel: u8, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Everything the client sends: stdin, half-closes, resizes. Returns when the client has
/// closed the socket or is gone.
async fn read_loop(
    mut source: futures_util::stream::SplitStream<Socket>,
    v5: bool,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    mut sizes: Option<pipe::Sender>,
) {
    while let Some(Ok(msg)) = source.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            Message::Close(_) => return,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(payload).await.is_err() || w.flush().await.is_err() {
                        stdin = None;
                    }
                }
            }
            CLOSE if v5 && payload.first() == Some(&STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            RESIZE => {
                if let (Some(tx), Ok(size)) = (
                    sizes.as_mut(),
                    serde_json::from_slice::<serde_json::Value>(payload),
                ) {
                    let dim = |k: &str| size[k].as_u64().unwrap_or(0);
                    let line = format!("{} {}\n", dim("Width"), dim("Height"));
                    let _ = tx.write_all(line.as_bytes()).await;
                }
            }
            _ => {}
        }
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(m) = rx.recv().await {
        let closing = matches!(m, Message::Close(_));
        if sink.send(m).await.is_err() || closing {
            break;
        }
    }
    let _ = sink.close().await;
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The first message, on the lowest output channel asked for: the client knows the
/// session is up (what Kubernetes' kubelet sends).
fn hello(opts: &Options) -> Message {
    let channel = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    frame(channel, b"")
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

fn success() -> Vec<u8> {
    br#"{"metadata":{},"status":"Success"}"#.to_vec()
}

fn failure(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    }))
    .unwrap_or_default()
}

/// What kubectl turns into "command terminated with exit code N" and its own exit status.
fn exit_failure(command: &[String], code: i32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, \
             exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    }))
    .unwrap_or_default()
}

/// Sends `status` and closes.
async fn finish(mut ws: Socket, status: Vec<u8>) -> Result<(), String> {
    ws.send(frame(ERROR, &status))
        .await
        .map_err(|e| e.to_string())?;
    ws.send(normal_close()).await.map_err(|e| e.to_string())?;
    Ok(())
}

type Upgrading =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(Socket, bool), ()>> + Send>>;

/// Accepts a WebSocket upgrade in one of [`PROTOCOLS`]: the `101` answer, and the socket once
/// hyper hands the connection over (with whether v5 was chosen).
fn upgrade(mut req: Request<Incoming>) -> Result<(Response<Body>, Upgrading), Refusal> {
    let header = |name: &str| header_values(req.headers(), name);
    let upgrade = header("upgrade");
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "this node streams over WebSocket ({}) only, not {}; use kubectl 1.30 or newer",
                PROTOCOLS.join(", "),
                if upgrade.is_empty() {
                    "a plain request".to_owned()
                } else {
                    upgrade.join(", ")
                }
            ),
        ));
    }
    let offered = header("sec-websocket-protocol");
    let Some(protocol) = PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
        .copied()
    else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "no stream protocol in common: offered [{}], served [{}]",
                offered.join(", "),
                PROTOCOLS.join(", ")
            ),
        ));
    };
    let key = req
        .headers()
        .get("sec-websocket-key")
        .ok_or((
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key".to_owned(),
        ))?
        .as_bytes()
        .to_vec();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(http_body_util::BodyExt::boxed(http_body_util::Empty::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    let v5 = protocol == PROTOCOLS[0];
    let socket = Box::pin(async move {
        let upgraded = on_upgrade.await.map_err(|_| ())?;
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        Ok((ws, v5))
    });
    Ok((resp, socket))
}

/// Every value of header `name`, comma-separated lists split (`Upgrade`,
/// `Sec-WebSocket-Protocol`).
pub(super) fn header_values(headers: &hyper::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_kubectl_queries() {
        let o = Options::parse(
            "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=true&stderr=true",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "a terminal has one output");
        assert!(Options::parse("command=ls").is_err());
    }

    #[test]
    fn exit_codes_are_reported_as_kubectl_reads_them() {
        let status: serde_json::Value =
            serde_json::from_slice(&exit_failure(&["false".into()], 3)).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}
