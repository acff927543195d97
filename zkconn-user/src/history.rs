//! What the engine remembers over time: one [`Series`] per process, YARN container,
//! application, service and server, and who refused whom. From it, rows get their rates,
//! servers their time to limit and alarm, and the document its suspects.
//!
//! Owns: sampling rows into series, bounding what is kept (a subject no row names is
//! forgotten; each series is bounded), and ranking suspects. Must not: read the kernel or
//! `/proc`, nor change rows (the engine passes them in; [`Judged`] is what it found).

use std::collections::{HashMap, VecDeque};

use zkconn_common::OwnerKey;

use crate::{
    alarm::{self, Thresholds},
    model::{Level, RefusedBudget, RowId, Rows, Suspect, Totals, Victim},
    trend::{self, Evidence, Holding, SUSPECT_MIN_SCORE, Sample, Series, Trend},
    verdict::{Alarm, Rates},
};

/// A roll-up is listed beside its processes only when it scores this much more than its
/// members that are listed themselves: the leak is spread over many processes, none of
/// which stands out.
const ROLL_UP_FACTOR: f64 = 1.5;
/// Refusal events remembered per process (the counts themselves come from the maps).
const REFUSALS_KEPT: usize = 1024;

/// What a series is of: an owner row, or a (server, local IP).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Subject {
    Owner(RowId),
    Server(String, String),
}

pub struct History {
    window: f64,
    first: Option<f64>,
    last: Option<f64>,
    series: HashMap<Subject, Series>,
    /// Per process: (time, server) of each refusal event, oldest first.
    /// Per owner: when, by which server, from which local IP.
    refusals: HashMap<OwnerKey, VecDeque<(f64, String, String)>>,
    /// Per owner row and budget (server, local IP): what it held there when zkconn first
    /// saw it hold any there (0 when that was after the first sample). What it holds beyond
    /// is what it gained at that budget.
    held_at_first: HashMap<(RowId, String, String), u64>,
}

impl History {
    pub fn new(window_secs: f64) -> Self {
        Self {
            window: window_secs,
            first: None,
            last: None,
            series: HashMap::new(),
            refusals: HashMap::new(),
            held_at_first: HashMap::new(),
        }
    }

    /// The configured window, in seconds.
    pub fn window(&self) -> f64 {
        self.window
    }

    /// The window covered at `now`: the configured one, or the time observed so far.
    pub fn window_at(&self, now: f64) -> f64 {
        self.first
            .map_or(0.0, |first| (now - first).clamp(0.0, self.window))
    }

    /// `server` refused `owner`'s connection from `local_ip` at `t`.
    pub fn refused(&mut self, owner: OwnerKey, server: String, local_ip: String, t: f64) {
        let log = self.refusals.entry(owner).or_default();
        if log.len() == REFUSALS_KEPT {
            log.pop_front();
        }
        log.push_back((t, server, local_ip));
    }

