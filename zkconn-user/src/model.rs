//! The snapshot document (`zkconn.snapshot/v1`) and its computation from kernel rows.
//!
//! Owns: turning raw kernel state plus what userspace learnt about each owner into rows
//! per server, process and cgroup. Pure: no I/O, so every rule is unit-tested here.
//! Must not: read `/proc` or maps (the caller passes everything in).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use zkconn_common::{Conn, Counters, OwnerKey, ServerKey, conn_flags, tcp_state};

use crate::{
    alarm::Alarm,
    attribution::{
        self, Attribution, Kind,
        hierarchy::{Grouping, Hierarchy, V1Cgroup},
    },
    limits::{self, LimitInfo, Limits},
    probe::{Hook, RefusalDetection},
    targets::ip_from_bytes,
    trend::{self, Trend},
};

pub const SCHEMA: &str = "zkconn.snapshot/v1";

#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub schema: &'static str,
    pub host: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// How long the hooks observed before this snapshot, in seconds.
    pub observed_secs: f64,
    pub probe: ProbeHealth,
    /// What is watched: `ip:port` endpoints and `*:port` ports.
    pub targets: Vec<String>,
    /// The `maxClientCnxns` assumed for servers without a `--limit` of their own.
    pub max_client_cnxns: LimitInfo,
    /// Usage thresholds of the server alarm, in percent.
    pub alarm_thresholds: AlarmThresholds,
    /// The window growth, rates and suspects are computed over: `--window`, or less when
    /// zkconn has not observed that long yet.
    pub trend_window_secs: f64,
    /// The hierarchy this host's cgroup rows are keyed by, chosen at start: `v2`, or a v1
    /// hierarchy (`v1:cpu`, else `v1:name=systemd`) when no process sits below the cgroup2
    /// root. A single row can still differ ([`CgroupRow::hierarchy`]).
    pub cgroups_hierarchy: Hierarchy,
    #[serde(flatten)]
    pub rows: Rows,
}

/// Every table of the document.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rows {
    pub servers: Vec<ServerRow>,
    pub processes: Vec<ProcessRow>,
    pub cgroups: Vec<CgroupRow>,
    /// One row per YARN container that held or opened a connection.
    pub containers: Vec<ContainerRow>,
    /// One row per YARN application, summed over its containers.
    pub applications: Vec<ApplicationRow>,
    /// One row per service label.
    pub services: Vec<ServiceRow>,
    /// Leak suspects and refused owners, highest score first (docs/suspects.md).
    pub suspects: Vec<Suspect>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AlarmThresholds {
    pub warn_percent: f64,
    pub crit_percent: f64,
}

/// Rates over the trend window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Net change of open connections per minute.
    pub growth_per_min: f64,
    pub opened_per_min: f64,
    pub closed_per_min: f64,
}

impl Rates {
    pub fn of(t: &Trend) -> Self {
        Self {
            growth_per_min: t.growth_per_min(),
            opened_per_min: t.opened_per_min(),
            closed_per_min: t.closed_per_min(),
        }
    }
}

/// What a suspect is: one process or a roll-up of several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SuspectKind {
    Process,
    Container,
    Application,
    Service,
}

impl SuspectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Container => "container",
            Self::Application => "application",
            Self::Service => "service",
        }
    }
}

/// An owner that grows, holds CLOSE_WAIT sockets or is being refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suspect {
    pub subject: SuspectKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub label: String,
    /// One sentence per finding.
    pub reason: String,
    pub score: f64,
    pub open: u64,
    pub growth_per_min: f64,
    /// Refusals in the trend window.
    pub rejected: u64,
    /// CLOSE_WAIT sockets held longer than 2 s.
    pub close_wait_held: u64,
}

/// `probe.retention`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RetentionHealth {
    /// Seconds an exited process holding nothing stays a row of its own.
    pub after_secs: f64,
    /// Processes retired since start: counted in their roll-ups, no longer in `processes`
    /// nor in the kernel's process table.
    pub processes: u64,
    /// Cgroups retired since start: removed, holding nothing, no longer in `cgroups` nor in
    /// the kernel's per-cgroup table.
    pub cgroups: u64,
    /// YARN containers retired since start: finished, out of `containers`, their counts
    /// kept in their application's row.
    pub containers: u64,
    /// YARN applications retired since start: finished, out of `applications`, their
    /// counts kept in their services' rows.
    pub applications: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProbeHealth {
    pub hook: Option<Hook>,
    /// How refusals are recognised: `no_bytes_received` (with BTF) or `reset_only`.
    pub refusal_detection: Option<RefusalDetection>,
    /// How kernel events reach userspace: `ring-buffer`, or `perf-buffer` (a perf event
    /// array, before 5.8 or with `--fallback perf-buffer`); null for the poll hook.
    pub events: Option<&'static str>,
    /// Kernel events read since start (new processes, exits, refusals).
    pub events_received: u64,
    /// Events the kernel could not deliver plus program runs the kernel skipped.
    pub lost: u64,
    /// Sockets, processes or counter rows not tracked because a map was full.
    pub overflow: u64,
    pub lost_detail: LostDetail,
    pub overflow_detail: OverflowDetail,
    pub seeds: SeedHealth,
    /// Drift repair against the kernel's socket table (`--reconcile-interval`).
    pub repaired: RepairHealth,
    /// Exited processes out of the process rows (see `--retain-exited`).
    pub retention: RetentionHealth,
    pub attribution: AttributionHealth,
    /// NAT look-ups in the host's connection tracking table (see [`crate::nat`]).
    pub nat: crate::nat::NatHealth,
    /// `/proc` entries that existed but could not be read, socket tables that could not be
    /// read and reconciliation rounds that failed (a kernel map that cannot be read is an
    /// error, never counted here).
    pub unreadable: u64,
    /// The capabilities zkconn kept after attach, and why a BPF one was kept.
    pub capabilities: crate::probe::caps::Kept,
    /// Kernel helpers replaced by older ones: forced, or missing from this kernel.
    pub fallbacks: Vec<crate::probe::compat::InUse>,
    /// What this run cannot see on this kernel or with these privileges, one sentence each.
    pub limitations: Vec<String>,
}

/// What the source reports of itself: [`ProbeHealth`] but for what the engine keeps
/// (retention and attribution).
#[derive(Clone, Debug, Default)]
pub struct SourceHealth {
    pub hook: Option<Hook>,
    pub refusal_detection: Option<RefusalDetection>,
    pub events: Option<&'static str>,
    pub events_received: u64,
    pub lost_detail: LostDetail,
    pub overflow_detail: OverflowDetail,
    pub seeds: SeedHealth,
    pub repaired: RepairHealth,
    pub nat: crate::nat::NatHealth,
    pub unreadable: u64,
    pub capabilities: crate::probe::caps::Kept,
    pub fallbacks: Vec<crate::probe::compat::InUse>,
    pub limitations: Vec<String>,
}

impl ProbeHealth {
    pub fn new(
        s: SourceHealth,
        retention: RetentionHealth,
        attribution: AttributionHealth,
    ) -> Self {
        Self {
            hook: s.hook,
            refusal_detection: s.refusal_detection,
            events: s.events,
            events_received: s.events_received,
            lost: s.lost_detail.events + s.lost_detail.recursion_misses.unwrap_or(0),
            overflow: s.overflow_detail.connections
                + s.overflow_detail.processes
                + s.overflow_detail.counters,
            lost_detail: s.lost_detail,
            overflow_detail: s.overflow_detail,
            seeds: s.seeds,
            repaired: s.repaired,
            retention,
            attribution,
            nat: s.nat,
            unreadable: s.unreadable,
            capabilities: s.capabilities,
            fallbacks: s.fallbacks,
            limitations: s.limitations,
        }
    }
}

