//! The view state of `zkconn top` and everything keys do to it. Pure: it eats snapshots and
//! key events and says what the screen shows; `render` draws it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    attribution::hierarchy::Hierarchy,
    model::{
        CgroupKey, ClientRow, ConnectionRow, Level, ListenerRow, RowId, Snapshot, Suspect, Totals,
    },
};

/// Points kept per owner for its sparkline (one per refresh).
pub const SPARK_POINTS: usize = 40;

/// The groupings of the owners table, in the order `g` cycles through them (YARN
/// containers are cgroup rows).
pub const GROUPS: [Level; 4] = [
    Level::Process,
    Level::Cgroup,
    Level::Application,
    Level::Service,
];

fn next_group(group: Level) -> Level {
    let i = GROUPS.iter().position(|g| *g == group).unwrap_or(0);
    GROUPS[(i + 1) % GROUPS.len()]
}

/// The name of a grouping in the table's title.
pub fn group_name(group: Level) -> &'static str {
    match group {
        Level::Application => "YARN application",
        Level::Container => "YARN container",
        other => other.as_str(),
    }
}

/// Columns of the owners table, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Owner,
    Kind,
    /// The YARN application, else the systemd unit, pod or container it runs in.
    Within,
    /// The budgets (local IP → server) its connections count against.
    Budget,
    Pids,
    User,
    Open,
    Growth,
    Opened,
    Closed,
    Rejected,
    CloseWait,
    Oldest,
    Trend,
}

impl Column {
    pub const ALL: [Column; 14] = [
        Column::Owner,
        Column::Kind,
        Column::Within,
        Column::Budget,
        Column::Pids,
        Column::User,
        Column::Open,
        Column::Growth,
        Column::Opened,
        Column::Closed,
        Column::Rejected,
        Column::CloseWait,
        Column::Oldest,
        Column::Trend,
    ];
    /// Which columns survive a narrow terminal first.
    pub const PRIORITY: [Column; 14] = [
        Column::Owner,
        Column::Open,
        Column::Growth,
        Column::Rejected,
        Column::Kind,
        Column::Pids,
        Column::CloseWait,
        Column::Within,
        Column::Oldest,
        Column::Budget,
        Column::Trend,
        Column::User,
        Column::Opened,
        Column::Closed,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Kind => "KIND",
            Self::Within => "APPLICATION/UNIT",
            Self::Budget => "FROM → SERVER",
            Self::Pids => "PID",
            Self::User => "USER",
            Self::Open => "OPEN",
            Self::Growth => "Δ/MIN",
            Self::Opened => "OPENED",
            Self::Closed => "CLOSED",
            Self::Rejected => "REJECTED",
            Self::CloseWait => "CLOSE_WAIT",
            Self::Oldest => "OLDEST",
            Self::Trend => "TREND",
        }
    }

    /// The title beside a sort arrow in a column too narrow for both.
    pub fn short_title(self) -> &'static str {
        match self {
            Self::Rejected => "REJ",
            other => other.title(),
        }
    }

    fn sortable(self) -> bool {
        self != Self::Trend
    }
}

/// One row of the owners table.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerLine {
    /// Identifies the owner across refreshes (selection, sparklines, drill-down).
    pub id: RowId,
    pub label: String,
    pub kind: String,
    pub pids: Vec<u32>,
    pub user: String,
    pub open: u64,
    pub growth: f64,
    pub opened: u64,
    pub closed: u64,
    pub rejected: u64,
    pub close_wait: u64,
    pub oldest: Option<f64>,
    pub oldest_seeded: bool,
    pub suspect: bool,
    /// One of its processes was refused in the window and is no suspect.
    pub victim: bool,
    /// The YARN application, else the unit, pod or container it runs in; empty when none
    /// or several.
    pub within: String,
    /// The budgets its open connections count against, `LOCAL_IP → SERVER`, sorted.
    pub budgets: Vec<String>,
    /// Every process of it has exited (its row stays for `--retain-exited`): drawn faded.
    pub exited: bool,
    /// What else the filter finds it by: its processes' budgets (`SERVER from LOCAL_IP`),
    /// YARN containers and applications, units, pods, cgroup paths.
    pub also: Vec<String>,
}

impl OwnerLine {
    /// Exited and holding nothing: drawn faded.
    pub fn faded(&self) -> bool {
        self.exited && self.open == 0 && self.close_wait == 0
    }

    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || [&self.label, &self.kind, &self.user]
                .into_iter()
                .chain(&self.also)
                .any(|h| h.to_lowercase().contains(needle))
            || self.pids.iter().any(|p| p.to_string() == needle)
    }
}

