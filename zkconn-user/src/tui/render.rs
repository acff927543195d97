//! Drawing `zkconn top`: one function per pane, no I/O, nothing that blocks.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
};

use super::app::{App, Column, OwnerLine};
use crate::{
    model::{ClientRow, RowId, ServerRow},
    trend::{human_secs, human_time_to_limit},
    verdict::Alarm,
};

const WARN: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
const CRIT: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const OK: Style = Style::new().fg(Color::Green);
const DIM: Style = Style::new().fg(Color::DarkGray);
const TITLE: Style = Style::new().add_modifier(Modifier::BOLD);

pub fn render(frame: &mut Frame<'_>, app: &App) {
    let servers = app
        .snapshot
        .as_ref()
        .map_or(0, |s| s.rows.servers.len().clamp(1, SERVER_ROWS)) as u16;
    // The server's side, where this host is a ZooKeeper server: only then a pane.
    let clients = app
        .snapshot
        .as_ref()
        .map_or(0, |s| s.rows.clients.len().min(CLIENT_ROWS)) as u16;
    let [header, servers_area, clients_area, main, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(servers + 2),
        Constraint::Length(if clients > 0 { clients + 2 } else { 0 }),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_header(frame, header, app);
    render_servers(frame, servers_area, app);
    if clients > 0 {
        render_clients(frame, clients_area, app);
    }
    if app.clients_view {
        if app.client_drill.is_some() {
            render_client_drill(frame, main, app);
        } else {
            render_client_table(frame, main, app);
        }
    } else if app.drill.is_some() {
        render_drill(frame, main, app);
    } else {
        render_owners(frame, main, app);
    }
    render_footer(frame, footer, app);
    if app.help {
        render_help(frame, frame.area());
    }
    printable_cells(frame.buffer_mut());
}

/// Names, command lines and paths come from other processes, and a span writes its text into
/// the buffer as given (only `set_string` drops control characters): any cell holding one
/// (an escape that would clear the operator's screen or retitle the window, a bell, a carriage
/// return) shows U+FFFD instead. One pass over the finished frame, so no widget can miss it.
fn printable_cells(buffer: &mut ratatui::buffer::Buffer) {
    for cell in &mut buffer.content {
        if cell.symbol().chars().any(char::is_control) {
            cell.set_symbol("\u{fffd}");
        }
    }
}

fn render_header(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(s) = &app.snapshot else {
        frame.render_widget(Paragraph::new("zkconn: attaching…"), area);
        return;
    };
    let hook = s.probe.hook.map_or("-".to_owned(), |h| h.to_string());
    let mut first = vec![
        Span::styled("zkconn ", TITLE),
        Span::raw(format!(
            "{} · {hook} · up {} · trend window {}",
            s.host,
            human_secs(s.observed_secs),
            human_secs(s.trend_window_secs),
        )),
    ];
    if let Some(past) = &app.past {
        first.insert(
            1,
            Span::styled(
                format!(
                    "HISTORY {} (sample {} of {}, not live) · ",
                    crate::archive::rfc3339(past.at_ms),
                    past.index + 1,
                    past.count
                ),
                WARN,
            ),
        );
    }
    if app.paused {
        first.push(Span::styled(" · PAUSED", WARN));
    }
    if let Some(e) = &app.error {
        first.push(Span::styled(format!(" · STALE: {e}"), CRIT));
    }
    if !app.filter.is_empty() {
        first.push(Span::raw(format!(" · filter \"{}\"", app.filter)));
    }
    let t = &app.totals;
    let r = app.rates;
    let count = |v: u64, style: Style| {
        Span::styled(v.to_string(), if v > 0 { style } else { Style::new() })
    };
    // Per-second rates once two refreshes are known, and when the line has room for them:
    // the counts themselves (lost, overflow, unreadable, repaired last) always fit first.
    let line = |with_rates: bool, short: bool| {
        let [
            opened,
            closed,
            failed,
            rejected,
            lost,
            overflow,
            unreadable,
            repaired,
        ] = if short {
            [
                "new", "closed", "failed", "refused", "lost", "ovfl", "unread", "fixed",
            ]
        } else {
            [
                "opened",
                "closed",
                "failed",
                "rejected",
                "lost",
                "overflow",
                "unreadable",
                "repaired",
            ]
        };
        let gap = if short { " " } else { "  " };
        let rate = |v: f64| match r {
            Some(_) if with_rates => format!(" (+{v:.1}/s)"),
            _ => String::new(),
        };
        let r = r.unwrap_or_default();
        Line::from(vec![
            Span::raw(format!(
                "open {}{gap}{opened} {}{}{gap}{closed} {}{}{gap}{failed} {}{}{gap}{rejected} ",
                t.open,
                t.opened,
                rate(r.opened),
                t.closed,
                rate(r.closed),
                t.failed,
                rate(r.failed)
            )),
            count(t.rejected, CRIT),
            Span::raw(format!("{}{gap}{lost} ", rate(r.rejected))),
            count(s.probe.lost, WARN),
            Span::raw(format!("{gap}{overflow} ")),
            count(s.probe.overflow, WARN),
            Span::raw(format!("{gap}{unreadable} ")),
            count(s.probe.unreadable, DIM),
            Span::raw(format!("{gap}{repaired} ")),
            count(s.probe.repaired.retired + s.probe.repaired.adopted, WARN),
        ])
    };
    // The widest that fits: with rates, without, then with short words (every count is
    // still there on an 80-column screen).
    let fits = |l: &Line<'_>| l.width() <= usize::from(area.width);
    let second = [line(true, false), line(false, false)]
        .into_iter()
        .find(fits)
        .unwrap_or_else(|| line(false, true));
    frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

fn alarm_style(alarm: Alarm) -> Style {
    match alarm {
        Alarm::Ok => OK,
        Alarm::Warning => WARN,
        Alarm::Critical => CRIT,
    }
}

/// `████░░░░` of `width` cells for `usage` (0..1, capped).
fn bar(usage: f64, width: usize) -> String {
    let full = ((usage.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(full), "░".repeat(width - full))
}

/// The widest part of each column, in characters: what aligned lines pad to.
fn column_widths<const N: usize>(parts: &[[String; N]]) -> [usize; N] {
    let mut w = [0_usize; N];
    for p in parts {
        for (i, part) in p.iter().enumerate() {
            w[i] = w[i].max(part.chars().count());
        }
    }
    w
}

/// A gauge of `usage` `width` cells wide after a space (blank when unlimited); nothing
/// where fewer than 8 cells are left for it.
fn gauge(usage: Option<f64>, width: usize, style: Style) -> Vec<Span<'static>> {
    if width < 8 {
        return Vec::new();
    }
    vec![
        Span::raw(" "),
        match usage {
            Some(u) => Span::styled(bar(u, width), style),
            None => Span::raw(" ".repeat(width)),
        },
    ]
}

/// `?` after a limit nobody gave (ZooKeeper's default, assumed).
fn assumed_mark(row: &ServerRow) -> &'static str {
    if row.limit_source.assumed() { "?" } else { "" }
}

/// The wordings of a budget's line (see [`server_parts`]).
const ROOMY: usize = 0;
const TIGHT: usize = 1;

/// One budget's line in `level` words ([`ROOMY`] or [`TIGHT`]): alarm, budget,
/// usage, refusals, time to limit. Each wording keeps them all; a narrower terminal gets
/// fewer words, never fewer facts. The local IP is part of the budget: two rows of one
/// server differ only there.
fn server_parts(row: &ServerRow, level: usize) -> [String; 5] {
    let usage = match row.usage {
        Some(u) => format!(
            "{}/{}{} {:.0}%",
            row.states.open,
            row.limit,
            assumed_mark(row),
            u * 100.0
        ),
        None => format!("{} open, unlimited{}", row.states.open, assumed_mark(row)),
    };
    let ttl = human_time_to_limit(row.time_to_limit_secs, row.headroom);
    let nat = if row.translated_from.is_empty() {
        ""
    } else {
        " (NAT)"
    };
    let alarm = format!("{} ", row.alarm.as_str());
    let (server, local) = (printable(&row.server), printable(&row.local_ip));
    match level {
        ROOMY => [
            alarm,
            format!("{server} from {local}{nat}"),
            format!(" {usage}"),
            format!(" rejected {}", row.rejected),
            format!(" limit in {ttl}"),
        ],
        _ => [
            alarm,
            format!("{local} → {server}{nat}"),
            format!(" {usage}"),
            format!(" rej {}", row.rejected),
            format!(" in {ttl}"),
        ],
    }
}

/// The budgets' lines, aligned: each part padded to the widest of its column, in the
/// roomiest wording whose widest line fits `width`; the gauge takes what is left.
fn server_lines(rows: &[&ServerRow], width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    // The roomy wording where its widest line fits, else the tight one.
    let wording = |level: usize| {
        let parts: Vec<[String; 5]> = rows.iter().map(|r| server_parts(r, level)).collect();
        let w = column_widths(&parts);
        (parts, w)
    };
    let roomy = wording(ROOMY);
    let (parts, w) = if roomy.1.iter().sum::<usize>() <= width {
        roomy
    } else {
        wording(TIGHT)
    };
    let used: usize = w.iter().sum();
    let gauge_width = width.saturating_sub(used + 1).min(40);
    rows.iter()
        .zip(parts)
        .map(|(row, [alarm, name, usage, rejected, limit_in])| {
            let style = alarm_style(row.alarm);
            let pad = |s: String, i: usize| format!("{s:<width$}", width = w[i]);
            let mut spans = vec![Span::styled(pad(alarm, 0), style), Span::raw(pad(name, 1))];
            spans.extend(gauge(row.usage, gauge_width, style));
            spans.push(Span::raw(pad(usage, 2)));
            spans.push(Span::styled(
                pad(rejected, 3),
                if row.rejected > 0 { CRIT } else { Style::new() },
            ));
            spans.push(Span::raw(limit_in));
            Line::from(spans)
        })
        .collect()
}

/// How many budget rows the servers pane shows at most.
const SERVER_ROWS: usize = 8;

/// The budgets in the order the servers pane shows them: the worst first (by alarm, then
/// refusing, then usage), so a critical budget is never below rows that are fine; a budget
/// holding nothing last.
pub fn servers_shown(servers: &[ServerRow]) -> Vec<&ServerRow> {
    let mut v: Vec<&ServerRow> = servers.iter().collect();
    v.sort_by(|a, b| {
        b.alarm
            .cmp(&a.alarm)
            .then(b.refusing.cmp(&a.refusing))
            .then((b.states.open > 0).cmp(&(a.states.open > 0)))
            .then(b.usage.unwrap_or(0.0).total_cmp(&a.usage.unwrap_or(0.0)))
            .then(b.states.open.cmp(&a.states.open))
            .then(a.server.cmp(&b.server))
            .then(a.local_ip.cmp(&b.local_ip))
    });
    v
}

fn render_servers(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let block = Block::bordered().title(Span::styled(" ZooKeeper servers ", TITLE));
    let width = area.width.saturating_sub(2);
    let room = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line<'_>> = match &app.snapshot {
        Some(s) if !s.rows.servers.is_empty() => {
            let shown = servers_shown(&s.rows.servers);
            if shown.len() <= room {
                server_lines(&shown, width)
            } else {
                // The last line says what is left out, and how bad the worst of it is.
                let kept = room.saturating_sub(1);
                let rest = &shown[kept..];
                let worst = rest.iter().map(|r| r.alarm).max();
                let mut lines = server_lines(&shown[..kept], width);
                lines.push(Line::styled(
                    format!(
                        "+{} more (worst {}); every budget: zkconn snapshot",
                        rest.len(),
                        worst.map_or("OK", Alarm::as_str)
                    ),
                    worst.map_or(DIM, alarm_style),
                ));
                lines
            }
        }
        Some(s) => vec![Line::styled(
            format!(
                "No ZooKeeper connections from this host to {}",
                s.targets.join(", ")
            ),
            DIM,
        )],
        None => Vec::new(),
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// How many client-host rows the client pane shows at most.
const CLIENT_ROWS: usize = 6;

/// Where this host is a ZooKeeper server: its listeners' client hosts, most used first
/// (as the snapshot orders them), each with a gauge of its listener's limit, its refusals
/// and what the server let go unanswered; what does not fit is said on the last line.
fn render_clients(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let block = Block::bordered().title(Span::styled(
        " Client hosts of this host's listeners (the server's side) ",
        TITLE,
    ));
    let room = usize::from(area.height.saturating_sub(2));
    let lines = match &app.snapshot {
        Some(s) => client_lines(&s.rows.clients, area.width.saturating_sub(2), room),
        None => Vec::new(),
    };
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// A client host's style: critical when it is at its limit or was refused, a warning from
/// 80 % of the limit.
fn client_style(c: &ClientRow) -> Style {
    alarm_style(c.alarm)
}

/// `c`: every client host of this host's listeners, selectable.
fn render_client_table(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let rows = app.client_rows();
    let header = Row::new([
        "CLIENT IP",
        "LISTENER",
        "OPEN",
        "LIMIT",
        "USE",
        "GROWTH/m",
        "REJ 10m",
        "REJECTED",
        "UNANSW",
        "OPENED",
        "ALARM",
    ])
    .style(TITLE);
    let body = rows.iter().map(|c| {
        let assumed = if c.limit_source.assumed() { "?" } else { "" };
        Row::new(vec![
            Cell::from(printable(&c.client_ip)),
            Cell::from(printable(&c.listener)),
            Cell::from(c.open.to_string()),
            Cell::from(if c.limit == 0 {
                "none".to_owned()
            } else {
                format!("{}{assumed}", c.limit)
            }),
            Cell::from(
                c.usage
                    .map_or("-".to_owned(), |u| format!("{:.0}%", u * 100.0)),
            ),
            Cell::from(match c.growth_per_min {
                Some(g) => format!("{g:+.1}{}", if c.growing { "↑" } else { "" }),
                None => "-".to_owned(),
            }),
            Cell::from(c.rejected_window.to_string()),
            Cell::from(c.rejected.to_string()),
            Cell::from(c.unanswered.to_string()),
            Cell::from(c.opened.to_string()),
            Cell::from(c.alarm.as_str()).style(client_style(c)),
        ])
    });
    let widths = [
        Constraint::Min(15),
        Constraint::Min(15),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(9),
    ];
    let title = format!(
        " Client hosts ({}) · Enter: its connections · c or Esc: back to the owners ",
        rows.len()
    );
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(Span::styled(title, TITLE)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(app.selected_client_index());
    frame.render_stateful_widget(table, area, &mut state);
}

/// A client host drilled into: its counts, its listener's server, its connections.
fn render_client_drill(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(c) = app.drilled_client() else {
        let msg = Paragraph::new("This client host is gone (retired, idle). Esc goes back.")
            .block(Block::bordered().title(" Client host "));
        frame.render_widget(msg, area);
        return;
    };
    let mut facts = vec![
        kv(
            "open",
            &format!(
                "{} ({} in CLOSE_WAIT, {} from before zkconn started)",
                c.open, c.close_wait, c.seeded
            ),
        ),
        kv(
            "limit",
            &crate::verdict::usage_words(c.open, c.limit, c.limit_source.assumed(), c.usage),
        ),
        kv(
            "since start",
            &format!(
                "{} accepted, {} let go, {} refused, {} unanswered",
                c.opened, c.closed, c.rejected, c.unanswered
            ),
        ),
        kv(
            "window",
            &format!(
                "{} refused{}; growth {}{}",
                c.rejected_window,
                if c.refusing { ", refusing now" } else { "" },
                c.growth_per_min
                    .map_or("-".to_owned(), |g| format!("{g:+.1}/min")),
                if c.growing { ", only growing" } else { "" }
            ),
        ),
    ];
    if !c.reached.is_empty() {
        facts.push(kv("reached on", &c.reached.join(", ")));
    }
    if let Some(l) = app.listener(&c.listener) {
        let who = l.server.process.as_ref().map_or_else(
            || "no process found".to_owned(),
            |p| {
                format!(
                    "pid {} {}{}",
                    p.pid,
                    p.comm,
                    p.main_class
                        .as_deref()
                        .map(|m| format!(" ({})", m.rsplit('.').next().unwrap_or(m)))
                        .unwrap_or_default()
                )
            },
        );
        let cap = match (l.server.max_cnxns, l.max_cnxns_headroom) {
            (Some(max), Some(h)) if max > 0 => format!("; maxCnxns {max}, headroom {h}"),
            _ => String::new(),
        };
        let kind = match l.server.kind {
            crate::listener::ListenerKind::Plain => "plain",
            crate::listener::ListenerKind::Secure => "secure (TLS)",
            crate::listener::ListenerKind::Unknown => "of an unknown kind",
        };
        facts.push(kv("listener", &format!("{}, {kind}, {who}", c.listener)));
        facts.push(kv(
            "it holds",
            &format!("{} open from {} client hosts{cap}", l.open, l.client_hosts),
        ));
    }
    // The facts first; the connections get what is left, at least a few lines.
    let height = (facts.len() as u16 + 2)
        .min(area.height.saturating_sub(4))
        .max(3);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(3)]).areas(area);
    let title = format!(
        " client host {} on {} — Esc goes back ",
        printable(&c.client_ip),
        printable(&c.listener)
    );
    frame.render_widget(
        Paragraph::new(facts)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(title, client_style(c)))),
        top,
    );
    let header = Row::new(["CLIENT PORT", "STATE", "AGE"]).style(TITLE);
    let rows = c.connections.iter().map(|conn| {
        Row::new(vec![
            Cell::from(conn.client_port.to_string()),
            Cell::from(conn.state).style(if conn.state == "close_wait" {
                WARN
            } else {
                Style::new()
            }),
            Cell::from(
                conn.age_secs
                    .map_or_else(|| "before start".to_owned(), human_secs),
            ),
        ])
    });
    let listed = if (c.connections.len() as u64) < c.open {
        format!(
            " Connections (the oldest {} of {}) ",
            c.connections.len(),
            c.open
        )
    } else {
        format!(" Connections ({}) ", c.open)
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(header)
    .block(Block::bordered().title(Span::styled(listed, TITLE)));
    frame.render_widget(table, bottom);
}

/// The client-host lines for `room` lines of `width` cells, aligned like the budgets'.
fn client_lines(rows: &[ClientRow], width: u16, room: usize) -> Vec<Line<'static>> {
    let width = usize::from(width);
    let shown = if rows.len() > room {
        room.saturating_sub(1)
    } else {
        rows.len()
    };
    let parts: Vec<[String; 4]> = rows[..shown]
        .iter()
        .map(|c| {
            let assumed = if c.limit_source.assumed() { "?" } else { "" };
            [
                format!("{} → {}", printable(&c.client_ip), printable(&c.listener)),
                match c.usage {
                    Some(u) => format!(" {}/{}{assumed} {:.0}%", c.open, c.limit, u * 100.0),
                    None => format!(" {} open, unlimited{assumed}", c.open),
                },
                format!(" rejected {}", c.rejected),
                format!(" unanswered {}", c.unanswered),
            ]
        })
        .collect();
    let w = column_widths(&parts);
    let gauge_width = width.saturating_sub(w.iter().sum::<usize>() + 1).min(40);
    let mut lines: Vec<Line<'static>> = rows[..shown]
        .iter()
        .zip(parts)
        .map(|(c, [name, usage, rejected, unanswered])| {
            let style = client_style(c);
            let pad = |s: String, i: usize| format!("{s:<width$}", width = w[i]);
            let mut spans = vec![Span::styled(pad(name, 0), style)];
            spans.extend(gauge(c.usage, gauge_width, style));
            spans.push(Span::raw(pad(usage, 1)));
            spans.push(Span::styled(
                pad(rejected, 2),
                if c.rejected > 0 { CRIT } else { Style::new() },
            ));
            spans.push(Span::raw(unanswered));
            Line::from(spans)
        })
        .collect();
    if shown < rows.len() {
        let rest = &rows[shown..];
        let refused = rest.iter().filter(|c| c.rejected > 0).count();
        lines.push(Line::styled(
            format!(
                "+{} more client hosts ({refused} of them refused); every one: press c",
                rest.len()
            ),
            if refused > 0 { CRIT } else { DIM },
        ));
    }
    lines
}

