//! The kernel's TCP socket table, read over netlink `NETLINK_SOCK_DIAG` (INET_DIAG), one
//! reader per network namespace.
//!
//! Owns: the netlink sockets (one per namespace, opened in it), the dump request and the
//! decoding of its answer through the `netlink-packet-*` crates (no parser of our own), and
//! the fallback to `/proc/PID/net/tcp{,6}` where sock_diag cannot be used.
//! Must not: decide what a socket means for the counts (seeding and reconciliation do), nor
//! touch the kernel maps.
//!
//! The kernel filters by state (only live ones: SYN_SENT, ESTABLISHED, FIN_WAIT1/2,
//! CLOSE_WAIT, LAST_ACK, CLOSING). Ports are filtered here, in userspace, after the dump:
//! `netlink-packet-sock-diag` 0.5 has no way to attach an INET_DIAG bytecode filter to its
//! request, and writing that bytecode by hand is what the crate is meant to save us.
//!
//! A netlink socket stays in the namespace it was created in. Another namespace is entered
//! from a short-lived thread (`setns(CLONE_NEWNET)` needs CAP_SYS_ADMIN), so readers are
//! opened while zkconn still holds its capabilities (at seeding) and kept for as long as
//! the namespace has processes. A namespace that appears after the capabilities were
//! dropped is read from `/proc/PID/net/tcp{,6}` instead.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{
    procfs::{Procfs, TcpSocket},
    targets::canonical_ip,
};

/// Why a socket table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// No NETLINK_SOCK_DIAG here (a kernel without `inet_diag`, or a sandbox that denies it).
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Open(#[source] io::Error),
    #[error("cannot enter the network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the INET_DIAG dump failed: {0}")]
    Io(#[source] io::Error),
    /// The kernel answered the dump with an error message (`tcp_diag` missing: ENOENT).
    #[error("the kernel refused the INET_DIAG dump: {0}")]
    Kernel(#[source] io::Error),
    #[error("cannot decode the kernel's INET_DIAG answer: {0}")]
    Decode(String),
}

/// The live states, and LISTEN (to tell accepted connections from connects: see
/// [`split_accepted`]), as the request's state mask.
fn live_states() -> StateFlags {
    StateFlags::LISTEN
        | StateFlags::SYN_SENT
        | StateFlags::ESTABLISHED
        | StateFlags::FIN_WAIT1
        | StateFlags::FIN_WAIT2
        | StateFlags::CLOSE_WAIT
        | StateFlags::LAST_ACK
        | StateFlags::CLOSING
}

/// One namespace's INET_DIAG reader.
pub struct Diag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Diag {
    /// A reader for the calling thread's network namespace.
    pub fn open() -> Result<Self, DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Open)?;
        socket.bind_auto().map_err(DiagError::Open)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(DiagError::Open)?;
        Ok(Diag {
            socket,
            seq: 0,
            // A dump datagram is at most 32 KiB (netlink_dump's allocation); a smaller
            // buffer would truncate it silently.
            buf: vec![0; 64 * 1024],
        })
    }

    /// A reader for the network namespace `netns` (a `/proc/PID/ns/net` path), opened from a
    /// thread that enters it and exits: the socket keeps the namespace it was made in.
    pub fn open_in(netns: &Path) -> Result<Self, DiagError> {
        let path = netns.to_path_buf();
        let entered = |source| DiagError::Netns {
            path: netns.to_path_buf(),
            source,
        };
        let thread = std::thread::Builder::new()
            .name("zkconn-netns".into())
            .spawn(move || -> Result<Diag, DiagError> {
                let file = File::open(&path).map_err(|source| DiagError::Netns {
                    path: path.clone(),
                    source,
                })?;
                // SAFETY: setns(2) moves only this thread, which does nothing else and
                // exits right after; `file` keeps the fd open for the call.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(DiagError::Netns {
                        path,
                        source: io::Error::last_os_error(),
                    });
                }
                Diag::open()
            })
            .map_err(entered)?;
        thread
            .join()
            .map_err(|_| entered(io::Error::other("the namespace thread panicked")))?
    }

    /// The live TCP sockets of this reader's namespace, IPv4 and IPv6, that `keep` accepts.
    pub fn dump(&mut self, keep: &dyn Fn(&TcpSocket) -> bool) -> Result<Vec<TcpSocket>, DiagError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            self.dump_family(family, keep, &mut out)?;
        }
        Ok(out)
    }

    fn dump_family(
        &mut self,
        family: u8,
        keep: &dyn Fn(&TcpSocket) -> bool,
        out: &mut Vec<TcpSocket>,
    ) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: live_states(),
                socket_id: if family == AF_INET {
                    SocketId::new_v4()
                } else {
                    SocketId::new_v6()
                },
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(DiagError::Io)?;

        loop {
            let size = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(DiagError::Io)?;
            if size > self.buf.len() {
                return Err(DiagError::Decode(format!(
                    "a {size}-byte datagram does not fit the {}-byte buffer",
                    self.buf.len()
                )));
            }
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|e| DiagError::Decode(e.to_string()))?;
                let length = message.header.length as usize;
                if message.header.sequence_number != self.seq {
                    // An answer to an earlier request that was abandoned part-way.
                    offset += length.max(1);
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        let socket = TcpSocket {
                            local: SocketAddr::new(
                                canonical_ip(h.socket_id.source_address),
                                h.socket_id.source_port,
                            ),
                            remote: SocketAddr::new(
                                canonical_ip(h.socket_id.destination_address),
                                h.socket_id.destination_port,
                            ),
                            state: h.state,
                            inode: u64::from(h.inode),
                            uid: h.uid,
                        };
                        if keep(&socket) {
                            out.push(socket);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(DiagError::Kernel(e.to_io())),
                    NetlinkPayload::Overrun(_) => {
                        return Err(DiagError::Decode("the kernel reported an overrun".into()));
                    }
                    _ => {}
                }
                if length == 0 {
                    return Err(DiagError::Decode("a zero-length netlink message".into()));
                }
                offset += length;
            }
        }
    }
}

