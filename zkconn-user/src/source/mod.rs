//! The source: every piece of I/O between the kernel and a snapshot. It owns the probe (or
//! the poller), reads kernel events as they come and `/proc` for each new process while it
//! lives, and at each [`read`](Source::read) hands the engine one plain [`Reading`]:
//! kernel state, owners learnt, liveness, cgroup paths, NAT answers, holders.
//!
//! Owns: the probe, procfs, cgroup paths, socket tables, NAT look-ups, drift repair.
//! Must not: judge or build rows (the engine does), nor decide on its own what to forget
//! (it carries out the engine's [`Orders`]).

mod health;

use std::{
    collections::{HashMap, HashSet},
    io,
    time::Instant,
};

use anyhow::Context as _;
use rustc_hash::{FxHashMap, FxHashSet};
use zkconn_common::{COMM_LEN, CgroupNames, Event, OwnerEvent, OwnerKey, Tuple, event_kind};

use crate::{
    attribution::{
        cgroup::CgroupLine,
        hierarchy::{self, Hierarchy},
    },
    cli::{NatChoice, ProbeArgs},
    engine::{self, Learnt, Orders, Reading, Refusal},
    model::{self, Kept},
    nat::Nat,
    poll::Poller,
    probe::{Capacities, Hook, HookChoice, KernelState, Probe},
    procfs::{CgroupPaths, Procfs},
    reconcile::Reconciler,
    seed::{self, SeedReport},
    sockdiag::Tables,
    targets::Targets,
    users::Users,
};

/// Where the kernel state comes from.
enum Feed {
    /// The kernel programs: their maps, and their events as they come.
    Kernel {
        probe: Box<Probe>,
        events: crate::probe::events::Events,
    },
    /// Samples of the socket tables (`--hook poll`), with why `auto` chose it.
    Poll(Poller, Option<String>),
}

pub struct Source {
    feed: Feed,
    procfs: Procfs,
    cgroups: CgroupPaths,
    targets: Targets,
    users: Users,
    /// Owners reported to the engine and not forgotten since: the ones whose liveness each
    /// reading reports. Bounded as the engine's facts are (it orders the rest dropped).
    known: FxHashSet<OwnerKey>,
    /// Of those, the ones learnt without a cgroup path, with their cgroup id: each reading
    /// tries to name it.
    pathless: FxHashMap<OwnerKey, u64>,
    /// Kernel rows of retired owners and cgroups whose deletion failed, tried again at each
    /// reading (bounded: each was ordered once).
    unforgotten: (Vec<OwnerKey>, Vec<u64>),
    /// Learnt and refused since the last reading.
    learnt: Vec<(OwnerKey, Learnt)>,
    refused: Vec<Refusal>,
    /// Seed counts per owner, until a reading carries them to the engine.
    seeded: Option<HashMap<OwnerKey, u64>>,
    seeds: SeedReport,
    /// Whether the poll hook has sampled once (its first sample found what predates zkconn).
    polled: bool,
    started: Instant,
    /// `/proc` reads that failed for a reason other than the process being gone.
    unreadable: u64,
    /// Kernel events read since start.
    events_received: u64,
    held_by: HeldBy,
    /// The capabilities kept after attach.
    kept: Kept,
    nat: Nat,
    /// Connections refused since the last reading, for NAT look-ups.
    refused_for_nat: Vec<Tuple>,
    /// Who held the connections of the last rows read (worked out again when they change).
    holdings: Option<Holdings>,
    /// One socket-table reader per network namespace (seeding, drift repair, holders).
    tables: Tables,
    reconciler: Reconciler,
    /// The servers listening on watched ports, when the server's side is followed.
    servers: crate::listener::Servers,
    /// Client hosts deleted from the kernel's table, until a reading carries them.
    clients_retired: Vec<(zkconn_common::ClientKey, zkconn_common::ClientCounters)>,
}

/// Who holds the open connections of connectors that exited. A `/proc` scan costs as much
/// as seeding, so it runs only while such connections exist, and again only when their set
/// changes or [`HELD_BY_REFRESH`] has passed.
#[derive(Default)]
struct HeldBy {
    wanted: Vec<Tuple>,
    at: Option<Instant>,
    holders: HashMap<Tuple, Vec<(u32, String)>>,
}

