//! NAT: a "container" network namespace whose traffic the host masquerades to a ZooKeeper in
//! another namespace, beside the host's own processes. The server counts both under the
//! host's address, and so must zkconn. Root only; run with `cargo xtask test`.

use std::{
    net::IpAddr,
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{NetNs, RawClient, ZkServer, Zkconn, field, process, wait_settled};
use serde_json::Value;

/// One test at a time may own the host's forwarding switch.
static FORWARDING: Mutex<()> = Mutex::new(());

/// The host's NAT for the test: forwarding on (restored on drop) and an nftables table of
/// its own that masquerades the container's address out towards the server's namespace and
/// forwards nothing else of these namespaces.
struct Masquerade {
    table: String,
    forward_was: String,
    _exclusive: MutexGuard<'static, ()>,
}

impl Masquerade {
    fn new(container: &NetNs, server: &NetNs) -> Result<Self> {
        let exclusive = FORWARDING.lock().unwrap_or_else(PoisonError::into_inner);
        let table = format!("zkconn_test_{}_{}", std::process::id(), container.veth);
        let forward_was = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?
            .trim()
            .to_owned();
        let this = Masquerade {
            table,
            forward_was,
            _exclusive: exclusive,
        };
        let (a, b, src) = (&container.veth, &server.veth, container.inside);
        let t = &this.table;
        let script = format!(
            "add table ip {t}\n\
             add chain ip {t} post {{ type nat hook postrouting priority 100; }}\n\
             add rule ip {t} post ip saddr {src} oifname \"{b}\" masquerade\n\
             add chain ip {t} zkfwd {{ type filter hook forward priority 0; }}\n\
             add rule ip {t} zkfwd iifname \"{a}\" oifname \"{b}\" accept\n\
             add rule ip {t} zkfwd iifname \"{b}\" oifname \"{a}\" accept\n\
             add rule ip {t} zkfwd iifname {{ \"{a}\", \"{b}\" }} drop\n"
        );
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .map(|mut stdin| stdin.write_all(script.as_bytes()))
                    .transpose()?;
                child.wait_with_output()
            })
            .context("cannot run nft (cargo xtask setup installs nftables)")?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
        ip(&[
            "-n",
            &container.name,
            "route",
            "add",
            "default",
            "via",
            &container.host.to_string(),
        ])?;
        Ok(this)
    }
}

impl Drop for Masquerade {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forward_was);
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `srvr` asked of `server` from inside `ns` (edge_client's `ask`): what it printed.
fn ask_from(ns: &NetNs, server: std::net::SocketAddr) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/edge_client.py"
        ))
        .args(["ask", &server.ip().to_string(), &server.port().to_string()])
        .arg("srvr")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The server's own view: its established connections per peer address (`ss` in its
/// namespace).
fn server_side_peers(ns: &NetNs, port: u16) -> Result<Vec<(IpAddr, usize)>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "ss",
            "-Htn",
            "state",
            "established",
        ])
        .arg(format!("( sport = :{port} )"))
        .output()?;
    let mut peers: std::collections::BTreeMap<IpAddr, usize> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(peer) = line.split_whitespace().nth(3) else {
            continue;
        };
        let addr: std::net::SocketAddr = peer.parse()?;
        // The JVM's sockets are IPv6: IPv4 peers show as IPv4-mapped.
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        *peers.entry(ip).or_default() += 1;
    }
    Ok(peers.into_iter().collect())
}

