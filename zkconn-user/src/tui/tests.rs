//! Screens drawn on ratatui's `TestBackend` and compared with insta snapshots, and the key
//! handling, on fixed snapshots.

use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
};
use zkconn_common::OwnerKey;

use super::{
    app::{App, Column},
    render,
};
use crate::{
    alarm::Thresholds,
    attribution::{Attribution, Kind},
    model::{
        self, Age, CgroupKey, ConnectionRow, Level, ProcessRow, RowId, Rows, ServerOpen, ServerRow,
        Snapshot, Suspect,
    },
    verdict::{Alarm, Rates},
};

const C1: &str = "container_e17_1700000000000_0042_01_000002";
const APP: &str = "application_1700000000000_0042";

fn process(pid: u32, label: &str, kind: Kind, open: u64) -> ProcessRow {
    let mut p = ProcessRow::for_test(pid);
    p.who = Attribution {
        kind,
        service: label.into(),
        label: label.into(),
        ..Attribution::default()
    };
    p.user = Some("hbase".into());
    p.states.open = open;
    p.states.established = open;
    p.opened = open;
    p.servers = vec![ServerOpen {
        server: "10.0.0.1:2181".into(),
        local_ip: "10.0.0.9".into(),
        open,
    }];
    p
}

/// The row id of process `pid` as the fixtures make it.
fn process_id(pid: u32) -> RowId {
    RowId::Process(OwnerKey {
        tgid: pid,
        _pad: 0,
        birth_ns: 1,
    })
}

fn server(name: &str, open: u64, limit: u32) -> ServerRow {
    let mut s = ServerRow::for_test(name, "10.0.0.9", open, limit);
    s.opened = open + 10;
    s.closed = 10;
    s.alarm = Thresholds::default().evaluate(s.usage, s.refusing);
    s
}

/// An HBase RegionServer holding 12 sessions since before zkconn, a YARN container
/// leaking, a NodeManager, and an HDFS ZKFC in its unit.
fn typical() -> Snapshot {
    let mut rs = process(4100, "HBase RegionServer", Kind::Hbase, 12);
    rs.who.hbase_role = Some("RegionServer");
    rs.cmdline = Some(
        "java -Dproc_regionserver org.apache.hadoop.hbase.regionserver.HRegionServer start".into(),
    );
    rs.age = Age {
        oldest_secs: Some(10_800.0),
        oldest_seeded: true,
        close_wait_held: 0,
    };
    rs.seeded = 12;
    let mut leak = process(5200, &format!("Spark executor in {C1}"), Kind::Yarn, 9);
    leak.who.service = "Spark executor".into();
    leak.who.yarn_container = Some(C1.into());
    leak.who.yarn_application = Some(APP.into());
    leak.user = Some("alice".into());
    leak.opened = 9;
    leak.rates = Rates {
        growth_per_min: 1.5,
        opened_per_min: 1.5,
        closed_per_min: 0.0,
    };
    leak.age.oldest_secs = Some(360.0);
    let mut nm = process(3300, "YARN NodeManager", Kind::Process, 2);
    nm.user = Some("yarn".into());
    nm.age.oldest_secs = Some(7200.0);
    nm.age.oldest_seeded = true;
    let mut zkfc = process(
        2900,
        "HDFS ZKFC (hadoop-hdfs-zkfc.service)",
        Kind::Systemd,
        1,
    );
    zkfc.who.service = "HDFS ZKFC".into();
    zkfc.user = Some("hdfs".into());
    zkfc.states.close_wait = 1;
    let processes = vec![rs, leak, nm, zkfc];
    let (containers, applications, services) = model::roll_up(&processes, &[]);
    let mut s1 = server("10.0.0.1:2181", 23, 60);
    s1.rates.growth_per_min = 1.5;
    s1.time_to_limit_secs = Some(1480.0);
    let s2 = server("10.0.0.2:2181", 50, 60);
    let mut snap = Snapshot::for_test(Rows {
        servers: vec![s1, s2],
        processes,
        containers,
        applications,
        services,
        suspects: vec![Suspect {
            subject: Level::Process,
            pid: Some(5200),
            container: None,
            application: None,
            service: None,
            label: format!("Spark executor in {C1}"),
            reason: "+9 in 6 min, none closed".into(),
            score: 8.4,
            open: 9,
            growth_per_min: 1.5,
            rejected: 0,
            close_wait_held: 0,
        }],
        ..Rows::default()
    });
    snap.host = "worker-17".into();
    snap.observed_secs = 362.0;
    snap.trend_window_secs = 362.0;
    snap.targets = vec!["10.0.0.1:2181".into(), "10.0.0.2:2181".into()];
    snap
}

