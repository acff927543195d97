//! The rows `build` makes, case by case.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use zkconn_common::{Conn, Counters, ServerKey, Tuple};

use super::*;
use crate::{limits::Limits, targets::ip_to_bytes};

fn key(tgid: u32) -> OwnerKey {
    OwnerKey {
        tgid,
        _pad: 0,
        birth_ns: 1,
    }
}

fn conn(tgid: u32, cgroup: u64, sport: u16, server: &str, state: u8) -> Conn {
    let server: std::net::SocketAddr = server.parse().unwrap();
    Conn {
        tuple: Tuple {
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            daddr: ip_to_bytes(server.ip()),
            sport,
            dport: server.port(),
            _pad: 0,
        },
        owner: key(tgid),
        cgroup_id: cgroup,
        state,
        ..Default::default()
    }
}

fn run(
    conns: &[Conn],
    seeds: &[Conn],
    stats: &[(OwnerKey, Counters)],
) -> (Vec<ServerRow>, Vec<ProcessRow>, Vec<CgroupRow>) {
    let rows = run_full(conns, seeds, stats, &HashMap::new());
    (rows.servers, rows.processes, rows.cgroups)
}

fn run_with(
    conns: &[Conn],
    stats: &[(OwnerKey, Counters)],
    facts: &HashMap<OwnerKey, OwnerFacts>,
) -> Rows {
    run_full(conns, &[], stats, facts)
}

fn run_full(
    conns: &[Conn],
    seeds: &[Conn],
    stats: &[(OwnerKey, Counters)],
    facts: &HashMap<OwnerKey, OwnerFacts>,
) -> Rows {
    let seeded = HashMap::new();
    let ids = conns
        .iter()
        .chain(seeds)
        .map(|c| c.cgroup_id)
        .chain(facts.values().map(|f| f.cgroup_id));
    let paths = ids.map(|id| (id, format!("/cg{id}"))).collect();
    build(&Inputs {
        conns,
        seeds,
        proc_stats: stats,
        cgroup_stats: &[],
        server_stats: &[],
        limits: &Limits::default(),
        facts,
        seeded: &seeded,
        cgroup_paths: &paths,
        held_by: &HashMap::new(),
        nat: &Translations::default(),
        retired: &[],
        retired_v1: &[],
        retired_v1_moved: &[],
        now_ns: 0,
        aggregates: None,
    })
}

fn yarn(container: &str, service: &str) -> OwnerFacts {
    let app = crate::attribution::yarn::ContainerId::parse(container).unwrap();
    OwnerFacts {
        comm: "java".into(),
        who: Attribution {
            kind: Kind::Yarn,
            service: service.into(),
            label: format!("{service} in {container}"),
            yarn_container: Some(container.into()),
            yarn_application: Some(app.application().into()),
            ..Attribution::default()
        },
        ..OwnerFacts::default()
    }
}

