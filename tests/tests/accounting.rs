//! Kernel accounting against a real ZooKeeper: exact counts per process, cgroup and server.
//! Root only; run with `cargo xtask test`.

use std::{net::SocketAddr, thread, time::Duration};

use anyhow::{Context as _, Result};
use integration_tests::{
    Cgroup, Client, Daemon, RawClient, ZkServer, Zkconn, expected_hook, field, free_port,
    fresh_ipv4, process, row_where, server_open, ss_count, wait_settled,
};

fn zk_flag(server: SocketAddr) -> String {
    server.to_string()
}

#[test]
fn n_sessions_then_closing_k() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let mut client = Client::java_sessions(&zk, 6)?;
    client.close(2)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "open")?, 4);
    assert_eq!(field(row, "opened")?, 6);
    assert_eq!(field(row, "closed")?, 2);
    assert_eq!(field(row, "failed")?, 0);
    assert_eq!(row["alive"], true);
    assert_eq!(row["comm"], "java");
    assert_eq!(server_open(&snap, zk.addr), (4, 0));
    assert_eq!(row["servers"][0]["server"], zk.addr.to_string());
    assert_eq!(row["servers"][0]["open"], 4);
    assert_eq!(snap["probe"]["hook"], expected_hook().as_str());
    assert_eq!(snap["probe"]["lost"], 0);
    assert_eq!(snap["probe"]["overflow"], 0);
    assert_eq!(snap["schema"], "zkconn.snapshot/v1");
    Ok(())
}

#[test]
fn sigkill_brings_open_to_zero_and_keeps_the_row() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let mut client = Client::raw(zk.addr, 5, 1, None)?;
    let pid = client.pid();
    client.kill();
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let row = process(&snap, pid)?;
    assert_eq!(field(row, "open")?, 0);
    assert_eq!(field(row, "opened")?, 5);
    assert_eq!(field(row, "closed")?, 5);
    assert_eq!(row["alive"], false);
    assert_eq!(row["comm"], "python3");
    assert_eq!(server_open(&snap, zk.addr), (0, 0));
    Ok(())
}

#[test]
fn connections_from_several_threads_count_for_the_process() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let client = Client::raw(zk.addr, 3, 4, None)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "open")?, 12);
    assert_eq!(field(row, "opened")?, 12);
    assert_eq!(snap["processes"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[test]
fn two_processes_in_two_cgroups_count_per_cgroup() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let (cg_a, cg_b) = (Cgroup::create("a")?, Cgroup::create("b")?);
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let a = Client::raw(zk.addr, 3, 1, Some(&cg_a.path))?;
    let b = Client::raw(zk.addr, 2, 1, Some(&cg_b.path))?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let rows = snap["cgroups"].as_array().cloned().unwrap_or_default();
    let find = |rel: &str| rows.iter().find(|r| r["path"] == rel).cloned();
    let row_a =
        find(&cg_a.rel).ok_or_else(|| anyhow::anyhow!("no row for {}: {snap:#}", cg_a.rel))?;
    let row_b = find(&cg_b.rel).ok_or_else(|| anyhow::anyhow!("no row for {}", cg_b.rel))?;
    assert_eq!(field(&row_a, "open")?, 3);
    assert_eq!(field(&row_a, "opened")?, 3);
    assert_eq!(row_a["pids"], serde_json::json!([a.pid()]));
    assert_eq!(field(&row_b, "open")?, 2);
    assert_eq!(row_b["pids"], serde_json::json!([b.pid()]));
    assert_eq!(process(&snap, a.pid())?["cgroup"], cg_a.rel.as_str());
    drop((a, b));
    Ok(())
}

#[test]
fn connections_to_a_port_that_is_not_a_target_are_absent() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let other = std::net::TcpListener::bind((zk.addr.ip(), 0))?;
    let other_addr = other.local_addr()?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let client = Client::raw(other_addr, 4, 1, None)?;
    let snap = z.finish()?;
    assert_eq!(
        snap["processes"],
        serde_json::json!([]),
        "pid {}",
        client.pid()
    );
    assert_eq!(snap["servers"], serde_json::json!([]));
    Ok(())
}

