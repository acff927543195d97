//! Reading the kernel's state back and writing what userspace decides into its maps.
//!
//! Owns: every map access after load, batched where the kernel allows. Must not: choose or
//! attach hooks.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::Arc,
};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, HashMap, PerCpuArray};
use zkconn_common::{
    ClientCounters, ClientKey, Conn, Counters, Endpoint, Inbound, Owner, OwnerKey, ServerKey,
    StatsKey, Tuple, control, map_names, probe_counter, program_names,
};

use super::{Probe, batch, stats::Retiring};
use crate::targets::{Targets, ip_to_bytes};

/// Everything the kernel holds, read in one pass.
#[derive(Clone, Debug, Default)]
pub struct KernelState {
    /// Shared with the probe's copy (see [`Probe::read`]): a reading at rest copies nothing.
    pub conns: Arc<Vec<Conn>>,
    pub seeds: Arc<Vec<Conn>>,
    /// Accepted connections on watched ports (the server side), and their seeds.
    pub inbound: Arc<Vec<Inbound>>,
    pub inbound_seeds: Arc<Vec<Inbound>>,
    /// What the server side counted per client host on each listener.
    pub clients: Vec<(ClientKey, ClientCounters)>,
    /// Which read of the connection rows these are: the same number, the same rows (what
    /// is worked out from them alone can be kept).
    pub rows_version: u64,
    /// Live processes (tgid → what the kernel recorded).
    pub owners: StdHashMap<u32, Owner>,
    pub proc_stats: Vec<(OwnerKey, Counters)>,
    pub cgroup_stats: Vec<(u64, Counters)>,
    pub server_stats: Vec<(ServerKey, Counters)>,
    pub counters: [u64; probe_counter::COUNT as usize],
    /// Runs the kernel skipped because a BPF program was already running on that CPU;
    /// `None` where the kernel does not count them (before 5.12).
    pub recursion_misses: Option<u64>,
}

/// Counter rows deleted from a map (see [`Probe::take_rows`]), and whether every one was.
type Taken = (Vec<(StatsKey, Counters)>, anyhow::Result<()>);

/// The connection rows as last read, and the programs' change count they go with.
#[derive(Debug)]
pub struct RowsRead {
    changes: u64,
    version: u64,
    conns: Arc<Vec<Conn>>,
    seeds: Arc<Vec<Conn>>,
    inbound: Arc<Vec<Inbound>>,
    inbound_seeds: Arc<Vec<Inbound>>,
}

/// The kernel's connection rows keyed by socket address, and its seeds ([`Probe::tracked`]).
#[derive(Clone, Debug, Default)]
pub struct TrackedRows {
    pub conns: Vec<(u64, Conn)>,
    pub seeds: Vec<Conn>,
    /// The server's side (empty when it is not followed).
    pub inbound: Vec<(u64, Inbound)>,
    pub inbound_seeds: Vec<Inbound>,
}

impl Probe {
    pub(super) fn load_targets(&mut self, targets: &Targets) -> anyhow::Result<()> {
        let mut ports: Array<_, u8> = self.map_mut(map_names::PORTS)?;
        for (port, flags) in targets.port_flags() {
            ports
                .set(u32::from(port), flags, 0)
                .context("filling the ports map")?;
        }
        let mut endpoints: HashMap<_, Endpoint, u8> = self.map_mut(map_names::ENDPOINTS)?;
        for e in &targets.endpoints {
            let key = Endpoint {
                addr: ip_to_bytes(e.ip()),
                port: e.port(),
                _pad: [0; 6],
            };
            endpoints
                .insert(key, 1, 0)
                .context("filling the endpoints map")?;
        }
        Ok(())
    }