/// Width each column needs at most.
fn width_of(c: Column) -> u16 {
    match c {
        Column::Owner => 30,
        Column::Kind => 10,
        Column::Pids => 8,
        Column::Within => 24,
        Column::Budget => 30,
        Column::User => 10,
        Column::Open | Column::Opened | Column::Closed => 7,
        Column::Growth => 7,
        Column::Rejected => 8,
        // Room for the title and its sort arrow.
        Column::CloseWait => 11,
        Column::Oldest => 10,
        Column::Trend => 20,
    }
}

/// The columns that fit in `width`, in display order, dropping the least important first.
pub fn fitting_columns(width: u16) -> Vec<Column> {
    let mut kept: Vec<Column> = Vec::new();
    let mut used = 2_u16; // the suspect marker
    for c in Column::PRIORITY {
        let w = width_of(c) + 1;
        if used + w <= width {
            used += w;
            kept.push(c);
        }
    }
    Column::ALL
        .into_iter()
        .filter(|c| kept.contains(c))
        .collect()
}

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn sparkline(points: &[u64], width: usize) -> String {
    let points = &points[points.len().saturating_sub(width)..];
    let max = points.iter().copied().max().unwrap_or(0).max(1);
    points
        .iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                SPARK[((v * 7 + max / 2) / max).min(7) as usize]
            }
        })
        .collect()
}