#[test]
fn containers_applications_and_services_sum_their_processes() {
    use tcp_state::ESTABLISHED;
    const C1: &str = "container_e17_1700000000000_0042_01_000002";
    const C2: &str = "container_1700000000000_0042_01_000003";
    const C3: &str = "container_1700000000000_0043_01_000002";
    let mut facts = HashMap::new();
    facts.insert(key(1), yarn(C1, "Spark executor"));
    facts.insert(key(2), yarn(C1, "bash"));
    facts.insert(key(3), yarn(C2, "Spark executor"));
    facts.insert(key(4), yarn(C3, "MapReduce task"));
    let mut rs = OwnerFacts::default();
    rs.who.kind = Kind::Hbase;
    rs.who.service = "HBase RegionServer".into();
    facts.insert(key(5), rs);
    let mut conns = Vec::new();
    let mut port = 0;
    for (pid, n) in [(1, 3), (2, 1), (3, 2), (4, 1), (5, 7)] {
        for _ in 0..n {
            port += 1;
            conns.push(conn(pid, 9, port, "127.0.0.2:2181", ESTABLISHED));
        }
    }
    let stats: Vec<_> = [(1, 5, 2), (2, 1, 0), (3, 2, 0), (4, 4, 3), (5, 7, 0)]
        .into_iter()
        .map(|(pid, opened, closed)| {
            (
                key(pid),
                Counters {
                    opened,
                    closed,
                    ..Counters::default()
                },
            )
        })
        .collect();
    let rows = run_with(&conns, &stats, &facts);

    let apps: Vec<_> = rows
        .applications
        .iter()
        .map(|a| {
            (
                a.application.as_str(),
                a.containers.len(),
                a.totals.open,
                a.totals.opened,
                a.totals.closed,
                a.processes,
            )
        })
        .collect();
    assert_eq!(
        apps,
        vec![
            ("application_1700000000000_0042", 2, 6, 8, 2, 3),
            ("application_1700000000000_0043", 1, 1, 4, 3, 1),
        ]
    );
    assert_eq!(
        rows.applications[0].containers,
        vec![C2.to_owned(), C1.to_owned()]
    );
    let c1 = rows.containers.iter().find(|c| c.container == C1).unwrap();
    assert_eq!((c1.totals.open, c1.pids.clone()), (4, vec![1, 2]));
    assert_eq!(
        c1.services,
        vec!["Spark executor".to_owned(), "bash".to_owned()]
    );
    let services: Vec<_> = rows
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.totals.open, s.pids.clone()))
        .collect();
    assert_eq!(
        services,
        vec![
            ("HBase RegionServer", 7, vec![5]),
            ("Spark executor", 5, vec![1, 3]),
            ("MapReduce task", 1, vec![4]),
            ("bash", 1, vec![2]),
        ]
    );
    assert_eq!(rows.services[1].kinds, vec![Kind::Yarn]);
    // The whole is the sum of its parts: nothing counted twice, nothing lost.
    let total: u64 = rows.processes.iter().map(|p| p.states.open).sum();
    assert_eq!(total, 14);
    assert_eq!(
        rows.services.iter().map(|s| s.totals.open).sum::<u64>(),
        total
    );
}

#[test]
fn server_rows_join_live_states_kernel_totals_and_limits() {
    use tcp_state::ESTABLISHED;
    let server: std::net::SocketAddr = "127.0.0.2:2181".parse().unwrap();
    let key = ServerKey {
        daddr: ip_to_bytes(server.ip()),
        saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
        dport: 2181,
        _pad: [0; 6],
    };
    // A server this host no longer holds anything to still has its row.
    let gone = ServerKey {
        daddr: ip_to_bytes("127.0.0.3".parse().unwrap()),
        ..key
    };
    let stats = [
        (
            key,
            Counters {
                opened: 9,
                closed: 6,
                rejected: 4,
                ..Counters::default()
            },
        ),
        (
            gone,
            Counters {
                opened: 1,
                failed: 1,
                ..Counters::default()
            },
        ),
    ];
    let conns = [
        conn(1, 9, 1, "127.0.0.2:2181", ESTABLISHED),
        conn(1, 9, 2, "127.0.0.2:2181", ESTABLISHED),
        conn(2, 9, 3, "127.0.0.2:2181", ESTABLISHED),
    ];
    let limits = Limits::new(Some(5), None, &["127.0.0.3:2181=0".into()]).unwrap();
    let facts = HashMap::new();
    let seeded = HashMap::new();
    let rows = build(&Inputs {
        conns: &conns,
        seeds: &[],
        proc_stats: &[],
        cgroup_stats: &[],
        server_stats: &stats,
        limits: &limits,
        facts: &facts,
        seeded: &seeded,
        cgroup_paths: &FxHashMap::default(),
        held_by: &HashMap::new(),
        nat: &Translations::default(),
        retired: &[],
        retired_v1: &[],
        retired_v1_moved: &[],
        now_ns: 0,
        aggregates: None,
    });
    let r = &rows.servers[0];
    assert_eq!(
        (r.server.as_str(), r.local_ip.as_str()),
        ("127.0.0.2:2181", "127.0.0.1")
    );
    assert_eq!(
        (r.states.open, r.opened, r.closed, r.rejected),
        (3, 9, 6, 4)
    );
    assert_eq!((r.limit, r.usage, r.headroom), (5, Some(0.6), Some(2)));
    let r = &rows.servers[1];
    assert_eq!(
        (r.server.as_str(), r.states.open, r.failed),
        ("127.0.0.3:2181", 0, 1)
    );
    assert_eq!((r.limit, r.usage, r.headroom), (0, None, None));
}