#[test]
fn a_refused_connect_is_failed() -> Result<()> {
    let ip = fresh_ipv4();
    let closed = SocketAddr::new(ip, free_port(ip)?);
    let z = Zkconn::start(&["--zk", &zk_flag(closed)])?;
    let client = Client::refused(closed)?;
    wait_settled(closed)?;
    let snap = z.finish()?;
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "opened")?, 1);
    assert_eq!(field(row, "failed")?, 1);
    assert_eq!(field(row, "closed")?, 0);
    assert_eq!(field(row, "open")?, 0);
    Ok(())
}

#[test]
fn ipv6_to_a_server_on_loopback() -> Result<()> {
    let zk = ZkServer::start("::1".parse()?, 0, &[])?;
    let z = Zkconn::start(&["--zk", &format!("[::1]:{}", zk.addr.port())])?;
    let client = Client::raw(zk.addr, 3, 1, None)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    assert_eq!(field(process(&snap, client.pid())?, "open")?, 3);
    let server = snap["servers"][0].clone();
    assert_eq!(server["server"], format!("[::1]:{}", zk.addr.port()));
    assert_eq!(server["local_ip"], "::1");
    assert_eq!(field(&server, "open")?, 3);
    Ok(())
}

#[test]
fn connections_opened_before_start_are_seeded_once() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let mut before = Client::raw(zk.addr, 4, 1, None)?;
    // Connections racing the start: a client connecting in a loop while zkconn attaches.
    let racer_zk = zk.addr;
    let racer = thread::spawn(move || -> Result<Vec<Client>> {
        let mut clients = Vec::new();
        for _ in 0..10 {
            clients.push(Client::raw(racer_zk, 3, 1, None)?);
        }
        Ok(clients)
    });
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let racers = racer
        .join()
        .map_err(|_| anyhow::anyhow!("racer panicked"))??;
    before.close(1)?;
    wait_settled(zk.addr)?;
    let established = ss_count(zk.addr, "established")?;
    let snap = z.finish()?;
    let row = process(&snap, before.pid())?;
    assert_eq!(field(row, "seeded")?, 4);
    assert_eq!(field(row, "open")?, 3);
    assert_eq!(field(row, "closed")?, 1);
    assert_eq!(field(row, "opened")?, 0);
    // Every connection counted exactly once, whether seeded or hooked: the kernel's own
    // socket table (ss) is the ground truth.
    assert_eq!(established, 3 + 30);
    assert_eq!(server_open(&snap, zk.addr), (33, 0));
    let racer_open: u64 = racers
        .iter()
        .map(|c| process(&snap, c.pid()).and_then(|r| field(r, "open")))
        .sum::<Result<u64>>()?;
    assert_eq!(racer_open, 30);
    Ok(())
}

#[test]
fn eight_threads_times_two_hundred_concurrent_connects_are_exact() -> Result<()> {
    let zk = ZkServer::start(
        fresh_ipv4(),
        0,
        &["-Dzookeeper.nio.sessionlessCnxnTimeout=600000"],
    )?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let client = Client::raw(zk.addr, 200, 8, None)?;
    wait_settled(zk.addr)?;
    let established = ss_count(zk.addr, "established")?;
    let snap = z.finish()?;
    let row = process(&snap, client.pid())?;
    assert_eq!(established, 1600);
    assert_eq!(field(row, "opened")?, 1600);
    assert_eq!(field(row, "open")?, 1600);
    assert_eq!(server_open(&snap, zk.addr), (1600, 0));
    // No event dropped by zkconn. A program run the kernel itself skips (another ran on that
    // CPU: `recursion_misses`, counted in `lost`) can happen under this burst; the counts
    // above, checked against ss, are what must hold.
    assert_eq!(snap["probe"]["lost_detail"]["events"], 0);
    assert_eq!(snap["probe"]["overflow"], 0);
    Ok(())
}

