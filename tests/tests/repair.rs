//! Drift repair against a real ZooKeeper: the running zkconn's own `ZK_CONNS` map is made
//! wrong with bpftool (an entry of a live connection deleted: a connect the kernel
//! "missed"; an entry for a socket that does not exist added: a close it "missed"), and
//! reconciliation with the kernel's socket table must bring the open count back to what
//! `ss` sees, counting exactly what it repaired. Root only; run with `cargo xtask test`.

use std::{net::SocketAddr, process::Command, thread, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use integration_tests::{
    NetNs, RawClient, ZkServer, Zkconn, field, fresh_ipv4, process, server_open, ss_count,
    wait_settled,
};
use serde_json::Value;

/// Rounds run every second here; two consecutive sightings are needed, and the
/// collector looks once a second: this leaves room for at least three rounds.
const ROUNDS: Duration = Duration::from_secs(5);

fn start(zk: SocketAddr) -> Result<Zkconn> {
    Zkconn::start(&["--zk", &zk.to_string(), "--reconcile-interval", "1s"])
}

/// The id of the map `name` that process `pid` holds (from its fds' fdinfo and bpftool).
fn map_of(pid: u32, name: &str) -> Result<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("map_id:"))
                .filter_map(|id| id.trim().parse::<u64>().ok()),
        );
    }
    for id in ids {
        let shown = bpftool(&["map", "show", "id", &id.to_string()])?;
        if shown["name"] == name {
            return Ok(id);
        }
    }
    bail!("process {pid} holds no map named {name}")
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .arg("--json")
        .args(args)
        .output()
        .context("cannot run bpftool (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout).context("bpftool printed no JSON")
}

