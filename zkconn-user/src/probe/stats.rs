//! The kernel counts each transition once, in one row per (process, cgroup, server budget)
//! ([`map_names::STATS`](zkconn_common::map_names::STATS)); the per-process, per-cgroup
//! and per-server counters the views need are sums over those rows.
//!
//! Owns: those sums, and the counts of rows userspace deleted (a retired process's or
//! cgroup's) that still belong to what lives on: a retired process's rows stay in its
//! cgroup's and its servers' counters, a retired cgroup's in its processes' and servers'.
//! Must not: touch the kernel's maps (the probe deletes, then reports here).

use std::collections::HashMap;

use zkconn_common::{Counters, OwnerKey, ServerKey, StatsKey};

/// The counter rows as last read, and what deleted rows left behind.
#[derive(Debug, Default)]
pub struct StatsRows {
    /// The kernel's rows at the last reading, less those deleted since.
    last: Vec<(StatsKey, Counters)>,
    /// The kernel's spill rows (no process: counted while `STATS` was full).
    spill: Vec<(StatsKey, Counters)>,
    /// Counts of deleted rows, per what they still count for.
    owners: HashMap<OwnerKey, Counters>,
    cgroups: HashMap<u64, Counters>,
    servers: HashMap<ServerKey, Counters>,
}

/// What a deleted row was deleted for: its other two parts keep its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retiring {
    Owner,
    Cgroup,
}

/// The per-process, per-cgroup and per-server counters.
pub type Sums = (
    Vec<(OwnerKey, Counters)>,
    Vec<(u64, Counters)>,
    Vec<(ServerKey, Counters)>,
);

impl StatsRows {
    /// The kernel's rows and spill rows as just read.
    pub fn set(&mut self, rows: Vec<(StatsKey, Counters)>, spill: Vec<(StatsKey, Counters)>) {
        self.last = rows;
        self.spill = spill;
    }

