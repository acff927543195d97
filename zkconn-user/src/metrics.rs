//! The Prometheus exposition of a snapshot (docs/metrics.md), through the
//! `prometheus-client` library: names and types are the library's. Label values are
//! escaped here ([`label_value`]): the library writes them as given, and owner labels come
//! from process names and command lines that any local user chooses.
//!
//! Owns: which metrics exist and their labels, and keeping label cardinality bounded: per
//! owner only the `top` largest (by open connections, then opened) keep their own series,
//! the rest are summed under `owner="other"`; there is never a pid label. Pure.

use std::{collections::BTreeMap, sync::atomic::AtomicU64};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::model::{Snapshot, Totals};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
    local_ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct OwnerLabels {
    owner: String,
    kind: String,
    service: String,
    yarn_application: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetailLabels {
    detail: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// `text` as an OpenMetrics label value: backslash, double quote and line feed escaped as
/// the format requires, any other control character (a terminal escape in a process name)
/// replaced by U+FFFD. A value can then neither end its label nor start a line of its own.
fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Per-owner sums: the model's roll-up counters (its growth summed too) and the highest
/// suspect score.
#[derive(Clone, Copy, Default)]
struct OwnerSums {
    totals: Totals,
    score: f64,
}

impl OwnerSums {
    fn add(&mut self, totals: &Totals, score: f64) {
        self.totals.absorb(totals);
        self.totals.rates.growth_per_min += totals.rates.growth_per_min;
        self.score += score;
    }
}

/// The text exposition (OpenMetrics) of `snap`, with at most `top` owners of their own.
pub fn render(snap: &Snapshot, top: usize) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("zkconn");
    registry.register(
        "build",
        "zkconn's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    servers(&mut registry, snap);
    owners(&mut registry, snap, top);
    probe(&mut registry, snap);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

fn servers(registry: &mut Registry, snap: &Snapshot) {
    let open = Family::<ServerLabels, Gauge>::default();
    let close_wait = Family::<ServerLabels, Gauge>::default();
    let limit = Family::<ServerLabels, Gauge>::default();
    let assumed = Family::<ServerLabels, Gauge>::default();
    let usage = Family::<ServerLabels, FloatGauge>::default();
    let ttl = Family::<ServerLabels, FloatGauge>::default();
    let growth = Family::<ServerLabels, FloatGauge>::default();
    let alarm = Family::<ServerLabels, Gauge>::default();
    let opened = Family::<ServerLabels, Counter>::default();
    let closed = Family::<ServerLabels, Counter>::default();
    let failed = Family::<ServerLabels, Counter>::default();
    let rejected = Family::<ServerLabels, Counter>::default();
    for s in &snap.rows.servers {
        let l = ServerLabels {
            server: s.server.clone(),
            local_ip: s.local_ip.clone(),
        };
        open.get_or_create(&l).set(gauge(s.states.open));
        close_wait.get_or_create(&l).set(gauge(s.states.close_wait));
        limit.get_or_create(&l).set(i64::from(s.limit));
        assumed
            .get_or_create(&l)
            .set(i64::from(s.limit_source.assumed()));
        if let Some(u) = s.usage {
            usage.get_or_create(&l).set(u);
        }
        if let Some(t) = s.time_to_limit_secs {
            ttl.get_or_create(&l).set(t);
        }
        growth.get_or_create(&l).set(s.rates.growth_per_min);
        alarm.get_or_create(&l).set(s.alarm as i64);
        opened.get_or_create(&l).inc_by(s.opened);
        closed.get_or_create(&l).inc_by(s.closed);
        failed.get_or_create(&l).inc_by(s.failed);
        rejected.get_or_create(&l).inc_by(s.rejected);
    }
    registry.register(
        "server_open_connections",
        "Connections from this local IP to this ZooKeeper server that count against maxClientCnxns (connecting + established)",
        open,
    );
    registry.register(
        "server_close_wait_connections",
        "Connections the server closed and the application has not",
        close_wait,
    );
    registry.register(
        "server_limit_connections",
        "maxClientCnxns of this server (0: unlimited)",
        limit,
    );
    registry.register(
        "server_limit_assumed",
        "1 when nobody gave this server's limit (no flag, no zoo.cfg, the server did not say when asked) and ZooKeeper's default is assumed",
        assumed,
    );
    registry.register(
        "server_usage_ratio",
        "open / limit (absent when unlimited)",
        usage,
    );
    registry.register(
        "server_time_to_limit_seconds",
        "Seconds until the limit at the sustained growth of the trend window (absent when not growing)",
        ttl,
    );
    registry.register(
        "server_growth_per_minute",
        "Net change of open connections per minute over the trend window",
        growth,
    );
    registry.register(
        "server_alarm",
        "0 ok, 1 warning (usage >= --warn), 2 critical (usage >= --crit or refused within the last minute)",
        alarm,
    );
    registry.register(
        "server_opened",
        "connect() attempts since zkconn started",
        opened,
    );
    registry.register(
        "server_closed",
        "Established connections closed since zkconn started (refusals included)",
        closed,
    );
    registry.register(
        "server_failed",
        "Connections closed without ever being established",
        failed,
    );
    registry.register(
        "server_rejected",
        "Connections the server refused (maxClientCnxns) since zkconn started",
        rejected,
    );
}

fn owners(registry: &mut Registry, snap: &Snapshot, top: usize) {
    // Processes with the same labels are one owner (no pid label, by design).
    let mut sums: BTreeMap<OwnerLabels, OwnerSums> = BTreeMap::new();
    for p in &snap.rows.processes {
        let l = OwnerLabels {
            owner: label_value(&p.who.label),
            kind: p.who.kind.to_string(),
            service: label_value(&p.who.service),
            yarn_application: label_value(p.who.yarn_application.as_deref().unwrap_or_default()),
        };
        let id = p.id();
        let score = snap
            .rows
            .suspects
            .iter()
            .filter(|x| x.is_of(&id))
            .map(|x| x.score)
            .sum::<f64>();
        sums.entry(l).or_default().add(&Totals::of(p), score);
    }
    let mut ranked: Vec<(OwnerLabels, OwnerSums)> = sums.into_iter().collect();
    ranked.sort_by(|a, b| {
        (b.1.totals.open, b.1.totals.opened)
            .cmp(&(a.1.totals.open, a.1.totals.opened))
            .then(a.0.cmp(&b.0))
    });
    let mut other = OwnerSums::default();
    let mut shown = Vec::new();
    for (i, (l, s)) in ranked.into_iter().enumerate() {
        if i < top {
            shown.push((l, s));
        } else {
            let score = other.score.max(s.score);
            other.add(&s.totals, 0.0);
            other.score = score;
        }
    }
    if shown.len() == top && top > 0 {
        shown.push((
            OwnerLabels {
                owner: "other".into(),
                kind: String::new(),
                service: String::new(),
                yarn_application: String::new(),
            },
            other,
        ));
    }
    let open = Family::<OwnerLabels, Gauge>::default();
    let close_wait = Family::<OwnerLabels, Gauge>::default();
    let growth = Family::<OwnerLabels, FloatGauge>::default();
    let score = Family::<OwnerLabels, FloatGauge>::default();
    let opened = Family::<OwnerLabels, Counter>::default();
    let closed = Family::<OwnerLabels, Counter>::default();
    let rejected = Family::<OwnerLabels, Counter>::default();
    for (l, s) in &shown {
        let t = &s.totals;
        open.get_or_create(l).set(gauge(t.open));
        close_wait.get_or_create(l).set(gauge(t.close_wait));
        growth.get_or_create(l).set(t.rates.growth_per_min);
        score.get_or_create(l).set(s.score);
        opened.get_or_create(l).inc_by(t.opened);
        closed.get_or_create(l).inc_by(t.closed);
        rejected.get_or_create(l).inc_by(t.rejected);
    }
    registry.register(
        "owner_open_connections",
        "Open connections of an owner (the --metrics-owners largest; the rest under owner=\"other\")",
        open,
    );
    registry.register(
        "owner_close_wait_connections",
        "CLOSE_WAIT connections of an owner",
        close_wait,
    );
    registry.register(
        "owner_growth_per_minute",
        "Net change of an owner's open connections per minute over the trend window",
        growth,
    );
    registry.register(
        "owner_suspect_score",
        "Leak-suspect score of an owner (0 when not a suspect; listed from 2, docs/suspects.md)",
        score,
    );
    registry.register(
        "owner_opened",
        "connect() attempts of an owner since zkconn started",
        opened,
    );
    registry.register(
        "owner_closed",
        "Established connections of an owner closed since zkconn started",
        closed,
    );
    registry.register(
        "owner_rejected",
        "Connections of an owner that a server refused since zkconn started",
        rejected,
    );
}

fn probe(registry: &mut Registry, snap: &Snapshot) {
    let p = &snap.probe;
    let lost = Family::<DetailLabels, Counter>::default();
    lost.get_or_create(&DetailLabels {
        detail: "events".into(),
    })
    .inc_by(p.lost_detail.events);
    // Absent, not 0, where the kernel does not count them (before 5.12).
    if let Some(misses) = p.lost_detail.recursion_misses {
        lost.get_or_create(&DetailLabels {
            detail: "recursion_misses".into(),
        })
        .inc_by(misses);
    }
    let overflow = Family::<DetailLabels, Counter>::default();
    for (detail, n) in [
        ("connections", p.overflow_detail.connections),
        ("processes", p.overflow_detail.processes),
        ("counters", p.overflow_detail.counters),
    ] {
        overflow
            .get_or_create(&DetailLabels {
                detail: detail.into(),
            })
            .inc_by(n);
    }
    let repaired = Family::<ActionLabels, Counter>::default();
    for (action, n) in [
        ("retired", p.repaired.retired),
        ("adopted", p.repaired.adopted),
    ] {
        repaired
            .get_or_create(&ActionLabels {
                action: action.into(),
            })
            .inc_by(n);
    }
    let unreadable = Counter::<u64>::default();
    unreadable.inc_by(p.unreadable);
    let undeleted = Gauge::<i64>::default();
    undeleted.set(gauge(p.retention.undeleted));
    let observed = FloatGauge::default();
    observed.set(snap.observed_secs);
    registry.register(
        "probe_lost",
        "Kernel events dropped (ring buffer full) and program runs the kernel skipped",
        lost,
    );
    registry.register(
        "probe_overflow",
        "Sockets, processes or counter rows not tracked because a kernel map was full",
        overflow,
    );
    registry.register(
        "repaired",
        "Drift repair: kernel rows retired because their socket was gone, and live \
         connections no row described adopted (--reconcile-interval)",
        repaired,
    );
    registry.register(
        "probe_unreadable",
        "/proc entries, map entries and socket tables that could not be read, and failed \
         reconciliation rounds",
        unreadable,
    );
    registry.register(
        "probe_undeleted_rows",
        "Retired process and cgroup rows the kernel refused to delete, tried again at each \
         reading",
        undeleted,
    );
    registry.register(
        "observed_seconds",
        "How long the probes have been attached",
        observed,
    );
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{ProcessRow, Rows, ServerRow},
        verdict::Alarm,
    };

    fn snap(processes: usize) -> Snapshot {
        let mut s1 = ServerRow::for_test("10.0.0.1:2181", "10.0.0.9", 48, 60);
        s1.rejected = 3;
        s1.opened = 70;
        s1.alarm = Alarm::Warning;
        s1.time_to_limit_secs = Some(120.0);
        let unlimited = ServerRow::for_test("[::1]:2181", "::1", 2, 0);
        let processes = (0..processes)
            .map(|i| {
                let mut p = ProcessRow::for_test(100 + i as u32);
                p.states.open = 10 - i as u64 % 10;
                p.opened = p.states.open;
                p
            })
            .collect();
        Snapshot::for_test(Rows {
            servers: vec![s1, unlimited],
            processes,
            ..Rows::default()
        })
    }

    #[test]
    fn a_hostile_process_name_cannot_forge_a_series_or_break_a_label() {
        let mut s = snap(1);
        let hostile = "ev\x1b[2Jil\nzkconn_fake{x=\"1\"} 99\n\\.py";
        s.rows.processes[0].who.label = hostile.to_owned();
        s.rows.processes[0].who.service = hostile.to_owned();
        let text = render(&s, 20).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("zkconn_fake")),
            "a forged series: {text}"
        );
        assert!(!text.contains('\x1b'), "a terminal escape: {text}");
        let line = lines_of(&text, "zkconn_owner_open_connections")
            .into_iter()
            .find(|l| l.contains("ev"))
            .unwrap();
        assert!(
            line.contains("owner=\"ev\u{fffd}[2Jil\\nzkconn_fake{x=\\\"1\\\"} 99\\n\\\\.py\""),
            "{line}"
        );
        assert_eq!(label_value("plain"), "plain");
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    }

    #[test]
    fn servers_carry_their_numbers_and_unlimited_has_no_usage() {
        let text = render(&snap(0), 20).unwrap();
        assert!(text.contains(
            "zkconn_server_open_connections{server=\"10.0.0.1:2181\",local_ip=\"10.0.0.9\"} 48"
        ));
        assert!(text.contains(
            "zkconn_server_rejected_total{server=\"10.0.0.1:2181\",local_ip=\"10.0.0.9\"} 3"
        ));
        assert!(text.contains(
            "zkconn_server_usage_ratio{server=\"10.0.0.1:2181\",local_ip=\"10.0.0.9\"} 0.8"
        ));
        assert!(
            text.contains("zkconn_server_alarm{server=\"10.0.0.1:2181\",local_ip=\"10.0.0.9\"} 1")
        );
        assert_eq!(lines_of(&text, "zkconn_server_usage_ratio").len(), 1);
        assert_eq!(
            lines_of(&text, "zkconn_server_time_to_limit_seconds").len(),
            1
        );
        assert!(text.contains("# TYPE zkconn_server_rejected counter"));
        assert!(text.contains("zkconn_build_info{version=\""));
        assert!(text.contains("zkconn_probe_lost_total{detail=\"events\"} 0"));
        assert!(text.contains("zkconn_repaired_total{action=\"retired\"} 0"));
        assert!(text.contains("zkconn_repaired_total{action=\"adopted\"} 0"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn owners_beyond_the_top_are_summed_as_other() {
        let text = render(&snap(25), 5).unwrap();
        let open = lines_of(&text, "zkconn_owner_open_connections");
        assert_eq!(open.len(), 6, "{open:#?}");
        // 25 processes open 10,9,...,1,10,9,...: the five largest are 10,10,10,9,9; the
        // other twenty hold 25*~5.5 - 48.
        let total: u64 = (0..25).map(|i| 10 - i % 10).sum();
        let other = open
            .iter()
            .find(|l| l.contains("owner=\"other\""))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap();
        assert_eq!(other.parse::<u64>().unwrap(), total - 48);
        // Fewer owners than the top: no "other".
        let text = render(&snap(3), 5).unwrap();
        assert_eq!(lines_of(&text, "zkconn_owner_open_connections").len(), 3);
    }

    #[test]
    fn processes_with_the_same_labels_are_one_series() {
        let mut s = snap(0);
        for pid in [1, 2, 3] {
            let mut p = ProcessRow::for_test(pid);
            p.who.label = "HBase RegionServer".into();
            p.who.service = "HBase RegionServer".into();
            p.states.open = 2;
            s.rows.processes.push(p);
        }
        let text = render(&s, 20).unwrap();
        let open = lines_of(&text, "zkconn_owner_open_connections");
        assert_eq!(open.len(), 1);
        assert!(open[0].ends_with(" 6"), "{open:?}");
        assert!(!text.contains("pid"), "no pid label");
    }

    #[test]
    fn every_metric_is_documented_and_every_documented_metric_exists() {
        let doc = include_str!("../../docs/metrics.md");
        let mut s = snap(3);
        s.rows.suspects.clear();
        let text = render(&s, 20).unwrap();
        let mut exported: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let mut parts = l.split(' ');
                let name = parts.next().unwrap_or_default();
                match parts.next() {
                    Some("counter") => format!("{name}_total"),
                    Some("info") => format!("{name}_info"),
                    _ => name.to_owned(),
                }
            })
            .collect();
        exported.sort();
        for name in &exported {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/metrics.md"
            );
        }
        let mut documented: Vec<&str> = doc
            .split('`')
            .filter(|w| {
                w.starts_with("zkconn_")
                    && !w.ends_with('_')
                    && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
            .collect();
        documented.sort_unstable();
        documented.dedup();
        for name in documented {
            assert!(
                exported.iter().any(|e| e == name),
                "{name} is documented but not exported"
            );
        }
    }
}
