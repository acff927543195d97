//! The snapshot document (`zkconn.snapshot/v1`): its types here and in [`health`], the
//! rows computed from kernel state in [`build`], the roll-ups in [`rollup`].
//!
//! Owns: the document and turning raw kernel state plus what userspace learnt about each
//! owner into rows per server, process and cgroup. Pure: no I/O, so every rule is
//! unit-tested here. Must not: read `/proc` or maps (the engine passes everything in), nor
//! import the loader or the judges (their vocabulary is in [`crate::verdict`] and
//! [`zkconn_common::hooks`]).

mod build;
mod clients;
pub mod health;
mod level;
mod rollup;
#[cfg(test)]
mod tests;

use serde::Serialize;
use zkconn_common::{OwnerKey, tcp_state};

pub use self::{
    build::{Aggregates, Inputs, Translations, build, connections, endpoint, v1_owners},
    clients::{
        ClientConnection, ClientRow, ListenerRow, RetiredClients, ServerSide, ServerSideInputs,
        client_rows, listener_for,
    },
    health::*,
    level::{CgroupKey, Level, RowId},
    rollup::roll_up,
};
use crate::{
    attribution::{
        Attribution, Kind,
        hierarchy::{Grouping, Hierarchy, V1Cgroup},
    },
    limits::{LimitInfo, LimitSource},
    verdict::{Alarm, Rates},
};

pub const SCHEMA: &str = "zkconn.snapshot/v1";

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Snapshot {
    #[serde(deserialize_with = "crate::intern::de")]
    pub schema: crate::intern::Name,
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
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Leak suspects: the holders, highest score first (docs/suspects.md).
    pub suspects: Vec<Suspect>,
    /// Processes refused in the window that are no suspects: cut off by the holders of the
    /// budget that refused them. Most refused first.
    pub victims: Vec<Victim>,
    /// The server's side, where this host is a ZooKeeper server: one row per client host
    /// on each watched listener, most used first (empty with `--no-server-side`).
    pub clients: Vec<ClientRow>,
    /// The server's side per watched listener of this host: its server, its limits, and
    /// every client host together (empty with `--no-server-side`).
    pub listeners: Vec<ListenerRow>,
}

/// A process a server refused in the window that holds too little to be a suspect.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Victim {
    pub pid: u32,
    pub label: String,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Its open connections now.
    pub open: u64,
    /// Refusals within the window.
    pub rejected: u64,
    /// The servers that refused it, most refusals first.
    pub refused_by: Vec<String>,
    /// The budgets that refused it (server and the local IP it connected from), most
    /// refusals first.
    pub refused_at: Vec<RefusedBudget>,
    /// `refused 5 times by 10.1.2.3:2181`.
    pub reason: String,
}

/// Refusals of one process by one budget, from the kernel's refusal events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RefusedBudget {
    pub server: String,
    /// The local IP of the refused connections, as this host saw it (before any NAT).
    pub local_ip: String,
    pub refusals: u64,
}

/// `--warn` and `--crit`, in percent of the limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct AlarmThresholds {
    /// As given: a number (at or over it) or a range (monitoring plugins' syntax).
    pub warn: crate::threshold::Range,
    pub crit: crate::threshold::Range,
    /// The number, when `warn` is one; `null` for a range.
    pub warn_percent: Option<f64>,
    pub crit_percent: Option<f64>,
}

impl AlarmThresholds {
    /// From `--warn` and `--crit`.
    pub fn new(warn: crate::threshold::Range, crit: crate::threshold::Range) -> Self {
        Self {
            warn,
            crit,
            warn_percent: warn.plain(),
            crit_percent: crit.plain(),
        }
    }
}

/// An owner that grows, holds CLOSE_WAIT sockets or holds much of a budget at or near its
/// limit.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Suspect {
    pub subject: Level,
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

/// Current connections by state; `open` = connecting + established.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Where `limit` came from: `flag`, `zoo-cfg`, `server` (it said so when asked), or
    /// `default` (nobody said: ZooKeeper's default, assumed).
    pub limit_source: LimitSource,
    /// `open / limit`; `null` when unlimited.
    pub usage: Option<f64>,
    /// `limit - open`; `null` when unlimited.
    pub headroom: Option<i64>,
    #[serde(flatten)]
    pub rates: Rates,
    /// Seconds until `headroom` is used up at the sustained growth of the window; `null`
    /// when not growing or unlimited, 0 at or over the limit while growing.
    pub time_to_limit_secs: Option<f64>,
    /// The server refused a connection of this host within the last minute (zkconn's own
    /// question for the limit included: `question_refused`).
    pub refusing: bool,
    /// zkconn's own question for the server's limit was refused from this local IP within
    /// the last minute: the server holds as many connections from it as it allows.
    pub question_refused: bool,
    pub alarm: Alarm,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