    /// The keys of cgroup `id`'s spill rows, as last read.
    pub fn spill_of(&self, id: u64) -> Vec<StatsKey> {
        self.spill
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.cgroup_id == id)
            .collect()
    }

    /// Spill row `key` of a retiring cgroup was deleted with `counts` its last values: its
    /// server keeps them.
    pub fn spill_deleted(&mut self, key: &StatsKey, counts: &Counters) {
        self.spill.retain(|(k, _)| k != key);
        self.servers.entry(key.server).or_default().add(counts);
    }

    /// The keys of the rows of process `owner` (or of cgroup `cgroup`), as last read.
    pub fn rows_of(&self, owner: Option<&OwnerKey>, cgroup: Option<u64>) -> Vec<StatsKey> {
        self.last
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| {
                owner.is_none_or(|o| k.owner == *o) && cgroup.is_none_or(|c| k.cgroup_id == c)
            })
            .collect()
    }

    /// Row `key` was deleted from the kernel with `counts` its last values, because its
    /// owner or its cgroup retires: the other two parts keep the counts.
    pub fn deleted(&mut self, key: &StatsKey, counts: &Counters, why: Retiring) {
        self.last.retain(|(k, _)| k != key);
        if why != Retiring::Owner {
            self.owners.entry(key.owner).or_default().add(counts);
        }
        if why != Retiring::Cgroup {
            self.cgroups.entry(key.cgroup_id).or_default().add(counts);
        }
        self.servers.entry(key.server).or_default().add(counts);
    }

    /// Process `owner` retired: after its rows were deleted, nothing is kept for it.
    pub fn forget_owner(&mut self, owner: &OwnerKey) {
        self.owners.remove(owner);
    }

    /// Cgroup `id` retired: after its rows were deleted, nothing is kept for it.
    pub fn forget_cgroup(&mut self, id: u64) {
        self.cgroups.remove(&id);
    }

    /// The counters per process, per cgroup and per server: the rows' sums plus what
    /// deleted rows left.
    pub fn sums(&self) -> Sums {
        let mut owners = self.owners.clone();
        let mut cgroups = self.cgroups.clone();
        let mut servers = self.servers.clone();
        for (k, c) in &self.last {
            owners.entry(k.owner).or_default().add(c);
            cgroups.entry(k.cgroup_id).or_default().add(c);
            servers.entry(k.server).or_default().add(c);
        }
        for (k, c) in &self.spill {
            cgroups.entry(k.cgroup_id).or_default().add(c);
            servers.entry(k.server).or_default().add(c);
        }
        (
            owners.into_iter().collect(),
            cgroups.into_iter().collect(),
            servers.into_iter().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(tgid: u32) -> OwnerKey {
        OwnerKey {
            tgid,
            _pad: 0,
            birth_ns: u64::from(tgid) * 10,
        }
    }

    fn server(last: u8) -> ServerKey {
        ServerKey {
            daddr: [127, 0, 0, last, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dport: 2181,
            ..ServerKey::default()
        }
    }

    fn key(tgid: u32, cgroup_id: u64, srv: u8) -> StatsKey {
        StatsKey {
            owner: owner(tgid),
            cgroup_id,
            server: server(srv),
        }
    }

    fn opened(n: u64) -> Counters {
        Counters {
            opened: n,
            closed: n,
            ..Counters::default()
        }
    }

    fn sorted<K: Ord + Copy>(v: Vec<(K, Counters)>) -> Vec<(K, u64)> {
        let mut v: Vec<_> = v.into_iter().map(|(k, c)| (k, c.opened)).collect();
        v.sort();
        v
    }

    #[test]
    fn sums_add_every_row_of_each_process_cgroup_and_server() {
        let mut s = StatsRows::default();
        // Process 1 in cgroup 7 used two servers; process 2 used server 1 from two cgroups.
        s.set(
            vec![
                (key(1, 7, 1), opened(3)),
                (key(1, 7, 2), opened(4)),
                (key(2, 7, 1), opened(5)),
                (key(2, 8, 1), opened(6)),
            ],
            Vec::new(),
        );
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(1), 7), (owner(2), 11)]);
        assert_eq!(sorted(cgroups), [(7, 12), (8, 6)]);
        assert_eq!(sorted(servers), [(server(1), 14), (server(2), 4)]);
    }

    #[test]
    fn a_retired_process_keeps_counting_in_its_cgroup_and_servers_and_not_itself() {
        let mut s = StatsRows::default();
        s.set(
            vec![
                (key(1, 7, 1), opened(3)),
                (key(1, 8, 2), opened(4)),
                (key(2, 7, 1), opened(5)),
            ],
            Vec::new(),
        );
        let rows = s.rows_of(Some(&owner(1)), None);
        assert_eq!(rows, [key(1, 7, 1), key(1, 8, 2)]);
        // The kernel's values at deletion (one more close since the reading).
        s.deleted(&rows[0], &opened(4), Retiring::Owner);
        s.deleted(&rows[1], &opened(4), Retiring::Owner);
        s.forget_owner(&owner(1));
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(2), 5)]);
        assert_eq!(sorted(cgroups), [(7, 9), (8, 4)]);
        assert_eq!(sorted(servers), [(server(1), 9), (server(2), 4)]);
        // The next reading no longer has the deleted rows; the counts stay.
        s.set(vec![(key(2, 7, 1), opened(6))], Vec::new());
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(2), 6)]);
        assert_eq!(sorted(cgroups), [(7, 10), (8, 4)]);
        assert_eq!(sorted(servers), [(server(1), 10), (server(2), 4)]);
    }

    #[test]
    fn a_retired_cgroup_keeps_counting_in_its_processes_and_servers_and_not_itself() {
        let mut s = StatsRows::default();
        s.set(
            vec![(key(1, 7, 1), opened(3)), (key(1, 8, 1), opened(4))],
            Vec::new(),
        );
        for k in s.rows_of(None, Some(7)) {
            s.deleted(&k, &opened(3), Retiring::Cgroup);
        }
        s.forget_cgroup(7);
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(1), 7)]);
        assert_eq!(sorted(cgroups), [(8, 4)]);
        assert_eq!(sorted(servers), [(server(1), 7)]);
        // Then the process retires too: its cgroup 8 and the server keep it all.
        for k in s.rows_of(Some(&owner(1)), None) {
            s.deleted(&k, &opened(4), Retiring::Owner);
        }
        s.forget_owner(&owner(1));
        s.set(Vec::new(), Vec::new());
        let (owners, cgroups, servers) = s.sums();
        assert!(owners.is_empty());
        assert_eq!(sorted(cgroups), [(8, 4)]);
        assert_eq!(sorted(servers), [(server(1), 7)]);
    }

    #[test]
    fn spill_rows_count_for_their_cgroup_and_server_only_and_retire_with_the_cgroup() {
        let mut s = StatsRows::default();
        // The table was full: process 2's connections counted without it.
        s.set(
            vec![(key(1, 7, 1), opened(3))],
            vec![(key(0, 7, 1), opened(4))],
        );
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(1), 3)]);
        assert_eq!(sorted(cgroups), [(7, 7)]);
        assert_eq!(sorted(servers), [(server(1), 7)]);
        // Process 1 retiring leaves the spill row alone.
        assert!(s.rows_of(Some(&owner(0)), None).is_empty());
        for k in s.spill_of(7) {
            s.spill_deleted(&k, &opened(4));
        }
        for k in s.rows_of(None, Some(7)) {
            s.deleted(&k, &opened(3), Retiring::Cgroup);
        }
        s.forget_cgroup(7);
        s.set(Vec::new(), Vec::new());
        let (owners, cgroups, servers) = s.sums();
        assert_eq!(sorted(owners), [(owner(1), 3)]);
        assert!(cgroups.is_empty());
        assert_eq!(sorted(servers), [(server(1), 7)]);
    }
}