#[test]
fn masqueraded_container_connections_count_under_the_hosts_address() -> Result<()> {
    let container = NetNs::create()?;
    let server_ns = NetNs::create()?;
    let _nat = Masquerade::new(&container, &server_ns)?;
    let zk = ZkServer::start_in(Some(&server_ns.name), server_ns.inside, 10, &[])?;
    let host_addr = server_ns.host;

    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "10"])?;
    let host = RawClient {
        interval: Some(Duration::from_millis(50)),
        ..RawClient::new(zk.addr, 6)
    }
    .spawn()?;
    let boxed = RawClient {
        netns: Some(container.name.clone()),
        interval: Some(Duration::from_millis(50)),
        ..RawClient::new(zk.addr, 4)
    }
    .spawn()?;
    // The server holds 10 from the host's address: the next connect from the container is
    // refused, though the container's own address has only 4.
    let answer = ask_from(&container, zk.addr)?;
    wait_settled(zk.addr)?;
    let truth = server_side_peers(&server_ns, zk.addr.port())?;
    let snap = z.finish()?;

    assert_eq!(truth, vec![(host_addr, 10)], "the server's own view");
    assert!(
        answer.starts_with("got 0") || answer.starts_with("error"),
        "the 11th was answered: {answer}"
    );
    let rows: Vec<&Value> = snap["servers"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "one budget, as the server counts: {rows:#?}");
    let row = rows[0];
    assert_eq!(row["local_ip"], host_addr.to_string());
    assert_eq!(
        row["translated_from"],
        serde_json::json!([container.inside.to_string()])
    );
    assert_eq!(field(row, "open")?, 10, "{row:#}");
    assert_eq!(field(row, "headroom")?, 0, "{row:#}");
    assert_eq!(field(row, "rejected")?, 1, "{row:#}");
    assert_eq!(row["alarm"], "critical");
    assert_eq!(field(process(&snap, host.pid())?, "open")?, 6);
    assert_eq!(field(process(&snap, boxed.pid())?, "open")?, 4);
    assert_eq!(
        snap["probe"]["nat"]["available"], true,
        "{:#}",
        snap["probe"]
    );
    assert_eq!(snap["probe"]["nat"]["translated"], 4);
    Ok(())
}

/// `--nat off`: nothing is asked, and the outputs say so; rows keep each connection's own
/// source address.
#[test]
fn nat_off_says_so_and_keeps_own_addresses() -> Result<()> {
    let container = NetNs::create()?;
    let server_ns = NetNs::create()?;
    let _nat = Masquerade::new(&container, &server_ns)?;
    let zk = ZkServer::start_in(Some(&server_ns.name), server_ns.inside, 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--nat", "off"])?;
    let _boxed = RawClient {
        netns: Some(container.name.clone()),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let nat = &snap["probe"]["nat"];
    assert_eq!(nat["available"], false);
    assert_eq!(nat["reason"], "--nat off");
    assert_eq!(nat["lookups"], 0);
    let rows = snap["servers"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["local_ip"], container.inside.to_string());
    Ok(())
}

/// A container none of whose connections ever lives: the host already holds the server's
/// limit, so each of its connects is refused at once. The refusals still count where the
/// server saw them, under the host's address.
#[test]
fn a_container_refused_at_once_counts_under_the_hosts_address() -> Result<()> {
    let container = NetNs::create()?;
    let server_ns = NetNs::create()?;
    let _nat = Masquerade::new(&container, &server_ns)?;
    let zk = ZkServer::start_in(Some(&server_ns.name), server_ns.inside, 5, &[])?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "5"])?;
    let host = RawClient {
        interval: Some(Duration::from_millis(50)),
        ..RawClient::new(zk.addr, 5)
    }
    .spawn()?;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(ask_from(&container, zk.addr)?);
    }
    wait_settled(zk.addr)?;
    // Past one sample, so the refusals' look-ups have run.
    std::thread::sleep(Duration::from_millis(1500));
    let snap = z.finish()?;

    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("got 0") || a.starts_with("error")),
        "{answers:?}"
    );
    let rows: Vec<&Value> = snap["servers"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    assert_eq!(rows.len(), 1, "one budget, as the server counts: {rows:#?}");
    let row = rows[0];
    assert_eq!(row["local_ip"], server_ns.host.to_string());
    assert_eq!(
        row["translated_from"],
        serde_json::json!([container.inside.to_string()])
    );
    assert_eq!(
        [field(row, "open")?, field(row, "rejected")?],
        [5, 3],
        "{row:#}"
    );
    assert_eq!(row["refusing"], true);
    assert_eq!(field(process(&snap, host.pid())?, "open")?, 5);
    Ok(())
}