const HELD_BY_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// The path the kernel's names spell (`/a/b/c`, innermost name last), `None` when the kernel
/// named nothing (its layout was unknown, or a read failed at the first level). A path with
/// more levels than the kernel keeps starts with `/…`. Names are the kernel's directory
/// names: any byte but `/` and NUL; invalid UTF-8 is replaced.
pub fn cgroup_path(names: &CgroupNames) -> Option<String> {
    let parts: Vec<String> = names
        .names
        .iter()
        .map(|n| {
            let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
            String::from_utf8_lossy(&n[..end]).into_owned()
        })
        .take_while(|n| !n.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let mut path = String::new();
    if names.truncated != 0 {
        path.push_str("/…");
    }
    for part in parts.iter().rev() {
        path.push('/');
        path.push_str(part);
    }
    Some(path)
}

/// What the kernel recorded of an owner at its first connect.
struct KernelFacts {
    comm: String,
    uid: u32,
    cgroup_id: u64,
    /// Its cgroup v2 path and the cpu controller's path, as the kernel named them (new
    /// owners only; `None` where the kernel could not).
    cgroup_v2: Option<String>,
    cgroup_cpu: Option<String>,
}

/// One event from the ring buffer, with the cgroup names of a new owner.
struct Incoming {
    event: Event,
    cgroups: Option<(Option<String>, Option<String>)>,
}

fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Source {
    /// Loads and attaches the probe, then seeds connections that already exist. Must run
    /// inside a tokio runtime (the ring buffer is registered with it). Capabilities are
    /// dropped by [`drop_capabilities`](Self::drop_capabilities), after the first reading.
    ///
    /// `before_attach` runs once every check has passed, right before anything loads
    /// (asking servers their limit, so those questions are not counted).
    pub fn start(
        targets: Targets,
        args: &ProbeArgs,
        before_attach: impl FnOnce(),
    ) -> anyhow::Result<Self> {
        let procfs = Procfs::default();
        let cgroups = CgroupPaths::discover();
        // Opened here, while zkconn may still enter other namespaces (see `sockdiag`).
        let mut tables = Tables::default();
        let (feed, mut seeds) = match args.hook {
            HookChoice::Poll if !args.fallback.is_empty() => anyhow::bail!(
                "--fallback changes the kernel programs, and --hook poll loads none: drop one \
                 of them"
            ),
            HookChoice::Poll => {
                before_attach();
                (Feed::Poll(Poller::default(), None), SeedReport::default())
            }
            choice => {
                let endpoints = targets.endpoints.len();
                if endpoints > zkconn_common::MAX_ENDPOINTS as usize {
                    anyhow::bail!(
                        "--zk and --zoo-cfg name {endpoints} server addresses, and the kernel's \
                         table holds {}: watch their port towards any address with --port \
                         instead",
                        zkconn_common::MAX_ENDPOINTS
                    );
                }
                crate::probe::caps::check_privileges()?;
                let caps = Capacities {
                    conns: args.max_connections,
                    inbound: if args.no_server_side {
                        1
                    } else {
                        args.max_connections
                    },
                    owners: args.max_processes,
                    cgroups: args.max_cgroups,
                    ring_buffer_bytes: args.ring_buffer_kib * 1024,
                };
                before_attach();
                let mut lap = crate::clock::Lap::new("start");
                // Which process holds each socket, walked while the programs load.
                let walk = seed::FdWalk::in_background(procfs.clone());
                let loaded = Probe::load(choice, caps, &targets, &args.fallback);
                lap.at("programs loaded and attached");
                match loaded {
                    Ok(probe) => {
                        let kernel = Kernel {
                            tables: &mut tables,
                            procfs: &procfs,
                            cgroups: &cgroups,
                            targets: &targets,
                        };
                        start_kernel(probe, kernel, walk, !args.no_server_side)?
                    }
                    // The kernel refuses every BPF hook (too old, lockdown, a policy): `auto`
                    // samples the socket tables instead, and says why. A limit or privilege
                    // the operator can fix is reported instead.
                    Err(e)
                        if choice == HookChoice::Auto
                            && e.downcast_ref::<crate::probe::FixableLoadError>().is_none() =>
                    {
                        let why = format!(
                            "no BPF hook can be used on this kernel ({e:#}), so zkconn samples \
                             the socket tables (hook poll)"
                        );
                        tracing::warn!("{why}");
                        (
                            Feed::Poll(Poller::default(), Some(why)),
                            SeedReport::default(),
                        )
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let infos = std::mem::take(&mut seeds.infos);
        let nat = Nat::open(args.nat == NatChoice::Auto);
        match nat.health(0).reason {
            None => tracing::debug!("NAT: asking the host's connection tracking table"),
            Some(reason) if args.nat == NatChoice::Auto => tracing::warn!(
                "NAT is not looked up: {reason}; connections count under their own source \
                 address, which behind NAT is not the one the server counts"
            ),
            Some(_) => {}
        }
        let mut this = Self {
            feed,
            procfs,
            cgroups,
            targets,
            users: Users::default(),
            known: FxHashSet::default(),
            pathless: FxHashMap::default(),
            unforgotten: (Vec::new(), Vec::new()),
            learnt: Vec::new(),
            refused: Vec::new(),
            seeded: None,
            seeds,
            polled: false,
            started: Instant::now(),
            unreadable: 0,
            events_received: 0,
            held_by: HeldBy::default(),
            nat,
            refused_for_nat: Vec::new(),
            holdings: None,
            tables,
            reconciler: Reconciler::new(args.reconcile_interval),
            kept: Kept::default(),
            servers: crate::listener::Servers::default(),
            clients_retired: Vec::new(),
        };
        this.learn_servers();
        // Seeded processes are attributed from what seeding read, while they lived.
        if let Feed::Kernel { .. } = this.feed {
            this.seeded = Some(this.seeds.per_owner.clone());
        }
        for (key, info) in infos {
            if this.seeds.per_owner.contains_key(&key) {
                let cgroup_id = info.cgroup_v2().and_then(|p| this.cgroups.id_of(p));
                this.learn_from_proc(key, info, cgroup_id.unwrap_or(0));
            }
        }
        Ok(this)
    }

    /// The hierarchy of this host (see [`hierarchy::detect`]), from every process's
    /// `/proc/PID/cgroup`; a process that cannot be read is left out.
    pub fn host_hierarchy(&self) -> Hierarchy {
        let lines: Vec<Vec<CgroupLine>> = self
            .procfs
            .pids()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pid| self.procfs.cgroups(pid).ok())
            .collect();
        hierarchy::detect(self.cgroups.mounted(), lines.iter().map(Vec::as_slice))
    }

    /// Drops the capabilities attaching needed (see [`crate::probe::caps`]); called once the
    /// first reading is done. The poll hook's first reading found what predates zkconn.
    pub fn drop_capabilities(&mut self) -> anyhow::Result<()> {
        if let Feed::Poll(poller, _) = &self.feed {
            tracing::info!(
                "sampling ({}); watching {}; {} connections found",
                Hook::Poll,
                self.targets,
                poller.seeded.values().sum::<u64>()
            );
        }
        let keep_net_admin = self.nat.available();
        self.kept =
            crate::probe::caps::drop_after_attach(keep_net_admin, || match &mut self.feed {
                Feed::Kernel { probe, .. } => probe.check_map_access(),
                Feed::Poll(..) => Ok(()),
            })?;
        tracing::info!(
            "attached and seeded: capabilities dropped to {}",
            self.kept.kept.join(" ")
        );
        Ok(())
    }

    /// The hook in use.
    fn hook(&self) -> Hook {
        match &self.feed {
            Feed::Kernel { probe, .. } => probe.hook(),
            Feed::Poll(..) => Hook::Poll,
        }
    }

    /// The watched targets, as given (`ip:port` and `*:port`).
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Seconds since start, the time base of the history.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits until the kernel has written events, then handles all of them. The poll hook
    /// has no events: it waits forever.
    pub async fn next_events(&mut self) -> anyhow::Result<()> {
        let Feed::Kernel { events, .. } = &mut self.feed else {
            return std::future::pending().await;
        };
        events.readable().await?;
        self.drain_events();
        Ok(())
    }

    /// Handles every event already in the ring buffer, without waiting.
    fn drain_events(&mut self) {
        let mut batch = Vec::new();
        {
            let Feed::Kernel { events, .. } = &mut self.feed else {
                return;
            };
            let received = &mut self.events_received;
            events.drain(|item| {
                *received += 1;
                if item.len() >= size_of::<OwnerEvent>() {
                    // SAFETY: the kernel wrote a whole `OwnerEvent` (checked length); it is
                    // plain-old-data, and read_unaligned makes no alignment assumption.
                    let e = unsafe { item.as_ptr().cast::<OwnerEvent>().read_unaligned() };
                    batch.push(Incoming {
                        event: e.event,
                        cgroups: Some((cgroup_path(&e.v2), cgroup_path(&e.cpu))),
                    });
                } else if item.len() >= size_of::<Event>() {
                    // SAFETY: as above, for a whole `Event`.
                    let event = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
                    batch.push(Incoming {
                        event,
                        cgroups: None,
                    });
                }
            });
        }
        for incoming in batch {
            self.on_event(incoming);
        }
    }

    fn on_event(&mut self, incoming: Incoming) {
        let event = &incoming.event;
        match event.kind {
            event_kind::OWNER_NEW => {
                let (cgroup_v2, cgroup_cpu) = incoming.cgroups.unwrap_or_default();
                let kernel = KernelFacts {
                    comm: comm_str(&event.info.comm),
                    uid: event.info.uid,
                    cgroup_id: event.info.cgroup_id,
                    cgroup_v2,
                    cgroup_cpu,
                };
                self.learn(event.owner, kernel);
            }
            event_kind::REFUSED => {
                let server = model::endpoint(event.server.daddr, event.server.dport);
                // When it happened, not when it was read (refusals do not wake userspace).
                let late = crate::clock::now_boot_ns().saturating_sub(event.ts_ns) as f64 / 1e9;
                let at = (self.now() - late).max(0.0);
                self.refused.push(Refusal {
                    owner: event.owner,
                    server,
                    local_ip: crate::targets::ip_from_bytes(event.server.saddr).to_string(),
                    at,
                });
                // Behind NAT, a refused connection may be the only one of its container
                // this host ever makes: ask where the server saw it from while the host
                // still tracks it (bounded: a refusal storm asks about the first ones).
                if self.refused_for_nat.len() < crate::nat::LOOKUPS_PER_SAMPLE {
                    self.refused_for_nat.push(Tuple {
                        saddr: event.server.saddr,
                        daddr: event.server.daddr,
                        sport: event.sport,
                        dport: event.server.dport,
                        _pad: 0,
                    });
                }
            }
            // Liveness is read at each reading; an exit only matters for an owner never
            // seen before (its new-owner event was lost).
            event_kind::OWNER_EXIT if !self.known.contains(&event.owner) => {
                let kernel = KernelFacts {
                    comm: comm_str(&event.info.comm),
                    uid: event.info.uid,
                    cgroup_id: event.info.cgroup_id,
                    cgroup_v2: None,
                    cgroup_cpu: None,
                };
                self.learn(event.owner, kernel);
            }
            _ => {}
        }
    }

    /// Learns a new owner, once: from `/proc` while it lives, else from what the kernel
    /// recorded (comm and cgroup v2 id).
    fn learn(&mut self, owner: OwnerKey, kernel: KernelFacts) {
        // The kernel named the cgroup at the connect: it stays known for the cgroup rows
        // even when its directory is removed before anyone looks.
        if let Some(path) = kernel.cgroup_v2.as_deref().filter(|p| !p.starts_with("/…")) {
            self.cgroups.remember(kernel.cgroup_id, path);
        }
        if let Some(mut info) = self.read_proc(owner) {
            // Read while exiting, its v1 cgroups are unknown to /proc: the cpu controller's,
            // where YARN puts containers on v1 hosts, is the one the kernel named.
            if info.exiting
                && let Some(cpu) = kernel.cgroup_cpu
            {
                info.cgroups.push(CgroupLine {
                    hierarchy: 1,
                    controllers: "cpu".to_owned(),
                    path: cpu,
                });
            }
            self.learn_from_proc(owner, info, kernel.cgroup_id);
            return;
        }
        let path = self.cgroups.path(kernel.cgroup_id).or(kernel.cgroup_v2);
        self.note(owner, path.is_some(), kernel.cgroup_id);
        let learnt = Learnt::Kernel {
            user: self.users.name(kernel.uid),
            comm: kernel.comm,
            uid: kernel.uid,
            cgroup_id: kernel.cgroup_id,
            cgroup_v2: path,
            cgroup_cpu: kernel.cgroup_cpu,
        };
        self.learnt.push((owner, learnt));
    }

    fn learn_from_proc(&mut self, owner: OwnerKey, info: crate::procfs::ProcInfo, cgroup_id: u64) {
        // The process may have moved since it connected: only a path that is still the
        // kernel's cgroup is remembered for it.
        if let Some(path) = info.cgroup_v2()
            && self.cgroups.id_of(path) == Some(cgroup_id)
        {
            self.cgroups.remember(cgroup_id, path);
        }
        self.note(owner, info.cgroup_v2().is_some(), cgroup_id);
        let learnt = Learnt::Proc {
            user: self.users.name(info.uid),
            info: Box::new(info),
            cgroup_id,
        };
        self.learnt.push((owner, learnt));
    }

    /// Remembers that `owner` was reported, and whether its cgroup still wants a name.
    fn note(&mut self, owner: OwnerKey, has_path: bool, cgroup_id: u64) {
        self.known.insert(owner);
        if has_path {
            self.pathless.remove(&owner);
        } else {
            self.pathless.insert(owner, cgroup_id);
        }
    }

    /// `/proc` facts for `owner`, if the pid still belongs to it: a process that started
    /// after the owner's birth is a newer process reusing the pid. `/proc` gives start times
    /// in clock ticks (10 ms), so a pid reused within the same tick passes that test; where
    /// the kernel reports exits, it has forgotten an owner that exited before its `/proc`
    /// entry was read, and that read was of another process.
    fn read_proc(&mut self, owner: OwnerKey) -> Option<crate::procfs::ProcInfo> {
        let info = self.procfs.process(owner.tgid);
        if info.is_ok()
            && let Feed::Kernel { probe, .. } = &self.feed
            && probe.exit_events
            && probe.owner_live(&owner) == Some(false)
        {
            return None;
        }
        match info {
            Ok(info) if info.start_ns <= owner.birth_ns => Some(info),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::debug!("/proc/{} unreadable: {e}", owner.tgid);
                self.unreadable += 1;
                None
            }
        }
    }

    /// Carries out what the engine ordered after a reading, before the next one. Every
    /// order is tried; a kernel row that could not be deleted is kept and tried again at
    /// each reading (the engine has let it go and will not ask again), and the first
    /// failure is returned.
    pub fn obey(&mut self, orders: Orders) -> anyhow::Result<()> {
        for key in orders.forget_owners.iter().chain(&orders.dropped) {
            self.known.remove(key);
            self.pathless.remove(key);
        }
        self.unforgotten.0.extend(orders.forget_owners);
        self.unforgotten.1.extend(orders.forget_cgroups);
        // Not kept for retrying: a host still idle is ordered again at the next reading.
        let mut failed = None;
        if let Feed::Kernel { probe, .. } = &mut self.feed {
            for (key, expected) in orders.forget_clients {
                match probe.remove_client(&key, &expected) {
                    Ok(true) => self.clients_retired.push((key, expected)),
                    Ok(false) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
        }
        let forgotten = self.forget_pending();
        match failed {
            Some(e) => Err(e.context("an idle client host could not be retired")),
            None => forgotten,
        }
    }

    /// Deletes the kernel rows the engine retired; keeps the ones that fail.
    fn forget_pending(&mut self) -> anyhow::Result<()> {
        let (owners, cgroups) = std::mem::take(&mut self.unforgotten);
        let mut first: Option<anyhow::Error> = None;
        for key in owners {
            let done = match &mut self.feed {
                Feed::Kernel { probe, .. } => probe.forget_owner(&key),
                Feed::Poll(poller, _) => {
                    poller.forget_owner(&key);
                    Ok(())
                }
            };
            if let Err(e) = done {
                first.get_or_insert(e);
                self.unforgotten.0.push(key);
            }
        }
        for id in cgroups {
            let done = match &mut self.feed {
                Feed::Kernel { probe, .. } => probe.forget_cgroup(id),
                Feed::Poll(poller, _) => {
                    poller.forget_cgroup(id);
                    Ok(())
                }
            };
            if let Err(e) = done {
                first.get_or_insert(e);
                self.unforgotten.1.push(id);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e.context(format!(
                "{} retired rows could not be deleted from the kernel's tables; they are \
                 tried again at each reading",
                self.unforgotten.0.len() + self.unforgotten.1.len()
            ))),
        }
    }

    /// Which servers listen on the watched ports (for those not known yet: a `/proc` scan
    /// each, once per listening socket).
    fn learn_servers(&mut self) {
        let Feed::Kernel { probe, .. } = &self.feed else {
            return;
        };
        if !probe.inbound() {
            return;
        }
        let targets = &self.targets;
        self.servers
            .update(&self.procfs, &self.seeds.listeners, &|addr| {
                targets.listened_on(addr)
            });
    }

    /// Drift repair, when a round is due: before the kernel is read, so a repair shows in
    /// the same reading. A round that fails is counted in `unreadable` and said.
    fn reconcile_if_due(&mut self) {
        if !self.reconciler.due() {
            return;
        }
        let Feed::Kernel { probe, .. } = &mut self.feed else {
            return;
        };
        let round = self.reconciler.run(
            probe,
            &mut self.tables,
            &self.procfs,
            &self.cgroups,
            &self.targets,
        );
        self.unreadable += round.unreadable;
        self.seeds.ownerless += round.ownerless;
        if let Some(listeners) = round.listeners {
            self.seeds.listeners = listeners;
            self.learn_servers();
        }
        match &round.error {
            Some(e) => {
                self.unreadable += 1;
                tracing::warn!("drift repair: {e:#}");
            }
            None => tracing::debug!(
                "drift repair: {} rows against {} sockets in {:?}: retired {}, adopted {}",
                round.rows,
                round.sockets,
                round.took,
                round.retired,
                round.adopted
            ),
        }
    }

    /// Reads the kernel and everything around it.
    pub fn read(&mut self) -> anyhow::Result<Reading> {
        if !self.unforgotten.0.is_empty() || !self.unforgotten.1.is_empty() {
            // Said once when it failed (the snapshot's error); a reading goes on regardless.
            if let Err(e) = self.forget_pending() {
                tracing::debug!("{e:#}");
            }
        }
        self.drain_events();
        self.reconcile_if_due();
        let (state, exit_events) = match &mut self.feed {
            Feed::Kernel { probe, .. } => {
                let start = std::time::Instant::now();
                let state = probe.read()?;
                tracing::trace!(
                    "kernel maps read in {:.1} ms ({} connections)",
                    start.elapsed().as_secs_f64() * 1e3,
                    state.conns.len()
                );
                // Every seed adopted or gone: later connections skip the kernel's seed table.
                if probe.seeds_pending() && state.seeds.is_empty() {
                    probe.set_seeds_pending(false)?;
                }
                if probe.inbound_seeds_pending() && state.inbound_seeds.is_empty() {
                    probe.set_inbound_seeds_pending(false)?;
                }
                (state, probe.exit_events)
            }
            Feed::Poll(poller, _) => {
                let before = poller.unreadable;
                let state =
                    poller.read(&mut self.tables, &self.procfs, &self.cgroups, &self.targets);
                self.unreadable += poller.unreadable - before;
                if !std::mem::replace(&mut self.polled, true) {
                    // The first sample found what predates zkconn.
                    self.seeds.seeded = poller.seeded.values().sum();
                    self.seeds.ownerless = poller.ownerless;
                    self.seeded = Some(poller.seeded.clone());
                }
                (state, false)
            }
        };
        let now_ns = crate::clock::now_boot_ns();
        let mut lap = crate::clock::Lap::new("reading");
        // One pass over every connection (there may be 100,000): who holds one, and in
        // which cgroups. The same rows as last time: the same answer.
        let holdings = self
            .holdings
            .take()
            .filter(|h| h.rows_version == state.rows_version)
            .unwrap_or_else(|| Holdings::of(&state));
        let referenced = self.learn_referenced(&state, &holdings.first);
        let holding: FxHashSet<OwnerKey> = holdings.first.keys().copied().collect();
        let conn_cgroups = holdings.cgroups.clone();
        self.holdings = Some(holdings);
        lap.at("owners");
        let alive = self.liveness(&state, exit_events, &referenced);
        let cgroups_removed = self.cgroups_removed(&state, &conn_cgroups);
        let cgroup_paths = self.cgroup_paths(&state, conn_cgroups);
        lap.at("liveness and cgroups");
        let nat_live = self.nat.translate(
            state.rows_version,
            state
                .conns
                .iter()
                .chain(state.seeds.iter())
                .map(|c| &c.tuple),
        );
        let refused = std::mem::take(&mut self.refused_for_nat);
        let nat_closed = self.nat.translate_closed(&refused).into_iter().collect();
        lap.at("nat");
        let holders = self.holders(&state, &alive);
        let health = self.health(&state, nat_live.len() as u64);
        lap.at("holders and health");
        Ok(Reading {
            now: self.now(),
            now_ns,
            host: hostname(),
            time: now_rfc3339(),
            kernel: state,
            holding,
            learnt: std::mem::take(&mut self.learnt),
            alive,
            refused: std::mem::take(&mut self.refused),
            seeded: self.seeded.take(),
            cgroup_paths,
            cgroups_removed,
            nat_live,
            nat_closed,
            holders,
            health,
            listeners: self.seeds.listeners.iter().map(|l| l.addr).collect(),
            servers: self.servers.facts(),
            clients_retired: std::mem::take(&mut self.clients_retired),
        })
    }

    /// Owners the kernel's rows name that were never learnt (their event was lost, or the
    /// poll hook found them): learnt now. Returns every owner the rows name.
    fn learn_referenced(
        &mut self,
        state: &KernelState,
        first_conn: &FxHashMap<OwnerKey, ConnOwner>,
    ) -> FxHashSet<OwnerKey> {
        let mut referenced: FxHashSet<OwnerKey> =
            state.proc_stats.iter().map(|(k, _)| *k).collect();
        referenced.extend(first_conn.keys().copied());
        for key in &referenced {
            if self.known.contains(key) {
                continue;
            }
            if *key == OwnerKey::UNKNOWN {
                self.known.insert(*key);
                self.learnt.push((*key, Learnt::Unknown));
                continue;
            }
            let kernel = state
                .owners
                .get(&key.tgid)
                .filter(|o| o.birth_ns == key.birth_ns);
            let conn = first_conn.get(key);
            let facts = KernelFacts {
                comm: kernel.map(|o| comm_str(&o.comm)).unwrap_or_default(),
                uid: kernel
                    .map(|o| o.uid)
                    .or(conn.map(|c| c.uid))
                    .unwrap_or(u32::MAX),
                cgroup_id: kernel
                    .map(|o| o.cgroup_id)
                    .or(conn.map(|c| c.cgroup_id))
                    .unwrap_or(0),
                cgroup_v2: None,
                cgroup_cpu: None,
            };
            self.learn(*key, facts);
        }
        referenced
    }

    /// Of the owners known, those alive: the kernel forgets an owner when its thread group
    /// exits (where it reports exits), else `/proc` says; the unknown owner lives while
    /// rows name it.
    fn liveness(
        &self,
        state: &KernelState,
        exit_events: bool,
        referenced: &FxHashSet<OwnerKey>,
    ) -> FxHashSet<OwnerKey> {
        self.known
            .iter()
            .filter(|key| {
                if **key == OwnerKey::UNKNOWN {
                    referenced.contains(key)
                } else if exit_events {
                    state
                        .owners
                        .get(&key.tgid)
                        .is_some_and(|o| o.birth_ns == key.birth_ns)
                } else {
                    self.procfs
                        .start_ns(key.tgid)
                        .is_some_and(|s| s <= key.birth_ns)
                }
            })
            .copied()
            .collect()
    }

    /// Ids of the kernel's per-cgroup table whose cgroup is removed and holds nothing.
    /// Without a cgroup2 mount nothing can be seen to exist: none.
    fn cgroups_removed(&mut self, state: &KernelState, held: &FxHashSet<u64>) -> Vec<u64> {
        if !self.cgroups.mounted() {
            return Vec::new();
        }
        let candidates: Vec<u64> = state
            .cgroup_stats
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != 0 && !held.contains(id))
            .collect();
        candidates
            .into_iter()
            .filter(|id| self.cgroups.path(*id).and_then(|p| self.cgroups.id_of(&p)) != Some(*id))
            .collect()
    }

    /// Paths of the cgroups the rows will name: of connections, counters and owners learnt
    /// without one.
    fn cgroup_paths(
        &mut self,
        state: &KernelState,
        mut ids: FxHashSet<u64>,
    ) -> FxHashMap<u64, String> {
        ids.extend(state.cgroup_stats.iter().map(|(id, _)| *id));
        ids.extend(self.pathless.values().copied());
        ids.into_iter()
            .filter_map(|id| self.cgroups.path(id).map(|p| (id, p)))
            .collect()
    }

    /// Names the current holders of open connections whose connector exited (see
    /// [`HeldBy`]).
    fn holders(
        &mut self,
        state: &KernelState,
        alive: &FxHashSet<OwnerKey>,
    ) -> HashMap<Tuple, Vec<(u32, String)>> {
        // Every owner known alive: no connection can have outlived its connector.
        if alive.len() == self.known.len() {
            self.held_by = HeldBy::default();
            return HashMap::new();
        }
        let mut wanted: Vec<Tuple> = state
            .conns
            .iter()
            .chain(state.seeds.iter())
            .filter(|c| engine::holds_a_slot(c.state) && !alive.contains(&c.owner))
            .map(|c| c.tuple)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let cache = &mut self.held_by;
        if wanted.is_empty() {
            *cache = HeldBy::default();
            return HashMap::new();
        }
        let stale = cache.at.is_none_or(|at| at.elapsed() >= HELD_BY_REFRESH);
        if wanted != cache.wanted || stale {
            let set: HashSet<Tuple> = wanted.iter().copied().collect();
            let (pids, unreadable) =
                seed::holders(&mut self.tables, &self.procfs, &self.targets, &set);
            self.unreadable += unreadable;
            let mut comms: HashMap<u32, String> = HashMap::new();
            cache.holders = pids
                .into_iter()
                .map(|(tuple, pids)| {
                    let named = pids
                        .into_iter()
                        .map(|pid| {
                            let comm = comms.entry(pid).or_insert_with(|| {
                                self.procfs.comm(pid).unwrap_or_else(|| "?".into())
                            });
                            (pid, comm.clone())
                        })
                        .collect();
                    (tuple, named)
                })
                .collect();
            cache.wanted = wanted;
            cache.at = Some(Instant::now());
        }
        cache.holders.clone()
    }
}

/// What `start_kernel` reads the host through.
struct Kernel<'a> {
    tables: &'a mut Tables,
    procfs: &'a Procfs,
    cgroups: &'a CgroupPaths,
    targets: &'a Targets,
}

/// The kernel side of `start`: the event ring buffer, the server side's switch
/// (`server_side`) and the seeds.
fn start_kernel(
    mut probe: Probe,
    k: Kernel<'_>,
    walk: Option<std::thread::JoinHandle<io::Result<seed::FdWalk>>>,
    server_side: bool,
) -> anyhow::Result<(Feed, SeedReport)> {
    let events = probe.take_events()?;
    // Before seeding: an accepted connection is then either followed from its handshake or
    // found by the scan.
    probe.set_inbound(server_side)?;
    let seeds = seed::seed(&mut probe, k.tables, k.procfs, k.cgroups, k.targets, walk)
        .context("seeding the connections that existed before start failed")?;
    probe.set_seeding(false)?;
    tracing::info!(
        "attached ({}); watching {}; seeded {} connections{}",
        probe.hook(),
        k.targets,
        seeds.seeded,
        if server_side {
            format!(
                " and {} accepted by this host's listeners",
                seeds.seeded_inbound
            )
        } else {
            String::new()
        }
    );
    Ok((
        Feed::Kernel {
            probe: Box::new(probe),
            events,
        },
        seeds,
    ))
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

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use zkconn_common::{CGROUP_DEPTH, CGROUP_NAME_LEN};

    use super::*;

    fn names(levels: &[&[u8]], truncated: bool) -> CgroupNames {
        let mut n = CgroupNames::default();
        for (slot, name) in n.names.iter_mut().zip(levels) {
            let len = name.len().min(CGROUP_NAME_LEN - 1);
            slot[..len].copy_from_slice(&name[..len]);
        }
        n.truncated = u32::from(truncated);
        n
    }

    #[rstest]
    // Innermost first in the event, outermost first in the path.
    #[case(&[b"container_e17_1410901177871_0001_01_000005".as_slice(), b"hadoop-yarn"], false, Some("/hadoop-yarn/container_e17_1410901177871_0001_01_000005"))]
    // The root cgroup is not named: nothing to show.
    #[case(&[], false, None)]
    // Deeper than kept: only a tail, marked.
    #[case(&[b"e".as_slice(), b"d", b"c", b"b", b"a"], true, Some("/…/a/b/c/d/e"))]
    // A name that is not UTF-8 is shown with replacement characters, never dropped.
    #[case(&[b"bad\xffname".as_slice()], false, Some("/bad\u{fffd}name"))]
    fn cgroup_names_from_the_kernel_spell_a_path(
        #[case] levels: &[&[u8]],
        #[case] truncated: bool,
        #[case] expected: Option<&str>,
    ) {
        assert!(levels.len() <= CGROUP_DEPTH);
        assert_eq!(cgroup_path(&names(levels, truncated)).as_deref(), expected);
    }
}

/// What a connection says of its owner: enough to learn an owner whose event was lost.
#[derive(Clone, Copy, Debug)]
struct ConnOwner {
    uid: u32,
    cgroup_id: u64,
}

/// Who holds the connections of one reading of the rows, and in which cgroups.
#[derive(Debug)]
struct Holdings {
    rows_version: u64,
    /// Each holding owner, with what its first connection says of it.
    first: FxHashMap<OwnerKey, ConnOwner>,
    cgroups: FxHashSet<u64>,
}

impl Holdings {
    fn of(state: &KernelState) -> Self {
        let mut first = FxHashMap::default();
        let mut cgroups = FxHashSet::default();
        for c in state.conns.iter().chain(state.seeds.iter()) {
            first.entry(c.owner).or_insert(ConnOwner {
                uid: c.uid,
                cgroup_id: c.cgroup_id,
            });
            cgroups.insert(c.cgroup_id);
        }
        Self {
            rows_version: state.rows_version,
            first,
            cgroups,
        }
    }
}
