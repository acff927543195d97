//! The engine against `Reading` fixtures: what one reading makes of owners, retention,
//! holders, refusals, NAT and seeds, and what it orders the source to forget.

use zkconn_common::{Counters, ServerKey, tcp_state};

use super::*;
use crate::{targets::ip_to_bytes, verdict::Alarm};

const SERVER: &str = "10.0.0.9:2181";
const YARN_CGROUP: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000005";

fn key(tgid: u32) -> OwnerKey {
    OwnerKey {
        tgid,
        _pad: 0,
        birth_ns: 1,
    }
}

fn addr(ip: &str) -> [u8; 16] {
    ip_to_bytes(ip.parse().unwrap())
}

fn tuple(sport: u16) -> Tuple {
    Tuple {
        saddr: addr("10.0.0.1"),
        daddr: addr("10.0.0.9"),
        sport,
        dport: 2181,
        _pad: 0,
    }
}

fn conn(tgid: u32, cgroup: u64, sport: u16, state: u8) -> Conn {
    Conn {
        tuple: tuple(sport),
        owner: key(tgid),
        cgroup_id: cgroup,
        state,
        ..Default::default()
    }
}

fn opened(n: u64) -> Counters {
    Counters {
        opened: n,
        ..Default::default()
    }
}

fn engine(retain_secs: f64) -> Engine {
    Engine::new(Config {
        limits: Limits::new(Some(10), None, &[]).unwrap(),
        rules: Rules::default(),
        thresholds: Thresholds::default(),
        window_secs: 60.0,
        retain_secs,
        hierarchy: Hierarchy::V2,
        targets: vec![SERVER.to_owned()],
    })
}

/// A process read from `/proc`: an HBase RegionServer in cgroup `cgroup`.
fn regionserver(cgroup: u64) -> Learnt {
    Learnt::Proc {
        info: Box::new(ProcInfo {
            comm: "java".into(),
            argv: vec![
                "java".into(),
                "org.apache.hadoop.hbase.regionserver.HRegionServer".into(),
                "start".into(),
            ],
            cmdline: "java org.apache.hadoop.hbase.regionserver.HRegionServer start".into(),
            uid: 1000,
            cgroups: vec![CgroupLine {
                hierarchy: 0,
                controllers: String::new(),
                path: "/system.slice/hbase-regionserver.service".into(),
            }],
            ..Default::default()
        }),
        cgroup_id: cgroup,
        user: Some("hbase".into()),
    }
}

/// A process gone before `/proc` could be read, in a YARN container's cgroup.
fn container_process(cgroup: u64) -> Learnt {
    Learnt::Kernel {
        comm: "java".into(),
        uid: 1001,
        user: Some("yarn".into()),
        cgroup_id: cgroup,
        cgroup_v2: Some(YARN_CGROUP.into()),
        cgroup_cpu: None,
    }
}

