//! The server's side: zkconn on a ZooKeeper server's host counts, per client host, the
//! connections the server holds and the ones it refused, checked against the server's own
//! `cons` (its connections per client address) and `mntr` (`zk_connection_rejected`).
//! Root only; run with `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use integration_tests::{
    Client, Daemon, RawClient, ZkServer, Zkconn, field, fresh_ipv4, wait_settled,
};
use serde_json::Value;

/// The `clients` row of client host `ip` on `listener`.
fn client_row(snap: &Value, listener: SocketAddr, ip: IpAddr) -> Result<&Value> {
    snap["clients"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["listener"] == listener.to_string() && r["client_ip"] == ip.to_string())
        })
        .ok_or_else(|| {
            anyhow!(
                "no clients row for {ip} on {listener}: {:#}",
                snap["clients"]
            )
        })
}

/// Three client hosts against `maxClientCnxns=3`, one of them holding connections from
/// before zkconn started: each host's open connections equal the server's `cons` for that
/// address, each refused host's refusals are exact, and the refusals of every row sum to
/// the server's own count.
#[test]
fn each_client_hosts_connections_and_refusals_equal_the_servers_own() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 3, &[])?;
    let (a, b, c, witness) = (fresh_ipv4(), fresh_ipv4(), fresh_ipv4(), fresh_ipv4());
    let step = Some(Duration::from_millis(300));
    // Host a holds two from before zkconn: seeded.
    let _early = RawClient {
        bind: Some(a),
        interval: step,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "3"])?;
    let before = zk.connection_rejected(witness)?;
    // Host b: three fit, the next four are refused.
    let _b = RawClient {
        bind: Some(b),
        interval: step,
        ..RawClient::new(zk.addr, 7)
    }
    .spawn()?;
    // Host a: one more fits beside the seeded two, the next two are refused.
    let _a = RawClient {
        bind: Some(a),
        interval: step,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    // Host c: two questions answered and closed (no refusal), one connection held.
    let mut asker = RawClient {
        bind: Some(c),
        say: Some("srvr".into()),
        exit_after: Some(Duration::from_millis(100)),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    asker.wait_exit(Duration::from_secs(5))?;
    let _c = RawClient {
        bind: Some(c),
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    thread::sleep(Duration::from_millis(300));
    let rejected = zk.connection_rejected(witness)? - before;
    let cons = zk.connections_per_ip(witness)?;
    let snap = z.finish()?;

    assert_eq!(rejected, 6, "the server's own count");
    assert_eq!(
        snap["probe"]["server_side"]["followed"], true,
        "{:#}",
        snap["probe"]
    );
    assert_eq!(snap["probe"]["server_side"]["refusals_told"], true);
    // (host, open, rejected, opened since start, seeded, closed)
    for (ip, open, refused, opened, seeded, closed) in
        [(a, 3, 2, 3, 2, 2), (b, 3, 4, 7, 0, 4), (c, 1, 0, 3, 0, 2)]
    {
        let row = client_row(&snap, zk.addr, ip)?;
        assert_eq!(
            cons.get(&ip).copied().unwrap_or(0),
            open,
            "the server's cons for {ip}: {cons:?}"
        );
        assert_eq!(field(row, "open")?, open, "{row:#}");
        assert_eq!(field(row, "rejected")?, refused, "{row:#}");
        assert_eq!(field(row, "opened")?, opened, "{row:#}");
        assert_eq!(field(row, "closed")?, closed, "{row:#}");
        assert_eq!(field(row, "seeded")?, seeded, "{row:#}");
        assert_eq!(field(row, "unanswered")?, 0, "{row:#}");
        assert_eq!(field(row, "limit")?, 3, "{row:#}");
        assert_eq!(row["headroom"], 3 - open as i64, "{row:#}");
        let ports = row["connections"].as_array().map_or(0, Vec::len);
        assert_eq!(ports as u64, open, "{row:#}");
    }
    let rows = snap["clients"].as_array().cloned().unwrap_or_default();
    let total: u64 = rows.iter().filter_map(|r| r["rejected"].as_u64()).sum();
    assert_eq!(total, rejected, "{rows:#?}");
    Ok(())
}

/// A server killed and started again, under real sessions (the official Java client):
/// the rows stay, the sessions it dropped count as closed (answered: no refusal), and the
/// client's reconnections count on; open equals the server's `cons` after the restart.
#[test]
fn a_server_restart_keeps_each_client_hosts_counts() -> Result<()> {
    let mut zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let witness = fresh_ipv4();
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "10"])?;
    let _sessions = Client::java_sessions(&zk, 2)?;
    let client = "127.0.0.1".parse::<IpAddr>()?;
    zk.restart()?;
    // The client library reconnects each session on its own.
    let deadline = Instant::now() + Duration::from_secs(40);
    while zk.connections_per_ip(witness)?.get(&client).copied() != Some(2) {
        anyhow::ensure!(Instant::now() < deadline, "the sessions did not come back");
        thread::sleep(Duration::from_millis(300));
    }
    let snap = z.finish()?;
    let row = client_row(&snap, zk.addr, client)?;
    assert_eq!(field(row, "open")?, 2, "{row:#}");
    assert_eq!(field(row, "closed")?, 2, "{row:#}");
    assert_eq!(field(row, "opened")?, 4, "{row:#}");
    assert_eq!(field(row, "rejected")?, 0, "{row:#}");
    assert_eq!(field(row, "unanswered")?, 0, "{row:#}");
    Ok(())
}

