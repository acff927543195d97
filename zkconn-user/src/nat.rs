//! NAT: the client address a ZooKeeper server sees for a connection, when the host
//! translates it.
//!
//! ZooKeeper counts `maxClientCnxns` per source address *as the server sees it*. A process in
//! a container's network namespace (Docker's bridge, a Kubernetes pod reaching a ZooKeeper
//! outside the cluster) connects from an address of its own, which the host masquerades to
//! one of its addresses; the server then counts it together with the host's own processes.
//! The translation is in the host's connection tracking table: the reply direction of the
//! connection's entry is addressed to the translated source.
//!
//! Owns: one `NETLINK_NETFILTER` socket in zkconn's own network namespace (where a host's NAT
//! happens), a `IPCTNL_MSG_CT_GET` per new connection (through the `netlink-packet-netfilter`
//! types), and a cache of the answers for the connections still open.
//! Must not: block (each question has a short receive timeout), or guess: a connection whose
//! entry is missing keeps its own address, and an unusable table is reported, not hidden.
//! Conntrack needs `CAP_NET_ADMIN`, kept after attach only while this socket works.

use std::{net::IpAddr, os::fd::AsRawFd as _, time::Duration};

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable as _,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use rustc_hash::{FxHashMap, FxHashSet};
use zkconn_common::Tuple as ConnTuple;

use crate::{
    model::NatHealth,
    targets::{ip_from_bytes, ip_to_bytes},
};

/// At most this many questions per sample; the rest wait for the next one (a burst of new
/// connections must not stall a sample).
pub const LOOKUPS_PER_SAMPLE: usize = 4096;

/// Questions sent in one datagram; the kernel answers each in a datagram of its own. Small
/// enough that the answers (a few hundred bytes each) fit the socket's receive buffer.
const BATCH: usize = 32;

/// How long one answer may take before the question counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// One answer: the source address the server sees, when it is not the connection's own.
type Answer = Option<[u8; 16]>;

pub struct Nat {
    socket: Option<Socket>,
    reason: Option<String>,
    cache: FxHashMap<ConnTuple, Answer>,
    /// The rows version whose every connection has its answer, and the translated ones.
    settled: Option<(u64, FxHashMap<ConnTuple, [u8; 16]>)>,
    seq: u32,
    lookups: u64,
    errors: u64,
}

impl Nat {
    /// Opens the conntrack socket and asks it one question to see that it answers. `enabled`
    /// false (`--nat off`) asks nothing.
    pub fn open(enabled: bool) -> Self {
        let mut nat = Nat {
            socket: None,
            reason: None,
            cache: FxHashMap::default(),
            settled: None,
            seq: 0,
            lookups: 0,
            errors: 0,
        };
        if !enabled {
            nat.reason = Some("--nat off".to_owned());
            return nat;
        }
        match open_socket() {
            Ok(socket) => nat.socket = Some(socket),
            Err(e) => {
                nat.reason = Some(format!("cannot open a netfilter netlink socket: {e}"));
                return nat;
            }
        }
        // A question nobody can match: "no entry" means the table answers.
        let probe = ConnTuple {
            saddr: ip_to_bytes(IpAddr::from([127, 255, 255, 254])),
            daddr: ip_to_bytes(IpAddr::from([127, 255, 255, 253])),
            sport: 1,
            dport: 1,
            _pad: 0,
        };
        match nat.ask(&[probe]) {
            Ok(answers) if answers.iter().all(Option::is_some) => {}
            Ok(_) => {
                nat.socket = None;
                nat.reason = Some(
                    LookupError::Io(std::io::Error::from(std::io::ErrorKind::TimedOut)).explain(),
                );
            }
            Err(e) => {
                nat.socket = None;
                nat.reason = Some(e.explain());
            }
        }
        nat
    }

    /// Whether the table can be asked (zkconn then keeps `CAP_NET_ADMIN`).
    pub fn available(&self) -> bool {
        self.socket.is_some()
    }

