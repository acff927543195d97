//! Rows per server, process and cgroup from the kernel's state and the owners' facts.
//!
//! Owns: counting each live connection once, where the server sees it. Must not: do I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use zkconn_common::{Conn, Counters, OwnerKey, ServerKey, conn_flags, tcp_state};

use super::{
    Age, CgroupRow, ConnectionRow, Holder, OwnerFacts, ProcessRow, Rates, Retired, Rows,
    ServerOpen, ServerRow, StateCounts, roll_up, round1, state_name,
};
use crate::{
    attribution::{
        self, Attribution,
        hierarchy::{Grouping, Hierarchy, V1Cgroup},
    },
    limits::{self, Limits},
    targets::ip_from_bytes,
};

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
    /// What retired processes counted in v1 cgroup rows did, by that cgroup (the rows keep
    /// it) and by the v2 id they connected from (the v2 rows leave it out).
    pub retired_v1: &'a [(V1Cgroup, Counters)],
    pub retired_v1_moved: &'a [(u64, Counters)],
    /// Boot-clock now, to age connections.
    pub now_ns: u64,
    /// What `conns` and `seeds` say, when the caller kept it from an earlier reading of the
    /// same rows (see [`Aggregates`]); worked out here when `None`.
    pub aggregates: Option<&'a Aggregates>,
}

type Server = ([u8; 16], u16);
/// A budget: (server, source address as the server sees it).
type Budget = (Server, [u8; 16]);

/// Owners counted in v1 cgroup rows: their connections stay out of the v2 rows.
pub fn v1_owners(facts: &HashMap<OwnerKey, OwnerFacts>) -> FxHashSet<OwnerKey> {
    facts
        .iter()
        .filter(|(_, f)| matches!(f.grouping, Grouping::V1(_)))
        .map(|(k, _)| *k)
        .collect()
}

/// The ages of a set of connections without the clock: when the oldest open one connected,
/// and since when each in CLOSE_WAIT has been there. [`Ages::at`] makes an [`Age`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ages {
    /// Connect time (boot-clock ns) of the oldest open connection, and whether it was seeded.
    oldest: Option<(u64, bool)>,
    /// When each connection in CLOSE_WAIT entered it.
    close_wait_since: Vec<u64>,
}

impl Ages {
    fn add(&mut self, c: &Conn) {
        match c.state {
            tcp_state::SYN_SENT | tcp_state::ESTABLISHED => {
                let seeded = c.flags & conn_flags::SEEDED != 0;
                if self.oldest.is_none_or(|(o, _)| c.opened_ns < o) {
                    self.oldest = Some((c.opened_ns, seeded));
                }
            }
            tcp_state::CLOSE_WAIT => self.close_wait_since.push(c.changed_ns),
            _ => {}
        }
    }

    /// The ages at `now_ns`.
    pub fn at(&self, now_ns: u64) -> Age {
        let secs = |since: u64| now_ns.saturating_sub(since) as f64 / 1e9;
        Age {
            oldest_secs: self.oldest.map(|(opened, _)| round1(secs(opened))),
            oldest_seeded: self.oldest.is_some_and(|(_, seeded)| seeded),
            close_wait_held: self
                .close_wait_since
                .iter()
                .filter(|since| secs(**since) >= crate::verdict::CLOSE_WAIT_GRACE_SECS)
                .count() as u64,
        }
    }
}

/// What the connections say per server, owner and cgroup, in one pass over them and free of
/// the clock: the same rows (and the same translations and v1 owners) give the same
/// aggregates, so a reading at rest can keep them instead of walking 100,000 connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aggregates {
    by_server: BTreeMap<(Server, [u8; 16]), StateCounts>,
    by_owner: FxHashMap<OwnerKey, (StateCounts, BTreeMap<Budget, u64>, Ages)>,
    by_cgroup: FxHashMap<u64, (StateCounts, BTreeSet<u32>, Ages)>,
    /// Server rows count per source address as the server sees it (after NAT).
    translated_from: BTreeMap<(Server, [u8; 16]), BTreeSet<[u8; 16]>>,
}

