//! Printing a snapshot: JSON, or readable tables. No I/O besides the writer it is given.

use std::io::{self, Write};

use crate::{
    limits::Limits,
    model::{Age, Snapshot, Totals},
    trend::{human_secs, human_time_to_limit},
};

pub fn json(out: &mut impl Write, snapshot: &Snapshot) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, snapshot)?;
    writeln!(out)
}

/// `text` safe to print on a terminal and on one line: a line feed or tab shows as `\n` or
/// `\t`, any other control character (a terminal escape in a process name, which any local
/// user chooses) or invisible format character (a zero-width space, a bidirectional
/// override that shows a name reversed) as U+FFFD.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || is_format(c)) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_format(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Unicode's invisible format characters that change how the text around them shows.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2028}' | '\u{2029}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}'
        // Blank letters that show as nothing.
        | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}')
}

/// The widest a table cell gets, in characters (a command line is kept to 4,096 bytes).
const CELL_MAX: usize = 4096;

/// `text` cut to `max` characters, `…` marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    // Cells carry process names and command lines: never a raw control character, and
    // never wider than a formatter pads (a stored document may hold anything).
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| cut(&printable(c), CELL_MAX)).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn n(v: u64) -> String {
    v.to_string()
}

fn rate(per_min: f64) -> String {
    if per_min == 0.0 {
        "0".to_owned()
    } else {
        format!("{per_min:+.1}")
    }
}

/// `12 min`, `>= 3 h` when it predates zkconn, `-` with none open.
fn oldest(age: &Age) -> String {
    match age.oldest_secs {
        None => "-".to_owned(),
        Some(s) if age.oldest_seeded => format!(">= {}", human_secs(s)),
        Some(s) => human_secs(s),
    }
}

/// The counter columns every roll-up table ends with.
const TOTALS: [&str; 8] = [
    "OPEN",
    "CLOSE_WAIT",
    "OPENED",
    "CLOSED",
    "FAILED",
    "REJECTED",
    "GROWTH/MIN",
    "OLDEST",
];

fn with_totals(mut cells: Vec<String>, t: &Totals) -> Vec<String> {
    cells.extend(
        [
            t.open,
            t.close_wait,
            t.opened,
            t.closed,
            t.failed,
            t.rejected,
        ]
        .map(n),
    );
    cells.push(rate(t.rates.growth_per_min));
    cells.push(oldest(&t.age));
    cells
}

fn header<'a>(first: &[&'a str]) -> Vec<&'a str> {
    first.iter().copied().chain(TOTALS).collect()
}