    /// The source address the server sees for each of `live` that the host translated.
    /// Connections no longer live are forgotten; new ones are asked about (at most
    /// [`LOOKUPS_PER_SAMPLE`] per call), established ones only: a connect's entry may not
    /// exist yet.
    ///
    /// `rows`: which reading of the connection rows `live` is (see
    /// `KernelState::rows_version`). Once every connection of a reading has its answer, the
    /// same reading again asks nothing and walks nothing.
    pub fn translate<'a>(
        &mut self,
        rows: u64,
        live: impl Iterator<Item = &'a ConnTuple>,
    ) -> FxHashMap<ConnTuple, [u8; 16]> {
        if let Some((settled, translated)) = &self.settled
            && *settled == rows
        {
            return translated.clone();
        }
        let live: FxHashSet<ConnTuple> = live.filter(|t| t.sport != 0).copied().collect();
        self.cache.retain(|t, _| live.contains(t));
        // Without a table to ask, nothing is asked (and nothing waits to be).
        let new: Vec<ConnTuple> = if self.available() {
            live.iter()
                .filter(|t| !self.cache.contains_key(t))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let mut unasked = new.len() > LOOKUPS_PER_SAMPLE;
        for chunk in new[..new.len().min(LOOKUPS_PER_SAMPLE)].chunks(BATCH) {
            let Some(answers) = self.ask_counted(chunk) else {
                unasked = true;
                break;
            };
            for (t, answer) in chunk.iter().zip(answers) {
                match answer {
                    Some(a) => {
                        self.cache.insert(*t, a);
                    }
                    None => unasked = true,
                }
            }
        }
        let translated: FxHashMap<ConnTuple, [u8; 16]> = self
            .cache
            .iter()
            .filter_map(|(t, a)| Some((*t, (*a)?)))
            .collect();
        self.settled = (!unasked).then(|| (rows, translated.clone()));
        translated
    }

    /// The source address the server saw for each of `closed` (connections that ended
    /// since the last sample, refusals: the host keeps their entries for a few seconds after
    /// the close), for those the host translated. At most [`LOOKUPS_PER_SAMPLE`].
    pub fn translate_closed(&mut self, closed: &[ConnTuple]) -> Vec<(ConnTuple, [u8; 16])> {
        let mut found = Vec::new();
        let asked = if self.available() {
            closed.len().min(LOOKUPS_PER_SAMPLE)
        } else {
            0
        };
        let closed = &closed[..asked];
        for chunk in closed.chunks(BATCH) {
            let Some(answers) = self.ask_counted(chunk) else {
                break;
            };
            for (t, answer) in chunk.iter().zip(answers) {
                if let Some(Some(seen)) = answer {
                    found.push((*t, seen));
                }
            }
        }
        found
    }

    /// [`Nat::ask`], with its failures counted: `None` when no question could be asked,
    /// else one answer per question, `None` for a question that failed. A failure other than
    /// one question's (permission lost, module removed) closes the socket.
    fn ask_counted(&mut self, questions: &[ConnTuple]) -> Option<Vec<Option<Answer>>> {
        match self.ask(questions) {
            Ok(answers) => {
                let failed = answers.iter().filter(|a| a.is_none()).count();
                if failed > 0 {
                    tracing::debug!("conntrack look-ups unanswered: {failed}");
                    self.errors += failed as u64;
                }
                Some(answers)
            }
            Err(LookupError::Io(e)) => {
                tracing::debug!("conntrack look-ups failed: {e}");
                self.errors += questions.len() as u64;
                None
            }
            Err(e) => {
                self.errors += 1;
                self.reason = Some(e.explain());
                self.socket = None;
                tracing::warn!("NAT look-ups stopped: {}", e.explain());
                None
            }
        }
    }

    pub fn health(&self, translated: u64) -> NatHealth {
        NatHealth {
            available: self.socket.is_some(),
            reason: self.reason.clone(),
            translated,
            lookups: self.lookups,
            errors: self.errors,
        }
    }

    /// Asks the table about each of `questions`, all in one datagram: per question
    /// `Some(Some(addr))` when the server sees `addr`, `Some(None)` when the connection keeps
    /// its own address or the host does not track it, `None` when no answer came in time.
    fn ask(&mut self, questions: &[ConnTuple]) -> Result<Vec<Option<Answer>>, LookupError> {
        let socket = self.socket.as_ref().ok_or(LookupError::Closed)?;
        let first = self.seq.wrapping_add(1);
        let mut datagram = Vec::new();
        for t in questions {
            self.seq = self.seq.wrapping_add(1);
            datagram.extend(question(t, self.seq));
        }
        self.lookups += questions.len() as u64;
        socket.send(&datagram, 0).map_err(LookupError::Io)?;
        let mut answers: Vec<Option<Answer>> = vec![None; questions.len()];
        let mut left = questions.len();
        let mut reply = Vec::with_capacity(8192);
        while left > 0 {
            reply.clear();
            if let Err(e) = socket.recv(&mut reply, 0) {
                // No answer within the timeout: the rest stay unanswered.
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                {
                    break;
                }
                return Err(LookupError::Io(e));
            }
            let mut offset = 0;
            while offset < reply.len() {
                let parsed = NetlinkMessage::<NetfilterMessage>::deserialize(&reply[offset..])
                    .map_err(|e| LookupError::Io(std::io::Error::other(e.to_string())))?;
                let length = parsed.header.length as usize;
                // An answer to one of these questions (not one that timed out before).
                let i = parsed.header.sequence_number.wrapping_sub(first) as usize;
                if let Some(slot) = answers.get_mut(i)
                    && slot.is_none()
                {
                    *slot = Some(answer(parsed.payload, &questions[i])?);
                    left -= 1;
                }
                if length == 0 {
                    break;
                }
                // Messages in one datagram are 4-byte aligned.
                offset += length.next_multiple_of(4);
            }
        }
        Ok(answers)
    }
}

