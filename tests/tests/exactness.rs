//! Counts that must not lie on the paths the happy tests never walk: connections seeded at
//! start that end abruptly, connects racing the start, refusals from a paused server,
//! wildcard targets. Root only; run with `cargo xtask test` (which runs this file under every
//! hook the kernel has).

use std::{
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    ZkServer, Zkconn, edge::Edge, field, free_port, fresh_ipv4, process, server_open, server_row,
    ss_count, wait_settled,
};

/// Waits until `ss` shows `want` sockets towards `server` in `state`.
fn wait_ss(server: SocketAddr, state: &str, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = ss_count(server, state)?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{n} sockets towards {server} in {state}, not {want}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Connections seen at start whose next change goes straight to TCP_CLOSE: connects still
/// in SYN_SENT that are aborted, a queued connection and established ones that are reset.
/// The kernel clears the local port (`inet_num`) before it reports TCP_CLOSE; a hook that
/// took the port from there never found their seeds, and they stayed open forever.
#[test]
fn seeded_connections_that_end_abruptly_are_counted_down() -> Result<()> {
    let ip = fresh_ipv4();
    let deaf = SocketAddr::new(ip, free_port(ip)?);
    let _listener = Edge::listener(deaf)?;
    let mut pending = Edge::pending(deaf, 4)?;
    // Backlog 0: one connection queued, three left in SYN_SENT.
    wait_ss(deaf, "established", 1)?;
    wait_ss(deaf, "syn-sent", 3)?;
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let mut held = Edge::hold(zk.addr, 5)?;
    // A process killed with unread data: the kernel resets its connections.
    let chat = SocketAddr::new(ip, free_port(ip)?);
    let _chatty = Edge::chatty_listener(chat)?;
    let mut unread = Edge::hold(chat, 3)?;
    wait_ss(chat, "established", 3)?;
    let unread_pid = unread.pid();

    let z = Zkconn::start(&["--zk", &format!("{deaf},{},{chat}", zk.addr)])?;
    pending.reset_all()?;
    held.reset_all()?;
    unread.kill();
    wait_settled(deaf)?;
    wait_settled(zk.addr)?;
    wait_settled(chat)?;
    let snap = z.finish()?;

    assert_eq!(ss_count(chat, "all")?, 0);
    assert_eq!(server_open(&snap, chat), (0, 0), "{snap:#}");
    let u = process(&snap, unread_pid)?;
    assert_eq!(
        [field(u, "seeded")?, field(u, "open")?, field(u, "closed")?],
        [3, 0, 3],
        "{u:#}"
    );

    assert_eq!(ss_count(deaf, "all")?, 0);
    assert_eq!(ss_count(zk.addr, "all")?, 0);
    assert_eq!(server_open(&snap, deaf), (0, 0), "{snap:#}");
    assert_eq!(server_open(&snap, zk.addr), (0, 0), "{snap:#}");
    let p = process(&snap, pending.pid())?;
    assert_eq!(
        [
            field(p, "seeded")?,
            field(p, "open")?,
            field(p, "closed")?,
            field(p, "failed")?
        ],
        [4, 0, 1, 3],
        "{p:#}"
    );
    let h = process(&snap, held.pid())?;
    assert_eq!(
        [field(h, "seeded")?, field(h, "open")?, field(h, "closed")?],
        [5, 0, 5],
        "{h:#}"
    );
    assert_eq!(snap["probe"]["seeds"]["seeded"], 12, "{:#}", snap["probe"]);
    assert_eq!(snap["probe"]["seeds"]["adopted"], 12, "{:#}", snap["probe"]);
    Ok(())
}

/// Connects made while zkconn starts (between attaching and reading /proc) are seen by the
/// kernel at their connect and again by the /proc scan. Seeding must not count them twice,
/// and above all must not leave a seed behind when such a connect fails.
#[test]
fn connects_racing_the_start_are_counted_once() -> Result<()> {
    let ip = fresh_ipv4();
    let deaf = SocketAddr::new(ip, free_port(ip)?);
    let _listener = Edge::listener(deaf)?;
    // A connect every 2 ms across zkconn's whole start, each left pending for about a
    // second (so the ones made between the attach and the /proc scan are still pending when
    // seeding looks twice), then aborted.
    let mut storm = Edge::storm(deaf, 6.0, 500, Duration::from_millis(2))?;
    thread::sleep(Duration::from_millis(500));
    let z = Zkconn::start(&["--zk", &deaf.to_string()])?;
    let line = storm.command("wait")?;
    let made: u64 = line
        .strip_prefix("done ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("storm said {line:?}"))?;
    storm.reset_all()?;
    wait_settled(deaf)?;
    let snap = z.finish()?;

    assert_eq!(ss_count(deaf, "all")?, 0);
    assert_eq!(server_open(&snap, deaf), (0, 0), "{:#}", snap["servers"]);
    let p = process(&snap, storm.pid())?;
    assert_eq!(field(p, "open")?, 0, "{p:#}");
    // Every connect the kernel saw ended, each once: seeded ones plus those seen at connect.
    assert_eq!(
        field(p, "seeded")? + field(p, "opened")?,
        field(p, "closed")? + field(p, "failed")?,
        "{p:#}"
    );
    assert!(made > 1000, "the storm made only {made} connects");
    // Some of them were pending at start and seeded, or the race was not run at all.
    assert!(field(p, "seeded")? > 0, "{p:#}");
    Ok(())
}

/// ZooKeeper paused (as in a long GC pause) while a host at its limit connects once more:
/// the server accepts late, then refuses. The client had sent its ConnectRequest; the
/// server sent nothing. That is a refusal however late it comes — exactly as many as the
/// server's own `zk_connection_rejected` says.
#[test]
fn a_refusal_from_a_paused_server_is_counted() -> Result<()> {
    let mut zk = ZkServer::start(fresh_ipv4(), 4, &[])?;
    let held = Edge::hold(zk.addr, 4)?;
    let witness = fresh_ipv4();
    let before = zk.connection_rejected(witness)?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "4"])?;

    zk.signal(libc::SIGSTOP);
    let mut late = Edge::ask_in_background(zk.addr, "stat")?;
    thread::sleep(Duration::from_millis(2500));
    zk.signal(libc::SIGCONT);
    let answer = Edge::answer(&mut late)?;
    late.wait_exit(Duration::from_secs(10))?;
    wait_settled(zk.addr)?;
    let after = zk.connection_rejected(witness)?;
    let snap = z.finish()?;

    assert!(
        answer.starts_with("got 0") || answer.starts_with("error"),
        "the fifth connection was answered: {answer}"
    );
    assert_eq!(after - before, 1, "the server refused once");
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "rejected")?, 1, "{row:#}");
    assert_eq!(field(process(&snap, late.pid())?, "rejected")?, 1);
    assert_eq!(field(process(&snap, held.pid())?, "rejected")?, 0);
    Ok(())
}