/// A container's connections masqueraded to the host's address count in the host's
/// row, with the host's own: that is what the server counts against its limit.
#[test]
fn nat_translated_connections_count_where_the_server_sees_them() {
    use tcp_state::ESTABLISHED;
    let host = ip_to_bytes("127.0.0.1".parse().unwrap());
    let container = ip_to_bytes("10.7.0.2".parse().unwrap());
    let from_container = |tgid, sport| Conn {
        tuple: Tuple {
            saddr: container,
            ..conn(tgid, 9, sport, "127.0.0.2:2181", ESTABLISHED).tuple
        },
        ..conn(tgid, 9, sport, "127.0.0.2:2181", ESTABLISHED)
    };
    let conns = [
        conn(1, 9, 1, "127.0.0.2:2181", ESTABLISHED),
        from_container(2, 2),
        from_container(2, 3),
    ];
    let mut nat = Translations::default();
    let mut live = FxHashMap::default();
    live.insert(conns[1].tuple, host);
    live.insert(conns[2].tuple, host);
    nat.learn(live, 10);
    let server: std::net::SocketAddr = "127.0.0.2:2181".parse().unwrap();
    // The kernel's cumulative counters are keyed by the container's own address.
    let stats = [(
        ServerKey {
            daddr: ip_to_bytes(server.ip()),
            saddr: container,
            dport: 2181,
            _pad: [0; 6],
        },
        Counters {
            opened: 4,
            closed: 2,
            ..Counters::default()
        },
    )];
    let limits = Limits::new(Some(3), None, &[]).unwrap();
    let (facts, seeded) = (HashMap::new(), HashMap::new());
    let rows = build(&Inputs {
        conns: &conns,
        seeds: &[],
        proc_stats: &[],
        cgroup_stats: &[],
        server_stats: &stats,
        limits: &limits,
        facts: &facts,
        seeded: &seeded,
        cgroup_paths: &FxHashMap::default(),
        held_by: &HashMap::new(),
        nat: &nat,
        retired: &[],
        retired_v1: &[],
        retired_v1_moved: &[],
        now_ns: 0,
        aggregates: None,
    });
    assert_eq!(rows.servers.len(), 1, "{:#?}", rows.servers);
    let r = &rows.servers[0];
    assert_eq!(r.local_ip, "127.0.0.1");
    assert_eq!(r.translated_from, ["10.7.0.2"]);
    assert_eq!((r.states.open, r.opened, r.closed), (3, 4, 2));
    assert_eq!((r.headroom, r.usage), (Some(0), Some(1.0)));
    let shown = connections(&conns, &[], &nat, 0);
    let seen: Vec<Option<&str>> = shown.iter().map(|c| c.server_sees.as_deref()).collect();
    assert_eq!(
        seen.iter().filter(|s| **s == Some("127.0.0.1")).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|s| s.is_none()).count(), 1);
}

#[test]
fn an_owner_userspace_never_saw_is_labelled_by_its_comm() {
    let mut facts = HashMap::new();
    facts.insert(
        key(8),
        OwnerFacts {
            comm: "leaky".into(),
            ..OwnerFacts::default()
        },
    );
    let rows = run_with(
        &[conn(8, 9, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED)],
        &[],
        &facts,
    );
    assert_eq!(rows.processes[0].who.service, "leaky");
    assert_eq!(rows.processes[0].who.kind, Kind::Process);
    let rows = run_with(
        &[conn(9, 9, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED)],
        &[],
        &HashMap::new(),
    );
    assert_eq!(rows.processes[0].who.label, "?");
}

#[test]
fn states_split_into_open_close_wait_and_closing() {
    use tcp_state::*;
    let conns = [
        conn(10, 5, 1, "127.0.0.2:2181", SYN_SENT),
        conn(10, 5, 2, "127.0.0.2:2181", ESTABLISHED),
        conn(10, 5, 3, "127.0.0.3:2181", ESTABLISHED),
        conn(10, 5, 4, "127.0.0.2:2181", CLOSE_WAIT),
        conn(10, 5, 5, "127.0.0.2:2181", FIN_WAIT2),
        conn(11, 6, 6, "[::1]:2181", ESTABLISHED),
    ];
    let (servers, procs, cgroups) = run(&conns, &[], &[]);
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[0].server, "127.0.0.2:2181");
    assert_eq!(
        servers[0].states,
        StateCounts {
            open: 2,
            connecting: 1,
            established: 1,
            close_wait: 1,
            closing: 1
        }
    );
    assert_eq!(servers[2].server, "[::1]:2181");
    assert_eq!(procs[0].pid, 10);
    assert_eq!(procs[0].states.open, 3);
    assert_eq!(
        procs[0].servers,
        vec![
            ServerOpen {
                server: "127.0.0.2:2181".into(),
                local_ip: "127.0.0.1".into(),
                open: 2
            },
            ServerOpen {
                server: "127.0.0.3:2181".into(),
                local_ip: "127.0.0.1".into(),
                open: 1
            },
        ]
    );
    assert_eq!(cgroups[0].id, 5);
    assert_eq!(cgroups[0].states.open, 3);
    assert_eq!(cgroups[0].path.as_deref(), Some("/cg5"));
    assert_eq!(cgroups[1].pids, vec![11]);
}

