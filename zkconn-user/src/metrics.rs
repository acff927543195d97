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
    service: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct BudgetOwnerLabels {
    service: String,
    kind: String,
    server: String,
    local_ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    listener: String,
    client_ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerInfoLabels {
    listener: String,
    kind: String,
}

/// A unit enum's serde name (`plain`).
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
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

/// How many owners and client hosts get series of their own.
#[derive(Clone, Copy, Debug)]
pub struct Top {
    pub owners: usize,
    pub clients: usize,
}

/// The text exposition (OpenMetrics) of `snap`, with at most `top` owners and client hosts
/// of their own.
pub fn render(snap: &Snapshot, top: Top) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("zkconn");
    registry.register(
        "build",
        "zkconn's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    servers(&mut registry, snap);
    owners(&mut registry, snap, top.owners);
    clients(&mut registry, snap, top.clients);
    probe(&mut registry, snap);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The media type of the OpenMetrics exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of Prometheus' classic text exposition.
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition a scraper's `Accept` header asks for: OpenMetrics when it accepts it at
/// least as much as plain text (Prometheus does), else the classic text format (curl,
/// promtool, older scrapers, no header).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let (mut om, mut text) = (0.0_f64, 0.0_f64);
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';').map(str::trim);
        let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
        // `q` is case-insensitive; a weight that is no number counts as 0 (not acceptable).
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .map_or(1.0, |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|q| q.is_finite())
                    .unwrap_or(0.0)
            });
        match kind.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text
}