    pub(super) fn map_mut<'a, T>(&'a mut self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    pub(super) fn map<'a, T>(&'a self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    /// Reads every map. Entries that vanish between listing and lookup were deleted by the
    /// kernel meanwhile (a socket closed) and are skipped, not counted as errors.
    /// Everything the kernel holds. The connection rows are read again only when the
    /// programs changed them since the last read (`probe_counter::ROW_CHANGES`) or
    /// userspace did: at rest a reading costs the small tables only.
    pub fn read(&mut self) -> anyhow::Result<KernelState> {
        fn single<K, V: Copy>(entries: batch::Entries<K, V>) -> impl Iterator<Item = (K, V)> {
            entries
                .into_iter()
                .filter_map(|(k, v)| Some((k, *v.first()?)))
        }
        // The counters first: a change the programs count after this read is read again
        // next time (see `probe_counter::ROW_CHANGES`).
        let counters: PerCpuArray<_, u64> = self.map(map_names::PROBE_COUNTERS)?;
        let mut sums = [0u64; probe_counter::COUNT as usize];
        for (i, slot) in sums.iter_mut().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let values = counters
                .get(&index, 0)
                .map_err(|e| map_error(map_names::PROBE_COUNTERS, &e))?;
            *slot = values.iter().sum();
        }
        let changes = sums[probe_counter::ROW_CHANGES as usize];
        let rows = match self.rows.take() {
            Some(rows) if rows.changes == changes => rows,
            _ => {
                self.rows_reads += 1;
                RowsRead {
                    changes,
                    version: self.rows_reads,
                    conns: Arc::new(self.dump::<u64, Conn>(map_names::CONNS, 1)?),
                    seeds: Arc::new(self.dump::<Tuple, Conn>(map_names::SEEDS, 1)?),
                    inbound: Arc::new(self.dump::<u64, Inbound>(map_names::INBOUND, 1)?),
                    inbound_seeds: Arc::new(
                        self.dump::<Tuple, Inbound>(map_names::INBOUND_SEEDS, 1)?,
                    ),
                }
            }
        };
        let (conns, seeds, inbound, inbound_seeds, rows_version) = (
            rows.conns.clone(),
            rows.seeds.clone(),
            rows.inbound.clone(),
            rows.inbound_seeds.clone(),
            rows.version,
        );
        self.rows = Some(rows);
        let clients =
            single(self.dump_keyed::<ClientKey, ClientCounters>(map_names::CLIENTS, 1)?).collect();
        let rows = single(self.dump_keyed::<StatsKey, Counters>(map_names::STATS, 1)?).collect();
        let spill =
            single(self.dump_keyed::<StatsKey, Counters>(map_names::STATS_SPILL, 1)?).collect();
        self.stats.set(rows, spill);
        let (proc_stats, cgroup_stats, server_stats) = self.stats.sums();
        Ok(KernelState {
            conns,
            seeds,
            inbound,
            inbound_seeds,
            clients,
            rows_version,
            owners: single(self.dump_keyed::<u32, Owner>(map_names::OWNERS, 1)?).collect(),
            proc_stats,
            cgroup_stats,
            server_stats,
            counters: sums,
            recursion_misses: self.recursion_misses(),
        })
    }

    /// Every entry of the hash map `name` (see [`batch`]). A map that cannot be read is an
    /// error, never an empty reading: every count would silently read 0.
    pub(super) fn dump_keyed<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
        &self,
        name: &str,
        per_key: usize,
    ) -> anyhow::Result<batch::Entries<K, V>> {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        let data = match map {
            aya::maps::Map::HashMap(d) | aya::maps::Map::PerCpuHashMap(d) => d,
            _ => bail!("map {name} has an unexpected type"),
        };
        batch::read::<K, V>(data.fd().as_fd(), per_key).map_err(|e| map_error(name, &e))
    }

    /// The values of the single-valued hash map `name`.
    pub(super) fn dump<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
        &self,
        name: &str,
        per_key: usize,
    ) -> anyhow::Result<Vec<V>> {
        Ok(self
            .dump_keyed::<K, V>(name, per_key)?
            .into_iter()
            .filter_map(|(_, v)| v.into_iter().next())
            .collect())
    }

    /// Sum of the kernel's `recursion_misses` over our programs, from their fdinfo; `None`
    /// where the kernel does not count them (before 5.12): unknown, not 0.
    pub(super) fn recursion_misses(&self) -> Option<u64> {
        let mut total = None;
        for name in program_names::ALL {
            let Some(prog) = self.ebpf.program(name) else {
                continue;
            };
            let Ok(fd) = prog.fd() else { continue };
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            let Ok(info) = std::fs::read_to_string(path) else {
                continue;
            };
            if let Some(n) = info
                .lines()
                .find_map(|l| l.strip_prefix("recursion_misses:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                *total.get_or_insert(0) += n;
            }
        }
        total
    }

    /// The kernel's connection rows with their keys (socket addresses), and its seeds, for
    /// drift repair.
    pub fn tracked(&self) -> anyhow::Result<TrackedRows> {
        let conns = self
            .dump_keyed::<u64, Conn>(map_names::CONNS, 1)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, *v.first()?)))
            .collect();
        let seeds = self.dump::<Tuple, Conn>(map_names::SEEDS, 1)?;
        let (inbound, inbound_seeds) = if self.inbound {
            (
                self.dump_keyed::<u64, Inbound>(map_names::INBOUND, 1)?
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, *v.first()?)))
                    .collect(),
                self.dump::<Tuple, Inbound>(map_names::INBOUND_SEEDS, 1)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(TrackedRows {
            conns,
            seeds,
            inbound,
            inbound_seeds,
        })
    }

    /// Deletes the row of accepted connection `skaddr` if it is still the one read as
    /// `expected` (same tuple and handshake time). False when it changed or was gone.
    pub fn remove_inbound(&mut self, skaddr: u64, expected: &Inbound) -> anyhow::Result<bool> {
        self.rows = None;
        let mut rows = self.map_mut::<HashMap<_, u64, Inbound>>(map_names::INBOUND)?;
        match rows.get(&skaddr, 0) {
            Ok(now)
                if now.tuple == expected.tuple && now.established_ns == expected.established_ns =>
            {
                match rows.remove(&skaddr) {
                    Ok(()) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(map_error(map_names::INBOUND, &e)),
                }
            }
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::INBOUND, &e)),
        }
    }

    /// Deletes the connection row of socket `skaddr` if it is still the one read as
    /// `expected` (same tuple and connect time: not a newer socket at the same address).
    /// False when it changed or was gone.
    pub fn remove_conn(&mut self, skaddr: u64, expected: &Conn) -> anyhow::Result<bool> {
        self.rows = None;
        let mut conns = self.map_mut::<HashMap<_, u64, Conn>>(map_names::CONNS)?;
        match conns.get(&skaddr, 0) {
            Ok(now) if now.tuple == expected.tuple && now.opened_ns == expected.opened_ns => {
                match conns.remove(&skaddr) {
                    Ok(()) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(map_error(map_names::CONNS, &e)),
                }
            }
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::CONNS, &e)),
        }
    }

    /// Registers a process found by seeding. Returns the identity the kernel uses for it: an
    /// existing one when the process already connected since zkconn started; `None` when the
    /// table is full (the caller counts it as overflow).
    pub fn insert_owner(&mut self, tgid: u32, owner: Owner) -> anyhow::Result<Option<OwnerKey>> {
        let mut owners: HashMap<_, u32, Owner> = self.map_mut(map_names::OWNERS)?;
        let birth_ns = match owners.insert(tgid, owner, u64::from(aya_noexist())) {
            Ok(()) => owner.birth_ns,
            Err(insert) => match owners.get(&tgid, 0) {
                Ok(o) => o.birth_ns,
                Err(_) if is_full(&insert) => return Ok(None),
                Err(_) => return Err(map_error(map_names::OWNERS, &insert)),
            },
        };
        Ok(Some(OwnerKey {
            tgid,
            _pad: 0,
            birth_ns,
        }))
    }

    /// Whether the kernel still has `key` as the live process of its pid: it forgets an
    /// owner when its thread group exits (where exits are reported), before the pid can be
    /// reused. `None` when the table cannot be read.
    pub fn owner_live(&self, key: &OwnerKey) -> Option<bool> {
        let owners: HashMap<_, u32, Owner> = self.map(map_names::OWNERS).ok()?;
        match owners.get(&key.tgid, 0) {
            Ok(o) => Some(o.birth_ns == key.birth_ns),
            Err(aya::maps::MapError::KeyNotFound) => Some(false),
            Err(_) => None,
        }
    }

    /// Tells the kernel whether seeded connections may still wait in `SEEDS`: set before
    /// the first seed goes in, cleared once a read finds the table empty.
    pub fn set_seeds_pending(&mut self, pending: bool) -> anyhow::Result<()> {
        if pending != self.seeds_pending {
            self.set_control(control::SEEDS_PENDING, pending, "the seed flag")?;
            self.seeds_pending = pending;
        }
        Ok(())
    }

    /// Writes switch `slot` of `CONTROL` (`what` names it in the error).
    fn set_control(&mut self, slot: u32, on: bool, what: &str) -> anyhow::Result<()> {
        let mut control: Array<_, u32> = self.map_mut(map_names::CONTROL)?;
        control
            .set(slot, u32::from(on), 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))
            .with_context(|| format!("setting {what}"))
    }

    pub fn seeds_pending(&self) -> bool {
        self.seeds_pending
    }

    /// Tells the kernel that seeding is scanning (connects then record their inode).
    pub fn set_seeding(&mut self, seeding: bool) -> anyhow::Result<()> {
        self.set_control(control::SEEDING, seeding, "the seeding flag")
    }

    /// Hands a seed to the kernel; false when the table is full (the caller counts it as
    /// overflow).
    pub fn insert_seed(&mut self, conn: Conn) -> anyhow::Result<bool> {
        self.rows = None;
        let mut seeds: HashMap<_, Tuple, Conn> = self.map_mut(map_names::SEEDS)?;
        match seeds.insert(conn.tuple, conn, 0) {
            Ok(()) => Ok(true),
            Err(e) if is_full(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::SEEDS, &e)),
        }
    }

    /// Forgets the counters of a cgroup that is gone and holds nothing (see the engine's
    /// retention): its rows in `STATS` go, their counts kept for their processes and servers.
    pub fn forget_cgroup(&mut self, id: u64) -> anyhow::Result<()> {
        self.delete_stats(None, Some(id))?;
        self.delete_spill(id)?;
        self.stats.forget_cgroup(id);
        Ok(())
    }

    /// Deletes the counter rows of process `owner` or of cgroup `cgroup` (as last read: a
    /// retired one gets no new rows), their counts kept for the rest of each key.
    fn delete_stats(
        &mut self,
        owner: Option<&OwnerKey>,
        cgroup: Option<u64>,
    ) -> anyhow::Result<()> {
        let why = if owner.is_some() {
            Retiring::Owner
        } else {
            Retiring::Cgroup
        };
        let keys = self.stats.rows_of(owner, cgroup);
        let (gone, done) = self.take_rows(map_names::STATS, keys)?;
        for (key, counts) in &gone {
            self.stats.deleted(key, counts, why);
        }
        done
    }

    /// Deletes cgroup `id`'s spill rows (see [`map_names::STATS_SPILL`]), their counts kept
    /// for their servers.
    fn delete_spill(&mut self, id: u64) -> anyhow::Result<()> {
        let keys = self.stats.spill_of(id);
        if keys.is_empty() {
            return Ok(());
        }
        let (gone, done) = self.take_rows(map_names::STATS_SPILL, keys)?;
        for (key, counts) in &gone {
            self.stats.spill_deleted(key, counts);
        }
        done
    }

    /// Deletes rows `keys` of counter map `name`, each read again just before it goes so
    /// that the counts kept for what remains are the kernel's last. Returns the rows
    /// deleted (a row already gone counts as deleted with nothing), and the first failure,
    /// which stops the rest (kept, and tried again at the next retirement).
    fn take_rows(&mut self, name: &str, keys: Vec<StatsKey>) -> anyhow::Result<Taken> {
        let mut map = self.map_mut::<HashMap<_, StatsKey, Counters>>(name)?;
        let mut gone = Vec::with_capacity(keys.len());
        for key in keys {
            let counts = match map.get(&key, 0) {
                Ok(c) => c,
                Err(e) if is_not_found(&e) => Counters::default(),
                Err(e) => return Ok((gone, Err(map_error(name, &e)))),
            };
            match map.remove(&key) {
                Ok(()) => gone.push((key, counts)),
                Err(e) if is_not_found(&e) => gone.push((key, Counters::default())),
                Err(e) => return Ok((gone, Err(map_error(name, &e)))),
            }
        }
        Ok((gone, Ok(())))
    }

    /// Forgets the counters of an owner that exited and holds nothing (see the engine's
    /// retention): its rows in `STATS` go, their counts kept for their cgroups and servers,
    /// so the table does not fill with the dead.
    pub fn forget_owner(&mut self, key: &OwnerKey) -> anyhow::Result<()> {
        self.delete_stats(Some(key), None)?;
        self.stats.forget_owner(key);
        // Where the kernel reports no exits (no group_dead), it never forgets the process
        // itself either: its identity goes too, unless the pid is already someone else's.
        let mut owners = self.map_mut::<HashMap<_, u32, Owner>>(map_names::OWNERS)?;
        match owners.get(&key.tgid, 0) {
            Ok(o) if o.birth_ns == key.birth_ns => match owners.remove(&key.tgid) {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(map_error(map_names::OWNERS, &e)),
            },
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(map_error(map_names::OWNERS, &e)),
        }
    }

    /// Removes a seed; false when it was already gone (the kernel adopted or closed it).
    pub fn remove_seed(&mut self, tuple: &Tuple) -> anyhow::Result<bool> {
        self.rows = None;
        let mut seeds = self.map_mut::<HashMap<_, Tuple, Conn>>(map_names::SEEDS)?;
        match seeds.remove(tuple) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::SEEDS, &e)),
        }
    }

    /// Turns the following of accepted connections on watched ports (the server side) on
    /// or off.
    pub fn set_inbound(&mut self, on: bool) -> anyhow::Result<()> {
        if on != self.inbound {
            self.set_control(control::INBOUND, on, "the server-side switch")?;
            self.inbound = on;
        }
        Ok(())
    }

    /// Whether accepted connections on watched ports are followed.
    pub fn inbound(&self) -> bool {
        self.inbound
    }

    /// Tells the kernel whether seeded accepted connections may still wait in
    /// `INBOUND_SEEDS` (as [`Probe::set_seeds_pending`] for connects).
    pub fn set_inbound_seeds_pending(&mut self, pending: bool) -> anyhow::Result<()> {
        if pending != self.inbound_seeds_pending {
            self.set_control(
                control::INBOUND_SEEDS_PENDING,
                pending,
                "the server-side seed flag",
            )?;
            self.inbound_seeds_pending = pending;
        }
        Ok(())
    }

    pub fn inbound_seeds_pending(&self) -> bool {
        self.inbound_seeds_pending
    }

    /// Hands an accepted connection that predates zkconn to the kernel; false when the
    /// table is full (the caller counts it as overflow).
    pub fn insert_inbound_seed(&mut self, row: Inbound) -> anyhow::Result<bool> {
        self.rows = None;
        let mut seeds: HashMap<_, Tuple, Inbound> = self.map_mut(map_names::INBOUND_SEEDS)?;
        match seeds.insert(row.tuple, row, 0) {
            Ok(()) => Ok(true),
            Err(e) if is_full(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::INBOUND_SEEDS, &e)),
        }
    }

    /// Removes an accepted connection's seed; false when it was already gone (the kernel
    /// adopted it).
    pub fn remove_inbound_seed(&mut self, tuple: &Tuple) -> anyhow::Result<bool> {
        self.rows = None;
        let mut seeds = self.map_mut::<HashMap<_, Tuple, Inbound>>(map_names::INBOUND_SEEDS)?;
        match seeds.remove(tuple) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::INBOUND_SEEDS, &e)),
        }
    }

    /// Deletes a client host's counters if they are still `expected` (an idle host
    /// retired); false when they moved or were gone. A connection the kernel counts in the
    /// instant between the comparison and the deletion is lost with the row.
    pub fn remove_client(
        &mut self,
        key: &ClientKey,
        expected: &ClientCounters,
    ) -> anyhow::Result<bool> {
        let mut clients =
            self.map_mut::<HashMap<_, ClientKey, ClientCounters>>(map_names::CLIENTS)?;
        match clients.get(key, 0) {
            Ok(now) if now == *expected => match clients.remove(key) {
                Ok(()) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(map_error(map_names::CLIENTS, &e)),
            },
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::CLIENTS, &e)),
        }
    }

    /// A real map look-up and update, as the source makes them every second: what
    /// [`caps::drop_after_attach`] probes the kernel with.
    pub fn check_map_access(&mut self) -> anyhow::Result<()> {
        let mut control: Array<_, u32> = self.map_mut(map_names::CONTROL)?;
        let seeding = control
            .get(&control::SEEDING, 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))?;
        control
            .set(control::SEEDING, seeding, 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))?;
        self.dump::<Tuple, Conn>(map_names::SEEDS, 1).map(drop)
    }
}

pub(super) fn aya_noexist() -> u32 {
    // BPF_NOEXIST from the UAPI.
    1
}

/// A map read or update that failed, in one sentence that says what to do.
pub(super) fn map_error(name: &str, e: &dyn std::error::Error) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if text.contains("Operation not permitted") {
        anyhow!(
            "the kernel refused zkconn access to its map {name} ({text}): this kernel wants \
             CAP_BPF (CAP_SYS_ADMIN before Linux 5.8) for every map access while \
             kernel.unprivileged_bpf_disabled is set; give zkconn that capability"
        )
    } else {
        anyhow!("reading the kernel map {name} failed: {text}")
    }
}

/// Whether a map error is only "no such entry".
/// A hash map with no room for another key (E2BIG).
pub(super) fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

pub(super) fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}
