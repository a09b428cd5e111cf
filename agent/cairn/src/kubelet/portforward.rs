//! `kubectl port-forward` on the kubelet: `/portForward/<namespace>/<pod>`.
//!
//! kubectl speaks SPDY/3.1 ([`spdy`]) with the `portforward.k8s.io` stream protocol, either
//! tunnelled in the binary messages of a WebSocket (sub-protocol
//! `SPDY/3.1+portforward.k8s.io`, what kubectl 1.31 and newer try first) or over a plain
//! `Upgrade: SPDY/3.1` connection (older clients, and kubectl's fallback); the API server
//! passes either through untouched.
//!
//! For every local connection kubectl opens two streams with the same `requestID` header:
//! an error stream and a data stream, both naming the pod's `port`. The kubelet connects to
//! that port on the pod's loopback, inside the pod's network namespace (so a server bound to
//! 127.0.0.1 is reachable, as in Kubernetes), and copies the data stream both ways. The data
//! stream's FIN from kubectl half-closes the connection to the pod; the pod closing its side
//! ends the data stream, then the error stream, which kubectl waits for: a failure (a port
//! nobody listens on) is written on it first, and kubectl prints it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{self, Frame};
use super::Shared;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Refusal = (StatusCode, String);

/// The stream protocol.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket sub-protocol that tunnels SPDY.
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Streams waiting for the other stream of their `requestID`, at most.
const MAX_PENDING: usize = 256;

/// How long a connection to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the pod's ports are: its network namespace (none for `hostNetwork` pods).
#[derive(Clone, Debug)]
pub struct Target {
    pub pod: String,
    pub netns: Option<PathBuf>,
}

/// Upgrades `req` and forwards ports of the pod `ns/pod` until the client is gone.
pub async fn serve(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Result<Response<Body>, Refusal> {
    let uid = super::server::pod_uid(shared, ns, pod).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{ns}\" is not running on this node"),
        )
    })?;
    let netns = shared.netns_dir.join(&uid);
    let target = Target {
        pod: format!("{ns}/{pod}"),
        netns: cairn_runtime::netns::exists(&netns).then_some(netns),
    };
    let values = |name: &str| super::streams::header_values(req.headers(), name);
    let upgrade = values("upgrade");
    let websocket = upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket"));
    let plain = upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1"));
    let mut resp = Response::new(http_body_util::BodyExt::boxed(http_body_util::Empty::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if websocket {
        let offered = values("sec-websocket-protocol");
        if !offered.iter().any(|p| p == TUNNEL) {
            return Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "port-forward tunnels SPDY in a WebSocket ({TUNNEL}); offered [{}]",
                    offered.join(", ")
                ),
            ));
        }
        let key = req.headers().get("sec-websocket-key").ok_or((
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key".to_owned(),
        ))?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_str(&accept).expect("base64 is a header value"),
        );
        h.insert("sec-websocket-protocol", HeaderValue::from_static(TUNNEL));
    } else if plain {
        let offered = values("x-stream-protocol-version");
        if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "no port-forward protocol in common: offered [{}], served [{PROTOCOL}]",
                    offered.join(", ")
                ),
            ));
        }
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static(PROTOCOL),
        );
    } else {
        return Err((
            StatusCode::BAD_REQUEST,
            "port-forward needs a WebSocket or SPDY/3.1 upgrade".into(),
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        if websocket {
            let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            let (session_side, tunnel_side) = tokio::io::duplex(64 * 1024);
            let pumps = tokio::spawn(untunnel(ws, tunnel_side));
            let (r, w) = tokio::io::split(session_side);
            session(r, w, target).await;
            let _ = pumps.await;
        } else {
            let (r, w) = tokio::io::split(io);
            session(r, w, target).await;
        }
    });
    Ok(resp)
}

/// Copies the WebSocket's binary messages to `bytes` and what comes back out as messages.
async fn untunnel<S>(ws: WebSocketStream<S>, bytes: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(bytes);
    let inbound = async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(data) if wr.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            if sink
                .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    };
    // The session ends when the client goes; its end closes the WebSocket.
    tokio::join!(inbound, outbound);
}

/// What a stream's reader learns from the client.
enum Inbound {
    Data(Vec<u8>),
    /// The client's half ended (FIN).
    Fin,
    /// The stream is cancelled (RST_STREAM, or the connection is gone).
    Reset,
}

/// The first stream of a `requestID` pair, waiting for the other.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Inbound>)>,
}

