//! YARN containers, applications and services, summed from process rows and the retired.
//!
//! Owns: which row a process adds to and the order rows are listed in. Must not: judge.

use std::collections::{BTreeMap, BTreeSet};

use super::{ApplicationRow, ContainerRow, ProcessRow, Retired, ServiceRow, Totals};
use crate::attribution::{Attribution, Kind};

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

/// Sorted, each once.
pub(super) fn sorted_set<T: Ord>(v: &mut Vec<T>) {
    v.sort_unstable();
    v.dedup();
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
        user: Option<String>,
        processes: u64,
    }
    let live = processes.iter().map(|p| {
        let mut totals = Totals::default();
        totals.add(p);
        Part {
            who: &p.who,
            totals,
            pid: Some(p.pid),
            user: p.user_or_uid(),
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
            user: None,
            processes: r.processes,
        }
    });
    let mut containers: BTreeMap<&str, ContainerRow> = BTreeMap::new();
    let mut applications: BTreeMap<&str, (ApplicationRow, BTreeSet<String>)> = BTreeMap::new();
    let mut services: BTreeMap<&str, (ServiceRow, BTreeSet<Kind>)> = BTreeMap::new();
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
                        users: Vec::new(),
                        pids: Vec::new(),
                    },
                    BTreeSet::new(),
                )
            });
            row.totals.absorb(&part.totals);
            row.processes += part.processes;
            row.users.extend(part.user.clone());
            row.pids.extend(part.pid);
            // Retired containers are summed into their application without a row.
            if let Some(container) = &who.yarn_container {
                ids.insert(container.clone());
                let row = containers.entry(container).or_insert_with(|| ContainerRow {
                    container: container.clone(),
                    application: app.clone(),
                    totals: Totals::default(),
                    services: Vec::new(),
                    users: Vec::new(),
                    pids: Vec::new(),
                });
                row.totals.absorb(&part.totals);
                if !row.services.contains(&who.service) {
                    row.services.push(who.service.clone());
                }
                row.users.extend(part.user.clone());
                row.pids.extend(part.pid);
            }
        }
        let (row, kinds) = services.entry(&who.service).or_insert_with(|| {
            (
                ServiceRow {
                    service: who.service.clone(),
                    kinds: Vec::new(),
                    totals: Totals::default(),
                    users: Vec::new(),
                    pids: Vec::new(),
                },
                BTreeSet::new(),
            )
        });
        row.totals.absorb(&part.totals);
        kinds.insert(who.kind);
        row.users.extend(part.user);
        row.pids.extend(part.pid);
    }
    let mut containers: Vec<ContainerRow> = containers
        .into_values()
        .map(|mut c| {
            sorted_set(&mut c.pids);
            sorted_set(&mut c.users);
            c
        })
        .collect();
    by_weight(&mut containers, |c| (c.totals, &c.container));
    let mut applications: Vec<ApplicationRow> = applications
        .into_values()
        .map(|(mut row, ids)| {
            row.containers = ids.into_iter().collect();
            sorted_set(&mut row.pids);
            sorted_set(&mut row.users);
            row
        })
        .collect();
    by_weight(&mut applications, |a| (a.totals, &a.application));
    let mut services: Vec<ServiceRow> = services
        .into_values()
        .map(|(mut row, kinds)| {
            row.kinds = kinds.into_iter().collect();
            sorted_set(&mut row.pids);
            sorted_set(&mut row.users);
            row
        })
        .collect();
    by_weight(&mut services, |s| (s.totals, &s.service));
    (containers, applications, services)
}