fn in_v1(path: &str, v2_id: u64) -> OwnerFacts {
    let cg = V1Cgroup {
        hierarchy: Hierarchy::V1Cpu,
        path: path.into(),
    };
    OwnerFacts {
        cgroup_id: v2_id,
        cgroup_v1: Some(cg.clone()),
        grouping: Grouping::V1(cg),
        ..OwnerFacts::default()
    }
}

fn in_v2(v2_id: u64) -> OwnerFacts {
    OwnerFacts {
        cgroup_id: v2_id,
        ..OwnerFacts::default()
    }
}

fn counted(opened: u64, closed: u64, failed: u64) -> Counters {
    Counters {
        opened,
        closed,
        failed,
        ..Counters::default()
    }
}

type CgroupSummary = (
    Hierarchy,
    Option<String>,
    u64,
    Kind,
    u64,
    u64,
    [u64; 3],
    Vec<u32>,
);

/// (hierarchy, path, id, kind, open, close_wait, [opened, closed, failed], pids).
fn cgroup_rows(
    facts: &[(u32, OwnerFacts)],
    conns: &[Conn],
    proc_stats: &[(u32, Counters)],
    cgroup_stats: &[(u64, Counters)],
) -> Vec<CgroupSummary> {
    let facts: HashMap<OwnerKey, OwnerFacts> = facts
        .iter()
        .map(|(pid, f)| (key(*pid), f.clone()))
        .collect();
    let proc_stats: Vec<(OwnerKey, Counters)> =
        proc_stats.iter().map(|(pid, c)| (key(*pid), *c)).collect();
    let seeded = HashMap::new();
    let ids = conns
        .iter()
        .map(|c| c.cgroup_id)
        .chain(facts.values().map(|f| f.cgroup_id))
        .chain(cgroup_stats.iter().map(|(id, _)| *id));
    let paths = ids
        .map(|id| {
            (
                id,
                if id == 1 {
                    "/".into()
                } else {
                    format!("/cg{id}")
                },
            )
        })
        .collect();
    let rows = build(&Inputs {
        conns,
        seeds: &[],
        proc_stats: &proc_stats,
        cgroup_stats,
        server_stats: &[],
        limits: &Limits::default(),
        facts: &facts,
        seeded: &seeded,
        cgroup_paths: &paths,
        held_by: &HashMap::new(),
        nat: &Translations::default(),
        retired: &[],
        retired_v1: &[],
        retired_v1_moved: &[],
        now_ns: 0,
        aggregates: None,
    });
    let open: u64 = rows.processes.iter().map(|p| p.states.open).sum();
    assert_eq!(
        rows.cgroups.iter().map(|c| c.states.open).sum::<u64>(),
        open,
        "every open connection in exactly one cgroup row"
    );
    rows.cgroups
        .into_iter()
        .map(|c| {
            (
                c.hierarchy,
                c.path,
                c.id,
                c.kind,
                c.states.open,
                c.states.close_wait,
                [c.opened, c.closed, c.failed],
                c.pids,
            )
        })
        .collect()
}

const C1: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000005";
const C2: &str = "/hadoop-yarn/container_e17_1410901177871_0001_01_000006";