/// Serves one SPDY connection: reads frames from `reader`, answers on `writer`.
pub async fn session<R, W>(mut reader: R, writer: W, target: Target)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writing = tokio::spawn(write_frames(writer, out_rx));
    let mut codec = spdy::Codec::default();
    let mut streams: HashMap<u32, mpsc::Sender<Inbound>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 32 * 1024];
    'conn: loop {
        loop {
            let (frame, used) = match codec.parse(&buf) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("cairn: kubelet: port-forward to {}: {e}", target.pod);
                    let _ = out.send(spdy::goaway(0)).await;
                    break 'conn;
                }
            };
            buf.drain(..used);
            match frame {
                Frame::SynStream {
                    stream, headers, ..
                } => {
                    let (Some(kind), Some(port), Some(request)) = (
                        spdy::header(&headers, "streamtype"),
                        spdy::header(&headers, "port").and_then(|p| p.parse::<u16>().ok()),
                        spdy::header(&headers, "requestid"),
                    ) else {
                        let _ = out
                            .send(spdy::rst_stream(stream, spdy::PROTOCOL_ERROR))
                            .await;
                        continue;
                    };
                    // A client that opens halves of pairs and never the other halves gets
                    // no more than MAX_PENDING of them held.
                    let unpaired = !pairs.contains_key(request) && pairs.len() >= MAX_PENDING;
                    if port == 0 || !matches!(kind, "error" | "data") || unpaired {
                        let _ = out
                            .send(spdy::rst_stream(stream, spdy::REFUSED_STREAM))
                            .await;
                        continue;
                    }
                    let _ = out.send(codec.syn_reply(stream, &[])).await;
                    let (tx, rx) = mpsc::channel(16);
                    streams.insert(stream, tx);
                    let pair = pairs.entry(request.to_owned()).or_default();
                    pair.port = port;
                    if kind == "error" {
                        pair.error = Some(stream);
                    } else {
                        pair.data = Some((stream, rx));
                    }
                    if let Pair {
                        error: Some(error),
                        data: Some(_),
                        ..
                    } = pair
                    {
                        let error = *error;
                        let pair = pairs.remove(request).expect("the pair is there");
                        let (data, inbound) = pair.data.expect("checked above");
                        forwards.spawn(forward(
                            target.clone(),
                            pair.port,
                            error,
                            data,
                            inbound,
                            out.clone(),
                        ));
                    }
                }
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    let fin = flags & spdy::FLAG_FIN != 0;
                    if let Some(tx) = streams.get(&stream) {
                        if !data.is_empty() {
                            // A stream whose forward has ended takes no more.
                            let _ = tx.send(Inbound::Data(data)).await;
                        }
                        if fin {
                            let _ = tx.send(Inbound::Fin).await;
                            streams.remove(&stream);
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Some(tx) = streams.remove(&stream) {
                        let _ = tx.send(Inbound::Reset).await;
                    }
                }
                // The client's pings have odd ids; answering is echoing.
                Frame::Ping(id) if id % 2 == 1 => {
                    let _ = out.send(spdy::ping(id)).await;
                }
                Frame::GoAway => break 'conn,
                Frame::Ping(_) | Frame::Ignored => {}
            }
        }
        while forwards.try_join_next().is_some() {}
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // The client is gone: so are its forwards.
    forwards.shutdown().await;
    drop(out);
    let _ = writing.await;
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        // Batch what is already queued before flushing.
        while let Ok(frame) = frames.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// One forwarded connection: the pod's `port` and the client's streams `error` and `data`.
async fn forward(
    target: Target,
    port: u16,
    error: u32,
    data: u32,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let finish = |message: Option<String>| {
        let out = out.clone();
        async move {
            if let Some(m) = message {
                let _ = out.send(spdy::data(error, m.as_bytes(), false)).await;
            }
            let _ = out.send(spdy::data(error, b"", true)).await;
        }
    };
    let conn = match connect(&target, port).await {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(spdy::data(data, b"", true)).await;
            finish(Some(format!(
                "error forwarding port {port} to pod {}: {e}",
                target.pod
            )))
            .await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let reading = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => {
                    if out.send(spdy::data(data, &buf[..n], false)).await.is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(format!("error reading from port {port}: {e}")),
            }
        }
    };
    tokio::pin!(reading);
    let mut writing = true;
    let problem = loop {
        tokio::select! {
            problem = &mut reading => {
                // The pod closed its side: the stream ends.
                let _ = out.send(spdy::data(data, b"", true)).await;
                break problem;
            }
            message = inbound.recv(), if writing => match message {
                Some(Inbound::Data(bytes)) => {
                    if let Err(e) = to_pod.write_all(&bytes).await {
                        break Some(format!("error writing to port {port}: {e}"));
                    }
                }
                Some(Inbound::Fin) => {
                    let _ = to_pod.shutdown().await;
                    writing = false;
                }
                Some(Inbound::Reset) | None => break None,
            },
        }
    };
    finish(problem).await;
}