fn age(secs: Option<f64>, seeded: bool) -> String {
    match secs {
        None => "-".to_owned(),
        Some(s) if seeded => format!("≥{}", human_secs(s)),
        Some(s) => human_secs(s),
    }
}

/// `text` as a terminal may show it: control characters (a newline would end a table cell
/// early and let a name pose as another's label) and the invisible format characters
/// (zero-width spaces and joiners, bidirectional overrides) become U+FFFD, so two names that
/// differ only there look different.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || crate::output::is_format(c) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// `text` (made printable) in at most `width` terminal columns: cut in the middle, so both
/// the start (what runs) and the end (the distinguishing end of a YARN container or pod id)
/// stay. Widths are the terminal's (a CJK character takes two columns).
pub fn fit_middle(text: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar as _;
    let text = printable(text);
    let w = |c: char| c.width().unwrap_or(0);
    let total: usize = text.chars().map(w).sum();
    if total <= width {
        return text;
    }
    if width == 0 {
        return String::new();
    }
    // More of the end than of the start: ids differ at their end.
    let head_room = (width - 1) * 2 / 5;
    let mut tail_room = width - 1 - head_room;
    let mut start = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + w(c) > head_room {
            break;
        }
        used += w(c);
        start.push(c);
    }
    // What the head could not use (a wide character that did not fit) goes to the tail.
    tail_room += head_room - used;
    let mut end: Vec<char> = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        if used + w(c) > tail_room {
            break;
        }
        used += w(c);
        end.push(c);
    }
    end.reverse();
    format!("{start}…{}", end.into_iter().collect::<String>())
}