/// What a process holds of one budget: a server's connections from one local IP, as the
/// server sees it (after NAT), the unit `maxClientCnxns` counts.
pub struct ServerOpen {
    pub server: String,
    pub local_ip: String,
    pub open: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessRow {
    pub pid: u32,
    /// Serialized as `instance` (its `birth_ns`): with `pid`, one process among those that
    /// had its pid.
    #[serde(
        rename = "instance",
        default,
        serialize_with = "instance::ser",
        deserialize_with = "instance::de"
    )]
    pub key: OwnerKey,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// How many of the connector's open connections it holds (shared descriptors count
    /// for every holder).
    pub connections: u64,
}

#[cfg(test)]
use crate::limits::{self, Limits};

/// A process row's key as the document has it: `instance`, the key's `birth_ns` (its pid
/// is the row's own).
mod instance {
    use serde::Deserialize as _;
    use zkconn_common::OwnerKey;

    pub fn ser<S: serde::Serializer>(key: &OwnerKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(key.birth_ns)
    }

    pub fn de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OwnerKey, D::Error> {
        Ok(OwnerKey {
            tgid: 0,
            _pad: 0,
            birth_ns: u64::deserialize(d)?,
        })
    }
}

impl Snapshot {
    /// A document read back (from the history store) as the model, for `top --history`;
    /// each process row keyed again by its `pid` and `instance`.
    pub fn from_document(doc: serde_json::Value) -> anyhow::Result<Self> {
        let mut snap: Snapshot = serde_json::from_value(doc)
            .map_err(|e| anyhow::anyhow!("not a snapshot document this zkconn reads: {e}"))?;
        for p in &mut snap.rows.processes {
            p.key.tgid = p.pid;
        }
        Ok(snap)
    }
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
                hook: Some(zkconn_common::hooks::Hook::Tracepoint),
                ..ProbeHealth::default()
            },
            targets: vec!["*:2181".into()],
            max_client_cnxns: Limits::default().info(),
            alarm_thresholds: AlarmThresholds::new(
                crate::threshold::Range::at_or_over(80.0),
                crate::threshold::Range::at_or_over(95.0),
            ),
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
            limit_source: LimitSource::Flag,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Age {
    /// Age of the oldest open connection in seconds; `null` with none open.
    pub oldest_secs: Option<f64>,
    /// The oldest existed before zkconn started: its age is at least `oldest_secs`.
    pub oldest_seeded: bool,
    /// CLOSE_WAIT sockets held longer than 2 s: the server closed, the application did not.
    pub close_wait_held: u64,
}

impl Age {
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

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
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
    pub rejected: u64,
    #[serde(flatten)]
    pub age: Age,
    #[serde(flatten)]
    pub rates: Rates,
    /// The users its processes run as.
    pub users: Vec<String>,
    pub pids: Vec<u32>,
}

impl CgroupRow {
    /// Its counters as a roll-up's, the shape every other owner row has.
    pub fn totals(&self) -> Totals {
        Totals {
            open: self.states.open,
            close_wait: self.states.close_wait,
            opened: self.opened,
            closed: self.closed,
            failed: self.failed,
            rejected: self.rejected,
            age: self.age,
            rates: self.rates,
        }
    }
}

/// Counters summed over the processes of a roll-up row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
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
    pub fn absorb(&mut self, t: &Totals) {
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

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ContainerRow {
    pub container: String,
    pub application: String,
    #[serde(flatten)]
    pub totals: Totals,
    pub services: Vec<String>,
    /// The users its processes run as.
    pub users: Vec<String>,
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ApplicationRow {
    pub application: String,
    pub containers: Vec<String>,
    #[serde(flatten)]
    pub totals: Totals,
    pub processes: u64,
    /// The users its live processes run as.
    pub users: Vec<String>,
    /// Its live processes.
    pub pids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ServiceRow {
    pub service: String,
    /// The kinds its processes run as (usually one).
    pub kinds: Vec<Kind>,
    #[serde(flatten)]
    pub totals: Totals,
    /// The users its processes run as.
    pub users: Vec<String>,
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
