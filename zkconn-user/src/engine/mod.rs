//! The engine: turns each [`Reading`] of the source into a complete [`Snapshot`] in one
//! pass: owners attributed, rows built, judged against their history, assembled.
//!
//! Owns: what zkconn remembers between readings (what each owner is, the history, the
//! alarm log, retention, NAT sources learnt). Pure: no I/O and no clock; everything it needs
//! is in the reading, and what it wants done to the kernel's tables it returns as
//! [`Orders`], which the source carries out at once (see `driver::Watch::snapshot`).
//! Unit-tested with `Reading` fixtures (`tests.rs`).

mod retention;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use rustc_hash::{FxHashMap, FxHashSet};
use zkconn_common::{ClientCounters, ClientKey, Conn, OwnerKey, Tuple, tcp_state};

pub use self::retention::{ClientRetention, RETIRED_KINDS, Retention};
use crate::{
    alarm::{AlarmLog, Thresholds},
    attribution::{
        self, Clues, Rules,
        cgroup::CgroupLine,
        hierarchy::{self, Hierarchy},
    },
    history::History,
    limits::{LimitSource, Limits},
    model::{
        self, Aggregates, AlarmThresholds, AttributionHealth, ConnectionRow, Holder, Inputs,
        OwnerFacts, ProbeHealth, RetentionHealth, ServerSideInputs, Snapshot, SourceHealth,
        Translations,
    },
    probe::KernelState,
    procfs::ProcInfo,
};

/// Bound on remembered NAT sources ((server, own address) pairs).
const NAT_SOURCES_REMEMBERED: usize = 65_536;

/// Everything the source read in one go: the kernel's state and what it learnt around it.
#[derive(Debug, Default)]
pub struct Reading {
    /// Seconds since start, the time base of the history.
    pub now: f64,
    /// Boot-clock now, to age connections.
    pub now_ns: u64,
    pub host: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub kernel: KernelState,
    /// Owners with a live connection (or seed) in `kernel`.
    pub holding: FxHashSet<OwnerKey>,
    /// Owners first seen (or seen again by the kernel) since the last reading.
    pub learnt: Vec<(OwnerKey, Learnt)>,
    /// Of the owners the source has reported and not been told to forget, those alive.
    pub alive: FxHashSet<OwnerKey>,
    /// Refusals the kernel reported since the last reading.
    pub refused: Vec<Refusal>,
    /// Seeded connections per owner, when (re)established: at start, and for the poll hook
    /// after its first sample.
    pub seeded: Option<HashMap<OwnerKey, u64>>,
    /// Cgroup paths of the ids this reading names, where known.
    pub cgroup_paths: FxHashMap<u64, String>,
    /// Ids of the kernel's per-cgroup table whose cgroup is removed and holds nothing.
    pub cgroups_removed: Vec<u64>,
    /// Live connections whose server sees another source address, and that address.
    pub nat_live: FxHashMap<Tuple, [u8; 16]>,
    /// Refused connections the host's NAT table still knew, with the address the server saw.
    pub nat_closed: Vec<(Tuple, [u8; 16])>,
    /// Who holds each open connection whose connector exited (pid, comm).
    pub holders: HashMap<Tuple, Vec<(u32, String)>>,
    /// This host's listening sockets, as last found: which listener accepted what.
    pub listeners: Vec<std::net::SocketAddr>,
    /// Client hosts deleted from the kernel's table since the last reading (ordered by
    /// [`Orders::forget_clients`]), with their last counts.
    pub clients_retired: Vec<(ClientKey, ClientCounters)>,
    /// What is known of the servers listening on watched ports, per listening address.
    pub servers: std::collections::BTreeMap<std::net::SocketAddr, crate::listener::ListenerFacts>,
    pub health: SourceHealth,
}

/// What the source could learn of a new owner.
#[derive(Debug)]
pub enum Learnt {
    /// `/proc` read while the process lived.
    Proc {
        info: Box<ProcInfo>,
        cgroup_id: u64,
        user: Option<String>,
    },
    /// Gone before `/proc` could be read: what the kernel recorded at its first connect.
    Kernel {
        comm: String,
        uid: u32,
        user: Option<String>,
        cgroup_id: u64,
        /// Its cgroup v2 path, as the kernel named it or as found since.
        cgroup_v2: Option<String>,
        /// The cpu controller's path (v1), as the kernel named it.
        cgroup_cpu: Option<String>,
    },
    /// [`OwnerKey::UNKNOWN`]: connections no process could be found for.
    Unknown,
}