/// A budget, `LOCAL_IP → SERVER`, in `width` columns: the local IP whole (it is what tells
/// one budget of a server from another), the server cut in its middle if need be.
pub fn fit_budget(budget: &str, width: usize) -> String {
    let budget = printable(budget);
    if budget.chars().count() <= width {
        return budget;
    }
    match budget.split_once(" → ") {
        Some((local, server)) if local.chars().count() + 4 < width => {
            format!(
                "{local} → {}",
                fit_middle(server, width - local.chars().count() - 3)
            )
        }
        _ => fit_middle(&budget, width),
    }
}

/// The owner column's width in a table `width` wide with `columns`: what the others leave.
fn owner_width(width: u16, columns: &[Column]) -> usize {
    let others: u16 = columns
        .iter()
        .filter(|c| **c != Column::Owner)
        .map(|c| width_of(*c) + 1)
        .sum();
    // The marker column and its gap.
    usize::from(width.saturating_sub(others + 2).max(16))
}

fn cell(line: &OwnerLine, c: Column, app: &App, owner_width: usize) -> Cell<'static> {
    let num = |v: u64, hot: Style| {
        Cell::from(v.to_string()).style(if v > 0 { hot } else { Style::new() })
    };
    match c {
        Column::Owner => Cell::from(fit_middle(&line.label, owner_width)),
        Column::Kind => Cell::from(printable(&line.kind)),
        Column::Pids => Cell::from(match line.pids.as_slice() {
            [pid] => pid.to_string(),
            many => format!("{} pids", many.len()),
        }),
        Column::User => Cell::from(fit_middle(&line.user, usize::from(width_of(c)))),
        Column::Within => Cell::from(if line.within.is_empty() {
            "-".to_owned()
        } else {
            // The column says APPLICATION: its id without the prefix every one has.
            let id = line
                .within
                .strip_prefix("application_")
                .unwrap_or(&line.within);
            fit_middle(id, usize::from(width_of(Column::Within)))
        }),
        Column::Budget => Cell::from(match line.budgets.as_slice() {
            [] => "-".to_owned(),
            [one] => fit_budget(one, usize::from(width_of(Column::Budget))),
            many => format!("{} budgets", many.len()),
        }),
        Column::Open => Cell::from(line.open.to_string()),
        Column::Growth => Cell::from(if line.growth == 0.0 {
            "0".to_owned()
        } else {
            format!("{:+.1}", line.growth)
        })
        .style(if line.growth > 0.0 {
            WARN
        } else {
            Style::new()
        }),
        Column::Opened => Cell::from(line.opened.to_string()),
        Column::Closed => Cell::from(line.closed.to_string()),
        Column::Rejected => num(line.rejected, CRIT),
        Column::CloseWait => num(line.close_wait, WARN),
        Column::Oldest => Cell::from(age(line.oldest, line.oldest_seeded)),
        Column::Trend => Cell::from(sparkline(&app.spark(&line.id), 20)),
    }
}

