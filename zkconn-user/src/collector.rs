//! The collector: owns the probe, reads kernel events as they come, remembers what it
//! learnt about each owner while it lived, and assembles snapshots.
//!
//! Owns: the flow probe → events/maps → [`model::build`]. Must not: format output.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    time::Instant,
};

use anyhow::Context as _;
use rustc_hash::{FxHashMap, FxHashSet};
use zkconn_common::{
    COMM_LEN, CgroupNames, Conn, Event, OwnerEvent, OwnerKey, Tuple, event_kind, probe_counter,
    tcp_state,
};

use crate::{
    alarm::{AlarmLog, Thresholds},
    history::History,
    probe::KernelState,
};

use crate::{
    attribution::{
        self, Clues, Rules,
        cgroup::CgroupLine,
        hierarchy::{self, Hierarchy},
    },
    cli::{NatChoice, ProbeArgs},
    limits::Limits,
    model::{
        self, AlarmThresholds, AttributionHealth, ConnectionRow, Holder, Inputs, LostDetail,
        OverflowDetail, OwnerFacts, ProbeHealth, RepairHealth, Rows, SeedHealth, Snapshot,
        Translations,
    },
    nat::Nat,
    poll::Poller,
    probe::{Capacities, Hook, HookChoice, Probe, caps::Kept},
    procfs::{CgroupPaths, ProcInfo, Procfs},
    reconcile::Reconciler,
    seed::{self, SeedReport},
    sockdiag::Tables,
    targets::Targets,
    users::Users,
};

/// Where the rows come from.
enum Source {
    /// The kernel programs: their maps, and their events as they come.
    Kernel {
        probe: Box<Probe>,
        events: crate::probe::events::Events,
    },
    /// Samples of the socket tables (`--hook poll`), with why `auto` chose it.
    Poll(Poller, Option<String>),
}

pub struct Collector {
    source: Source,
    procfs: Procfs,
    cgroups: CgroupPaths,
    /// The hierarchy cgroup rows are keyed by, chosen at start.
    hierarchy: Hierarchy,
    targets: Targets,
    rules: Rules,
    limits: Limits,
    users: Users,
    /// One entry per owner the kernel still has rows for, or that is alive: bounded by the
    /// kernel's process table (entries of owners the kernel forgot are dropped at each
    /// snapshot).
    facts: HashMap<OwnerKey, OwnerFacts>,
    seeds: SeedReport,
    started: Instant,
    /// `/proc` reads that failed for a reason other than the process being gone.
    unreadable: u64,
    /// Kernel events read since start.
    events_received: u64,
    attribution: AttributionHealth,
    history: History,
    thresholds: Thresholds,
    alarms: AlarmLog,
    /// The kernel's connection and seed rows of the last read, and when it was: turned
    /// into [`ConnectionRow`]s only when a view asks (`top`'s drill-down).
    last_conns: (Vec<zkconn_common::Conn>, Vec<zkconn_common::Conn>, u64),
    held_by: HeldBy,
    /// The capabilities kept after attach.
    kept: Kept,
    nat: Nat,
    translations: Translations,
    /// Connections refused since the last sample, for NAT look-ups.
    refused_for_nat: Vec<Tuple>,
    /// One socket-table reader per network namespace (seeding, drift repair, holders).
    tables: Tables,
    reconciler: Reconciler,
    /// See [`Retention`].
    retention: Retention,
}

/// Bound on remembered NAT sources ((server, own address) pairs).
const NAT_SOURCES_REMEMBERED: usize = 65_536;

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

