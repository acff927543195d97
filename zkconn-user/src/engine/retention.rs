//! Retention: exited processes and removed cgroups leave the rows once they hold nothing
//! and were shown long enough; finished YARN containers and applications follow them.
//!
//! Owns: when a row is due and what its counts fold into. Must not: touch the kernel's
//! tables (the engine orders the source to forget what is due).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
};

use rustc_hash::FxHashSet;
use zkconn_common::{ClientCounters, ClientKey, Counters, OwnerKey};

use crate::{
    attribution::hierarchy::V1Cgroup,
    model::{self, OwnerFacts, RetiredClients},
};

/// The server's side: a client host on a listener that holds no connection and whose
/// counters did not move for `after` seconds leaves the kernel's table (which holds
/// [`zkconn_common::MAX_CLIENTS`] hosts), its counts summed per listener so that the
/// listener's totals never go down. A host that connects again starts a row afresh.
#[derive(Debug, Default)]
pub struct ClientRetention {
    /// Each host's counters as last seen, and since when they were so with nothing open.
    idle: HashMap<ClientKey, (ClientCounters, f64)>,
    /// Per listener, what the hosts retired had counted.
    pub retired: BTreeMap<SocketAddr, RetiredClients>,
}

impl ClientRetention {
    /// Of the kernel's rows `counters`, those idle (not in `holding`, same counts) for
    /// `after` seconds by `now`: with the counts expected, for the source to delete.
    pub fn due(
        &mut self,
        counters: &[(ClientKey, ClientCounters)],
        holding: &FxHashSet<ClientKey>,
        now: f64,
        after: f64,
    ) -> Vec<(ClientKey, ClientCounters)> {
        let mut due = Vec::new();
        let mut idle = HashMap::with_capacity(counters.len());
        for (key, c) in counters {
            if holding.contains(key) {
                continue;
            }
            let since = match self.idle.get(key) {
                Some((before, since)) if before == c => *since,
                _ => now,
            };
            if now - since >= after {
                due.push((*key, *c));
            }
            idle.insert(*key, (*c, since));
        }
        self.idle = idle;
        due
    }

    /// Hosts the source deleted from the kernel's table, with their last counts: summed
    /// under their listener.
    pub fn retired_now(&mut self, gone: &[(ClientKey, ClientCounters)], listeners: &[SocketAddr]) {
        for (key, c) in gone {
            let r = self
                .retired
                .entry(model::listener_for(key, listeners))
                .or_default();
            r.counters.add(c);
            r.hosts += 1;
            self.idle.remove(key);
        }
    }
}

/// Exited processes leave the process rows and the kernel's tables once they hold no
/// connection and were shown for `after` seconds; their counts stay in the roll-ups, one
/// [`model::Retired`] per attribution. Bounded: past [`RETIRED_KINDS`] attributions, the
/// container and application are dropped from the key (the service rows stay exact).
pub struct Retention {
    pub after: f64,
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
    /// Counts of retired processes that were counted in a v1 cgroup row, by that cgroup
    /// (with the YARN container they ran in): the v1 row keeps them until the container's
    /// own retired entry goes. Bounded by [`RETIRED_KINDS`]; beyond, a v1 row loses them.
    v1_retired: BTreeMap<V1Cgroup, (Option<String>, Counters)>,
    /// The same counts by the v2 id they were made from, kept for good: the kernel's
    /// per-id counters include them and the v2 row must leave them out. One entry per v2
    /// id, few on a host keyed by v1 paths.
    v1_moved: BTreeMap<u64, Counters>,
}