impl Aggregates {
    /// The aggregates of `conns` and the seeds the kernel does not track, with `nat`'s
    /// translations; `v1` owners count in no v2 cgroup row.
    pub fn of(
        conns: &[Conn],
        seeds: &[Conn],
        nat: &FxHashMap<zkconn_common::Tuple, [u8; 16]>,
        v1: &FxHashSet<OwnerKey>,
    ) -> Self {
        let mut a = Aggregates::default();
        for c in live(conns, seeds) {
            let server = (c.tuple.daddr, c.tuple.dport);
            let seen = nat.get(&c.tuple).copied().unwrap_or(c.tuple.saddr);
            if seen != c.tuple.saddr {
                a.translated_from
                    .entry((server, seen))
                    .or_default()
                    .insert(c.tuple.saddr);
            }
            a.by_server.entry((server, seen)).or_default().add(c.state);
            let (states, per_server, ages) = a.by_owner.entry(c.owner).or_default();
            states.add(c.state);
            ages.add(c);
            if matches!(c.state, tcp_state::SYN_SENT | tcp_state::ESTABLISHED) {
                *per_server.entry((server, seen)).or_default() += 1;
            }
            if v1.is_empty() || !v1.contains(&c.owner) {
                let (cg_states, pids, cg_ages) = a.by_cgroup.entry(c.cgroup_id).or_default();
                cg_states.add(c.state);
                cg_ages.add(c);
                pids.insert(c.owner.tgid);
            }
        }
        a
    }
}

pub fn endpoint(addr: [u8; 16], port: u16) -> String {
    std::net::SocketAddr::new(ip_from_bytes(addr), port).to_string()
}