/// A hybrid host with every process in the v2 root (id 1): two YARN containers by their
/// v1 cpu path, a plain process left in the v2 root, one process in a v2 group.
#[test]
fn v1_rows_are_keyed_by_path_and_counted_from_their_processes() {
    use tcp_state::{CLOSE_WAIT, ESTABLISHED, SYN_SENT};
    let facts = [
        (1, in_v1(C1, 1)),
        (2, in_v1(C1, 1)),
        (3, in_v1(C2, 1)),
        (4, in_v2(1)),
        (5, in_v2(7)),
    ];
    let mut conns = Vec::new();
    let mut port = 0;
    for (pid, cgroup, state, n) in [
        (1, 1, ESTABLISHED, 3),
        (1, 1, CLOSE_WAIT, 1),
        (2, 1, SYN_SENT, 1),
        (3, 1, ESTABLISHED, 2),
        (4, 1, ESTABLISHED, 1),
        (5, 7, ESTABLISHED, 2),
    ] {
        for _ in 0..n {
            port += 1;
            conns.push(conn(pid, cgroup, port, "127.0.0.2:2181", state));
        }
    }
    let proc_stats = [
        (1, counted(6, 2, 0)),
        (2, counted(2, 0, 1)),
        (3, counted(2, 0, 0)),
        (4, counted(3, 2, 0)),
        (5, counted(2, 0, 0)),
    ];
    // The kernel counts per v2 id: the root's row holds every process in it.
    let cgroup_stats = [(1, counted(13, 4, 1)), (7, counted(2, 0, 0))];
    let yarn = Kind::Yarn;
    assert_eq!(
        cgroup_rows(&facts, &conns, &proc_stats, &cgroup_stats),
        vec![
            (
                Hierarchy::V1Cpu,
                Some(C1.into()),
                0,
                yarn,
                4,
                1,
                [8, 2, 1],
                vec![1, 2]
            ),
            (
                Hierarchy::V2,
                Some("/cg7".into()),
                7,
                Kind::Process,
                2,
                0,
                [2, 0, 0],
                vec![5]
            ),
            (
                Hierarchy::V1Cpu,
                Some(C2.into()),
                0,
                yarn,
                2,
                0,
                [2, 0, 0],
                vec![3]
            ),
            (
                Hierarchy::V2,
                Some("/".into()),
                1,
                Kind::Process,
                1,
                0,
                [3, 2, 0],
                vec![4]
            ),
        ]
    );
}

/// Retired processes counted in v1 rows: their row keeps what they did (a row of only
/// retired ones included), and the kernel's v2 row, whose per-id counters include it, leaves
/// it out rather than taking it over.
#[test]
fn v1_rows_keep_their_retired_processes_and_the_v2_row_leaves_them_out() {
    use tcp_state::ESTABLISHED;
    let facts: HashMap<OwnerKey, OwnerFacts> = [(1, in_v1(C1, 1)), (4, in_v2(1))]
        .into_iter()
        .map(|(pid, f)| (key(pid), f))
        .collect();
    let conns = [
        conn(1, 1, 1, "127.0.0.2:2181", ESTABLISHED),
        conn(4, 1, 2, "127.0.0.2:2181", ESTABLISHED),
    ];
    let proc_stats = [(key(1), counted(1, 0, 0)), (key(4), counted(3, 2, 0))];
    let v1 = |path: &str| V1Cgroup {
        hierarchy: Hierarchy::V1Cpu,
        path: path.into(),
    };
    let retired = |opened, closed, rejected| Counters {
        opened,
        closed,
        rejected,
        ..Counters::default()
    };
    let retired_v1 = [(v1(C1), retired(5, 3, 2)), (v1(C2), retired(2, 2, 0))];
    let retired_v1_moved = [(1, retired(7, 5, 2))];
    // The kernel's counters of id 1: every process that ever connected from it.
    let cgroup_stats = [(1, retired(1 + 3 + 7, 2 + 5, 2))];
    let paths = [(1, "/".to_owned())].into_iter().collect();
    let rows = build(&Inputs {
        conns: &conns,
        seeds: &[],
        proc_stats: &proc_stats,
        cgroup_stats: &cgroup_stats,
        server_stats: &[],
        limits: &Limits::default(),
        facts: &facts,
        seeded: &HashMap::new(),
        cgroup_paths: &paths,
        held_by: &HashMap::new(),
        nat: &Translations::default(),
        retired: &[],
        retired_v1: &retired_v1,
        retired_v1_moved: &retired_v1_moved,
        now_ns: 0,
        aggregates: None,
    });
    let got: Vec<_> = rows
        .cgroups
        .iter()
        .map(|c| {
            (
                c.hierarchy,
                c.path.as_deref().unwrap(),
                [c.states.open, c.opened, c.closed, c.rejected],
                c.pids.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Hierarchy::V2, "/", [1, 3, 2, 0], vec![4]),
            (Hierarchy::V1Cpu, C1, [1, 6, 3, 2], vec![1]),
            (Hierarchy::V1Cpu, C2, [0, 2, 2, 0], vec![]),
        ]
    );
}