/// The host at its limit towards one server, which refuses it.
fn at_limit() -> Snapshot {
    let mut snap = typical();
    let s = &mut snap.rows.servers[1];
    *s = server("10.0.0.2:2181", 60, 60);
    s.rejected = 14;
    s.refusing = true;
    s.time_to_limit_secs = Some(0.0);
    s.alarm = Alarm::Critical;
    let mut victim = process(6100, "python3.11 feed.py", Kind::Process, 0);
    victim.rejected = 5;
    victim.opened = 5;
    victim.closed = 5;
    victim.servers.clear();
    snap.rows.processes.push(victim);
    snap.rows.victims.push(model::Victim {
        pid: 6100,
        label: "python3.11 feed.py".into(),
        service: "python3.11 feed.py".into(),
        container: None,
        application: None,
        open: 0,
        rejected: 5,
        refused_by: vec!["10.0.0.2:2181".into()],
        refused_at: vec![model::RefusedBudget {
            server: "10.0.0.2:2181".into(),
            local_ip: "10.0.0.1".into(),
            refusals: 5,
        }],
        reason: "refused 5 times by 10.0.0.2:2181 from 10.0.0.1".into(),
    });
    snap.probe.lost = 3;
    snap
}

fn connections() -> Vec<ConnectionRow> {
    (0..3)
        .map(|i| ConnectionRow {
            owner: OwnerKey {
                tgid: 5200,
                _pad: 0,
                birth_ns: 1,
            },
            cgroup_id: 0,
            server: "10.0.0.1:2181".into(),
            local_ip: "10.0.0.9".into(),
            local_port: 40_000 + i,
            server_sees: None,
            state: if i == 2 { "CLOSE_WAIT" } else { "ESTABLISHED" },
            age_secs: 360.0 - f64::from(i) * 40.0,
            seeded: false,
        })
        .collect()
}

fn app_with(snap: Snapshot) -> App {
    let mut app = App::default();
    app.update(snap, connections());
    app
}

fn draw(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| render::render(f, app)).unwrap();
    terminal.backend().to_string()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn empty_host() {
    let mut snap = Snapshot::for_test(Rows::default());
    snap.host = "worker-17".into();
    insta::assert_snapshot!(draw(&app_with(snap), 120, 16));
}

#[test]
fn typical_host() {
    insta::assert_snapshot!(draw(&app_with(typical()), 140, 20));
}

#[test]
fn a_server_at_its_limit_with_refusals() {
    insta::assert_snapshot!(draw(&app_with(at_limit()), 140, 20));
}

/// The three screens operators have: what identifies the leak (the end of its container
/// id, its application, the local IP of each budget) is on each.
#[rstest::rstest]
#[case(80, 24)]
#[case(120, 40)]
#[case(200, 50)]
fn the_screens_operators_have(#[case] width: u16, #[case] height: u16) {
    let screen = draw(&app_with(at_limit()), width, height);
    assert!(screen.contains("_000002"), "{screen}");
    if width >= 200 {
        assert!(screen.contains("APPLICATION/UNIT"), "{screen}");
    }
    insta::assert_snapshot!(format!("screen_{width}x{height}"), screen);
}

