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

/// The daemon runs a window's samples come from. A run is known by when it started (a
/// sample's time less its `observed_secs`, followed as the two clocks drift apart). A
/// clock stepped while a daemon ran makes its later samples look like another run's: such
/// a run goes on from the one before (it observed longer than the sample before it did),
/// so its counters are not taken for new ones, and only the increase between the two
/// samples around the step is lost. A document without `observed_secs` is of one unknown
/// run.
#[derive(Clone, Debug, Default)]
struct Runs {
    /// (estimated start in ms, samples of it seen so far, whether it started afresh within
    /// the window).
    runs: Vec<(i64, u64, bool)>,
    /// Samples seen without `observed_secs`.
    unknown: u64,
    /// `observed_secs` of the sample seen last.
    last_observed: Option<f64>,
}

/// Samples of one run have starts this close (the two clocks are read together; they drift
/// apart by at most milliseconds a minute).
const SAME_RUN_MS: i64 = 5_000;

/// The run of documents without `observed_secs`.
const UNKNOWN_RUN: usize = usize::MAX;

/// Where a sample stands: its run, its place in that run's samples (from 1), and whether
/// its run started within the window (a daemon restarted in it: its counters count from
/// zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    run: usize,
    seq: u64,
    run_started_in_window: bool,
}

impl Runs {
    fn place(&mut self, at_ms: i64, doc: &Value, window_from_ms: i64) -> Place {
        let Some(observed) = doc["observed_secs"].as_f64().filter(|o| o.is_finite()) else {
            self.unknown += 1;
            return Place {
                run: UNKNOWN_RUN,
                seq: self.unknown,
                run_started_in_window: false,
            };
        };
        let start = at_ms - (observed * 1000.0) as i64;
        let run = match self
            .runs
            .iter()
            .position(|(s, ..)| (s - start).abs() <= SAME_RUN_MS)
        {
            Some(i) => {
                self.runs[i].0 = start;
                i
            }
            None => {
                // Afresh: it observed less than the sample before it (a restart), and
                // began within the window. Else a clock step of a run going on.
                let fresh =
                    self.last_observed.is_none_or(|l| observed < l) && start >= window_from_ms;
                self.runs.push((start, 0, fresh));
                self.runs.len() - 1
            }
        };
        self.last_observed = Some(observed);
        self.runs[run].1 += 1;
        Place {
            run,
            seq: self.runs[run].1,
            run_started_in_window: self.runs[run].2,
        }
    }
}

/// A counter's increase over a window's samples, run by run: a restarted daemon counts
/// from zero, and a row that left the document and came back (a client host retired and
/// seen again) was counted from zero again.
#[derive(Clone, Debug, Default)]
struct Increase {
    /// (run, its last value, the place in the run it was seen at).
    last: Vec<(usize, u64, u64)>,
    total: u64,
}

impl Increase {
    fn add(&mut self, value: u64, at: Place) {
        match self.last.iter_mut().find(|(run, ..)| *run == at.run) {
            Some((_, last, seq)) => {
                self.total += if *seq + 1 == at.seq && value >= *last {
                    value - *last
                } else {
                    // Smaller, or after samples without the row: counted again from zero.
                    value
                };
                *last = value;
                *seq = at.seq;
            }
            None => {
                // New within its run (its run was seen before it, or started in the
                // window): all it counted happened in the window.
                if at.seq > 1 || at.run_started_in_window {
                    self.total += value;
                }
                self.last.push((at.run, value, at.seq));
            }
        }
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
    fn of(row: &Value) -> Self {
        if row.get("server").is_some() {
            BudgetKey::Host(text(row, "server"), text(row, "local_ip"))
        } else {
            BudgetKey::Client(text(row, "listener"), text(row, "client_ip"))
        }
    }

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
    rejected: Increase,
    critical: bool,
    warning: bool,
}

impl BudgetTrack {
    /// The sample it held the most in (the first of equals): (time, open, limit then).
    /// Of equal peaks, the first at its limit then, else the first.
    fn peak(&self) -> Option<(i64, i64, u64)> {
        let at_limit = |p: &(i64, i64, u64)| p.2 > 0 && p.1 >= p.2 as i64;
        self.points.iter().copied().reduce(|best, p| {
            if p.1 > best.1 || (p.1 == best.1 && at_limit(&p) && !at_limit(&best)) {
                p
            } else {
                best
            }
        })
    }