/// The same pause below the limit: the server answers late, and nothing is a refusal. Nor is
/// a connection that never sends a byte and is closed by its server much later.
#[test]
fn late_answers_and_silent_clients_are_not_refusals() -> Result<()> {
    let mut zk = ZkServer::start(fresh_ipv4(), 4, &[])?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    zk.signal(libc::SIGSTOP);
    let mut slow = Edge::ask_in_background(zk.addr, "srvr")?;
    thread::sleep(Duration::from_millis(2500));
    zk.signal(libc::SIGCONT);
    let answer = Edge::answer(&mut slow)?;
    // It closes its socket as it exits (the server closed first, after answering).
    slow.wait_exit(Duration::from_secs(10))?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    assert!(
        answer.starts_with("got ") && !answer.starts_with("got 0"),
        "the server did not answer: {answer}"
    );
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "rejected")?, 0, "{row:#}");
    assert_eq!(field(row, "closed")?, 1, "{row:#}");

    // A client that sends nothing, closed by its server after 2 s (as ZooKeeper closes
    // connections that never start a session): nothing was asked, so nothing was refused.
    let ip = fresh_ipv4();
    let lazy = SocketAddr::new(ip, free_port(ip)?);
    let _server = Edge::lazy_listener(lazy, 2.0)?;
    let z = Zkconn::start(&["--zk", &lazy.to_string()])?;
    let mut silent = Edge::hold(lazy, 2)?;
    wait_ss(lazy, "close-wait", 2)?;
    silent.command("close")?;
    wait_settled(lazy)?;
    let snap = z.finish()?;
    let row = server_row(&snap, lazy)?;
    assert_eq!(
        [field(row, "closed")?, field(row, "rejected")?],
        [2, 0],
        "{row:#}"
    );
    Ok(())
}