fn next_rows_version() -> u64 {
    static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

fn reading(now: f64, conns: Vec<Conn>, proc_stats: Vec<(OwnerKey, Counters)>) -> Reading {
    let holding: FxHashSet<OwnerKey> = conns.iter().map(|c| c.owner).collect();
    Reading {
        now,
        alive: holding.clone(),
        holding,
        kernel: KernelState {
            conns: std::sync::Arc::new(conns),
            // Every reading here is a new read of the rows, as the probe numbers them.
            rows_version: next_rows_version(),
            proc_stats,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn an_owner_learnt_from_proc_is_a_complete_row_in_one_reading() {
    let mut e = engine(60.0);
    let mut r = reading(
        0.0,
        vec![
            conn(7, 42, 1000, tcp_state::ESTABLISHED),
            conn(7, 42, 1001, tcp_state::CLOSE_WAIT),
        ],
        vec![(key(7), opened(2))],
    );
    r.learnt = vec![(key(7), regionserver(42))];
    r.cgroup_paths
        .insert(42, "/system.slice/hbase-regionserver.service".into());
    let (snap, orders) = e.tick(r);
    let [p] = snap.rows.processes.as_slice() else {
        panic!("one process row: {:?}", snap.rows.processes);
    };
    assert_eq!(p.who.service, "HBase RegionServer");
    assert_eq!(p.user.as_deref(), Some("hbase"));
    assert!(p.alive);
    assert_eq!((p.states.open, p.states.close_wait, p.opened), (1, 1, 2));
    let [server] = snap.rows.servers.as_slice() else {
        panic!("one server row");
    };
    assert_eq!((server.server.as_str(), server.limit), (SERVER, 10));
    assert_eq!(server.headroom, Some(9));
    assert_eq!(
        snap.rows.cgroups[0].path.as_deref(),
        Some("/system.slice/hbase-regionserver.service")
    );
    assert_eq!(snap.probe.attribution.from_proc, 1);
    assert!(orders.forget_owners.is_empty() && orders.dropped.is_empty());
    // The drill-down reads the same reading.
    assert_eq!(e.connections().len(), 2);
}

/// An exited owner holding nothing stays a row for `retain_secs`, then leaves the rows and
/// the kernel's tables (ordered), its counts kept by the roll-ups it belonged to.
#[test]
fn an_exited_owner_is_retired_after_its_time_and_its_counts_stay_in_the_roll_ups() {
    let mut e = engine(10.0);
    let mut r = reading(
        0.0,
        vec![conn(8, 50, 1000, tcp_state::ESTABLISHED)],
        vec![(key(8), opened(3))],
    );
    r.learnt = vec![(key(8), container_process(50))];
    let (snap, _) = e.tick(r);
    assert_eq!(snap.rows.containers.len(), 1);
    assert_eq!(
        snap.rows.containers[0].application,
        "application_1410901177871_0001"
    );

    // Exited and closed: a row still, not alive.
    let mut r = reading(5.0, Vec::new(), vec![(key(8), opened(3))]);
    r.alive.clear();
    let (snap, orders) = e.tick(r);
    assert_eq!(snap.rows.processes.len(), 1);
    assert!(!snap.rows.processes[0].alive);
    assert!(orders.forget_owners.is_empty());

    // Seen gone at 5, due at 15.
    let (snap, orders) = e.tick(reading(15.0, Vec::new(), vec![(key(8), opened(3))]));
    assert!(snap.rows.processes.is_empty());
    assert_eq!(orders.forget_owners, [key(8)]);
    assert_eq!(snap.probe.retention.processes, 1);
    let service = &snap.rows.services[0];
    assert_eq!((service.totals.opened, service.totals.open), (3, 0));

    // The kernel forgot it, as ordered: the roll-up keeps its counts.
    let (snap, orders) = e.tick(reading(16.0, Vec::new(), Vec::new()));
    assert_eq!(snap.rows.services[0].totals.opened, 3);
    assert!(orders.forget_owners.is_empty() && orders.dropped.is_empty());
}

/// A connector that exited while its connection lives on in another process: not retired,
/// and the row names who holds it now.
#[test]
fn a_connection_outliving_its_connector_names_its_holder() {
    let mut e = engine(0.0);
    let mut r = reading(
        0.0,
        vec![conn(9, 50, 1000, tcp_state::ESTABLISHED)],
        vec![(key(9), opened(1))],
    );
    r.learnt = vec![(key(9), container_process(50))];
    r.alive.clear();
    r.holders.insert(tuple(1000), vec![(4242, "java".into())]);
    let (snap, orders) = e.tick(r);
    let p = &snap.rows.processes[0];
    assert!(!p.alive);
    assert_eq!(p.held_by.len(), 1);
    assert_eq!(
        (
            p.held_by[0].pid,
            p.held_by[0].comm.as_str(),
            p.held_by[0].connections
        ),
        (4242, "java", 1)
    );
    assert!(
        orders.forget_owners.is_empty(),
        "it still holds a connection"
    );
}

/// An owner that is gone and that no kernel row names any more is forgotten at once, and
/// the source told so.
#[test]
fn a_gone_owner_no_row_names_is_dropped() {
    let mut e = engine(60.0);
    let mut r = reading(0.0, Vec::new(), Vec::new());
    r.learnt = vec![(key(3), container_process(50))];
    r.alive.insert(key(3));
    let (_, orders) = e.tick(r);
    assert!(orders.dropped.is_empty(), "alive: kept");
    let (_, orders) = e.tick(reading(1.0, Vec::new(), Vec::new()));
    assert_eq!(orders.dropped, [key(3)]);
}

/// A server's refusal makes it CRITICAL and its victim a suspect, from the reading that
/// carries it.
#[test]
fn a_refusal_makes_the_server_critical_and_names_the_refused() {
    let mut e = engine(60.0);
    let server_key = ServerKey {
        daddr: addr("10.0.0.9"),
        saddr: addr("10.0.0.1"),
        dport: 2181,
        _pad: [0; 6],
    };
    let mut r = reading(
        0.0,
        vec![conn(7, 42, 1000, tcp_state::ESTABLISHED)],
        vec![(key(7), opened(1))],
    );
    r.learnt = vec![(key(7), regionserver(42))];
    r.kernel.server_stats = vec![(server_key, opened(1))];
    let (snap, _) = e.tick(r);
    assert_eq!(snap.rows.servers[0].alarm, Alarm::Ok);

    let mut r = reading(
        1.0,
        vec![conn(7, 42, 1000, tcp_state::ESTABLISHED)],
        vec![(key(7), opened(2))],
    );
    let refused = Counters {
        opened: 2,
        closed: 1,
        rejected: 1,
        ..Default::default()
    };
    r.kernel.server_stats = vec![(server_key, refused)];
    r.kernel.proc_stats = vec![(key(7), refused)];
    r.refused = vec![Refusal {
        owner: key(7),
        server: SERVER.into(),
        local_ip: "127.0.0.9".into(),
        at: 0.5,
    }];
    let (snap, _) = e.tick(r);
    let s = &snap.rows.servers[0];
    assert!(s.refusing);
    assert_eq!(s.alarm, Alarm::Critical);
    // Refused while holding nothing: a victim, never a suspect.
    assert_eq!(snap.rows.suspects, vec![]);
    let refused: Vec<_> = snap.rows.victims.iter().filter(|v| v.pid == 7).collect();
    assert_eq!(refused.len(), 1, "{:?}", snap.rows.victims);
    // The budget that refused it: the server and the local IP it connected from.
    assert_eq!(
        refused[0].reason,
        format!("refused once by {SERVER} from 127.0.0.9")
    );
    assert_eq!(
        refused[0].refused_at,
        vec![crate::model::RefusedBudget {
            server: SERVER.into(),
            local_ip: "127.0.0.9".into(),
            refusals: 1,
        }]
    );
}

/// A removed cgroup holding nothing leaves the cgroup rows after the same time, and the
/// kernel's per-cgroup table is ordered to forget it.
#[test]
fn a_removed_cgroup_is_retired_and_forgotten() {
    let mut e = engine(10.0);
    let mut r = reading(0.0, Vec::new(), Vec::new());
    r.kernel.cgroup_stats = vec![(50, opened(2))];
    r.cgroups_removed = vec![50];
    let (snap, orders) = e.tick(r);
    assert_eq!(snap.rows.cgroups.len(), 1);
    assert!(orders.forget_cgroups.is_empty());
    let mut r = reading(10.0, Vec::new(), Vec::new());
    r.kernel.cgroup_stats = vec![(50, opened(2))];
    r.cgroups_removed = vec![50];
    let (snap, orders) = e.tick(r);
    assert!(snap.rows.cgroups.is_empty());
    assert_eq!(orders.forget_cgroups, [50]);
    assert_eq!(snap.probe.retention.cgroups, 1);
}

/// Behind NAT, the server row is keyed by the address the server sees.
#[test]
fn a_translated_connection_counts_where_the_server_sees_it() {
    let mut e = engine(60.0);
    let mut r = reading(
        0.0,
        vec![conn(7, 42, 1000, tcp_state::ESTABLISHED)],
        Vec::new(),
    );
    r.learnt = vec![(key(7), regionserver(42))];
    r.nat_live.insert(tuple(1000), addr("192.0.2.7"));
    r.health.nat.translated = 1;
    let (snap, _) = e.tick(r);
    let s = &snap.rows.servers[0];
    assert_eq!(s.local_ip, "192.0.2.7");
    assert_eq!(s.translated_from, ["10.0.0.1"]);
    assert_eq!(snap.probe.nat.translated, 1);
}

/// Seed counts arrive once and stay: later readings do not carry them.
#[test]
fn seed_counts_arrive_once_and_stay() {
    let mut e = engine(60.0);
    let mut r = reading(
        0.0,
        vec![conn(7, 42, 1000, tcp_state::ESTABLISHED)],
        Vec::new(),
    );
    r.learnt = vec![(key(7), regionserver(42))];
    r.seeded = Some([(key(7), 1)].into_iter().collect());
    let (snap, _) = e.tick(r);
    assert_eq!(snap.rows.processes[0].seeded, 1);
    let (snap, _) = e.tick(reading(
        1.0,
        vec![conn(7, 42, 1000, tcp_state::ESTABLISHED)],
        Vec::new(),
    ));
    assert_eq!(snap.rows.processes[0].seeded, 1);
}

/// An empty host: every table empty, nothing ordered, the health the source gave.
#[test]
fn an_empty_reading_is_an_empty_document() {
    let mut e = engine(60.0);
    let mut r = reading(0.0, Vec::new(), Vec::new());
    r.health.unreadable = 2;
    let (snap, orders) = e.tick(r);
    assert!(snap.rows.servers.is_empty() && snap.rows.processes.is_empty());
    assert!(snap.rows.cgroups.is_empty() && snap.rows.suspects.is_empty());
    assert_eq!(snap.probe.unreadable, 2);
    assert_eq!(snap.targets, [SERVER]);
    assert!(orders.forget_owners.is_empty() && orders.forget_cgroups.is_empty());
}

/// A reading of the same rows (the probe read nothing new) keeps what the connections say,
/// and the clock still ages them; a new read of the rows is worked out again.
#[test]
fn the_same_rows_are_not_walked_again_and_still_age() {
    let mut e = engine(60.0);
    let mut held = conn(7, 42, 1000, tcp_state::ESTABLISHED);
    held.opened_ns = 1_000_000_000;
    let mut waiting = conn(7, 42, 1001, tcp_state::CLOSE_WAIT);
    waiting.changed_ns = 2_000_000_000;
    let mut r = reading(0.0, vec![held, waiting], vec![(key(7), opened(2))]);
    r.now_ns = 3_000_000_000;
    let version = r.kernel.rows_version;
    let rows = r.kernel.conns.clone();
    let (snap, _) = e.tick(r);
    let p = &snap.rows.processes[0];
    assert_eq!((p.states.open, p.states.close_wait), (1, 1));
    assert_eq!((p.age.oldest_secs, p.age.close_wait_held), (Some(2.0), 0));
    // The same rows 10 s later: the same counts, older, the CLOSE_WAIT now held.
    let mut r = reading(1.0, Vec::new(), vec![(key(7), opened(2))]);
    r.kernel.conns = rows;
    r.kernel.rows_version = version;
    r.now_ns = 13_000_000_000;
    let (snap, _) = e.tick(r);
    let p = &snap.rows.processes[0];
    assert_eq!((p.states.open, p.states.close_wait), (1, 1));
    assert_eq!((p.age.oldest_secs, p.age.close_wait_held), (Some(12.0), 1));
    assert_eq!(snap.rows.servers[0].states.open, 1);
    // A new read of the rows (the connection closed): counted again.
    let mut r = reading(2.0, vec![waiting], vec![(key(7), opened(2))]);
    r.now_ns = 14_000_000_000;
    let (snap, _) = e.tick(r);
    let p = &snap.rows.processes[0];
    assert_eq!((p.states.open, p.states.close_wait), (0, 1));
    assert_eq!(p.age.oldest_secs, None);
}