/// The `IPCTNL_MSG_CT_GET` for `t`, with sequence number `seq`.
fn question(t: &ConnTuple, seq: u32) -> Vec<u8> {
    let (src, dst) = (ip_from_bytes(t.saddr), ip_from_bytes(t.daddr));
    let family = match src {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    };
    let orig = ConntrackAttribute::CtaTupleOrig(vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(src),
            IPTuple::DestinationAddress(dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::Tcp),
            ProtoTuple::SourcePort(t.sport),
            ProtoTuple::DestinationPort(t.dport),
        ]),
    ]);
    let message = NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        ConntrackMessage::Get(vec![orig]),
    );
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    header.message_type = message.message_type();
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// What one answer says of connection `t`.
fn answer(payload: NetlinkPayload<NetfilterMessage>, t: &ConnTuple) -> Result<Answer, LookupError> {
    let src = ip_from_bytes(t.saddr);
    match payload {
        // The table finds an entry by either of its directions: an entry whose reply
        // direction is this connection (one seen first the other way round, say a stale
        // entry of a server that reused the port) says nothing of its translation.
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
            ..
        }) if !original_is(&attrs, src, t.sport) => Ok(None),
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
            ..
        }) => Ok(reply_source(&attrs)
            .filter(|seen| *seen != src)
            .map(ip_to_bytes)),
        NetlinkPayload::Error(e) => match e.code.map(|c| -c.get()) {
            None => Ok(None),
            Some(libc::ENOENT) => Ok(None),
            Some(libc::EPERM) => Err(LookupError::Permission),
            Some(code) => Err(LookupError::Kernel(code)),
        },
        _ => Ok(None),
    }
}

/// Whether the entry's original direction starts at `src` port `sport` (an entry without
/// that tuple is taken as it comes).
fn original_is(attrs: &[ConntrackAttribute], src: IpAddr, sport: u16) -> bool {
    let Some(orig) = attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleOrig(tuples) => Some(tuples),
        _ => None,
    }) else {
        return true;
    };
    let addr = orig.iter().find_map(|t| match t {
        Tuple::Ip(ips) => ips.iter().find_map(|ip| match ip {
            IPTuple::SourceAddress(a) => Some(*a),
            _ => None,
        }),
        _ => None,
    });
    let port = orig.iter().find_map(|t| match t {
        Tuple::Proto(p) => p.iter().find_map(|p| match p {
            ProtoTuple::SourcePort(port) => Some(*port),
            _ => None,
        }),
        _ => None,
    });
    addr.is_none_or(|a| crate::targets::canonical_ip(a) == crate::targets::canonical_ip(src))
        && port.is_none_or(|p| p == sport)
}

