//! The collector: owns the probe, reads kernel events as they come, remembers what it
//! learnt about each owner while it lived, and assembles snapshots.
//!
//! Owns: the flow probe → events/maps → [`model::build`]. Must not: format output.

use std::{collections::HashMap, io, time::Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use zkconn_common::{COMM_LEN, Event, OwnerKey, event_kind, probe_counter};

use crate::{
    cli::ProbeArgs,
    model::{
        self, Inputs, LostDetail, OverflowDetail, OwnerFacts, ProbeHealth, SeedHealth, Snapshot,
    },
    probe::{Capacities, Probe},
    procfs::{CgroupPaths, Procfs},
    seed::{self, SeedReport},
    targets::Targets,
};

pub struct Collector {
    probe: Probe,
    events: AsyncFd<RingBuf<MapData>>,
    procfs: Procfs,
    cgroups: CgroupPaths,
    targets: Targets,
    facts: HashMap<OwnerKey, OwnerFacts>,
    seeds: SeedReport,
    started: Instant,
    /// `/proc` reads that failed for a reason other than the process being gone.
    unreadable: u64,
}

fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Collector {
    /// Loads and attaches the probe, then seeds connections that already exist. Must run
    /// inside a tokio runtime (the ring buffer is registered with it).
    pub fn start(targets: Targets, args: &ProbeArgs) -> anyhow::Result<Self> {
        crate::probe::check_privileges()?;
        let caps = Capacities {
            conns: args.max_connections,
            owners: args.max_processes,
            cgroups: args.max_cgroups,
            ring_buffer_bytes: args.ring_buffer_kib * 1024,
        };
        let mut probe = Probe::load(args.hook, caps, &targets)?;
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long
        // as the `AsyncFd` owns the ring buffer.
        let events = unsafe {
            AsyncFd::register_with_interest(probe.take_events()?, tokio::io::Interest::READABLE)
        }
        .map_err(|e| {
            anyhow::anyhow!("cannot register the event ring buffer with the runtime: {e}")
        })?;
        let procfs = Procfs::default();
        let cgroups = CgroupPaths::discover();
        let seeds = seed::seed(&mut probe, &procfs, &cgroups, &targets)
            .context("seeding the connections that existed before start failed")?;
        log::info!(
            "attached ({}); watching {targets}; seeded {} connections",
            probe.hook(),
            seeds.seeded
        );
        Ok(Self {
            probe,
            events,
            procfs,
            cgroups,
            targets,
            facts: HashMap::new(),
            seeds,
            started: Instant::now(),
            unreadable: 0,
        })
    }

    /// Waits until the kernel has written events, then handles all of them.
    pub async fn next_events(&mut self) -> anyhow::Result<()> {
        let mut guard = self
            .events
            .readable_mut()
            .await
            .context("waiting on the event ring buffer failed")?;
        guard.clear_ready();
        drop(guard);
        self.drain_events();
        Ok(())
    }

    /// Handles every event already in the ring buffer, without waiting.
    pub fn drain_events(&mut self) {
        let mut batch = Vec::new();
        {
            let ring = self.events.get_mut();
            while let Some(item) = ring.next() {
                if item.len() >= size_of::<Event>() {
                    // SAFETY: the kernel wrote a whole `Event` (checked length); it is
                    // plain-old-data, and read_unaligned makes no alignment assumption.
                    batch.push(unsafe { item.as_ptr().cast::<Event>().read_unaligned() });
                }
            }
        }
        for event in batch {
            self.on_event(&event);
        }
    }

    fn on_event(&mut self, event: &Event) {
        match event.kind {
            event_kind::OWNER_NEW => {
                let proc = self.read_proc(event.owner);
                let facts = self.facts.entry(event.owner).or_default();
                facts.comm = comm_str(&event.info.comm);
                facts.uid = Some(event.info.uid);
                facts.cgroup_id = event.info.cgroup_id;
                facts.alive = true;
                if proc.is_some() {
                    facts.proc = proc;
                }
            }
            event_kind::OWNER_EXIT => {
                let facts = self.facts.entry(event.owner).or_default();
                if facts.comm.is_empty() {
                    facts.comm = comm_str(&event.info.comm);
                    facts.uid = Some(event.info.uid);
                    facts.cgroup_id = event.info.cgroup_id;
                }
                facts.alive = false;
            }
            _ => {}
        }
    }

    /// `/proc` facts for `owner`, if the pid still belongs to it: a process that started
    /// after the owner's birth is a newer process reusing the pid.
    fn read_proc(&mut self, owner: OwnerKey) -> Option<crate::procfs::ProcInfo> {
        match self.procfs.process(owner.tgid) {
            Ok(info) if info.start_ns <= owner.birth_ns => Some(info),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::debug!("/proc/{} unreadable: {e}", owner.tgid);
                self.unreadable += 1;
                None
            }
        }
    }

    /// Reads the kernel and builds the document.
    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        self.drain_events();
        let state = self.probe.read()?;
        // Owners seen only through maps (seeded, or their event was lost): fill in.
        let mut keys: Vec<OwnerKey> = state.proc_stats.iter().map(|(k, _)| *k).collect();
        keys.extend(state.conns.iter().chain(&state.seeds).map(|c| c.owner));
        for key in keys {
            if self.facts.contains_key(&key) {
                continue;
            }
            let proc = self.read_proc(key);
            let kernel = state
                .owners
                .get(&key.tgid)
                .filter(|o| o.birth_ns == key.birth_ns);
            let conn = state
                .conns
                .iter()
                .chain(&state.seeds)
                .find(|c| c.owner == key);
            let facts = OwnerFacts {
                comm: kernel.map(|o| comm_str(&o.comm)).unwrap_or_default(),
                uid: kernel.map(|o| o.uid).or(conn.map(|c| c.uid)),
                cgroup_id: kernel
                    .map(|o| o.cgroup_id)
                    .or(conn.map(|c| c.cgroup_id))
                    .unwrap_or(0),
                proc,
                alive: false,
            };
            self.facts.insert(key, facts);
        }
        // Liveness: the kernel forgets an owner when its thread group exits.
        for (key, facts) in &mut self.facts {
            facts.alive = if self.probe.exit_events {
                state
                    .owners
                    .get(&key.tgid)
                    .is_some_and(|o| o.birth_ns == key.birth_ns)
            } else {
                self.procfs
                    .start_ns(key.tgid)
                    .is_some_and(|s| s <= key.birth_ns)
            };
        }

        let cgroups = std::cell::RefCell::new(&mut self.cgroups);
        let path = |id: u64| cgroups.borrow_mut().path(id);
        let (servers, processes, cgroup_rows) = model::build(&Inputs {
            conns: &state.conns,
            seeds: &state.seeds,
            proc_stats: &state.proc_stats,
            cgroup_stats: &state.cgroup_stats,
            facts: &self.facts,
            seeded: &self.seeds.per_owner,
            cgroup_path: &path,
        });
        let c = state.counters;
        let lost_detail = LostDetail {
            events: c[probe_counter::LOST_EVENTS as usize],
            recursion_misses: state.recursion_misses,
        };
        let overflow_detail = OverflowDetail {
            connections: c[probe_counter::OVERFLOW_CONNS as usize],
            processes: c[probe_counter::OVERFLOW_OWNERS as usize],
            counters: c[probe_counter::OVERFLOW_STATS as usize],
        };
        Ok(Snapshot {
            schema: model::SCHEMA,
            host: hostname(),
            time: now_rfc3339(),
            observed_secs: self.started.elapsed().as_secs_f64(),
            probe: ProbeHealth {
                hook: Some(self.probe.hook()),
                lost: lost_detail.events + lost_detail.recursion_misses,
                overflow: overflow_detail.connections
                    + overflow_detail.processes
                    + overflow_detail.counters,
                lost_detail,
                overflow_detail,
                seeds: SeedHealth {
                    seeded: self.seeds.seeded,
                    adopted: c[probe_counter::SEEDS_ADOPTED as usize],
                    conflicts: self.seeds.conflicts,
                    ownerless: self.seeds.ownerless,
                },
                unreadable: self.unreadable + self.seeds.unreadable + state.read_errors,
            },
            targets: self.targets.names(),
            servers,
            processes,
            cgroups: cgroup_rows,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