/// An exited process that holds nothing stays (for --retain-exited), faded, and the title
/// says so; an exited connector whose connections live on in another process is not faded,
/// and the filter finds it by its holder.
#[test]
fn exited_processes_are_faded() {
    let mut snap = typical();
    let p = &mut snap.rows.processes[0];
    p.alive = false;
    p.states = model::StateCounts::default();
    let gone = p.pid;
    let h = &mut snap.rows.processes[1];
    h.alive = false;
    h.held_by = vec![model::Holder {
        pid: 16381,
        comm: "sleep".into(),
        connections: h.states.open,
    }];
    let held = h.pid;
    let mut app = app_with(snap);
    let lines = app.lines();
    let line = lines.iter().find(|l| l.pids == [gone]).unwrap();
    assert!(line.exited && line.faded());
    let line = lines.iter().find(|l| l.pids == [held]).unwrap();
    assert!(line.exited && !line.faded(), "{line:?}");
    let mut terminal = Terminal::new(TestBackend::new(140, 20)).unwrap();
    terminal.draw(|f| render::render(f, &app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let text = terminal.backend().to_string();
    assert!(text.contains("faded: exited"), "{text}");
    let dim_row = |pid: u32| {
        let y = text
            .lines()
            .position(|l| l.contains(&pid.to_string()))
            .unwrap() as u16;
        (0..140).any(|x| {
            buffer[(x, y)]
                .modifier
                .contains(ratatui::style::Modifier::DIM)
        })
    };
    assert!(dim_row(gone), "the exited row is not faded");
    assert!(!dim_row(held), "a row whose connections live on is faded");
    for k in "/16381".chars() {
        app.on_key(key(KeyCode::Char(k)));
    }
    app.on_key(key(KeyCode::Enter));
    let found: Vec<u32> = app.lines().iter().flat_map(|l| l.pids.clone()).collect();
    assert_eq!(found, vec![held]);
}

#[test]
fn a_narrow_terminal_drops_columns() {
    insta::assert_snapshot!(draw(&app_with(typical()), 64, 18));
}

#[test]
fn the_drill_down_shows_connections_and_attribution() {
    let mut app = app_with(typical());
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.drill, Some(process_id(5200)));
    insta::assert_snapshot!(draw(&app, 120, 24));
}

#[test]
fn the_help_screen() {
    let mut app = app_with(typical());
    app.on_key(key(KeyCode::Char('?')));
    insta::assert_snapshot!(draw(&app, 100, 22));
}

#[test]
fn a_tiny_terminal_does_not_panic() {
    for (w, h) in [(1, 1), (10, 3), (20, 8), (40, 5)] {
        let mut app = app_with(at_limit());
        draw(&app, w, h);
        app.on_key(key(KeyCode::Enter));
        draw(&app, w, h);
        app.on_key(key(KeyCode::Char('?')));
        draw(&app, w, h);
    }
}

fn labels(app: &App) -> Vec<String> {
    app.lines().into_iter().map(|l| l.label).collect()
}

#[test]
fn group_cycles_through_the_roll_ups() {
    let mut app = app_with(typical());
    assert_eq!(app.group, Level::Process);
    assert_eq!(labels(&app)[0], "HBase RegionServer");
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Cgroup);
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Application);
    assert_eq!(labels(&app), vec![APP.to_owned()]);
    let line = &app.lines()[0];
    assert_eq!(
        (line.open, line.pids.clone(), line.suspect),
        (9, vec![5200], true)
    );
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Service);
    assert_eq!(labels(&app)[1], "Spark executor");
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Process);
}

#[test]
fn sort_moves_between_columns_and_reverses() {
    let mut app = app_with(typical());
    app.on_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, Some(Column::Growth));
    assert_eq!(labels(&app)[0], format!("Spark executor in {C1}"));
    app.on_key(key(KeyCode::Char('<')));
    app.on_key(key(KeyCode::Char('<')));
    assert_eq!(app.sort, Some(Column::User));
    assert!(app.ascending, "names sort A to Z");
    assert_eq!(app.lines()[0].user, "alice");
    app.on_key(key(KeyCode::Char('r')));
    assert_eq!(app.lines()[0].user, "yarn");
    // Oldest: seeded three hours beats six minutes.
    while app.sort != Some(Column::Oldest) {
        app.on_key(key(KeyCode::Char('>')));
    }
    assert_eq!(labels(&app)[0], "HBase RegionServer");
}

#[test]
fn filter_typed_after_slash_narrows_and_esc_cancels() {
    let mut app = app_with(typical());
    app.on_key(key(KeyCode::Char('/')));
    for c in "spark".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(labels(&app).len(), 4, "applies on Enter only");
    app.on_key(key(KeyCode::Enter));
    assert_eq!(labels(&app), vec![format!("Spark executor in {C1}")]);
    assert_eq!(app.selected, Some(process_id(5200)));
    // A pid matches too; Esc while typing keeps the old filter.
    app.on_key(key(KeyCode::Char('/')));
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.filter, "spark");
    app.filter = "2900".into();
    assert_eq!(
        labels(&app),
        vec!["HDFS ZKFC (hadoop-hdfs-zkfc.service)".to_owned()]
    );
}