/// How the collector judges trends and limits.
#[derive(Clone, Copy, Debug)]
pub struct Judgement {
    pub limits_window: std::time::Duration,
    pub thresholds: Thresholds,
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

/// The row of connections whose process could not be found or read (see
/// [`OwnerKey::UNKNOWN`]).
fn unknown_owner() -> OwnerFacts {
    let label = "unknown owner".to_owned();
    OwnerFacts {
        comm: String::new(),
        uid: None,
        user: None,
        cgroup_id: 0,
        cgroup_path: None,
        cgroup_v1: None,
        grouping: Default::default(),
        cmdline: None,
        who: attribution::Attribution {
            service: label.clone(),
            label,
            ..attribution::Attribution::default()
        },
        alive: true,
    }
}

/// Why connections that predate zkconn have no owner, for `probe.seeds.ownerless_why`.
fn ownerless_why(ownerless: u64, kept: &Kept) -> Option<String> {
    if ownerless == 0 {
        return None;
    }
    let missing: Vec<&str> = ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        .into_iter()
        .filter(|c| !kept.kept.iter().any(|k| k == c))
        .collect();
    Some(if missing.is_empty() {
        format!(
            "{ownerless} connections were held by no process whose /proc/PID/fd could be \
             read (their holder exited, or /proc entries were unreadable); they count per \
             server under \"unknown owner\""
        )
    } else {
        format!(
            "{ownerless} connections have no known owner: without {} zkconn cannot read \
             other users' /proc/PID/fd; they count per server under \"unknown owner\"",
            missing.join(" and ")
        )
    })
}

fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Collector {
    /// Loads and attaches the probe, then seeds connections that already exist. Must run
    /// inside a tokio runtime (the ring buffer is registered with it).
    pub fn start(
        targets: Targets,
        args: &ProbeArgs,
        rules: Rules,
        limits: Limits,
        judgement: Judgement,
    ) -> anyhow::Result<Self> {
        let procfs = Procfs::default();
        let cgroups = CgroupPaths::discover();
        let hierarchy = host_hierarchy(&procfs, &cgroups);
        tracing::info!("cgroup rows by {hierarchy}");
        // Opened here, while zkconn may still enter other namespaces (see `sockdiag`).
        let mut tables = Tables::default();
        let (source, mut seeds) = match args.hook {
            HookChoice::Poll if !args.fallback.is_empty() => anyhow::bail!(
                "--fallback changes the kernel programs, and --hook poll loads none: drop one \
                 of them"
            ),
            HookChoice::Poll => (Source::Poll(Poller::default(), None), SeedReport::default()),
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
                    owners: args.max_processes,
                    cgroups: args.max_cgroups,
                    ring_buffer_bytes: args.ring_buffer_kib * 1024,
                };
                match Probe::load(choice, caps, &targets, &args.fallback) {
                    Ok(probe) => {
                        Self::start_kernel(probe, &mut tables, &procfs, &cgroups, &targets)?
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
                            Source::Poll(Poller::default(), Some(why)),
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
            source,
            procfs,
            cgroups,
            hierarchy,
            targets,
            attribution: AttributionHealth {
                rules: rules.len() as u64,
                ..AttributionHealth::default()
            },
            rules,
            limits,
            users: Users::default(),
            facts: HashMap::new(),
            seeds,
            started: Instant::now(),
            unreadable: 0,
            events_received: 0,
            history: History::new(judgement.limits_window.as_secs_f64()),
            thresholds: judgement.thresholds,
            alarms: AlarmLog::default(),
            last_conns: (Vec::new(), Vec::new(), 0),
            held_by: HeldBy::default(),
            nat,
            translations: Translations::default(),
            refused_for_nat: Vec::new(),
            tables,
            reconciler: Reconciler::new(args.reconcile_interval),
            retention: Retention::new(args.retain_exited.as_secs_f64()),
            kept: Kept::default(),
        };
        // Seeded processes are attributed from what seeding read, while they lived.
        for (key, info) in infos {
            if this.seeds.per_owner.contains_key(&key) {
                let cgroup_id = info.cgroup_v2().and_then(|p| this.cgroups.id_of(p));
                this.learn_from_proc(key, info, cgroup_id.unwrap_or(0));
            }
        }
        // The baseline every trend starts from: what existed at start.
        this.sample()?;
        if let Source::Poll(poller, _) = &this.source {
            // The first sample found what predates zkconn.
            this.seeds.seeded = poller.seeded.values().sum();
            this.seeds.per_owner = poller.seeded.clone();
            this.seeds.ownerless = poller.ownerless;
            tracing::info!(
                "sampling ({}); watching {}; {} connections found",
                Hook::Poll,
                this.targets,
                this.seeds.seeded
            );
        }
        let keep_net_admin = this.nat.available();
        this.kept =
            crate::probe::caps::drop_after_attach(keep_net_admin, || match &mut this.source {
                Source::Kernel { probe, .. } => probe.check_map_access(),
                Source::Poll(..) => Ok(()),
            })?;
        tracing::info!(
            "attached and seeded: capabilities dropped to {}",
            this.kept.kept.join(" ")
        );
        Ok(this)
    }

    /// The kernel side of `start`: the event ring buffer and the seeds.
    fn start_kernel(
        mut probe: Probe,
        tables: &mut Tables,
        procfs: &Procfs,
        cgroups: &CgroupPaths,
        targets: &Targets,
    ) -> anyhow::Result<(Source, SeedReport)> {
        let events = probe.take_events()?;
        let seeds = seed::seed(&mut probe, tables, procfs, cgroups, targets)
            .context("seeding the connections that existed before start failed")?;
        probe.set_seeding(false)?;
        tracing::info!(
            "attached ({}); watching {targets}; seeded {} connections",
            probe.hook(),
            seeds.seeded
        );
        Ok((
            Source::Kernel {
                probe: Box::new(probe),
                events,
            },
            seeds,
        ))
    }

    /// What this run cannot see, one sentence each (`probe.limitations`).
    fn limitations(&self) -> Vec<String> {
        let mut out = match &self.source {
            Source::Kernel { probe, .. } => probe.limitations.clone(),
            Source::Poll(_, why) => why
                .iter()
                .cloned()
                .chain([crate::poll::LIMITATION.to_owned()])
                .collect(),
        };
        let hidden = self.tables.hidden();
        if hidden > 0 {
            out.push(format!(
                "the network namespace of {hidden} processes could not be read (another user's \
                 /proc/PID/ns/net needs CAP_SYS_PTRACE; a sandbox may hide its init): \
                 connections in a namespace only they are in are not seen by seeding, drift \
                 repair or the poll hook (the kernel hooks count their new connections)"
            ));
        }
        out
    }

    /// The hook in use.
    fn hook(&self) -> Hook {
        match &self.source {
            Source::Kernel { probe, .. } => probe.hook(),
            Source::Poll(..) => Hook::Poll,
        }
    }

    /// Seconds since start, the time base of the history.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits until the kernel has written events, then handles all of them. The poll hook
    /// has no events: it waits forever.
    pub async fn next_events(&mut self) -> anyhow::Result<()> {
        let Source::Kernel { events, .. } = &mut self.source else {
            return std::future::pending().await;
        };
        events.readable().await?;
        self.drain_events();
        Ok(())
    }

    /// Handles every event already in the ring buffer, without waiting.
    pub fn drain_events(&mut self) {
        let mut batch = Vec::new();
        {
            let Source::Kernel { events, .. } = &mut self.source else {
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
                let late = seed::now_boot_ns().saturating_sub(event.ts_ns) as f64 / 1e9;
                let at = (self.now() - late).max(0.0);
                self.history.refused(event.owner, server, at);
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
            event_kind::OWNER_EXIT => {
                if !self.facts.contains_key(&event.owner) {
                    let kernel = KernelFacts {
                        comm: comm_str(&event.info.comm),
                        uid: event.info.uid,
                        cgroup_id: event.info.cgroup_id,
                        cgroup_v2: None,
                        cgroup_cpu: None,
                    };
                    self.learn(event.owner, kernel);
                }
                if let Some(facts) = self.facts.get_mut(&event.owner) {
                    facts.alive = false;
                }
            }
            _ => {}
        }
    }

    /// Attributes a new owner, once: from `/proc` while it lives, else from what the kernel
    /// recorded (comm and cgroup v2 id).
    fn learn(&mut self, owner: OwnerKey, kernel: KernelFacts) {
        // The kernel named the cgroup at the connect: it stays known for the cgroup rows
        // even when its directory is removed before anyone looks.
        if let Some(path) = kernel.cgroup_v2.as_deref().filter(|p| !p.starts_with("/…")) {
            self.cgroups.remember(kernel.cgroup_id, path);
        }
        if let Some(info) = self.read_proc(owner) {
            self.learn_from_proc(owner, info, kernel.cgroup_id);
            return;
        }
        self.attribution.kernel_only += 1;
        let path = self.cgroups.path(kernel.cgroup_id).or(kernel.cgroup_v2);
        let mut lines: Vec<CgroupLine> = path
            .iter()
            .map(|p| CgroupLine {
                hierarchy: 0,
                controllers: String::new(),
                path: p.clone(),
            })
            .collect();
        // The cpu controller's cgroup: where YARN puts containers on hybrid (v1) hosts, and
        // the row such a process counts in there (the same path twice classifies once).
        if let Some(cpu) = kernel.cgroup_cpu {
            lines.push(CgroupLine {
                hierarchy: 1,
                controllers: "cpu".to_owned(),
                path: cpu,
            });
        }
        let who = attribution::classify(
            &Clues {
                comm: &kernel.comm,
                exe: None,
                argv: &[],
                cmdline: "",
                cgroups: &lines,
                container_env: None,
                cwd: None,
            },
            &self.rules,
        );
        let facts = OwnerFacts {
            user: self.users.name(kernel.uid),
            comm: kernel.comm,
            uid: Some(kernel.uid),
            cgroup_id: kernel.cgroup_id,
            cgroup_v1: hierarchy::v1_cgroup(&lines),
            grouping: hierarchy::group_of(self.hierarchy, &lines),
            cgroup_path: path,
            cmdline: None,
            who,
            alive: true,
        };
        self.facts.insert(owner, facts);
    }

    fn learn_from_proc(&mut self, owner: OwnerKey, info: ProcInfo, cgroup_id: u64) {
        self.attribution.from_proc += 1;
        // The process may have moved since it connected: only a path that is still the
        // kernel's cgroup is remembered for it.
        if let Some(path) = info.cgroup_v2()
            && self.cgroups.id_of(path) == Some(cgroup_id)
        {
            self.cgroups.remember(cgroup_id, path);
        }
        if info.environ_unreadable {
            self.attribution.environ_unreadable += 1;
        }
        let who = attribution::classify(&info.clues(), &self.rules);
        let facts = OwnerFacts {
            user: self.users.name(info.uid),
            uid: Some(info.uid),
            cgroup_id,
            cgroup_v1: hierarchy::v1_cgroup(&info.cgroups),
            grouping: hierarchy::group_of(self.hierarchy, &info.cgroups),
            cgroup_path: info.cgroup_v2().map(str::to_owned),
            who,
            alive: true,
            comm: info.comm,
            cmdline: Some(info.cmdline),
        };
        self.facts.insert(owner, facts);
    }

    /// `/proc` facts for `owner`, if the pid still belongs to it: a process that started
    /// after the owner's birth is a newer process reusing the pid.
    fn read_proc(&mut self, owner: OwnerKey) -> Option<ProcInfo> {
        match self.procfs.process(owner.tgid) {
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

    /// Records one point of every owner's history and logs alarm transitions. Long-running
    /// modes call it once a second.
    pub fn sample(&mut self) -> anyhow::Result<()> {
        self.judged_rows().map(drop)
    }

    /// Rows with their trends, suspects and alarms, as of now; the sample is recorded.
    fn judged_rows(&mut self) -> anyhow::Result<(Rows, KernelState)> {
        let (mut rows, state) = self.rows()?;
        let now = self.now();
        self.history.record(&rows, now);
        self.history.annotate(&mut rows, now, &self.thresholds);
        self.alarms.update(&rows.servers);
        Ok((rows, state))
    }

    /// Drift repair, when a round is due: before the kernel is read for rows, so a repair
    /// shows in the same snapshot. A round that fails is counted in `unreadable` and said.
    fn reconcile_if_due(&mut self) {
        if !self.reconciler.due() {
            return;
        }
        let Source::Kernel { probe, .. } = &mut self.source else {
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

    /// Reads the kernel and builds the rows.
    fn rows(&mut self) -> anyhow::Result<(Rows, KernelState)> {
        self.drain_events();
        self.reconcile_if_due();
        let (mut state, exit_events) = match &mut self.source {
            Source::Kernel { probe, .. } => {
                let state = probe.read()?;
                // Every seed adopted or gone: later connections skip the kernel's seed table.
                if probe.seeds_pending() && state.seeds.is_empty() {
                    probe.set_seeds_pending(false)?;
                }
                (state, probe.exit_events)
            }
            Source::Poll(poller, _) => {
                let before = poller.unreadable;
                let state =
                    poller.read(&mut self.tables, &self.procfs, &self.cgroups, &self.targets);
                self.unreadable += poller.unreadable - before;
                (state, false)
            }
        };
        let now_ns = seed::now_boot_ns();
        // Owners seen only through maps (their event was lost): attribute them now.
        let mut first_conn: FxHashMap<OwnerKey, &zkconn_common::Conn> = FxHashMap::default();
        for c in state.conns.iter().chain(&state.seeds) {
            first_conn.entry(c.owner).or_insert(c);
        }
        let mut referenced: FxHashSet<OwnerKey> =
            state.proc_stats.iter().map(|(k, _)| *k).collect();
        referenced.extend(first_conn.keys().copied());
        for key in &referenced {
            if self.facts.contains_key(key) {
                continue;
            }
            if *key == OwnerKey::UNKNOWN {
                self.facts.insert(*key, unknown_owner());
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
        // Liveness: the kernel forgets an owner when its thread group exits.
        for (key, facts) in &mut self.facts {
            facts.alive = if *key == OwnerKey::UNKNOWN {
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
            };
        }
        // Exited, holding nothing, shown long enough: out of the rows and the kernel's
        // tables, into the roll-ups' retired counts.
        let holding: FxHashSet<OwnerKey> = first_conn.keys().copied().collect();
        let now = self.now();
        let due = self.retention.due(&self.facts, &holding, now);
        let due_counters: FxHashMap<OwnerKey, zkconn_common::Counters> = if due.is_empty() {
            FxHashMap::default()
        } else {
            let wanted: FxHashSet<OwnerKey> = due.iter().copied().collect();
            let found = state
                .proc_stats
                .iter()
                .filter(|(k, _)| wanted.contains(k))
                .copied()
                .collect();
            state.proc_stats.retain(|(k, _)| !wanted.contains(k));
            found
        };
        for key in due {
            let counters = due_counters.get(&key).copied().unwrap_or_default();
            match &mut self.source {
                Source::Kernel { probe, .. } => probe.forget_owner(&key)?,
                Source::Poll(poller, _) => poller.forget_owner(&key),
            }
            self.seeds.per_owner.remove(&key);
            if let Some(facts) = self.facts.remove(&key) {
                self.retention.fold(facts.who, &counters, now);
            }
        }
        self.retention.age(&self.facts, now);
        // Bounded: an owner that is gone and that no kernel row names is forgotten.
        self.facts
            .retain(|key, facts| facts.alive || referenced.contains(key));
        // Cgroups removed (a finished YARN container) and holding nothing: after the same
        // time, out of the cgroup rows and the kernel's per-cgroup table.
        let held_cgroups: FxHashSet<u64> = state
            .conns
            .iter()
            .chain(&state.seeds)
            .map(|c| c.cgroup_id)
            .collect();
        let mounted = self.cgroups.mounted();
        let gone: Vec<u64> = state
            .cgroup_stats
            .iter()
            .map(|(id, _)| *id)
            // Without a cgroup2 mount nothing can be seen to exist: nothing is retired.
            .filter(|id| mounted && *id != 0 && !held_cgroups.contains(id))
            .filter(|id| self.cgroups.path(*id).and_then(|p| self.cgroups.id_of(&p)) != Some(*id))
            .collect();
        let due_cgroups = self.retention.due_cgroups(&gone, now);
        if !due_cgroups.is_empty() {
            for id in &due_cgroups {
                match &mut self.source {
                    Source::Kernel { probe, .. } => probe.forget_cgroup(*id)?,
                    Source::Poll(poller, _) => poller.forget_cgroup(*id),
                }
            }
            let due: FxHashSet<u64> = due_cgroups.into_iter().collect();
            state.cgroup_stats.retain(|(id, _)| !due.contains(id));
        }

        let translated = self
            .nat
            .translate(state.conns.iter().chain(&state.seeds).map(|c| &c.tuple));
        self.translations.learn(translated, NAT_SOURCES_REMEMBERED);
        let refused = std::mem::take(&mut self.refused_for_nat);
        let seen = self.nat.translate_closed(&refused);
        self.translations
            .learn_sources(seen, NAT_SOURCES_REMEMBERED);
        let cgroups = std::cell::RefCell::new(&mut self.cgroups);
        let path = |id: u64| cgroups.borrow_mut().path(id);
        let rows = model::build(&Inputs {
            conns: &state.conns,
            seeds: &state.seeds,
            proc_stats: &state.proc_stats,
            cgroup_stats: &state.cgroup_stats,
            server_stats: &state.server_stats,
            limits: &self.limits,
            facts: &self.facts,
            seeded: &self.seeds.per_owner,
            cgroup_path: &path,
            nat: &self.translations,
            retired: &self.retention.retired(),
            now_ns,
        });
        let mut rows = rows;
        self.fill_held_by(&mut rows, &state);
        // Kept for `connections()`; nothing else reads them after this.
        self.last_conns = (
            std::mem::take(&mut state.conns),
            std::mem::take(&mut state.seeds),
            now_ns,
        );
        Ok((rows, state))
    }

    /// Names the current holders of connections whose connector exited (see [`HeldBy`]).
    fn fill_held_by(&mut self, rows: &mut Rows, state: &KernelState) {
        let orphaned: HashSet<OwnerKey> = rows
            .processes
            .iter()
            .filter(|p| !p.alive && p.states.open + p.states.close_wait > 0)
            .map(|p| p.key)
            .collect();
        if orphaned.is_empty() {
            self.held_by = HeldBy::default();
            return;
        }
        let held = |c: &&Conn| {
            orphaned.contains(&c.owner)
                && matches!(
                    c.state,
                    tcp_state::SYN_SENT | tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
                )
        };
        let mut wanted: Vec<Tuple> = state
            .conns
            .iter()
            .chain(&state.seeds)
            .filter(held)
            .map(|c| c.tuple)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let cache = &mut self.held_by;
        if wanted.is_empty() {
            *cache = HeldBy::default();
            return;
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
        let mut per_owner: HashMap<OwnerKey, BTreeMap<(u32, String), u64>> = HashMap::new();
        for c in state.conns.iter().chain(&state.seeds).filter(held) {
            for holder in cache.holders.get(&c.tuple).into_iter().flatten() {
                *per_owner
                    .entry(c.owner)
                    .or_default()
                    .entry(holder.clone())
                    .or_default() += 1;
            }
        }
        for p in &mut rows.processes {
            if let Some(holders) = per_owner.remove(&p.key) {
                p.held_by = holders
                    .into_iter()
                    .map(|((pid, comm), connections)| Holder {
                        pid,
                        comm,
                        connections,
                    })
                    .collect();
            }
        }
    }

    /// New limits and rules (SIGHUP). Rules apply to owners first seen from now on. Targets
    /// cannot change while attached: a difference is returned as a sentence to log.
    pub fn reconfigure(&mut self, limits: Limits, rules: Rules, targets: &Targets) -> String {
        self.limits = limits;
        self.attribution.rules = rules.len() as u64;
        self.rules = rules;
        if targets.names() == self.targets.names() {
            String::new()
        } else {
            format!(
                "; the targets changed ({} now, {} watched): restart zkconn to watch them",
                targets.names().join(", "),
                self.targets.names().join(", ")
            )
        }
    }

    /// The live connections as of the last sample or snapshot.
    pub fn connections(&self) -> Vec<ConnectionRow> {
        let (conns, seeds, now_ns) = &self.last_conns;
        model::connections(conns, seeds, &self.translations, *now_ns)
    }

    /// Reads the kernel and builds the document.
    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let (rows, state) = self.judged_rows()?;
        let now = self.now();
        let c = state.counters;
        // The kernel counts an event it could not write; a perf buffer also reports the
        // events it dropped, which are the same events where the helper returns the error
        // (4.18 does not): the larger of the two, never their sum.
        let perf_lost = match &self.source {
            Source::Kernel { events, .. } => events.lost(),
            Source::Poll(..) => 0,
        };
        let lost_detail = LostDetail {
            events: c[probe_counter::LOST_EVENTS as usize].max(perf_lost),
            recursion_misses: state.recursion_misses,
        };
        // The kernel's counts, plus what did not fit while seeding.
        let overflow_detail = OverflowDetail {
            connections: c[probe_counter::OVERFLOW_CONNS as usize]
                + self.seeds.overflow_connections,
            processes: c[probe_counter::OVERFLOW_OWNERS as usize] + self.seeds.overflow_processes,
            counters: c[probe_counter::OVERFLOW_STATS as usize],
        };
        // Poll finds owners at every sample, not only at start.
        let ownerless = match &self.source {
            Source::Kernel { .. } => self.seeds.ownerless,
            Source::Poll(poller, _) => poller.ownerless,
        };
        Ok(Snapshot {
            schema: model::SCHEMA,
            host: hostname(),
            time: now_rfc3339(),
            observed_secs: now,
            probe: ProbeHealth {
                hook: Some(self.hook()),
                refusal_detection: match &self.source {
                    Source::Kernel { probe, .. } => Some(probe.refusal),
                    Source::Poll(..) => None,
                },
                events: match &self.source {
                    Source::Kernel { events, .. } => Some(events.kind()),
                    Source::Poll(..) => None,
                },
                events_received: self.events_received,
                retention: model::RetentionHealth {
                    after_secs: self.retention.after,
                    processes: self.retention.processes,
                    cgroups: self.retention.cgroups,
                    containers: self.retention.containers,
                    applications: self.retention.applications,
                },
                lost: lost_detail.events + lost_detail.recursion_misses.unwrap_or(0),
                overflow: overflow_detail.connections
                    + overflow_detail.processes
                    + overflow_detail.counters,
                lost_detail,
                overflow_detail,
                seeds: SeedHealth {
                    seeded: self.seeds.seeded,
                    adopted: c[probe_counter::SEEDS_ADOPTED as usize],
                    conflicts: self.seeds.conflicts,
                    ownerless,
                    ownerless_why: ownerless_why(ownerless, &self.kept),
                },
                repaired: match &self.source {
                    Source::Kernel { .. } => self.reconciler.health(),
                    // Every sample is a full reading: there is nothing to repair.
                    Source::Poll(..) => RepairHealth::default(),
                },
                attribution: self.attribution.clone(),
                nat: self.nat.health(self.translations.live.len() as u64),
                unreadable: self.unreadable + self.seeds.unreadable,
                capabilities: self.kept.clone(),
                fallbacks: match &self.source {
                    Source::Kernel { probe, .. } => probe.fallbacks.clone(),
                    Source::Poll(..) => Vec::new(),
                },
                limitations: self.limitations(),
            },
            targets: self.targets.names(),
            max_client_cnxns: self.limits.info(),
            alarm_thresholds: AlarmThresholds {
                warn_percent: self.thresholds.warn * 100.0,
                crit_percent: self.thresholds.crit * 100.0,
            },
            trend_window_secs: self.history.window_at(now),
            cgroups_hierarchy: self.hierarchy,
            rows,
        })
    }
}

/// A tick every `period`, the first one after `period` (not at once); ticks missed while
/// busy are skipped, not bunched.
pub async fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t.tick().await;
    t
}

/// The hierarchy of this host (see [`hierarchy::detect`]), from every process's
/// `/proc/PID/cgroup` at start; a process that cannot be read is left out.
fn host_hierarchy(procfs: &Procfs, cgroups: &CgroupPaths) -> Hierarchy {
    let lines: Vec<Vec<CgroupLine>> = procfs
        .pids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pid| procfs.cgroups(pid).ok())
        .collect();
    hierarchy::detect(cgroups.mounted(), lines.iter().map(Vec::as_slice))
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

/// Exited processes leave the process rows and the kernel's tables once they hold no
/// connection and were shown for `after` seconds; their counts stay in the roll-ups, one
/// [`model::Retired`] per attribution. Bounded: past [`RETIRED_KINDS`] attributions, the
/// container and application are dropped from the key (the service rows stay exact).
pub struct Retention {
    after: f64,
    /// When each owner was first seen gone and idle.
    gone_since: HashMap<OwnerKey, f64>,
    /// Retired processes summed by what they ran as, with when the last was added.
    retired: BTreeMap<RetiredKey, (model::Retired, f64)>,
    /// Processes retired since start.
    pub processes: u64,
    /// When each cgroup was first seen removed and idle.
    cgroups_gone_since: HashMap<u64, f64>,
    /// Cgroups retired since start.
    pub cgroups: u64,
    /// YARN containers and applications whose rows were retired since start.
    pub containers: u64,
    pub applications: u64,
}

/// (service, YARN container, YARN application).
type RetiredKey = (String, Option<String>, Option<String>);

/// Distinct attributions kept with their container and application.
pub const RETIRED_KINDS: usize = 16_384;

impl Retention {
    pub fn new(after: f64) -> Self {
        Self {
            after,
            gone_since: HashMap::new(),
            retired: BTreeMap::new(),
            processes: 0,
            cgroups_gone_since: HashMap::new(),
            cgroups: 0,
            containers: 0,
            applications: 0,
        }
    }

    /// Finished YARN containers and applications out of the rows, as their processes
    /// before them: a container with no process left (live or not yet retired) whose last
    /// process retired `after` ago goes, its counts into its application's; then an
    /// application with no container row and no process left, the same time after its last
    /// process, goes, its counts into its service's. On a node that runs containers for
    /// weeks, the rows stay those of what ran recently.
    fn age(&mut self, facts: &HashMap<OwnerKey, OwnerFacts>, now: f64) {
        let mut containers: FxHashSet<&str> = FxHashSet::default();
        let mut applications: FxHashSet<&str> = FxHashSet::default();
        for f in facts.values() {
            containers.extend(f.who.yarn_container.as_deref());
            applications.extend(f.who.yarn_application.as_deref());
        }
        let after = self.after;
        let due = |key: &RetiredKey, last: f64| {
            now - last >= after && {
                match key {
                    (_, Some(c), _) => !containers.contains(c.as_str()),
                    (_, None, Some(a)) => !applications.contains(a.as_str()),
                    (_, None, None) => false,
                }
            }
        };
        let containers_due: Vec<RetiredKey> = self
            .retired
            .iter()
            .filter(|(k, (_, last))| k.1.is_some() && due(k, *last))
            .map(|(k, _)| k.clone())
            .collect();
        self.containers += self.retire(containers_due, |k| &k.1, |k| (k.0, None, k.2));
        let with_container: FxHashSet<&str> = self
            .retired
            .keys()
            .filter(|k| k.1.is_some())
            .filter_map(|k| k.2.as_deref())
            .collect();
        let applications_due: Vec<RetiredKey> = self
            .retired
            .iter()
            .filter(|(k, (_, last))| {
                k.1.is_none()
                    && k.2.as_deref().is_some_and(|a| !with_container.contains(a))
                    && due(k, *last)
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.applications += self.retire(applications_due, |k| &k.2, |k| (k.0, None, None));
    }

    /// Merges each of `due` into the entry `into` names, and returns how many of the names
    /// `name` reads off them are gone from every entry (a container with rows under two
    /// services goes when its last one does).
    fn retire(
        &mut self,
        due: Vec<RetiredKey>,
        name: fn(&RetiredKey) -> &Option<String>,
        into: fn(RetiredKey) -> RetiredKey,
    ) -> u64 {
        let mut gone = Vec::new();
        for key in due {
            if let Some((r, last)) = self.retired.remove(&key) {
                gone.extend(name(&key).clone());
                self.merge(into(key), r, last);
            }
        }
        let left: FxHashSet<&String> = self
            .retired
            .keys()
            .filter_map(|k| name(k).as_ref())
            .collect();
        gone.retain(|n| !left.contains(n));
        gone.sort_unstable();
        gone.dedup();
        gone.len() as u64
    }

    /// Adds `r` to the entry of `key`, which takes `r`'s attribution without what `key`
    /// leaves out.
    fn merge(&mut self, key: RetiredKey, mut r: model::Retired, last: f64) {
        r.who.yarn_container = key.1.clone();
        r.who.yarn_application = key.2.clone();
        if key.1.is_none() && key.2.is_none() {
            r.who.yarn_source = None;
        }
        let (into, at) = self.retired.entry(key).or_insert_with(|| {
            (
                model::Retired {
                    who: r.who.clone(),
                    ..Default::default()
                },
                last,
            )
        });
        into.opened += r.opened;
        into.closed += r.closed;
        into.failed += r.failed;
        into.rejected += r.rejected;
        into.processes += r.processes;
        *at = at.max(last);
    }

    /// Of the cgroups removed and idle now (`gone`), those so for `after` seconds.
    fn due_cgroups(&mut self, gone: &[u64], now: f64) -> Vec<u64> {
        let gone_now: FxHashSet<u64> = gone.iter().copied().collect();
        self.cgroups_gone_since
            .retain(|id, _| gone_now.contains(id));
        let mut due = Vec::new();
        for id in gone {
            let since = *self.cgroups_gone_since.entry(*id).or_insert(now);
            if now - since >= self.after {
                due.push(*id);
            }
        }
        for id in &due {
            self.cgroups_gone_since.remove(id);
        }
        self.cgroups += due.len() as u64;
        due
    }

    /// The owners to retire now: not alive, holding no connection, for `after` seconds.
    fn due(
        &mut self,
        facts: &HashMap<OwnerKey, OwnerFacts>,
        holding: &FxHashSet<OwnerKey>,
        now: f64,
    ) -> Vec<OwnerKey> {
        self.gone_since
            .retain(|key, _| facts.get(key).is_some_and(|f| !f.alive) && !holding.contains(key));
        let mut due = Vec::new();
        for (key, f) in facts {
            if f.alive || holding.contains(key) {
                continue;
            }
            let since = *self.gone_since.entry(*key).or_insert(now);
            if now - since >= self.after {
                due.push(*key);
            }
        }
        for key in &due {
            self.gone_since.remove(key);
        }
        due
    }

    fn fold(
        &mut self,
        who: crate::attribution::Attribution,
        c: &zkconn_common::Counters,
        now: f64,
    ) {
        let mut key = (
            who.service.clone(),
            who.yarn_container.clone(),
            who.yarn_application.clone(),
        );
        let mut who = who;
        if !self.retired.contains_key(&key) && self.retired.len() >= RETIRED_KINDS {
            key.1 = None;
            key.2 = None;
            who.yarn_container = None;
            who.yarn_application = None;
        }
        let (r, last) = self.retired.entry(key).or_insert_with(|| {
            (
                model::Retired {
                    who,
                    ..model::Retired::default()
                },
                now,
            )
        });
        *last = now;
        r.opened += c.opened;
        r.closed += c.closed;
        r.failed += c.failed;
        r.rejected += c.rejected;
        r.processes += 1;
        self.processes += 1;
    }

    fn retired(&self) -> Vec<model::Retired> {
        self.retired.values().map(|(r, _)| r.clone()).collect()
    }
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

    fn yarn(service: &str, container: &str, app: &str) -> crate::attribution::Attribution {
        crate::attribution::Attribution {
            service: service.into(),
            yarn_container: Some(container.into()),
            yarn_application: Some(app.into()),
            ..Default::default()
        }
    }

    fn opened(n: u64) -> zkconn_common::Counters {
        zkconn_common::Counters {
            opened: n,
            ..Default::default()
        }
    }

    /// A finished container leaves the rows `after` its last process retired, its counts
    /// in its application's; the application leaves once no container or process of it is
    /// left, its counts in the service's. A container with a process still known stays.
    #[test]
    fn finished_containers_then_applications_retire_into_what_contains_them() {
        let mut r = Retention::new(10.0);
        r.fold(yarn("Spark", "c1", "app1"), &opened(3), 0.0);
        r.fold(yarn("Spark", "c2", "app1"), &opened(4), 5.0);
        r.fold(yarn("Spark", "c3", "app2"), &opened(1), 0.0);
        let mut facts = HashMap::new();
        // c3 has a process still known (exited, not yet retired).
        facts.insert(
            OwnerKey {
                tgid: 9,
                _pad: 0,
                birth_ns: 1,
            },
            OwnerFacts {
                who: yarn("Spark", "c3", "app2"),
                ..Default::default()
            },
        );
        let keys = |r: &Retention| -> Vec<(Option<String>, Option<String>, u64)> {
            r.retired()
                .into_iter()
                .map(|x| (x.who.yarn_container, x.who.yarn_application, x.opened))
                .collect()
        };
        let s = |v: &str| Some(v.to_owned());
        r.age(&facts, 9.0);
        assert_eq!(keys(&r).len(), 3);
        // c1 is due, c2 not yet: app1 keeps c1's counts without its row.
        r.age(&facts, 10.0);
        assert_eq!(
            keys(&r),
            [
                (None, s("app1"), 3),
                (s("c2"), s("app1"), 4),
                (s("c3"), s("app2"), 1)
            ]
        );
        assert_eq!((r.containers, r.applications), (1, 0));
        // c2 goes, then app1 (nothing of it left, last process 10 s ago); c3 stays.
        r.age(&facts, 15.0);
        assert_eq!(keys(&r), [(None, None, 7), (s("c3"), s("app2"), 1)]);
        assert_eq!((r.containers, r.applications), (2, 1));
        // Its process retired (gone from the facts): c3 and app2 go together.
        r.age(&HashMap::new(), 15.0);
        assert_eq!(keys(&r), [(None, None, 8)]);
        assert_eq!((r.containers, r.applications), (3, 2));
        assert_eq!(r.retired()[0].processes, 3);
    }

    /// A container whose processes ran as two services is one container retired, when its
    /// last row goes.
    #[test]
    fn a_container_of_two_services_is_retired_once() {
        let mut r = Retention::new(10.0);
        r.fold(yarn("Spark", "c1", "app1"), &opened(1), 0.0);
        r.fold(yarn("python3", "c1", "app1"), &opened(1), 5.0);
        r.age(&HashMap::new(), 10.0);
        assert_eq!((r.containers, r.applications), (0, 0));
        // The last process of both ran at 5: container and application go together.
        r.age(&HashMap::new(), 15.0);
        assert_eq!((r.containers, r.applications), (1, 1));
        assert_eq!(r.retired().len(), 2);
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
