//! The masquerade rule, spoken to nf_tables over netlink (no `nft` binary, no libnftnl):
//!
//! ```text
//! table ip cairn {
//!     chain <bridge>-postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr <pod cidr> ip daddr != <cluster cidr> ip daddr != 224.0.0.0/4 masquerade
//!     }
//! }
//! ```
//!
//! Installed as one batch (a transaction): create the table and chain if missing, flush the
//! chain, add the rule; so running it again, or with a new pod range, leaves exactly one rule.
//! A chain per bridge keeps networks of several bridges (tests) apart in one table.
//! Addresses and masks in expressions are in network byte order (`Ipv4Addr::octets`);
//! the packet crates write the attribute numbers in the order each attribute needs, so the
//! batch is the same on big-endian s390x.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_NONREC};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, InetHookNumber, ListAttribute, NfTablesMessage, Operator, Payload, Register,
    RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::cidr::Ipv4Cidr;
use crate::netlink::Conn;
use crate::Error;

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch is for.
const SUBSYS_NFTABLES: u16 = 10;
/// `NF_ACCEPT`, the chain's policy.
const ACCEPT: u32 = 1;
/// `NF_IP_PRI_NAT_SRC`: nft's `srcnat` priority.
const PRIORITY_SRCNAT: i32 = 100;
/// `NFT_PAYLOAD_NETWORK_HEADER`: offsets count from the IPv4 header.
const NETWORK_HEADER: u32 = 1;
const SADDR_OFFSET: u32 = 12;
const DADDR_OFFSET: u32 = 16;

/// The chain of `bridge`'s network in the table.
pub fn chain_name(bridge: &str) -> String {
    format!("{bridge}-postrouting")
}

fn message(inner: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        inner,
    )
}

fn control(inner: ControlMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
        inner,
    )
}

fn table(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(name.to_owned())],
    }
}

fn chain(table: &str, name: &str) -> Vec<ChainAttribute> {
    vec![
        ChainAttribute::Table(table.to_owned()),
        ChainAttribute::Name(name.to_owned()),
    ]
}

/// `ip <field> & mask ==/!= network`: loads 4 bytes of the header at `offset`, masks them and
/// compares them.
fn match_network(
    offset: u32,
    net: Ipv4Cidr,
    op: Operator,
) -> Vec<ListAttribute<ExpressionAttribute>> {
    vec![
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(NETWORK_HEADER),
            Payload::Offset(offset),
            Payload::Len(4),
        ])
        .into(),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(net.mask().octets().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ])
        .into(),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(op),
            Cmp::Data(DataAttribute::Value(net.network().octets().to_vec())),
        ])
        .into(),
    ]
}

/// The expressions of the masquerade rule.
pub fn masquerade_rule(
    pod: Ipv4Cidr,
    cluster: Ipv4Cidr,
) -> Vec<ListAttribute<ExpressionAttribute>> {
    let multicast = Ipv4Cidr::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("a valid network");
    let mut exprs = match_network(SADDR_OFFSET, pod, Operator::Equal);
    exprs.extend(match_network(DADDR_OFFSET, cluster, Operator::NotEqual));
    exprs.extend(match_network(DADDR_OFFSET, multicast, Operator::NotEqual));
    exprs.push(ListAttribute::Element(vec![ExpressionAttribute::Name(
        "masq".to_owned(),
    )]));
    exprs
}

/// Sends one transaction; a refusal names the step.
fn transaction(
    conn: &mut Conn,
    steps: Vec<(&'static str, NfTablesMessage, u16)>,
) -> Result<(), (&'static str, io::Error)> {
    let names: Vec<&str> = steps.iter().map(|(n, _, _)| *n).collect();
    let mut messages = vec![(control(ControlMessage::BatchBegin), 0, false)];
    messages.extend(
        steps
            .into_iter()
            .map(|(_, m, flags)| (message(m), flags, true)),
    );
    messages.push((control(ControlMessage::BatchEnd), 0, false));
    conn.batch(messages)
        .map_err(|(i, e)| (names.get(i.wrapping_sub(1)).copied().unwrap_or("batch"), e))
}

/// Makes (or refreshes) the table, the chain of `bridge` and its one masquerade rule.
pub fn install(
    conn: &mut Conn,
    table_name: &str,
    bridge: &str,
    pod: Ipv4Cidr,
    cluster: Ipv4Cidr,
) -> Result<(), Error> {
    let chain_name = chain_name(bridge);
    let mut base = chain(table_name, &chain_name);
    base.extend([
        ChainAttribute::Type("nat".to_owned()),
        ChainAttribute::Hook(vec![
            Hook::Number(InetHookNumber::PostRouting.into()),
            Hook::Priority(PRIORITY_SRCNAT as u32),
        ]),
        ChainAttribute::Policy(ACCEPT),
    ]);
    let rule = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table_name.to_owned()),
            RuleAttribute::Chain(chain_name.clone()),
            RuleAttribute::Expressions(masquerade_rule(pod, cluster)),
        ],
    };
    let flush = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table_name.to_owned()),
            RuleAttribute::Chain(chain_name.clone()),
        ],
    };
    transaction(
        conn,
        vec![
            (
                "creating the table",
                NfTablesMessage::NewTable(table(table_name)),
                NLM_F_CREATE,
            ),
            (
                "creating the NAT chain",
                NfTablesMessage::NewChain(ChainMessage { attributes: base }),
                NLM_F_CREATE,
            ),
            (
                "flushing the NAT chain",
                NfTablesMessage::DeleteRule(flush),
                0,
            ),
            (
                "adding the masquerade rule",
                NfTablesMessage::NewRule(rule),
                NLM_F_CREATE | NLM_F_APPEND,
            ),
        ],
    )
    .map_err(|(step, e)| {
        Error::kernel(
            format!("nf_tables: {step} (table ip {table_name}, chain {chain_name})"),
            e,
        )
    })
}