/// The classic text format (0.0.4) of an OpenMetrics exposition: counters are named with
/// their `_total` in `# HELP`/`# TYPE`, info metrics are gauges named `_info`, and `# UNIT`,
/// `_created` samples and `# EOF` are left out.
pub fn classic(openmetrics: &str) -> String {
    let types: BTreeMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let name_of = |family: &str| match types.get(family) {
        Some(&"counter") => format!("{family}_total"),
        Some(&"info") => format!("{family}_info"),
        _ => family.to_owned(),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, text) = rest.split_once(' ').unwrap_or((rest, ""));
            // The classic format escapes only backslash and line feed in help text.
            let text = text.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {} {text}\n", name_of(family)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = match kind {
                "info" => "gauge",
                "unknown" => "untyped",
                k => k,
            };
            out.push_str(&format!("# TYPE {} {kind}\n", name_of(family)));
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let created = name
                .strip_suffix("_created")
                .is_some_and(|f| types.get(f) == Some(&"counter"));
            if !created {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
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
        growth.get_or_create(&l).set(s.rates.growth_per_min / 60.0);
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
        "server_growth_per_second",
        "Net change of open connections per second, sustained over the trend window",
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

/// The server's side. Per (listener, client host), the `top` most used client hosts (the
/// rows come most used first) keep series of their own; the open connections of the rest
/// are summed per listener under `client_ip="other"` (a gauge: it may go down). Counters
/// never go through "other", whose members change with every ranking (a counter that went
/// down would read as a reset): per-host counters exist for the top hosts only, and per
/// listener the totals over every client host, which only grow. A server with thousands of
/// client addresses so exports a bounded set.
fn clients(registry: &mut Registry, snap: &Snapshot, top: usize) {
    let open = Family::<ClientLabels, Gauge>::default();
    let limit = Family::<ClientLabels, Gauge>::default();
    let usage = Family::<ClientLabels, FloatGauge>::default();
    let opened = Family::<ClientLabels, Counter>::default();
    let closed = Family::<ClientLabels, Counter>::default();
    let rejected = Family::<ClientLabels, Counter>::default();
    let unanswered = Family::<ClientLabels, Counter>::default();
    for (i, c) in snap.rows.clients.iter().enumerate() {
        let own = i < top;
        let l = ClientLabels {
            listener: c.listener.clone(),
            client_ip: if own {
                c.client_ip.clone()
            } else {
                "other".into()
            },
        };
        open.get_or_create(&l).inc_by(gauge(c.open));
        let counts = [c.opened, c.closed, c.rejected, c.unanswered];
        if !own {
            continue;
        }
        limit.get_or_create(&l).set(i64::from(c.limit));
        if let Some(u) = c.usage {
            usage.get_or_create(&l).set(u);
        }
        for (family, n) in [&opened, &closed, &rejected, &unanswered]
            .into_iter()
            .zip(counts)
        {
            family.get_or_create(&l).inc_by(n);
        }
    }
    registry.register(
        "client_open_connections",
        "Connections this host's listener holds from a client host (the --metrics-clients most used, the rest under client_ip=\"other\"): what ZooKeeper counts against maxClientCnxns on the server's side",
        open,
    );
    registry.register(
        "client_limit_connections",
        "maxClientCnxns of the listener (0: unlimited), per client host with series of its own",
        limit,
    );
    registry.register(
        "client_usage_ratio",
        "open / limit of a client host on the listener (absent when unlimited)",
        usage,
    );
    registry.register(
        "client_accepted",
        "Connections from the client host the listener accepted since zkconn started (the --metrics-clients most used hosts)",
        opened,
    );
    registry.register(
        "client_closed",
        "Accepted connections from the client host the server let go since zkconn started (refusals included)",
        closed,
    );
    registry.register(
        "client_rejected",
        "Connections from the client host the server refused since zkconn started: it closed them before reading or writing a byte",
        rejected,
    );
    registry.register(
        "client_unanswered",
        "Other accepted connections from the client host the server let go without sending a byte (no session started)",
        unanswered,
    );
    listeners(registry, snap);
}

/// Per watched listener: its server's kind and caps, its connections, and the totals over
/// every client host since start (retired hosts included: they only grow).
fn listeners(registry: &mut Registry, snap: &Snapshot) {
    let totals: [Family<ListenerLabels, Counter>; 4] = Default::default();
    let open = Family::<ListenerLabels, Gauge>::default();
    let cap = Family::<ListenerLabels, Gauge>::default();
    let info = Family::<ListenerInfoLabels, Gauge>::default();
    for row in &snap.rows.listeners {
        let l = ListenerLabels {
            listener: row.listener.clone(),
        };
        for (family, n) in totals
            .iter()
            .zip([row.opened, row.closed, row.rejected, row.unanswered])
        {
            family.get_or_create(&l).inc_by(n);
        }
        open.get_or_create(&l).set(gauge(row.open));
        if let Some(max) = row.server.max_cnxns {
            cap.get_or_create(&l).set(i64::from(max));
        }
        info.get_or_create(&ListenerInfoLabels {
            listener: row.listener.clone(),
            kind: serde_plain(&row.server.kind),
        })
        .set(1);
    }
    registry.register(
        "listener_open_connections",
        "Connections the listener holds now, from every client host",
        open,
    );
    registry.register(
        "listener_max_connections",
        "maxCnxns of the listener's server: its cap on the listener's connections from every client host together (0: none)",
        cap,
    );
    registry.register(
        "listener_info",
        "A watched listener of this host and which of its server's listeners it is (kind: plain, secure or unknown)",
        info,
    );
    let [t_opened, t_closed, t_rejected, t_unanswered] = totals;
    registry.register(
        "listener_accepted",
        "Connections the listener accepted since zkconn started, from every client host",
        t_opened,
    );
    registry.register(
        "listener_closed",
        "Accepted connections the server let go since zkconn started, from every client host",
        t_closed,
    );
    registry.register(
        "listener_rejected",
        "Refusals by the server since zkconn started, of every client host",
        t_rejected,
    );
    registry.register(
        "listener_unanswered",
        "Accepted connections let go without a byte from the server since zkconn started, of every client host",
        t_unanswered,
    );
}

/// Owners are services (and the kinds they run as): a bounded set on any host, where a
/// label per process or YARN container would make new series with every container. The
/// counters come from the snapshot's service rows, which keep the counts of processes that
/// have gone, so they never go down; open connections are also split by budget.
fn owners(registry: &mut Registry, snap: &Snapshot, top: usize) {
    let mut ranked: Vec<(OwnerLabels, OwnerSums)> = snap
        .rows
        .services
        .iter()
        .map(|row| {
            let kinds: Vec<String> = row.kinds.iter().map(ToString::to_string).collect();
            let l = OwnerLabels {
                service: label_value(&row.service),
                kind: kinds.join(","),
            };
            // The highest score of a suspect in this service, at any level.
            let score = snap
                .rows
                .suspects
                .iter()
                .filter(|x| x.service.as_deref() == Some(row.service.as_str()))
                .map(|x| x.score)
                .fold(0.0, f64::max);
            (
                l,
                OwnerSums {
                    totals: row.totals,
                    score,
                },
            )
        })
        .collect();
    ranked.sort_by(|a, b| {
        (b.1.totals.open, b.1.totals.opened)
            .cmp(&(a.1.totals.open, a.1.totals.opened))
            .then(a.0.cmp(&b.0))
    });
    let other_labels = OwnerLabels {
        service: "other".into(),
        kind: String::new(),
    };
    let mut other = OwnerSums::default();
    let mut shown = Vec::new();
    let mut others = false;
    for (i, (l, s)) in ranked.into_iter().enumerate() {
        if i < top {
            shown.push((l, s));
        } else {
            others = true;
            let score = other.score.max(s.score);
            other.add(&s.totals, 0.0);
            other.score = score;
        }
    }
    // Open connections per budget, from the live processes, under the same owners.
    let named: BTreeMap<String, OwnerLabels> = shown
        .iter()
        .map(|(l, _)| (l.service.clone(), l.clone()))
        .collect();
    let mut by_budget: BTreeMap<BudgetOwnerLabels, u64> = BTreeMap::new();
    for p in &snap.rows.processes {
        let owner = named
            .get(&label_value(&p.who.service))
            .unwrap_or(&other_labels);
        for s in &p.servers {
            *by_budget
                .entry(BudgetOwnerLabels {
                    service: owner.service.clone(),
                    kind: owner.kind.clone(),
                    server: s.server.clone(),
                    local_ip: s.local_ip.clone(),
                })
                .or_default() += s.open;
        }
    }
    if others {
        shown.push((other_labels, other));
    }
    let open = Family::<BudgetOwnerLabels, Gauge>::default();
    for (l, n) in &by_budget {
        open.get_or_create(l).set(gauge(*n));
    }
    let close_wait = Family::<OwnerLabels, Gauge>::default();
    let growth = Family::<OwnerLabels, FloatGauge>::default();
    let score = Family::<OwnerLabels, FloatGauge>::default();
    let opened = Family::<OwnerLabels, Counter>::default();
    let closed = Family::<OwnerLabels, Counter>::default();
    let failed = Family::<OwnerLabels, Counter>::default();
    let rejected = Family::<OwnerLabels, Counter>::default();
    for (l, s) in &shown {
        let t = &s.totals;
        close_wait.get_or_create(l).set(gauge(t.close_wait));
        growth.get_or_create(l).set(t.rates.growth_per_min / 60.0);
        score.get_or_create(l).set(s.score);
        opened.get_or_create(l).inc_by(t.opened);
        closed.get_or_create(l).inc_by(t.closed);
        failed.get_or_create(l).inc_by(t.failed);
        rejected.get_or_create(l).inc_by(t.rejected);
    }
    registry.register(
        "owner_open_connections",
        "Open connections of an owner (a service: the --metrics-owners largest, the rest under service=\"other\") at one budget (server, local IP)",
        open,
    );
    registry.register(
        "owner_close_wait_connections",
        "CLOSE_WAIT connections of an owner",
        close_wait,
    );
    registry.register(
        "owner_growth_per_second",
        "Net change of an owner's open connections per second, sustained over the trend window",
        growth,
    );
    registry.register(
        "owner_suspect_score",
        "Highest leak-suspect score in an owner (0 when none; listed from 2, docs/suspects.md)",
        score,
    );
    registry.register(
        "owner_opened",
        "connect() attempts of an owner since zkconn started (its exited processes included)",
        opened,
    );
    registry.register(
        "owner_closed",
        "Established connections of an owner closed since zkconn started",
        closed,
    );
    registry.register(
        "owner_failed",
        "Connections of an owner closed without ever being established",
        failed,
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
        ("server_side", p.overflow_detail.server_side),
        ("client_hosts", p.overflow_detail.client_hosts),
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
        ("inbound_retired", p.repaired.inbound_retired),
        ("inbound_adopted", p.repaired.inbound_adopted),
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
        model::{ClientRow, ProcessRow, Rows, ServerOpen, ServerRow},
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
                p.who.service = format!("service {i}");
                p.states.open = 10 - i as u64 % 10;
                p.opened = p.states.open;
                p.servers = vec![ServerOpen {
                    server: "10.0.0.1:2181".into(),
                    local_ip: "10.0.0.9".into(),
                    open: p.states.open,
                }];
                p
            })
            .collect();
        with_services(Snapshot::for_test(Rows {
            servers: vec![s1, unlimited],
            processes,
            ..Rows::default()
        }))
    }

    fn top(n: usize) -> Top {
        Top {
            owners: n,
            clients: n,
        }
    }

    /// Client hosts of listener 10.0.0.1:2181 (limit 60), most used first: the first holds
    /// `n + 1` connections, each next one fewer.
    fn with_clients(mut s: Snapshot, n: u64) -> Snapshot {
        s.rows.clients = (0..n)
            .map(|i| ClientRow {
                listener: "10.0.0.1:2181".into(),
                client_ip: format!("10.0.1.{i}"),
                open: n + 1 - i,
                limit: 60,
                usage: Some((n + 1 - i) as f64 / 60.0),
                opened: 10,
                closed: 10 + i,
                rejected: i,
                ..ClientRow::default()
            })
            .collect();
        s.rows.listeners = vec![crate::model::ListenerRow {
            listener: "10.0.0.1:2181".into(),
            open: s.rows.clients.iter().map(|c| c.open).sum(),
            rejected: s.rows.clients.iter().map(|c| c.rejected).sum(),
            ..crate::model::ListenerRow::default()
        }];
        s
    }

    /// Client hosts beyond the top are summed per listener under client_ip="other", with
    /// no limit or usage of their own; fewer than the top make no "other".
    #[test]
    fn client_hosts_beyond_the_top_are_summed_as_other() {
        let text = render(&with_clients(snap(1), 5), top(2)).unwrap();
        let value = |name: &str, ip: &str| {
            lines_of(&text, name)
                .into_iter()
                .find(|l| l.contains(&format!("client_ip=\"{ip}\"")))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            value("zkconn_client_open_connections", "10.0.1.0").as_deref(),
            Some("6")
        );
        // 4 + 3 + 2 from the three below the top.
        assert_eq!(
            value("zkconn_client_open_connections", "other").as_deref(),
            Some("9")
        );
        // Counters never go through "other": per listener, the totals of every host.
        assert_eq!(value("zkconn_client_rejected_total", "other"), None);
        let total = lines_of(&text, "zkconn_listener_rejected_total");
        assert_eq!(
            total,
            ["zkconn_listener_rejected_total{listener=\"10.0.0.1:2181\"} 10"],
            "0 + 1 + 2 + 3 + 4"
        );
        assert_eq!(value("zkconn_client_limit_connections", "other"), None);
        assert_eq!(value("zkconn_client_usage_ratio", "other"), None);
        assert_eq!(
            value("zkconn_client_limit_connections", "10.0.1.1").as_deref(),
            Some("60")
        );
        let few = render(&with_clients(snap(1), 2), top(2)).unwrap();
        let series = |text: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains("client_ip=\"other\""))
                .count()
        };
        assert_eq!(series(&few), 0, "{few}");
        assert_eq!(series(&text), 1, "{text}");
    }

    /// The service rows of the snapshot's processes, as the engine rolls them up.
    fn with_services(mut s: Snapshot) -> Snapshot {
        s.rows.services = crate::model::roll_up(&s.rows.processes, &[]).2;
        s
    }

    #[test]
    fn a_hostile_process_name_cannot_forge_a_series_or_break_a_label() {
        let mut s = snap(1);
        let hostile = "ev\x1b[2Jil\nzkconn_fake{x=\"1\"} 99\n\\.py";
        s.rows.processes[0].who.label = hostile.to_owned();
        s.rows.processes[0].who.service = hostile.to_owned();
        let s = with_services(s);
        let text = render(&s, top(20)).unwrap();
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
            line.contains("service=\"ev\u{fffd}[2Jil\\nzkconn_fake{x=\\\"1\\\"} 99\\n\\\\.py\""),
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
        let text = render(&snap(0), top(20)).unwrap();
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
        let text = render(&snap(25), top(5)).unwrap();
        let open = lines_of(&text, "zkconn_owner_open_connections");
        assert_eq!(open.len(), 6, "{open:#?}");
        // 25 processes open 10,9,...,1,10,9,...: the five largest are 10,10,10,9,9; the
        // other twenty hold 25*~5.5 - 48.
        let total: u64 = (0..25).map(|i| 10 - i % 10).sum();
        let other = open
            .iter()
            .find(|l| l.contains("service=\"other\""))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap();
        assert_eq!(other.parse::<u64>().unwrap(), total - 48);
        // Fewer owners than the top: no "other".
        let text = render(&snap(3), top(5)).unwrap();
        assert_eq!(lines_of(&text, "zkconn_owner_open_connections").len(), 3);
    }

    /// Owners are services: three processes of one service (three YARN containers, say)
    /// are one series per budget, and no label carries a pid or a container id.
    #[test]
    fn processes_of_one_service_are_one_series_per_budget() {
        let mut s = snap(0);
        for (pid, ip) in [(1, "10.0.0.9"), (2, "10.0.0.9"), (3, "10.0.0.8")] {
            let mut p = ProcessRow::for_test(pid);
            p.who.label =
                format!("Spark executor in container_e17_1700000000000_0042_01_00000{pid}");
            p.who.service = "Spark executor".into();
            p.who.yarn_container = Some(format!("container_e17_1700000000000_0042_01_00000{pid}"));
            p.states.open = 2;
            p.opened = 3;
            p.servers = vec![ServerOpen {
                server: "10.0.0.1:2181".into(),
                local_ip: ip.into(),
                open: 2,
            }];
            s.rows.processes.push(p);
        }
        let text = render(&with_services(s), top(20)).unwrap();
        let mut open = lines_of(&text, "zkconn_owner_open_connections");
        open.sort_unstable();
        assert_eq!(
            open,
            vec![
                "zkconn_owner_open_connections{service=\"Spark executor\",kind=\"process\",server=\"10.0.0.1:2181\",local_ip=\"10.0.0.8\"} 2",
                "zkconn_owner_open_connections{service=\"Spark executor\",kind=\"process\",server=\"10.0.0.1:2181\",local_ip=\"10.0.0.9\"} 4",
            ],
            "{text}"
        );
        assert_eq!(
            lines_of(&text, "zkconn_owner_opened_total"),
            vec!["zkconn_owner_opened_total{service=\"Spark executor\",kind=\"process\"} 9"]
        );
        assert!(!text.contains("pid"), "no pid label");
        assert!(!text.contains("container_"), "no container id");
    }

    /// A service's counters keep what its exited processes did (the service rows keep
    /// them), so a `*_total` never goes down when a process goes.
    #[test]
    fn owner_counters_keep_what_exited_processes_did() {
        let mut s = snap(2);
        let gone = crate::model::Retired {
            who: s.rows.processes[0].who.clone(),
            opened: 5,
            closed: 5,
            ..Default::default()
        };
        s.rows.services = crate::model::roll_up(&s.rows.processes, &[gone]).2;
        let text = render(&s, top(20)).unwrap();
        assert!(
            lines_of(&text, "zkconn_owner_opened_total")
                .contains(&"zkconn_owner_opened_total{service=\"service 0\",kind=\"process\"} 15"),
            "{text}"
        );
    }

    /// Scrapers that do not ask for OpenMetrics get the classic text format, which
    /// Prometheus 2.x's parser and promtool read: counters by their `_total` name, the
    /// build info as a gauge, no `# EOF`.
    #[test]
    fn the_classic_format_names_counters_and_info_as_it_wants() {
        let om = render(&snap(2), top(20)).unwrap();
        let text = classic(&om);
        assert!(
            text.contains("# HELP zkconn_server_rejected_total Connections the server refused"),
            "{text}"
        );
        assert!(text.contains("# TYPE zkconn_server_rejected_total counter\n"));
        assert!(text.contains("# TYPE zkconn_build_info gauge\nzkconn_build_info{version=\""));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains(" info\n"));
        // Every sample line is the same in both.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&om), samples(&text));
    }

    #[rstest::rstest]
    #[case(None, false)]
    #[case(Some("*/*"), false)]
    #[case(Some("text/plain;version=0.0.4"), false)]
    #[case(
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ),
        true
    )]
    #[case(
        Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
        false
    )]
    #[case(Some("application/openmetrics-text; version=1.0.0"), true)]
    #[case(Some("application/openmetrics-text;q=0"), false)]
    #[case(Some("application/openmetrics-text;Q=0"), false)]
    #[case(Some("application/openmetrics-text;q=abc"), false)]
    fn negotiation(#[case] accept: Option<&str>, #[case] om: bool) {
        assert_eq!(wants_openmetrics(accept), om);
    }

    #[test]
    fn every_metric_is_documented_and_every_documented_metric_exists() {
        let doc = include_str!("../../docs/metrics.md");
        let mut s = with_clients(snap(3), 3);
        s.rows.suspects.clear();
        let text = render(&s, top(20)).unwrap();
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