    /// The first sample it held its limit (as it was then) or more in.
    fn first_at_limit(&self) -> Option<i64> {
        self.points
            .iter()
            .filter(|p| p.2 > 0 && p.1 >= p.2 as i64)
            .map(|p| p.0)
            .min()
    }

    fn reached(&self) -> bool {
        self.first_at_limit().is_some() || self.rejected.total > 0 || self.critical
    }

    /// How full it was at its fullest (0 when unlimited).
    fn usage(&self) -> f64 {
        self.points
            .iter()
            .filter(|p| p.2 > 0)
            .map(|p| p.1 as f64 / p.2 as f64)
            .fold(0.0, f64::max)
    }

    /// Fullest first, then most held.
    fn busier(&self, other: &Self) -> std::cmp::Ordering {
        self.usage()
            .total_cmp(&other.usage())
            .then(self.peak().map(|p| p.1).cmp(&other.peak().map(|p| p.1)))
    }
}

/// A process, by pid and `instance` (a reused pid is another process).
type ProcessId = (u64, u64);

/// A process over the window.
#[derive(Clone, Debug, Default)]
struct ProcessTrack {
    label: String,
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
    from_ms: i64,
    host: Option<String>,
    samples: u64,
    runs: Runs,
    budgets: BTreeMap<BudgetKey, BudgetTrack>,
    processes: BTreeMap<ProcessId, ProcessTrack>,
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

fn process_id(row: &Value) -> ProcessId {
    (num(row, "pid"), num(row, "instance"))
}

/// The live process of `pid` in `doc` (victim and suspect rows name a pid, no instance).
fn live_process(doc: &Value, pid: u64) -> Option<ProcessId> {
    rows(doc, "processes")
        .iter()
        .find(|p| num(p, "pid") == pid && p["alive"].as_bool() != Some(false))
        .map(process_id)
}

/// The server a suspect's reason says refused it (`refused 5 times by 10.1.2.3:2181`),
/// when it was refused.
fn refused_clause(reason: &str) -> Option<String> {
    let clause = reason.split("; ").find(|c| c.starts_with("refused "))?;
    let (times, by) = clause.strip_prefix("refused ")?.split_once(" by ")?;
    let n: u64 = times.split_whitespace().next()?.parse().ok()?;
    (n > 0).then(|| by.to_owned())
}

impl Window {
    fn new(from_ms: i64) -> Self {
        Self {
            from_ms,
            ..Self::default()
        }
    }