/// Counts the v2 rows leave out, by v2 id.
pub type RetiredV1Moved = Vec<(u64, Counters)>;

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
            v1_retired: BTreeMap::new(),
            v1_moved: BTreeMap::new(),
        }
    }

    /// A retired process counted in v1 cgroup `cg`, which connected from v2 id
    /// `cgroup_id`: its row keeps `c`, and the v2 row leaves it out.
    pub fn fold_v1(
        &mut self,
        cg: &V1Cgroup,
        cgroup_id: u64,
        container: Option<&str>,
        c: &Counters,
    ) {
        self.v1_moved.entry(cgroup_id).or_default().add(c);
        if self.v1_retired.len() < RETIRED_KINDS || self.v1_retired.contains_key(cg) {
            let (owner, counts) = self
                .v1_retired
                .entry(cg.clone())
                .or_insert_with(|| (container.map(str::to_owned), Counters::default()));
            if owner.as_deref() != container {
                *owner = None;
            }
            counts.add(c);
        }
    }

    /// What the v1 rows keep of retired processes, and what the v2 rows leave out of the
    /// kernel's counts for them.
    pub fn retired_v1(&self) -> (Vec<(V1Cgroup, Counters)>, RetiredV1Moved) {
        (
            self.v1_retired
                .iter()
                .map(|(cg, (_, c))| (cg.clone(), *c))
                .collect(),
            self.v1_moved.iter().map(|(id, c)| (*id, *c)).collect(),
        )
    }

    /// Finished YARN containers and applications out of the rows, as their processes
    /// before them: a container with no process left (live or not yet retired) whose last
    /// process retired `after` ago goes, its counts into its application's; then an
    /// application with no container row and no process left, the same time after its last
    /// process, goes, its counts into its service's. On a node that runs containers for
    /// weeks, the rows stay those of what ran recently.
    pub fn age(&mut self, facts: &HashMap<OwnerKey, OwnerFacts>, now: f64) {
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
        // A v1 row of a finished container leaves with the container's retired entry.
        let kept: FxHashSet<&str> = self
            .retired
            .keys()
            .filter_map(|k| k.1.as_deref())
            .chain(containers.iter().copied())
            .collect();
        self.v1_retired
            .retain(|_, (container, _)| container.as_deref().is_none_or(|c| kept.contains(c)));
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
    pub fn due_cgroups(&mut self, gone: &[u64], now: f64) -> Vec<u64> {
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
    pub fn due(
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

    pub fn fold(
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

    pub fn retired(&self) -> Vec<model::Retired> {
        self.retired.values().map(|(r, _)| r.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_client_host_is_due_after_the_time_and_its_counts_stay_with_its_listener() {
        let key = ClientKey {
            port: 2181,
            local: crate::targets::ip_to_bytes("127.0.0.1".parse().unwrap()),
            client: crate::targets::ip_to_bytes("127.0.0.9".parse().unwrap()),
            ..ClientKey::default()
        };
        let c = |opened| ClientCounters {
            opened,
            closed: opened,
            ..ClientCounters::default()
        };
        let mut r = ClientRetention::default();
        let none = FxHashSet::default();
        assert!(r.due(&[(key, c(3))], &none, 0.0, 60.0).is_empty());
        // Counts that move restart the clock.
        assert!(r.due(&[(key, c(4))], &none, 50.0, 60.0).is_empty());
        assert!(r.due(&[(key, c(4))], &none, 100.0, 60.0).is_empty());
        // Holding a connection keeps it whatever the time.
        let holding: FxHashSet<ClientKey> = [key].into_iter().collect();
        assert!(r.due(&[(key, c(4))], &holding, 500.0, 60.0).is_empty());
        assert!(r.due(&[(key, c(4))], &none, 510.0, 60.0).is_empty());
        assert_eq!(r.due(&[(key, c(4))], &none, 570.0, 60.0), [(key, c(4))]);
        let listener: SocketAddr = "0.0.0.0:2181".parse().unwrap();
        r.retired_now(&[(key, c(4))], &[listener]);
        r.retired_now(&[(key, c(2))], &[listener]);
        assert_eq!(
            r.retired[&listener],
            RetiredClients {
                counters: c(6),
                hosts: 2
            }
        );
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

    /// A retired process counted in a v1 row: the row keeps its counts while its
    /// container's retired entry lasts, and the v2 id it connected from leaves them out
    /// for good.
    #[test]
    fn a_v1_row_keeps_its_retired_processes_until_their_container_goes() {
        use crate::attribution::hierarchy::Hierarchy;
        let cg = V1Cgroup {
            hierarchy: Hierarchy::V1Cpu,
            path: "/hadoop-yarn/c1".into(),
        };
        let root = V1Cgroup {
            hierarchy: Hierarchy::V1Cpu,
            path: "/".into(),
        };
        let mut r = Retention::new(10.0);
        r.fold_v1(&cg, 1, Some("c1"), &opened(3));
        r.fold(yarn("Spark", "c1", "app1"), &opened(3), 0.0);
        r.fold_v1(&root, 1, None, &opened(2));
        r.fold_v1(&cg, 1, Some("c1"), &opened(1));
        r.fold(yarn("Spark", "c1", "app1"), &opened(1), 0.0);
        let (rows, moved) = r.retired_v1();
        assert_eq!(
            rows.iter()
                .map(|(c, n)| (c.path.as_str(), n.opened))
                .collect::<Vec<_>>(),
            vec![("/", 2), ("/hadoop-yarn/c1", 4)]
        );
        assert_eq!(
            moved
                .iter()
                .map(|(id, n)| (*id, n.opened))
                .collect::<Vec<_>>(),
            vec![(1, 6)]
        );
        // Not yet due: the row stays.
        r.age(&HashMap::new(), 5.0);
        assert_eq!(r.retired_v1().0.len(), 2);
        // The container retires: its v1 row goes; the root's stays; the v2 id still leaves
        // out all of it.
        r.age(&HashMap::new(), 10.0);
        assert_eq!(r.containers, 1);
        let (rows, moved) = r.retired_v1();
        assert_eq!(
            rows.iter()
                .map(|(c, n)| (c.path.as_str(), n.opened))
                .collect::<Vec<_>>(),
            vec![("/", 2)]
        );
        assert_eq!(
            moved
                .iter()
                .map(|(id, n)| (*id, n.opened))
                .collect::<Vec<_>>(),
            vec![(1, 6)]
        );
    }
}