#[test]
fn a_server_that_closes_while_the_client_keeps_its_fd_is_close_wait() -> Result<()> {
    // ZooKeeper closes connections that send no session request after this timeout.
    let zk = ZkServer::start(
        fresh_ipv4(),
        0,
        &["-Dzookeeper.nio.sessionlessCnxnTimeout=2000"],
    )?;
    let z = Zkconn::start(&["--zk", &zk_flag(zk.addr)])?;
    let client = Client::raw(zk.addr, 3, 1, None)?;
    let mut waited = 0;
    while ss_count(zk.addr, "close-wait")? < 3 && waited < 200 {
        thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    let snap = z.finish()?;
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "close_wait")?, 3);
    assert_eq!(field(row, "close_wait_total")?, 3);
    assert_eq!(field(row, "open")?, 0);
    // Closed by the server after seconds of silence: not a refusal.
    assert_eq!(field(row, "rejected")?, 0);
    assert_eq!(server_open(&snap, zk.addr), (0, 3));
    Ok(())
}

#[test]
fn a_capacity_smaller_than_the_load_is_counted_as_overflow() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    // The client's side alone: the server's side sizes its own tables by the same flag
    // and has its own test (server_side.rs).
    let z = Zkconn::start(&[
        "--zk",
        &zk_flag(zk.addr),
        "--max-connections",
        "5",
        "--no-server-side",
    ])?;
    let mut first = Client::raw(zk.addr, 8, 1, None)?;
    wait_settled(zk.addr)?;
    // Recovery when the load drops: closing all eight frees the five tracked entries
    // (the three untracked closes are invisible), and four new connections fit.
    first.close(8)?;
    wait_settled(zk.addr)?;
    let second = Client::raw(zk.addr, 4, 1, None)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let row = process(&snap, first.pid())?;
    assert_eq!((field(row, "open")?, field(row, "opened")?), (0, 5));
    assert_eq!(field(row, "closed")?, 5);
    let row = process(&snap, second.pid())?;
    assert_eq!((field(row, "open")?, field(row, "opened")?), (4, 4));
    assert_eq!(server_open(&snap, zk.addr), (4, 0));
    assert_eq!(snap["probe"]["overflow"], 3);
    assert_eq!(snap["probe"]["overflow_detail"]["connections"], 3);
    Ok(())
}

/// A full counter table loses the counts of the processes that did not fit (counted as
/// overflow), never their server's or cgroup's: room for 3 rows (`--max-processes 2
/// --max-cgroups 1`) and 6 processes that open 2 connections each and exit. The server row
/// and the cgroup row still say 12 opened, 12 closed.
#[test]
fn a_full_counter_table_keeps_server_and_cgroup_counts_exact() -> Result<()> {
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
        }
    });
    let rel = format!("/zkconn-full-table-{}", std::process::id());
    let cgroup = Cgroup::v2(&rel)?;
    let z = Zkconn::start(&[
        "--zk",
        &addr.to_string(),
        "--max-processes",
        "2",
        "--max-cgroups",
        "1",
    ])?;
    for _ in 0..6 {
        let mut c = RawClient {
            exit_after: Some(Duration::ZERO),
            cgroups: vec![cgroup.path.clone()],
            ..RawClient::new(addr, 2)
        }
        .spawn()?;
        c.wait_exit(Duration::from_secs(5))?;
    }
    wait_settled(addr)?;
    let snap = z.finish()?;
    let server = snap["servers"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["server"] == addr.to_string()))
        .context("no server row")?;
    let counts = |row: &serde_json::Value| -> Result<[u64; 3]> {
        Ok([
            field(row, "open")?,
            field(row, "opened")?,
            field(row, "closed")?,
        ])
    };
    assert_eq!(counts(server)?, [0, 12, 12], "{server:#}");
    let row = row_where(&snap, "cgroups", "path", &rel)?;
    assert_eq!(counts(row)?, [0, 12, 12], "{row:#}");
    // The processes that did not fit: 2 connections, each opened and closed, for each of
    // at least 3 processes.
    let lost = snap["probe"]["overflow_detail"]["counters"]
        .as_u64()
        .context("overflow_detail.counters")?;
    assert!(lost >= 12, "{:#}", snap["probe"]);
    Ok(())
}