#[test]
fn selection_drill_down_and_back() {
    let mut app = app_with(typical());
    assert_eq!(app.selected, Some(process_id(4100)));
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected, Some(process_id(4100)), "stops at the top");
    app.on_key(key(KeyCode::End));
    assert_eq!(app.selected, Some(process_id(2900)));
    app.on_key(key(KeyCode::Home));
    app.on_key(key(KeyCode::Char('j')));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.drilled_connections().len(), 3);
    // In the drill-down, g and arrows do nothing; Esc goes back, it does not quit.
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Process);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.drill, None);
    assert!(!app.quit);
    app.on_key(key(KeyCode::Esc));
    assert!(!app.quit, "Esc at the top level does not quit");
}

#[test]
fn pause_holds_refreshes_until_resumed() {
    let mut app = app_with(typical());
    app.on_key(key(KeyCode::Char('p')));
    app.update(at_limit(), Vec::new());
    assert_eq!(app.lines().len(), 4, "still the paused view");
    app.on_key(key(KeyCode::Char('p')));
    assert_eq!(app.lines().len(), 5);
}

#[test]
fn quit_keys() {
    for k in [
        key(KeyCode::Char('q')),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        let mut app = app_with(typical());
        app.on_key(k);
        assert!(app.quit, "{k:?}");
    }
    // The help closes on any key, q and Esc included, and nothing quits from it.
    let mut app = app_with(typical());
    for k in [KeyCode::Char('x'), KeyCode::Char('q'), KeyCode::Esc] {
        app.on_key(key(KeyCode::Char('?')));
        app.on_key(key(k));
        assert!(!app.help && !app.quit, "{k:?}");
    }
}

/// The filter finds owners by what identifies them beyond their label: a server or local
/// IP of a budget they use, a YARN application id.
#[test]
fn the_filter_matches_budgets_and_ids() {
    let mut app = app_with(typical());
    let all = labels(&app).len();
    app.filter = "application_".into();
    let yarn = labels(&app);
    assert!(!yarn.is_empty() && yarn.len() < all, "{yarn:?}");
    assert!(yarn.iter().all(|l| l.contains("container_")), "{yarn:?}");
    let snap = app.snapshot.clone().unwrap();
    let budget = snap
        .rows
        .processes
        .iter()
        .flat_map(|p| p.servers.iter())
        .map(|s| s.local_ip.clone())
        .next()
        .expect("a process with a budget");
    app.filter = budget;
    assert!(!labels(&app).is_empty());
    app.filter = "10.255.255.254".into();
    assert!(labels(&app).is_empty());
}

/// Sorting moves among the columns drawn: at 80 columns, OPENED is not shown and is
/// never the sort.
#[test]
fn sorting_moves_among_the_columns_shown() {
    let mut app = app_with(typical());
    app.shown = crate::tui::render::fitting_columns(78);
    assert!(!app.shown.contains(&Column::Opened), "{:?}", app.shown);
    for _ in 0..30 {
        app.on_key(key(KeyCode::Char('s')));
        let sort = app.sort.unwrap();
        assert!(app.shown.contains(&sort), "{sort:?} is not shown");
    }
}

#[test]
fn long_ids_keep_their_distinguishing_end() {
    use crate::tui::render::fit_middle;
    let a = "python3.11 leaker.py in container_e05_1700000000000_0042_01_000002";
    let b = "python3.11 leaker.py in container_e05_1700000000000_0042_01_000003";
    let (fa, fb) = (fit_middle(a, 38), fit_middle(b, 38));
    assert_eq!(fa.chars().count(), 38);
    assert_ne!(fa, fb);
    assert!(
        fa.starts_with("python3.11 le") && fa.ends_with("0042_01_000002"),
        "{fa}"
    );
    assert_eq!(fit_middle("short", 38), "short");
}