    fn add(&mut self, at_ms: i64, doc: Value) {
        let at = self.runs.place(at_ms, &doc, self.from_ms);
        self.samples += 1;
        if self.host.is_none() {
            self.host = doc["host"].as_str().map(str::to_owned);
        }
        for row in rows(&doc, "servers").iter().chain(rows(&doc, "clients")) {
            let b = self.budgets.entry(BudgetKey::of(row)).or_default();
            b.points
                .push((at_ms, row["open"].as_i64().unwrap_or(0), num(row, "limit")));
            b.rejected.add(num(row, "rejected"), at);
            match row["alarm"].as_str() {
                Some("critical") => b.critical = true,
                Some("warning") => b.warning = true,
                _ => {}
            }
        }
        let mut seen = BTreeSet::new();
        for row in rows(&doc, "processes") {
            let id = process_id(row);
            let p = self.processes.entry(id).or_default();
            p.label = text(row, "label");
            p.kind = text(row, "kind");
            p.container = row["yarn_container"].as_str().map(str::to_owned);
            p.application = row["yarn_application"].as_str().map(str::to_owned);
            p.opened.add(num(row, "opened"), at);
            p.rejected.add(num(row, "rejected"), at);
            p.alive = row["alive"].as_bool() != Some(false);
            seen.insert(id);
        }
        for (id, p) in &mut self.processes {
            p.at_end = seen.contains(id);
        }
        for row in rows(&doc, "victims") {
            let pid = num(row, "pid");
            let live = live_process(&doc, pid);
            if let Some(p) = live.and_then(|id| self.processes.get_mut(&id)) {
                for by in rows(row, "refused_at") {
                    p.refused_by.insert(format!(
                        "{} from {}",
                        text(by, "server"),
                        text(by, "local_ip")
                    ));
                }
            }
        }
        for row in rows(&doc, "suspects") {
            if row["subject"] != "process" {
                continue;
            }
            let pid = num(row, "pid");
            let live = live_process(&doc, pid);
            if let (Some(p), Some(clause)) = (
                live.and_then(|id| self.processes.get_mut(&id)),
                refused_clause(&text(row, "reason")),
            ) {
                p.refused_by.insert(clause);
            }
        }
        if self.first.is_none() {
            self.first = Some(doc.clone());
        }
        self.last = Some(doc);
    }
}

/// A process's open connections to one budget in `doc` (0 when it has none there).
fn open_in(doc: &Value, id: ProcessId, server: &str, local_ip: &str) -> u64 {
    rows(doc, "processes")
        .iter()
        .filter(|p| process_id(p) == id)
        .flat_map(|p| rows(p, "servers"))
        .filter(|s| text(s, "server") == server && text(s, "local_ip") == local_ip)
        .map(|s| num(s, "open"))
        .sum()
}

/// The last alarm in the store: the budget alarmed in the latest sample with a critical
/// (else a warning) alarm, and the first of the run of that daemon's samples, ending
/// there, in which that budget was alarmed; with the end of that run. Samples dated more
/// than a minute after now (a clock set ahead) are left out.
fn last_alarm(reader: &Reader) -> anyhow::Result<(i64, i64, String, &'static str)> {
    let catalog = reader.catalog()?;
    let span = catalog.span;
    let (Some(first), Some(last)) = (span.first_ms, span.last_ms) else {
        bail!("--alarm: {}", crate::archive::holds(reader.dir(), &span));
    };
    let now = now_ms();
    let mut runs = Runs::default();
    // Per (run, budget): (place in the run, time, 0 critical / 1 warning / 2 neither).
    type Levels = Vec<(u64, i64, u8)>;
    let mut seen: BTreeMap<(usize, BudgetKey), Levels> = BTreeMap::new();
    let mut ahead = 0u64;
    reader.each(first, last, |at_ms, doc| {
        if at_ms > now + 60_000 {
            ahead += 1;
            return Ok(());
        }
        let at = runs.place(at_ms, &doc, i64::MIN);
        for row in rows(&doc, "servers").iter().chain(rows(&doc, "clients")) {
            let level = match row["alarm"].as_str() {
                Some("critical") => 0,
                Some("warning") => 1,
                _ => 2,
            };
            seen.entry((at.run, BudgetKey::of(row)))
                .or_default()
                .push((at.seq, at_ms, level));
        }
        Ok(())
    })?;
    for (level, name) in [(0u8, "critical"), (1, "warning")] {
        let latest = seen
            .iter()
            .flat_map(|(k, points)| {
                points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.2 <= level)
                    .map(move |(i, p)| (p.1, k, i))
            })
            .max_by_key(|(t, ..)| *t);
        let Some((end, key, mut i)) = latest else {
            continue;
        };
        let points = &seen[key];
        while i > 0 && points[i - 1].2 <= level && points[i - 1].0 + 1 == points[i].0 {
            i -= 1;
        }
        return Ok((points[i].1, end, key.1.label(), name));
    }
    let mut why = format!(
        "--alarm: no alarm in the store: no budget was at --warn or over; {}",
        crate::archive::holds(reader.dir(), &span)
    );
    if ahead > 0 {
        why.push_str(&format!(
            "; {ahead} sample(s) dated more than a minute after now (a clock set ahead) were \
             left out"
        ));
    }
    bail!("{why}; give --around TIME")
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
    let mut w = Window::new(from_ms);
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
    let files = [
        ("usage.svg", svg.clone()),
        ("report.md", markdown(&blocks)),
        ("report.html", html(&blocks, &svg, &title(&w, centre_ms))),
    ];
    let written = write_all(&out_dir, &files)?;
    writeln!(
        out,
        "wrote {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(())
}

/// Writes `files` into `dir` (made if missing), all or none: each to a new temporary file
/// first (never through a link someone planted: it is made with `O_EXCL`, and the rename
/// replaces a link rather than following it), then renamed into place.
fn write_all(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if dir.exists() && !dir.is_dir() {
        bail!("--out {}: not a directory", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out {}: cannot make the directory", dir.display()))?;
    let mut temps = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for (name, body) in files {
            let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            temps.push((tmp.clone(), dir.join(name)));
            f.write_all(body.as_bytes())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (tmp, _) in &temps {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    let clean = |temps: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in temps {
            let _ = std::fs::remove_file(tmp);
        }
    };
    // A directory where a file goes is not replaced: found before anything is.
    if let Some((_, path)) = temps.iter().find(|(_, p)| p.is_dir()) {
        let why = format!("cannot write {}: it is a directory", path.display());
        clean(&temps);
        bail!("{why}");
    }
    let mut written = Vec::new();
    for (i, (tmp, path)) in temps.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            clean(&temps[i..]);
            return Err(anyhow!("cannot write {}: {e}", path.display()));
        }
        written.push(path.clone());
    }
    Ok(written)
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
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut b = vec![
        Block::Heading(title(w, centre_ms)),
        Block::Para(format!(
            "From {} to {}: {} from the history store {}, centred on {why}.",
            rfc3339(from_ms),
            rfc3339(to_ms),
            plural(w.samples as usize, "sample", "samples"),
            dir.display()
        )),
        Block::Chart,
    ];
    let mut reached: Vec<(&BudgetKey, &BudgetTrack)> =
        w.budgets.iter().filter(|(_, t)| t.reached()).collect();
    reached.sort_by(|a, b| b.1.busier(a.1).then(a.0.cmp(b.0)));
    let limit_text = |limit: u64| match limit {
        0 => "unlimited".to_owned(),
        l => l.to_string(),
    };
    b.push(Block::Heading("Budgets that reached their limit".into()));
    if reached.is_empty() {
        let busiest = w
            .budgets
            .iter()
            .max_by(|a, b| a.1.busier(b.1))
            .and_then(|(k, t)| Some((k, t.peak()?)))
            .map_or(String::new(), |(k, (_, open, limit))| {
                format!(
                    " The busiest: {}, {open} of {} at its peak.",
                    k.label(),
                    limit_text(limit)
                )
            });
        b.push(Block::Para(format!(
            "None of the {} reached its limit, none was refused.{busiest}",
            plural(w.budgets.len(), "budget", "budgets")
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
                    let (at, open, limit) = t.peak().unwrap_or_default();
                    vec![
                        k.label(),
                        limit_text(limit),
                        open.to_string(),
                        rfc3339(at),
                        t.first_at_limit().map_or("-".to_owned(), rfc3339),
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
    let first = w.first.as_ref().unwrap_or(&Value::Null);
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
        let Some((peak_ms, _, _)) = track.peak() else {
            continue;
        };
        let doc = reader.at(peak_ms)?.doc;
        let mut holders: Vec<(u64, &Value)> = rows(&doc, "processes")
            .iter()
            .map(|p| (open_in(&doc, process_id(p), server, ip), p))
            .filter(|(open, _)| *open > 0)
            .collect();
        holders.sort_by(|a, b| b.0.cmp(&a.0).then(process_id(a.1).cmp(&process_id(b.1))));
        b.push(Block::Heading(format!(
            "Who held {} at its peak ({})",
            key.label(),
            rfc3339(peak_ms)
        )));
        if holders.is_empty() {
            b.push(Block::Para(
                "No process of this host held a connection of it in that sample (its \
                 connections were counted, their owners not known)."
                    .into(),
            ));
        } else {
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
                        let id = process_id(p);
                        let before = open_in(first, id, server, ip);
                        let track = w.processes.get(&id);
                        if let Some(c) = p["yarn_container"].as_str() {
                            involved.insert((c.to_owned(), text(p, "yarn_application")));
                        }
                        vec![
                            id.0.to_string(),
                            text(p, "label"),
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
            more(&mut b, holders.len(), "processes held connections there");
        }
        peak_doc_of_worst.get_or_insert(doc);
    }
    let mut refused: Vec<(&ProcessId, &ProcessTrack)> = w
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
    for (_, t) in &refused {
        if let Some(c) = &t.container {
            involved.insert((c.clone(), t.application.clone().unwrap_or_default()));
        }
    }
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
                .map(|((pid, _), t)| {
                    vec![
                        pid.to_string(),
                        t.label.clone(),
                        t.kind.clone(),
                        t.container.clone().unwrap_or_default(),
                        t.rejected.total.to_string(),
                        t.refused_by.iter().cloned().collect::<Vec<_>>().join(", "),
                        end_state(Some(t)),
                    ]
                })
                .collect(),
        ));
        more(&mut b, refused.len(), "processes were refused");
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
            more(&mut b, suspects.len(), "suspects were listed");
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

/// Says how many rows a table left out.
fn more(b: &mut Vec<Block>, total: usize, what: &str) {
    if total > TABLE_ROWS {
        b.push(Block::Para(format!(
            "{} more {what} (the first {TABLE_ROWS} are listed).",
            total - TABLE_ROWS
        )));
    }
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

/// A table cell: as [`md_text`], but text a renderer would make a link of (a URL, a
/// `www.` name, an address with `@`) goes into a code span, which no renderer links.
fn md_cell(text: &str) -> String {
    let shown = crate::output::printable(text);
    if !(shown.contains("://") || shown.contains("www.") || shown.contains('@')) {
        return md_text(text);
    }
    // A pipe ends a table cell even inside a code span unless escaped.
    let body = shown.replace('|', "\\|");
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    format!("{fence} {body} {fence}")
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
                    let cells: Vec<String> = row.iter().map(|c| md_cell(c)).collect();
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
            .then(b.1.busier(a.1))
            .then(a.0.cmp(b.0))
    });
    // Those that reached their limit, else the busiest three; never one that held nothing.
    let reached = budgets.iter().filter(|(_, t)| t.reached()).count();
    budgets.truncate(if reached > 0 { reached } else { 3 }.min(CHART_LINES));
    budgets.retain(|(_, t)| t.peak().is_some_and(|p| p.1 > 0));
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
            // At least a minute wide: one sample alone stays inside the frame.
            .build_cartesian_2d(
                from_ms.min(centre_ms - 30_000)..to_ms.max(centre_ms + 30_000),
                0i64..y_top,
            )
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
            // Each sample marked too: a line of one sample draws nothing.
            chart
                .draw_series(
                    track
                        .points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
                )
                .map_err(|e| err(&e))?;
            if track.points.iter().any(|p| p.2 > 0) {
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
        assert!(
            row.contains("` a\\|b <script>x</script> [l](http://e) \\n# h `"),
            "{row}"
        );
        assert_eq!(md.lines().count(), 4, "{md}");
        assert_eq!(md_text("container_e1_2 _x_"), "container_e1_2 \\_x\\_");
        assert_eq!(
            md_cell("see http://e.x |a`b"),
            "`` see http://e.x \\|a`b ``"
        );
        let html = html(&blocks, "<svg/>", "t");
        assert!(
            html.contains("a|b &lt;script&gt;x&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
    }

    fn place(run: usize, seq: u64, fresh: bool) -> Place {
        Place {
            run,
            seq,
            run_started_in_window: fresh,
        }
    }

    /// Run by run: a restart counts from zero, a row gone and back counts again from zero,
    /// two runs interleaved by a stepped clock never count a drop as a restart.
    #[test]
    fn increases_are_counted_run_by_run() {
        let mut i = Increase::default();
        // A run from before the window: its first value is the baseline.
        i.add(3, place(0, 1, false));
        i.add(5, place(0, 2, false));
        // The daemon restarts in the window: all the new run counts is in it.
        i.add(10, place(1, 1, true));
        i.add(12, place(1, 2, true));
        assert_eq!(i.total, 2 + 12);
        // Back in the first run after samples without the row: retired and counted again.
        i.add(4, place(0, 5, false));
        assert_eq!(i.total, 2 + 12 + 4);
        // Interleaved runs (a clock stepped back): each only against itself.
        let mut j = Increase::default();
        for (v, at) in [
            (100, place(0, 1, false)),
            (50, place(1, 1, false)),
            (101, place(0, 2, false)),
            (52, place(1, 2, false)),
            (103, place(0, 3, false)),
        ] {
            j.add(v, at);
        }
        assert_eq!(j.total, 3 + 2);
    }

    /// Runs from the documents themselves: without `observed_secs` one run whose rises are
    /// counted; a clock stepped forward while the daemon ran is no restart; a restart is.
    #[test]
    fn runs_are_told_from_observed_secs() {
        let doc = |obs: Option<f64>| match obs {
            Some(o) => serde_json::json!({"observed_secs": o}),
            None => serde_json::json!({}),
        };
        let count = |samples: &[(i64, Option<f64>, u64)], from: i64| {
            let mut runs = Runs::default();
            let mut i = Increase::default();
            for (t, obs, v) in samples {
                i.add(*v, runs.place(*t, &doc(*obs), from));
            }
            i.total
        };
        let unknown: Vec<(i64, Option<f64>, u64)> = (0..30)
            .map(|k| (k * 10_000, None, 100 + k as u64))
            .collect();
        assert_eq!(count(&unknown, 0), 29);
        // +15 min at the third sample: the run goes on (11 -> 12 is lost with the step).
        let stepped = [
            (0, Some(100.0), 10),
            (10_000, Some(110.0), 11),
            (910_000, Some(120.0), 12),
            (920_000, Some(130.0), 13),
        ];
        assert_eq!(count(&stepped, -50_000), 2);
        // A restart within the window: the new run counts from zero.
        let restarted = [
            (0, Some(100.0), 10),
            (10_000, Some(110.0), 11),
            (20_000, Some(2.0), 3),
            (30_000, Some(12.0), 4),
        ];
        assert_eq!(count(&restarted, -50_000), 1 + 4);
    }

    /// The window's reading: a budget at its limit, who grew into it, who was refused; a
    /// reused pid is another process; the limit is the one in force at the peak.
    #[test]
    fn a_window_finds_the_budget_its_holder_and_the_refused() {
        let sample = |t: f64, open: u64, limit: u64, rejected: u64, alive: bool| {
            serde_json::json!({
                "host": "w7",
                "observed_secs": t,
                "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": open + 1,
                             "limit": limit, "rejected": rejected, "alarm":
                             if open + 1 >= limit { "critical" } else { "ok" }}],
                "processes": [
                    {"pid": 7, "instance": 1, "label": "leaker", "kind": "yarn", "alive": alive,
                     "yarn_container": "container_1", "opened": open, "rejected": 0,
                     "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": open}]},
                    {"pid": 8, "instance": 1, "label": "victim", "kind": "hbase", "alive": true,
                     "opened": 1 + rejected, "rejected": rejected,
                     "servers": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9", "open": 1}]}
                ],
                "victims": [{"pid": 8, "label": "victim",
                             "refused_at": [{"server": "10.0.0.1:2181", "local_ip": "10.0.0.9"}]}]
            })
        };
        // The daemon started 100 s before the first sample, before the window.
        let mut w = Window::new(-50_000);
        w.add(0, sample(100.0, 2, 60, 0, true));
        w.add(10_000, sample(110.0, 9, 10, 3, true));
        let mut last = sample(120.0, 9, 10, 5, false);
        // The leaker's pid, reused by another process of the same name.
        last["processes"].as_array_mut().unwrap().push(
            serde_json::json!({"pid": 7, "instance": 2, "label": "leaker", "kind": "yarn",
                                     "alive": true, "opened": 1, "rejected": 0, "servers": []}),
        );
        w.add(20_000, last);
        let key = BudgetKey::Host("10.0.0.1:2181".into(), "10.0.0.9".into());
        let b = &w.budgets[&key];
        assert!(b.reached());
        assert_eq!(b.peak(), Some((10_000, 10, 10)));
        assert_eq!(b.first_at_limit(), Some(10_000));
        assert_eq!(b.rejected.total, 5);
        let leaker = &w.processes[&(7, 1)];
        assert_eq!(leaker.opened.total, 7);
        assert!(!leaker.alive && leaker.at_end);
        assert_eq!(end_state(Some(leaker)), "exited");
        let again = &w.processes[&(7, 2)];
        assert_eq!(
            (again.opened.total, end_state(Some(again)).as_str()),
            (1, "running")
        );
        let victim = &w.processes[&(8, 1)];
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
