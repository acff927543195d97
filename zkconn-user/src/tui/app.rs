//! The view state of `zkconn top` and everything keys do to it. Pure: it eats snapshots and
//! key events and says what the screen shows; `render` draws it.

use std::collections::{HashMap, HashSet, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    attribution::hierarchy::Hierarchy,
    model::{ConnectionRow, Snapshot},
    verdict::SuspectKind,
};

/// Points kept per owner for its sparkline (one per refresh).
pub const SPARK_POINTS: usize = 40;

/// How owners are grouped in the table (`g` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Group {
    #[default]
    Process,
    Cgroup,
    Application,
    Service,
}

impl Group {
    fn next(self) -> Self {
        match self {
            Self::Process => Self::Cgroup,
            Self::Cgroup => Self::Application,
            Self::Application => Self::Service,
            Self::Service => Self::Process,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Cgroup => "cgroup",
            Self::Application => "YARN application",
            Self::Service => "service",
        }
    }
}

/// Columns of the owners table, in display order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    Owner,
    Kind,
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
    pub const ALL: [Column; 12] = [
        Column::Owner,
        Column::Kind,
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
    pub const PRIORITY: [Column; 12] = [
        Column::Owner,
        Column::Open,
        Column::Growth,
        Column::Rejected,
        Column::Kind,
        Column::CloseWait,
        Column::Pids,
        Column::Oldest,
        Column::Trend,
        Column::User,
        Column::Opened,
        Column::Closed,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Self::Owner => "OWNER",
            Self::Kind => "KIND",
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

    fn sortable(self) -> bool {
        self != Self::Trend
    }
}

/// Identifies an owner across refreshes (selection, sparklines, drill-down).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OwnerId {
    Process(u32, u64),
    /// A cgroup v2 row, by id.
    Cgroup(u64),
    /// A cgroup v1 row, by hierarchy and path.
    CgroupV1(Hierarchy, String),
    Application(String),
    Service(String),
}

/// One row of the owners table.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerLine {
    pub id: OwnerId,
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
}