impl Past {
    /// The keys of time travel: `[` and `]` step, `t` types a time (Enter goes there, Esc
    /// does not). Whether the key was one of them.
    fn on_key(&mut self, key: KeyEvent) -> bool {
        if let Some(text) = &mut self.typing {
            match key.code {
                // Enter on nothing typed goes nowhere, as Esc.
                KeyCode::Enter => {
                    let typed = std::mem::take(text);
                    if !typed.trim().is_empty() {
                        self.request = Some(Travel::To(typed));
                    }
                    self.typing = None;
                }
                KeyCode::Esc => self.typing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(_)
                    if key
                        .modifiers
                        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {}
                // A time is short: RFC 3339 with an offset is 25 characters.
                KeyCode::Char(c) if text.chars().count() < 40 => text.push(c),
                _ => {}
            }
            return true;
        }
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return false;
        }
        match key.code {
            KeyCode::Char('[') => self.request = Some(Travel::Step(-1)),
            KeyCode::Char(']') => self.request = Some(Travel::Step(1)),
            KeyCode::Char('t') => self.typing = Some(String::new()),
            _ => return false,
        }
        true
    }
}

/// Header rates: per second between the last two refreshes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerSecond {
    pub opened: f64,
    pub closed: f64,
    pub failed: f64,
    pub rejected: f64,
}

/// `top --history`: the view is of a past sample of the history store, not live.
#[derive(Clone, Debug, Default)]
pub struct Past {
    /// The store read.
    pub store: String,
    /// The sample shown: its time, its place among the store's samples (from 0), and how
    /// many the store holds.
    pub at_ms: i64,
    pub index: usize,
    pub count: usize,
    /// The time being typed after `t`.
    pub typing: Option<String>,
    /// Where the keys asked to go next (the loop reads and clears it).
    pub request: Option<Travel>,
    /// Why the last move failed (a time the store does not hold), until the next one.
    pub note: Option<String>,
}

/// A move in time asked by a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Travel {
    /// `[` (-1) or `]` (+1) samples.
    Step(i64),
    /// `t`: a time as `history --at` takes it.
    To(String),
}

#[derive(Debug, Default)]
pub struct App {
    pub snapshot: Option<Snapshot>,
    /// `top --history`: the past sample shown.
    pub past: Option<Past>,
    pub connections: Vec<ConnectionRow>,
    /// A refresh that arrived while paused, shown on resume.
    pending: Option<(Snapshot, Vec<ConnectionRow>)>,
    pub totals: Totals,
    /// Per second since the previous refresh; `None` until there was one.
    pub rates: Option<PerSecond>,
    previous: Option<(f64, Totals)>,
    pub group: Level,
    pub sort: Option<Column>,
    pub ascending: bool,
    pub filter: String,
    /// The filter being typed (after `/`).
    pub editing: Option<String>,
    pub selected: Option<RowId>,
    pub drill: Option<RowId>,
    /// `c`: the client hosts of this host's listeners in place of the owners.
    pub clients_view: bool,
    /// The client host selected there, and the one drilled into: (listener, client IP).
    pub client_selected: Option<(String, String)>,
    pub client_drill: Option<(String, String)>,
    pub paused: bool,
    pub help: bool,
    pub quit: bool,
    /// The owners table's columns as last drawn (sorting moves among these only); all
    /// until the first draw.
    pub shown: Vec<Column>,
    /// The latest log line (alarm transitions), shown in the footer.
    pub last_log: Option<String>,
    /// Why the last refresh failed (a kernel map that cannot be read): shown in the header
    /// over the last good snapshot, until a refresh succeeds.
    pub error: Option<String>,
    sparks: HashMap<RowId, VecDeque<u64>>,
    /// Per pid, every budget (`SERVER from LOCAL_IP`) it was seen to use while it is in the
    /// snapshot: the filter still finds a process by IP once its connections are gone.
    remembered: HashMap<u32, BTreeSet<String>>,
}

impl App {
    /// Takes a fresh snapshot (held back while paused).
    pub fn update(&mut self, snapshot: Snapshot, connections: Vec<ConnectionRow>) {
        if self.paused {
            self.pending = Some((snapshot, connections));
            return;
        }
        self.apply(snapshot, connections);
    }