/// A connection to `port` on the pod's loopback (IPv4, else IPv6).
async fn connect(target: &Target, port: u16) -> Result<tokio::net::TcpStream, String> {
    let v4 = super::probes::connect_in(
        target.netns.clone(),
        "127.0.0.1".into(),
        port,
        CONNECT_TIMEOUT,
    )
    .await;
    let stream = match v4 {
        Ok(s) => s,
        Err(e4) => {
            super::probes::connect_in(target.netns.clone(), "::1".into(), port, CONNECT_TIMEOUT)
                .await
                .map_err(|e6| format!("{e4}; {e6}"))?
        }
    };
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of a session over an in-memory pipe, against a real TCP server.
    #[tokio::test]
    async fn a_session_forwards_a_connection_and_reports_a_refused_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&[b"echo:".as_slice(), &got].concat())
                .await
                .unwrap();
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(server);
        let target = Target {
            pod: "default/test".into(),
            netns: None,
        };
        tokio::spawn(session(r, w, target));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut codec = spdy::Codec::default();
        let p = port.to_string();
        // A refused port first: nothing listens on port 1.
        for (id, kind, port, req) in [
            (1, "error", "1", "0"),
            (3, "data", "1", "0"),
            (5, "error", p.as_str(), "1"),
            (7, "data", p.as_str(), "1"),
        ] {
            let f = codec.syn_stream(
                id,
                &[("streamType", kind), ("port", port), ("requestID", req)],
            );
            wr.write_all(&f).await.unwrap();
        }
        wr.write_all(&spdy::data(5, b"", true)).await.unwrap();
        wr.write_all(&spdy::data(7, b"hello", true)).await.unwrap();
        wr.write_all(&spdy::ping(9)).await.unwrap();

        let mut per_stream: HashMap<u32, (Vec<u8>, bool)> = HashMap::new();
        let (mut replies, mut pinged) = (0, false);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let done = |s: &HashMap<u32, (Vec<u8>, bool)>| {
            [1, 3, 5, 7].iter().all(|id| s.get(id).is_some_and(|v| v.1))
        };
        while !(done(&per_stream) && pinged && replies == 4) {
            let n = tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk))
                .await
                .expect("the session answers")
                .unwrap();
            assert!(n > 0, "the session ended early: {per_stream:?}");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((frame, used)) = codec.parse(&buf).unwrap() {
                buf.drain(..used);
                match frame {
                    Frame::Ignored => replies += 1,
                    Frame::Ping(9) => pinged = true,
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } => {
                        let e = per_stream.entry(stream).or_default();
                        e.0.extend(data);
                        e.1 |= flags & spdy::FLAG_FIN != 0;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let text = |id| String::from_utf8_lossy(&per_stream[&id].0).into_owned();
        assert!(
            text(1).contains("error forwarding port 1 to pod default/test"),
            "{}",
            text(1)
        );
        assert!(text(1).contains("refused"), "{}", text(1));
        assert_eq!(text(3), "");
        assert_eq!(text(5), "", "a forwarded connection reports no error");
        assert_eq!(text(7), "echo:hello");
    }

    #[tokio::test]
    async fn bad_streams_are_refused_and_garbage_ends_the_session() {
        let (client, server) = tokio::io::duplex(4096);
        let (r, w) = tokio::io::split(server);
        let target = Target {
            pod: "default/test".into(),
            netns: None,
        };
        let session = tokio::spawn(session(r, w, target));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut codec = spdy::Codec::default();
        let f = codec.syn_stream(
            1,
            &[("streamType", "data"), ("port", "http"), ("requestID", "0")],
        );
        wr.write_all(&f).await.unwrap();
        let mut buf = [0u8; 64];
        let n = rd.read(&mut buf).await.unwrap();
        let (frame, _) = codec.parse(&buf[..n]).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::RstStream {
                stream: 1,
                status: spdy::PROTOCOL_ERROR
            }
        );
        wr.write_all(b"\x80\x02\x00\x06\x00\x00\x00\x04abcd")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("a wrong SPDY version ends the session")
            .unwrap();
    }
}