#[test]
fn header_rates_are_per_second_between_refreshes() {
    let mut app = App::default();
    let mut a = typical();
    a.observed_secs = 10.0;
    app.update(a, Vec::new());
    let mut b = typical();
    b.observed_secs = 12.0;
    b.rows.servers[0].opened += 8;
    b.rows.servers[0].rejected += 4;
    app.update(b, Vec::new());
    let rates = app.rates.unwrap();
    assert_eq!((rates.opened, rates.rejected), (4.0, 2.0));

    // Rates only where the whole line fits: the counts after them are never cut.
    for (width, rates_shown) in [(200, true), (130, false)] {
        let screen = draw(&app, width, 24);
        let header = screen.lines().nth(1).unwrap_or_default().to_owned();
        assert!(header.contains("repaired 0"), "{width}: {header}");
        assert_eq!(header.contains("/s)"), rates_shown, "{width}: {header}");
    }
}

#[test]
fn sparklines_follow_the_open_count() {
    assert_eq!(render::sparkline(&[0, 1, 2, 4, 8], 10), " ▂▃▅█");
    assert_eq!(render::sparkline(&[3, 3, 3], 2), "██");
    assert_eq!(render::sparkline(&[], 5), "");
    let mut app = App::default();
    for open in [1, 2, 3] {
        let mut s = typical();
        s.rows.processes[1].states.open = open;
        app.update(s, Vec::new());
    }
    assert_eq!(app.spark(&process_id(5200)), vec![1, 2, 3]);
}

#[test]
fn columns_drop_by_priority_as_the_terminal_narrows() {
    let wide = render::fitting_columns(210);
    assert_eq!(wide.len(), Column::ALL.len());
    let narrow = render::fitting_columns(60);
    assert_eq!(
        narrow,
        vec![
            Column::Owner,
            Column::Open,
            Column::Growth,
            Column::Rejected
        ]
    );
}

#[test]
fn a_failed_refresh_is_said_in_the_header_over_the_last_screen() {
    let mut app = app_with(typical());
    app.error = Some("the kernel refused zkconn access to its map ZK_CONNS".into());
    let screen = draw(&app, 200, 20);
    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.contains("STALE: the kernel refused zkconn access to its map ZK_CONNS"),
        "{header}"
    );
    // The last good counts stay on screen.
    assert!(screen.contains("open "), "{screen}");
}

/// `typical()` on a cgroup v1 host: the container by its v1 cpu path, the rest in the root.
fn on_a_v1_host() -> Snapshot {
    use crate::{attribution::hierarchy::Hierarchy, model::CgroupRow};
    let mut snap = typical();
    snap.cgroups_hierarchy = Hierarchy::V1Cpu;
    let container = format!("/hadoop-yarn/{C1}");
    for p in &mut snap.rows.processes {
        p.cgroup_hierarchy = Hierarchy::V1Cpu;
        p.cgroup_v1 = Some(if p.pid == 5200 {
            container.clone()
        } else {
            "/".into()
        });
    }
    let row = |path: &str, kind, label: &str, open, pids: Vec<u32>| CgroupRow {
        hierarchy: Hierarchy::V1Cpu,
        path: Some(path.into()),
        id: 0,
        kind,
        label: label.into(),
        states: model::StateCounts {
            open,
            established: open,
            ..model::StateCounts::default()
        },
        opened: open,
        closed: 0,
        failed: 0,
        rejected: 0,
        age: Age::default(),
        rates: Rates::default(),
        users: Vec::new(),
        pids,
    };
    let mut executor = row(&container, Kind::Yarn, C1, 9, vec![5200]);
    executor.rates.growth_per_min = 1.5;
    executor.users = vec!["alice".into()];
    snap.rows.cgroups = vec![
        row("/", Kind::Process, "/", 15, vec![2900, 3300, 4100]),
        executor,
    ];
    snap
}