    fn apply(&mut self, snapshot: Snapshot, connections: Vec<ConnectionRow>) {
        let mut t = Totals::default();
        for s in &snapshot.rows.servers {
            t.absorb(&Totals {
                open: s.states.open,
                close_wait: s.states.close_wait,
                opened: s.opened,
                closed: s.closed,
                failed: s.failed,
                rejected: s.rejected,
                ..Totals::default()
            });
        }
        let now = snapshot.observed_secs;
        if let Some((then, before)) = self.previous {
            let dt = now - then;
            if dt > 0.0 {
                let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                self.rates = Some(PerSecond {
                    opened: per_sec(t.opened, before.opened),
                    closed: per_sec(t.closed, before.closed),
                    failed: per_sec(t.failed, before.failed),
                    rejected: per_sec(t.rejected, before.rejected),
                });
            }
        }
        self.previous = Some((now, t));
        self.totals = t;
        self.record_sparks(&snapshot);
        self.remember_budgets(&snapshot);
        self.snapshot = Some(snapshot);
        self.connections = connections;
        if self.selected.is_none() {
            self.selected = self.lines().first().map(|l| l.id.clone());
        }
    }

    /// Forgets what earlier refreshes left (sparklines, rates, remembered budgets): the next
    /// updates are of another time.
    pub fn forget_trends(&mut self) {
        self.sparks.clear();
        self.remembered.clear();
        self.previous = None;
        self.rates = None;
        self.pending = None;
    }

    /// One point per owner of every grouping; owners no longer present are forgotten.
    fn record_sparks(&mut self, snap: &Snapshot) {
        let mut seen = HashSet::new();
        for group in GROUPS {
            for line in lines_of(snap, group) {
                let points = self.sparks.entry(line.id.clone()).or_default();
                if points.len() == SPARK_POINTS {
                    points.pop_front();
                }
                points.push_back(line.open);
                seen.insert(line.id);
            }
        }
        self.sparks.retain(|id, _| seen.contains(id));
    }

    /// What each process used, kept while it is in the snapshot.
    fn remember_budgets(&mut self, snap: &Snapshot) {
        let r = &snap.rows;
        let present: HashSet<u32> = r.processes.iter().map(|p| p.pid).collect();
        self.remembered.retain(|pid, _| present.contains(pid));
        for p in &r.processes {
            let seen = self.remembered.entry(p.pid).or_default();
            for s in &p.servers {
                seen.insert(format!("{} from {}", s.server, s.local_ip));
            }
        }
        for v in &r.victims {
            let seen = self.remembered.entry(v.pid).or_default();
            for b in &v.refused_at {
                seen.insert(format!("{} from {}", b.server, b.local_ip));
            }
        }
    }

    pub fn spark(&self, id: &RowId) -> Vec<u64> {
        self.sparks
            .get(id)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The owners table as shown: grouped, filtered, sorted.
    pub fn lines(&self) -> Vec<OwnerLine> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut lines: Vec<OwnerLine> = lines_of(snap, self.group)
            .into_iter()
            .filter(|l| {
                l.matches(&needle)
                    || (!needle.is_empty()
                        && l.pids.iter().any(|p| {
                            self.remembered
                                .get(p)
                                .is_some_and(|seen| seen.iter().any(|b| b.contains(&needle)))
                        }))
            })
            .collect();
        let column = self.sort.unwrap_or(Column::Open);
        lines.sort_by(|a, b| {
            let order = compare(a, b, column);
            let order = if self.ascending {
                order
            } else {
                order.reverse()
            };
            order.then(b.open.cmp(&a.open)).then(a.label.cmp(&b.label))
        });
        lines
    }

    /// What the owners table groups by; for cgroups, by which hierarchy (`cgroup v1:cpu`):
    /// the rows' own, else the host's.
    pub fn group_title(&self) -> String {
        let Some(snap) = self
            .snapshot
            .as_ref()
            .filter(|_| self.group == Level::Cgroup)
        else {
            return group_name(self.group).to_owned();
        };
        let mut used: Vec<Hierarchy> = snap.rows.cgroups.iter().map(|c| c.hierarchy).collect();
        used.sort_unstable();
        used.dedup();
        if used.is_empty() {
            used.push(snap.cgroups_hierarchy);
        }
        let names: Vec<&str> = used.iter().map(|h| h.as_str()).collect();
        format!("cgroup {}", names.join("+"))
    }

    /// The line of the drilled-into owner, if it is still there.
    pub fn drilled(&self) -> Option<OwnerLine> {
        let id = self.drill.as_ref()?;
        let snap = self.snapshot.as_ref()?;
        lines_of(snap, self.group).into_iter().find(|l| &l.id == id)
    }