/// One listener in a line: which server holds it, which of its listeners it is, its
/// limits, and its client hosts together.
fn listener_line(l: &crate::model::ListenerRow) -> String {
    use crate::listener::ListenerKind;
    let kind = match l.server.kind {
        ListenerKind::Plain => "plain (clientPort)",
        ListenerKind::Secure => "secure (secureClientPort)",
        ListenerKind::Unknown => "kind unknown",
    };
    let who = match &l.server.process {
        Some(p) => {
            let mut parts = vec![p.comm.clone()];
            parts.extend(
                p.main_class
                    .as_deref()
                    .map(|m| m.rsplit('.').next().unwrap_or(m).to_owned()),
            );
            parts.extend(p.config.clone());
            format!("pid {} ({})", p.pid, parts.join(", "))
        }
        None => "no process found".to_owned(),
    };
    let cap = match (l.server.max_cnxns, l.max_cnxns_headroom) {
        (Some(0), _) => ", maxCnxns none".to_owned(),
        (Some(max), Some(h)) => format!(", maxCnxns {max} (headroom {h})"),
        _ => String::new(),
    };
    let retired = if l.retired_hosts > 0 {
        format!(
            ", {} idle host{} retired",
            l.retired_hosts,
            if l.retired_hosts == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    let unknown = l
        .server
        .unknown
        .as_deref()
        .map(|why| format!("; not known: {why}"))
        .unwrap_or_default();
    format!(
        "listener {}: {kind}, {who}, maxClientCnxns {}{cap}; {} open from {} client host{}{retired}{unknown}",
        l.listener,
        limit_cell(l.limit, l.limit_source),
        l.open,
        l.client_hosts,
        if l.client_hosts == 1 { "" } else { "s" },
    )
}

/// A limit as the tables show it: `none` for unlimited, `60?` when assumed.
fn limit_cell(limit: u32, source: crate::limits::LimitSource) -> String {
    match (limit, source.assumed()) {
        (0, _) => "none".to_owned(),
        (n, false) => n.to_string(),
        (n, true) => format!("{n}?"),
    }
}

/// A usage ratio in percent, `-` when unlimited.
fn usage_cell(usage: Option<f64>) -> String {
    usage.map_or("-".to_owned(), |u| format!("{:.0}%", u * 100.0))
}

pub fn text(out: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    let hook = s.probe.hook.map_or("-".to_owned(), |h| h.to_string());
    writeln!(
        out,
        "zkconn on {} at {} (hook {hook}, observed {:.1}s) lost {} overflow {} unreadable {} \
         repaired {}",
        s.host,
        s.time,
        s.observed_secs,
        s.probe.lost,
        s.probe.overflow,
        s.probe.unreadable,
        s.probe.repaired.retired + s.probe.repaired.adopted
    )?;
    writeln!(out, "watching {}", s.targets.join(", "))?;
    // A one-shot look has counts but no history: say how to get the rest.
    if s.observed_secs < 1.0 {
        writeln!(
            out,
            "note: observed for {:.1} s: growth, time to limit and growth suspects need time \
             to see; give --duration (30s, 5m) for them",
            s.observed_secs
        )?;
    }
    for note in s
        .probe
        .limitations
        .iter()
        .chain(&s.probe.seeds.ownerless_why)
    {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out)?;
    let r = &s.rows;
    if r.servers.is_empty() {
        writeln!(out, "No ZooKeeper connections.")?;
    } else {
        let rows: Vec<Vec<String>> = r
            .servers
            .iter()
            .map(|r| {
                vec![
                    r.server.clone(),
                    // What the server counts; a NAT-translated row says from what.
                    if r.translated_from.is_empty() {
                        r.local_ip.clone()
                    } else {
                        format!("{} (NAT: {})", r.local_ip, r.translated_from.join(","))
                    },
                    n(r.states.open),
                    limit_cell(r.limit, r.limit_source),
                    usage_cell(r.usage),
                    n(r.rejected),
                    rate(r.rates.growth_per_min),
                    human_time_to_limit(r.time_to_limit_secs, r.headroom),
                    r.alarm.as_str().to_owned(),
                    n(r.states.close_wait),
                ]
            })
            .collect();
        table(
            out,
            &[
                "SERVER",
                "LOCAL IP",
                "OPEN",
                "LIMIT",
                "USE",
                "REJECTED",
                "GROWTH/MIN",
                "LIMIT IN",
                "ALARM",
                "CLOSE_WAIT",
            ],
            &rows,
        )?;
        let mut assumed: Vec<&str> = r
            .servers
            .iter()
            .filter(|r| r.limit_source.assumed())
            .map(|r| r.server.as_str())
            .collect();
        assumed.dedup();
        for server in assumed {
            writeln!(
                out,
                "? limit of {server} assumed (ZooKeeper's default): {}",
                printable(&Limits::why_assumed(&s.max_client_cnxns, server))
            )?;
        }
    }
    if !r.clients.is_empty() || !r.listeners.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Client hosts of this host's listeners (the server's side):"
        )?;
        for l in &r.listeners {
            writeln!(out, "{}", printable(&listener_line(l)))?;
        }
        let d = &s.probe.overflow_detail;
        if d.server_side + d.client_hosts > 0 {
            writeln!(
                out,
                "note: incomplete: {} accepted connections were not followed (raise \
                 --max-connections) and {} client hosts not counted (the table holds {})",
                d.server_side,
                d.client_hosts,
                zkconn_common::MAX_CLIENTS
            )?;
        }
        let rows: Vec<Vec<String>> = r
            .clients
            .iter()
            .map(|c| {
                vec![
                    c.listener.clone(),
                    c.client_ip.clone(),
                    n(c.open),
                    limit_cell(c.limit, c.limit_source),
                    usage_cell(c.usage),
                    n(c.rejected),
                    n(c.unanswered),
                    n(c.opened),
                    n(c.close_wait),
                ]
            })
            .collect();
        table(
            out,
            &[
                "LISTENER",
                "CLIENT IP",
                "OPEN",
                "LIMIT",
                "USE",
                "REJECTED",
                "UNANSWERED",
                "OPENED",
                "CLOSE_WAIT",
            ],
            &rows,
        )?;
    }
    if !r.suspects.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .suspects
            .iter()
            .map(|x| {
                let who = match x.pid {
                    Some(pid) => format!("{} (pid {pid})", x.label),
                    None => format!("{} ({})", x.label, x.subject.as_str()),
                };
                vec![
                    format!("{:.1}", x.score),
                    who,
                    n(x.open),
                    rate(x.growth_per_min),
                    x.reason.clone(),
                ]
            })
            .collect();
        table(
            out,
            &["SCORE", "SUSPECT", "OPEN", "GROWTH/MIN", "REASON"],
            &rows,
        )?;
    }
    if !r.victims.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .victims
            .iter()
            .map(|v| {
                vec![
                    format!("{} (pid {})", v.label, v.pid),
                    n(v.open),
                    n(v.rejected),
                    v.reason.clone(),
                ]
            })
            .collect();
        table(out, &["REFUSED", "OPEN", "REJECTED", "REASON"], &rows)?;
    }
    if !r.processes.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .processes
            .iter()
            .map(|p| {
                let cells = vec![
                    n(u64::from(p.pid)),
                    p.who.kind.to_string(),
                    p.who.label.clone(),
                    p.user
                        .clone()
                        .or_else(|| p.uid.map(|u| u.to_string()))
                        .unwrap_or_else(|| "-".into()),
                    if p.alive { "yes" } else { "no" }.to_owned(),
                ];
                with_totals(cells, &Totals::of(p))
            })
            .collect();
        table(
            out,
            &header(&["PID", "KIND", "OWNER", "USER", "ALIVE"]),
            &rows,
        )?;
    }
    if !r.cgroups.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .cgroups
            .iter()
            .map(|c| {
                vec![
                    c.label.clone(),
                    // Which hierarchy keyed the row: v2 ids, or v1 paths (docs/attribution.md).
                    c.hierarchy.to_string(),
                    c.kind.to_string(),
                    n(c.pids.len() as u64),
                    n(c.states.open),
                    n(c.states.close_wait),
                    n(c.opened),
                    n(c.closed),
                    n(c.failed),
                ]
            })
            .collect();
        table(
            out,
            &[
                "CGROUP",
                "HIERARCHY",
                "KIND",
                "PROCESSES",
                "OPEN",
                "CLOSE_WAIT",
                "OPENED",
                "CLOSED",
                "FAILED",
            ],
            &rows,
        )?;
    }
    if !r.applications.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .applications
            .iter()
            .map(|a| {
                let cells = vec![a.application.clone(), n(a.containers.len() as u64)];
                with_totals(cells, &a.totals)
            })
            .collect();
        table(out, &header(&["YARN APPLICATION", "CONTAINERS"]), &rows)?;
    }
    if !r.services.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .services
            .iter()
            .map(|sv| {
                let kinds: Vec<&str> = sv.kinds.iter().map(|k| k.as_str()).collect();
                let cells = vec![sv.service.clone(), kinds.join(","), n(sv.pids.len() as u64)];
                with_totals(cells, &sv.totals)
            })
            .collect();
        table(out, &header(&["SERVICE", "KIND", "PROCESSES"]), &rows)?;
    }
    Ok(())
}