/// What drift repair did since start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairHealth {
    /// Kernel rows deleted because their socket was gone on two consecutive rounds (a close
    /// the kernel did not see; not counted as closed or failed).
    pub retired: u64,
    /// Live connections towards a target that no kernel row described on two consecutive
    /// rounds (a connect the kernel did not see), handed to the kernel as seeds.
    pub adopted: u64,
    /// Connections not adopted because their 4-tuple is live in two network namespaces.
    pub conflicts: u64,
    /// Seconds between rounds; 0: repair is off.
    pub interval_secs: f64,
    /// Seconds since the last complete round; null before the first one (or when off).
    pub last_secs_ago: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LostDetail {
    pub events: u64,
    /// `None`: the kernel does not count them (before 5.12), so unknown, not 0.
    pub recursion_misses: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct OverflowDetail {
    pub connections: u64,
    pub processes: u64,
    pub counters: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SeedHealth {
    pub seeded: u64,
    pub adopted: u64,
    pub conflicts: u64,
    /// Connections that predate zkconn whose process could not be found or read: counted
    /// per server under the process row "unknown owner" (pid 0).
    pub ownerless: u64,
    /// Why, when `ownerless` is not 0.
    pub ownerless_why: Option<String>,
}

/// How completely owners could be attributed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttributionHealth {
    /// Processes whose `/proc` entry was read while they lived.
    pub from_proc: u64,
    /// Processes gone before `/proc` could be read: attributed from the kernel's comm and
    /// cgroup alone (a v1-only YARN cgroup, the environment and the command line are lost).
    pub kernel_only: u64,
    /// Processes whose environment could not be read (`CONTAINER_ID` unknown).
    pub environ_unreadable: u64,
    /// Site rules loaded from `--rules`.
    pub rules: u64,
}

/// Current connections by state; `open` = connecting + established.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub open: u64,
    pub connecting: u64,
    pub established: u64,
    /// The server closed, the application has not: a leak signal.
    pub close_wait: u64,
    /// The application closed; the socket has not reached TCP_CLOSE yet.
    pub closing: u64,
}

impl StateCounts {
    fn add(&mut self, state: u8) {
        match state {
            tcp_state::SYN_SENT => {
                self.connecting += 1;
                self.open += 1;
            }
            tcp_state::ESTABLISHED => {
                self.established += 1;
                self.open += 1;
            }
            tcp_state::CLOSE_WAIT => self.close_wait += 1,
            _ => self.closing += 1,
        }
    }

    fn merge(&mut self, other: &Self) {
        self.open += other.open;
        self.connecting += other.connecting;
        self.established += other.established;
        self.close_wait += other.close_wait;
        self.closing += other.closing;
    }
}

/// One (ZooKeeper endpoint, local IP): the unit `maxClientCnxns` counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerRow {
    pub server: String,
    /// The client address as the server sees it (after NAT), which is what it counts.
    pub local_ip: String,
    /// Source addresses of this host's connections that NAT translates into `local_ip`
    /// (a container's own address, masqueraded), sorted; empty without NAT.
    pub translated_from: Vec<String>,
    #[serde(flatten)]
    pub states: StateCounts,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    /// Connections this server refused (also in `closed`).
    pub rejected: u64,
    /// `maxClientCnxns` for this server; 0 is unlimited.
    pub limit: u32,
    /// `open / limit`; `null` when unlimited.
    pub usage: Option<f64>,
    /// `limit - open`; `null` when unlimited.
    pub headroom: Option<i64>,
    #[serde(flatten)]
    pub rates: Rates,
    /// Seconds until `headroom` is used up at the sustained growth of the window; `null`
    /// when not growing or unlimited, 0 at or over the limit while growing.
    pub time_to_limit_secs: Option<f64>,
    /// The server refused a connection of this host within the last minute.
    pub refusing: bool,
    pub alarm: Alarm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerOpen {
    pub server: String,
    pub open: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessRow {
    #[serde(skip)]
    pub key: OwnerKey,
    pub pid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub who: Attribution,
    pub cmdline: Option<String>,
    pub uid: Option<u32>,
    /// The user name of `uid`, when a name service knows it.
    pub user: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    /// Its cgroup in the v1 `cpu` hierarchy (else systemd's), when the host has v1
    /// hierarchies.
    pub cgroup_v1: Option<String>,
    /// The hierarchy of the cgroup row it counts in.
    pub cgroup_hierarchy: Hierarchy,
    pub alive: bool,
    #[serde(flatten)]
    pub states: StateCounts,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    /// Times a connection of this process entered CLOSE_WAIT.
    pub close_wait_total: u64,
    /// Of its connections, how many a server refused.
    pub rejected: u64,
    /// Connections that existed before zkconn started (age: at least since start).
    pub seeded: u64,
    #[serde(flatten)]
    pub age: Age,
    #[serde(flatten)]
    pub rates: Rates,
    pub servers: Vec<ServerOpen>,
    /// Set only when this process (the connector) has exited while some of its
    /// connections are still open: who holds them now (a forked child, or a process it
    /// passed them to over a Unix socket), found through `/proc/PID/fd`.
    pub held_by: Vec<Holder>,
}

/// A process that holds open connections it did not make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// How many of the connector's open connections it holds (shared descriptors count
    /// for every holder).
    pub connections: u64,
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `rows` on host `h` after 2 s, limit 60, thresholds 80/95.
    pub fn for_test(rows: Rows) -> Self {
        Self {
            schema: SCHEMA,
            host: "h".into(),
            time: String::new(),
            observed_secs: 2.0,
            probe: ProbeHealth {
                hook: Some(Hook::Tracepoint),
                ..ProbeHealth::default()
            },
            targets: vec!["*:2181".into()],
            max_client_cnxns: Limits::default().info(),
            alarm_thresholds: AlarmThresholds {
                warn_percent: 80.0,
                crit_percent: 95.0,
            },
            trend_window_secs: 2.0,
            cgroups_hierarchy: Hierarchy::V2,
            rows,
        }
    }
}

#[cfg(test)]
impl ServerRow {
    /// `server` seen from `local_ip` with `open` connections of `limit`.
    pub fn for_test(server: &str, local_ip: &str, open: u64, limit: u32) -> Self {
        Self {
            server: server.into(),
            local_ip: local_ip.into(),
            states: StateCounts {
                open,
                ..StateCounts::default()
            },
            limit,
            usage: limits::usage(open, limit),
            headroom: limits::headroom(open, limit),
            ..Self::default()
        }
    }
}

#[cfg(test)]
impl ProcessRow {
    /// A live process `pid` with no connections, labelled `p{pid}`.
    pub fn for_test(pid: u32) -> Self {
        let label = format!("p{pid}");
        Self {
            key: OwnerKey {
                tgid: pid,
                _pad: 0,
                birth_ns: 1,
            },
            pid,
            comm: label.clone(),
            who: Attribution {
                service: label.clone(),
                label,
                ..Attribution::default()
            },
            cmdline: None,
            uid: None,
            user: None,
            cgroup: None,
            cgroup_id: 0,
            cgroup_v1: None,
            cgroup_hierarchy: Hierarchy::V2,
            alive: true,
            states: StateCounts::default(),
            opened: 0,
            closed: 0,
            failed: 0,
            close_wait_total: 0,
            rejected: 0,
            seeded: 0,
            age: Age::default(),
            rates: Rates::default(),
            servers: Vec::new(),
            held_by: Vec::new(),
        }
    }
}

/// How long connections have been held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Age {
    /// Age of the oldest open connection in seconds; `null` with none open.
    pub oldest_secs: Option<f64>,
    /// The oldest existed before zkconn started: its age is at least `oldest_secs`.
    pub oldest_seeded: bool,
    /// CLOSE_WAIT sockets held longer than 2 s: the server closed, the application did not.
    pub close_wait_held: u64,
}