/// Deletes the chain of `bridge`, and the table if nothing else is left in it. Missing ones
/// are fine.
pub fn remove(conn: &mut Conn, table_name: &str, bridge: &str) -> Result<(), Error> {
    let chain_name = chain_name(bridge);
    let flush = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table_name.to_owned()),
            RuleAttribute::Chain(chain_name.clone()),
        ],
    };
    let gone = |e: &io::Error| e.raw_os_error() == Some(nix::libc::ENOENT);
    match transaction(
        conn,
        vec![
            (
                "flushing the NAT chain",
                NfTablesMessage::DeleteRule(flush),
                0,
            ),
            (
                "deleting the NAT chain",
                NfTablesMessage::DeleteChain(ChainMessage {
                    attributes: chain(table_name, &chain_name),
                }),
                0,
            ),
        ],
    ) {
        Err((_, e)) if gone(&e) => {}
        Err((step, e)) => return Err(Error::kernel(format!("nf_tables: {step}"), e)),
        Ok(()) => {}
    }
    match transaction(
        conn,
        vec![(
            "deleting the table",
            NfTablesMessage::DeleteTable(table(table_name)),
            NLM_F_NONREC,
        )],
    ) {
        Err((_, e)) if gone(&e) || e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(()),
        Err((step, e)) => Err(Error::kernel(format!("nf_tables: {step}"), e)),
        Ok(()) => Ok(()),
    }
}

/// How many rules the chain of `bridge` holds (tests check that setting up twice leaves one).
pub fn rule_count(table_name: &str, bridge: &str) -> Result<usize, Error> {
    use netlink_packet_core::NLM_F_DUMP;
    let mut conn = Conn::netfilter().map_err(|e| Error::kernel("opening nfnetlink", e))?;
    let query = RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table_name.to_owned()),
            RuleAttribute::Chain(chain_name(bridge)),
        ],
    };
    let answers = conn
        .request(message(NfTablesMessage::GetRule(query)), NLM_F_DUMP)
        .map_err(|e| Error::kernel("nf_tables: listing rules", e))?;
    Ok(answers.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    fn find(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Attribute headers are in the host's order, nf_tables numbers and addresses in network
    /// order: the same check holds on little- and big-endian machines.
    #[test]
    fn rules_carry_host_order_headers_and_network_order_values() {
        let pod: Ipv4Cidr = "10.42.7.0/24".parse().unwrap();
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let rule = RuleMessage {
            attributes: vec![
                RuleAttribute::Table(crate::TABLE.to_owned()),
                RuleAttribute::Chain(chain_name("cairn0")),
                RuleAttribute::Expressions(masquerade_rule(pod, cluster)),
            ],
        };
        let mut msg = NetlinkMessage::new(
            Default::default(),
            NetlinkPayload::InnerMessage(message(NfTablesMessage::NewRule(rule))),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        assert_eq!(
            u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize,
            buf.len()
        );
        // NFTA_PAYLOAD_OFFSET (3) = 12 and 16: an 8-byte attribute, value big-endian.
        for offset in [SADDR_OFFSET, DADDR_OFFSET] {
            let attr = [
                &8u16.to_ne_bytes()[..],
                &3u16.to_ne_bytes(),
                &offset.to_be_bytes(),
            ]
            .concat();
            assert!(find(&buf, &attr), "payload offset {offset}");
        }
        // NFTA_DATA_VALUE (1) holding the pod network, the cluster mask and 224.0.0.0.
        for value in [[10, 42, 7, 0], [255, 255, 0, 0], [224, 0, 0, 0]] {
            let attr = [&8u16.to_ne_bytes()[..], &1u16.to_ne_bytes(), &value].concat();
            assert!(find(&buf, &attr), "{value:?}");
        }
        assert!(find(&buf, b"masq\0"));
    }
}