/// The destination address of the reply direction: the source the server answers.
fn reply_source(attrs: &[ConntrackAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(tuples) => tuples.iter().find_map(|t| match t {
            Tuple::Ip(ips) => ips.iter().find_map(|ip| match ip {
                IPTuple::DestinationAddress(addr) => Some(*addr),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

#[derive(Debug)]
enum LookupError {
    Closed,
    Permission,
    Kernel(i32),
    Io(std::io::Error),
}

impl LookupError {
    fn explain(&self) -> String {
        match self {
            LookupError::Closed => "the conntrack socket is closed".to_owned(),
            LookupError::Permission => "asking the connection tracking table needs \
                                        CAP_NET_ADMIN (the unit's capability set lacks it)"
                .to_owned(),
            LookupError::Kernel(code)
                if *code == libc::EOPNOTSUPP || *code == libc::EPROTONOSUPPORT =>
            {
                "this kernel has no conntrack netlink interface (nf_conntrack_netlink)".to_owned()
            }
            LookupError::Kernel(code) => format!(
                "the connection tracking table refused the question: {}",
                std::io::Error::from_raw_os_error(*code)
            ),
            LookupError::Io(e) => format!("the connection tracking table did not answer: {e}"),
        }
    }
}

fn open_socket() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // Under 1 s: fits the field whatever its width on this libc.
    timeout.tv_usec = ANSWER_TIMEOUT.subsec_micros().into();
    // SAFETY: setsockopt on the socket's own fd with a valid timeval of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            u32::try_from(size_of::<libc::timeval>()).unwrap_or(16),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_attr(dst: &str) -> ConntrackAttribute {
        ConntrackAttribute::CtaTupleReply(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress("10.0.0.9".parse().unwrap()),
                IPTuple::DestinationAddress(dst.parse().unwrap()),
            ]),
            Tuple::Proto(vec![ProtoTuple::Protocol(Protocol::Tcp)]),
        ])
    }

    #[test]
    fn the_reply_directions_destination_is_what_the_server_sees() {
        assert_eq!(
            reply_source(&[tuple_attr("192.0.2.7")]),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(reply_source(&[]), None);
    }

    /// The table finds an entry by either direction: one whose original direction is this
    /// connection's reply (a stale entry of a server on the reused port) is no translation.
    #[test]
    fn an_entry_found_by_its_reply_direction_is_no_translation() {
        let t = ConnTuple {
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            daddr: ip_to_bytes("127.201.0.1".parse().unwrap()),
            sport: 40000,
            dport: 2181,
            _pad: 0,
        };
        let entry = |orig_src: &str, orig_sport: u16, reply_dst: &str| {
            NetlinkPayload::InnerMessage(NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
                ConntrackMessage::New(vec![
                    ConntrackAttribute::CtaTupleOrig(vec![
                        Tuple::Ip(vec![IPTuple::SourceAddress(orig_src.parse().unwrap())]),
                        Tuple::Proto(vec![ProtoTuple::SourcePort(orig_sport)]),
                    ]),
                    tuple_attr(reply_dst),
                ]),
            ))
        };
        // Masqueraded: the original direction is this connection, the reply goes to the
        // host's address.
        assert_eq!(
            answer(entry("127.0.0.1", 40000, "192.0.2.7"), &t).unwrap(),
            Some(ip_to_bytes("192.0.2.7".parse().unwrap()))
        );
        // Seen the other way round first: found by its reply direction.
        assert_eq!(
            answer(entry("127.201.0.1", 2181, "127.201.0.1"), &t).unwrap(),
            None
        );
    }

    #[test]
    fn off_asks_nothing_and_says_why() {
        let mut nat = Nat::open(false);
        assert!(!nat.available());
        let t = ConnTuple {
            sport: 5,
            ..ConnTuple::default()
        };
        assert!(nat.translate(1, [t].iter()).is_empty());
        let h = nat.health(0);
        assert_eq!((h.available, h.lookups), (false, 0));
        assert_eq!(h.reason.as_deref(), Some("--nat off"));
    }
}