/// How a cell of [`text_of_document`] is read from a row.
#[derive(Clone, Copy)]
pub(crate) enum Cell {
    /// The field as it is (`-` when null).
    Plain(&'static str),
    /// A ratio as a percentage.
    Percent(&'static str),
    /// In capitals (alarms).
    Upper(&'static str),
    /// A score, one decimal.
    Score(&'static str),
    /// `label (pid N)`.
    Who,
    /// `no` when `alive` is false.
    Alive,
}

impl Cell {
    pub(crate) fn of(self, row: &serde_json::Value) -> String {
        use serde_json::Value;
        let plain = |v: &Value| match v {
            Value::String(t) => t.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        match self {
            Cell::Plain(k) => plain(&row[k]),
            Cell::Percent(k) => row[k]
                .as_f64()
                .map_or("-".to_owned(), |u| format!("{:.0}%", u * 100.0)),
            Cell::Upper(k) => plain(&row[k]).to_uppercase(),
            Cell::Score(k) => row[k]
                .as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.1}")),
            Cell::Who => format!("{} (pid {})", plain(&row["label"]), plain(&row["pid"])),
            Cell::Alive => if row["alive"].as_bool() == Some(false) {
                "no"
            } else {
                "yes"
            }
            .to_owned(),
        }
    }
}

/// A document read back from the history store, as tables: the budgets, the client hosts
/// of this host's listeners, the suspects and refused processes, the processes and the
/// YARN containers, each as the document has them (`note` says where it comes from). Cells
/// go through `table`, which makes them printable.
pub fn text_of_document(
    out: &mut impl Write,
    doc: &serde_json::Value,
    note: &str,
) -> io::Result<()> {
    use Cell::{Alive, Percent, Plain, Score, Upper, Who};
    writeln!(
        out,
        "zkconn on {} at {} {}",
        printable(&Plain("host").of(doc)),
        printable(&Plain("time").of(doc)),
        printable(note)
    )?;
    let tables: [(&str, &[(&str, Cell)]); 6] = [
        (
            "servers",
            &[
                ("SERVER", Plain("server")),
                ("LOCAL IP", Plain("local_ip")),
                ("OPEN", Plain("open")),
                ("LIMIT", Plain("limit")),
                ("USE", Percent("usage")),
                ("REJECTED", Plain("rejected")),
                ("ALARM", Upper("alarm")),
            ],
        ),
        (
            "clients",
            &[
                ("LISTENER", Plain("listener")),
                ("CLIENT IP", Plain("client_ip")),
                ("OPEN", Plain("open")),
                ("LIMIT", Plain("limit")),
                ("USE", Percent("usage")),
                ("REJECTED", Plain("rejected")),
                ("ALARM", Upper("alarm")),
            ],
        ),
        (
            "suspects",
            &[
                ("SCORE", Score("score")),
                ("SUSPECT", Who),
                ("OPEN", Plain("open")),
                ("REASON", Plain("reason")),
            ],
        ),
        (
            "victims",
            &[
                ("REFUSED", Who),
                ("REJECTED", Plain("rejected")),
                ("REASON", Plain("reason")),
            ],
        ),
        (
            "processes",
            &[
                ("PID", Plain("pid")),
                ("KIND", Plain("kind")),
                ("OWNER", Plain("label")),
                ("ALIVE", Alive),
                ("OPEN", Plain("open")),
                ("OPENED", Plain("opened")),
                ("CLOSED", Plain("closed")),
                ("REJECTED", Plain("rejected")),
            ],
        ),
        (
            "containers",
            &[
                ("YARN CONTAINER", Plain("container")),
                ("APPLICATION", Plain("application")),
                ("OPEN", Plain("open")),
                ("OPENED", Plain("opened")),
                ("CLOSED", Plain("closed")),
                ("REJECTED", Plain("rejected")),
            ],
        ),
    ];
    for (key, columns) in tables {
        let rows = doc[key].as_array().map(Vec::as_slice).unwrap_or_default();
        if rows.is_empty() {
            continue;
        }
        writeln!(out)?;
        let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| columns.iter().map(|(_, c)| c.of(r)).collect())
            .collect();
        table(out, &header, &body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A stored document as tables: only the sections it has, each row's fields, a hostile
    /// name printable, an exited process marked.
    #[test]
    fn a_stored_document_prints_as_tables() {
        let doc = serde_json::json!({
            "host": "worker-7",
            "time": "2026-12-03T03:10:00Z",
            "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": 60,
                         "limit": 60, "usage": 1.0, "rejected": 3, "alarm": "critical"}],
            "processes": [{"pid": 4100, "kind": "yarn", "label": "ev\u{1b}[2Jil", "alive": false,
                           "open": 58, "opened": 60, "closed": 2, "rejected": 3}],
            "containers": [{"container": "container_e17_1700000000000_0042_01_000002",
                            "application": "application_1700000000000_0042", "open": 58,
                            "opened": 60, "closed": 2, "rejected": 3}],
            "suspects": []
        });
        let mut out = Vec::new();
        super::text_of_document(&mut out, &doc, "(from a store)").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("zkconn on worker-7 at 2026-12-03T03:10:00Z (from a store)\n"));
        assert!(text.contains("100%"), "{text}");
        assert!(text.contains("CRITICAL"), "{text}");
        assert!(
            text.contains("container_e17_1700000000000_0042_01_000002"),
            "{text}"
        );
        assert!(text.contains("ev\u{fffd}[2Jil"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            !text.contains("SUSPECT"),
            "an empty section is left out: {text}"
        );
        let row = text.lines().find(|l| l.starts_with("4100")).unwrap();
        assert!(row.contains(" no "), "{row}");
    }

    /// A cell longer than a formatter can pad (65,535) is cut, not a panic.
    #[test]
    fn a_huge_cell_is_cut() {
        let mut out = Vec::new();
        let huge = "x".repeat(70_000);
        super::table(&mut out, &["A", "B"], &[vec![huge, "end".into()]]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("x…  end"), "{}", &text[text.len() - 20..]);
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\nb\tc\x1b[2J"), "a\\nb\\tc\u{fffd}[2J");
        assert_eq!(printable("a\u{202e}b\u{200b}c"), "a\u{fffd}b\u{fffd}c");
        let mut out = Vec::new();
        table(
            &mut out,
            &["OWNER", "OPEN"],
            &[vec!["ev\x1b[2Jil\nfake row".to_owned(), "1".to_owned()]],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    use rstest::rstest;

    use super::*;
    use crate::{
        attribution::{Kind, hierarchy::Hierarchy},
        model::{CgroupRow, Rows, StateCounts},
    };

    #[rstest]
    #[case(
        Hierarchy::V1Cpu,
        "/hadoop-yarn/container_e17_1410901177871_0001_01_000005",
        0
    )]
    #[case(Hierarchy::V2, "/system.slice/x.service", 42)]
    fn the_cgroup_table_says_which_hierarchy_keyed_each_row(
        #[case] hierarchy: Hierarchy,
        #[case] path: &str,
        #[case] id: u64,
    ) {
        let (kind, label) = crate::attribution::classify_cgroup(Some(path));
        let row = CgroupRow {
            hierarchy,
            path: Some(path.into()),
            id,
            kind,
            label: label.clone(),
            states: StateCounts {
                open: 4,
                established: 4,
                ..StateCounts::default()
            },
            opened: 6,
            closed: 2,
            failed: 0,
            rejected: 0,
            age: crate::model::Age::default(),
            rates: crate::verdict::Rates::default(),
            users: Vec::new(),
            pids: vec![7, 8],
        };
        let snap = Snapshot::for_test(Rows {
            cgroups: vec![row],
            ..Rows::default()
        });
        let mut out = Vec::new();
        text(&mut out, &snap).unwrap();
        let out = String::from_utf8(out).unwrap();
        let header = out
            .lines()
            .find(|l| l.starts_with("CGROUP"))
            .unwrap_or_else(|| panic!("{out}"));
        let cells: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(cells[..3], ["CGROUP", "HIERARCHY", "KIND"]);
        let line = out.lines().find(|l| l.starts_with(&label)).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                label.as_str(),
                hierarchy.as_str(),
                kind.as_str(),
                "2",
                "4",
                "0",
                "6",
                "2",
                "0"
            ]
        );
        assert!(kind != Kind::Process);
    }

    /// A one-shot look says how to see trends; a look over time does not.
    #[test]
    fn a_one_shot_look_points_at_duration() {
        let mut snap = Snapshot::for_test(Rows::default());
        let note = "give --duration (30s, 5m)";
        snap.observed_secs = 0.0;
        let mut out = Vec::new();
        text(&mut out, &snap).unwrap();
        assert!(String::from_utf8(out).unwrap().contains(note));
        snap.observed_secs = 30.0;
        let mut out = Vec::new();
        text(&mut out, &snap).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains(note));
    }
}
