//! `zkconn history --from/--to`: one process, container, application, service, server
//! budget or client host over a time range, read from the history store, a line per
//! sample.
//!
//! Owns: choosing a subject's rows in a stored document and printing them over time. Must
//! not: read the store's files itself (that is [`crate::archive::Reader`]).

use std::{io::Write, net::IpAddr, path::Path};

use anyhow::anyhow;
use serde_json::Value;

use crate::{
    archive::{Reader, local_clock, now_ms, parse_time_with, rfc3339},
    output::{Cell, table},
    targets::canonical_ip,
};

/// What a series follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Process(u32),
    Container(String),
    Application(String),
    Service(String),
    /// A ZooKeeper endpoint this host connects to: one line per budget (local IP).
    Server(String),
    /// A client host of this host's listeners: one line per listener.
    Client(String),
}

impl Subject {
    /// The one `history --from` was given, if any.
    pub fn of_args(a: &crate::cli::SubjectArgs) -> Option<Self> {
        a.process
            .map(Subject::Process)
            .or_else(|| a.container.clone().map(Subject::Container))
            .or_else(|| a.application.clone().map(Subject::Application))
            .or_else(|| a.service.clone().map(Subject::Service))
            .or_else(|| a.server.clone().map(Subject::Server))
            .or_else(|| a.client.clone().map(Subject::Client))
    }

    /// The document's section its rows are in.
    pub fn section(&self) -> &'static str {
        match self {
            Subject::Process(_) => "processes",
            Subject::Container(_) => "containers",
            Subject::Application(_) => "applications",
            Subject::Service(_) => "services",
            Subject::Server(_) => "servers",
            Subject::Client(_) => "clients",
        }
    }

    /// What it is, in a word.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Process(_) => "process",
            Subject::Container(_) => "container",
            Subject::Application(_) => "application",
            Subject::Service(_) => "service",
            Subject::Server(_) => "server",
            Subject::Client(_) => "client",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Subject::Process(pid) => pid.to_string(),
            Subject::Container(s)
            | Subject::Application(s)
            | Subject::Service(s)
            | Subject::Server(s)
            | Subject::Client(s) => s.clone(),
        }
    }

    /// Whether `row` (of [`Self::section`]) is this subject's.
    pub fn matches(&self, row: &Value) -> bool {
        let text = |k: &str| row[k].as_str().unwrap_or_default();
        match self {
            Subject::Process(pid) => row["pid"].as_u64() == Some(u64::from(*pid)),
            Subject::Container(id) => text("container") == id,
            Subject::Application(id) => text("application") == id,
            Subject::Service(name) => text("service") == name,
            Subject::Server(addr) => same_endpoint(text("server"), addr),
            Subject::Client(ip) => match (text("client_ip").parse::<IpAddr>(), ip.parse()) {
                (Ok(a), Ok(b)) => canonical_ip(a) == canonical_ip(b),
                _ => text("client_ip") == ip,
            },
        }
    }

    /// The column telling apart several rows of one subject in one sample, if it has them.
    fn part(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Subject::Server(_) => Some(("LOCAL IP", "local_ip")),
            Subject::Client(_) => Some(("LISTENER", "listener")),
            _ => None,
        }
    }
}

/// `a` and `b` name the same `ip:port` (`[::ffff:10.0.0.1]:2181` is `10.0.0.1:2181`).
pub fn same_endpoint(a: &str, b: &str) -> bool {
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(x), Ok(y)) => canonical_ip(x.ip()) == canonical_ip(y.ip()) && x.port() == y.port(),
        _ => a == b,
    }
}

/// One sample of a series: its time and the subject's rows then (none when it had none).
#[derive(Debug)]
pub struct Point {
    pub at_ms: i64,
    pub rows: Vec<Value>,
}