/// A refusal, when it happened (seconds since start).
#[derive(Clone, Debug)]
pub struct Refusal {
    pub owner: OwnerKey,
    pub server: String,
    /// The refused connection's local IP.
    pub local_ip: String,
    pub at: f64,
}

/// [`Aggregates`] with what they were worked out from.
struct KeptAggregates {
    aggregates: Aggregates,
    rows_version: u64,
    nat: FxHashMap<Tuple, [u8; 16]>,
    v1: FxHashSet<OwnerKey>,
}

/// What the engine asks of the source after a reading.
#[derive(Debug, Default)]
pub struct Orders {
    /// Owners retired: out of the kernel's tables and the source's memory.
    pub forget_owners: Vec<OwnerKey>,
    /// Removed cgroups retired: out of the kernel's per-cgroup table.
    pub forget_cgroups: Vec<u64>,
    /// Owners gone that no kernel row names: the source need not watch them any more.
    pub dropped: Vec<OwnerKey>,
    /// Idle client hosts of this host's listeners: out of the kernel's table, if their
    /// counts are still these.
    pub forget_clients: Vec<(ClientKey, ClientCounters)>,
}

/// The engine's configuration, fixed at start (limits and rules change on reload).
pub struct Config {
    pub limits: Limits,
    pub rules: Rules,
    pub thresholds: Thresholds,
    /// The window of trends and limits, in seconds.
    pub window_secs: f64,
    /// Seconds an exited process holding nothing stays a row of its own.
    pub retain_secs: f64,
    /// The hierarchy cgroup rows are keyed by.
    pub hierarchy: Hierarchy,
    pub targets: Vec<String>,
}

