//! Seeding: the ZooKeeper connections that existed before zkconn attached.
//!
//! Owns: finding them in every network namespace once (the kernel's socket table over
//! sock_diag, see [`crate::sockdiag`]; `/proc/PID/net/tcp{,6}` of one process per namespace
//! only where sock_diag cannot be used), their owners (`/proc/PID/fd` socket inodes), and
//! handing them to the kernel's `SEEDS` map, which adopts each at its next state change.
//! Drift repair ([`crate::reconcile`]) adopts sockets the same way ([`insert_seeds`]).
//! Must not: count twice. The hooks are attached first; a connection already tracked by
//! the kernel is skipped, and a second scan drops seeds that closed or that the kernel
//! picked up while seeding ran (see `seed`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
};

use anyhow::Context as _;
use zkconn_common::{
    COMM_LEN, Conn, Inbound, Owner, OwnerKey, Tuple, conn_flags, inbound_flags, tcp_state,
};

use crate::{
    probe::Probe,
    procfs::{CgroupPaths, ProcInfo, Procfs, TcpSocket},
    sockdiag::{Tables, is_live_state},
    targets::{Targets, ip_to_bytes},
};

/// What seeding did, for the snapshot's `probe.seeds`.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// Connections handed to the kernel (after dropping the ones that raced the start).
    pub seeded: u64,
    /// Same 4-tuple in two network namespaces: the kernel's seed key cannot tell them
    /// apart, so the second is not tracked (and counted here).
    pub conflicts: u64,
    /// ZooKeeper sockets whose owning process could not be found or read.
    pub ownerless: u64,
    /// `/proc` entries that existed but could not be read (permissions, races aside).
    pub unreadable: u64,
    /// Seeded connections per process.
    pub per_owner: HashMap<OwnerKey, u64>,
    /// Connections that existed at start but did not fit the kernel's seed table
    /// (`--max-connections`): not counted, and said so as overflow.
    pub overflow_connections: u64,
    /// Their processes that did not fit the kernel's process table (`--max-processes`):
    /// counted under the unknown owner, and said so as overflow.
    pub overflow_processes: u64,
    /// What `/proc` said of each seeded process while it was being read, for attribution.
    pub infos: HashMap<OwnerKey, ProcInfo>,
    /// Accepted connections on watched ports (this host's server side) handed to the kernel.
    pub seeded_inbound: u64,
    /// Accepted connections that existed at start but did not fit the kernel's seed table.
    pub overflow_inbound: u64,
    /// The listening sockets found (any port), to tell which listener accepted what.
    pub listeners: Vec<crate::sockdiag::Listening>,
}

pub fn tuple_of(s: &TcpSocket) -> Tuple {
    Tuple {
        saddr: ip_to_bytes(s.local.ip()),
        daddr: ip_to_bytes(s.remote.ip()),
        sport: s.local.port(),
        dport: s.remote.port(),
        _pad: 0,
    }
}

/// Not-found is a process that exited while we looked: not an error worth counting.
fn count_unreadable(report: &mut SeedReport, e: &io::Error) {
    if e.kind() != io::ErrorKind::NotFound {
        report.unreadable += 1;
    }
}

/// Which process holds each socket inode, from one walk over every `/proc/PID/fd`: the
/// earliest-started holder (a forked child inherits its parent's sockets; the parent made
/// them), with its start time and the descriptor it holds the socket by.
pub struct FdWalk {
    holders: HashMap<u64, (u64, u32)>,
    fds: HashMap<u64, u32>,
    /// `/proc` entries that existed but could not be read.
    unreadable: u64,
}