/// Rows per server, process and cgroup. A seed that the kernel also tracks (same tuple)
/// is counted once, as the kernel's.
pub fn build(inputs: &Inputs<'_>) -> Rows {
    let computed;
    let agg = match inputs.aggregates {
        Some(a) => a,
        None => {
            computed = Aggregates::of(
                inputs.conns,
                inputs.seeds,
                &inputs.nat.live,
                &v1_owners(inputs.facts),
            );
            &computed
        }
    };
    let by_server = agg.by_server.clone();
    let mut by_owner: FxHashMap<OwnerKey, (StateCounts, BTreeMap<Budget, u64>, Age)> = agg
        .by_owner
        .iter()
        .map(|(k, (states, budgets, ages))| {
            (*k, (*states, budgets.clone(), ages.at(inputs.now_ns)))
        })
        .collect();
    let mut by_cgroup: FxHashMap<u64, (StateCounts, BTreeSet<u32>, Age)> = agg
        .by_cgroup
        .iter()
        .map(|(k, (states, pids, ages))| (*k, (*states, pids.clone(), ages.at(inputs.now_ns))))
        .collect();
    let mut translated_from = agg.translated_from.clone();
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
                    .map(|((server, seen), open)| {
                        ((name(server), ip_from_bytes(seen).to_string()), open)
                    })
                    .collect::<BTreeMap<(String, String), u64>>()
                    .into_iter()
                    .map(|((server, local_ip), open)| ServerOpen {
                        server,
                        local_ip,
                        open,
                    })
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

    // A row's users are those of the processes it lists, wherever each was first seen.
    let mut users_of: FxHashMap<u32, BTreeSet<String>> = FxHashMap::default();
    for p in &processes {
        if let Some(user) = p.user_or_uid() {
            users_of.entry(p.pid).or_default().insert(user);
        }
    }
    let (v1_rows, moved) = v1_cgroup_rows(&processes, &v1_of, inputs);
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
                counters.rejected = counters.rejected.saturating_sub(m.rejected);
            }
            let (states, mut pids, age) = by_cgroup.remove(&id).unwrap_or_default();
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
                rejected: counters.rejected,
                age,
                rates: Rates::default(),
                users: pids
                    .iter()
                    .filter_map(|pid| users_of.get(pid))
                    .flatten()
                    .cloned()
                    .collect::<BTreeSet<String>>()
                    .into_iter()
                    .collect(),
                pids: pids.into_iter().collect(),
            }
        })
        // A v2 row left with nothing once v1 rows took their processes' share.
        .filter(|r| {
            !(r.pids.is_empty()
                && r.states == StateCounts::default()
                && r.opened + r.closed + r.failed + r.rejected == 0)
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
            // A row's server is always an address; were it not, its limit is assumed.
            let limits::ServerLimit { limit, source } = server.parse().map_or(
                limits::ServerLimit {
                    limit: limits::ZOOKEEPER_DEFAULT,
                    source: limits::LimitSource::Default,
                },
                |s| inputs.limits.for_server(s),
            );
            let question_refused = server
                .parse()
                .is_ok_and(|s| inputs.limits.question_refused(s, &local_ip));
            ServerRow {
                question_refused,
                usage: limits::usage(states.open, limit),
                headroom: limits::headroom(states.open, limit),
                translated_from: translated_names
                    .remove(&(server.clone(), local_ip.clone()))
                    .unwrap_or_default(),
                limit,
                limit_source: source,
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
        victims: Vec::new(),
        clients: Vec::new(),
        listeners: Vec::new(),
    }
}

/// Rows of the processes counted by a v1 cgroup: states from their live connections,
/// `opened`/`closed`/`failed`/`rejected` from their own counters and those of the retired
/// ones. Also returns those counters summed per v2 id, which the v2 rows leave out.
fn v1_cgroup_rows(
    processes: &[ProcessRow],
    v1_of: &FxHashMap<OwnerKey, V1Cgroup>,
    inputs: &Inputs<'_>,
) -> (Vec<CgroupRow>, FxHashMap<u64, Counters>) {
    let mut rows: BTreeMap<&V1Cgroup, (CgroupRow, BTreeSet<u32>)> = BTreeMap::new();
    let mut moved: FxHashMap<u64, Counters> = FxHashMap::default();
    for (id, c) in inputs.retired_v1_moved {
        moved.entry(*id).or_default().add(c);
    }
    if v1_of.is_empty() && inputs.retired_v1.is_empty() {
        return (Vec::new(), moved);
    }
    let new_row = |cg: &V1Cgroup| {
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
            rejected: 0,
            age: Age::default(),
            rates: Rates::default(),
            users: Vec::new(),
            pids: Vec::new(),
        };
        (row, BTreeSet::new())
    };
    // What retired processes did stays in their row, which they alone may still keep.
    for (cg, c) in inputs.retired_v1 {
        let (row, _) = rows.entry(cg).or_insert_with(|| new_row(cg));
        row.opened += c.opened;
        row.closed += c.closed;
        row.failed += c.failed;
        row.rejected += c.rejected;
    }
    for p in processes {
        let Some(cg) = v1_of.get(&p.key) else {
            continue;
        };
        let (row, pids) = rows.entry(cg).or_insert_with(|| new_row(cg));
        row.states.merge(&p.states);
        row.opened += p.opened;
        row.closed += p.closed;
        row.failed += p.failed;
        row.rejected += p.rejected;
        row.age.merge(&p.age);
        row.users.extend(p.user_or_uid());
        pids.insert(p.pid);
        moved.entry(p.cgroup_id).or_default().add(&Counters {
            opened: p.opened,
            closed: p.closed,
            failed: p.failed,
            rejected: p.rejected,
            ..Counters::default()
        });
    }
    let rows = rows
        .into_values()
        .map(|(mut row, pids)| {
            row.pids = pids.into_iter().collect();
            super::rollup::sorted_set(&mut row.users);
            row
        })
        .collect();
    (rows, moved)
}