    /// Connections of the drilled-into owner.
    pub fn drilled_connections(&self) -> Vec<&ConnectionRow> {
        let Some(line) = self.drilled() else {
            return Vec::new();
        };
        self.connections
            .iter()
            .filter(|c| match &line.id {
                RowId::Process(key) => c.owner == *key,
                // Processes counted by a v1 cgroup connect from this id too.
                RowId::Cgroup(CgroupKey::V2(id)) => {
                    c.cgroup_id == *id && line.pids.contains(&c.owner.tgid)
                }
                _ => line.pids.contains(&c.owner.tgid),
            })
            .collect()
    }

    /// The client hosts, as the snapshot ranks them (most used first).
    pub fn client_rows(&self) -> &[ClientRow] {
        self.snapshot
            .as_ref()
            .map_or(&[], |s| s.rows.clients.as_slice())
    }

    /// Where the selected client host is among [`App::client_rows`].
    pub fn selected_client_index(&self) -> Option<usize> {
        let (listener, ip) = self.client_selected.as_ref()?;
        self.client_rows()
            .iter()
            .position(|c| &c.listener == listener && &c.client_ip == ip)
    }

    /// The client host drilled into, if it is still there.
    pub fn drilled_client(&self) -> Option<&ClientRow> {
        let (listener, ip) = self.client_drill.as_ref()?;
        self.client_rows()
            .iter()
            .find(|c| &c.listener == listener && &c.client_ip == ip)
    }

    /// The listener row of `listener`, if known.
    pub fn listener(&self, listener: &str) -> Option<&ListenerRow> {
        self.snapshot
            .as_ref()?
            .rows
            .listeners
            .iter()
            .find(|l| l.listener == listener)
    }

    fn move_client_selection(&mut self, step: isize) {
        if self.client_drill.is_some() {
            return;
        }
        let rows = self.client_rows();
        if rows.is_empty() {
            return;
        }
        let i = self.selected_client_index().unwrap_or(0) as isize;
        let j = i.saturating_add(step).clamp(0, rows.len() as isize - 1) as usize;
        self.client_selected = Some((rows[j].listener.clone(), rows[j].client_ip.clone()));
    }