/// A busy node's short-lived processes must not fill the kernel's process table: 24 processes
/// that connect once and exit, in batches, with a table of 8 and a retention of 1 s. Each
/// leaves the process rows (and the kernel's table) once retired, so nothing overflows, and
/// its counts stay in its service row: 24 opened, 24 closed. The first batch ran in a YARN
/// container that finished: its row goes too, its counts stay in its application's.
#[test]
fn exited_processes_are_retired_into_their_roll_ups() -> Result<()> {
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            std::thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
        }
    });
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"retention\"\ncmdline = \"--tag retention-test\"\n\
         service = \"Retention test\"\n",
    )?;
    let z = Zkconn::start(&[
        "--zk",
        &addr.to_string(),
        "--max-processes",
        "8",
        "--retain-exited",
        "1s",
        "--rules",
        rules.to_str().context("path")?,
    ])?;
    let mut pids = Vec::new();
    // The first batch runs in a YARN container's cgroup, removed after it as YARN removes a
    // finished container's; a second container of the same application lives on.
    let app = "application_1700000000000_0042";
    let (done, live) = (
        "container_e01_1700000000000_0042_01_000001",
        "container_e01_1700000000000_0042_01_000002",
    );
    let base = format!("/zkconn-retention-{}/hadoop-yarn", std::process::id());
    // The parents first, so removing the finished container's group leaves them.
    let _parents = Cgroup::v2(&base)?;
    let rel = format!("{base}/{done}");
    let mut cgroup = Cgroup::v2(&rel)?;
    let live_cgroup = Cgroup::v2(&format!("{base}/{live}"))?;
    let _live = RawClient {
        tag: Some("retention-test".into()),
        cgroups: vec![live_cgroup.path.clone()],
        ..RawClient::new(addr, 1)
    }
    .spawn()?;
    for batch in 0..6 {
        for _ in 0..4 {
            let mut c = RawClient {
                exit_after: Some(Duration::ZERO),
                tag: Some("retention-test".into()),
                cgroups: if batch == 0 {
                    vec![cgroup.path.clone()]
                } else {
                    Vec::new()
                },
                ..RawClient::new(addr, 1)
            }
            .spawn()?;
            c.wait_exit(Duration::from_secs(5))?;
            pids.push(c.pid());
        }
        if batch == 0 {
            cgroup.remove()?;
        }
        // Gone, idle, and past the retention at the next samples.
        std::thread::sleep(Duration::from_millis(3000));
    }
    wait_settled(addr)?;
    let snap = z.finish()?;
    let probe = &snap["probe"];
    assert_eq!(probe["overflow"], 0, "{probe:#}");
    assert_eq!(probe["retention"]["processes"], 24, "{probe:#}");
    // The removed cgroup's row went too, from the document and the kernel's table.
    assert_eq!(probe["retention"]["cgroups"], 1, "{probe:#}");
    let cgroups = snap["cgroups"].as_array().context("cgroups")?;
    assert!(
        !cgroups.iter().any(|c| c["path"] == rel.as_str()),
        "{cgroups:#?}"
    );
    for pid in &pids {
        assert!(process(&snap, *pid).is_err(), "pid {pid} still has a row");
    }
    // A process gone before its /proc could be read is named by its comm: its service
    // row differs, its counts are the same. Every connection is in some service row.
    row_where(&snap, "services", "service", "Retention test")?;
    let services = snap["services"].as_array().context("services")?;
    let sum = |f: &str| services.iter().filter_map(|s| s[f].as_u64()).sum::<u64>();
    // 24 retired and the one that lives on.
    assert_eq!([sum("opened"), sum("closed")], [25, 24], "{services:#?}");
    // The finished container left the container rows, its counts kept in its application
    // with the live container's; the application stays while a container of it lives.
    assert_eq!(probe["retention"]["containers"], 1, "{probe:#}");
    assert_eq!(probe["retention"]["applications"], 0, "{probe:#}");
    let containers = snap["containers"].as_array().context("containers")?;
    assert!(
        !containers.iter().any(|c| c["container"] == done),
        "{containers:#?}"
    );
    let row = row_where(&snap, "containers", "container", live)?;
    assert_eq!((field(row, "open")?, field(row, "opened")?), (1, 1));
    let row = row_where(&snap, "applications", "application", app)?;
    assert_eq!(
        (
            field(row, "open")?,
            field(row, "opened")?,
            field(row, "closed")?
        ),
        (1, 5, 4),
        "{row:#}"
    );
    assert_eq!(row["containers"], serde_json::json!([live]), "{row:#}");
    assert_eq!(row["processes"], 5, "{row:#}");
    // The kernel counts each connection in one row per process, cgroup and server budget;
    // the retired processes' and the removed cgroup's rows left its table, and their
    // counts stay in the server budget's.
    let server = snap["servers"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["server"] == addr.to_string()))
        .context("no server row")?;
    assert_eq!(
        (
            field(server, "open")?,
            field(server, "opened")?,
            field(server, "closed")?
        ),
        (1, 25, 24),
        "{server:#}"
    );
    Ok(())
}