/// The raw (key, value) bytes of every entry of map `id`.
fn entries(id: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let dump = bpftool(&["map", "dump", "id", &id.to_string()])?;
    let bytes = |v: &Value| -> Result<Vec<u8>> {
        v.as_array()
            .ok_or_else(|| anyhow!("not a byte list: {v}"))?
            .iter()
            .map(|b| {
                let s = b.as_str().unwrap_or_default().trim_start_matches("0x");
                u8::from_str_radix(s, 16).with_context(|| format!("not a byte: {b}"))
            })
            .collect()
    };
    dump.as_array()
        .into_iter()
        .flatten()
        .map(|e| Ok((bytes(&e["key"])?, bytes(&e["value"])?)))
        .collect()
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bpftool map <verb> id ID key hex .. [value hex ..]`.
fn change(verb: &str, id: u64, key: &[u8], value: Option<&[u8]>) -> Result<()> {
    let id = id.to_string();
    let mut args: Vec<String> = ["map", verb, "id", &id, "key", "hex"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(hex(key));
    if let Some(value) = value {
        args.extend(["value".to_owned(), "hex".to_owned()]);
        args.extend(hex(value));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bpftool(&args).map(drop)
}

/// Offset of `Conn.tuple.sport` in a `ZK_CONNS` value (two 16-byte addresses first).
const SPORT: usize = 32;

fn repaired(snap: &Value) -> Result<(u64, u64)> {
    let r = &snap["probe"]["repaired"];
    Ok((field(r, "retired")?, field(r, "adopted")?))
}

#[test]
fn a_connect_the_kernel_missed_is_adopted() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = start(zk.addr)?;
    let client = RawClient::new(zk.addr, 3).spawn()?;
    wait_settled(zk.addr)?;
    let conns = map_of(z.pid(), "ZK_CONNS")?;
    let rows = entries(conns)?;
    assert_eq!(rows.len(), 3, "one row per connection");
    change("delete", conns, &rows[0].0, None)?;
    assert_eq!(entries(conns)?.len(), 2);
    thread::sleep(ROUNDS);
    let snap = z.finish()?;

    let live = ss_count(zk.addr, "established")?;
    assert_eq!(live, 3);
    assert_eq!(server_open(&snap, zk.addr), (3, 0), "{snap:#}");
    assert_eq!(repaired(&snap)?, (0, 1));
    // Adopted for the process that holds it; its counters are as they were.
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "open")?, 3);
    assert_eq!(field(row, "opened")?, 3);
    assert_eq!(field(row, "closed")?, 0);
    assert_eq!(snap["probe"]["repaired"]["interval_secs"], 1.0);
    assert!(
        snap["probe"]["repaired"]["last_secs_ago"].is_f64(),
        "{snap:#}"
    );
    Ok(())
}

#[test]
fn a_close_the_kernel_missed_is_retired() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = start(zk.addr)?;
    let client = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let conns = map_of(z.pid(), "ZK_CONNS")?;
    let rows = entries(conns)?;
    assert_eq!(rows.len(), 2, "one row per connection");
    // A copy of a live row at another socket address, from source port 1: no such socket.
    let (key, mut value) = rows[0].clone();
    value[SPORT..SPORT + 2].copy_from_slice(&1u16.to_ne_bytes());
    let ghost: Vec<u8> = key.iter().map(|b| b ^ 0x5a).collect();
    change("update", conns, &ghost, Some(&value))?;
    assert_eq!(entries(conns)?.len(), 3);
    thread::sleep(ROUNDS);
    let snap = z.finish()?;

    assert_eq!(ss_count(zk.addr, "established")?, 2);
    assert_eq!(server_open(&snap, zk.addr), (2, 0), "{snap:#}");
    assert_eq!(repaired(&snap)?, (1, 0));
    // Retired, not closed: how it ended is not known.
    let row = process(&snap, client.pid())?;
    assert_eq!(field(row, "open")?, 2);
    assert_eq!(field(row, "closed")?, 0);
    assert_eq!(field(row, "failed")?, 0);
    Ok(())
}

/// Offset of `Inbound.tuple.dport` (the client's port) in a `ZK_INBOUND` value.
const CLIENT_PORT: usize = 34;

/// The server's side: an accepted connection whose row the kernel "lost" is adopted, and a
/// row of an accepted connection that does not exist (a close the kernel "missed") is
/// retired; the client host's open count comes back to the server's own `cons`, and its
/// counters are left as they were.
#[test]
fn the_server_sides_missed_accept_and_missed_close_are_repaired() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let (src, witness) = (fresh_ipv4(), fresh_ipv4());
    let z = start(zk.addr)?;
    let _client = RawClient {
        bind: Some(src),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let inbound = map_of(z.pid(), "ZK_INBOUND")?;
    let mapped = match src {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    let rows: Vec<(Vec<u8>, Vec<u8>)> = entries(inbound)?
        .into_iter()
        .filter(|(_, v)| v[16..32] == mapped)
        .collect();
    assert_eq!(rows.len(), 3, "one row per accepted connection");
    change("delete", inbound, &rows[0].0, None)?;
    let (key, mut value) = rows[1].clone();
    value[CLIENT_PORT..CLIENT_PORT + 2].copy_from_slice(&1u16.to_ne_bytes());
    let ghost: Vec<u8> = key.iter().map(|b| b ^ 0x5a).collect();
    change("update", inbound, &ghost, Some(&value))?;
    thread::sleep(ROUNDS);
    let cons = zk.connections_per_ip(witness)?;
    let snap = z.finish()?;

    assert_eq!(
        cons.get(&src).copied(),
        Some(3),
        "the server's cons: {cons:?}"
    );
    let r = &snap["probe"]["repaired"];
    assert_eq!(
        (field(r, "inbound_retired")?, field(r, "inbound_adopted")?),
        (1, 1),
        "{r:#}"
    );
    assert_eq!(
        repaired(&snap)?,
        (0, 0),
        "nothing to repair on the connects' side"
    );
    let row = snap["clients"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["client_ip"] == src.to_string()))
        .ok_or_else(|| anyhow!("no clients row for {src}: {snap:#}"))?;
    assert_eq!(field(row, "open")?, 3, "{row:#}");
    assert_eq!(field(row, "seeded")?, 1, "the adopted one: {row:#}");
    assert_eq!(field(row, "opened")?, 3, "{row:#}");
    assert_eq!(field(row, "closed")?, 0, "retired, not closed: {row:#}");
    Ok(())
}

#[test]
fn a_missed_connect_in_another_network_namespace_is_adopted() -> Result<()> {
    let ns = NetNs::create()?;
    let zk = ZkServer::start(ns.host, 0, &[])?;
    let inside = |count| RawClient {
        netns: Some(ns.name.clone()),
        ..RawClient::new(zk.addr, count)
    };
    // One client there before zkconn starts (its namespace is read over sock_diag from
    // then on), one after.
    let before = inside(1).spawn()?;
    let z = start(zk.addr)?;
    let after = inside(2).spawn()?;
    wait_settled(zk.addr)?;
    let conns = map_of(z.pid(), "ZK_CONNS")?;
    let rows = entries(conns)?;
    assert_eq!(rows.len(), 2, "the two connects seen by the kernel");
    change("delete", conns, &rows[0].0, None)?;
    thread::sleep(ROUNDS);
    let snap = z.finish()?;

    assert_eq!(server_open(&snap, zk.addr), (3, 0), "{snap:#}");
    assert_eq!(repaired(&snap)?, (0, 1));
    assert_eq!(field(process(&snap, after.pid())?, "open")?, 2);
    assert_eq!(field(process(&snap, before.pid())?, "open")?, 1);
    Ok(())
}

/// `ss` inside namespace `ns`: established connections towards `server`.
fn ss_in(ns: &str, server: SocketAddr) -> Result<usize> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ss",
            "-Htn",
            "state",
            "established",
            "dst",
        ])
        .arg(server.to_string())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}

/// Live connections in a namespace that no process's main thread shows: one process there
/// whose main thread exited (its other threads hold the sockets), and a host process whose
/// worker thread entered the namespace. Their namespace is still read, and nothing is
/// retired.
#[test]
fn connections_only_a_thread_shows_are_not_retired() -> Result<()> {
    let zombie_ns = NetNs::create()?;
    let setns_ns = NetNs::create()?;
    let zk_a = ZkServer::start(zombie_ns.host, 0, &[])?;
    let zk_b = ZkServer::start(setns_ns.host, 0, &[])?;
    let z = Zkconn::start(&[
        "--zk",
        &format!("{},{}", zk_a.addr, zk_b.addr),
        "--reconcile-interval",
        "1s",
    ])?;
    let zombie =
        integration_tests::edge::Edge::thread_held(zk_a.addr, 3, None, Some(&zombie_ns.name))?;
    let _setns =
        integration_tests::edge::Edge::thread_held(zk_b.addr, 2, Some(&setns_ns.name), None)?;
    thread::sleep(Duration::from_millis(500));
    let status = std::fs::read_to_string(format!("/proc/{}/status", zombie.pid()))?;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        "the main thread did not exit: {status}"
    );
    thread::sleep(ROUNDS);
    let snap = z.finish()?;

    assert_eq!(ss_in(&zombie_ns.name, zk_a.addr)?, 3);
    assert_eq!(ss_in(&setns_ns.name, zk_b.addr)?, 2);
    assert_eq!(repaired(&snap)?, (0, 0), "{:#}", snap["probe"]);
    assert_eq!(server_open(&snap, zk_a.addr), (3, 0), "{snap:#}");
    assert_eq!(server_open(&snap, zk_b.addr), (2, 0), "{snap:#}");
    Ok(())
}

/// On a ZooKeeper server's host, a connection the server accepted from a client that drew
/// the watched port as its own (ephemeral) port looks like a connect towards that port. It is
/// the listener's, and never adopted (nor seeded).
#[test]
fn an_accepted_connection_is_not_taken_for_a_connect() -> Result<()> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let ip = integration_tests::fresh_ipv4();
    let listener = std::net::TcpListener::bind((ip, 0))?;
    let server = listener.local_addr()?;
    let connect = || -> Result<std::net::TcpStream> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        // The client's own port is the server's port.
        s.bind(&SockAddr::from(SocketAddr::new(
            integration_tests::fresh_ipv4(),
            server.port(),
        )))?;
        s.connect(&SockAddr::from(server))?;
        Ok(s.into())
    };
    // One before zkconn starts (seeding), one after (repair).
    let _before = connect()?;
    let _accepted_before = listener.accept()?;
    let z = Zkconn::start(&[
        "--port",
        &server.port().to_string(),
        "--reconcile-interval",
        "1s",
    ])?;
    let _after = connect()?;
    let _accepted_after = listener.accept()?;
    thread::sleep(ROUNDS);
    let snap = z.finish()?;

    // The two connects, one seeded and one seen by the kernel; the listener's two ends of
    // them neither seeded nor adopted.
    assert_eq!(repaired(&snap)?, (0, 0), "{:#}", snap["probe"]);
    assert_eq!(snap["probe"]["seeds"]["seeded"], 1, "{:#}", snap["probe"]);
    assert_eq!(server_open(&snap, server), (2, 0), "{snap:#}");
    Ok(())
}