    /// Samples every subject the rows name at `t`; forgets the subjects they no longer name.
    pub fn record(&mut self, rows: &Rows, t: f64) {
        let mut seen: HashMap<Subject, Sample> = HashMap::new();
        for p in &rows.processes {
            seen.insert(
                Subject::Owner(p.id()),
                Sample {
                    t,
                    open: p.states.open,
                    opened: p.opened,
                    closed: p.closed,
                    rejected: p.rejected,
                },
            );
        }
        let totals = |t_: &Totals| Sample {
            t,
            open: t_.open,
            opened: t_.opened,
            closed: t_.closed,
            rejected: t_.rejected,
        };
        for c in &rows.cgroups {
            seen.insert(Subject::Owner(c.row_id()), totals(&c.totals()));
        }
        for c in &rows.containers {
            seen.insert(Subject::Owner(c.id()), totals(&c.totals));
        }
        for a in &rows.applications {
            seen.insert(Subject::Owner(a.id()), totals(&a.totals));
        }
        for s in &rows.services {
            seen.insert(Subject::Owner(s.id()), totals(&s.totals));
        }
        for s in &rows.servers {
            seen.insert(
                Subject::Server(s.server.clone(), s.local_ip.clone()),
                Sample {
                    t,
                    open: s.states.open,
                    opened: s.opened,
                    closed: s.closed,
                    rejected: s.rejected,
                },
            );
        }
        self.series.retain(|k, _| seen.contains_key(k));
        let before = self.last;
        for (subject, sample) in seen {
            match self.series.get_mut(&subject) {
                Some(series) => series.push(sample, self.window),
                None => {
                    // Present at the first sample: that is its baseline. Appeared since:
                    // it had nothing at the previous sample.
                    let mut series = match before {
                        None => Series::new(sample),
                        Some(prev) => Series::new(Sample {
                            t: prev,
                            ..Sample::default()
                        }),
                    };
                    series.push(sample, self.window);
                    self.series.insert(subject, series);
                }
            }
        }
        let horizon = t - self.window;
        self.refusals.retain(|owner, log| {
            while log.front().is_some_and(|(at, _, _)| *at < horizon) {
                log.pop_front();
            }
            !log.is_empty()
                && self
                    .series
                    .contains_key(&Subject::Owner(RowId::Process(*owner)))
        });
        // What each owner holds at each budget, the first time it holds any there.
        let mut held: HashMap<(RowId, &str, &str), u64> = HashMap::new();
        for p in &rows.processes {
            for s in p.servers.iter().filter(|s| s.open > 0) {
                for row in std::iter::once(p.id()).chain(RowId::roll_ups_of(p)) {
                    *held
                        .entry((row, s.server.as_str(), s.local_ip.as_str()))
                        .or_default() += s.open;
                }
            }
        }
        let first_sample = before.is_none();
        for ((row, server, local_ip), open) in held {
            self.held_at_first
                .entry((row, server.to_owned(), local_ip.to_owned()))
                .or_insert(if first_sample { open } else { 0 });
        }
        let series = &self.series;
        self.held_at_first
            .retain(|(row, ..), _| series.contains_key(&Subject::Owner(row.clone())));
        self.first.get_or_insert(t);
        self.last = Some(t);
    }

    fn trend(&self, subject: &Subject, now: f64, window: f64) -> Trend {
        self.series
            .get(subject)
            .map(|s| s.trend(now, window))
            .unwrap_or_default()
    }