impl FdWalk {
    /// Walks every process's descriptors, keeping the sockets in `wanted` (every socket
    /// without it).
    pub fn run(procfs: &Procfs, wanted: Option<&HashSet<u64>>) -> io::Result<Self> {
        let mut walk = FdWalk {
            holders: HashMap::new(),
            fds: HashMap::new(),
            unreadable: 0,
        };
        for pid in procfs.pids()? {
            let inodes = match procfs.socket_fds(pid) {
                Ok(i) => i,
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        walk.unreadable += 1;
                    }
                    continue;
                }
            };
            let start = procfs.start_ns(pid).unwrap_or(u64::MAX);
            for (fd, inode) in inodes
                .into_iter()
                .filter(|(_, i)| wanted.is_none_or(|w| w.contains(i)))
            {
                let entry = walk.holders.entry(inode).or_insert((start, pid));
                if (start, pid) <= *entry {
                    *entry = (start, pid);
                    walk.fds.insert(inode, fd);
                }
            }
        }
        Ok(walk)
    }

    /// The walk of every socket, on a thread: started before the programs load (a tenth of
    /// a second), so seeding finds its holders already walked. `None` when no thread could
    /// be started (seeding walks then).
    pub fn in_background(procfs: Procfs) -> Option<std::thread::JoinHandle<io::Result<Self>>> {
        std::thread::Builder::new()
            .name("zkconn-fd-walk".into())
            .spawn(move || Self::run(&procfs, None))
            .ok()
    }

    /// Whether this walk names a holder for each of `wanted` that still holds it by the
    /// same descriptor (it may have closed it, or passed it on), each holder still the
    /// process it was (same start time: a pid may have been reused since). One `readlink`
    /// per socket, not one per descriptor of every process.
    fn covers(&self, wanted: &HashSet<u64>, procfs: &Procfs) -> bool {
        let mut pids: HashMap<u32, u64> = HashMap::new();
        for inode in wanted {
            let (Some(&(start, pid)), Some(&fd)) = (self.holders.get(inode), self.fds.get(inode))
            else {
                return false;
            };
            if !procfs.holds_socket(pid, fd, *inode) {
                return false;
            }
            pids.insert(pid, start);
        }
        pids.into_iter()
            .all(|(pid, start)| procfs.start_ns(pid) == Some(start))
    }
}

/// Target sockets of every network namespace, each namespace read once.
fn scan_sockets(
    tables: &mut Tables,
    procfs: &Procfs,
    targets: &Targets,
    report: &mut SeedReport,
) -> Vec<TcpSocket> {
    scan_with_accepted(tables, procfs, targets, false, report).0
}

/// Target sockets of every network namespace, and (with `inbound`) the connections this
/// host's listeners on watched ports accepted that the server has not let go (ESTABLISHED
/// or CLOSE_WAIT, what the kernel follows), each namespace read once.
fn scan_with_accepted(
    tables: &mut Tables,
    procfs: &Procfs,
    targets: &Targets,
    inbound: bool,
    report: &mut SeedReport,
) -> (Vec<TcpSocket>, Vec<TcpSocket>) {
    let scan = tables.scan_both(
        procfs,
        &|s| is_live_state(s.state) && targets.matches(s.remote),
        &|s| inbound && is_followed_accepted(targets, s),
    );
    report.unreadable += scan.unreadable;
    report.listeners = scan.listeners;
    (
        scan.sockets.into_iter().map(|(_, s)| s).collect(),
        scan.accepted.into_iter().map(|(_, s)| s).collect(),
    )
}

/// Whether `s`, a connection a listener accepted, is one the server's side follows: on a
/// watched endpoint, and not let go by the server yet (ESTABLISHED or CLOSE_WAIT).
pub fn is_followed_accepted(targets: &Targets, s: &TcpSocket) -> bool {
    matches!(s.state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT) && targets.matches(s.local)
}

/// The kernel's accepted connections by tuple, and whether each is a seed it adopted.
fn inbound_tracked(probe: &mut Probe) -> anyhow::Result<HashMap<Tuple, bool>> {
    Ok(probe
        .read()?
        .inbound
        .iter()
        .map(|r| (r.tuple, r.flags & inbound_flags::SEEDED != 0))
        .collect())
}