#[test]
fn the_cgroup_view_says_it_groups_by_v1_paths() {
    let mut app = app_with(on_a_v1_host());
    assert_eq!(app.group_title(), "process");
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group_title(), "cgroup v1:cpu");
    let lines = app.lines();
    let got: Vec<_> = lines
        .iter()
        .map(|l| (l.label.as_str(), l.kind.as_str(), l.open, l.pids.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/", "process", 15, vec![2900, 3300, 4100]),
            (C1, "yarn", 9, vec![5200]),
        ]
    );
    // The row's own rate and users; its leaking executor makes it a suspect.
    assert_eq!(
        (lines[1].growth, lines[1].user.as_str(), lines[1].suspect),
        (1.5, "alice", true)
    );
    assert_eq!(
        lines[1].id,
        RowId::Cgroup(CgroupKey::V1(
            crate::attribution::hierarchy::Hierarchy::V1Cpu,
            format!("/hadoop-yarn/{C1}")
        ))
    );
    let screen = draw(&app, 140, 24);
    assert!(screen.contains("Owners by cgroup v1:cpu (2)"), "{screen}");
    // The drill-down of the container shows its process's connections.
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.drilled_connections().len(), 3);
}

#[test]
fn the_cgroup_view_of_an_empty_host_names_the_hosts_hierarchy() {
    let mut snap = Snapshot::for_test(Rows::default());
    snap.cgroups_hierarchy = crate::attribution::hierarchy::Hierarchy::V1Cpu;
    let mut app = app_with(snap);
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group_title(), "cgroup v1:cpu");
}

/// A process name and command line holding terminal escapes (clear the screen, retitle the
/// window, ring the bell) and a carriage return: the live view and its drill-down show
/// U+FFFD where they were, never the raw bytes.
#[test]
fn hostile_names_never_reach_the_terminal_raw() {
    let hostile = "evil\x1b[2J\x1b]0;pwned\x07\rname";
    let mut snap = typical();
    snap.rows.processes[0].who.label = hostile.into();
    snap.rows.processes[0].who.service = hostile.into();
    snap.rows.processes[0].cmdline = Some(format!("python3 -c '{hostile}'"));
    let mut app = app_with(snap);
    for view in 0..2 {
        let mut terminal = Terminal::new(TestBackend::new(140, 24)).unwrap();
        terminal.draw(|f| render::render(f, &app)).unwrap();
        let buffer = terminal.backend().buffer();
        let raw: Vec<&str> = buffer
            .content
            .iter()
            .map(ratatui::buffer::Cell::symbol)
            .filter(|s| s.chars().any(char::is_control))
            .collect();
        assert!(raw.is_empty(), "view {view}: {raw:?}");
        let text = terminal.backend().to_string();
        assert!(text.contains("evil\u{fffd}"), "view {view}:\n{text}");
        // Into the drill-down of the hostile process.
        app.on_key(key(KeyCode::Enter));
    }
}

#[test]
fn the_footer_keeps_the_time_and_the_message_of_a_log_line() {
    use crate::tui::render::footer_log;
    assert_eq!(
        footer_log(
            "2026-12-02T03:50:34.939643Z  WARN zkconn::alarm: alarm raised CRITICAL: ZooKeeper \
             connections from 127.0.0.1 to 127.77.203.4:40941: 12 of 12 (100%)"
        ),
        "03:50:34 alarm raised CRITICAL: ZooKeeper connections from 127.0.0.1 to \
         127.77.203.4:40941: 12 of 12 (100%)"
    );
    // Anything else is shown as it is.
    assert_eq!(footer_log("no timestamp here"), "no timestamp here");
    assert_eq!(footer_log(""), "");
}

/// The budget column names the (local IP → server) an owner's connections count against.
#[test]
fn owners_show_the_budget_they_use() {
    let app = app_with(typical());
    let lines = app.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.budgets == ["10.0.0.9 → 10.0.0.1:2181"]),
        "{lines:#?}"
    );
    let screen = draw(&app, 210, 20);
    assert!(screen.contains("FROM → SERVER"), "{screen}");
    assert!(screen.contains("10.0.0.9 → 10.0.0.1:2181"), "{screen}");
}

/// At the limit the limit is reached, whether or not the host still grows.
#[test]
fn at_the_limit_the_limit_is_reached_growing_or_not() {
    use crate::trend::human_time_to_limit;
    assert_eq!(human_time_to_limit(None, Some(0)), "reached");
    assert_eq!(human_time_to_limit(None, Some(-1)), "reached");
    assert_eq!(human_time_to_limit(None, Some(3)), "-");
    assert_eq!(human_time_to_limit(Some(90.0), Some(3)), "90 s");
    assert_eq!(human_time_to_limit(None, None), "-", "unlimited");
}