/// More accepted connections than the tables hold, at start and after: the ones that do not
/// fit are said as overflow, never a silent undercount, and the rest stay exact. The
/// listener never accepts: its connections wait in the accept queue, ESTABLISHED.
#[test]
fn accepted_connections_beyond_the_tables_are_overflow() -> Result<()> {
    let listener = TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    let before: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr))
        .collect::<std::io::Result<_>>()?;
    let z = Zkconn::start(&["--zk", &addr.to_string(), "--max-connections", "2"])?;
    let after: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr))
        .collect::<std::io::Result<_>>()?;
    thread::sleep(Duration::from_millis(300));
    let snap = z.finish()?;
    let probe = &snap["probe"];
    // Each table holds 2: of the 3 at start, 2 seeded; of the 3 after, 2 followed.
    assert_eq!(probe["server_side"]["seeded"], 2, "{probe:#}");
    assert_eq!(probe["overflow_detail"]["server_side"], 2, "{probe:#}");
    // The same sockets seen from the client's side overflow its tables alike.
    assert_eq!(probe["overflow_detail"]["connections"], 2, "{probe:#}");
    let client = before[0].local_addr()?.ip();
    let row = client_row(&snap, addr, client)?;
    assert_eq!(field(row, "open")?, 4, "{row:#}");
    assert_eq!(field(row, "seeded")?, 2, "{row:#}");
    assert_eq!(field(row, "opened")?, 2, "{row:#}");
    drop((before, after, listener));
    Ok(())
}

/// A client may connect from the watched port itself (NAT can choose any source port, and
/// so can a remote host's ephemeral range): its connections are the server's like any
/// other, from before zkconn started or after, and one that closes counts down.
#[test]
fn a_client_connecting_from_the_watched_port_is_counted() -> Result<()> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let zk = ZkServer::start(fresh_ipv4(), 3, &[])?;
    let (early, late, witness) = (fresh_ipv4(), fresh_ipv4(), fresh_ipv4());
    let from_watched_port = |ip: IpAddr| -> Result<TcpStream> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SockAddr::from(SocketAddr::new(ip, zk.addr.port())))?;
        s.connect(&SockAddr::from(zk.addr))?;
        Ok(TcpStream::from(s))
    };
    let seeded = from_watched_port(early)?;
    let gone = from_watched_port(fresh_ipv4())?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "3"])?;
    let _after = from_watched_port(late)?;
    drop(gone);
    thread::sleep(Duration::from_millis(500));
    let cons = zk.connections_per_ip(witness)?;
    let snap = z.finish()?;
    for (ip, open, opened, seeded_n) in [(early, 1, 0, 1), (late, 1, 1, 0)] {
        let row = client_row(&snap, zk.addr, ip)?;
        assert_eq!(cons.get(&ip).copied(), Some(open), "{cons:?}");
        assert_eq!(field(row, "open")?, open, "{row:#}");
        assert_eq!(field(row, "opened")?, opened, "{row:#}");
        assert_eq!(field(row, "seeded")?, seeded_n, "{row:#}");
    }
    let open: u64 = snap["clients"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["open"].as_u64()).sum())
        .unwrap_or(0);
    // The two above and no more: the one that closed is counted down, zkconn's own and the
    // witness's questions are answered and gone.
    assert_eq!(open, 2, "{:#}", snap["clients"]);
    drop(seeded);
    Ok(())
}