/// Hands the accepted connections in `accepted` that the kernel does not follow yet to its
/// seed table (as ESTABLISHED or CLOSE_WAIT, with no handshake time). Returns the tuples
/// that went in.
pub fn insert_inbound_seeds(
    probe: &mut Probe,
    accepted: &[TcpSocket],
    report: &mut SeedReport,
) -> anyhow::Result<Vec<Tuple>> {
    let tracked = inbound_tracked(probe)?;
    let mut inserted = Vec::new();
    let now = crate::clock::now_boot_ns();
    for socket in accepted {
        let tuple = tuple_of(socket);
        if tracked.contains_key(&tuple) || inserted.contains(&tuple) {
            continue;
        }
        if inserted.is_empty() {
            // Before the first seed goes in: from now on the kernel looks for them.
            probe.set_inbound_seeds_pending(true)?;
        }
        let fits = probe.insert_inbound_seed(Inbound {
            tuple,
            established_ns: 0,
            changed_ns: now,
            state: socket.state,
            flags: inbound_flags::SEEDED,
            _pad: [0; 6],
        })?;
        if fits {
            inserted.push(tuple);
        } else {
            report.overflow_inbound += 1;
        }
    }
    Ok(inserted)
}

/// The second look at the accepted connections seeded (see `seed`): a seed whose socket
/// closed before it went in would stay forever; one the kernel followed from its own
/// handshake meanwhile would count twice.
fn confirm_inbound_seeds(
    probe: &mut Probe,
    inserted: &[Tuple],
    still_open: &HashSet<Tuple>,
    report: &mut SeedReport,
) -> anyhow::Result<()> {
    if inserted.is_empty() {
        return Ok(());
    }
    let tracked = inbound_tracked(probe)?;
    for tuple in inserted {
        if tracked.get(tuple) == Some(&false) {
            probe.remove_inbound_seed(tuple)?;
            continue;
        }
        if !still_open.contains(tuple) && probe.remove_inbound_seed(tuple)? {
            continue;
        }
        report.seeded_inbound += 1;
    }
    Ok(())
}

/// The processes holding each of `wanted` now (file descriptors, not the connector): for
/// connections whose connector exited while a forked child, or a process it passed the
/// socket to, keeps them open. Also returns how many `/proc` entries could not be read.
pub fn holders(
    tables: &mut Tables,
    procfs: &Procfs,
    targets: &Targets,
    wanted: &HashSet<Tuple>,
) -> (HashMap<Tuple, Vec<u32>>, u64) {
    let mut report = SeedReport::default();
    let mut by_inode: HashMap<u64, Tuple> = HashMap::new();
    for socket in scan_sockets(tables, procfs, targets, &mut report) {
        let tuple = tuple_of(&socket);
        if wanted.contains(&tuple) {
            by_inode.insert(socket.inode, tuple);
        }
    }
    let mut out: HashMap<Tuple, Vec<u32>> = HashMap::new();
    if by_inode.is_empty() {
        return (out, report.unreadable);
    }
    let pids = procfs.pids().unwrap_or_else(|_| {
        report.unreadable += 1;
        Vec::new()
    });
    for pid in pids {
        match procfs.socket_inodes(pid) {
            Ok(inodes) => {
                for tuple in inodes.iter().filter_map(|i| by_inode.get(i)) {
                    out.entry(*tuple).or_default().push(pid);
                }
            }
            Err(e) => count_unreadable(&mut report, &e),
        }
    }
    (out, report.unreadable)
}

/// What the kernel records of a process at its first connect ([`Owner`]), from what `/proc`
/// said of it: for processes found by seeding, drift repair or the poll hook.
pub fn owner_record(info: &ProcInfo, cgroups: &CgroupPaths) -> Owner {
    let mut comm = [0u8; COMM_LEN];
    for (dst, src) in comm.iter_mut().zip(info.comm.bytes().take(COMM_LEN - 1)) {
        *dst = src;
    }
    Owner {
        birth_ns: info.start_ns,
        cgroup_id: info.cgroup_v2().and_then(|p| cgroups.id_of(p)).unwrap_or(0),
        uid: info.uid,
        gid: 0,
        comm,
    }
}

/// The connections the kernel tracks from their own connect, to tell them from the ones that
/// predate it.
///
/// While seeding runs, the kernel records each connect's socket inode, which `/proc` and
/// sock_diag report too: a socket is the kernel's exactly when its inode is. Without the
/// inode (no BTF to find it), a connect seen by a state tracepoint is recorded before its
/// source port is chosen, so until it leaves SYN_SENT the kernel's row has source port 0
/// while `/proc` already shows the port: such rows are matched by (local address, server),
/// one `/proc` socket each — which of several such sockets is the kernel's cannot then be
/// told, and a seed may go to the wrong one: the kernel drops it at that socket's first
/// state change, and the older socket goes uncounted.
pub struct Tracked {
    inodes: HashSet<u64>,
    full: HashSet<Tuple>,
    connecting: HashMap<Tuple, u32>,
}