/// Entries of the kernel's counter table (one per process, cgroup and server budget) of the
/// zkconn with pid `pid`.
fn stats_entries(pid: u32) -> Result<usize> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let text = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("map_id:"))
                .filter_map(|id| id.trim().parse::<u64>().ok()),
        );
    }
    let bpftool = |args: &[&str]| -> Result<serde_json::Value> {
        let out = std::process::Command::new("bpftool").args(args).output()?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    for id in ids {
        let id = id.to_string();
        if bpftool(&["map", "show", "id", &id, "--json"])?["name"] == "ZK_STATS" {
            let rows = bpftool(&["map", "dump", "id", &id, "--json"])?;
            return rows.as_array().map(Vec::len).context("a dump is a list");
        }
    }
    anyhow::bail!("zkconn {pid} holds no ZK_STATS map")
}

/// What a published document shows as retired is already out of the kernel's process
/// table: the table (`--max-processes`) never also holds the processes the rows just let
/// go, which under churn (15 exits a second) made it overflow.
#[test]
fn retired_processes_are_out_of_the_kernel_table_when_the_document_says_so() -> Result<()> {
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            thread::spawn(move || std::io::copy(&mut s, &mut std::io::sink()));
        }
    });
    let d = Daemon::start(&["--zk", &addr.to_string(), "--retain-exited", "1s"])?;
    for _ in 0..6 {
        let mut c = RawClient {
            exit_after: Some(Duration::ZERO),
            ..RawClient::new(addr, 1)
        }
        .spawn()?;
        c.wait_exit(Duration::from_secs(5))?;
    }
    let snap = d.snapshot_when(|s| s["probe"]["retention"]["processes"] == 6)?;
    // At once: the next refresh is up to a second away.
    let left = stats_entries(d.pid())?;
    assert_eq!(left, 0, "retired, yet still in the kernel's table");
    assert_eq!(snap["processes"].as_array().map(Vec::len), Some(0));
    assert_eq!(snap["probe"]["overflow"], 0);
    Ok(())
}