/// The socket tables of every network namespace that has processes, one reader each.
#[derive(Default)]
pub struct Tables {
    readers: HashMap<u64, Diag>,
    /// Namespaces whose reader could not be opened: read from `/proc` (said once).
    fallback_said: bool,
    /// Processes whose namespace link could not be read, counted once each (not once per
    /// scan); forgotten when they exit.
    hidden: HashSet<u32>,
    /// Namespaces no reader could be opened in (read from `/proc`); forgotten when gone.
    unopenable: HashSet<u64>,
}

/// A listening socket: its address and socket inode (which process holds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// One read of every namespace's table.
#[derive(Debug, Default)]
pub struct Scan {
    /// The sockets `keep` accepted, each with its namespace's inode.
    pub sockets: Vec<(u64, TcpSocket)>,
    /// Connections a listener of the same namespace accepted that `keep_accepted` took
    /// (see [`Tables::scan_both`]), each with its namespace's inode.
    pub accepted: Vec<(u64, TcpSocket)>,
    /// Every listening socket (any port), each namespace's.
    pub listeners: Vec<Listening>,
    /// Namespaces read.
    pub namespaces: u64,
    /// Namespaces read from `/proc` rather than sock_diag.
    pub from_proc: u64,
    /// `/proc` entries or netlink dumps that failed for another reason than a process gone.
    pub unreadable: u64,
    /// A namespace with processes whose table could not be read at all: the scan does not
    /// show every socket, so nothing may be concluded from a socket's absence.
    pub incomplete: bool,
}

impl Tables {
    /// Processes whose network namespace could not be read at the last scan (reading
    /// another user's `/proc/PID/ns/net` needs CAP_SYS_PTRACE; a sandbox hides its init).
    pub fn hidden(&self) -> usize {
        self.hidden.len()
    }

    /// Reads every namespace that has a thread in it (`/proc/*/task/*/ns/net`: a thread may
    /// have entered another namespace than its process's, and a process whose main thread
    /// exited is reachable only through its other threads), each once. Readers of namespaces
    /// that no longer have threads are closed (a netlink socket would keep its namespace
    /// alive).
    pub fn scan(&mut self, procfs: &Procfs, keep: &dyn Fn(&TcpSocket) -> bool) -> Scan {
        self.scan_both(procfs, keep, &|_| false)
    }

