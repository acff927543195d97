//! The `poll` hook, for hosts where no BPF hook can load (kernels before 4.16 such as
//! CentOS 7's 3.10, lockdown, policies that forbid BPF): each sample reads every network
//! namespace's socket table over sock_diag ([`crate::sockdiag`]), finds the holders of
//! sockets it has not seen yet in `/proc`, and turns the differences between samples into the
//! rows the kernel programs keep ([`KernelState`]), so everything after it works unchanged.
//!
//! Owns: the connection table between samples and the counters derived from it.
//! Must not: claim what it cannot see. A connection that opens and closes between two
//! samples is never seen, a connect seen only once established counts as opened but its
//! `SYN_SENT` time is unknown, and refusals are not recognised: [`LIMITATION`] says so in
//! every output.

use std::collections::{HashMap, HashSet};

use zkconn_common::{Conn, Counters, Owner, OwnerKey, ServerKey, Tuple, conn_flags};

use crate::{
    clock::now_boot_ns,
    probe::KernelState,
    procfs::{CgroupPaths, Procfs},
    seed::{owner_record, tuple_of},
    sockdiag::{Tables, is_live_state},
    targets::Targets,
};

/// What the poll hook cannot see, as every output states it.
pub const LIMITATION: &str = "hook poll samples the kernel's socket tables each second \
     instead of hooking the kernel: connections that open and close between two samples are \
     not seen, refusals are not recognised, and a socket held by several processes counts \
     for the oldest holder, not necessarily the one that connected";

/// A socket is the same connection while its inode and 4-tuple are (an inode number can be
/// reused once its socket is gone).
type Key = (u64, Tuple);

#[derive(Default)]
pub struct Poller {
    conns: HashMap<Key, Conn>,
    proc_stats: HashMap<OwnerKey, Counters>,
    cgroup_stats: HashMap<u64, Counters>,
    server_stats: HashMap<ServerKey, Counters>,
    /// Processes holding connections, as `/proc` described them when first seen.
    owners: HashMap<u32, Owner>,
    /// Connections found by the first sample (they predate zkconn), per owner.
    pub seeded: HashMap<OwnerKey, u64>,
    /// Connections whose holder could not be found or read: counted under
    /// [`OwnerKey::UNKNOWN`].
    pub ownerless: u64,
    /// `/proc` entries and socket tables that could not be read.
    pub unreadable: u64,
    sampled: bool,
    /// Reads so far: each one's `rows_version`.
    polls: u64,
}

impl Poller {
    /// Forgets the counters of a removed cgroup (see the engine's retention).
    pub fn forget_cgroup(&mut self, id: u64) {
        self.cgroup_stats.remove(&id);
    }

    /// Forgets the counters of an exited owner (see the engine's retention).
    pub fn forget_owner(&mut self, key: &OwnerKey) {
        self.proc_stats.remove(key);
    }

    /// One sample: the socket tables now, compared with the last sample.
    pub fn read(
        &mut self,
        tables: &mut Tables,
        procfs: &Procfs,
        cgroups: &CgroupPaths,
        targets: &Targets,
    ) -> KernelState {
        let scan = tables.scan(procfs, &|s| {
            s.inode != 0 && is_live_state(s.state) && targets.matches(s.remote)
        });
        self.unreadable += scan.unreadable;
        self.polls += 1;
        let now = now_boot_ns();
        let first = !self.sampled;
        self.sampled = true;

        let mut seen: HashSet<Key> = HashSet::new();
        let mut new: Vec<(Key, u8)> = Vec::new();
        for (_, socket) in &scan.sockets {
            let key = (socket.inode, tuple_of(socket));
            seen.insert(key);
            match self.conns.get_mut(&key) {
                Some(conn) => {
                    if conn.state != socket.state {
                        transition(
                            conn,
                            socket.state,
                            now,
                            &mut self.proc_stats,
                            &mut self.cgroup_stats,
                        );
                    }
                }
                None => new.push((key, socket.state)),
            }
        }
        if !new.is_empty() {
            let wanted: HashSet<u64> = new.iter().map(|((inode, _), _)| *inode).collect();
            let holders = self.holders(procfs, &wanted);
            for (key, state) in new {
                let (owner, cgroup_id, uid, tid) = match holders.get(&key.0) {
                    Some(&pid) => match self.owner(procfs, cgroups, pid) {
                        Some((owner, cgroup_id, uid)) => (owner, cgroup_id, uid, pid),
                        None => self.unknown(),
                    },
                    None => self.unknown(),
                };
                let established = state != zkconn_common::tcp_state::SYN_SENT;
                let mut flags = if established {
                    conn_flags::ESTABLISHED
                } else {
                    0
                };
                if first {
                    flags |= conn_flags::SEEDED;
                    *self.seeded.entry(owner).or_default() += 1;
                } else {
                    for c in self.counters(&owner, cgroup_id, &key.1) {
                        c.opened += 1;
                    }
                }
                self.conns.insert(
                    key,
                    Conn {
                        tuple: key.1,
                        owner,
                        cgroup_id,
                        opened_ns: now,
                        changed_ns: now,
                        established_ns: if established { now } else { 0 },
                        ino: key.0,
                        tid,
                        uid,
                        state,
                        flags,
                        _pad: [0; 6],
                    },
                );
            }
        }
        // A table that could not be read says nothing about its sockets' absence.
        if !scan.incomplete {
            let gone: Vec<Key> = self
                .conns
                .keys()
                .filter(|k| !seen.contains(k))
                .copied()
                .collect();
            for key in gone {
                if let Some(conn) = self.conns.remove(&key) {
                    let closed = conn.flags & conn_flags::ESTABLISHED != 0;
                    for c in self.counters(&conn.owner, conn.cgroup_id, &conn.tuple) {
                        if closed {
                            c.closed += 1;
                        } else {
                            c.failed += 1;
                        }
                    }
                }
            }
        }
        let live: HashSet<u32> = self.conns.values().map(|c| c.owner.tgid).collect();
        self.owners.retain(|pid, _| live.contains(pid));
        KernelState {
            conns: std::sync::Arc::new(self.conns.values().copied().collect()),
            seeds: std::sync::Arc::default(),
            // Every poll is a new reading.
            rows_version: self.polls,
            owners: self.owners.clone(),
            proc_stats: self.proc_stats.iter().map(|(k, v)| (*k, *v)).collect(),
            cgroup_stats: self.cgroup_stats.iter().map(|(k, v)| (*k, *v)).collect(),
            server_stats: self.server_stats.iter().map(|(k, v)| (*k, *v)).collect(),
            counters: Default::default(),
            recursion_misses: None,
            // Polling follows connects only, not the server's side.
            ..KernelState::default()
        }
    }