    /// The keys of the client-host view; false for a key every view shares.
    fn on_client_key(&mut self, code: KeyCode) -> bool {
        match code {
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left if self.client_drill.is_some() => {
                self.client_drill = None;
            }
            KeyCode::Esc | KeyCode::Char('c') => {
                self.clients_view = false;
                self.client_drill = None;
            }
            KeyCode::Enter if self.client_drill.is_none() => {
                if self.selected_client_index().is_none() {
                    self.move_client_selection(0);
                }
                self.client_drill = self.client_selected.clone();
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_client_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_client_selection(-1),
            KeyCode::PageDown => self.move_client_selection(10),
            KeyCode::PageUp => self.move_client_selection(-10),
            KeyCode::Home => self.move_client_selection(isize::MIN / 2),
            KeyCode::End => self.move_client_selection(isize::MAX / 2),
            // Quit, help and pause act in every view; the owners' keys do not act here.
            KeyCode::Char('q' | '?' | 'p' | ' ') | KeyCode::F(1) => return false,
            _ => {}
        }
        true
    }

    pub fn selected_index(&self, lines: &[OwnerLine]) -> Option<usize> {
        let id = self.selected.as_ref()?;
        lines.iter().position(|l| &l.id == id)
    }

    pub fn on_key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if let Some(text) = &mut self.editing {
            match key.code {
                KeyCode::Enter => {
                    self.filter = std::mem::take(text);
                    self.editing = None;
                    self.selected = self.lines().first().map(|l| l.id.clone());
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                // The line editor's own: Ctrl-U clears, Ctrl-W takes the last word back.
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    text.clear();
                }
                KeyCode::Char('w') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    let kept = text
                        .trim_end()
                        .rfind(char::is_whitespace)
                        .map_or(0, |i| i + 1);
                    text.truncate(kept);
                }
                // Any other chord is no text.
                KeyCode::Char(_)
                    if key
                        .modifiers
                        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) => {}
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return;
        }
        if self.help {
            // Any key closes the help, q included: a key pressed to leave a page never
            // leaves the program.
            self.help = false;
            return;
        }
        if let Some(past) = &mut self.past
            && past.on_key(key)
        {
            return;
        }
        // A chord (Alt-q, Ctrl-s) is no command: only Ctrl-C, above, acts.
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return;
        }
        if self.clients_view && self.on_client_key(key.code) {
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('c') if self.drill.is_none() && !self.client_rows().is_empty() => {
                self.clients_view = true;
                if self.selected_client_index().is_none() {
                    self.move_client_selection(0);
                }
            }
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left if self.drill.is_some() => {
                self.drill = None;
            }
            // Esc steps back (a drill-down, above); it never quits: q does.
            KeyCode::Esc => {}
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('g') if self.drill.is_none() => {
                self.group = next_group(self.group);
                self.selected = self.lines().first().map(|l| l.id.clone());
            }
            KeyCode::Char('s') | KeyCode::Char('>') => self.move_sort(1),
            KeyCode::Char('<') => self.move_sort(-1),
            KeyCode::Char('r') => self.ascending = !self.ascending,
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Enter if self.drill.is_none() => self.drill = self.selected.clone(),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::Home => self.move_selection(isize::MIN / 2),
            KeyCode::End => self.move_selection(isize::MAX / 2),
            _ => {}
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused
            && let Some((snap, conns)) = self.pending.take()
        {
            self.apply(snap, conns);
        }
    }

    /// Sorts by the next (or previous) sortable column; the first press starts from OPEN.
    fn move_sort(&mut self, step: isize) {
        let sortable: Vec<Column> = Column::ALL
            .into_iter()
            .filter(|c| c.sortable() && (self.shown.is_empty() || self.shown.contains(c)))
            .collect();
        if sortable.is_empty() {
            return;
        }
        let current = self.sort.unwrap_or(Column::Open);
        let i = sortable.iter().position(|c| *c == current).unwrap_or(0) as isize;
        let n = sortable.len() as isize;
        self.sort = Some(sortable[(i + step).rem_euclid(n) as usize]);
        // Names read best A→Z, numbers largest first.
        self.ascending = matches!(
            self.sort,
            Some(
                Column::Owner
                    | Column::Kind
                    | Column::Within
                    | Column::Budget
                    | Column::User
                    | Column::Pids
            )
        );
    }

    fn move_selection(&mut self, step: isize) {
        if self.drill.is_some() {
            return;
        }
        let lines = self.lines();
        if lines.is_empty() {
            return;
        }
        let i = self.selected_index(&lines).unwrap_or(0) as isize;
        let j = i.saturating_add(step).clamp(0, lines.len() as isize - 1) as usize;
        self.selected = Some(lines[j].id.clone());
    }
}

fn compare(a: &OwnerLine, b: &OwnerLine, column: Column) -> std::cmp::Ordering {
    match column {
        Column::Owner | Column::Trend => a.label.cmp(&b.label),
        Column::Kind => a.kind.cmp(&b.kind),
        Column::Pids => a.pids.first().cmp(&b.pids.first()),
        Column::User => a.user.cmp(&b.user),
        Column::Within => a.within.cmp(&b.within),
        Column::Budget => a.budgets.cmp(&b.budgets),
        Column::Open => a.open.cmp(&b.open),
        Column::Growth => a.growth.total_cmp(&b.growth),
        Column::Opened => a.opened.cmp(&b.opened),
        Column::Closed => a.closed.cmp(&b.closed),
        Column::Rejected => a.rejected.cmp(&b.rejected),
        Column::CloseWait => a.close_wait.cmp(&b.close_wait),
        Column::Oldest => a
            .oldest
            .unwrap_or(-1.0)
            .total_cmp(&b.oldest.unwrap_or(-1.0)),
    }
}

/// Whether suspect `s` is the owner of `line` or one of its processes.
pub fn concerns(s: &Suspect, line: &OwnerLine) -> bool {
    s.is_of(&line.id)
        || (s.subject == Level::Process && s.pid.is_some_and(|p| line.pids.contains(&p)))
}

