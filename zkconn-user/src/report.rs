//! `zkconn report`: an incident report from the history store, for the window around a
//! time or around the last alarm: the budgets that reached their limit, who held them and
//! how that grew, who was refused, the YARN containers and applications involved (running
//! or finished), and a chart of usage against the limit. Written as Markdown, HTML (the
//! chart inline) and the chart alone as SVG.
//!
//! Owns: reading a window of samples into what the report says, and writing it. Must not:
//! read the store's files itself (that is [`crate::archive::Reader`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::archive::{Reader, local_clock, now_ms, parse_time_with, rfc3339};

/// Budgets drawn in the chart at most (the worst first).
const CHART_LINES: usize = 6;
/// Rows of a holders' or refused table at most.
const TABLE_ROWS: usize = 20;

/// What the report is centred on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Centre {
    /// `--around TIME`.
    Around(String),
    /// `--alarm`: the start of the last alarm the store holds.
    LastAlarm,
}

/// A counter's increase over samples, across a daemon's restart (which starts it again).
#[derive(Clone, Copy, Debug, Default)]
struct Increase {
    last: Option<u64>,
    total: u64,
}

impl Increase {
    /// `value` in the next sample; `counts_from_zero` when the row is new within the window
    /// (all it counted happened in it).
    fn add(&mut self, value: u64, counts_from_zero: bool) {
        self.total += match self.last {
            Some(last) if value >= last => value - last,
            // Smaller: the daemon restarted and counts again from zero.
            Some(_) => value,
            None if counts_from_zero => value,
            None => 0,
        };
        self.last = Some(value);
    }
}

/// A budget: this host's connections to a server from one address, or a client host's to
/// one of this host's listeners.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BudgetKey {
    /// (server, local IP as the server sees it).
    Host(String, String),
    /// (listener, client IP).
    Client(String, String),
}