/// A budget at its limit is never hidden below budgets that are fine: the pane shows the
/// worst first and says how many it left out, and how bad the worst of those is.
#[test]
fn the_worst_budget_is_shown_first_and_what_does_not_fit_is_counted() {
    let mut snap = typical();
    let template = snap.rows.servers[0].clone();
    snap.rows.servers.clear();
    for i in 0..9_u64 {
        let mut s = template.clone();
        s.local_ip = format!("10.0.0.{}", 10 + i);
        s.states.open = i;
        s.usage = Some(i as f64 / 60.0);
        s.alarm = Alarm::Ok;
        snap.rows.servers.push(s);
    }
    // The last by address, text order and count: the one at its limit.
    let bad = snap.rows.servers.last_mut().unwrap();
    bad.local_ip = "10.0.0.95".into();
    bad.states.open = 60;
    bad.usage = Some(1.0);
    bad.alarm = Alarm::Critical;
    bad.refusing = true;
    let screen = draw(&app_with(snap), 120, 30);
    let rows: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("10.0.0.1:2181") || l.contains("more"))
        .collect();
    assert!(
        rows[0].contains("CRITICAL") && rows[0].contains("10.0.0.95"),
        "{screen}"
    );
    // Seven budgets and the count of the two left out (the emptiest).
    assert_eq!(rows.len(), 8, "{screen}");
    assert!(rows[7].contains("+2 more (worst OK)"), "{screen}");
    assert!(!screen.contains("10.0.0.10 "), "{screen}");
}

/// At 80 columns every budget keeps its local IP, refusals and time to limit.
#[test]
fn a_budget_keeps_every_fact_at_80_columns() {
    let screen = draw(&app_with(at_limit()), 80, 24);
    let row = screen.lines().find(|l| l.contains("CRITICAL")).unwrap();
    for fact in ["10.0.0.9", "60/60", "rejected 14", "reached"] {
        assert!(row.contains(fact), "{fact} missing: {row}");
    }
}

#[test]
fn cutting_keeps_the_local_ip_and_counts_terminal_columns() {
    // The local IP whole, the server cut in its middle.
    assert_eq!(
        render::fit_budget("127.193.0.17 → 127.193.0.1:21901", 30),
        "127.193.0.17 → 127.1…0.1:21901"
    );
    assert_eq!(
        render::fit_budget("10.0.0.9 → 10.0.0.1:2181", 30),
        "10.0.0.9 → 10.0.0.1:2181"
    );
    // Two columns per CJK character: the distinguishing end stays within the width.
    let a = render::fit_middle("python3.11 漢字漢字漢字漢字漢字漢字_A.py", 20);
    let b = render::fit_middle("python3.11 漢字漢字漢字漢字漢字漢字_B.py", 20);
    assert!(a.ends_with("_A.py") && b.ends_with("_B.py"), "{a} {b}");
    assert!(
        unicode_width::UnicodeWidthStr::width(a.as_str()) <= 20,
        "{a}"
    );
    // A newline or an invisible character shows, so no name can pass for another.
    assert_eq!(render::printable("hold.py\nminer"), "hold.py\u{fffd}miner");
    assert_eq!(render::printable("zw\u{200b}java"), "zw\u{fffd}java");
    assert_eq!(render::printable("a\u{202e}b"), "a\u{fffd}b");
}

/// A refused process holds nothing: its budget column names the budget that refused it,
/// and the filter finds it by that local IP.
#[test]
fn a_victim_shows_the_budget_that_refused_it() {
    let mut app = app_with(at_limit());
    let line = app.lines().into_iter().find(|l| l.pids == [6100]).unwrap();
    assert!(line.victim);
    assert_eq!(line.budgets, vec!["10.0.0.1 → 10.0.0.2:2181".to_owned()]);
    for k in "/10.0.0.1 ".trim_end().chars() {
        app.on_key(key(KeyCode::Char(k)));
    }
    app.on_key(key(KeyCode::Enter));
    assert!(app.lines().iter().any(|l| l.pids == [6100]));
}

