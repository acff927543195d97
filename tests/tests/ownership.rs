//! Who owns a connection that changes hands. The policy (docs/attribution.md, "Ownership"):
//! a connection counts for the process that called connect(), for its whole life; when
//! that process has exited while the connection is still open, its row names the
//! processes holding it now (`held_by`). Connections that predate zkconn are owned by
//! their oldest current holder, since the connector is not known. Root only; run with
//! `cargo xtask test`.

use anyhow::Result;
use integration_tests::{
    Daemon, Handoff, ZkServer, Zkconn, field, fresh_ipv4, process, wait_settled,
};
use serde_json::{Value, json};

fn held_by(row: &Value) -> Value {
    row["held_by"].clone()
}

fn handed_over(mode: &str) -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let d = Daemon::start(&["--zk", &zk.addr.to_string()])?;
    let mut h = Handoff::start(zk.addr, 3, mode)?;
    let connector = h.connector;
    let snap = d.snapshot_when(|s| {
        process(s, connector).is_ok_and(|r| r["alive"] == false && !held_by(r)[0].is_null())
    })?;
    let row = process(&snap, connector)?;
    assert_eq!((field(row, "open")?, field(row, "opened")?), (3, 3));
    assert_eq!(
        held_by(row),
        json!([{"pid": h.holder, "comm": "python3", "connections": 3}])
    );
    // The holder made no connection: it has no row of its own.
    assert!(process(&snap, h.holder).is_err(), "{snap:#}");

    // The holder closes one: the connector's counts follow.
    h.client.close(1)?;
    let snap = d.snapshot_when(|s| process(s, connector).is_ok_and(|r| r["open"] == 2))?;
    let row = process(&snap, connector)?;
    assert_eq!(field(row, "closed")?, 1);
    let snap = d.snapshot_when(|s| {
        process(s, connector).is_ok_and(|r| r["held_by"][0]["connections"] == 2)
    })?;
    assert_eq!(
        held_by(process(&snap, connector)?),
        json!([{"pid": h.holder, "comm": "python3", "connections": 2}])
    );

    // The holder ends: its connections close and nobody holds anything.
    drop(h);
    wait_settled(zk.addr)?;
    let snap = d.snapshot_when(|s| process(s, connector).is_ok_and(|r| r["open"] == 0))?;
    let row = process(&snap, connector)?;
    assert_eq!(field(row, "closed")?, 3);
    assert_eq!(held_by(row), json!([]));
    Ok(())
}

#[test]
fn connections_inherited_by_a_forked_child_stay_with_the_connector() -> Result<()> {
    handed_over("fork")
}

#[test]
fn connections_passed_over_a_unix_socket_stay_with_the_connector() -> Result<()> {
    handed_over("unix")
}

#[test]
fn connections_handed_over_before_start_belong_to_their_holder() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let h = Handoff::start(zk.addr, 2, "fork")?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let snap = z.finish()?;
    let row = process(&snap, h.holder)?;
    assert_eq!((field(row, "open")?, field(row, "seeded")?), (2, 2));
    assert_eq!(row["alive"], true);
    assert_eq!(held_by(row), json!([]));
    assert!(process(&snap, h.connector).is_err());
    Ok(())
}

/// A connection that predates zkconn, held by a process whose main thread has exited
/// (`pthread_exit`) while a worker thread runs: `/proc/PID/fd` is empty then, and the
/// descriptors show only under `/proc/PID/task/TID/fd` (`ss -p` misses such a holder).
/// Seeding finds the holder through its other thread; the connection is not ownerless.
#[test]
fn a_holder_whose_main_thread_exited_is_found_through_its_threads() -> Result<()> {
    use std::io::BufRead as _;
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept() {
            held.push(s);
        }
    });
    let script = "import socket, sys, threading, time, ctypes, os\n\
                  s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n\
                  threading.Thread(target=lambda: time.sleep(3600)).start()\n\
                  print('ready', os.getpid(), flush=True)\n\
                  ctypes.CDLL(None).pthread_exit(None)\n";
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?,
    )
    .read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("ready"), "the holder said {line:?}");
    // Wait until the main thread is gone: its descriptors are then out of /proc/PID/fd.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() != 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "main thread still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let z = Zkconn::start(&["--zk", &addr.to_string()])?;
    let snap = z.finish()?;
    child.kill()?;
    child.wait()?;
    let seeds = &snap["probe"]["seeds"];
    assert_eq!(
        (seeds["seeded"].as_u64(), seeds["ownerless"].as_u64()),
        (Some(1), Some(0)),
        "{seeds:#}"
    );
    let row = process(&snap, pid)?;
    assert_eq!(field(row, "open")?, 1, "{row:#}");
    Ok(())
}