pub struct Engine {
    limits: Limits,
    rules: Rules,
    thresholds: Thresholds,
    hierarchy: Hierarchy,
    targets: Vec<String>,
    /// One entry per owner the kernel still has rows for, or that is alive.
    facts: HashMap<OwnerKey, OwnerFacts>,
    seeded: HashMap<OwnerKey, u64>,
    attribution: AttributionHealth,
    history: History,
    alarms: AlarmLog,
    retention: Retention,
    clients: ClientRetention,
    client_trends: crate::judge_clients::ClientTrends,
    /// (listener, client IP) of the client hosts whose alarm is raised: not retired.
    alarmed_clients: FxHashSet<(String, String)>,
    /// The process on each of this host's listeners, as last seen (kept while a listener is
    /// gone: a restart is seen when it comes back; a host has few listening addresses).
    listener_pids: HashMap<std::net::SocketAddr, u32>,
    translations: Translations,
    /// The connection and seed rows of the last reading, and when it was: turned into
    /// [`ConnectionRow`]s only when a view asks (`top`'s drill-down).
    last_conns: (Arc<Vec<Conn>>, Arc<Vec<Conn>>, u64),
    /// The last aggregates of the connections, and what they were worked out from.
    aggregates: Option<KeptAggregates>,
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Self {
            attribution: AttributionHealth {
                rules: config.rules.len() as u64,
                ..AttributionHealth::default()
            },
            limits: config.limits,
            rules: config.rules,
            thresholds: config.thresholds,
            hierarchy: config.hierarchy,
            targets: config.targets,
            facts: HashMap::new(),
            seeded: HashMap::new(),
            history: History::new(config.window_secs),
            alarms: AlarmLog::default(),
            retention: Retention::new(config.retain_secs),
            clients: ClientRetention::default(),
            client_trends: crate::judge_clients::ClientTrends::default(),
            alarmed_clients: FxHashSet::default(),
            listener_pids: HashMap::new(),
            translations: Translations::default(),
            last_conns: (Arc::default(), Arc::default(), 0),
            aggregates: None,
        }
    }

    /// New limits and rules (SIGHUP). Rules apply to owners first seen from now on.
    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn reconfigure(&mut self, limits: Limits, rules: Rules) {
        self.limits = limits;
        self.attribution.rules = rules.len() as u64;
        self.rules = rules;
    }

    /// The live connections as of the last reading.
    pub fn connections(&self) -> Vec<ConnectionRow> {
        let (conns, seeds, now_ns) = &self.last_conns;
        model::connections(conns, seeds, &self.translations, *now_ns)
    }

    /// One reading in, one complete snapshot out, and what the source should forget.
    pub fn tick(&mut self, mut r: Reading) -> (Snapshot, Orders) {
        let now = r.now;
        if let Some(seeded) = r.seeded.take() {
            self.seeded = seeded;
        }
        for (key, learnt) in std::mem::take(&mut r.learnt) {
            self.learn(key, learnt);
        }
        for refusal in std::mem::take(&mut r.refused) {
            self.history
                .refused(refusal.owner, refusal.server, refusal.local_ip, refusal.at);
        }
        let state = &mut r.kernel;
        let holding = std::mem::take(&mut r.holding);
        let mut referenced: FxHashSet<OwnerKey> =
            state.proc_stats.iter().map(|(k, _)| *k).collect();
        referenced.extend(holding.iter().copied());
        for (key, facts) in &mut self.facts {
            facts.alive = r.alive.contains(key);
        }

        // Exited, holding nothing, shown long enough: out of the rows and the kernel's
        // tables, into the roll-ups' retired counts.
        let mut orders = Orders::default();
        let due = self.retention.due(&self.facts, &holding, now);
        if !due.is_empty() {
            let wanted: FxHashSet<OwnerKey> = due.iter().copied().collect();
            let counters: FxHashMap<OwnerKey, zkconn_common::Counters> = state
                .proc_stats
                .iter()
                .filter(|(k, _)| wanted.contains(k))
                .copied()
                .collect();
            state.proc_stats.retain(|(k, _)| !wanted.contains(k));
            for key in due {
                self.seeded.remove(&key);
                if let Some(facts) = self.facts.remove(&key) {
                    let c = counters.get(&key).copied().unwrap_or_default();
                    if let crate::attribution::hierarchy::Grouping::V1(cg) = &facts.grouping {
                        let container = facts.who.yarn_container.as_deref();
                        self.retention.fold_v1(cg, facts.cgroup_id, container, &c);
                    }
                    self.retention.fold(facts.who, &c, now);
                }
                orders.forget_owners.push(key);
            }
        }
        self.retention.age(&self.facts, now);
        // Bounded: an owner that is gone and that no kernel row names is forgotten.
        self.facts.retain(|key, facts| {
            let keep = facts.alive || referenced.contains(key);
            if !keep {
                orders.dropped.push(*key);
            }
            keep
        });
        // Cgroups removed (a finished YARN container) and holding nothing: after the same
        // time, out of the cgroup rows and the kernel's per-cgroup table.
        let due_cgroups = self.retention.due_cgroups(&r.cgroups_removed, now);
        if !due_cgroups.is_empty() {
            let due: FxHashSet<u64> = due_cgroups.iter().copied().collect();
            state.cgroup_stats.retain(|(id, _)| !due.contains(id));
            orders.forget_cgroups = due_cgroups;
        }

        self.translations
            .learn(std::mem::take(&mut r.nat_live), NAT_SOURCES_REMEMBERED);
        self.translations
            .learn_sources(std::mem::take(&mut r.nat_closed), NAT_SOURCES_REMEMBERED);
        let held_by = held_by(state, &self.facts, &r.holders);
        let (retired_v1, retired_v1_moved) = self.retention.retired_v1();
        // What the connections say, kept while the rows, their translations and the owners
        // counted in v1 cgroups stay the same (at rest: every reading).
        let v1 = model::v1_owners(&self.facts);
        let kept = self.aggregates.as_ref().is_some_and(|k| {
            k.rows_version == state.rows_version && k.nat == self.translations.live && k.v1 == v1
        });
        if !kept {
            self.aggregates = Some(KeptAggregates {
                aggregates: Aggregates::of(
                    &state.conns,
                    &state.seeds,
                    &self.translations.live,
                    &v1,
                ),
                rows_version: state.rows_version,
                nat: self.translations.live.clone(),
                v1,
            });
        }
        // A server of this host restarted (another process on its listener): ask again
        // what it says, where it is asked.
        for (addr, facts) in &r.servers {
            let pid = facts.process.as_ref().map(|p| p.pid);
            if let Some(pid) = pid
                && self
                    .listener_pids
                    .insert(*addr, pid)
                    .is_some_and(|before| before != pid)
            {
                self.limits.doubt_listener(*addr);
            }
        }
        // This host's own servers: their limits as their configurations say.
        self.limits.set_local(
            r.servers
                .iter()
                .map(|(addr, facts)| (*addr, facts.max_client_cnxns)),
        );
        let mut rows = model::build(&Inputs {
            aggregates: self.aggregates.as_ref().map(|k| &k.aggregates),
            conns: &state.conns,
            seeds: &state.seeds,
            proc_stats: &state.proc_stats,
            cgroup_stats: &state.cgroup_stats,
            server_stats: &state.server_stats,
            limits: &self.limits,
            facts: &self.facts,
            seeded: &self.seeded,
            cgroup_paths: &r.cgroup_paths,
            held_by: &held_by,
            nat: &self.translations,
            retired: &self.retention.retired(),
            retired_v1: &retired_v1,
            retired_v1_moved: &retired_v1_moved,
            now_ns: r.now_ns,
        });

        // The server's side: hosts deleted since the last reading fold into their
        // listener; hosts idle long enough are ordered out.
        self.clients.retired_now(&r.clients_retired, &r.listeners);
        // Held: a host with a connection open, or whose alarm is raised (a refused host's
        // alarm clears before its row goes).
        let mut holding: FxHashSet<ClientKey> = state
            .inbound
            .iter()
            .chain(state.inbound_seeds.iter())
            .map(|row| ClientKey::of(&row.tuple))
            .collect();
        holding.extend(state.clients.iter().map(|(key, _)| *key).filter(|key| {
            self.alarmed_clients.contains(&(
                model::listener_for(key, &r.listeners).to_string(),
                crate::targets::ip_from_bytes(key.client).to_string(),
            ))
        }));
        orders.forget_clients =
            self.clients
                .due(&state.clients, &holding, now, self.retention.after);
        let server_side = model::client_rows(&ServerSideInputs {
            inbound: &state.inbound,
            seeds: &state.inbound_seeds,
            counters: &state.clients,
            listeners: &r.listeners,
            servers: &r.servers,
            retired: &self.clients.retired,
            limits: &self.limits,
            now_ns: r.now_ns,
        });
        rows.clients = server_side.clients;
        rows.listeners = server_side.listeners;
        let window = self.history.window();
        self.client_trends
            .judge(&mut rows.clients, now, window, &self.thresholds);
        crate::judge_clients::judge_listeners(
            &mut rows.listeners,
            &mut rows.clients,
            &self.thresholds,
        );
        self.alarmed_clients = rows
            .clients
            .iter()
            .filter(|c| c.alarm > crate::verdict::Alarm::Ok)
            .map(|c| (c.listener.clone(), c.client_ip.clone()))
            .collect();

        // Judged against the history, which this reading then joins.
        self.history.record(&rows, now);
        self.history
            .judge(&rows, now, &self.thresholds)
            .apply(&mut rows);
        self.alarms.update(&rows.servers);
        self.alarms.update_clients(&rows.clients);
        self.alarms.update_listeners(&rows.listeners);
        // Refused below the limit zkconn holds, or refused while the limit is only
        // assumed: ask the server again (what it said before may no longer hold).
        for row in &rows.servers {
            let doubtful = row.refusing
                && match row.limit_source {
                    LimitSource::Server => row.limit > 0 && row.headroom.is_some_and(|h| h > 0),
                    LimitSource::Default => true,
                    LimitSource::Flag | LimitSource::ZooCfg => false,
                };
            if doubtful && let Ok(server) = row.server.parse() {
                self.limits.doubt(server);
            }
        }

        let retention = RetentionHealth {
            after_secs: self.retention.after,
            processes: self.retention.processes,
            cgroups: self.retention.cgroups,
            containers: self.retention.containers,
            applications: self.retention.applications,
            undeleted: r.health.undeleted,
        };
        let snapshot = Snapshot {
            schema: model::SCHEMA,
            host: std::mem::take(&mut r.host),
            time: std::mem::take(&mut r.time),
            observed_secs: now,
            probe: ProbeHealth::new(
                std::mem::take(&mut r.health),
                retention,
                self.attribution.clone(),
            ),
            targets: self.targets.clone(),
            max_client_cnxns: self.limits.info(),
            alarm_thresholds: AlarmThresholds::new(self.thresholds.warn, self.thresholds.crit),
            trend_window_secs: self.history.window_at(now),
            cgroups_hierarchy: self.hierarchy,
            rows,
        };
        self.last_conns = (
            std::mem::take(&mut r.kernel.conns),
            std::mem::take(&mut r.kernel.seeds),
            r.now_ns,
        );
        (snapshot, orders)
    }

    /// Attributes an owner from what the source learnt of it.
    fn learn(&mut self, owner: OwnerKey, learnt: Learnt) {
        let facts = match learnt {
            Learnt::Unknown => unknown_owner(),
            Learnt::Proc {
                info,
                cgroup_id,
                user,
            } => {
                self.attribution.from_proc += 1;
                if info.environ_unreadable {
                    self.attribution.environ_unreadable += 1;
                }
                let who = attribution::classify(&info.clues(), &self.rules);
                OwnerFacts {
                    user,
                    uid: Some(info.uid),
                    cgroup_id,
                    cgroup_v1: hierarchy::v1_cgroup(&info.cgroups),
                    grouping: hierarchy::group_of(self.hierarchy, &info.cgroups),
                    cgroup_path: info.cgroup_v2().map(str::to_owned),
                    who,
                    alive: true,
                    comm: info.comm,
                    cmdline: Some(info.cmdline),
                }
            }
            Learnt::Kernel {
                comm,
                uid,
                user,
                cgroup_id,
                cgroup_v2,
                cgroup_cpu,
            } => {
                self.attribution.kernel_only += 1;
                let mut lines: Vec<CgroupLine> = cgroup_v2
                    .iter()
                    .map(|p| CgroupLine {
                        hierarchy: 0,
                        controllers: String::new(),
                        path: p.clone(),
                    })
                    .collect();
                // The cpu controller's cgroup: where YARN puts containers on hybrid (v1)
                // hosts, and the row such a process counts in there (the same path twice
                // classifies once).
                if let Some(cpu) = cgroup_cpu {
                    lines.push(CgroupLine {
                        hierarchy: 1,
                        controllers: "cpu".to_owned(),
                        path: cpu,
                    });
                }
                let who = attribution::classify(
                    &Clues {
                        comm: &comm,
                        exe: None,
                        argv: &[],
                        cmdline: "",
                        cgroups: &lines,
                        container_env: None,
                        cwd: None,
                    },
                    &self.rules,
                );
                OwnerFacts {
                    user,
                    comm,
                    uid: Some(uid),
                    cgroup_id,
                    cgroup_v1: hierarchy::v1_cgroup(&lines),
                    grouping: hierarchy::group_of(self.hierarchy, &lines),
                    cgroup_path: cgroup_v2,
                    cmdline: None,
                    who,
                    alive: true,
                }
            }
        };
        self.facts.insert(owner, facts);
    }
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