impl OwnerLine {
    fn matches(&self, needle: &str) -> bool {
        needle.is_empty()
            || [&self.label, &self.kind, &self.user]
                .iter()
                .any(|h| h.to_lowercase().contains(needle))
            || self.pids.iter().any(|p| p.to_string() == needle)
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

/// Header totals, summed over the servers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub open: u64,
    pub opened: u64,
    pub closed: u64,
    pub failed: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub struct App {
    pub snapshot: Option<Snapshot>,
    pub connections: Vec<ConnectionRow>,
    /// A refresh that arrived while paused, shown on resume.
    pending: Option<(Snapshot, Vec<ConnectionRow>)>,
    pub totals: Totals,
    /// Per second since the previous refresh; `None` until there was one.
    pub rates: Option<PerSecond>,
    previous: Option<(f64, Totals)>,
    pub group: Group,
    pub sort: Option<Column>,
    pub ascending: bool,
    pub filter: String,
    /// The filter being typed (after `/`).
    pub editing: Option<String>,
    pub selected: Option<OwnerId>,
    pub drill: Option<OwnerId>,
    pub paused: bool,
    pub help: bool,
    pub quit: bool,
    /// The latest log line (alarm transitions), shown in the footer.
    pub last_log: Option<String>,
    /// Why the last refresh failed (a kernel map that cannot be read): shown in the header
    /// over the last good snapshot, until a refresh succeeds.
    pub error: Option<String>,
    sparks: HashMap<OwnerId, VecDeque<u64>>,
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
            t.open += s.states.open;
            t.opened += s.opened;
            t.closed += s.closed;
            t.failed += s.failed;
            t.rejected += s.rejected;
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
        self.snapshot = Some(snapshot);
        self.connections = connections;
        if self.selected.is_none() {
            self.selected = self.lines().first().map(|l| l.id.clone());
        }
    }

    /// One point per owner of every grouping; owners no longer present are forgotten.
    fn record_sparks(&mut self, snap: &Snapshot) {
        let mut seen = HashSet::new();
        for group in [
            Group::Process,
            Group::Cgroup,
            Group::Application,
            Group::Service,
        ] {
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

    pub fn spark(&self, id: &OwnerId) -> Vec<u64> {
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
            .filter(|l| l.matches(&needle))
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
            .filter(|_| self.group == Group::Cgroup)
        else {
            return self.group.name().to_owned();
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
                OwnerId::Process(pid, birth) => c.owner.tgid == *pid && c.owner.birth_ns == *birth,
                // Processes counted by a v1 cgroup connect from this id too.
                OwnerId::Cgroup(id) => c.cgroup_id == *id && line.pids.contains(&c.owner.tgid),
                _ => line.pids.contains(&c.owner.tgid),
            })
            .collect()
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
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if key.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left if self.drill.is_some() => {
                self.drill = None;
            }
            KeyCode::Esc => self.quit = true,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('g') if self.drill.is_none() => {
                self.group = self.group.next();
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
        let sortable: Vec<Column> = Column::ALL.into_iter().filter(|c| c.sortable()).collect();
        let current = self.sort.unwrap_or(Column::Open);
        let i = sortable.iter().position(|c| *c == current).unwrap_or(0) as isize;
        let n = sortable.len() as isize;
        self.sort = Some(sortable[(i + step).rem_euclid(n) as usize]);
        // Names read best A→Z, numbers largest first.
        self.ascending = matches!(
            self.sort,
            Some(Column::Owner | Column::Kind | Column::User | Column::Pids)
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

/// The owners of `group` in `snap`, unsorted.
pub fn lines_of<'a>(snap: &'a Snapshot, group: Group) -> Vec<OwnerLine> {
    let r = &snap.rows;
    let suspect = |kind: SuspectKind, matches: &dyn Fn(&crate::model::Suspect) -> bool| {
        r.suspects.iter().any(|s| s.subject == kind && matches(s))
    };
    match group {
        Group::Process => r
            .processes
            .iter()
            .map(|p| OwnerLine {
                id: OwnerId::Process(p.pid, p.key.birth_ns),
                label: p.who.label.clone(),
                kind: p.who.kind.to_string(),
                pids: vec![p.pid],
                user: p
                    .user
                    .clone()
                    .or_else(|| p.uid.map(|u| u.to_string()))
                    .unwrap_or_default(),
                open: p.states.open,
                growth: p.rates.growth_per_min,
                opened: p.opened,
                closed: p.closed,
                rejected: p.rejected,
                close_wait: p.states.close_wait,
                oldest: p.age.oldest_secs,
                oldest_seeded: p.age.oldest_seeded,
                suspect: suspect(SuspectKind::Process, &|s| s.pid == Some(p.pid)),
            })
            .collect(),
        Group::Cgroup => {
            // Processes by cgroup row, once, rather than a scan of all processes per cgroup.
            type Key<'a> = (Hierarchy, u64, Option<&'a str>);
            let key_of = |p: &'a crate::model::ProcessRow| -> Key<'a> {
                match p.cgroup_hierarchy {
                    Hierarchy::V2 => (Hierarchy::V2, p.cgroup_id, None),
                    h => (h, 0, p.cgroup_v1.as_deref()),
                }
            };
            let mut by_cgroup: HashMap<Key<'_>, Vec<&crate::model::ProcessRow>> = HashMap::new();
            for p in &r.processes {
                by_cgroup.entry(key_of(p)).or_default().push(p);
            }
            r.cgroups
                .iter()
                .map(|c| {
                    let (key, id) = match c.hierarchy {
                        Hierarchy::V2 => ((Hierarchy::V2, c.id, None), OwnerId::Cgroup(c.id)),
                        h => (
                            (h, 0, c.path.as_deref()),
                            OwnerId::CgroupV1(h, c.path.clone().unwrap_or_default()),
                        ),
                    };
                    let members: Vec<_> = by_cgroup
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|p| c.pids.contains(&p.pid))
                        .collect();
                    let users: HashSet<&str> =
                        members.iter().filter_map(|p| p.user.as_deref()).collect();
                    let mut oldest: Option<(f64, bool)> = None;
                    for p in &members {
                        if let Some(o) = p.age.oldest_secs
                            && oldest.is_none_or(|(s, _)| o > s)
                        {
                            oldest = Some((o, p.age.oldest_seeded));
                        }
                    }
                    OwnerLine {
                        id,
                        label: c.label.clone(),
                        kind: c.kind.to_string(),
                        pids: c.pids.clone(),
                        user: joined(users),
                        open: c.states.open,
                        growth: members.iter().map(|p| p.rates.growth_per_min).sum(),
                        opened: c.opened,
                        closed: c.closed,
                        rejected: members.iter().map(|p| p.rejected).sum(),
                        close_wait: c.states.close_wait,
                        oldest: oldest.map(|o| o.0),
                        oldest_seeded: oldest.is_some_and(|o| o.1),
                        suspect: members
                            .iter()
                            .any(|p| suspect(SuspectKind::Process, &|s| s.pid == Some(p.pid))),
                    }
                })
                .collect()
        }
        Group::Application => r
            .applications
            .iter()
            .map(|a| {
                let pids: Vec<u32> = r
                    .processes
                    .iter()
                    .filter(|p| p.who.yarn_application.as_ref() == Some(&a.application))
                    .map(|p| p.pid)
                    .collect();
                let users: HashSet<&str> = r
                    .processes
                    .iter()
                    .filter(|p| pids.contains(&p.pid))
                    .filter_map(|p| p.user.as_deref())
                    .collect();
                OwnerLine {
                    id: OwnerId::Application(a.application.clone()),
                    label: a.application.clone(),
                    kind: "yarn".into(),
                    user: joined(users),
                    suspect: suspect(SuspectKind::Application, &|s| {
                        s.application.as_ref() == Some(&a.application) && s.container.is_none()
                    }) || r
                        .suspects
                        .iter()
                        .any(|s| s.pid.is_some_and(|p| pids.contains(&p))),
                    pids,
                    open: a.totals.open,
                    growth: a.totals.rates.growth_per_min,
                    opened: a.totals.opened,
                    closed: a.totals.closed,
                    rejected: a.totals.rejected,
                    close_wait: a.totals.close_wait,
                    oldest: a.totals.age.oldest_secs,
                    oldest_seeded: a.totals.age.oldest_seeded,
                }
            })
            .collect(),
        Group::Service => r
            .services
            .iter()
            .map(|v| {
                let users: HashSet<&str> = r
                    .processes
                    .iter()
                    .filter(|p| v.pids.contains(&p.pid))
                    .filter_map(|p| p.user.as_deref())
                    .collect();
                OwnerLine {
                    id: OwnerId::Service(v.service.clone()),
                    label: v.service.clone(),
                    kind: v
                        .kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    pids: v.pids.clone(),
                    user: joined(users),
                    open: v.totals.open,
                    growth: v.totals.rates.growth_per_min,
                    opened: v.totals.opened,
                    closed: v.totals.closed,
                    rejected: v.totals.rejected,
                    close_wait: v.totals.close_wait,
                    oldest: v.totals.age.oldest_secs,
                    oldest_seeded: v.totals.age.oldest_seeded,
                    suspect: suspect(SuspectKind::Service, &|s| {
                        s.service.as_ref() == Some(&v.service)
                    }) || r
                        .suspects
                        .iter()
                        .any(|s| s.pid.is_some_and(|p| v.pids.contains(&p))),
                }
            })
            .collect(),
    }
}

fn joined(set: HashSet<&str>) -> String {
    let mut v: Vec<&str> = set.into_iter().collect();
    v.sort_unstable();
    v.join(",")
}