/// RHEL 8: every process by its v1 path; the kernel's v2 root row, whose counts all
/// belong to v1 rows, is not shown.
#[test]
fn a_v1_only_host_has_no_v2_row() {
    use tcp_state::ESTABLISHED;
    let facts = [(1, in_v1(C1, 1)), (2, in_v1("/", 1))];
    let conns = [
        conn(1, 1, 1, "127.0.0.2:2181", ESTABLISHED),
        conn(2, 1, 2, "127.0.0.2:2181", ESTABLISHED),
    ];
    // An exited process's counters still count in its v1 row.
    let facts_and_gone = [facts[0].clone(), facts[1].clone(), (3, in_v1(C1, 1))];
    let proc_stats = [
        (1, counted(1, 0, 0)),
        (2, counted(1, 0, 0)),
        (3, counted(2, 2, 0)),
    ];
    let rows = cgroup_rows(
        &facts_and_gone,
        &conns,
        &proc_stats,
        &[(1, counted(4, 2, 0))],
    );
    assert_eq!(
        rows,
        vec![
            (
                Hierarchy::V1Cpu,
                Some("/".into()),
                0,
                Kind::Process,
                1,
                0,
                [1, 0, 0],
                vec![2]
            ),
            (
                Hierarchy::V1Cpu,
                Some(C1.into()),
                0,
                Kind::Yarn,
                1,
                0,
                [3, 2, 0],
                vec![1, 3]
            ),
        ]
    );
}

#[test]
fn process_rows_say_where_they_are_counted() {
    let mut facts = HashMap::new();
    facts.insert(key(1), in_v1(C1, 1));
    let mut v2 = in_v2(1);
    v2.cgroup_v1 = Some(V1Cgroup {
        hierarchy: Hierarchy::V1Cpu,
        path: "/".into(),
    });
    facts.insert(key(2), v2);
    let conns = [
        conn(1, 1, 1, "127.0.0.2:2181", tcp_state::ESTABLISHED),
        conn(2, 1, 2, "127.0.0.2:2181", tcp_state::ESTABLISHED),
    ];
    let rows = run_with(&conns, &[], &facts);
    let by_pid = |pid| rows.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(by_pid(1).cgroup_hierarchy, Hierarchy::V1Cpu);
    assert_eq!(by_pid(1).cgroup_v1.as_deref(), Some(C1));
    assert_eq!(by_pid(2).cgroup_hierarchy, Hierarchy::V2);
    assert_eq!(by_pid(2).cgroup_v1.as_deref(), Some("/"));
    let v1 = rows.cgroups.iter().find(|c| c.id == 0).unwrap();
    let json = serde_json::to_value(v1).unwrap();
    assert_eq!(json["hierarchy"], "v1:cpu");
    assert_eq!(json["path"], C1);
}

#[test]
fn a_seed_also_tracked_by_the_kernel_counts_once() {
    let c = conn(10, 5, 7, "127.0.0.2:2181", tcp_state::ESTABLISHED);
    let (servers, procs, _) = run(&[c], &[c], &[]);
    assert_eq!(servers[0].states.open, 1);
    assert_eq!(procs[0].states.open, 1);
}

#[test]
fn exited_process_keeps_its_totals() {
    let stats = [(
        key(42),
        Counters {
            opened: 5,
            closed: 3,
            failed: 2,
            close_wait: 0,
            rejected: 1,
        },
    )];
    let (_, procs, _) = run(&[], &[], &stats);
    assert_eq!(procs.len(), 1);
    assert_eq!(
        (
            procs[0].opened,
            procs[0].closed,
            procs[0].failed,
            procs[0].rejected
        ),
        (5, 3, 2, 1)
    );
    assert_eq!(procs[0].states.open, 0);
    assert!(!procs[0].alive);
}