impl Age {
    fn add_conn(&mut self, c: &Conn, now_ns: u64) {
        match c.state {
            tcp_state::SYN_SENT | tcp_state::ESTABLISHED => {
                let secs = round1(now_ns.saturating_sub(c.opened_ns) as f64 / 1e9);
                let seeded = c.flags & conn_flags::SEEDED != 0;
                if self.oldest_secs.is_none_or(|o| secs > o) {
                    self.oldest_secs = Some(secs);
                    self.oldest_seeded = seeded;
                }
            }
            tcp_state::CLOSE_WAIT => {
                let held = now_ns.saturating_sub(c.changed_ns) as f64 / 1e9;
                if held >= trend::CLOSE_WAIT_GRACE_SECS {
                    self.close_wait_held += 1;
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, other: &Self) {
        if let Some(o) = other.oldest_secs
            && self.oldest_secs.is_none_or(|s| o > s)
        {
            self.oldest_secs = Some(o);
            self.oldest_seeded = other.oldest_seeded;
        }
        self.close_wait_held += other.close_wait_held;
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupRow {
    /// `v2`: keyed by the kernel's cgroup id; `v1:cpu` or `v1:name=systemd`: keyed by the
    /// path in that hierarchy (see [`crate::attribution::hierarchy`]).
    pub hierarchy: Hierarchy,
    /// The path in `hierarchy`.
    pub path: Option<String>,
    /// The cgroup v2 id; 0 in a v1 row.
    pub id: u64,
    /// From the path alone: `yarn`, `kubernetes`, `docker`, `systemd`, else `process`.
    pub kind: Kind,
    /// The container id, pod, Docker container or unit; else the path.
    pub label: String,
    #[serde(flatten)]
    pub states: StateCounts,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub pids: Vec<u32>,
}

/// Counters summed over the processes of a roll-up row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub open: u64,
    pub close_wait: u64,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub rejected: u64,
    #[serde(flatten)]
    pub age: Age,
    #[serde(flatten)]
    pub rates: Rates,
}

impl Totals {
    /// One process's counters, as a roll-up of one.
    pub fn of(p: &ProcessRow) -> Self {
        let mut t = Self::default();
        t.add(p);
        t.rates = p.rates;
        t
    }

    fn add(&mut self, p: &ProcessRow) {
        self.open += p.states.open;
        self.close_wait += p.states.close_wait;
        self.opened += p.opened;
        self.closed += p.closed;
        self.failed += p.failed;
        self.rejected += p.rejected;
        self.age.merge(&p.age);
    }

    /// Another roll-up's counts (rates are not summed: they are the history's).
    fn absorb(&mut self, t: &Totals) {
        self.open += t.open;
        self.close_wait += t.close_wait;
        self.opened += t.opened;
        self.closed += t.closed;
        self.failed += t.failed;
        self.rejected += t.rejected;
        self.age.merge(&t.age);
    }

    fn add_retired(&mut self, r: &Retired) {
        self.opened += r.opened;
        self.closed += r.closed;
        self.failed += r.failed;
        self.rejected += r.rejected;
    }
}

/// Processes that exited, hold nothing and were shown for the retention time: gone from the
/// process rows and the kernel's tables, their counts kept for the container, application
/// and service rows. One per attribution, however many processes it sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Retired {
    pub who: Attribution,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub rejected: u64,
    /// Processes summed here.
    pub processes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerRow {
    pub container: String,
    pub application: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub services: Vec<String>,
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApplicationRow {
    pub application: String,
    pub containers: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
    pub processes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceRow {
    pub service: String,
    /// The kinds its processes run as (usually one).
    pub kinds: Vec<Kind>,
    #[serde(flatten)]
    pub totals: Totals,
    pub pids: Vec<u32>,
}

/// What userspace knows of one process, beyond the kernel's counters.
#[derive(Clone, Debug, Default)]
pub struct OwnerFacts {
    /// The kernel's comm at first connect (or `/proc`'s, when it was read).
    pub comm: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub cgroup_id: u64,
    /// The cgroup v2 path when the process was first seen (YARN removes a container's
    /// cgroup when it ends).
    pub cgroup_path: Option<String>,
    /// Its v1 cgroup (`cpu`, else `name=systemd`) when first seen.
    pub cgroup_v1: Option<V1Cgroup>,
    /// Which cgroup row it counts in.
    pub grouping: Grouping,
    /// The redacted command line, when `/proc` could be read while the process lived.
    pub cmdline: Option<String>,
    pub who: Attribution,
    pub alive: bool,
}

/// One live connection, for the drill-down of an owner.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionRow {
    pub owner: OwnerKey,
    pub cgroup_id: u64,
    pub server: String,
    pub local_ip: String,
    pub local_port: u16,
    /// The source address the server sees, when NAT translates `local_ip`.
    pub server_sees: Option<String>,
    pub state: &'static str,
    /// Seconds since connect (since seeding for a seeded one).
    pub age_secs: f64,
    /// Existed before zkconn started: its age is at least `age_secs`.
    pub seeded: bool,
}

pub fn state_name(state: u8) -> &'static str {
    match state {
        tcp_state::ESTABLISHED => "ESTABLISHED",
        tcp_state::SYN_SENT => "SYN_SENT",
        tcp_state::SYN_RECV => "SYN_RECV",
        tcp_state::FIN_WAIT1 => "FIN_WAIT1",
        tcp_state::FIN_WAIT2 => "FIN_WAIT2",
        tcp_state::TIME_WAIT => "TIME_WAIT",
        tcp_state::CLOSE => "CLOSE",
        tcp_state::CLOSE_WAIT => "CLOSE_WAIT",
        tcp_state::LAST_ACK => "LAST_ACK",
        tcp_state::LISTEN => "LISTEN",
        tcp_state::CLOSING => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// The kernel's connections and the seeds it does not track (same tuple): a seed the
/// kernel also tracks counts once, as the kernel's.
fn live<'a>(conns: &'a [Conn], seeds: &'a [Conn]) -> Vec<&'a Conn> {
    if seeds.is_empty() {
        return conns.iter().collect();
    }
    let tracked: FxHashSet<_> = conns.iter().map(|c| c.tuple).collect();
    conns
        .iter()
        .chain(seeds.iter().filter(|s| !tracked.contains(&s.tuple)))
        .collect()
}

/// Every live connection, oldest first.
pub fn connections(
    conns: &[Conn],
    seeds: &[Conn],
    nat: &Translations,
    now_ns: u64,
) -> Vec<ConnectionRow> {
    let mut rows: Vec<ConnectionRow> = live(conns, seeds)
        .into_iter()
        .map(|c| ConnectionRow {
            owner: c.owner,
            cgroup_id: c.cgroup_id,
            server: endpoint(c.tuple.daddr, c.tuple.dport),
            local_ip: ip_from_bytes(c.tuple.saddr).to_string(),
            local_port: c.tuple.sport,
            server_sees: nat
                .live
                .get(&c.tuple)
                .map(|a| ip_from_bytes(*a).to_string()),
            state: state_name(c.state),
            age_secs: round1(now_ns.saturating_sub(c.opened_ns) as f64 / 1e9),
            seeded: c.flags & conn_flags::SEEDED != 0,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.age_secs
            .total_cmp(&a.age_secs)
            .then(a.local_port.cmp(&b.local_port))
    });
    rows
}

/// What NAT does to this host's connections (see [`crate::nat`]).
#[derive(Clone, Debug, Default)]
pub struct Translations {
    /// Live connection → the source address its server sees, for translated ones only.
    pub live: FxHashMap<zkconn_common::Tuple, [u8; 16]>,
    /// (server address, server port, own source address) → the address the server sees,
    /// remembered from live connections, for the cumulative per-server counters (which the
    /// kernel keys by the connection's own address).
    pub sources: BTreeMap<([u8; 16], u16, [u8; 16]), [u8; 16]>,
}

impl Translations {
    /// Remembers the sources of `live` (at most `cap` of them: a bound against a host that
    /// translates without end; past it, the lowest keys are dropped, and their counters fall
    /// back to rows under their own address).
    pub fn learn(&mut self, live: FxHashMap<zkconn_common::Tuple, [u8; 16]>, cap: usize) {
        self.learn_sources(live.iter().map(|(t, seen)| (*t, *seen)), cap);
        self.live = live;
    }

    /// Remembers the sources of connections seen translated (live or just closed).
    pub fn learn_sources(
        &mut self,
        seen: impl IntoIterator<Item = (zkconn_common::Tuple, [u8; 16])>,
        cap: usize,
    ) {
        for (t, addr) in seen {
            self.sources.insert((t.daddr, t.dport, t.saddr), addr);
        }
        while self.sources.len() > cap {
            self.sources.pop_first();
        }
    }

    fn source_of(&self, c: &Conn) -> [u8; 16] {
        self.live.get(&c.tuple).copied().unwrap_or(c.tuple.saddr)
    }

    fn stats_source(&self, key: &ServerKey) -> [u8; 16] {
        self.sources
            .get(&(key.daddr, key.dport, key.saddr))
            .copied()
            .unwrap_or(key.saddr)
    }
}

/// Everything `build` needs; assembled by the engine.
pub struct Inputs<'a> {
    pub conns: &'a [Conn],
    pub seeds: &'a [Conn],
    pub proc_stats: &'a [(OwnerKey, Counters)],
    pub cgroup_stats: &'a [(u64, Counters)],
    pub server_stats: &'a [(ServerKey, Counters)],
    pub limits: &'a Limits,
    pub facts: &'a HashMap<OwnerKey, OwnerFacts>,
    pub seeded: &'a HashMap<OwnerKey, u64>,
    /// Cgroup paths by id, where known.
    pub cgroup_paths: &'a FxHashMap<u64, String>,
    /// Who holds the open connections of owners that exited.
    pub held_by: &'a HashMap<OwnerKey, Vec<Holder>>,
    pub nat: &'a Translations,
    /// Exited processes no longer shown, still counted in the roll-ups.
    pub retired: &'a [Retired],
    /// Boot-clock now, to age connections.
    pub now_ns: u64,
}

pub fn endpoint(addr: [u8; 16], port: u16) -> String {
    std::net::SocketAddr::new(ip_from_bytes(addr), port).to_string()
}

/// Rows per server, process and cgroup. A seed that the kernel also tracks (same tuple)
/// is counted once, as the kernel's.
pub fn build(inputs: &Inputs<'_>) -> Rows {
    let live = live(inputs.conns, inputs.seeds);

    // Per connection, only raw keys and a fast hash: names are formatted once per distinct
    // server below (100,000 connections cost one pass, not 100,000 strings).
    type Server = ([u8; 16], u16);
    let mut by_server: BTreeMap<(Server, [u8; 16]), StateCounts> = BTreeMap::new();
    let mut by_owner: FxHashMap<OwnerKey, (StateCounts, BTreeMap<Server, u64>, Age)> =
        FxHashMap::default();
    let mut by_cgroup: FxHashMap<u64, (StateCounts, BTreeSet<u32>)> = FxHashMap::default();
    // Server rows count per source address as the server sees it (after NAT).
    let mut translated_from: BTreeMap<(Server, [u8; 16]), BTreeSet<[u8; 16]>> = BTreeMap::new();
    // Owners counted in v1 cgroup rows: their connections stay out of the v2 rows.
    let by_v1: FxHashSet<OwnerKey> = inputs
        .facts
        .iter()
        .filter(|(_, f)| matches!(f.grouping, Grouping::V1(_)))
        .map(|(k, _)| *k)
        .collect();
    for c in &live {
        let server = (c.tuple.daddr, c.tuple.dport);
        let seen = inputs.nat.source_of(c);
        if seen != c.tuple.saddr {
            translated_from
                .entry((server, seen))
                .or_default()
                .insert(c.tuple.saddr);
        }
        by_server.entry((server, seen)).or_default().add(c.state);
        let (states, per_server, age) = by_owner.entry(c.owner).or_default();
        states.add(c.state);
        age.add_conn(c, inputs.now_ns);
        if matches!(c.state, tcp_state::SYN_SENT | tcp_state::ESTABLISHED) {
            *per_server.entry(server).or_default() += 1;
        }
        if by_v1.is_empty() || !by_v1.contains(&c.owner) {
            let (cg_states, pids) = by_cgroup.entry(c.cgroup_id).or_default();
            cg_states.add(c.state);
            pids.insert(c.owner.tgid);
        }
    }
    let name = |(addr, port): Server| endpoint(addr, port);
    let mut servers: BTreeMap<(String, String), StateCounts> = BTreeMap::new();
    for ((server, local), counts) in by_server {
        let row = servers
            .entry((name(server), ip_from_bytes(local).to_string()))
            .or_default();
        row.merge(&counts);
    }

    let stats: HashMap<OwnerKey, Counters> = inputs.proc_stats.iter().copied().collect();
    let mut owners: BTreeSet<OwnerKey> = stats.keys().copied().collect();
    owners.extend(by_owner.keys().copied());
    owners.extend(inputs.seeded.keys().copied());

    let mut cgroup_pids: HashMap<u64, BTreeSet<u32>> = HashMap::new();
    let mut v1_of: FxHashMap<OwnerKey, V1Cgroup> = FxHashMap::default();
    let mut processes: Vec<ProcessRow> = owners
        .into_iter()
        .map(|key| {
            let counters = stats.get(&key).copied().unwrap_or_default();
            let (states, per_server, age) = by_owner.remove(&key).unwrap_or_default();
            let facts = inputs.facts.get(&key).cloned().unwrap_or_default();
            let cgroup_id = facts.cgroup_id;
            let cgroup_hierarchy = facts.grouping.hierarchy();
            match facts.grouping {
                Grouping::V2 => {
                    cgroup_pids.entry(cgroup_id).or_default().insert(key.tgid);
                }
                Grouping::V1(cg) => {
                    v1_of.insert(key, cg);
                }
            }
            let who = if facts.who.service.is_empty() {
                // Never seen by userspace (its event was lost): the comm is all there is.
                let label = if facts.comm.is_empty() {
                    "?".to_owned()
                } else {
                    facts.comm.clone()
                };
                Attribution {
                    service: label.clone(),
                    label,
                    ..Attribution::default()
                }
            } else {
                facts.who
            };
            ProcessRow {
                key,
                pid: key.tgid,
                comm: facts.comm,
                who,
                cmdline: facts.cmdline,
                uid: facts.uid,
                user: facts.user,
                cgroup: facts
                    .cgroup_path
                    .or_else(|| inputs.cgroup_paths.get(&cgroup_id).cloned()),
                cgroup_id,
                cgroup_v1: facts.cgroup_v1.map(|c| c.path),
                cgroup_hierarchy,
                alive: facts.alive,
                states,
                opened: counters.opened,
                closed: counters.closed,
                failed: counters.failed,
                close_wait_total: counters.close_wait,
                rejected: counters.rejected,
                seeded: inputs.seeded.get(&key).copied().unwrap_or(0),
                age,
                rates: Rates::default(),
                servers: per_server
                    .into_iter()
                    .map(|(server, open)| (name(server), open))
                    .collect::<BTreeMap<String, u64>>()
                    .into_iter()
                    .map(|(server, open)| ServerOpen { server, open })
                    .collect(),
                held_by: inputs.held_by.get(&key).cloned().unwrap_or_default(),
            }
        })
        .collect();
    processes.sort_by(|a, b| {
        (b.states.open, b.states.close_wait, b.opened)
            .cmp(&(a.states.open, a.states.close_wait, a.opened))
            .then(a.pid.cmp(&b.pid))
    });

    let (v1_rows, moved) = v1_cgroup_rows(&processes, &v1_of);
    let cg_stats: HashMap<u64, Counters> = inputs.cgroup_stats.iter().copied().collect();
    let mut ids: BTreeSet<u64> = cg_stats.keys().copied().collect();
    ids.extend(by_cgroup.keys().copied());
    let mut cgroups: Vec<CgroupRow> = ids
        .into_iter()
        .map(|id| {
            // The kernel counts per v2 id: what processes counted in v1 rows did there is
            // theirs, not this row's.
            let mut counters = cg_stats.get(&id).copied().unwrap_or_default();
            if let Some(m) = moved.get(&id) {
                counters.opened = counters.opened.saturating_sub(m.opened);
                counters.closed = counters.closed.saturating_sub(m.closed);
                counters.failed = counters.failed.saturating_sub(m.failed);
            }
            let (states, mut pids) = by_cgroup.remove(&id).unwrap_or_default();
            pids.extend(cgroup_pids.remove(&id).unwrap_or_default());
            let path = inputs.cgroup_paths.get(&id).cloned();
            // No cgroup has id 0: it holds the connections of unknown owners.
            let (kind, label) = if id == 0 {
                (attribution::Kind::Process, "(unknown owner)".to_owned())
            } else {
                attribution::classify_cgroup(path.as_deref())
            };
            CgroupRow {
                hierarchy: Hierarchy::V2,
                path,
                id,
                kind,
                label,
                states,
                opened: counters.opened,
                closed: counters.closed,
                failed: counters.failed,
                pids: pids.into_iter().collect(),
            }
        })
        // A v2 row left with nothing once v1 rows took their processes' share.
        .filter(|r| {
            !(r.pids.is_empty()
                && r.states == StateCounts::default()
                && r.opened + r.closed + r.failed == 0)
        })
        .chain(v1_rows)
        .collect();
    cgroups.sort_by(|a, b| {
        b.states
            .open
            .cmp(&a.states.open)
            .then(a.hierarchy.cmp(&b.hierarchy))
            .then(a.id.cmp(&b.id))
            .then(a.path.cmp(&b.path))
    });

    let mut server_totals: HashMap<(String, String), Counters> = HashMap::new();
    for (key, c) in inputs.server_stats {
        let seen = inputs.nat.stats_source(key);
        if seen != key.saddr {
            translated_from
                .entry(((key.daddr, key.dport), seen))
                .or_default()
                .insert(key.saddr);
        }
        let name = (
            endpoint(key.daddr, key.dport),
            ip_from_bytes(seen).to_string(),
        );
        servers.entry(name.clone()).or_default();
        let t = server_totals.entry(name).or_default();
        t.opened += c.opened;
        t.closed += c.closed;
        t.failed += c.failed;
        t.rejected += c.rejected;
    }
    let mut translated_names: HashMap<(String, String), Vec<String>> = HashMap::new();
    for ((server, seen), own) in translated_from {
        let names = translated_names
            .entry((name(server), ip_from_bytes(seen).to_string()))
            .or_default();
        names.extend(own.into_iter().map(|a| ip_from_bytes(a).to_string()));
        names.sort();
        names.dedup();
    }
    let servers = servers
        .into_iter()
        .map(|((server, local_ip), states)| {
            let t = server_totals
                .get(&(server.clone(), local_ip.clone()))
                .copied()
                .unwrap_or_default();
            let limit = server
                .parse()
                .map_or(limits::ZOOKEEPER_DEFAULT, |s| inputs.limits.for_server(s));
            ServerRow {
                usage: limits::usage(states.open, limit),
                headroom: limits::headroom(states.open, limit),
                translated_from: translated_names
                    .remove(&(server.clone(), local_ip.clone()))
                    .unwrap_or_default(),
                limit,
                server,
                local_ip,
                states,
                opened: t.opened,
                closed: t.closed,
                failed: t.failed,
                rejected: t.rejected,
                ..ServerRow::default()
            }
        })
        .collect();
    let (containers, applications, services) = roll_up(&processes, inputs.retired);
    Rows {
        servers,
        processes,
        cgroups,
        containers,
        applications,
        services,
        suspects: Vec::new(),
    }
}

/// Rows of the processes counted by a v1 cgroup: states from their live connections,
/// `opened`/`closed`/`failed` from their own counters. Also returns those counters summed
/// per v2 id, which the v2 rows leave out.
fn v1_cgroup_rows(
    processes: &[ProcessRow],
    v1_of: &FxHashMap<OwnerKey, V1Cgroup>,
) -> (Vec<CgroupRow>, FxHashMap<u64, Counters>) {
    let mut rows: BTreeMap<&V1Cgroup, (CgroupRow, BTreeSet<u32>)> = BTreeMap::new();
    let mut moved: FxHashMap<u64, Counters> = FxHashMap::default();
    if v1_of.is_empty() {
        return (Vec::new(), moved);
    }
    for p in processes {
        let Some(cg) = v1_of.get(&p.key) else {
            continue;
        };
        let (row, pids) = rows.entry(cg).or_insert_with(|| {
            let (kind, label) = attribution::classify_cgroup(Some(&cg.path));
            let row = CgroupRow {
                hierarchy: cg.hierarchy,
                path: Some(cg.path.clone()),
                id: 0,
                kind,
                label,
                states: StateCounts::default(),
                opened: 0,
                closed: 0,
                failed: 0,
                pids: Vec::new(),
            };
            (row, BTreeSet::new())
        });
        row.states.merge(&p.states);
        row.opened += p.opened;
        row.closed += p.closed;
        row.failed += p.failed;
        pids.insert(p.pid);
        let m = moved.entry(p.cgroup_id).or_default();
        m.opened += p.opened;
        m.closed += p.closed;
        m.failed += p.failed;
    }
    let rows = rows
        .into_values()
        .map(|(mut row, pids)| {
            row.pids = pids.into_iter().collect();
            row
        })
        .collect();
    (rows, moved)
}

/// Largest `open` first, then most `opened`, then by name.
fn by_weight<T>(rows: &mut [T], key: impl Fn(&T) -> (Totals, &str)) {
    rows.sort_by(|a, b| {
        let (ta, na) = key(a);
        let (tb, nb) = key(b);
        (tb.open, tb.close_wait, tb.opened)
            .cmp(&(ta.open, ta.close_wait, ta.opened))
            .then(na.cmp(nb))
    });
}

/// Containers, applications and services, summed from process rows.
pub fn roll_up(
    processes: &[ProcessRow],
    retired: &[Retired],
) -> (Vec<ContainerRow>, Vec<ApplicationRow>, Vec<ServiceRow>) {
    // Each process, live or retired, as what it adds: a retired one has no pid and counts
    // for the processes it sums.
    struct Part<'a> {
        who: &'a Attribution,
        totals: Totals,
        pid: Option<u32>,
        processes: u64,
    }
    let live = processes.iter().map(|p| {
        let mut totals = Totals::default();
        totals.add(p);
        Part {
            who: &p.who,
            totals,
            pid: Some(p.pid),
            processes: 1,
        }
    });
    let gone = retired.iter().map(|r| {
        let mut totals = Totals::default();
        totals.add_retired(r);
        Part {
            who: &r.who,
            totals,
            pid: None,
            processes: r.processes,
        }
    });
    let mut containers: BTreeMap<&str, ContainerRow> = BTreeMap::new();
    let mut applications: BTreeMap<&str, (ApplicationRow, BTreeSet<String>)> = BTreeMap::new();
    let mut services: BTreeMap<&str, (ServiceRow, BTreeSet<Kind>, BTreeSet<u32>)> = BTreeMap::new();
    for part in live.chain(gone) {
        let who = part.who;
        if let Some(app) = &who.yarn_application {
            let (row, ids) = applications.entry(app).or_insert_with(|| {
                (
                    ApplicationRow {
                        application: app.clone(),
                        containers: Vec::new(),
                        totals: Totals::default(),
                        processes: 0,
                    },
                    BTreeSet::new(),
                )
            });
            row.totals.absorb(&part.totals);
            row.processes += part.processes;
            // Retired containers are summed into their application without a row.
            if let Some(container) = &who.yarn_container {
                ids.insert(container.clone());
                let row = containers.entry(container).or_insert_with(|| ContainerRow {
                    container: container.clone(),
                    application: app.clone(),
                    totals: Totals::default(),
                    services: Vec::new(),
                    pids: Vec::new(),
                });
                row.totals.absorb(&part.totals);
                if !row.services.contains(&who.service) {
                    row.services.push(who.service.clone());
                }
                row.pids.extend(part.pid);
            }
        }
        let (row, kinds, pids) = services.entry(&who.service).or_insert_with(|| {
            (
                ServiceRow {
                    service: who.service.clone(),
                    kinds: Vec::new(),
                    totals: Totals::default(),
                    pids: Vec::new(),
                },
                BTreeSet::new(),
                BTreeSet::new(),
            )
        });
        row.totals.absorb(&part.totals);
        kinds.insert(who.kind);
        pids.extend(part.pid);
    }
    let mut containers: Vec<ContainerRow> = containers
        .into_values()
        .map(|mut c| {
            c.pids.sort_unstable();
            c.pids.dedup();
            c
        })
        .collect();
    by_weight(&mut containers, |c| (c.totals, &c.container));
    let mut applications: Vec<ApplicationRow> = applications
        .into_values()
        .map(|(mut row, ids)| {
            row.containers = ids.into_iter().collect();
            row
        })
        .collect();
    by_weight(&mut applications, |a| (a.totals, &a.application));
    let mut services: Vec<ServiceRow> = services
        .into_values()
        .map(|(mut row, kinds, pids)| {
            row.kinds = kinds.into_iter().collect();
            row.pids = pids.into_iter().collect();
            row
        })
        .collect();
    by_weight(&mut services, |s| (s.totals, &s.service));
    (containers, applications, services)
}

#[cfg(test)]
mod tests {
    use zkconn_common::Tuple;

    use super::*;
    use crate::targets::ip_to_bytes;

    fn key(tgid: u32) -> OwnerKey {
        OwnerKey {
            tgid,
            _pad: 0,
            birth_ns: 1,
        }
    }

    fn conn(tgid: u32, cgroup: u64, sport: u16, server: &str, state: u8) -> Conn {
        let server: std::net::SocketAddr = server.parse().unwrap();
        Conn {
            tuple: Tuple {
                saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
                daddr: ip_to_bytes(server.ip()),
                sport,
                dport: server.port(),
                _pad: 0,
            },
            owner: key(tgid),
            cgroup_id: cgroup,
            state,
            ..Default::default()
        }
    }

    fn run(
        conns: &[Conn],
        seeds: &[Conn],
        stats: &[(OwnerKey, Counters)],
    ) -> (Vec<ServerRow>, Vec<ProcessRow>, Vec<CgroupRow>) {
        let rows = run_full(conns, seeds, stats, &HashMap::new());
        (rows.servers, rows.processes, rows.cgroups)
    }

    fn run_with(
        conns: &[Conn],
        stats: &[(OwnerKey, Counters)],
        facts: &HashMap<OwnerKey, OwnerFacts>,
    ) -> Rows {
        run_full(conns, &[], stats, facts)
    }

    fn run_full(
        conns: &[Conn],
        seeds: &[Conn],
        stats: &[(OwnerKey, Counters)],
        facts: &HashMap<OwnerKey, OwnerFacts>,
    ) -> Rows {
        let seeded = HashMap::new();
        let ids = conns
            .iter()
            .chain(seeds)
            .map(|c| c.cgroup_id)
            .chain(facts.values().map(|f| f.cgroup_id));
        let paths = ids.map(|id| (id, format!("/cg{id}"))).collect();
        build(&Inputs {
            conns,
            seeds,
            proc_stats: stats,
            cgroup_stats: &[],
            server_stats: &[],
            limits: &Limits::default(),
            facts,
            seeded: &seeded,
            cgroup_paths: &paths,
            held_by: &HashMap::new(),
            nat: &Translations::default(),
            retired: &[],
            now_ns: 0,
        })
    }

    fn yarn(container: &str, service: &str) -> OwnerFacts {
        let app = crate::attribution::yarn::ContainerId::parse(container).unwrap();
        OwnerFacts {
            comm: "java".into(),
            who: Attribution {
                kind: Kind::Yarn,
                service: service.into(),
                label: format!("{service} in {container}"),
                yarn_container: Some(container.into()),
                yarn_application: Some(app.application().into()),
                ..Attribution::default()
            },
            ..OwnerFacts::default()
        }
    }

    #[test]
    fn containers_applications_and_services_sum_their_processes() {
        use tcp_state::ESTABLISHED;
        const C1: &str = "container_e17_1700000000000_0042_01_000002";
        const C2: &str = "container_1700000000000_0042_01_000003";
        const C3: &str = "container_1700000000000_0043_01_000002";
        let mut facts = HashMap::new();
        facts.insert(key(1), yarn(C1, "Spark executor"));
        facts.insert(key(2), yarn(C1, "bash"));
        facts.insert(key(3), yarn(C2, "Spark executor"));
        facts.insert(key(4), yarn(C3, "MapReduce task"));
        let mut rs = OwnerFacts::default();
        rs.who.kind = Kind::Hbase;
        rs.who.service = "HBase RegionServer".into();
        facts.insert(key(5), rs);
        let mut conns = Vec::new();
        let mut port = 0;
        for (pid, n) in [(1, 3), (2, 1), (3, 2), (4, 1), (5, 7)] {
            for _ in 0..n {
                port += 1;
                conns.push(conn(pid, 9, port, "127.0.0.2:2181", ESTABLISHED));
            }
        }
        let stats: Vec<_> = [(1, 5, 2), (2, 1, 0), (3, 2, 0), (4, 4, 3), (5, 7, 0)]
            .into_iter()
            .map(|(pid, opened, closed)| {
                (
                    key(pid),
                    Counters {
                        opened,
                        closed,
                        ..Counters::default()
                    },
                )
            })
            .collect();
        let rows = run_with(&conns, &stats, &facts);

        let apps: Vec<_> = rows
            .applications
            .iter()
            .map(|a| {
                (
                    a.application.as_str(),
                    a.containers.len(),
                    a.totals.open,
                    a.totals.opened,
                    a.totals.closed,
                    a.processes,
                )
            })
            .collect();
        assert_eq!(
            apps,
            vec![
                ("application_1700000000000_0042", 2, 6, 8, 2, 3),
                ("application_1700000000000_0043", 1, 1, 4, 3, 1),
            ]
        );
        assert_eq!(
            rows.applications[0].containers,
            vec![C2.to_owned(), C1.to_owned()]
        );
        let c1 = rows.containers.iter().find(|c| c.container == C1).unwrap();
        assert_eq!((c1.totals.open, c1.pids.clone()), (4, vec![1, 2]));
        assert_eq!(
            c1.services,
            vec!["Spark executor".to_owned(), "bash".to_owned()]
        );
        let services: Vec<_> = rows
            .services
            .iter()
            .map(|s| (s.service.as_str(), s.totals.open, s.pids.clone()))
            .collect();
        assert_eq!(
            services,
            vec![
                ("HBase RegionServer", 7, vec![5]),
                ("Spark executor", 5, vec![1, 3]),
                ("MapReduce task", 1, vec![4]),
                ("bash", 1, vec![2]),
            ]
        );
        assert_eq!(rows.services[1].kinds, vec![Kind::Yarn]);
        // The whole is the sum of its parts: nothing counted twice, nothing lost.
        let total: u64 = rows.processes.iter().map(|p| p.states.open).sum();
        assert_eq!(total, 14);
        assert_eq!(
            rows.services.iter().map(|s| s.totals.open).sum::<u64>(),
            total
        );
    }

    #[test]
    fn server_rows_join_live_states_kernel_totals_and_limits() {
        use tcp_state::ESTABLISHED;
        let server: std::net::SocketAddr = "127.0.0.2:2181".parse().unwrap();
        let key = ServerKey {
            daddr: ip_to_bytes(server.ip()),
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            dport: 2181,
            _pad: [0; 6],
        };
        // A server this host no longer holds anything to still has its row.
        let gone = ServerKey {
            daddr: ip_to_bytes("127.0.0.3".parse().unwrap()),
            ..key
        };
        let stats = [
            (
                key,
                Counters {
                    opened: 9,
                    closed: 6,
                    rejected: 4,
                    ..Counters::default()
                },
            ),
            (
                gone,
                Counters {
                    opened: 1,
                    failed: 1,
                    ..Counters::default()
                },
            ),
        ];
        let conns = [
            conn(1, 9, 1, "127.0.0.2:2181", ESTABLISHED),
            conn(1, 9, 2, "127.0.0.2:2181", ESTABLISHED),
            conn(2, 9, 3, "127.0.0.2:2181", ESTABLISHED),
        ];
        let limits = Limits::new(Some(5), None, &["127.0.0.3:2181=0".into()]).unwrap();
        let facts = HashMap::new();
        let seeded = HashMap::new();
        let rows = build(&Inputs {
            conns: &conns,
            seeds: &[],
            proc_stats: &[],
            cgroup_stats: &[],
            server_stats: &stats,
            limits: &limits,
            facts: &facts,
            seeded: &seeded,
            cgroup_paths: &FxHashMap::default(),
            held_by: &HashMap::new(),
            nat: &Translations::default(),
            retired: &[],
            now_ns: 0,
        });
        let r = &rows.servers[0];
        assert_eq!(
            (r.server.as_str(), r.local_ip.as_str()),
            ("127.0.0.2:2181", "127.0.0.1")
        );
        assert_eq!(
            (r.states.open, r.opened, r.closed, r.rejected),
            (3, 9, 6, 4)
        );
        assert_eq!((r.limit, r.usage, r.headroom), (5, Some(0.6), Some(2)));
        let r = &rows.servers[1];
        assert_eq!(
            (r.server.as_str(), r.states.open, r.failed),
            ("127.0.0.3:2181", 0, 1)
        );
        assert_eq!((r.limit, r.usage, r.headroom), (0, None, None));
    }

    /// A container's connections masqueraded to the host's address count in the host's
    /// row, with the host's own: that is what the server counts against its limit.
    #[test]
    fn nat_translated_connections_count_where_the_server_sees_them() {
        use tcp_state::ESTABLISHED;
        let host = ip_to_bytes("127.0.0.1".parse().unwrap());
        let container = ip_to_bytes("10.7.0.2".parse().unwrap());
        let from_container = |tgid, sport| Conn {
            tuple: Tuple {
                saddr: container,
                ..conn(tgid, 9, sport, "127.0.0.2:2181", ESTABLISHED).tuple
            },
            ..conn(tgid, 9, sport, "127.0.0.2:2181", ESTABLISHED)
        };
        let conns = [
            conn(1, 9, 1, "127.0.0.2:2181", ESTABLISHED),
            from_container(2, 2),
            from_container(2, 3),
        ];
        let mut nat = Translations::default();
        let mut live = FxHashMap::default();
        live.insert(conns[1].tuple, host);
        live.insert(conns[2].tuple, host);
        nat.learn(live, 10);
        let server: std::net::SocketAddr = "127.0.0.2:2181".parse().unwrap();
        // The kernel's cumulative counters are keyed by the container's own address.
        let stats = [(
            ServerKey {
                daddr: ip_to_bytes(server.ip()),
                saddr: container,
                dport: 2181,
                _pad: [0; 6],
            },
            Counters {
                opened: 4,
                closed: 2,
                ..Counters::default()
            },
        )];
        let limits = Limits::new(Some(3), None, &[]).unwrap();
        let (facts, seeded) = (HashMap::new(), HashMap::new());
        let rows = build(&Inputs {
            conns: &conns,
            seeds: &[],
            proc_stats: &[],
            cgroup_stats: &[],
            server_stats: &stats,
            limits: &limits,
            facts: &facts,
            seeded: &seeded,
            cgroup_paths: &FxHashMap::default(),
            held_by: &HashMap::new(),
            nat: &nat,
            retired: &[],
            now_ns: 0,
        });
        assert_eq!(rows.servers.len(), 1, "{:#?}", rows.servers);
        let r = &rows.servers[0];
        assert_eq!(r.local_ip, "127.0.0.1");
        assert_eq!(r.translated_from, ["10.7.0.2"]);
        assert_eq!((r.states.open, r.opened, r.closed), (3, 4, 2));
        assert_eq!((r.headroom, r.usage), (Some(0), Some(1.0)));
        let shown = connections(&conns, &[], &nat, 0);
        let seen: Vec<Option<&str>> = shown.iter().map(|c| c.server_sees.as_deref()).collect();
        assert_eq!(
            seen.iter().filter(|s| **s == Some("127.0.0.1")).count(),
            2,
            "{seen:?}"
        );
        assert_eq!(seen.iter().filter(|s| s.is_none()).count(), 1);
    }

    #[test]
    fn an_owner_userspace_never_saw_is_labelled_by_its_comm() {
        let mut facts = HashMap::new();
        facts.insert(
            key(8),
            OwnerFacts {
                comm: "leaky".into(),
                ..OwnerFacts::default()
            },
        );
        let rows = run_with(
            &[conn(8, 9, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED)],
            &[],
            &facts,
        );
        assert_eq!(rows.processes[0].who.service, "leaky");
        assert_eq!(rows.processes[0].who.kind, Kind::Process);
        let rows = run_with(
            &[conn(9, 9, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED)],
            &[],
            &HashMap::new(),
        );
        assert_eq!(rows.processes[0].who.label, "?");
    }

    #[test]
    fn states_split_into_open_close_wait_and_closing() {
        use tcp_state::*;
        let conns = [
            conn(10, 5, 1, "127.0.0.2:2181", SYN_SENT),
            conn(10, 5, 2, "127.0.0.2:2181", ESTABLISHED),
            conn(10, 5, 3, "127.0.0.3:2181", ESTABLISHED),
            conn(10, 5, 4, "127.0.0.2:2181", CLOSE_WAIT),
            conn(10, 5, 5, "127.0.0.2:2181", FIN_WAIT2),
            conn(11, 6, 6, "[::1]:2181", ESTABLISHED),
        ];
        let (servers, procs, cgroups) = run(&conns, &[], &[]);
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[0].server, "127.0.0.2:2181");
        assert_eq!(
            servers[0].states,
            StateCounts {
                open: 2,
                connecting: 1,
                established: 1,
                close_wait: 1,
                closing: 1
            }
        );
        assert_eq!(servers[2].server, "[::1]:2181");
        assert_eq!(procs[0].pid, 10);
        assert_eq!(procs[0].states.open, 3);
        assert_eq!(
            procs[0].servers,
            vec![
                ServerOpen {
                    server: "127.0.0.2:2181".into(),
                    open: 2
                },
                ServerOpen {
                    server: "127.0.0.3:2181".into(),
                    open: 1
                },
            ]
        );
        assert_eq!(cgroups[0].id, 5);
        assert_eq!(cgroups[0].states.open, 3);
        assert_eq!(cgroups[0].path.as_deref(), Some("/cg5"));
        assert_eq!(cgroups[1].pids, vec![11]);
    }

    fn in_v1(path: &str, v2_id: u64) -> OwnerFacts {
        let cg = V1Cgroup {
            hierarchy: Hierarchy::V1Cpu,
            path: path.into(),
        };
        OwnerFacts {
            cgroup_id: v2_id,
            cgroup_v1: Some(cg.clone()),
            grouping: Grouping::V1(cg),
            ..OwnerFacts::default()
        }
    }

    fn in_v2(v2_id: u64) -> OwnerFacts {
        OwnerFacts {
            cgroup_id: v2_id,
            ..OwnerFacts::default()
        }
    }

    fn counted(opened: u64, closed: u64, failed: u64) -> Counters {
        Counters {
            opened,
            closed,
            failed,
            ..Counters::default()
        }
    }

    type CgroupSummary = (
        Hierarchy,
        Option<String>,
        u64,
        Kind,
        u64,
        u64,
        [u64; 3],
        Vec<u32>,
    );

    /// (hierarchy, path, id, kind, open, close_wait, [opened, closed, failed], pids).
    fn cgroup_rows(
        facts: &[(u32, OwnerFacts)],
        conns: &[Conn],
        proc_stats: &[(u32, Counters)],
        cgroup_stats: &[(u64, Counters)],
    ) -> Vec<CgroupSummary> {
        let facts: HashMap<OwnerKey, OwnerFacts> = facts
            .iter()
            .map(|(pid, f)| (key(*pid), f.clone()))
            .collect();
        let proc_stats: Vec<(OwnerKey, Counters)> =
            proc_stats.iter().map(|(pid, c)| (key(*pid), *c)).collect();
        let seeded = HashMap::new();
        let ids = conns
            .iter()
            .map(|c| c.cgroup_id)
            .chain(facts.values().map(|f| f.cgroup_id))
            .chain(cgroup_stats.iter().map(|(id, _)| *id));
        let paths = ids
            .map(|id| {
                (
                    id,
                    if id == 1 {
                        "/".into()
                    } else {
                        format!("/cg{id}")
                    },
                )
            })
            .collect();
        let rows = build(&Inputs {
            conns,
            seeds: &[],
            proc_stats: &proc_stats,
            cgroup_stats,
            server_stats: &[],
            limits: &Limits::default(),
            facts: &facts,
            seeded: &seeded,
            cgroup_paths: &paths,
            held_by: &HashMap::new(),
            nat: &Translations::default(),
            retired: &[],
            now_ns: 0,
        });
        let open: u64 = rows.processes.iter().map(|p| p.states.open).sum();
        assert_eq!(
            rows.cgroups.iter().map(|c| c.states.open).sum::<u64>(),
            open,
            "every open connection in exactly one cgroup row"
        );
        rows.cgroups
            .into_iter()
            .map(|c| {
                (
                    c.hierarchy,
                    c.path,
                    c.id,
                    c.kind,
                    c.states.open,
                    c.states.close_wait,
                    [c.opened, c.closed, c.failed],
                    c.pids,
                )
            })
            .collect()
    }

    const C1: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000005";
    const C2: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000006";

    /// A hybrid host with every process in the v2 root (id 1): two YARN containers by their
    /// v1 cpu path, a plain process left in the v2 root, one process in a v2 group.
    #[test]
    fn v1_rows_are_keyed_by_path_and_counted_from_their_processes() {
        use tcp_state::{CLOSE_WAIT, ESTABLISHED, SYN_SENT};
        let facts = [
            (1, in_v1(C1, 1)),
            (2, in_v1(C1, 1)),
            (3, in_v1(C2, 1)),
            (4, in_v2(1)),
            (5, in_v2(7)),
        ];
        let mut conns = Vec::new();
        let mut port = 0;
        for (pid, cgroup, state, n) in [
            (1, 1, ESTABLISHED, 3),
            (1, 1, CLOSE_WAIT, 1),
            (2, 1, SYN_SENT, 1),
            (3, 1, ESTABLISHED, 2),
            (4, 1, ESTABLISHED, 1),
            (5, 7, ESTABLISHED, 2),
        ] {
            for _ in 0..n {
                port += 1;
                conns.push(conn(pid, cgroup, port, "127.0.0.2:2181", state));
            }
        }
        let proc_stats = [
            (1, counted(6, 2, 0)),
            (2, counted(2, 0, 1)),
            (3, counted(2, 0, 0)),
            (4, counted(3, 2, 0)),
            (5, counted(2, 0, 0)),
        ];
        // The kernel counts per v2 id: the root's row holds every process in it.
        let cgroup_stats = [(1, counted(13, 4, 1)), (7, counted(2, 0, 0))];
        let yarn = Kind::Yarn;
        assert_eq!(
            cgroup_rows(&facts, &conns, &proc_stats, &cgroup_stats),
            vec![
                (
                    Hierarchy::V1Cpu,
                    Some(C1.into()),
                    0,
                    yarn,
                    4,
                    1,
                    [8, 2, 1],
                    vec![1, 2]
                ),
                (
                    Hierarchy::V2,
                    Some("/cg7".into()),
                    7,
                    Kind::Process,
                    2,
                    0,
                    [2, 0, 0],
                    vec![5]
                ),
                (
                    Hierarchy::V1Cpu,
                    Some(C2.into()),
                    0,
                    yarn,
                    2,
                    0,
                    [2, 0, 0],
                    vec![3]
                ),
                (
                    Hierarchy::V2,
                    Some("/".into()),
                    1,
                    Kind::Process,
                    1,
                    0,
                    [3, 2, 0],
                    vec![4]
                ),
            ]
        );
    }

    /// RHEL 8: every process by its v1 path; the kernel's v2 root row, whose counts all
    /// belong to v1 rows, is not shown.
    #[test]
    fn a_v1_only_host_has_no_v2_row() {
        use tcp_state::ESTABLISHED;
        let facts = [(1, in_v1(C1, 1)), (2, in_v1("/", 1))];
        let conns = [
            conn(1, 1, 1, "127.0.0.2:2181", ESTABLISHED),
            conn(2, 1, 2, "127.0.0.2:2181", ESTABLISHED),
        ];
        // An exited process's counters still count in its v1 row.
        let facts_and_gone = [facts[0].clone(), facts[1].clone(), (3, in_v1(C1, 1))];
        let proc_stats = [
            (1, counted(1, 0, 0)),
            (2, counted(1, 0, 0)),
            (3, counted(2, 2, 0)),
        ];
        let rows = cgroup_rows(
            &facts_and_gone,
            &conns,
            &proc_stats,
            &[(1, counted(4, 2, 0))],
        );
        assert_eq!(
            rows,
            vec![
                (
                    Hierarchy::V1Cpu,
                    Some("/".into()),
                    0,
                    Kind::Process,
                    1,
                    0,
                    [1, 0, 0],
                    vec![2]
                ),
                (
                    Hierarchy::V1Cpu,
                    Some(C1.into()),
                    0,
                    Kind::Yarn,
                    1,
                    0,
                    [3, 2, 0],
                    vec![1, 3]
                ),
            ]
        );
    }

    #[test]
    fn process_rows_say_where_they_are_counted() {
        let mut facts = HashMap::new();
        facts.insert(key(1), in_v1(C1, 1));
        let mut v2 = in_v2(1);
        v2.cgroup_v1 = Some(V1Cgroup {
            hierarchy: Hierarchy::V1Cpu,
            path: "/".into(),
        });
        facts.insert(key(2), v2);
        let conns = [
            conn(1, 1, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED),
            conn(2, 1, 2, "127.0.0.2:2181", tcp_state::ESTABLISHED),
        ];
        let rows = run_with(&conns, &[], &facts);
        let by_pid = |pid| rows.processes.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(by_pid(1).cgroup_hierarchy, Hierarchy::V1Cpu);
        assert_eq!(by_pid(1).cgroup_v1.as_deref(), Some(C1));
        assert_eq!(by_pid(2).cgroup_hierarchy, Hierarchy::V2);
        assert_eq!(by_pid(2).cgroup_v1.as_deref(), Some("/"));
        let v1 = rows.cgroups.iter().find(|c| c.id == 0).unwrap();
        let json = serde_json::to_value(v1).unwrap();
        assert_eq!(json["hierarchy"], "v1:cpu");
        assert_eq!(json["path"], C1);
    }

    #[test]
    fn a_seed_also_tracked_by_the_kernel_counts_once() {
        let c = conn(10, 5, 7, "127.0.0.2:2181", tcp_state::ESTABLISHED);
        let (servers, procs, _) = run(&[c], &[c], &[]);
        assert_eq!(servers[0].states.open, 1);
        assert_eq!(procs[0].states.open, 1);
    }

    #[test]
    fn exited_process_keeps_its_totals() {
        let stats = [(
            key(42),
            Counters {
                opened: 5,
                closed: 3,
                failed: 2,
                close_wait: 0,
                rejected: 1,
            },
        )];
        let (_, procs, _) = run(&[], &[], &stats);
        assert_eq!(procs.len(), 1);
        assert_eq!(
            (
                procs[0].opened,
                procs[0].closed,
                procs[0].failed,
                procs[0].rejected
            ),
            (5, 3, 2, 1)
        );
        assert_eq!(procs[0].states.open, 0);
        assert!(!procs[0].alive);
    }

    #[test]
    fn reused_pid_is_two_rows() {
        let mut older = key(42);
        older.birth_ns = 100;
        let mut newer = key(42);
        newer.birth_ns = 200;
        let stats = [
            (
                older,
                Counters {
                    opened: 1,
                    ..Default::default()
                },
            ),
            (
                newer,
                Counters {
                    opened: 2,
                    ..Default::default()
                },
            ),
        ];
        let (_, procs, _) = run(&[], &[], &stats);
        assert_eq!(procs.len(), 2);
    }

    #[test]
    fn empty_host() {
        let (s, p, c) = run(&[], &[], &[]);
        assert!(s.is_empty() && p.is_empty() && c.is_empty());
    }
}
