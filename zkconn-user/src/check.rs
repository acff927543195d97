//! `zkconn check`: the snapshot judged as a Nagios/Icinga plugin result.
//!
//! Owns: the status (the worst server alarm or client host, at least WARNING when counts are
//! incomplete),
//! the one status line and the performance data. Pure: it reads a [`Snapshot`].

use std::fmt::Write as _;

use crate::{
    limits::Limits,
    model::{ClientRow, ServerRow, Snapshot},
    verdict::Alarm,
};

/// Plugin exit codes.
pub const UNKNOWN: u8 = 3;

pub fn exit_code(status: Alarm) -> u8 {
    match status {
        Alarm::Ok => 0,
        Alarm::Warning => 1,
        Alarm::Critical => 2,
    }
}

/// The status and the line to print (status text, `|`, performance data).
pub fn verdict(snap: &Snapshot) -> (Alarm, String) {
    let worst = snap.rows.servers.iter().max_by(|a, b| {
        (a.alarm, a.usage.unwrap_or(0.0), a.states.open)
            .partial_cmp(&(b.alarm, b.usage.unwrap_or(0.0), b.states.open))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut status = worst.map_or(Alarm::Ok, |w| w.alarm);
    // Where this host is a ZooKeeper server: the client host worst off.
    let client = snap
        .rows
        .clients
        .iter()
        .map(|c| (c.alarm, c))
        .max_by(|(a, x), (b, y)| {
            (*a, x.usage.unwrap_or(0.0), x.rejected)
                .partial_cmp(&(*b, y.usage.unwrap_or(0.0), y.rejected))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .filter(|(alarm, _)| *alarm > Alarm::Ok);
    if let Some((alarm, _)) = client {
        status = status.max(alarm);
    }
    // A listener at (or near) its server's maxCnxns: every client host is refused.
    let listener = snap
        .rows
        .listeners
        .iter()
        .filter(|l| l.alarm > Alarm::Ok)
        .max_by_key(|l| (l.alarm, l.open));
    if let Some(l) = listener {
        status = status.max(l.alarm);
    }
    let incomplete = snap.probe.lost + snap.probe.overflow > 0;
    if incomplete {
        status = status.max(Alarm::Warning);
    }
    let mut text = match (worst, client) {
        (None, Some((_, c))) => describe_client(c),
        (None, None) => format!(
            "no ZooKeeper connections from this host to {}",
            snap.targets.join(", ")
        ),
        (Some(w), Some((alarm, c))) if alarm > w.alarm => {
            format!("{}; {}", describe_client(c), describe(snap, w))
        }
        (Some(w), Some((_, c))) => format!("{}; {}", describe(snap, w), describe_client(c)),
        (Some(w), None) => describe(snap, w),
    };
    if let Some(l) = listener {
        let _ = write!(
            text,
            "; listener {}: {} open of its server's maxCnxns {}",
            l.listener,
            l.open,
            l.server.max_cnxns.unwrap_or(0)
        );
    }
    if let Some(c) = snap.rows.clients.iter().find(|c| c.growing) {
        let _ = write!(
            text,
            "; growing: client host {} on {} ({} open, {:+.1}/min)",
            c.client_ip,
            c.listener,
            c.open,
            c.growth_per_min.unwrap_or(0.0)
        );
    }
    if let Some(s) = snap.rows.suspects.first() {
        let pid = s.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let _ = write!(text, "; suspect: {}{pid} ({})", s.label, s.reason);
    }
    // Who is cut off: at most three, the most refused first.
    if !snap.rows.victims.is_empty() {
        let named: Vec<String> = snap
            .rows
            .victims
            .iter()
            .take(3)
            .map(|v| format!("{} pid {} ({})", v.label, v.pid, v.reason))
            .collect();
        let more = snap.rows.victims.len().saturating_sub(named.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        let _ = write!(text, "; refused: {}{more}", named.join(", "));
    }
    if let Some(w) = worst.filter(|w| w.limit_source.assumed()) {
        let _ = write!(
            text,
            "; limit assumed: {}",
            Limits::why_assumed(&snap.max_client_cnxns, &w.server)
        );
    }
    if incomplete {
        let _ = write!(
            text,
            "; counts incomplete: {} lost, {} overflow",
            snap.probe.lost, snap.probe.overflow
        );
    }
    // One line, as monitoring systems read it, whatever a process named itself.
    // `|` would start the performance data: a name that holds one shows `¦`.
    let text = crate::output::printable(&text).replace('|', "¦");
    let line = format!("ZKCONN {} - {text} | {}", status.as_str(), perfdata(snap));
    (status, line)
}

/// A client host of this host's listener, as the server sees it:
/// `client host 10.0.2.7 on 10.0.0.1:2181: 60 of 60 open (100%), limit reached, refused 12 in the window`.
fn describe_client(c: &ClientRow) -> String {
    let mut text = format!(
        "client host {} on {}: {}",
        c.client_ip,
        c.listener,
        crate::verdict::usage_words(c.open, c.limit, c.limit_source.assumed(), c.usage)
    );
    if c.rejected_window > 0 {
        let _ = write!(text, ", refused {} in the window", c.rejected_window);
    }
    if c.refusing && c.listener_full {
        text.push_str(" (its listener is at the server's maxCnxns, not this host's limit)");
    }
    text
}

fn describe(snap: &Snapshot, w: &ServerRow) -> String {
    let mut text = format!(
        "{} from {}: {}",
        w.server,
        w.local_ip,
        crate::verdict::usage_words(w.states.open, w.limit, w.limit_source.assumed(), w.usage)
    );
    if w.refusing && w.rejected > 0 {
        let _ = write!(
            text,
            ", refused {} in the last {:.0} s",
            w.rejected, snap.observed_secs
        );
    }
    if w.question_refused {
        let _ = write!(
            text,
            ", refused zkconn's own question from {}: at its limit",
            w.local_ip
        );
    }
    if let Some(ttl) = w
        .time_to_limit_secs
        .filter(|t| *t > 0.0 && w.headroom.is_some_and(|h| h > 0))
    {
        let _ = write!(text, ", limit in {}", crate::trend::human_secs(ttl));
    }
    let top = snap
        .rows
        .processes
        .iter()
        .filter_map(|p| {
            p.servers
                .iter()
                .find(|s| s.server == w.server && s.local_ip == w.local_ip)
                .map(|s| (s.open, p))
        })
        .max_by_key(|(open, p)| (*open, std::cmp::Reverse(p.pid)));
    if let Some((open, p)) = top {
        let _ = write!(
            text,
            "; top holder: {} pid {} ({open} open)",
            p.who.label, p.pid
        );
    }
    text
}

/// `'open SERVER from IP'=N;WARN;CRIT;0;LIMIT 'rejected SERVER from IP'=N ... lost=N
/// overflow=N unreadable=N`. Counts are of this run (they restart with each check), so they
/// carry no `c`, which would say they grow across runs.
fn perfdata(snap: &Snapshot) -> String {
    let mut out = Vec::new();
    let t = &snap.alarm_thresholds;
    for s in &snap.rows.servers {
        let id = format!("{:08x}", budget_id(&s.server, &s.local_ip));
        let name = format!("{id} {} from {}", s.server, s.local_ip).replace(['\'', '='], "_");
        if s.limit > 0 {
            let limit = f64::from(s.limit);
            let count = |pct: f64| limit * pct / 100.0;
            out.push(format!(
                "'open {name}'={};{};{};0;{}",
                s.states.open,
                t.warn.render(count),
                t.crit.render(count),
                s.limit
            ));
        } else {
            out.push(format!("'open {name}'={};;;0;", s.states.open));
        }
        out.push(format!("'rejected {name}'={}", s.rejected));
    }
    out.push(format!("lost={}", snap.probe.lost));
    out.push(format!("overflow={}", snap.probe.overflow));
    out.push(format!("unreadable={}", snap.probe.unreadable));
    out.join(" ")
}

/// A short name of a budget that stays the same from run to run and whatever other budgets
/// exist (the top 32 bits of the 64-bit FNV-1a of "server from local IP", 8 hex digits), so
/// each budget's performance data differs within the first 19 characters, as RRD-based
/// graphers need. Two of n budgets share one with odds of about n²/2³³.
fn budget_id(server: &str, local_ip: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in server.bytes().chain(*b" from ").chain(local_ip.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProcessRow, ServerOpen};

    fn snap(servers: Vec<ServerRow>) -> Snapshot {
        Snapshot::for_test(crate::model::Rows {
            servers,
            ..Default::default()
        })
    }

    fn server(open: u64, limit: u32, alarm: Alarm) -> ServerRow {
        ServerRow {
            alarm,
            ..ServerRow::for_test("10.0.0.1:2181", "10.0.0.9", open, limit)
        }
    }

    #[test]
    fn ok_names_the_server_and_carries_perfdata() {
        let (status, line) = verdict(&snap(vec![server(12, 60, Alarm::Ok)]));
        assert_eq!(status, Alarm::Ok);
        assert_eq!(
            line,
            "ZKCONN OK - 10.0.0.1:2181 from 10.0.0.9: 12 of 60 open (20%) | \
             'open dfc018e4 10.0.0.1:2181 from 10.0.0.9'=12;48;57;0;60 \
             'rejected dfc018e4 10.0.0.1:2181 from 10.0.0.9'=0 lost=0 overflow=0 unreadable=0"
        );
        assert_eq!(exit_code(status), 0);
    }

    #[test]
    fn the_worst_server_and_its_top_holder_are_named() {
        let mut crit = server(5, 5, Alarm::Critical);
        crit.server = "10.0.0.2:2181".into();
        crit.refusing = true;
        crit.rejected = 3;
        let mut s = snap(vec![server(50, 60, Alarm::Warning), crit]);
        let holder = |pid, open| ProcessRow {
            who: crate::attribution::Attribution {
                label: format!("worker{pid}"),
                ..Default::default()
            },
            servers: vec![ServerOpen {
                server: "10.0.0.2:2181".into(),
                local_ip: "10.0.0.9".into(),
                open,
            }],
            ..ProcessRow::for_test(pid)
        };
        s.rows.processes = vec![holder(7, 1), holder(8, 4)];
        let (status, line) = verdict(&s);
        assert_eq!(exit_code(status), 2);
        assert!(
            line.starts_with(
                "ZKCONN CRITICAL - 10.0.0.2:2181 from 10.0.0.9: 5 of 5 open (100%), limit reached, \
                 refused 3 in the last 2 s; top holder: worker8 pid 8 (4 open) | "
            ),
            "{line}"
        );
        assert!(line.contains("'rejected d925e8a3 10.0.0.2:2181 from 10.0.0.9'=3 "));
    }

    #[test]
    fn a_hostile_process_name_cannot_split_the_status_line() {
        let mut crit = server(5, 5, Alarm::Critical);
        crit.server = "10.0.0.2:2181".into();
        let mut s = snap(vec![crit]);
        s.rows.processes = vec![ProcessRow {
            who: crate::attribution::Attribution {
                label: "ev\x1b[2Jil\nZKCONN OK - all fine | x=1".into(),
                ..Default::default()
            },
            servers: vec![ServerOpen {
                server: "10.0.0.2:2181".into(),
                local_ip: "10.0.0.9".into(),
                open: 5,
            }],
            ..ProcessRow::for_test(9)
        }];
        let (_, line) = verdict(&s);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\x1b'), "{line}");
        assert!(
            line.contains("top holder: ev\u{fffd}[2Jil\\nZKCONN OK - all fine ¦ x=1 pid 9"),
            "{line}"
        );
        // The one `|` is the one that starts the performance data.
        assert_eq!(line.matches('|').count(), 1, "{line}");
    }

    /// On a ZooKeeper server's host, a client host refused (or at its limit) is critical
    /// and named first, beside this host's own connections.
    #[test]
    fn a_refused_client_host_is_critical_and_named() {
        let mut s = snap(vec![server(12, 60, Alarm::Ok)]);
        let client = |ip: &str, open: u64, rejected: u64| ClientRow {
            listener: "10.0.0.1:2181".into(),
            client_ip: ip.into(),
            open,
            limit: 60,
            usage: Some(open as f64 / 60.0),
            headroom: Some(60 - open as i64),
            rejected_window: rejected,
            limit_source: crate::limits::LimitSource::Flag,
            alarm: crate::alarm::Thresholds::default()
                .evaluate(Some(open as f64 / 60.0), rejected > 0 || open >= 60),
            ..ClientRow::default()
        };
        s.rows.clients = vec![client("10.0.2.8", 50, 0), client("10.0.2.7", 60, 12)];
        let (status, line) = verdict(&s);
        assert_eq!(status, Alarm::Critical);
        assert!(
            line.starts_with(
                "ZKCONN CRITICAL - client host 10.0.2.7 on 10.0.0.1:2181: 60 of 60 open \
                 (100%), limit reached, refused 12 in the window; 10.0.0.1:2181 from 10.0.0.9: 12 of 60"
            ),
            "{line}"
        );
        // Only a host near its limit: a warning, still the worse of the two, so first.
        s.rows.clients = vec![client("10.0.2.8", 50, 0)];
        let (status, line) = verdict(&s);
        assert_eq!(status, Alarm::Warning);
        assert!(
            line.starts_with(
                "ZKCONN WARNING - client host 10.0.2.8 on 10.0.0.1:2181: 50 of 60 open (83%); \
                 10.0.0.1:2181 from 10.0.0.9: 12 of 60 open (20%) | "
            ),
            "{line}"
        );
        // Comfortably below: nothing said of the client hosts.
        s.rows.clients = vec![client("10.0.2.8", 5, 0)];
        let (status, line) = verdict(&s);
        assert_eq!(status, Alarm::Ok);
        assert!(!line.contains("client host"), "{line}");
    }

    #[test]
    fn incomplete_counts_are_at_least_a_warning() {
        let mut s = snap(vec![server(1, 60, Alarm::Ok)]);
        s.probe.lost = 4;
        let (status, line) = verdict(&s);
        assert_eq!(status, Alarm::Warning);
        assert!(
            line.contains("counts incomplete: 4 lost, 0 overflow"),
            "{line}"
        );
        assert!(line.contains("lost=4 "));
    }

    #[test]
    fn no_connections_is_ok_and_unlimited_has_no_thresholds() {
        let (status, line) = verdict(&snap(vec![]));
        assert_eq!(
            (status, line.as_str()),
            (
                Alarm::Ok,
                "ZKCONN OK - no ZooKeeper connections from this host to *:2181 | lost=0 overflow=0 \
                 unreadable=0"
            )
        );
        let (_, line) = verdict(&snap(vec![server(3, 0, Alarm::Ok)]));
        assert!(line.contains("3 open (unlimited)"), "{line}");
        assert!(
            line.contains("'open dfc018e4 10.0.0.1:2181 from 10.0.0.9'=3;;;0;"),
            "{line}"
        );
    }

    /// Two local IPs that differ only after 19 characters of the old labels: each label's
    /// first 19 characters are its own (RRD keeps no more).
    #[test]
    fn perfdata_labels_differ_in_their_first_19_characters() {
        let mut second = server(2, 60, Alarm::Ok);
        second.local_ip = "10.0.0.10".into();
        let mut third = server(1, 60, Alarm::Ok);
        third.local_ip = "10.0.0.11".into();
        let (_, line) = verdict(&snap(vec![server(3, 60, Alarm::Ok), second, third]));
        let perf = line.split_once(" | ").map(|(_, p)| p).unwrap_or_default();
        // Labels as the guidelines quote them: 'with spaces'=value, or bare=value.
        let mut labels = Vec::new();
        let mut rest = perf.trim_start();
        while !rest.is_empty() {
            let (label, after) = match rest.strip_prefix('\'') {
                Some(q) => q.split_once("'=").unwrap_or((q, "")),
                None => rest.split_once('=').unwrap_or((rest, "")),
            };
            labels.push(label.to_owned());
            rest = after.split_once(' ').map_or("", |(_, r)| r).trim_start();
        }
        // The ids are the top half of the 64-bit FNV-1a of "SERVER from IP", computed
        // independently; the last two differ only in their sixth digit.
        for id in ["dfc018e4", "4134e6da", "4134e5da"] {
            assert!(
                perf.contains(&format!("'open {id} 10.0.0.1:2181 from ")),
                "{perf}"
            );
        }
        let mut heads: Vec<String> = labels
            .iter()
            .map(|l| l.chars().take(19).collect())
            .collect();
        let n = heads.len();
        heads.sort();
        heads.dedup();
        assert_eq!(heads.len(), n, "{labels:?}");
        assert_eq!(n, 9, "{labels:?}");
    }

    /// Ranges in the monitoring plugins' syntax reach the performance data as ranges of
    /// connections.
    #[test]
    fn ranges_reach_the_perfdata_in_connections() {
        use crate::{model::AlarmThresholds, threshold::parse_range};
        let mut s = snap(vec![server(30, 60, Alarm::Ok)]);
        s.alarm_thresholds =
            AlarmThresholds::new(parse_range("@10:50").unwrap(), parse_range("~:90").unwrap());
        let (_, line) = verdict(&s);
        assert!(line.contains("=30;@6:30;~:54;0;60 "), "{line}");
    }
}