/// The owners of `group` in `snap`, unsorted: the rows as the engine made them.
pub fn lines_of(snap: &Snapshot, group: Level) -> Vec<OwnerLine> {
    let r = &snap.rows;
    // Per process, in one pass: what identifies it beyond its label (for the filter), the
    // budgets it holds connections of, what it runs within, and whether it lives.
    struct Facts {
        also: Vec<String>,
        budgets: Vec<String>,
        within: String,
        alive: bool,
    }
    let facts: HashMap<u32, Facts> = r
        .processes
        .iter()
        .map(|p| {
            let w = &p.who;
            let mut also: Vec<String> = p
                .servers
                .iter()
                .map(|s| format!("{} from {}", s.server, s.local_ip))
                .collect();
            // The processes holding what it connected, once it is gone.
            also.extend(
                p.held_by
                    .iter()
                    .map(|h| format!("held by {} {}", h.pid, h.comm)),
            );
            also.extend(
                [
                    &w.yarn_container,
                    &w.yarn_application,
                    &w.unit,
                    &w.pod_uid,
                    &w.container_id,
                    &p.cgroup,
                    &p.cgroup_v1,
                ]
                .into_iter()
                .flatten()
                .cloned(),
            );
            let budgets = p
                .servers
                .iter()
                .filter(|s| s.open > 0)
                .map(|s| format!("{} → {}", s.local_ip, s.server))
                .collect();
            let within = [&w.yarn_application, &w.unit, &w.pod_uid, &w.container_id]
                .into_iter()
                .flatten()
                .next()
                .cloned()
                .unwrap_or_default();
            let alive = p.alive;
            (
                p.pid,
                Facts {
                    also,
                    budgets,
                    within,
                    alive,
                },
            )
        })
        .collect();
    let line = |id: RowId, label: &str, kind: String, pids: &[u32], users: &[String], t: Totals| {
        let known: Vec<&Facts> = pids.iter().filter_map(|p| facts.get(p)).collect();
        // Sorted, each once.
        let union = |of: fn(&Facts) -> &Vec<String>| {
            let mut v: Vec<String> = known.iter().flat_map(|f| of(f)).cloned().collect();
            v.sort();
            v.dedup();
            v
        };
        let also = union(|f| &f.also);
        let held = union(|f| &f.budgets);
        let mut names: Vec<&str> = known.iter().map(|f| f.within.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let within_name = match names.as_slice() {
            [one] => (*one).to_owned(),
            _ => String::new(),
        };
        let exited = !known.is_empty() && known.iter().all(|f| !f.alive);
        let mut line = OwnerLine {
            id,
            label: label.to_owned(),
            kind,
            pids: pids.to_vec(),
            user: users.join(","),
            open: t.open,
            growth: t.rates.growth_per_min,
            opened: t.opened,
            closed: t.closed,
            rejected: t.rejected,
            close_wait: t.close_wait,
            oldest: t.age.oldest_secs,
            oldest_seeded: t.age.oldest_seeded,
            suspect: false,
            victim: false,
            within: within_name,
            budgets: held,
            exited,
            also,
        };
        line.suspect = r.suspects.iter().any(|s| concerns(s, &line));
        let refused: Vec<&crate::model::Victim> = r
            .victims
            .iter()
            .filter(|v| line.pids.contains(&v.pid))
            .collect();
        line.victim = !refused.is_empty();
        if line.budgets.is_empty() {
            // A victim holds nothing: the budget that refused it is the one it tried.
            let mut tried: Vec<String> = refused
                .iter()
                .flat_map(|v| &v.refused_at)
                .map(|b| format!("{} → {}", b.local_ip, b.server))
                .collect();
            tried.sort();
            tried.dedup();
            line.budgets = tried;
        }
        line
    };
    match group {
        Level::Process => r
            .processes
            .iter()
            .map(|p| {
                let user = p.user_or_uid();
                line(
                    p.id(),
                    &p.who.label,
                    p.who.kind.to_string(),
                    &[p.pid],
                    user.as_slice(),
                    Totals::of(p),
                )
            })
            .collect(),
        Level::Cgroup => r
            .cgroups
            .iter()
            .map(|c| {
                line(
                    c.row_id(),
                    &c.label,
                    c.kind.to_string(),
                    &c.pids,
                    &c.users,
                    c.totals(),
                )
            })
            .collect(),
        Level::Container => r
            .containers
            .iter()
            .map(|c| {
                line(
                    c.id(),
                    &c.container,
                    "yarn".into(),
                    &c.pids,
                    &c.users,
                    c.totals,
                )
            })
            .collect(),
        Level::Application => r
            .applications
            .iter()
            .map(|a| {
                line(
                    a.id(),
                    &a.application,
                    "yarn".into(),
                    &a.pids,
                    &a.users,
                    a.totals,
                )
            })
            .collect(),
        Level::Service => r
            .services
            .iter()
            .map(|v| {
                let kinds: Vec<&str> = v.kinds.iter().map(|k| k.as_str()).collect();
                line(
                    v.id(),
                    &v.service,
                    kinds.join(","),
                    &v.pids,
                    &v.users,
                    v.totals,
                )
            })
            .collect(),
    }
}