impl BudgetKey {
    fn label(&self) -> String {
        match self {
            BudgetKey::Host(server, ip) => format!("{server} from {ip}"),
            BudgetKey::Client(listener, ip) => format!("client {ip} on {listener}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct BudgetTrack {
    /// (time, open, limit) per sample it had a row in.
    points: Vec<(i64, i64, u64)>,
    peak: Option<(i64, i64)>,
    first_at_limit: Option<i64>,
    rejected: Increase,
    critical: bool,
    warning: bool,
}

impl BudgetTrack {
    fn limit(&self) -> u64 {
        self.points.iter().map(|p| p.2).max().unwrap_or(0)
    }

    fn reached(&self) -> bool {
        let limit = self.limit();
        (limit > 0 && self.peak.is_some_and(|(_, open)| open >= limit as i64))
            || self.rejected.total > 0
            || self.critical
    }

    fn usage(&self) -> f64 {
        match (self.limit(), self.peak) {
            (0, _) | (_, None) => 0.0,
            (limit, Some((_, open))) => open as f64 / limit as f64,
        }
    }
}

/// A process over the window, by pid and label (a reused pid is another process).
#[derive(Clone, Debug, Default)]
struct ProcessTrack {
    kind: String,
    container: Option<String>,
    application: Option<String>,
    opened: Increase,
    rejected: Increase,
    /// Alive in the last sample it had a row in.
    alive: bool,
    /// Whether it had a row in the window's last sample.
    at_end: bool,
    refused_by: BTreeSet<String>,
}

/// What a window of samples says.
#[derive(Default)]
struct Window {
    host: Option<String>,
    samples: u64,
    budgets: BTreeMap<BudgetKey, BudgetTrack>,
    processes: BTreeMap<(u64, String), ProcessTrack>,
    first: Option<Value>,
    last: Option<Value>,
}

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

fn rows<'a>(doc: &'a Value, k: &str) -> &'a [Value] {
    doc[k].as_array().map(Vec::as_slice).unwrap_or_default()
}

impl Window {
    fn add(&mut self, at_ms: i64, doc: Value) {
        let first = self.samples == 0;
        self.samples += 1;
        if self.host.is_none() {
            self.host = doc["host"].as_str().map(str::to_owned);
        }
        for (section, host_side) in [("servers", true), ("clients", false)] {
            for row in rows(&doc, section) {
                let key = if host_side {
                    BudgetKey::Host(text(row, "server"), text(row, "local_ip"))
                } else {
                    BudgetKey::Client(text(row, "listener"), text(row, "client_ip"))
                };
                let new = !self.budgets.contains_key(&key);
                let b = self.budgets.entry(key).or_default();
                let open = row["open"].as_i64().unwrap_or(0);
                let limit = num(row, "limit");
                b.points.push((at_ms, open, limit));
                if b.peak.is_none_or(|(_, p)| open > p) {
                    b.peak = Some((at_ms, open));
                }
                if limit > 0 && open >= limit as i64 && b.first_at_limit.is_none() {
                    b.first_at_limit = Some(at_ms);
                }
                b.rejected.add(num(row, "rejected"), new && !first);
                match row["alarm"].as_str() {
                    Some("critical") => b.critical = true,
                    Some("warning") => b.warning = true,
                    _ => {}
                }
            }
        }
        let mut seen = BTreeSet::new();
        for row in rows(&doc, "processes") {
            let key = (num(row, "pid"), text(row, "label"));
            let new = !self.processes.contains_key(&key);
            let p = self.processes.entry(key.clone()).or_default();
            p.kind = text(row, "kind");
            p.container = row["yarn_container"].as_str().map(str::to_owned);
            p.application = row["yarn_application"].as_str().map(str::to_owned);
            p.opened.add(num(row, "opened"), new && !first);
            p.rejected.add(num(row, "rejected"), new && !first);
            p.alive = row["alive"].as_bool() != Some(false);
            seen.insert(key);
        }
        for (key, p) in &mut self.processes {
            p.at_end = seen.contains(key);
        }
        for row in rows(&doc, "victims") {
            let key = (num(row, "pid"), text(row, "label"));
            if let Some(p) = self.processes.get_mut(&key) {
                for by in rows(row, "refused_at") {
                    p.refused_by.insert(format!(
                        "{} from {}",
                        text(by, "server"),
                        text(by, "local_ip")
                    ));
                }
            }
        }
        if first {
            self.first = Some(doc.clone());
        }
        self.last = Some(doc);
    }
}

/// A process's open connections to one budget in `doc` (0 when it has none there).
fn open_in(doc: &Value, pid: u64, label: &str, server: &str, local_ip: &str) -> u64 {
    rows(doc, "processes")
        .iter()
        .filter(|p| num(p, "pid") == pid && text(p, "label") == label)
        .flat_map(|p| rows(p, "servers"))
        .filter(|s| text(s, "server") == server && text(s, "local_ip") == local_ip)
        .map(|s| num(s, "open"))
        .sum()
}

/// The time the last alarm in the store began: the first of the run of samples, ending in
/// the last sample with a critical (else a warning) alarm, in which some budget alarmed;
/// with the budget and when that run ended.
fn last_alarm(reader: &Reader) -> anyhow::Result<(i64, i64, String, &'static str)> {
    let span = reader.span()?;
    let (Some(first), Some(last)) = (span.first_ms, span.last_ms) else {
        bail!("--alarm: the store holds no sample yet");
    };
    // (start of the current run, its last sample, the budget) per level.
    let mut runs: [Option<(i64, i64, String)>; 2] = [None, None];
    let mut open: [Option<i64>; 2] = [None, None];
    reader.each(first, last, |at_ms, doc| {
        for (level, name) in [(0, "critical"), (1, "warning")] {
            let alarmed = ["servers", "clients"]
                .iter()
                .flat_map(|s| rows(&doc, s))
                .find(|r| {
                    let a = r["alarm"].as_str();
                    a == Some(name) || (level == 1 && a == Some("critical"))
                })
                .map(|r| {
                    if r.get("server").is_some() {
                        BudgetKey::Host(text(r, "server"), text(r, "local_ip"))
                    } else {
                        BudgetKey::Client(text(r, "listener"), text(r, "client_ip"))
                    }
                    .label()
                });
            match alarmed {
                Some(budget) => {
                    let start = *open[level].get_or_insert(at_ms);
                    runs[level] = Some((start, at_ms, budget));
                }
                None => open[level] = None,
            }
        }
        Ok(())
    })?;
    for (level, name) in [(0, "critical"), (1, "warning")] {
        if let Some((start, end, budget)) = runs[level].take() {
            return Ok((start, end, budget, name));
        }
    }
    bail!(
        "--alarm: no alarm in the store: no budget was at --warn or over from {} to {} ({} \
         sample{}); give --around TIME",
        rfc3339(first),
        rfc3339(last),
        span.samples,
        if span.samples == 1 { "" } else { "s" }
    )
}

/// A block of the report, written as Markdown and as HTML.
enum Block {
    Heading(String),
    /// Plain text (escaped when written).
    Para(String),
    Table(Vec<&'static str>, Vec<Vec<String>>),
    Chart,
}

/// `zkconn report`: reads the window, writes `report.md`, `report.html` and `usage.svg`
/// into `out_dir`, and says where on `out`.
pub fn run(
    out: &mut impl Write,
    dir: &Path,
    centre: &Centre,
    window: Duration,
    out_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let reader = Reader::open(dir)?;
    let now = now_ms();
    let (centre_ms, why) = match centre {
        Centre::Around(t) => (
            parse_time_with(t, now, &local_clock).map_err(|e| anyhow!("--around {e}"))?,
            "the time asked (--around)".to_owned(),
        ),
        Centre::LastAlarm => {
            let (start, end, budget, level) = last_alarm(&reader)?;
            (
                start,
                format!(
                    "the last alarm in the store: {budget} went {level} at {} ({level} in \
                     every sample to {})",
                    rfc3339(start),
                    rfc3339(end)
                ),
            )
        }
    };
    let half = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let (from_ms, to_ms) = (
        centre_ms.saturating_sub(half),
        centre_ms.saturating_add(half),
    );
    let mut w = Window::default();
    let walked = reader.each(from_ms, to_ms, |at_ms, doc| {
        w.add(at_ms, doc);
        Ok(())
    })?;
    let blocks = blocks(&reader, &w, &walked, centre_ms, from_ms, to_ms, &why, dir)?;
    let svg = chart(&w, centre_ms, from_ms, to_ms)?;
    let out_dir = out_dir.unwrap_or_else(|| {
        PathBuf::from(format!(
            "zkconn-report-{}",
            rfc3339(centre_ms).replace([':', '-'], "")
        ))
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("--out {}: cannot make the directory", out_dir.display()))?;
    let write = |name: &str, body: &str| -> anyhow::Result<PathBuf> {
        let path = out_dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    let svg_path = write("usage.svg", &svg)?;
    let md = write("report.md", &markdown(&blocks))?;
    let html = write("report.html", &html(&blocks, &svg, &title(&w, centre_ms)))?;
    writeln!(
        out,
        "wrote {}, {} and {}",
        md.display(),
        html.display(),
        svg_path.display()
    )?;
    Ok(())
}

fn title(w: &Window, centre_ms: i64) -> String {
    format!(
        "zkconn incident report: {} around {}",
        w.host.as_deref().unwrap_or("?"),
        rfc3339(centre_ms)
    )
}

#[allow(clippy::too_many_arguments)]
fn blocks(
    reader: &Reader,
    w: &Window,
    walked: &crate::archive::Walked,
    centre_ms: i64,
    from_ms: i64,
    to_ms: i64,
    why: &str,
    dir: &Path,
) -> anyhow::Result<Vec<Block>> {
    let mut b = vec![
        Block::Heading(title(w, centre_ms)),
        Block::Para(format!(
            "From {} to {}: {} sample{} from the history store {}, centred on {why}.",
            rfc3339(from_ms),
            rfc3339(to_ms),
            w.samples,
            if w.samples == 1 { "" } else { "s" },
            dir.display()
        )),
        Block::Chart,
    ];
    let mut reached: Vec<(&BudgetKey, &BudgetTrack)> =
        w.budgets.iter().filter(|(_, t)| t.reached()).collect();
    reached.sort_by(|a, b| b.1.usage().total_cmp(&a.1.usage()).then(a.0.cmp(b.0)));
    b.push(Block::Heading("Budgets that reached their limit".into()));
    if reached.is_empty() {
        let busiest = w
            .budgets
            .iter()
            .max_by(|a, b| a.1.usage().total_cmp(&b.1.usage()))
            .map_or(String::new(), |(k, t)| {
                format!(
                    " The busiest: {}, {} of {} at its peak.",
                    k.label(),
                    t.peak.map_or(0, |p| p.1),
                    t.limit()
                )
            });
        b.push(Block::Para(format!(
            "None of the {} budgets reached its limit, none was refused.{busiest}",
            w.budgets.len()
        )));
    } else {
        b.push(Block::Table(
            vec![
                "budget",
                "limit",
                "peak",
                "peak at",
                "first at the limit",
                "refusals in the window",
                "alarm",
            ],
            reached
                .iter()
                .map(|(k, t)| {
                    vec![
                        k.label(),
                        match t.limit() {
                            0 => "unlimited".to_owned(),
                            l => l.to_string(),
                        },
                        t.peak.map_or(0, |p| p.1).to_string(),
                        t.peak.map_or_else(String::new, |p| rfc3339(p.0)),
                        t.first_at_limit.map_or("-".to_owned(), rfc3339),
                        t.rejected.total.to_string(),
                        if t.critical {
                            "critical"
                        } else if t.warning {
                            "warning"
                        } else {
                            "ok"
                        }
                        .to_owned(),
                    ]
                })
                .collect(),
        ));
    }
    let mut involved: BTreeSet<(String, String)> = BTreeSet::new();
    let mut peak_doc_of_worst = None;
    for (key, track) in &reached {
        let BudgetKey::Host(server, ip) = key else {
            let BudgetKey::Client(listener, client) = key else {
                continue;
            };
            let own = reached.iter().find(|(k, _)| {
                matches!(k, BudgetKey::Host(s, l) if crate::series::same_endpoint(s, listener) && l == client)
            });
            b.push(Block::Para(match own {
                Some((k, _)) => format!(
                    "{}: this host is its own client there; its holders are those of {}.",
                    key.label(),
                    k.label()
                ),
                None => format!(
                    "{}: its holders are processes of that host, which zkconn there names \
                     (zkconn report on {client}).",
                    key.label()
                ),
            }));
            continue;
        };
        let Some((peak_ms, _)) = track.peak else {
            continue;
        };
        let doc = reader.at(peak_ms)?.doc;
        let first = w.first.as_ref().unwrap_or(&Value::Null);
        let mut holders: Vec<(u64, &Value)> = rows(&doc, "processes")
            .iter()
            .map(|p| {
                (
                    open_in(&doc, num(p, "pid"), &text(p, "label"), server, ip),
                    p,
                )
            })
            .filter(|(open, _)| *open > 0)
            .collect();
        holders.sort_by(|a, b| b.0.cmp(&a.0).then(num(a.1, "pid").cmp(&num(b.1, "pid"))));
        b.push(Block::Heading(format!(
            "Who held {} at its peak ({})",
            key.label(),
            rfc3339(peak_ms)
        )));
        let total = holders.len();
        b.push(Block::Table(
            vec![
                "pid",
                "owner",
                "kind",
                "YARN container",
                "application",
                "open here at the peak",
                "at the window's start",
                "growth",
                "opened in the window",
                "at the window's end",
            ],
            holders
                .iter()
                .take(TABLE_ROWS)
                .map(|(open, p)| {
                    let pid = num(p, "pid");
                    let label = text(p, "label");
                    let before = open_in(first, pid, &label, server, ip);
                    let track = w.processes.get(&(pid, label.clone()));
                    if let Some(c) = p["yarn_container"].as_str() {
                        involved.insert((c.to_owned(), text(p, "yarn_application")));
                    }
                    vec![
                        pid.to_string(),
                        label,
                        text(p, "kind"),
                        text(p, "yarn_container"),
                        text(p, "yarn_application"),
                        open.to_string(),
                        before.to_string(),
                        format!("{:+}", *open as i64 - before as i64),
                        track.map_or(0, |t| t.opened.total).to_string(),
                        end_state(track),
                    ]
                })
                .collect(),
        ));
        if total > TABLE_ROWS {
            b.push(Block::Para(format!(
                "{} more processes held connections there.",
                total - TABLE_ROWS
            )));
        }
        peak_doc_of_worst.get_or_insert(doc);
    }
    let mut refused: Vec<(&(u64, String), &ProcessTrack)> = w
        .processes
        .iter()
        .filter(|(_, t)| t.rejected.total > 0)
        .collect();
    refused.sort_by(|a, b| {
        b.1.rejected
            .total
            .cmp(&a.1.rejected.total)
            .then(a.0.cmp(b.0))
    });
    b.push(Block::Heading("Who was refused".into()));
    if refused.is_empty() {
        b.push(Block::Para(
            "No process of this host was refused in the window.".into(),
        ));
    } else {
        b.push(Block::Table(
            vec![
                "pid",
                "owner",
                "kind",
                "YARN container",
                "refusals in the window",
                "refused by",
                "at the window's end",
            ],
            refused
                .iter()
                .take(TABLE_ROWS)
                .map(|((pid, label), t)| {
                    if let Some(c) = &t.container {
                        involved.insert((c.clone(), t.application.clone().unwrap_or_default()));
                    }
                    vec![
                        pid.to_string(),
                        label.clone(),
                        t.kind.clone(),
                        t.container.clone().unwrap_or_default(),
                        t.rejected.total.to_string(),
                        t.refused_by.iter().cloned().collect::<Vec<_>>().join(", "),
                        end_state(Some(t)),
                    ]
                })
                .collect(),
        ));
    }
    b.push(Block::Heading(
        "YARN containers and applications involved".into(),
    ));
    if involved.is_empty() {
        b.push(Block::Para(
            "No YARN container held a budget at its limit or was refused.".into(),
        ));
    } else {
        let last = w.last.as_ref().unwrap_or(&Value::Null);
        b.push(Block::Table(
            vec!["YARN container", "application", "at the window's end"],
            involved
                .iter()
                .map(|(c, app)| {
                    let running = rows(last, "processes").iter().any(|p| {
                        p["yarn_container"].as_str() == Some(c.as_str())
                            && p["alive"].as_bool() != Some(false)
                    });
                    vec![
                        c.clone(),
                        app.clone(),
                        if running { "running" } else { "finished" }.to_owned(),
                    ]
                })
                .collect(),
        ));
    }
    let suspects_doc = peak_doc_of_worst.or_else(|| reader.at(centre_ms).ok().map(|s| s.doc));
    if let Some(doc) = suspects_doc {
        let suspects = rows(&doc, "suspects");
        b.push(Block::Heading(format!(
            "Leak suspects then ({})",
            text(&doc, "time")
        )));
        if suspects.is_empty() {
            b.push(Block::Para("None.".into()));
        } else {
            b.push(Block::Table(
                vec!["score", "suspect", "open", "reason"],
                suspects
                    .iter()
                    .take(TABLE_ROWS)
                    .map(|s| {
                        vec![
                            s["score"]
                                .as_f64()
                                .map_or(String::new(), |x| format!("{x:.1}")),
                            text(s, "label"),
                            text(s, "open"),
                            text(s, "reason"),
                        ]
                    })
                    .collect(),
            ));
        }
    }
    if walked.span.torn + walked.span.corrupt > 0 || !walked.undecodable.is_empty() {
        b.push(Block::Heading("What the store could not give".into()));
        let mut lines = vec![format!(
            "{} segment(s) end in a torn or corrupt record, {} could not be read at all.",
            walked.span.torn, walked.span.corrupt
        )];
        lines.extend(walked.undecodable.iter().map(|u| format!("Skipped {u}.")));
        b.push(Block::Para(lines.join(" ")));
    }
    Ok(b)
}

/// How a process ended the window: `running`, `exited` (seen to exit), or without a row
/// while it was last seen alive (zkconn restarted, or retired its row).
fn end_state(track: Option<&ProcessTrack>) -> String {
    match track {
        Some(t) if t.alive && t.at_end => "running",
        Some(t) if !t.alive => "exited",
        _ => "no row (zkconn restarted)",
    }
    .to_owned()
}

/// `text` as Markdown shows it literally: made printable, its markup characters escaped
/// (an underscore inside a word, as in a container id, marks nothing and is kept).
fn md_text(text: &str) -> String {
    let chars: Vec<char> = crate::output::printable(text).chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let inside_word = i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if matches!(
            c,
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '~' | '&' | '#' | '!'
        ) || (c == '_' && !inside_word)
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn markdown(blocks: &[Block]) -> String {
    let mut s = String::new();
    let mut first = true;
    for block in blocks {
        match block {
            Block::Heading(h) => {
                let level = if first { "#" } else { "##" };
                first = false;
                let _ = writeln!(s, "{level} {}\n", md_text(h));
            }
            Block::Para(p) => {
                let _ = writeln!(s, "{}\n", md_text(p));
            }
            Block::Chart => {
                s.push_str("![usage against the limit](usage.svg)\n\n");
            }
            Block::Table(head, rows) => {
                let _ = writeln!(s, "| {} |", head.join(" | "));
                let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|c| md_text(c)).collect();
                    let _ = writeln!(s, "| {} |", cells.join(" | "));
                }
                s.push('\n');
            }
        }
    }
    s
}

fn html_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in crate::output::printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(blocks: &[Block], svg: &str, title: &str) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:2px 6px;text-align:left}}</style>\n</head><body>\n",
        html_text(title)
    );
    let mut first = true;
    for block in blocks {
        match block {
            Block::Heading(h) => {
                let tag = if first { "h1" } else { "h2" };
                first = false;
                let _ = writeln!(s, "<{tag}>{}</{tag}>", html_text(h));
            }
            Block::Para(p) => {
                let _ = writeln!(s, "<p>{}</p>", html_text(p));
            }
            Block::Chart => {
                // The chart's own text is escaped by its drawing library; budgets are
                // addresses.
                let _ = writeln!(
                    s,
                    "<div>{}</div>",
                    svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
                );
            }
            Block::Table(head, rows) => {
                s.push_str("<table>\n<tr>");
                for h in head {
                    let _ = write!(s, "<th>{}</th>", html_text(h));
                }
                s.push_str("</tr>\n");
                for row in rows {
                    s.push_str("<tr>");
                    for c in row {
                        let _ = write!(s, "<td>{}</td>", html_text(c));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// A label for the chart: only the characters of an address (a budget is one).
fn chart_label(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || " .:[]%-".contains(*c))
        .collect()
}

/// The clock time of `ms`, UTC, for the chart's axis.
fn clock(ms: i64) -> String {
    let r = rfc3339(ms);
    r.get(11..19).map_or(r.clone(), str::to_owned)
}

/// Usage of the worst budgets against their limits over the window, as SVG.
fn chart(w: &Window, centre_ms: i64, from_ms: i64, to_ms: i64) -> anyhow::Result<String> {
    use plotters::prelude::*;
    let mut budgets: Vec<(&BudgetKey, &BudgetTrack)> = w.budgets.iter().collect();
    budgets.sort_by(|a, b| {
        b.1.reached()
            .cmp(&a.1.reached())
            .then(b.1.usage().total_cmp(&a.1.usage()))
            .then(a.0.cmp(b.0))
    });
    // Those that reached their limit, else the busiest three; never one that held nothing.
    let reached = budgets.iter().filter(|(_, t)| t.reached()).count();
    budgets.truncate(if reached > 0 { reached } else { 3 }.min(CHART_LINES));
    budgets.retain(|(_, t)| t.peak.is_some_and(|p| p.1 > 0));
    // The time the samples cover (and the centre), not the whole window asked.
    let times = budgets
        .iter()
        .flat_map(|(_, t)| t.points.iter().map(|p| p.0));
    let from_ms = times.clone().min().unwrap_or(from_ms).min(centre_ms);
    let to_ms = times.max().unwrap_or(to_ms).max(centre_ms);
    let y_max = budgets
        .iter()
        .flat_map(|(_, t)| t.points.iter().map(|p| p.1.max(p.2 as i64)))
        .max()
        .unwrap_or(1)
        .max(1);
    let y_top = y_max + y_max / 10 + 1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the chart: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Open connections against the limit (dashed), UTC",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(from_ms..to_ms.max(from_ms + 1), 0i64..y_top)
            .map_err(|e| err(&e))?;
        let fmt = |x: &i64| clock(*x);
        chart
            .configure_mesh()
            .x_labels(7)
            .x_label_formatter(&fmt)
            .y_desc("connections")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                [(centre_ms, 0), (centre_ms, y_top)],
                RED.mix(0.5).stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
        for (i, (key, track)) in budgets.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    track.points.iter().map(|p| (p.0, p.1)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(chart_label(&key.label()))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            if track.limit() > 0 {
                chart
                    .draw_series(DashedLineSeries::new(
                        track.points.iter().map(|p| (p.0, p.2 as i64)),
                        6,
                        4,
                        colour.stroke_width(1),
                    ))
                    .map_err(|e| err(&e))?;
            }
        }
        if !budgets.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_increase_survives_a_restart() {
        let mut i = Increase::default();
        for v in [5, 7, 7, 2, 4] {
            i.add(v, false);
        }
        // +2, +0, restart (2), +2.
        assert_eq!(i.total, 6);
        let mut new = Increase::default();
        new.add(3, true);
        assert_eq!(
            new.total, 3,
            "a row new within the window counted it all there"
        );
    }

    /// Hostile names stay text: no markup, no table cell broken, no tag.
    #[test]
    fn names_cannot_inject_markup() {
        let blocks = vec![Block::Table(
            vec!["owner"],
            vec![vec!["a|b <script>x</script> [l](http://e) \n# h".into()]],
        )];
        let md = markdown(&blocks);
        let row = md.lines().nth(2).unwrap();
        assert_eq!(row.matches(" | ").count(), 0, "{row}");
        assert!(row.contains("a\\|b \\<script\\>"), "{row}");
        assert!(row.contains("\\[l\\](http://e)"), "{row}");
        assert_eq!(md.lines().count(), 4, "{md}");
        assert_eq!(md_text("container_e1_2 _x_"), "container_e1_2 \\_x\\_");
        let html = html(&blocks, "<svg/>", "t");
        assert!(
            html.contains("a|b &lt;script&gt;x&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
    }

    /// The window's reading: a budget at its limit, who grew into it, who was refused.
    #[test]
    fn a_window_finds_the_budget_its_holder_and_the_refused() {
        let sample = |open: u64, rejected: u64, alive: bool| {
            serde_json::json!({
                "host": "w7",
                "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": open + 1,
                             "limit": 10, "rejected": rejected, "alarm":
                             if open + 1 >= 10 { "critical" } else { "ok" }}],
                "processes": [
                    {"pid": 7, "label": "leaker", "kind": "yarn", "alive": alive,
                     "yarn_container": "container_1", "opened": open, "rejected": 0,
                     "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": open}]},
                    {"pid": 8, "label": "victim", "kind": "hbase", "alive": true,
                     "opened": 1 + rejected, "rejected": rejected,
                     "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": 1}]}
                ],
                "victims": [{"pid": 8, "label": "victim",
                             "refused_at": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9"}]}]
            })
        };
        let mut w = Window::default();
        w.add(0, sample(2, 0, true));
        w.add(10_000, sample(9, 3, true));
        w.add(20_000, sample(9, 5, false));
        let key = BudgetKey::Host("10.0.0.1:2181".into(), "10.0.0.9".into());
        let b = &w.budgets[&key];
        assert!(b.reached());
        assert_eq!(b.peak, Some((10_000, 10)));
        assert_eq!(b.first_at_limit, Some(10_000));
        assert_eq!(b.rejected.total, 5);
        let leaker = &w.processes[&(7, "leaker".to_owned())];
        assert_eq!(leaker.opened.total, 7);
        assert!(!leaker.alive && leaker.at_end);
        assert_eq!(end_state(Some(leaker)), "exited");
        let victim = &w.processes[&(8, "victim".to_owned())];
        assert_eq!(victim.rejected.total, 5);
        assert_eq!(
            victim.refused_by.iter().collect::<Vec<_>>(),
            ["10.0.0.1:2181 from 10.0.0.9"]
        );
        let svg = chart(&w, 10_000, 0, 20_000).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("10.0.0.1:2181 from 10.0.0.9"), "the legend");
    }
}