    fn unknown(&mut self) -> (OwnerKey, u64, u32, u32) {
        self.ownerless += 1;
        (OwnerKey::UNKNOWN, 0, u32::MAX, 0)
    }

    /// The counter rows a connection adds to: its owner's, its cgroup's, its server's.
    fn counters(&mut self, owner: &OwnerKey, cgroup_id: u64, t: &Tuple) -> [&mut Counters; 3] {
        let server = ServerKey {
            daddr: t.daddr,
            saddr: t.saddr,
            dport: t.dport,
            _pad: [0; 6],
        };
        [
            self.proc_stats.entry(*owner).or_default(),
            self.cgroup_stats.entry(cgroup_id).or_default(),
            self.server_stats.entry(server).or_default(),
        ]
    }

    /// The earliest-started process holding each of `wanted` (a forked child inherits its
    /// parent's sockets; the parent made them).
    fn holders(&mut self, procfs: &Procfs, wanted: &HashSet<u64>) -> HashMap<u64, u32> {
        let mut best: HashMap<u64, (u64, u32)> = HashMap::new();
        let Ok(pids) = procfs.pids() else {
            self.unreadable += 1;
            return HashMap::new();
        };
        for pid in pids {
            let inodes = match procfs.socket_inodes(pid) {
                Ok(i) => i,
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        self.unreadable += 1;
                    }
                    continue;
                }
            };
            let start = procfs.start_ns(pid).unwrap_or(u64::MAX);
            for inode in inodes.into_iter().filter(|i| wanted.contains(i)) {
                let entry = best.entry(inode).or_insert((start, pid));
                if (start, pid) < *entry {
                    *entry = (start, pid);
                }
            }
        }
        best.into_iter()
            .map(|(inode, (_, pid))| (inode, pid))
            .collect()
    }

    /// The identity of process `pid` (its key, cgroup id and uid), read once while it holds
    /// connections.
    fn owner(
        &mut self,
        procfs: &Procfs,
        cgroups: &CgroupPaths,
        pid: u32,
    ) -> Option<(OwnerKey, u64, u32)> {
        if let Some(o) = self.owners.get(&pid) {
            return Some((
                OwnerKey {
                    tgid: pid,
                    _pad: 0,
                    birth_ns: o.birth_ns,
                },
                o.cgroup_id,
                o.uid,
            ));
        }
        let info = match procfs.process(pid) {
            Ok(info) => info,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.unreadable += 1;
                }
                return None;
            }
        };
        let record = owner_record(&info, cgroups);
        let cgroup_id = record.cgroup_id;
        self.owners.insert(pid, record);
        Some((
            OwnerKey {
                tgid: pid,
                _pad: 0,
                birth_ns: info.start_ns,
            },
            cgroup_id,
            info.uid,
        ))
    }
}

/// A state change seen between two samples, counted as the kernel programs count it.
fn transition(
    conn: &mut Conn,
    state: u8,
    now: u64,
    proc_stats: &mut HashMap<OwnerKey, Counters>,
    cgroup_stats: &mut HashMap<u64, Counters>,
) {
    use zkconn_common::tcp_state;
    if state != tcp_state::SYN_SENT && conn.flags & conn_flags::ESTABLISHED == 0 {
        conn.flags |= conn_flags::ESTABLISHED;
        conn.established_ns = now;
    }
    if state == tcp_state::CLOSE_WAIT {
        proc_stats.entry(conn.owner).or_default().close_wait += 1;
        cgroup_stats.entry(conn.cgroup_id).or_default().close_wait += 1;
    }
    conn.state = state;
    conn.changed_ns = now;
}