#[test]
fn reused_pid_is_two_rows() {
    let mut older = key(42);
    older.birth_ns = 100;
    let mut newer = key(42);
    newer.birth_ns = 200;
    let stats = [
        (
            older,
            Counters {
                opened: 1,
                ..Default::default()
            },
        ),
        (
            newer,
            Counters {
                opened: 2,
                ..Default::default()
            },
        ),
    ];
    let (_, procs, _) = run(&[], &[], &stats);
    assert_eq!(procs.len(), 2);
}

#[test]
fn empty_host() {
    let (s, p, c) = run(&[], &[], &[]);
    assert!(s.is_empty() && p.is_empty() && c.is_empty());
}

/// A cgroup row carries what every other owner row does: refusals (the kernel's per v2 id,
/// less what processes counted in v1 rows were refused), the age of its oldest connection
/// and the users of the processes it lists, so no view has to sum them.
#[test]
fn cgroup_rows_carry_refusals_ages_and_users() {
    use tcp_state::ESTABLISHED;
    let user = |f: OwnerFacts, name: &str| OwnerFacts {
        user: Some(name.into()),
        ..f
    };
    let facts: HashMap<OwnerKey, OwnerFacts> = [
        (1, user(in_v1(C1, 1), "alice")),
        (4, user(in_v2(1), "bob")),
        (5, user(in_v2(7), "carol")),
        (6, user(in_v2(7), "alice")),
        (8, user(in_v2(7), "dave")),
        // First seen in 7, connected from 1 after it moved: both rows list it.
        (9, user(in_v2(7), "erin")),
    ]
    .into_iter()
    .map(|(pid, f)| (key(pid), f))
    .collect();
    let secs = 1_000_000_000;
    let aged = |pid, cgroup, port, opened_secs| Conn {
        opened_ns: opened_secs * secs,
        ..conn(pid, cgroup, port, "127.0.0.2:2181", ESTABLISHED)
    };
    let conns = [
        aged(1, 1, 1, 10),
        aged(4, 1, 2, 90),
        aged(5, 7, 3, 40),
        aged(6, 7, 4, 70),
        aged(9, 1, 5, 95),
    ];
    let refused = |rejected| Counters {
        rejected,
        ..Counters::default()
    };
    let proc_stats = [(key(1), refused(3)), (key(4), refused(2))];
    let cgroup_stats = [(1, refused(5)), (7, refused(4))];
    let paths = [(1, "/".to_owned()), (7, "/cg7".to_owned())]
        .into_iter()
        .collect();
    let rows = build(&Inputs {
        conns: &conns,
        seeds: &[],
        proc_stats: &proc_stats,
        cgroup_stats: &cgroup_stats,
        server_stats: &[],
        limits: &Limits::default(),
        facts: &facts,
        seeded: &HashMap::new(),
        cgroup_paths: &paths,
        held_by: &HashMap::new(),
        nat: &Translations::default(),
        retired: &[],
        retired_v1: &[],
        retired_v1_moved: &[],
        now_ns: 100 * secs,
        aggregates: None,
    });
    let got: Vec<_> = rows
        .cgroups
        .iter()
        .map(|c| {
            (
                c.path.as_deref().unwrap(),
                c.rejected,
                c.age.oldest_secs,
                c.users.clone(),
                c.totals().rejected,
            )
        })
        .collect();
    let users = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            // Pid 8 holds nothing: it is no process row, so not a user of the row.
            ("/", 2, Some(10.0), users(&["bob", "erin"]), 2),
            ("/cg7", 4, Some(60.0), users(&["alice", "carol", "erin"]), 4),
            (C1, 3, Some(90.0), users(&["alice"]), 3),
        ]
    );
}

/// A document read back (the history store's) is the model it was written from: the real
/// example of docs/json.md goes through `from_document` and serializes to itself, and each
/// process row is keyed by its pid.
#[test]
fn a_stored_document_reads_back_as_the_model() {
    let md = include_str!("../../../docs/json.md");
    let json = md
        .split("```json")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/json.md has its example");
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    let snap = Snapshot::from_document(doc.clone()).unwrap();
    assert_eq!(serde_json::to_value(&snap).unwrap(), doc);
    assert!(!snap.rows.processes.is_empty());
    for p in &snap.rows.processes {
        assert_eq!(p.key.tgid, p.pid);
    }
    let e = Snapshot::from_document(serde_json::json!({"schema": 3}))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("not a snapshot document this zkconn reads"),
        "{e}"
    );
}