/// A server listening on every address and reached by one client host on two of them keeps
/// one budget for it, as ZooKeeper counts: one row under the listener, with the addresses
/// reached.
#[test]
fn one_listener_reached_on_two_addresses_is_one_row() -> Result<()> {
    let listener = TcpListener::bind("0.0.0.0:0")?;
    let port = listener.local_addr()?.port();
    let reach = |ip: &str| TcpStream::connect(SocketAddr::new(ip.parse().unwrap(), port));
    let before = vec![reach("127.0.0.1")?];
    let z = Zkconn::start(&["--port", &port.to_string(), "--max-client-cnxns", "3"])?;
    let after = vec![reach("127.0.0.2")?, reach("127.0.0.2")?];
    thread::sleep(Duration::from_millis(300));
    let snap = z.finish()?;
    let rows: Vec<&Value> = snap["clients"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["listener"] == format!("0.0.0.0:{port}"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "{:#}", snap["clients"]);
    let row = rows[0];
    assert_eq!(row["client_ip"], "127.0.0.1", "{row:#}");
    assert_eq!(field(row, "open")?, 3, "{row:#}");
    assert_eq!(row["headroom"], 0, "{row:#}");
    assert_eq!(
        row["reached"],
        serde_json::json!([format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")]),
        "{row:#}"
    );
    drop((before, after, listener));
    Ok(())
}

/// The `listeners` row of `listener`.
fn listener_row(snap: &Value, listener: SocketAddr) -> Result<&Value> {
    snap["listeners"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["listener"] == listener.to_string()))
        .ok_or_else(|| anyhow!("no listeners row for {listener}: {:#}", snap["listeners"]))
}

/// The listener is named with the JVM that holds it and what that server's own
/// configuration says, no limit given on the command line: `maxClientCnxns=3` from its
/// zoo.cfg for every client host, and `-Dzookeeper.maxCnxns=5` as its cap on the
/// listener, whose refusal (a sixth connection, from a host still under its own limit) is
/// counted and leaves no headroom. Checked against `ss`, and the server's `cons` and `mntr`
/// once b has let go (at its cap, the server refuses the questions too).
#[test]
fn the_listener_is_named_with_its_server_and_that_servers_own_limits() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 3, &["-Dzookeeper.maxCnxns=5"])?;
    let (a, b, witness) = (fresh_ipv4(), fresh_ipv4(), fresh_ipv4());
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let before = zk.connection_rejected(witness)?;
    let step = Some(Duration::from_millis(300));
    let _a = RawClient {
        bind: Some(a),
        interval: step,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    // Two fit beside a's three; the third is over maxCnxns (b is under its own 3).
    let held_by_b = RawClient {
        bind: Some(b),
        interval: step,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    thread::sleep(Duration::from_millis(300));
    let live = integration_tests::ss_count(zk.addr, "established")?;
    let snap = z.finish()?;
    drop(held_by_b);
    wait_settled(zk.addr)?;
    let rejected = zk.connection_rejected(witness)? - before;
    let cons = zk.connections_per_ip(witness)?;

    assert_eq!(live, 5, "ss: a's 3 and b's 2");
    assert_eq!(rejected, 1, "the server's own count");
    assert_eq!(cons.get(&a), Some(&3), "{cons:?}");
    let l = listener_row(&snap, zk.addr)?;
    assert_eq!(l["process"]["pid"], zk.pid(), "{l:#}");
    assert_eq!(
        l["process"]["main_class"], "org.apache.zookeeper.server.ZooKeeperServerMain",
        "{l:#}"
    );
    assert!(
        l["process"]["config"]
            .as_str()
            .is_some_and(|c| c.ends_with("/zoo.cfg")),
        "{l:#}"
    );
    assert_eq!(l["kind"], "plain", "{l:#}");
    assert_eq!(field(l, "max_client_cnxns")?, 3, "{l:#}");
    assert_eq!(field(l, "max_cnxns")?, 5, "{l:#}");
    assert_eq!(field(l, "open")?, 5, "{l:#}");
    assert_eq!(l["max_cnxns_headroom"], 0, "{l:#}");
    assert_eq!(field(l, "rejected")?, 1, "{l:#}");
    // a, b, and the witness that asked mntr before (answered and closed).
    assert_eq!(field(l, "client_hosts")?, 3, "{l:#}");
    assert_eq!(field(l, "opened")?, 7, "{l:#}");
    assert!(l.get("unknown").is_none(), "{l:#}");
    assert_eq!(l["alarm"], "critical", "at its server's cap: {l:#}");
    for (ip, open, refused) in [(a, 3, 0), (b, 2, 1)] {
        let row = client_row(&snap, zk.addr, ip)?;
        assert_eq!(field(row, "open")?, open, "{row:#}");
        assert_eq!(field(row, "rejected")?, refused, "{row:#}");
        assert_eq!(field(row, "limit")?, 3, "{row:#}");
        assert_eq!(row["limit_source"], "zoo-cfg", "{row:#}");
        // b was refused by the cap, under its own limit: said so.
        assert_eq!(row["listener_full"], true, "{row:#}");
    }
    // The same server seen from this host's connects: its limit from its own
    // configuration too (it is not asked).
    let servers = snap["servers"].as_array().cloned().unwrap_or_default();
    let row = servers
        .iter()
        .find(|r| r["server"] == zk.addr.to_string() && r["local_ip"] == a.to_string())
        .ok_or_else(|| anyhow!("no servers row from {a}: {servers:#?}"))?;
    assert_eq!(field(row, "limit")?, 3, "{row:#}");
    assert_eq!(row["limit_source"], "zoo-cfg", "{row:#}");
    Ok(())
}

/// A client host with nothing open and no change for `--retain-exited` leaves the rows;
/// its counts stay in its listener's, which never go down; a host still holding a
/// connection stays.
#[test]
fn an_idle_client_host_is_retired_and_its_counts_stay_with_its_listener() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let (a, b) = (fresh_ipv4(), fresh_ipv4());
    let d = Daemon::start(&["--zk", &zk.addr.to_string(), "--retain-exited", "3s"])?;
    let mut quick = RawClient {
        bind: Some(a),
        exit_after: Some(Duration::from_millis(300)),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    quick.wait_exit(Duration::from_secs(5))?;
    let _b = RawClient {
        bind: Some(b),
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    let row_of = |s: &Value, ip: IpAddr| client_row(s, zk.addr, ip).ok().cloned();
    let seen = d.snapshot_when(|s| {
        row_of(s, a).is_some_and(|r| r["closed"] == 2) && row_of(s, b).is_some()
    })?;
    let a_row = row_of(&seen, a).ok_or_else(|| anyhow!("no row of {a}"))?;
    assert_eq!((field(&a_row, "open")?, field(&a_row, "opened")?), (0, 2));
    let snap = d.snapshot_when(|s| row_of(s, a).is_none())?;
    let l = listener_row(&snap, zk.addr)?;
    assert_eq!(field(l, "retired_hosts")?, 1, "{l:#}");
    assert_eq!(field(l, "client_hosts")?, 1, "{l:#}");
    assert_eq!(
        field(l, "opened")?,
        3,
        "2 of the retired host, 1 of b: {l:#}"
    );
    assert_eq!(field(l, "closed")?, 2, "{l:#}");
    assert_eq!(field(l, "open")?, 1, "{l:#}");
    let b_row = row_of(&snap, b).ok_or_else(|| anyhow!("b's row retired: {snap:#}"))?;
    assert_eq!(field(&b_row, "open")?, 1);
    let (_, metrics) = d.get("/metrics")?;
    assert!(
        metrics.lines().any(|line| line
            == format!(
                "zkconn_listener_accepted_total{{listener=\"{}\"}} 3",
                zk.addr
            )),
        "{metrics}"
    );
    Ok(())
}