    /// Judges `rows` against their history as of `now` (the time of the latest
    /// [`record`](Self::record)): rates, times to limit, alarms and the ranked suspects,
    /// which [`Judged::apply`] writes into the rows. Reads the rows, never changes them.
    pub fn judge(&self, rows: &Rows, now: f64, thresholds: &Thresholds) -> Judged {
        let window = self.window_at(now);
        let refusing_window = self.window_at(now).min(alarm::REFUSING_SECS);
        let servers: Vec<ServerJudgement> = rows
            .servers
            .iter()
            .map(|s| {
                let subject = Subject::Server(s.server.clone(), s.local_ip.clone());
                let t = self.trend(&subject, now, window);
                let refusing =
                    s.question_refused || self.trend(&subject, now, refusing_window).rejected > 0;
                ServerJudgement {
                    rates: t.rates(),
                    time_to_limit_secs: t.time_to_limit(s.headroom),
                    refusing,
                    alarm: thresholds.evaluate(s.usage, refusing),
                }
            })
            .collect();

        // Budgets at or near their limit, (server, local IP) → limit: what holders are
        // judged by.
        let pressed: HashMap<(&str, &str), u32> = rows
            .servers
            .iter()
            .zip(&servers)
            .filter(|(s, j)| s.limit > 0 && j.alarm != Alarm::Ok)
            .map(|(s, _)| ((s.server.as_str(), s.local_ip.as_str()), s.limit))
            .collect();
        // Per roll-up: what its processes hold of each pressed budget.
        let mut held_by_roll_up: HashMap<RowId, HashMap<(&str, &str), u64>> = HashMap::new();

        let mut suspects = Vec::new();
        let mut victims = Vec::new();
        // Per roll-up: the summed scores of its members that are suspects themselves.
        let mut listed_members: HashMap<RowId, f64> = HashMap::new();
        let mut processes = Vec::with_capacity(rows.processes.len());
        for p in &rows.processes {
            let subject = Subject::Owner(p.id());
            let t = self.trend(&subject, now, window);
            let rates = t.rates();
            processes.push(rates);
            let mut held = HashMap::new();
            for s in &p.servers {
                let budget = (s.server.as_str(), s.local_ip.as_str());
                if pressed.contains_key(&budget) && s.open > 0 {
                    held.insert(budget, s.open);
                    for row in RowId::roll_ups_of(p) {
                        *held_by_roll_up
                            .entry(row)
                            .or_default()
                            .entry(budget)
                            .or_default() += s.open;
                    }
                }
            }
            let evidence = Evidence {
                trend: t,
                close_wait_held: p.age.close_wait_held,
                holding: self.holding(&p.id(), &held, &pressed),
                refused_by: self.refused_by(p.key, now - window),
            };
            let score = evidence.score();
            if score < SUSPECT_MIN_SCORE && t.rejected > 0 {
                let refused_at = self.refused_at(p.key, now - window);
                // `by SERVER from LOCAL_IP`: the budget, not only the server.
                let by: Vec<(String, u64)> = refused_at
                    .iter()
                    .map(|b| (format!("{} from {}", b.server, b.local_ip), b.refusals))
                    .collect();
                victims.push(Victim {
                    pid: p.pid,
                    label: p.who.label.clone(),
                    service: p.who.service.clone(),
                    container: p.who.yarn_container.clone(),
                    application: p.who.yarn_application.clone(),
                    open: p.states.open,
                    rejected: t.rejected,
                    refused_by: evidence.refused_by.iter().map(|(s, _)| s.clone()).collect(),
                    reason: trend::refusals(t.rejected, &by),
                    refused_at,
                });
            }
            if score >= SUSPECT_MIN_SCORE {
                for row in RowId::roll_ups_of(p) {
                    *listed_members.entry(row).or_default() += score;
                }
                suspects.push(Suspect {
                    subject: Level::Process,
                    pid: Some(p.pid),
                    container: None,
                    application: None,
                    service: None,
                    label: p.who.label.clone(),
                    reason: evidence.reason(),
                    score,
                    open: p.states.open,
                    growth_per_min: rates.growth_per_min,
                    rejected: t.rejected,
                    close_wait_held: p.age.close_wait_held,
                });
            }
        }

        // Cgroup rows get their rates here; they are not suspects of their own (their
        // processes, containers and services are).
        let cgroups = rows
            .cgroups
            .iter()
            .map(|c| self.trend(&Subject::Owner(c.row_id()), now, window).rates())
            .collect();
        let no_holding = HashMap::new();
        let mut roll_up = |row: RowId, totals: &Totals, suspect: Suspect| -> Rates {
            let held = held_by_roll_up.get(&row).unwrap_or(&no_holding);
            let subject = Subject::Owner(row.clone());
            let t = self.trend(&subject, now, window);
            let rates = t.rates();
            let evidence = Evidence {
                trend: t,
                close_wait_held: totals.age.close_wait_held,
                holding: self.holding(&row, held, &pressed),
                refused_by: Vec::new(),
            };
            let score = evidence.score();
            let listed = listed_members.get(&row).copied().unwrap_or(0.0);
            if score >= SUSPECT_MIN_SCORE && score > listed * ROLL_UP_FACTOR {
                suspects.push(Suspect {
                    reason: evidence.reason(),
                    score,
                    open: totals.open,
                    growth_per_min: rates.growth_per_min,
                    rejected: t.rejected,
                    close_wait_held: totals.age.close_wait_held,
                    ..suspect
                });
            }
            rates
        };
        let blank = |subject: Level, label: &str| Suspect {
            subject,
            pid: None,
            container: None,
            application: None,
            service: None,
            label: label.to_owned(),
            reason: String::new(),
            score: 0.0,
            open: 0,
            growth_per_min: 0.0,
            rejected: 0,
            close_wait_held: 0,
        };
        let containers = rows
            .containers
            .iter()
            .map(|c| {
                let s = Suspect {
                    container: Some(c.container.clone()),
                    application: Some(c.application.clone()),
                    ..blank(Level::Container, &c.container)
                };
                roll_up(c.id(), &c.totals, s)
            })
            .collect();
        let applications = rows
            .applications
            .iter()
            .map(|a| {
                let s = Suspect {
                    application: Some(a.application.clone()),
                    ..blank(Level::Application, &a.application)
                };
                roll_up(a.id(), &a.totals, s)
            })
            .collect();
        let services = rows
            .services
            .iter()
            .map(|v| {
                let s = Suspect {
                    service: Some(v.service.clone()),
                    ..blank(Level::Service, &v.service)
                };
                roll_up(v.id(), &v.totals, s)
            })
            .collect();
        suspects.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.rejected.cmp(&a.rejected))
                .then(b.open.cmp(&a.open))
                .then(a.subject.cmp(&b.subject))
                .then(a.label.cmp(&b.label))
        });
        victims.sort_by(|a, b| b.rejected.cmp(&a.rejected).then(a.label.cmp(&b.label)));
        Judged {
            servers,
            processes,
            victims,
            cgroups,
            containers,
            applications,
            services,
            suspects,
        }
    }

    /// The largest share `row` holds of a pressed budget, given what it holds of each
    /// (`held`) and their limits; with what it gained there since zkconn first saw it hold
    /// any there.
    fn holding(
        &self,
        row: &RowId,
        held: &HashMap<(&str, &str), u64>,
        pressed: &HashMap<(&str, &str), u32>,
    ) -> Option<Holding> {
        held.iter()
            .filter_map(|(budget, open)| {
                pressed.get(budget).map(|limit| {
                    let at_first = self
                        .held_at_first
                        .get(&(row.clone(), budget.0.to_owned(), budget.1.to_owned()))
                        .copied()
                        .unwrap_or(0);
                    Holding {
                        server: budget.0.to_owned(),
                        local_ip: budget.1.to_owned(),
                        open: *open,
                        limit: *limit,
                        gained: open.saturating_sub(at_first),
                    }
                })
            })
            .max_by(|a, b| {
                (a.open as f64 / f64::from(a.limit))
                    .total_cmp(&(b.open as f64 / f64::from(b.limit)))
                    .then(b.server.cmp(&a.server))
                    .then(b.local_ip.cmp(&a.local_ip))
            })
    }

    /// Refusal events of `owner` since `since`, per server, most first.
    fn refused_by(&self, owner: OwnerKey, since: f64) -> Vec<(String, u64)> {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (t, server, _) in self.refusals.get(&owner).into_iter().flatten() {
            if *t >= since {
                *counts.entry(server).or_default() += 1;
            }
        }
        let mut v: Vec<(String, u64)> =
            counts.into_iter().map(|(s, n)| (s.to_owned(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Refusal events of `owner` since `since`, per budget, most first.
    fn refused_at(&self, owner: OwnerKey, since: f64) -> Vec<RefusedBudget> {
        let mut counts: HashMap<(&str, &str), u64> = HashMap::new();
        for (t, server, local_ip) in self.refusals.get(&owner).into_iter().flatten() {
            if *t >= since {
                *counts.entry((server, local_ip)).or_default() += 1;
            }
        }
        let mut v: Vec<RefusedBudget> = counts
            .into_iter()
            .map(|((server, local_ip), refusals)| RefusedBudget {
                server: server.to_owned(),
                local_ip: local_ip.to_owned(),
                refusals,
            })
            .collect();
        v.sort_by(|a, b| {
            b.refusals
                .cmp(&a.refusals)
                .then_with(|| a.server.cmp(&b.server))
                .then_with(|| a.local_ip.cmp(&b.local_ip))
        });
        v
    }
}

/// What [`History::judge`] found, row for row of the rows it judged.
#[derive(Debug)]
pub struct Judged {
    servers: Vec<ServerJudgement>,
    processes: Vec<Rates>,
    victims: Vec<Victim>,
    cgroups: Vec<Rates>,
    containers: Vec<Rates>,
    applications: Vec<Rates>,
    services: Vec<Rates>,
    suspects: Vec<Suspect>,
}

#[derive(Debug)]
struct ServerJudgement {
    rates: Rates,
    time_to_limit_secs: Option<f64>,
    refusing: bool,
    alarm: Alarm,
}

impl Judged {
    /// Writes the judgement into the rows it was made of.
    pub fn apply(self, rows: &mut Rows) {
        for (s, j) in rows.servers.iter_mut().zip(self.servers) {
            s.rates = j.rates;
            s.time_to_limit_secs = j.time_to_limit_secs;
            s.refusing = j.refusing;
            s.alarm = j.alarm;
        }
        for (p, rates) in rows.processes.iter_mut().zip(self.processes) {
            p.rates = rates;
        }
        for (c, rates) in rows.cgroups.iter_mut().zip(self.cgroups) {
            c.rates = rates;
        }
        for (c, rates) in rows.containers.iter_mut().zip(self.containers) {
            c.totals.rates = rates;
        }
        for (a, rates) in rows.applications.iter_mut().zip(self.applications) {
            a.totals.rates = rates;
        }
        for (v, rates) in rows.services.iter_mut().zip(self.services) {
            v.totals.rates = rates;
        }
        rows.suspects = self.suspects;
        rows.victims = self.victims;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::Attribution,
        model::{self, ProcessRow, ServerOpen, ServerRow},
        verdict::Alarm,
    };

    /// Rows of `processes` (with roll-ups) and one server summing them, limit 60.
    fn rows(processes: Vec<ProcessRow>) -> Rows {
        let open: u64 = processes.iter().map(|p| p.states.open).sum();
        let rejected: u64 = processes.iter().map(|p| p.rejected).sum();
        let (containers, applications, services) = model::roll_up(&processes, &[]);
        Rows {
            servers: vec![ServerRow {
                rejected,
                ..ServerRow::for_test("127.0.0.2:2181", "127.0.0.1", open, 60)
            }],
            processes,
            containers,
            applications,
            services,
            ..Rows::default()
        }
    }

    fn process(pid: u32, open: u64, opened: u64, closed: u64, rejected: u64) -> ProcessRow {
        let mut p = ProcessRow::for_test(pid);
        p.states.open = open;
        p.opened = opened;
        p.closed = closed;
        p.rejected = rejected;
        p
    }

    fn in_container(mut p: ProcessRow, n: u32) -> ProcessRow {
        p.who = Attribution {
            label: format!("task in container_1700000000000_0042_01_00000{n}"),
            service: "MapReduce task".into(),
            yarn_container: Some(format!("container_1700000000000_0042_01_00000{n}")),
            yarn_application: Some("application_1700000000000_0042".into()),
            ..Attribution::default()
        };
        p
    }

    #[test]
    fn the_leaker_ranks_first_the_victim_is_listed_the_steady_holder_is_not() {
        let mut h = History::new(600.0);
        let thresholds = Thresholds::default();
        let mut last = Rows::default();
        for t in 0..=120_u32 {
            // Steady: 20 held since before start. Leaker: +1 every 10 s, refused twice at
            // the end. Victim: refused three times in the last 20 s.
            let leak = u64::from(t / 10);
            let leaker_refused = u64::from(t >= 110) * 2;
            let victim_refused = u64::from(t >= 100) + u64::from(t >= 105) + u64::from(t >= 110);
            let mut r = rows(vec![
                process(1, 20, 0, 0, 0),
                process(
                    2,
                    leak,
                    leak + leaker_refused,
                    leaker_refused,
                    leaker_refused,
                ),
                process(3, 0, victim_refused, victim_refused, victim_refused),
            ]);
            if t >= 100 {
                h.refused(
                    r.processes[2].key,
                    "127.0.0.2:2181".into(),
                    "127.0.0.1".into(),
                    f64::from(t),
                );
            }
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &thresholds).apply(&mut r);
            last = r;
        }
        let s: Vec<_> = last
            .suspects
            .iter()
            .map(|s| (s.pid, s.reason.as_str()))
            .collect();
        assert_eq!(
            s,
            vec![(Some(2), "+12 in 2 min, none closed; refused 2 times")]
        );
        // Refused, holding nothing: a victim, not a suspect.
        let v: Vec<_> = last
            .victims
            .iter()
            .map(|v| (v.pid, v.rejected, v.reason.as_str()))
            .collect();
        assert_eq!(
            v,
            vec![(3, 3, "refused 3 times by 127.0.0.2:2181 from 127.0.0.1")]
        );
        assert_eq!(last.suspects[0].growth_per_min, 6.0);
        let steady = last.processes.iter().find(|p| p.pid == 1).unwrap();
        assert_eq!(steady.rates.growth_per_min, 0.0);
        let server = &last.servers[0];
        assert_eq!(server.rates.growth_per_min, 6.0);
        // 60 - 32 open = 28 more at 12 per 120 s.
        assert_eq!(server.time_to_limit_secs, Some(280.0));
        assert!(server.refusing);
        assert_eq!(server.alarm, Alarm::Critical);
    }

    #[test]
    fn steady_state_has_no_suspects_and_no_time_to_limit() {
        let mut h = History::new(600.0);
        let mut r = rows(vec![process(1, 30, 0, 0, 0)]);
        for t in 0..=60 {
            r = rows(vec![process(1, 30, 0, 0, 0)]);
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &Thresholds::default())
                .apply(&mut r);
        }
        assert!(r.suspects.is_empty());
        assert_eq!(r.servers[0].time_to_limit_secs, None);
        assert!(!r.servers[0].refusing);
        assert_eq!(r.servers[0].alarm, Alarm::Ok);
    }

    #[test]
    fn a_leak_spread_over_containers_is_named_by_its_application() {
        // Four containers each add one connection, at different times: no process stands
        // out (a single +1 is no trend), the application grows by 4, evenly.
        let mut h = History::new(600.0);
        let mut r = Rows::default();
        for t in 0..=80_u32 {
            let procs = (1..=4)
                .map(|n| {
                    let open = u64::from(t >= n * 20 - 10);
                    in_container(process(10 + n, open, open, 0, 0), n)
                })
                .collect();
            r = rows(procs);
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &Thresholds::default())
                .apply(&mut r);
        }
        let s: Vec<_> = r
            .suspects
            .iter()
            .map(|s| (s.subject, s.label.as_str()))
            .collect();
        assert_eq!(
            s,
            vec![
                (Level::Application, "application_1700000000000_0042"),
                (Level::Service, "MapReduce task"),
            ]
        );
        assert_eq!(r.applications[0].totals.rates.growth_per_min, 3.0);
    }

    #[test]
    fn a_process_that_appears_later_starts_from_zero() {
        let mut h = History::new(600.0);
        let mut r = rows(vec![]);
        h.record(&r, 0.0);
        for t in 1..=40_u32 {
            // Appears at 10 s with 5 already open, then +1 every 5 s.
            let open = if t < 10 {
                None
            } else {
                Some(5 + u64::from((t - 10) / 5))
            };
            r = rows(open.map(|o| process(7, o, o, 0, 0)).into_iter().collect());
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &Thresholds::default())
                .apply(&mut r);
        }
        assert_eq!(r.processes[0].rates.growth_per_min, 16.5, "+11 in 40 s");
        // Forgotten once no row names it.
        h.record(&rows(vec![]), 41.0);
        assert!(h.series.keys().all(|k| matches!(k, Subject::Server(..))));
    }

    /// A cgroup row's rates come from its own series, whichever processes hold its
    /// connections at each sample.
    #[test]
    fn a_cgroup_grows_by_its_own_series_while_its_processes_come_and_go() {
        use crate::model::CgroupRow;
        let cgroup = |open: u64, opened: u64| CgroupRow {
            hierarchy: crate::attribution::hierarchy::Hierarchy::V2,
            path: Some("/kubepods/pod1".into()),
            id: 42,
            kind: crate::attribution::Kind::Kubernetes,
            label: "pod1".into(),
            states: model::StateCounts {
                open,
                established: open,
                ..model::StateCounts::default()
            },
            opened,
            closed: 0,
            failed: 0,
            rejected: 0,
            age: model::Age::default(),
            rates: Rates::default(),
            users: Vec::new(),
            pids: Vec::new(),
        };
        let mut h = History::new(600.0);
        let mut r = rows(vec![]);
        for t in 0..=60_u32 {
            // A new process each second holds the pod's connections; one more each 6 s.
            let open = u64::from(t / 6);
            r = rows(vec![process(1000 + t, open, open, 0, 0)]);
            r.cgroups = vec![cgroup(open, open)];
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &Thresholds::default())
                .apply(&mut r);
        }
        assert_eq!(r.cgroups[0].rates.growth_per_min, 10.0, "+10 in 60 s");
        assert_eq!(r.cgroups[0].rates.opened_per_min, 10.0);
        // Cgroups are not suspects of their own.
        assert!(r.suspects.iter().all(|s| s.subject != Level::Cgroup));
    }

    /// The scenario of a host cut off: a budget of 10; a RegionServer holding 2 from before
    /// zkconn; a container that leaked 5 early on and then stopped growing; later an HBase
    /// Master refused again and again while holding nothing. Long after the leak, the
    /// leaker is still the suspect by what it holds and gained, the Master is a victim and
    /// the RegionServer is neither.
    #[test]
    fn at_the_limit_the_holder_is_blamed_and_the_refused_is_a_victim() {
        let budget = |open| ServerOpen {
            server: "127.0.0.2:2181".into(),
            local_ip: "127.0.0.1".into(),
            open,
        };
        let mut h = History::new(600.0);
        let thresholds = Thresholds::default();
        let mut last = Rows::default();
        for t in 0..=1800_u32 {
            let leaked = u64::from(t.min(50) / 10);
            let master_refused = u64::from(t.saturating_sub(1000) / 30);
            let mut rs = process(1, 2, 0, 0, 0);
            rs.servers = vec![budget(2)];
            let mut leaker = in_container(process(2, leaked, leaked, 0, 0), 1);
            leaker.servers = vec![budget(leaked)];
            let master = process(3, 0, master_refused, master_refused, master_refused);
            let others = process(4, 3, 3, 0, 0);
            let mut r = rows(vec![rs, leaker, master, others]);
            r.servers[0] = ServerRow {
                rejected: master_refused,
                ..ServerRow::for_test("127.0.0.2:2181", "127.0.0.1", 2 + leaked + 3, 10)
            };
            if t > 1000 && (t - 1000) % 30 == 0 {
                h.refused(
                    r.processes[2].key,
                    "127.0.0.2:2181".into(),
                    "127.0.0.1".into(),
                    f64::from(t),
                );
            }
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &thresholds).apply(&mut r);
            last = r;
        }
        assert_eq!(last.servers[0].alarm, Alarm::Critical);
        let s: Vec<_> = last
            .suspects
            .iter()
            .map(|s| (s.subject, s.pid, s.reason.as_str()))
            .collect();
        assert_eq!(
            s,
            vec![(
                Level::Process,
                Some(2),
                "holds 5 of 10 at 127.0.0.2:2181 from 127.0.0.1, all since zkconn started"
            )],
            "the leaker's growth is 29 minutes old, out of the window"
        );
        assert_eq!(last.suspects[0].score, 4.0);
        let v: Vec<_> = last.victims.iter().map(|v| (v.pid, v.rejected)).collect();
        assert_eq!(v, vec![(3, 20)], "refused 20 times in the 10-minute window");
    }

    /// Runs `step(t)` as the rows at each second of `0..=secs`; returns the last judged.
    fn judged_over(secs: u32, step: impl Fn(u32) -> Rows) -> Rows {
        let mut h = History::new(600.0);
        let mut last = Rows::default();
        for t in 0..=secs {
            let mut r = step(t);
            h.record(&r, f64::from(t));
            h.judge(&r, f64::from(t), &Thresholds::default())
                .apply(&mut r);
            last = r;
        }
        last
    }

    fn at(server: &str, local_ip: &str, open: u64) -> ServerOpen {
        ServerOpen {
            server: server.into(),
            local_ip: local_ip.into(),
            open,
        }
    }

    /// What a holder gained at another budget is not gained at this one: a steady holder
    /// of 2 of 6 from before zkconn that opens one connection elsewhere is no suspect.
    #[test]
    fn gains_are_counted_per_budget() {
        let last = judged_over(60, |t| {
            let mut steady = process(1, 2 + u64::from(t >= 3), 2, 0, 0);
            steady.servers = vec![at("10.0.0.1:2181", "10.0.0.9", 2)];
            if t >= 3 {
                steady.servers.push(at("10.0.0.2:2181", "10.0.0.9", 1));
            }
            let leak = u64::from(t.min(40) / 10);
            let mut leaker = process(2, leak, leak, 0, 0);
            leaker.servers = vec![at("10.0.0.1:2181", "10.0.0.9", leak)];
            let mut r = rows(vec![steady, leaker]);
            r.servers = vec![
                ServerRow::for_test("10.0.0.1:2181", "10.0.0.9", 2 + leak, 6),
                ServerRow::for_test("10.0.0.2:2181", "10.0.0.9", u64::from(t >= 3), 6),
            ];
            r
        });
        assert_eq!(last.servers[0].alarm, Alarm::Critical, "6 of 6");
        let s: Vec<_> = last.suspects.iter().map(|s| s.pid).collect();
        assert_eq!(s, vec![Some(2)], "{:?}", last.suspects);
        assert!(
            last.suspects[0].reason.starts_with(
                "holds 4 of 6 at 10.0.0.1:2181 from 10.0.0.9, all since zkconn started"
            ),
            "{}",
            last.suspects[0].reason
        );
    }
}