    /// As [`Tables::scan`], and also the connections that listeners accepted which
    /// `keep_accepted` takes (this host's server side), in [`Scan::accepted`].
    pub fn scan_both(
        &mut self,
        procfs: &Procfs,
        keep: &dyn Fn(&TcpSocket) -> bool,
        keep_accepted: &dyn Fn(&TcpSocket) -> bool,
    ) -> Scan {
        let mut scan = Scan::default();
        let Ok(pids) = procfs.pids() else {
            scan.unreadable += 1;
            scan.incomplete = true;
            return scan;
        };
        let own = procfs.netns_of_self().ok();
        let mut done: HashSet<u64> = HashSet::new();
        let mut failed: HashSet<u64> = HashSet::new();
        let mut hidden: HashSet<u32> = HashSet::new();
        let threads = pids.into_iter().flat_map(|pid| {
            // A process gone meanwhile lists no threads; one whose task list cannot be read
            // is tried through its main thread (and counted there if that fails too).
            let tids = procfs.tasks(pid).unwrap_or_else(|_| vec![pid]);
            tids.into_iter().map(move |tid| (pid, tid))
        });
        for (pid, tid) in threads {
            let netns = match procfs.task_netns(pid, tid) {
                Ok(ns) => ns,
                Err(e) => {
                    // Which namespace it is in cannot be known (EACCES even for root, e.g. a
                    // sandbox's init): if it is alone there, that table is not read.
                    if e.kind() != io::ErrorKind::NotFound {
                        hidden.insert(pid);
                        if !self.hidden.contains(&pid) {
                            tracing::debug!("/proc/{pid}/ns/net unreadable: {e}");
                            scan.unreadable += 1;
                        }
                    }
                    continue;
                }
            };
            if done.contains(&netns) {
                continue;
            }
            let own = own == Some(netns);
            let keeps = (keep, keep_accepted);
            match self.read_one(procfs, pid, tid, netns, own, keeps, &mut scan) {
                Ok((sockets, accepted, listeners)) => {
                    scan.listeners.extend(listeners);
                    done.insert(netns);
                    failed.remove(&netns);
                    scan.sockets.extend(sockets.into_iter().map(|s| (netns, s)));
                    scan.accepted
                        .extend(accepted.into_iter().map(|s| (netns, s)));
                }
                Err(e) => {
                    // This namespace may have another process to read it through.
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::debug!("the socket table of /proc/{pid} unreadable: {e}");
                        scan.unreadable += 1;
                        failed.insert(netns);
                    }
                }
            }
        }
        self.readers.retain(|ns, _| done.contains(ns));
        self.unopenable.retain(|ns| done.contains(ns));
        self.hidden = hidden;
        scan.namespaces = done.len() as u64;
        scan.incomplete |= !failed.is_empty();
        scan
    }

    /// One namespace: its sock_diag reader (opened now if needed), else `/proc/PID/net`.
    /// Returns the connects `keep` takes and the accepted connections `keep_accepted` takes.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn read_one(
        &mut self,
        procfs: &Procfs,
        pid: u32,
        tid: u32,
        netns: u64,
        own: bool,
        (keep, keep_accepted): (&dyn Fn(&TcpSocket) -> bool, &dyn Fn(&TcpSocket) -> bool),
        scan: &mut Scan,
    ) -> io::Result<(Vec<TcpSocket>, Vec<TcpSocket>, Vec<Listening>)> {
        if let Entry::Vacant(slot) = self.readers.entry(netns)
            && !self.unopenable.contains(&netns)
        {
            let opened = if own {
                Diag::open()
            } else {
                Diag::open_in(&procfs.pid_file(pid, &format!("task/{tid}/ns/net")))
            };
            match opened {
                Ok(reader) => {
                    tracing::debug!("network namespace {netns} is read over sock_diag");
                    slot.insert(reader);
                }
                Err(e) => {
                    // Not retried while the namespace lives: after the capabilities are
                    // dropped, entering it fails the same way every time.
                    self.unopenable.insert(netns);
                    if !self.fallback_said {
                        self.fallback_said = true;
                        tracing::warn!(
                            "the socket table of network namespace {netns} is read from \
                             /proc/{pid}/net/tcp instead of sock_diag: {e}"
                        );
                    } else {
                        tracing::debug!("namespace {netns} from /proc: {e}");
                    }
                }
            }
        }
        let keep_or_listen = |s: &TcpSocket| {
            s.state == zkconn_common::tcp_state::LISTEN || keep(s) || keep_accepted(s)
        };
        let split = |sockets: Vec<TcpSocket>| {
            let listeners = sockets
                .iter()
                .filter(|s| s.state == zkconn_common::tcp_state::LISTEN)
                .map(|s| Listening {
                    addr: s.local,
                    inode: s.inode,
                })
                .collect();
            let (connects, accepted) = split_accepted(sockets);
            (
                connects.into_iter().filter(|s| keep(s)).collect(),
                accepted.into_iter().filter(|s| keep_accepted(s)).collect(),
                listeners,
            )
        };
        if let Some(reader) = self.readers.get_mut(&netns) {
            match reader.dump(&keep_or_listen) {
                Ok(sockets) => return Ok(split(sockets)),
                Err(e) => {
                    // Counted and said; the reader is reopened next time.
                    tracing::warn!("reading namespace {netns} over sock_diag failed: {e}");
                    scan.unreadable += 1;
                    self.readers.remove(&netns);
                }
            }
        }
        scan.from_proc += 1;
        let sockets = procfs.task_tcp_sockets(pid, tid)?;
        Ok(split(sockets.into_iter().filter(keep_or_listen).collect()))
    }
}