/// The subject's rows in every sample from `from_ms` to `to_ms`, and what the store said.
pub fn collect(
    reader: &Reader,
    subject: &Subject,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(Vec<Point>, crate::archive::Walked, Option<String>)> {
    let mut points = Vec::new();
    let mut host = None;
    let walked = reader.each(from_ms, to_ms, |at_ms, doc| {
        if host.is_none() {
            host = doc["host"].as_str().map(str::to_owned);
        }
        let rows = doc[subject.section()]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| subject.matches(r))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        points.push(Point { at_ms, rows });
        Ok(())
    })?;
    Ok((points, walked, host))
}

/// `zkconn history --from FROM --to TO --<subject> ID`: the series as a table or JSON.
pub fn show(
    out: &mut impl Write,
    dir: &Path,
    subject: &Subject,
    from: &str,
    to: &str,
    json: bool,
) -> anyhow::Result<()> {
    let now = now_ms();
    let from_ms = parse_time_with(from, now, &local_clock).map_err(|e| anyhow!("--from {e}"))?;
    let to_ms = parse_time_with(to, now, &local_clock).map_err(|e| anyhow!("--to {e}"))?;
    if from_ms > to_ms {
        anyhow::bail!(
            "--from {} is after --to {}: give the earlier time first",
            rfc3339(from_ms),
            rfc3339(to_ms)
        );
    }
    match subject {
        Subject::Server(addr) if addr.parse::<std::net::SocketAddr>().is_err() => {
            anyhow::bail!(
                "--server {addr:?} is not IP:PORT (10.0.0.1:2181, [2001:db8::1]:2181): a budget \
                 is a server's address and port"
            )
        }
        Subject::Client(ip) if ip.parse::<IpAddr>().is_err() => {
            anyhow::bail!("--client {ip:?} is not an IP address (10.0.0.9)")
        }
        _ => {}
    }
    let reader = Reader::open(dir)?;
    let (points, walked, host) = collect(&reader, subject, from_ms, to_ms)?;
    for why in &walked.undecodable {
        tracing::warn!("skipped {why}");
    }
    let present = points.iter().filter(|p| !p.rows.is_empty()).count();
    if json {
        let doc = serde_json::json!({
            "schema": "zkconn.history-series/v1",
            "host": host,
            "store": dir.display().to_string(),
            "subject": {"kind": subject.kind(), "id": subject.id()},
            "from": rfc3339(from_ms),
            "to": rfc3339(to_ms),
            "samples": points.iter().map(|p| serde_json::json!({
                "time": rfc3339(p.at_ms),
                "rows": p.rows,
            })).collect::<Vec<_>>(),
            "torn_segments": walked.span.torn,
            "unreadable_segments": walked.span.corrupt,
            "undecodable": walked.undecodable,
        });
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "zkconn on {}: {} {} from {} to {} ({} sample{} in the history store {}, the {} in {})",
        crate::output::printable(host.as_deref().unwrap_or("?")),
        subject.kind(),
        crate::output::printable(&subject.id()),
        rfc3339(from_ms),
        rfc3339(to_ms),
        points.len(),
        if points.len() == 1 { "" } else { "s" },
        dir.display(),
        subject.kind(),
        present,
    )?;
    if let Some(label) = points
        .iter()
        .flat_map(|p| &p.rows)
        .find_map(|r| r["label"].as_str())
    {
        writeln!(out, "{}", crate::output::printable(label))?;
    }
    writeln!(out)?;
    let (header, rows) = lines(subject, &points);
    table(out, &header, &rows)?;
    out.flush()?;
    Ok(())
}