fn render_owners(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let lines = app.lines();
    let inner = area.width.saturating_sub(2);
    let columns = fitting_columns(inner);
    let owner_width = owner_width(inner, &columns);
    let sort = app.sort.unwrap_or(Column::Open);
    let header = Row::new(
        std::iter::once(Cell::from(" "))
            .chain(columns.iter().map(|c| {
                let title = if *c == sort {
                    let arrow = if app.ascending { "↑" } else { "↓" };
                    // The arrow always shows: a title without room for it is shortened.
                    let title = if c.title().chars().count() < usize::from(width_of(*c)) {
                        c.title()
                    } else {
                        c.short_title()
                    };
                    format!("{title}{arrow}")
                } else {
                    c.title().to_owned()
                };
                Cell::from(title)
            }))
            .collect::<Vec<_>>(),
    )
    .style(TITLE);
    let rows = lines.iter().map(|l| {
        let mark = if l.suspect {
            Cell::from("!").style(CRIT)
        } else if l.victim {
            Cell::from("×").style(WARN)
        } else {
            Cell::from(" ")
        };
        let row = Row::new(
            std::iter::once(mark)
                .chain(columns.iter().map(|c| cell(l, *c, app, owner_width)))
                .collect::<Vec<_>>(),
        );
        // Exited and holding nothing: kept for --retain-exited, faded until it goes. An
        // exited connector whose connections live on in another process is not faded.
        if l.faded() {
            row.style(Style::new().add_modifier(Modifier::DIM))
        } else {
            row
        }
    });
    let widths: Vec<Constraint> = std::iter::once(Constraint::Length(1))
        .chain(columns.iter().map(|c| match c {
            Column::Owner => Constraint::Min(16),
            other => Constraint::Length(width_of(*other)),
        }))
        .collect();
    let title = format!(
        " Owners by {} ({}) · sorted by {} · ! suspect × refused{} ",
        app.group_title(),
        lines.len(),
        sort.title(),
        if lines.iter().any(OwnerLine::faded) {
            " · faded: exited"
        } else {
            ""
        },
    );
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(Span::styled(title, TITLE)))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(app.selected_index(&lines));
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_drill(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(line) = app.drilled() else {
        let msg = Paragraph::new("This owner is gone. Esc goes back.")
            .block(Block::bordered().title(" Owner "));
        frame.render_widget(msg, area);
        return;
    };
    let facts = facts_of(app, &line);
    let conns = app.drilled_connections();
    // The attribution gets what the connections (up to half the pane) leave.
    let conn_rows = (conns.len() as u16 + 3).min(area.height / 2);
    let height = (facts.len() as u16 + 2)
        .min(area.height.saturating_sub(conn_rows))
        .max(3);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(3)]).areas(area);
    let title = format!(" {} — Esc goes back ", printable(&line.label));
    frame.render_widget(
        Paragraph::new(facts)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(title, TITLE))),
        top,
    );
    let header = Row::new(["PID", "SERVER", "LOCAL", "STATE", "AGE"]).style(TITLE);
    let rows = conns.iter().map(|c| {
        let state_style = match c.state {
            "CLOSE_WAIT" => WARN,
            "ESTABLISHED" => Style::new(),
            _ => DIM,
        };
        Row::new(vec![
            Cell::from(c.owner.tgid.to_string()),
            Cell::from(c.server.clone()),
            Cell::from(match &c.server_sees {
                Some(seen) => format!("{}:{} → {seen}", c.local_ip, c.local_port),
                None => format!("{}:{}", c.local_ip, c.local_port),
            }),
            Cell::from(c.state).style(state_style),
            Cell::from(age(Some(c.age_secs), c.seeded)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(24),
            Constraint::Length(24),
            Constraint::Length(12),
            Constraint::Length(10),
        ],
    )
    .header(header)
    .block(Block::bordered().title(Span::styled(
        format!(" Connections ({}) ", conns.len()),
        TITLE,
    )));
    frame.render_widget(table, bottom);
}

/// The full attribution of a drilled-into owner, one `key: value` line each.
fn facts_of(app: &App, line: &OwnerLine) -> Vec<Line<'static>> {
    let mut out = vec![
        kv("kind", &line.kind),
        kv(
            "pids",
            &line
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        kv("user", &line.user),
        kv(
            "counts",
            &format!(
                "open {}  Δ/min {:+.1}  opened {}  closed {}  rejected {}  close_wait {}  oldest {}",
                line.open,
                line.growth,
                line.opened,
                line.closed,
                line.rejected,
                line.close_wait,
                age(line.oldest, line.oldest_seeded)
            ),
        ),
    ];
    let Some(snap) = &app.snapshot else {
        return out;
    };
    for s in snap
        .rows
        .suspects
        .iter()
        .filter(|s| super::app::concerns(s, line))
    {
        out.push(Line::from(vec![
            Span::styled(format!("{:>16}: ", "suspect"), CRIT),
            Span::raw(format!("{} (score {:.1})", s.reason, s.score)),
        ]));
    }
    for v in snap
        .rows
        .victims
        .iter()
        .filter(|v| line.pids.contains(&v.pid))
    {
        out.push(Line::from(vec![
            Span::styled(format!("{:>16}: ", "refused"), WARN),
            Span::raw(format!("pid {} {}", v.pid, v.reason)),
        ]));
    }
    if let RowId::Process(key) = &line.id
        && let Some(p) = snap.rows.processes.iter().find(|p| p.key == *key)
    {
        let w = &p.who;
        let opt = |v: &Option<String>| v.clone();
        for (k, v) in [
            ("service", Some(w.service.clone())),
            ("hbase role", w.hbase_role.map(str::to_owned)),
            ("yarn container", opt(&w.yarn_container)),
            ("yarn application", opt(&w.yarn_application)),
            ("unit", opt(&w.unit)),
            ("pod", opt(&w.pod_uid)),
            ("container", opt(&w.container_id)),
            ("main class", opt(&w.main_class)),
            ("rule", opt(&w.rule)),
            ("cgroup", opt(&p.cgroup)),
            ("cgroup v1", opt(&p.cgroup_v1)),
            ("command", opt(&p.cmdline)),
        ] {
            if let Some(v) = v {
                out.push(kv(k, &v));
            }
        }
        if !p.alive {
            out.push(kv("state", "exited"));
        }
        if !p.held_by.is_empty() {
            let holders: Vec<String> = p
                .held_by
                .iter()
                .map(|h| format!("{} {} ({})", h.pid, h.comm, h.connections))
                .collect();
            out.push(kv("held by", &holders.join(", ")));
        }
    }
    out
}

fn kv(key: &str, value: &str) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{key:>16}: "), DIM),
        Span::raw(printable(value)),
    ])
}