/// Chords are no commands and no text: Alt-q does not quit; in the filter Ctrl-U clears
/// and Ctrl-W takes back a word.
#[test]
fn chords_do_not_act_as_their_letter() {
    use ratatui::crossterm::event::KeyModifiers;
    let mut app = app_with(typical());
    app.on_key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT));
    assert!(!app.quit);
    app.on_key(key(KeyCode::Char('/')));
    for k in "spark 0042".chars() {
        app.on_key(key(KeyCode::Char(k)));
    }
    app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.editing.as_deref(), Some("spark "));
    app.on_key(KeyEvent::new(KeyCode::Char('a'), KeyModifiers::CONTROL));
    assert_eq!(app.editing.as_deref(), Some("spark "));
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert_eq!(app.editing.as_deref(), Some(""));
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

/// A ZooKeeper server's host: three client hosts on one listener, one refused at its limit.
fn on_a_server() -> Snapshot {
    use crate::{
        limits::LimitSource,
        listener::{ListenerFacts, ListenerKind, ServerProcess},
        model::{ClientConnection, ClientRow, ListenerRow},
    };
    let client = |ip: &str, open: u64, rejected: u64, alarm: Alarm| ClientRow {
        listener: "0.0.0.0:2181".into(),
        client_ip: ip.into(),
        open,
        limit: 10,
        limit_source: LimitSource::ZooCfg,
        usage: Some(open as f64 / 10.0),
        headroom: Some(10 - open as i64),
        opened: open + rejected,
        closed: rejected,
        rejected,
        rejected_window: rejected,
        refusing: rejected > 0,
        growth_per_min: Some(if rejected > 0 { 4.0 } else { 0.0 }),
        growing: rejected > 0,
        alarm,
        connections: (0..open.min(3))
            .map(|i| ClientConnection {
                client_port: 40_000 + i as u16,
                state: if i == 0 { "close_wait" } else { "established" },
                age_secs: (i > 0).then_some(30.0 * i as f64),
            })
            .collect(),
        ..ClientRow::default()
    };
    let mut snap = typical();
    snap.rows.clients = vec![
        client("10.0.3.7", 10, 6, Alarm::Critical),
        client("10.0.3.8", 8, 0, Alarm::Warning),
        client("10.0.3.9", 2, 0, Alarm::Ok),
    ];
    snap.rows.listeners = vec![ListenerRow {
        listener: "0.0.0.0:2181".into(),
        server: ListenerFacts {
            process: Some(ServerProcess {
                pid: 812,
                comm: "java".into(),
                main_class: Some("org.apache.zookeeper.server.quorum.QuorumPeerMain".into()),
                config: Some("/etc/zookeeper/conf/zoo.cfg".into()),
            }),
            kind: ListenerKind::Plain,
            max_client_cnxns: Some(10),
            max_cnxns: Some(100),
            unknown: None,
            warning: None,
        },
        limit: 10,
        limit_source: LimitSource::ZooCfg,
        open: 20,
        max_cnxns_headroom: Some(80),
        client_hosts: 3,
        ..ListenerRow::default()
    }];
    snap
}

/// `c` lists every client host in place of the owners; Enter drills into one (its counts,
/// its listener's server, its connections); Esc steps back, `c` returns to the owners. The
/// owners' keys do not act behind the client view.
#[test]
fn the_client_hosts_view_and_its_drill_down() {
    let mut app = app_with(on_a_server());
    app.on_key(key(KeyCode::Char('c')));
    assert!(app.clients_view);
    insta::assert_snapshot!("client_hosts_view", draw(&app, 120, 24));
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.client_drill,
        Some(("0.0.0.0:2181".to_owned(), "10.0.3.8".to_owned()))
    );
    insta::assert_snapshot!("client_host_drill_down", draw(&app, 120, 24));
    app.on_key(key(KeyCode::Char('g')));
    assert_eq!(app.group, Level::Process, "g does not act here");
    assert_eq!(app.drill, None, "Enter did not drill into an owner behind");
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.client_drill, None);
    assert!(app.clients_view);
    app.on_key(key(KeyCode::Char('c')));
    assert!(!app.clients_view);
    // A host with no client rows has no such view.
    let mut plain = app_with(typical());
    plain.on_key(key(KeyCode::Char('c')));
    assert!(!plain.clients_view);
}
