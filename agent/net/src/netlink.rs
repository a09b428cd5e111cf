//! A blocking netlink connection: requests built and answers parsed by the rust-netlink packet
//! crates, sent one at a time (or as one nf_tables batch) and waited for with a timeout.
//!
//! A netlink socket talks to the network namespace it was opened in, whatever thread uses it
//! later; [`in_netns`] opens sockets inside a pod's namespace.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols, Socket, SocketAddr};

/// A reply that does not come within this long is an error (the kernel answers at once).
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Conn {
    socket: Socket,
    seq: u32,
}

impl Conn {
    pub fn route() -> io::Result<Conn> {
        Conn::open(protocols::NETLINK_ROUTE)
    }

    pub fn netfilter() -> io::Result<Conn> {
        Conn::open(protocols::NETLINK_NETFILTER)
    }

    fn open(protocol: isize) -> io::Result<Conn> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as _, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(io::Error::from)?;
        Ok(Conn { socket, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one request and returns what the kernel answered: the messages of a dump
    /// (`NLM_F_DUMP` in `flags`), or nothing once the request is acknowledged. A refusal is
    /// the kernel's errno.
    pub fn request<I>(&mut self, message: I, flags: u16) -> io::Result<Vec<I>>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut msg =
            NetlinkMessage::new(Default::default(), NetlinkPayload::InnerMessage(message));
        msg.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        let seq = self.next_seq();
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut answers = Vec::new();
        loop {
            for reply in self.receive::<I>()? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(_) => return Err(e.to_io()),
                    },
                    _ => {}
                }
            }
        }
    }

    /// Sends `messages` in one datagram (an nf_tables batch) with an acknowledgement asked for
    /// each of those `acked` says; waits for every one of them. The first refusal is returned
    /// with its position in `messages`.
    pub fn batch<I>(&mut self, messages: Vec<(I, u16, bool)>) -> Result<(), (usize, io::Error)>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut buf = Vec::new();
        let mut waiting = Vec::new();
        for (i, (message, flags, acked)) in messages.into_iter().enumerate() {
            let mut msg =
                NetlinkMessage::new(Default::default(), NetlinkPayload::InnerMessage(message));
            msg.header.flags = NLM_F_REQUEST | flags | if acked { NLM_F_ACK } else { 0 };
            let seq = self.next_seq();
            msg.header.sequence_number = seq;
            msg.finalize();
            let start = buf.len();
            buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut buf[start..]);
            if acked {
                waiting.push((seq, i));
            }
        }
        self.socket.send(&buf, 0).map_err(|e| (0, e))?;
        let mut first_error: Option<(usize, io::Error)> = None;
        while !waiting.is_empty() {
            let replies = match self.receive::<I>() {
                Ok(r) => r,
                Err(e) => return Err(first_error.unwrap_or((0, e))),
            };
            for reply in replies {
                let Some(pos) = waiting
                    .iter()
                    .position(|(s, _)| *s == reply.header.sequence_number)
                else {
                    continue;
                };
                if let NetlinkPayload::Error(e) = reply.payload {
                    let (_, index) = waiting.remove(pos);
                    if e.code.is_some() && first_error.is_none() {
                        first_error = Some((index, e.to_io()));
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One datagram's messages.
    fn receive<I: NetlinkDeserializable>(&mut self) -> io::Result<Vec<NetlinkMessage<I>>> {
        let (data, _) = self.socket.recv_from_full().map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer")
            } else {
                e
            }
        })?;
        let mut messages = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let len = NetlinkBuffer::new_checked(&data[at..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                .length() as usize;
            let message = NetlinkMessage::<I>::deserialize(&data[at..at + len])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            messages.push(message);
            at += (len + 3) & !3;
        }
        Ok(messages)
    }
}

/// Runs `f` on a thread of its own that has joined the network namespace pinned at `netns`
/// (netlink sockets `f` opens talk to that namespace).
pub fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, crate::Error> + Send,
) -> Result<T, crate::Error> {
    let ns = File::open(netns).map_err(|e| crate::Error::state(netns, e))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                crate::Error::kernel(
                    format!("joining the network namespace {}", netns.display()),
                    e.into(),
                )
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(crate::Error::Config(
                "a network namespace thread panicked".into(),
            ))
        })
    })
}