/// One namespace's sockets without its listeners, split into connects and the connections
/// the listeners accepted (local address and port a listener's, exactly or on the
/// wildcard): on a ZooKeeper server's host, an accepted connection whose client happened to
/// draw the watched port as its ephemeral port looks like a connect towards that port, and
/// is none.
fn split_accepted(sockets: Vec<TcpSocket>) -> (Vec<TcpSocket>, Vec<TcpSocket>) {
    use zkconn_common::tcp_state::LISTEN;
    let listening: HashSet<SocketAddr> = sockets
        .iter()
        .filter(|s| s.state == LISTEN)
        .map(|s| s.local)
        .collect();
    if listening.is_empty() {
        return (sockets, Vec::new());
    }
    let wildcard = |local: &SocketAddr| {
        let any = if local.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        SocketAddr::new(any, local.port())
    };
    sockets
        .into_iter()
        .filter(|s| s.state != LISTEN)
        .partition(|s| {
            !listening.contains(&s.local)
                && !listening.contains(&wildcard(&s.local))
                // An IPv4 connection accepted by a dual-stack IPv6 listener.
                && !listening.contains(&SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    s.local.port(),
                ))
        })
}

/// Whether a TCP state counts as a live connection (what the dump asks the kernel for).
pub fn is_live_state(state: u8) -> bool {
    use zkconn_common::tcp_state;
    matches!(
        state,
        tcp_state::SYN_SENT
            | tcp_state::ESTABLISHED
            | tcp_state::CLOSE_WAIT
            | tcp_state::FIN_WAIT1
            | tcp_state::FIN_WAIT2
            | tcp_state::CLOSING
            | tcp_state::LAST_ACK
    )
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use zkconn_common::tcp_state;

    use super::*;

    fn sock(local: &str, remote: &str, state: u8) -> TcpSocket {
        TcpSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            inode: 1,
            uid: 0,
        }
    }

    /// A connection a listener accepted is never taken for a connect, even when its client's
    /// ephemeral port is the watched one; a connect from an ephemeral port is kept.
    #[test]
    fn accepted_connections_are_told_from_connects() {
        use zkconn_common::tcp_state::{ESTABLISHED, LISTEN};
        let (kept, accepted) = split_accepted(vec![
            sock("127.0.0.4:47311", "0.0.0.0:0", LISTEN),
            sock("127.0.0.4:47311", "127.0.0.9:47311", ESTABLISHED),
            sock("[::]:2181", "[::]:0", LISTEN),
            sock("127.0.0.5:2181", "127.0.0.1:2181", ESTABLISHED),
            sock("127.0.0.9:47311", "127.0.0.4:47311", ESTABLISHED),
            sock("127.0.0.1:40000", "127.0.0.5:2181", ESTABLISHED),
        ]);
        let locals: Vec<String> = kept.iter().map(|s| s.local.to_string()).collect();
        assert_eq!(locals, ["127.0.0.9:47311", "127.0.0.1:40000"]);
        let accepted: Vec<String> = accepted.iter().map(|s| s.local.to_string()).collect();
        assert_eq!(accepted, ["127.0.0.4:47311", "127.0.0.5:2181"]);
    }

    #[rstest]
    #[case(tcp_state::SYN_SENT, true)]
    #[case(tcp_state::ESTABLISHED, true)]
    #[case(tcp_state::CLOSE_WAIT, true)]
    #[case(tcp_state::LAST_ACK, true)]
    #[case(tcp_state::TIME_WAIT, false)]
    #[case(tcp_state::LISTEN, false)]
    #[case(tcp_state::SYN_RECV, false)]
    #[case(tcp_state::CLOSE, false)]
    fn the_request_asks_for_the_live_states(#[case] state: u8, #[case] live: bool) {
        assert_eq!(is_live_state(state), live);
        // LISTEN too: listeners tell accepted connections apart.
        let asked = live || state == tcp_state::LISTEN;
        assert_eq!(live_states().bits() & (1 << state) != 0, asked);
    }

    /// Unprivileged and namespace-local: this test's own listening socket and a connection
    /// to it appear in the dump with their ports, state and inode.
    #[test]
    fn a_dump_finds_a_connection_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let local = client.local_addr().unwrap();
        let Ok(mut diag) = Diag::open() else {
            // No sock_diag in this sandbox: nothing to check.
            return;
        };
        let found = diag.dump(&|s| s.remote == addr).unwrap();
        let mine: Vec<_> = found.iter().filter(|s| s.local == local).collect();
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].state, tcp_state::ESTABLISHED);
        assert_ne!(mine[0].inode, 0);
    }
}