impl Tracked {
    pub fn new(conns: &[Conn]) -> Self {
        let mut inodes = HashSet::new();
        let mut full = HashSet::new();
        let mut connecting: HashMap<Tuple, u32> = HashMap::new();
        for c in conns {
            if c.ino != 0 {
                inodes.insert(c.ino);
                if c.tuple.sport != 0 {
                    full.insert(c.tuple);
                }
            } else if c.tuple.sport == 0 {
                *connecting.entry(c.tuple).or_default() += 1;
            } else {
                full.insert(c.tuple);
            }
        }
        Tracked {
            inodes,
            full,
            connecting,
        }
    }

    /// Whether the kernel tracks the socket `tuple` (in `state`, with inode `ino`), using up
    /// a port-less row.
    pub fn take(&mut self, tuple: &Tuple, state: u8, ino: u64) -> bool {
        if self.inodes.contains(&ino) || self.full.contains(tuple) {
            return true;
        }
        if state != tcp_state::SYN_SENT {
            return false;
        }
        let key = Tuple { sport: 0, ..*tuple };
        match self.connecting.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// Seeds the kernel with connections that predate it. Call after the hooks are attached;
/// `walk` is [`FdWalk::in_background`]'s, started before them.
pub fn seed(
    probe: &mut Probe,
    tables: &mut Tables,
    procfs: &Procfs,
    cgroups: &CgroupPaths,
    targets: &Targets,
    walk: Option<std::thread::JoinHandle<io::Result<FdWalk>>>,
) -> anyhow::Result<SeedReport> {
    let mut lap = crate::clock::Lap::new("seeding");
    let mut report = SeedReport::default();
    let inbound = probe.inbound();
    let (sockets, accepted) = scan_with_accepted(tables, procfs, targets, inbound, &mut report);
    lap.at("socket tables read");
    if sockets.is_empty() && accepted.is_empty() {
        return Ok(report);
    }
    let inserted_inbound = insert_inbound_seeds(probe, &accepted, &mut report)?;
    if sockets.is_empty() {
        let mut again = SeedReport::default();
        let (_, still) = scan_with_accepted(tables, procfs, targets, inbound, &mut again);
        report.listeners = again.listeners;
        let still_open: HashSet<Tuple> = still.iter().map(tuple_of).collect();
        confirm_inbound_seeds(probe, &inserted_inbound, &still_open, &mut report)?;
        return Ok(report);
    }
    let mut tracked = Tracked::new(&probe.read()?.conns);
    lap.at("kernel rows read");
    let mut chosen: BTreeMap<Tuple, &TcpSocket> = BTreeMap::new();
    for socket in &sockets {
        let tuple = tuple_of(socket);
        if tracked.take(&tuple, socket.state, socket.inode) {
            continue;
        }
        if chosen.insert(tuple, socket).is_some() {
            report.conflicts += 1;
        }
    }
    let chosen: Vec<&TcpSocket> = chosen.into_values().collect();
    // A walk that failed (or whose thread did) is made again, here.
    let walked = walk.and_then(|t| t.join().ok()).and_then(Result::ok);
    lap.at("the walk over /proc/PID/fd joined");
    let inserted = insert_seeds(probe, procfs, cgroups, &chosen, walked, &mut report)?;
    lap.at("owners read, seeds inserted");

    // Second look: a seed whose socket closed before it was inserted would stay forever,
    // and one the kernel tracked meanwhile would count twice. Any change after this point
    // is seen by the kernel itself (it adopts or drops the seed at the next transition).
    let mut again = SeedReport::default();
    let (still, still_accepted) = scan_with_accepted(tables, procfs, targets, inbound, &mut again);
    report.listeners = std::mem::take(&mut again.listeners);
    let still_open: HashSet<Tuple> = still.iter().map(tuple_of).collect();
    let still_accepted: HashSet<Tuple> = still_accepted.iter().map(tuple_of).collect();
    lap.at("socket tables read again");
    confirm_inbound_seeds(probe, &inserted_inbound, &still_accepted, &mut report)?;
    let mut tracked = Tracked::new(&probe.read()?.conns);
    for (tuple, (owner, ino)) in &inserted {
        // Tracked by the kernel's own connect: not a seed, whoever removed the entry.
        if tracked.take(tuple, tcp_state::ESTABLISHED, *ino) {
            probe.remove_seed(tuple)?;
            continue;
        }
        // Closed before or while seeding: if we still find the entry, the kernel never
        // counted it; if it is gone, the kernel adopted it and counted its close.
        if !still_open.contains(tuple) && probe.remove_seed(tuple)? {
            continue;
        }
        report.seeded += 1;
        *report.per_owner.entry(*owner).or_default() += 1;
    }
    lap.at("seeds that raced the start dropped");
    Ok(report)
}

/// Hands `sockets` (one per tuple, none tracked by the kernel) to the kernel's seed table,
/// each with its owner: the earliest-started process holding it (a forked child inherits
/// its parent's sockets; the parent made them). Sockets without a readable holder go in
/// under [`OwnerKey::UNKNOWN`] (counted per server like any other, and as `ownerless`).
/// Returns what went in.
///
/// `walked`: a walk over `/proc` made a moment before (see [`FdWalk::in_background`]), used
/// when it still names a holder for every socket, each the same process; else the walk is
/// made again here.
pub fn insert_seeds(
    probe: &mut Probe,
    procfs: &Procfs,
    cgroups: &CgroupPaths,
    sockets: &[&TcpSocket],
    walked: Option<FdWalk>,
    report: &mut SeedReport,
) -> anyhow::Result<BTreeMap<Tuple, (OwnerKey, u64)>> {
    let mut inserted: BTreeMap<Tuple, (OwnerKey, u64)> = BTreeMap::new();
    if sockets.is_empty() {
        return Ok(inserted);
    }
    // Before the first seed goes in: from now on the kernel looks for seeds.
    probe.set_seeds_pending(true)?;
    let wanted: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let walk = match walked.filter(|w| w.covers(&wanted, procfs)) {
        Some(w) => w,
        None => FdWalk::run(procfs, Some(&wanted)).context("cannot list /proc")?,
    };
    report.unreadable += walk.unreadable;
    let holders = walk.holders;
    let mut owners: HashMap<u32, (OwnerKey, u64, u32)> = HashMap::new();
    let now = crate::clock::now_boot_ns();
    for socket in sockets {
        let tuple = tuple_of(socket);
        let holder = holders.get(&socket.inode).map(|&(_, pid)| pid);
        let known = match holder {
            None => None,
            Some(pid) => match owners.get(&pid) {
                Some(o) => Some(*o),
                None => match procfs.process(pid) {
                    Ok(info) => {
                        let record = owner_record(&info, cgroups);
                        let cgroup_id = record.cgroup_id;
                        match probe.insert_owner(pid, record)? {
                            Some(key) => {
                                let uid = info.uid;
                                owners.insert(pid, (key, cgroup_id, uid));
                                report.infos.insert(key, info);
                                Some((key, cgroup_id, uid))
                            }
                            None => {
                                report.overflow_processes += 1;
                                None
                            }
                        }
                    }
                    Err(e) => {
                        count_unreadable(report, &e);
                        None
                    }
                },
            },
        };
        let (owner, cgroup_id, uid) = known.unwrap_or_else(|| {
            report.ownerless += 1;
            (OwnerKey::UNKNOWN, 0, u32::MAX)
        });
        let pid = holder.unwrap_or(0);
        let connecting = socket.state == tcp_state::SYN_SENT;
        let flags = conn_flags::SEEDED
            | if connecting {
                0
            } else {
                conn_flags::ESTABLISHED
            };
        let fits = probe.insert_seed(Conn {
            tuple,
            owner,
            cgroup_id,
            opened_ns: now,
            changed_ns: now,
            established_ns: if connecting { 0 } else { now },
            ino: socket.inode,
            tid: pid,
            uid,
            state: socket.state,
            flags,
            _pad: [0; 6],
        })?;
        if !fits {
            report.overflow_connections += 1;
            continue;
        }
        inserted.insert(tuple, (owner, socket.inode));
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn conn(sport: u16, dport: u16) -> Conn {
        Conn {
            tuple: tuple(sport, dport),
            ..Conn::default()
        }
    }

    fn tuple(sport: u16, dport: u16) -> Tuple {
        Tuple {
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            daddr: ip_to_bytes("127.0.0.9".parse().unwrap()),
            sport,
            dport,
            _pad: 0,
        }
    }

    fn with_ino(ino: u64) -> Conn {
        Conn {
            ino,
            ..conn(0, 2181)
        }
    }

    /// A fixture process `pid` started at `start` ticks (100 a second) holding `inodes`.
    fn fixture(root: &std::path::Path, pid: u32, start: u64, inodes: &[u64]) {
        let p = root.join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::write(
            p.join("stat"),
            format!("{pid} (x) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0"),
        )
        .unwrap();
        for (fd, inode) in inodes.iter().enumerate() {
            std::os::unix::fs::symlink(format!("socket:[{inode}]"), p.join(format!("fd/{fd}")))
                .unwrap();
        }
    }

    /// The walk made before the programs load names the earliest-started holder of every
    /// socket; seeding uses it only while it names a holder for each socket it seeds, each
    /// still the process it was.
    #[test]
    fn an_earlier_walk_is_used_only_while_it_still_holds() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path(), 10, 5, &[7]);
        fixture(dir.path(), 11, 3, &[7, 8]);
        let procfs = Procfs::at(dir.path(), 100);
        let walk = FdWalk::run(&procfs, None).unwrap();
        assert_eq!(walk.holders.get(&7), Some(&(30_000_000, 11)));
        assert_eq!(walk.holders.get(&8), Some(&(30_000_000, 11)));
        let set = |i: &[u64]| i.iter().copied().collect::<HashSet<u64>>();
        assert!(walk.covers(&set(&[7, 8]), &procfs));
        // A socket made after the walk.
        assert!(!walk.covers(&set(&[7, 9]), &procfs));
        // Its holder closed it (or passed it on) since.
        std::fs::remove_file(dir.path().join("11/fd/1")).unwrap();
        assert!(!walk.covers(&set(&[8]), &procfs));
        assert!(walk.covers(&set(&[7]), &procfs));
        // Its holder exited and the pid went to a newer process.
        std::fs::remove_dir_all(dir.path().join("11")).unwrap();
        fixture(dir.path(), 11, 900, &[]);
        assert!(!walk.covers(&set(&[7]), &procfs));
        // Walked for the wanted sockets only, the new holder of 7 is the earliest left.
        let again = FdWalk::run(&procfs, Some(&set(&[7]))).unwrap();
        assert_eq!(again.holders.len(), 1);
        assert_eq!(again.holders.get(&7), Some(&(50_000_000, 10)));
    }

    #[rstest]
    // A full tuple matches in any state.
    #[case(&[conn(40000, 2181)], &[(40000, tcp_state::ESTABLISHED)], &[true])]
    // With inodes, exactly the kernel's sockets match, whatever their order.
    #[case(&[with_ino(40002)], &[(40001, tcp_state::SYN_SENT), (40002, tcp_state::SYN_SENT)], &[false, true])]
    // A kernel row still without its port stands for one connecting socket only.
    #[case(&[conn(0, 2181)], &[(40000, tcp_state::SYN_SENT), (40001, tcp_state::SYN_SENT)], &[true, false])]
    // ... never for an established one (that row would carry its port).
    #[case(&[conn(0, 2181)], &[(40000, tcp_state::ESTABLISHED)], &[false])]
    // ... and only towards the same server.
    #[case(&[conn(0, 2182)], &[(40000, tcp_state::SYN_SENT)], &[false])]
    #[case(&[], &[(40000, tcp_state::SYN_SENT)], &[false])]
    fn tracked_sockets_are_told_from_older_ones(
        #[case] conns: &[Conn],
        #[case] sockets: &[(u16, u8)],
        #[case] expected: &[bool],
    ) {
        let mut tracked = Tracked::new(conns);
        let got: Vec<bool> = sockets
            .iter()
            // The tests' sockets have their source port as inode.
            .map(|&(sport, state)| tracked.take(&tuple(sport, 2181), state, u64::from(sport)))
            .collect();
        assert_eq!(got, expected);
    }
}