/// Whether a connection in `state` still holds a slot at its server.
pub fn holds_a_slot(state: u8) -> bool {
    matches!(
        state,
        tcp_state::SYN_SENT | tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT
    )
}

/// Per owner that exited, who holds its open connections now: from the holders the source
/// found per connection.
fn held_by(
    state: &KernelState,
    facts: &HashMap<OwnerKey, OwnerFacts>,
    holders: &HashMap<Tuple, Vec<(u32, String)>>,
) -> HashMap<OwnerKey, Vec<Holder>> {
    if holders.is_empty() {
        return HashMap::new();
    }
    let gone = |key: &OwnerKey| facts.get(key).is_none_or(|f| !f.alive);
    let mut per_owner: HashMap<OwnerKey, BTreeMap<(u32, String), u64>> = HashMap::new();
    for c in state.conns.iter().chain(state.seeds.iter()) {
        if !holds_a_slot(c.state) || !gone(&c.owner) {
            continue;
        }
        for holder in holders.get(&c.tuple).into_iter().flatten() {
            *per_owner
                .entry(c.owner)
                .or_default()
                .entry(holder.clone())
                .or_default() += 1;
        }
    }
    per_owner
        .into_iter()
        .map(|(owner, holders)| {
            let holders = holders
                .into_iter()
                .map(|((pid, comm), connections)| Holder {
                    pid,
                    comm,
                    connections,
                })
                .collect();
            (owner, holders)
        })
        .collect()
}
