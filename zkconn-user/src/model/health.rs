//! `probe`: what the document says of zkconn itself: the hook, what was lost, overflowed,
//! seeded, repaired and retired, how owners were attributed, the capabilities kept.
//!
//! Owns: the types. Must not: compute anything (the source and the engine fill them).

use serde::Serialize;
use zkconn_common::hooks::{Hook, RefusalDetection};

/// `probe.retention`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Retired rows the kernel refused to delete from its process and cgroup tables, as
    /// of the reading: tried again at each one, taking room there until then.
    pub undeleted: u64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProbeHealth {
    pub hook: Option<Hook>,
    /// How refusals are recognised: `no_bytes_received` (with BTF) or `reset_only`.
    pub refusal_detection: Option<RefusalDetection>,
    /// How kernel events reach userspace: `ring-buffer`, or `perf-buffer` (a perf event
    /// array, before 5.8 or with `--fallback perf-buffer`); null for the poll hook.
    #[serde(default, deserialize_with = "crate::intern::de_opt")]
    pub events: Option<crate::intern::Name>,
    /// Kernel events read since start (new processes, exits, refusals).
    pub events_received: u64,
    /// Events the kernel could not deliver plus program runs the kernel skipped.
    pub lost: u64,
    /// Sockets, processes or counter rows not tracked because a map was full.
    pub overflow: u64,
    pub lost_detail: LostDetail,
    pub overflow_detail: OverflowDetail,
    pub seeds: SeedHealth,
    /// The server's side (the `clients` rows).
    pub server_side: ServerSideHealth,
    /// Drift repair against the kernel's socket table (`--reconcile-interval`).
    pub repaired: RepairHealth,
    /// Exited processes out of the process rows (see `--retain-exited`).
    pub retention: RetentionHealth,
    pub attribution: AttributionHealth,
    /// NAT look-ups in the host's connection tracking table (see [`crate::nat`]).
    pub nat: NatHealth,
    /// `/proc` entries that existed but could not be read, socket tables that could not be
    /// read and reconciliation rounds that failed (a kernel map that cannot be read is an
    /// error, never counted here).
    pub unreadable: u64,
    /// The capabilities zkconn kept after attach, and why a BPF one was kept.
    pub capabilities: Kept,
    /// Kernel helpers replaced by older ones: forced, or missing from this kernel.
    pub fallbacks: Vec<FallbackInUse>,
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
    pub server_side: ServerSideHealth,
    pub repaired: RepairHealth,
    pub nat: NatHealth,
    pub unreadable: u64,
    pub capabilities: Kept,
    pub fallbacks: Vec<FallbackInUse>,
    pub limitations: Vec<String>,
    /// Retired rows not yet deleted from the kernel's tables (the engine puts it in
    /// [`RetentionHealth::undeleted`]).
    pub undeleted: u64,
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
                + s.overflow_detail.counters
                + s.overflow_detail.server_side
                + s.overflow_detail.client_hosts,
            lost_detail: s.lost_detail,
            overflow_detail: s.overflow_detail,
            seeds: s.seeds,
            server_side: s.server_side,
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
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RepairHealth {
    /// Kernel rows deleted because their socket was gone on two consecutive rounds (a close
    /// the kernel did not see; not counted as closed or failed).
    pub retired: u64,
    /// Live connections towards a target that no kernel row described on two consecutive
    /// rounds (a connect the kernel did not see), handed to the kernel as seeds.
    pub adopted: u64,
    /// Connections not adopted because their 4-tuple is live in two network namespaces.
    pub conflicts: u64,
    /// The server's side: rows of accepted connections deleted because their socket was
    /// gone on two consecutive rounds (a close the kernel did not see; not counted as
    /// closed).
    pub inbound_retired: u64,
    /// The server's side: accepted connections on a watched listener that no kernel row
    /// described on two consecutive rounds, handed to the kernel as seeds.
    pub inbound_adopted: u64,
    /// `--reconcile-interval` in seconds; 0: repair is off.
    pub interval_secs: f64,
    /// Seconds from the last round to the next: the interval, or, after a round of 0.1 s or
    /// more, 400 times as long as it took where that is longer (so such repair costs at most
    /// 0.25 % of a core).
    pub spacing_secs: f64,
    /// Seconds since the last complete round; null before the first one (or when off).
    pub last_secs_ago: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LostDetail {
    pub events: u64,
    /// `None`: the kernel does not count them (before 5.12), so unknown, not 0.
    pub recursion_misses: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct OverflowDetail {
    pub connections: u64,
    pub processes: u64,
    pub counters: u64,
    /// Accepted connections not followed on the server's side (`--max-connections` sizes
    /// its tables).
    pub server_side: u64,
    /// Client hosts whose counters could not be kept: the server's side counts 16,384.
    pub client_hosts: u64,
}

/// What the server's side follows.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerSideHealth {
    /// Accepted connections on the watched ports are followed (not `--no-server-side`, and
    /// a kernel hook: polling does not).
    pub followed: bool,
    /// Refusals are told from other closes (the kernel's BTF gives `tcp_sock`'s byte counts
    /// and sequence numbers); without, `rejected` and `unanswered` stay 0.
    pub refusals_told: bool,
    /// Accepted connections that existed at start, seeded.
    pub seeded: u64,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
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
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
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

/// What zkconn kept after attach, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Kept {
    /// The capabilities kept (effective = permitted), by name.
    pub kept: Vec<String>,
    /// Why a BPF capability was kept: this kernel refuses map access without it.
    pub why: Option<String>,
    #[serde(skip)]
    pub mask: u64,
}

/// What the outputs say about NAT.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NatHealth {
    /// Whether the host's connection tracking table could be asked.
    pub available: bool,
    /// Why not, when it could not (`--nat off`, no permission, no conntrack).
    pub reason: Option<String>,
    /// Open connections whose server sees another source address than their own.
    pub translated: u64,
    /// Questions asked since start.
    pub lookups: u64,
    /// Questions that failed (other than "no entry": a connection the host does not track).
    pub errors: u64,
}

/// A kernel helper replaced by an older one, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FallbackInUse {
    /// Its `--fallback` name.
    #[serde(deserialize_with = "crate::intern::de")]
    pub fallback: crate::intern::Name,
    /// `forced` (`--fallback`) or `kernel` (the helper is missing).
    #[serde(deserialize_with = "crate::intern::de")]
    pub reason: crate::intern::Name,
}