fn render_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let typing = app.past.as_ref().and_then(|p| p.typing.as_ref());
    let line = if let Some(text) = typing {
        Line::from(vec![
            Span::styled("time: ", TITLE),
            Span::raw(format!("{text}▏")),
            Span::styled("  RFC 3339, HH:MM, -2h or now · Enter go · Esc cancel", DIM),
        ])
    } else if let Some(note) = app.past.as_ref().and_then(|p| p.note.as_ref())
        && app.editing.is_none()
    {
        Line::styled(format!("{note} · [ ] step · t go to a time"), CRIT)
    } else if app.past.is_some() && app.editing.is_none() && !app.clients_view {
        Line::styled(
            "q quit · ? help · [ ] earlier/later sample · t go to a time · g group · s sort · / filter · Enter drill down",
            DIM,
        )
    } else if let Some(text) = &app.editing {
        Line::from(vec![
            Span::styled("filter: ", TITLE),
            Span::raw(format!("{text}▏")),
            Span::styled("  Enter apply · Esc cancel", DIM),
        ])
    } else if let Some(log) = &app.last_log {
        Line::styled(footer_log(log), WARN)
    } else if app.clients_view {
        Line::styled(
            "q quit · ? help · ↑↓ select · Enter a client host's connections · Esc back · c owners · p pause",
            DIM,
        )
    } else if !app.client_rows().is_empty() {
        Line::styled(
            "q quit · ? help · g group · s/</> sort · r reverse · / filter · Enter drill down · c client hosts · p pause",
            DIM,
        )
    } else {
        Line::styled(
            "q quit · ? help · g group · s/</> sort · r reverse · / filter · Enter drill down · p pause",
            DIM,
        )
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A log line as the footer shows it: its time of day and its message, without the date,
/// level and module that a terminal line has no room for (all of it is printed on exit).
pub fn footer_log(line: &str) -> String {
    let mut words = line
        .splitn(4, char::is_whitespace)
        .filter(|w| !w.is_empty());
    let (Some(stamp), Some(_level)) = (words.next(), words.next()) else {
        return line.to_owned();
    };
    let rest: String = line
        .split_once(stamp)
        .map_or(line, |(_, r)| r)
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or("", |(_, r)| r)
        .trim_start()
        .to_owned();
    // `zkconn::alarm: message`
    let message = match rest.split_once(": ") {
        Some((module, m)) if module.starts_with("zkconn") => m,
        _ => rest.as_str(),
    };
    match stamp.split_once('T') {
        Some((_, time)) if stamp.len() >= 19 => {
            format!("{} {message}", time.get(..8).unwrap_or(time))
        }
        _ => line.to_owned(),
    }
}

const HELP: &[(&str, &str)] = &[
    ("↑ ↓ j k PgUp PgDn", "select an owner"),
    (
        "Enter",
        "drill into the owner: its connections and attribution",
    ),
    ("Esc ← Backspace", "back from the drill-down"),
    (
        "g",
        "group by process → cgroup → YARN application → service",
    ),
    ("s  >  <", "sort by the next / previous column shown"),
    ("r", "reverse the sort"),
    ("/", "filter: owner, pid, user, IP, container, app, unit"),
    ("c", "client hosts, on a server's host; Enter: connections"),
    ("p  Space", "pause / resume refreshing"),
    (
        "[  ]  t",
        "with --history: earlier / later sample, go to a time",
    ),
    ("?  F1", "this help"),
    ("q  Ctrl-C", "quit"),
    ("any key", "close this help"),
];

fn render_help(frame: &mut Frame<'_>, area: Rect) {
    let width = area.width.min(76);
    let height = (HELP.len() as u16 + 6).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let mut lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!("{k:>18}  "), TITLE),
                Span::raw(*v),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "! a leak suspect, × refused (docs/suspects.md). Any key closes this help.",
        DIM,
    ));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(Span::styled(" Keys ", TITLE))),
        popup,
    );
}