/// `--zk 0.0.0.0:P`, `--zk [::]:P` and a zoo.cfg that names the server by a wildcard watch
/// port P on every address, as a server's own listener does.
#[test]
fn wildcard_targets_watch_the_port_on_any_address() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let port = zk.addr.port();
    let mut held = Edge::hold(zk.addr, 3)?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!("clientPort={port}\nclientPortAddress=0.0.0.0\nmaxClientCnxns=7\n"),
    )?;
    let quorum = dir.path().join("quorum.cfg");
    std::fs::write(
        &quorum,
        format!("clientPort={port}\nserver.1=0.0.0.0:2888:3888;{port}\n"),
    )?;
    let cfg = cfg.display().to_string();
    let quorum = quorum.display().to_string();
    let zero = format!("0.0.0.0:{port}");
    let any6 = format!("[::]:{port}");
    for args in [
        vec!["--zk", zero.as_str()],
        vec!["--zk", any6.as_str()],
        vec!["--zoo-cfg", cfg.as_str()],
        vec!["--zoo-cfg", quorum.as_str()],
    ] {
        let z = Zkconn::start(&args)?;
        let snap = z.finish()?;
        assert_eq!(server_open(&snap, zk.addr), (3, 0), "{args:?}: {snap:#}");
        assert_eq!(field(process(&snap, held.pid())?, "open")?, 3, "{args:?}");
        if args[1] == cfg {
            assert_eq!(field(server_row(&snap, zk.addr)?, "limit")?, 7);
        }
    }
    held.reset_all()?;
    Ok(())
}

/// Every TCP state change on the host tests its destination port: against the watched ports
/// fixed at load when there are few (up to 8), in the kernel's port map when there are more.
/// Both count the same, for a `--zk` endpoint and for `--port` ports, with 2 and with 10
/// ports watched; the connections are made after start, so the programs count them.
#[test]
fn few_and_many_watched_ports_count_the_same() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    for extra in [1usize, 9] {
        let ip = fresh_ipv4();
        let listeners = (0..extra)
            .map(|_| std::net::TcpListener::bind((ip, 0)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| Ok(l.local_addr()?.port().to_string()))
            .collect::<Result<Vec<_>>>()?
            .join(",");
        let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--port", &ports])?;
        let mut to_zk = Edge::hold(zk.addr, 3)?;
        let last = listeners.last().context("a listener")?.local_addr()?;
        let mut to_last = Edge::hold(last, 2)?;
        let snap = z.finish()?;
        assert_eq!(server_open(&snap, zk.addr), (3, 0), "{extra}: {snap:#}");
        assert_eq!(server_open(&snap, last), (2, 0), "{extra}: {snap:#}");
        assert_eq!(field(process(&snap, to_zk.pid())?, "opened")?, 3);
        to_zk.reset_all()?;
        to_last.reset_all()?;
    }
    Ok(())
}

/// The counters (one row per process, cgroup and server budget) are rows shared by every CPU and only
/// ever incremented with atomic adds: before 6.1 the kernel lets a softirq run of the BTF
/// tracepoint interrupt a process-context run on the same CPU, and a plain read-modify-write
/// would lose one of the two increments. Read from the loaded programs themselves.
#[test]
fn counters_are_shared_rows_incremented_atomically() -> Result<()> {
    let z = Zkconn::start(&["--port", "1"])?;
    let objects = z.bpf_objects()?;
    let mut stats_maps = Vec::new();
    let mut atomic_adds = 0;
    for (kind, id) in &objects {
        let out = std::process::Command::new("bpftool")
            .args([kind, "show", "id", &id.to_string(), "--json"])
            .output()?;
        let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let name = info["name"].as_str().unwrap_or_default();
        if *kind == "map" && name.contains("STATS") {
            stats_maps.push((name.to_owned(), info["type"].as_str().map(str::to_owned)));
        }
        if *kind == "prog" && name.starts_with("zk_") {
            let dump = std::process::Command::new("bpftool")
                .args(["prog", "dump", "xlated", "id", &id.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&dump.stdout);
            atomic_adds += text.lines().filter(|l| l.contains("lock *(u64 *)")).count();
        }
    }
    drop(z.finish()?);
    stats_maps.sort();
    let hash = Some("hash".to_owned());
    assert_eq!(
        stats_maps,
        vec![
            ("ZK_STATS".to_owned(), hash.clone()),
            ("ZK_STATS_SPILL".to_owned(), hash),
        ]
    );
    // The counted field and `rejected` beside it, in each program that counts, plus the
    // probe's own counters: far more than one site.
    assert!(
        atomic_adds >= 10,
        "{atomic_adds} atomic adds in the loaded programs"
    );
    Ok(())
}