/// The table of a series: a line per sample and row; a run of samples without the subject
/// is one line saying so.
fn lines(subject: &Subject, points: &[Point]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    use Cell::{Alive, Percent, Plain, Upper};
    let mut columns: Vec<(&'static str, Cell)> = Vec::new();
    if let Some((head, key)) = subject.part() {
        columns.push((head, Plain(key)));
    }
    if let Subject::Process(_) = subject {
        // A pid reused within the range: the rows of each process, told apart.
        columns.push(("INSTANCE", Plain("instance")));
        columns.push(("OWNER", Plain("label")));
    }
    columns.extend([
        ("OPEN", Plain("open")),
        ("CLOSE_WAIT", Plain("close_wait")),
        ("OPENED", Plain("opened")),
        ("CLOSED", Plain("closed")),
        ("REJECTED", Plain("rejected")),
        ("GROWTH/MIN", Plain("growth_per_min")),
    ]);
    match subject {
        Subject::Server(_) | Subject::Client(_) => columns.extend([
            ("LIMIT", Plain("limit")),
            ("USE", Percent("usage")),
            ("ALARM", Upper("alarm")),
        ]),
        Subject::Process(_) => columns.push(("ALIVE", Alive)),
        _ => {}
    }
    let mut header = vec!["TIME"];
    header.extend(columns.iter().map(|(h, _)| *h));
    let mut rows = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let p = &points[i];
        if p.rows.is_empty() {
            let mut j = i;
            while j + 1 < points.len() && points[j + 1].rows.is_empty() {
                j += 1;
            }
            // In the last column, which is not padded: the others keep their widths.
            let mut line = vec![rfc3339(p.at_ms)];
            line.extend(std::iter::repeat_n(String::new(), columns.len() - 1));
            let n = j - i + 1;
            line.push(if n == 1 {
                "(no row)".to_owned()
            } else {
                format!("(no row in {n} samples, to {})", rfc3339(points[j].at_ms))
            });
            rows.push(line);
            i = j + 1;
            continue;
        }
        for r in &p.rows {
            let mut line = vec![rfc3339(p.at_ms)];
            line.extend(columns.iter().map(|(_, c)| c.of(r)));
            rows.push(line);
        }
        i += 1;
    }
    (header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_find_their_rows() {
        let server = Subject::Server("10.0.0.1:2181".into());
        assert!(server.matches(&serde_json::json!({"server": "[::ffff:10.0.0.1]:2181"})));
        assert!(!server.matches(&serde_json::json!({"server": "10.0.0.1:2182"})));
        let client = Subject::Client("::ffff:10.0.0.9".into());
        assert!(client.matches(&serde_json::json!({"client_ip": "10.0.0.9"})));
        let pid = Subject::Process(42);
        assert!(pid.matches(&serde_json::json!({"pid": 42})));
        assert!(!pid.matches(&serde_json::json!({"pid": "42"})));
        let c = Subject::Container("container_e1_1_0001_01_000002".into());
        assert!(c.matches(&serde_json::json!({"container": "container_e1_1_0001_01_000002"})));
    }

    /// A run of samples without the subject is one line; each budget of a server is a line.
    #[test]
    fn absent_runs_fold_and_budgets_split() {
        let row = |ip: &str, open: u64| {
            serde_json::json!({"server": "10.0.0.1:2181", "local_ip": ip, "open": open,
                               "limit": 60, "usage": open as f64 / 60.0, "alarm": "ok"})
        };
        let points = vec![
            Point {
                at_ms: 0,
                rows: vec![row("10.0.0.9", 3), row("10.0.0.10", 1)],
            },
            Point {
                at_ms: 10_000,
                rows: vec![],
            },
            Point {
                at_ms: 20_000,
                rows: vec![],
            },
            Point {
                at_ms: 30_000,
                rows: vec![row("10.0.0.9", 60)],
            },
        ];
        let (header, rows) = lines(&Subject::Server("10.0.0.1:2181".into()), &points);
        assert_eq!(header[..3], ["TIME", "LOCAL IP", "OPEN"]);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1][1..3], ["10.0.0.10", "1"]);
        assert_eq!(
            rows[2].last().map(String::as_str),
            Some("(no row in 2 samples, to 1970-01-01T00:00:20Z)")
        );
        assert_eq!(rows[2].len(), header.len());
        assert_eq!(rows[3][2], "60");
        assert_eq!(rows[3][9], "100%");
    }
}
