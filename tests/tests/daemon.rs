//! `zkconn daemon` against a real ZooKeeper and real clients: its endpoints, a real
//! Prometheus scraping it, SIGKILL and restart, SIGTERM and SIGHUP. Root only; run with
//! `cargo xtask test`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use integration_tests::{
    Daemon, Prometheus, RawClient, Sample, ZkOptions, ZkServer, expected_hook, field, fresh_ipv4,
    http_get, http_get_accepting, http_request, parse_metrics, process, server_row, wait_settled,
};
use serde_json::Value;

fn server_sample(samples: &[Sample], name: &str, server: SocketAddr) -> Option<f64> {
    samples.iter().find_map(|(n, labels, v)| {
        let ours = labels.contains(&("server".into(), server.to_string()))
            && labels.contains(&("local_ip".into(), "127.0.0.1".into()));
        (n == name && ours).then_some(*v)
    })
}

fn open_is(server: SocketAddr, open: u64, rejected: u64) -> impl Fn(&Value) -> bool {
    move |snap| {
        server_row(snap, server).is_ok_and(|r| {
            field(r, "open").ok() == Some(open) && field(r, "rejected").ok() == Some(rejected)
        })
    }
}

#[test]
fn endpoints_serve_the_numbers_of_a_real_scenario() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 4, &[])?;
    let step = Some(Duration::from_millis(300));
    let holder = RawClient {
        interval: step,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let target = zk.addr.to_string();
    let dir = tempfile::tempdir()?;
    let ndjson = dir.path().join("snapshots.ndjson");
    let ndjson_s = ndjson.display().to_string();
    let d = Daemon::start(&[
        "--zk",
        &target,
        "--max-client-cnxns",
        "4",
        "--ndjson",
        &ndjson_s,
    ])?;
    // Two fit beside the holder's two; the third is refused.
    let leaker = RawClient {
        interval: step,
        expect_refused: true,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let snap = d.snapshot_when(open_is(zk.addr, 4, 1))?;
    assert_eq!(snap["schema"], "zkconn.snapshot/v1");
    // --ndjson: one whole document per line, appended each refresh; the last one written
    // has the scenario's numbers too.
    let text = std::fs::read_to_string(&ndjson)?;
    // Only whole lines: a refresh may be appending right now.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let lines: Vec<Value> = whole
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(lines.len() >= 2, "{} lines", lines.len());
    assert!(lines.iter().all(|l| l["schema"] == "zkconn.snapshot/v1"));
    let last = lines.last().map(|l| open_is(zk.addr, 4, 1)(l));
    assert_eq!(last, Some(true), "the last NDJSON line");
    assert_eq!(field(process(&snap, holder.pid())?, "seeded")?, 2);
    assert_eq!(field(process(&snap, leaker.pid())?, "rejected")?, 1);

    let (status, text) = d.get("/metrics")?;
    assert_eq!(status, 200);
    let samples = parse_metrics(&text)?;
    let get = |name| server_sample(&samples, name, zk.addr);
    assert_eq!(get("zkconn_server_open_connections"), Some(4.0), "{text}");
    assert_eq!(get("zkconn_server_limit_connections"), Some(4.0));
    assert_eq!(get("zkconn_server_usage_ratio"), Some(1.0));
    assert_eq!(get("zkconn_server_rejected_total"), Some(1.0));
    assert_eq!(get("zkconn_server_opened_total"), Some(3.0));
    assert_eq!(get("zkconn_server_alarm"), Some(2.0));
    let owners: f64 = samples
        .iter()
        .filter(|(n, _, _)| n == "zkconn_owner_open_connections")
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(owners, 4.0, "the owners add up to the server");
    // ... at the budget they use.
    let at_budget: f64 = samples
        .iter()
        .filter(|(n, l, _)| {
            n == "zkconn_owner_open_connections"
                && l.iter().any(|(k, v)| k == "server" && *v == target)
                && l.iter().any(|(k, v)| k == "local_ip" && v == "127.0.0.1")
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(at_budget, 4.0, "{text}");
    assert!(!text.contains("pid="), "no pid label");

    // Each scraper gets the format it asks for: plain text (curl, promtool) the classic
    // one, which Debian's promtool checks clean; OpenMetrics when asked, as Prometheus does.
    let (status, kind, classic) =
        http_get_accepting(d.addr, "/metrics", "text/plain;version=0.0.4")?;
    assert_eq!(
        (status, kind.as_str()),
        (200, "text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(
        classic.contains("# TYPE zkconn_server_rejected_total counter\n"),
        "{classic}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run promtool (cargo xtask setup installs it)")?;
    promtool
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(classic.as_bytes())?;
    let checked = promtool.wait_with_output()?;
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (status, kind, om) = http_get_accepting(
        d.addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )?;
    assert_eq!(
        (status, kind.as_str()),
        (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        )
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");

    // Attached and seeded: only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH are left, and
    // CAP_NET_ADMIN for NAT look-ups (the connection tracking table answers root here), in
    // every thread, and nothing can be regained.
    for task in std::fs::read_dir(format!("/proc/{}/task", d.pid()))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for set in ["CapEff:", "CapPrm:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .map(str::trim);
            assert_eq!(value, Some("0000000000081004"), "{set} {status}");
        }
    }

    let (status, body) = d.get("/healthz")?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(&format!("ok: probes attached ({})", expected_hook())),
        "{body}"
    );
    let (status, _) = d.get("/nowhere")?;
    assert_eq!(status, 404);
    let post = format!(
        "POST /metrics HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        d.addr
    );
    assert_eq!(http_request(d.addr, &post)?.0, 405);
    let with_body = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        d.addr
    );
    assert_eq!(http_request(d.addr, &with_body)?.0, 413);
    Ok(())
}

#[test]
fn a_real_prometheus_scrapes_the_daemon() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let _holder = RawClient::new(zk.addr, 3).spawn()?;
    let d = Daemon::start(&["--zk", &zk.addr.to_string()])?;
    let prom = Prometheus::start(&[d.addr])?;
    let expr = format!(
        "zkconn_server_open_connections{{job=\"zkconn\",server=\"{}\",local_ip=\"127.0.0.1\"}}",
        zk.addr
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = None;
    while Instant::now() < deadline {
        last = prom.query(&expr)?;
        if last == Some(3.0) {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(last, Some(3.0), "{expr}");
    assert_eq!(
        prom.query(&format!("up{{job=\"zkconn\",instance=\"{}\"}}", d.addr))?,
        Some(1.0)
    );
    Ok(())
}

/// Ids of the BPF programs, maps and links the process holds, from its fds' fdinfo.
fn held_by(pid: u32) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>)> {
    let (mut progs, mut maps, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                progs.extend(id.trim().parse::<u64>().ok());
            } else if let Some(id) = line.strip_prefix("map_id:") {
                maps.extend(id.trim().parse::<u64>().ok());
            } else if let Some(id) = line.strip_prefix("link_id:") {
                links.extend(id.trim().parse::<u64>().ok());
            }
        }
    }
    progs.sort_unstable();
    progs.dedup();
    maps.sort_unstable();
    maps.dedup();
    links.sort_unstable();
    links.dedup();
    Ok((progs, maps, links))
}

/// Ids and names of the programs or maps (`kind`) the kernel has now.
fn in_kernel(kind: &str) -> Result<Vec<(u64, String)>> {
    let out = Command::new("bpftool")
        .args([kind, "show", "--json"])
        .output()
        .context("cannot run bpftool (cargo xtask setup installs it)")?;
    let list: Value = serde_json::from_slice(&out.stdout)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let name = o["name"].as_str().or(o["type"].as_str())?;
            Some((o["id"].as_u64()?, name.to_owned()))
        })
        .collect())
}

#[test]
fn sigkill_leaves_nothing_attached_and_a_restart_counts_exactly() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let target = zk.addr.to_string();
    let holder = RawClient::new(zk.addr, 3).spawn()?;
    let mut d = Daemon::start(&["--zk", &target])?;
    let (progs, maps, links) = held_by(d.pid())?;
    let names: Vec<String> = in_kernel("prog")?
        .into_iter()
        .filter(|(id, _)| progs.contains(id))
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        names,
        vec![
            match expected_hook().as_str() {
                "btf" => "zk_btf_inet_sock_set_state".to_owned(),
                _ => "zk_inet_sock_set_state".to_owned(),
            },
            "zk_sched_process_exit".to_owned(),
            // Resets through BTF (this kernel has it): no perf event.
            "zk_btf_tcp_receive_reset".to_owned()
        ],
        "its programs"
    );
    assert!(maps.len() >= 10, "its maps: {maps:?}");
    assert_eq!(links.len(), 3, "a link per program: {links:?}");
    d.kill9();
    // Freeing is asynchronous in the kernel: wait for every one of them to go.
    let left = || -> Result<Vec<String>> {
        Ok(in_kernel("prog")?
            .into_iter()
            .filter(|(id, _)| progs.contains(id))
            .chain(
                in_kernel("map")?
                    .into_iter()
                    .filter(|(id, _)| maps.contains(id)),
            )
            .map(|(id, n)| format!("{n} (id {id})"))
            .collect())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut still = left()?;
    while !still.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        still = left()?;
    }
    assert_eq!(
        still,
        Vec::<String>::new(),
        "left in the kernel after SIGKILL"
    );

    // Restarted while the connections are open: exact again, from seeding.
    let more = RawClient::new(zk.addr, 2).spawn()?;
    let d = Daemon::start(&["--zk", &target])?;
    let snap = d.snapshot_when(open_is(zk.addr, 5, 0))?;
    assert_eq!(field(process(&snap, holder.pid())?, "seeded")?, 3);
    assert_eq!(field(process(&snap, more.pid())?, "seeded")?, 2);
    assert_eq!(snap["probe"]["seeds"]["seeded"], 5);
    Ok(())
}

#[test]
fn sigterm_exits_0_within_a_second_and_sighup_reloads() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("zoo.cfg");
    let rules = dir.path().join("rules.toml");
    let write_cfg = |n: u32| {
        std::fs::write(
            &cfg,
            format!(
                "clientPortAddress={}\nclientPort={}\nmaxClientCnxns={n}\n",
                zk.addr.ip(),
                zk.addr.port()
            ),
        )
    };
    write_cfg(7)?;
    std::fs::write(&rules, "")?;
    let cfg_s = cfg.display().to_string();
    let rules_s = rules.display().to_string();
    let mut d = Daemon::start(&["--zoo-cfg", &cfg_s, "--rules", &rules_s])?;
    let _one = RawClient::new(zk.addr, 1).spawn()?;
    let snap = d.snapshot_when(|s| {
        server_row(s, zk.addr).is_ok_and(|r| field(r, "open").ok() == Some(1))
    })?;
    assert_eq!(field(server_row(&snap, zk.addr)?, "limit")?, 7);

    // New limit and a new rule, then SIGHUP.
    write_cfg(9)?;
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"reload\"\ncmdline = \"--tag reloaded\"\nservice = \"Reloaded ingest\"\n",
    )?;
    d.signal(libc::SIGHUP);
    let snap = d.snapshot_when(|s| {
        server_row(s, zk.addr).is_ok_and(|r| field(r, "limit").ok() == Some(9))
    })?;
    assert_eq!(snap["probe"]["attribution"]["rules"], 1);
    let tagged = RawClient {
        tag: Some("reloaded".into()),
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    let snap = d.snapshot_when(|s| process(s, tagged.pid()).is_ok())?;
    assert_eq!(process(&snap, tagged.pid())?["service"], "Reloaded ingest");

    // A broken file is refused; the running configuration stays.
    std::fs::write(&rules, "[[rule]]\nservice = 3\n")?;
    d.signal(libc::SIGHUP);
    thread::sleep(Duration::from_millis(1500));
    let (status, _) = d.get("/healthz")?;
    assert_eq!(status, 200);
    let log = d.log().join("\n");
    assert!(log.contains("reload refused"), "{log}");

    let start = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.child.wait()?;
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    Ok(())
}

/// Any local user can connect to the daemon (and anyone on the network with a non-loopback
/// `--listen`). 500 hostile connections from the scraper's own address: idle ones, slow ones
/// sending a header byte a second, and kept-alive ones after one request, with more idle ones
/// arriving between scrapes. Every scrape of `/metrics` and `/healthz` still gets its answer.
#[test]
fn scrapes_get_through_500_hostile_connections() -> Result<()> {
    let d = Daemon::start(&["--port", "2999"])?;
    let mut hostile = Vec::new();
    for _ in 0..200 {
        hostile.push(TcpStream::connect(d.addr)?);
    }
    let mut slow = Vec::new();
    for _ in 0..150 {
        let mut s = TcpStream::connect(d.addr)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
        slow.push(s);
    }
    for _ in 0..150 {
        let mut s = TcpStream::connect(d.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
        // The answer (or the close of a displaced connection): either way it stays open
        // on this side.
        let _ = s.read(&mut [0u8; 4096]);
        hostile.push(s);
    }
    let drip = thread::spawn(move || {
        for _ in 0..20 {
            for s in &mut slow {
                let _ = s.write_all(b"X");
            }
            thread::sleep(Duration::from_secs(1));
        }
    });
    let mut answered = Vec::new();
    for i in 0..20 {
        for _ in 0..10 {
            hostile.push(TcpStream::connect(d.addr)?);
        }
        let path = if i % 2 == 0 { "/metrics" } else { "/healthz" };
        let start = Instant::now();
        let got = http_get(d.addr, path);
        answered.push(match got {
            Ok((200, body)) if start.elapsed() < Duration::from_secs(2) && !body.is_empty() => None,
            Ok((status, _)) => Some(format!("{path}: {status} after {:?}", start.elapsed())),
            Err(e) => Some(format!("{path}: {e:#}")),
        });
        thread::sleep(Duration::from_millis(200));
    }
    drip.join().expect("the slow writer");
    let failed: Vec<String> = answered.into_iter().flatten().collect();
    assert!(
        failed.is_empty(),
        "{} of 20 scrapes failed: {failed:?}",
        failed.len()
    );
    let log = d.log().join("\n");
    assert!(log.contains("idle connections closed so far"), "{log}");
    drop(hostile);
    Ok(())
}

/// `--ndjson` on a full disk: the file cannot take another snapshot, yet `/metrics` and
/// `/v1/snapshot` stay current (a new connection shows up in them) while `/healthz` says
/// what fails.
#[test]
fn a_full_disk_under_ndjson_freezes_nothing_else() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount)?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "zkconn-test"])
        .arg(&mount)
        .status()?;
    anyhow::ensure!(status.success(), "mount tmpfs: {status}");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    let ndjson = mount.join("zkconn.ndjson");
    let d = Daemon::start(&[
        "--zk",
        &addr.to_string(),
        "--ndjson",
        ndjson.to_str().context("path")?,
    ])?;
    // Each snapshot is a few KiB: the 16 KiB file system fills within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let (status, body) = d.get("/healthz")?;
        if status == 503 {
            break body;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "/healthz stayed {status}: {body}"
        );
        thread::sleep(Duration::from_millis(300));
    };
    assert!(
        reason.contains("--ndjson cannot append to") && reason.contains("No space left"),
        "{reason}"
    );
    // Still current: a connection made now appears in both outputs.
    let _held = TcpStream::connect(addr)?;
    let snap = d.snapshot_when(|s| {
        s["servers"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["open"] == 1))
    })?;
    assert_eq!(snap["servers"][0]["open"], 1);
    let (status, metrics) = d.get("/metrics")?;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("zkconn_server_open_connections{") && l.ends_with(" 1")),
        "{metrics}"
    );
    let log = d.log().join("\n");
    assert_eq!(log.matches("--ndjson cannot append").count(), 1, "{log}");
    Ok(())
}

/// A `--listen` other hosts can reach is said at the default verbosity: what the endpoints
/// expose, that nothing protects them, and how to protect them.
#[test]
fn listening_beyond_loopback_is_said_out_loud() -> Result<()> {
    let port = std::net::TcpListener::bind("0.0.0.0:0")?
        .local_addr()?
        .port();
    let out = Command::new("timeout")
        .args(["-s", "INT", "3"])
        .arg(integration_tests::zkconn_bin())
        .args([
            "daemon",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--port",
            "2999",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is reachable from other hosts")
            && stderr.contains("(plain HTTP, no authentication)")
            && stderr.contains("--web-config-file"),
        "{stderr}"
    );
    Ok(())
}

/// A full kernel table makes the counts incomplete: `/healthz` says so (503, naming the flag
/// to raise) instead of "ok" while connections go uncounted.
#[test]
fn a_full_connection_table_is_unhealthy_with_the_reason() -> Result<()> {
    let listener = std::net::TcpListener::bind((fresh_ipv4(), 2181))?;
    let addr = listener.local_addr()?;
    let d = Daemon::start(&["--zk", &addr.to_string(), "--max-connections", "2"])?;
    let (status, body) = d.get("/healthz")?;
    assert_eq!(status, 200, "{body}");
    let _held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr))
        .collect::<std::io::Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = d.get("/healthz")?;
        if status == 503 {
            assert!(
                body.contains("1 connections") && body.contains("--max-connections"),
                "{body}"
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "/healthz stayed {status}: {body}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// `curl` against the daemon over TLS with `args`: the status and the headers and body, or
/// `None` when no HTTP answer came (a refused handshake, a closed connection).
fn curl(url: &str, args: &[&str]) -> Result<Option<(u16, String)>> {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .context("cannot run curl")?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    Ok(Some((status, text)))
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `NAME.pem` and `NAME.key`, an EC P-256 key and a certificate with subjectAltName `san`,
/// signed by the CA in `dir`.
fn make_leaf(dir: &std::path::Path, name: &str, san: &str) -> Result<()> {
    let (key, csr, pem, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    )?;
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n"))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    )
}

/// A test CA, a server certificate for `ip` and client certificates, made with openssl.
fn make_pki(dir: &std::path::Path, ip: std::net::IpAddr, clients: &[&str]) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=zkconn test CA",
        ],
    )?;
    make_leaf(dir, "server", &format!("IP:{ip}"))?;
    for c in clients {
        make_leaf(dir, c, &format!("DNS:{c}"))?;
    }
    Ok(())
}

/// The web configuration file node_exporter takes, on the daemon: TLS with basic
/// authentication (hash made by Apache's htpasswd, as the toolkit documents), checked with
/// curl and by a real Prometheus scraping over TLS with credentials; rewritten while the
/// daemon runs, to another kind of protection, a broken file or an empty one, refusing
/// everything until mended; a certificate renewed; then client certificates with an allowed
/// name.
#[test]
fn the_web_config_file_of_node_exporter_protects_the_daemon() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let _holder = RawClient::new(zk.addr, 3).spawn()?;
    let dir = tempfile::tempdir()?;
    let ip = fresh_ipv4();
    make_pki(dir.path(), ip, &["prometheus.example", "intruder.example"])?;
    // A second certificate for the server, to renew with.
    make_leaf(dir.path(), "renewed", &format!("IP:{ip}"))?;
    let htpasswd = Command::new("htpasswd")
        .args(["-nbBC", "10", "prom", "s3cret"])
        .output()
        .context("cannot run htpasswd (cargo xtask setup installs apache2-utils)")?;
    let line = String::from_utf8(htpasswd.stdout)?;
    let hash = line
        .trim()
        .strip_prefix("prom:")
        .context("htpasswd output")?;
    let web = dir.path().join("web.yml");
    // Relative names: the toolkit reads them from the file's directory.
    let basic = format!(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
         basic_auth_users:\n  prom: '{hash}'\nauth_excluded_paths: [/healthz]\n\
         http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
    );
    std::fs::write(&web, &basic)?;
    let listen = SocketAddr::new(ip, integration_tests::free_port(ip)?);
    let start = |at: SocketAddr, file: &std::path::Path| -> Result<Daemon> {
        let zk = zk.addr.to_string();
        let file = file.to_str().context("path")?;
        Daemon::start_at(at, &["--zk", &zk, "--web-config-file", file])
    };
    let d = start(listen, &web)?;
    let url = |path: &str| format!("https://{listen}{path}");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().context("path")?;

    let (status, text) = curl(&url("/metrics"), &["--cacert", ca])?.context("no answer")?;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_lowercase().contains("www-authenticate: basic"),
        "{text}"
    );
    for wrong in ["prom:hunter2", "nobody:s3cret", "prom:"] {
        let got = curl(&url("/metrics"), &["--cacert", ca, "-u", wrong])?.map(|a| a.0);
        assert_eq!(got, Some(401), "{wrong}");
    }
    let (status, text) =
        curl(&url("/metrics"), &["--cacert", ca, "-u", "prom:s3cret"])?.context("no answer")?;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("zkconn_server_open_connections"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );
    // Excluded from authentication, as auth_excluded_paths says.
    assert_eq!(
        curl(&url("/healthz"), &["--cacert", ca])?.map(|a| a.0),
        Some(200)
    );
    // Plain HTTP on the TLS port gets no page.
    assert!(!http_get(listen, "/metrics").is_ok_and(|(s, _)| s == 200));

    // Prometheus scrapes it as it scrapes node_exporter behind the same file.
    let scrape = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {ca}\n    basic_auth:\n      \
         username: prom\n      password: s3cret\n"
    );
    let prom = Prometheus::start_with(&[listen], &scrape)?;
    let expr = format!(
        "zkconn_server_open_connections{{job=\"zkconn\",server=\"{}\",local_ip=\"127.0.0.1\"}}",
        zk.addr
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = None;
    while Instant::now() < deadline && last != Some(3.0) {
        last = prom.query(&expr)?;
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(last, Some(3.0), "{expr}");
    drop(prom);

    let basic_ok = || -> Result<Option<u16>> {
        Ok(curl(&url("/metrics"), &["--cacert", ca, "-u", "prom:s3cret"])?.map(|a| a.0))
    };
    let cert = |name: &str| {
        let p = |ext: &str| {
            dir.path()
                .join(format!("{name}.{ext}"))
                .display()
                .to_string()
        };
        (p("pem"), p("key"))
    };
    let (good_cert, good_key) = cert("prometheus.example");
    let (bad_cert, bad_key) = cert("intruder.example");
    let with_cert = |at: SocketAddr, c: &str, k: &str| -> Result<Option<u16>> {
        let url = format!("https://{at}/metrics");
        Ok(curl(&url, &["--cacert", ca, "--cert", c, "--key", k])?.map(|a| a.0))
    };

    // Client certificates instead of the password while running: one kind of protection
    // replacing another is what a half-written file looks like, so it is refused.
    let certs_only = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
         client_allowed_sans: [prometheus.example]\n";
    std::fs::write(&web, certs_only)?;
    assert_eq!(with_cert(listen, &good_cert, &good_key)?, None);
    assert_eq!(basic_ok()?, None);

    // A broken file locks everything until it is mended.
    std::fs::write(&web, "tls_server_config:\n  cert_file: server.pem\n")?;
    assert_eq!(basic_ok()?, None);
    // So does an empty one (a file being rewritten), which would otherwise mean plain HTTP
    // without authentication.
    std::fs::write(&web, "")?;
    assert_eq!(basic_ok()?, None);
    assert!(!http_get(listen, "/metrics").is_ok_and(|(s, _)| s == 200));
    std::fs::write(&web, &basic)?;
    assert_eq!(basic_ok()?, Some(200));
    // Renewal writes the certificate, then the key: between the two the pair does not fit
    // and every connection is refused; the key alone mends it, web.yml untouched.
    std::fs::copy(
        dir.path().join("renewed.pem"),
        dir.path().join("server.pem"),
    )?;
    assert_eq!(basic_ok()?, None);
    std::fs::copy(
        dir.path().join("renewed.key"),
        dir.path().join("server.key"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = None;
    while Instant::now() < deadline && got != Some(200) {
        thread::sleep(Duration::from_millis(300));
        got = basic_ok()?;
    }
    assert_eq!(got, Some(200));
    let log = d.log().join("\n");
    assert!(
        log.contains("refusing every connection until it is mended")
            && log.contains("cert_file without key_file")
            && log.contains("it no longer has basic authentication the daemon started with")
            && log.contains("no longer has TLS and basic authentication")
            && log.contains("the key does not fit the certificate")
            && log.contains("read again (TLS, basic authentication)"),
        "{log}"
    );
    drop(d);

    // A daemon started with client certificates and one allowed name.
    let web2 = dir.path().join("certs.yml");
    std::fs::write(&web2, certs_only)?;
    let listen2 = SocketAddr::new(ip, integration_tests::free_port(ip)?);
    let _d2 = start(listen2, &web2)?;
    assert_eq!(with_cert(listen2, &good_cert, &good_key)?, Some(200));
    let none = curl(&format!("https://{listen2}/metrics"), &["--cacert", ca])?;
    assert_eq!(none.map(|a| a.0), None);
    // Signed by the same CA, but not a name the file allows.
    assert_eq!(with_cert(listen2, &bad_cert, &bad_key)?, None);
    Ok(())
}

/// Run by systemd (the unit is `Type=notify`): READY=1 once it serves, RELOADING=1 and
/// READY=1 around SIGHUP, STOPPING=1 on SIGTERM, over `$NOTIFY_SOCKET`; log lines for the
/// journal (a `<priority>` prefix, no timestamp) when stderr is the stream
/// `$JOURNAL_STREAM` names; and `--ndjson` reopened on SIGHUP after logrotate moved it.
#[test]
fn systemd_hears_readiness_reloads_and_stops() -> Result<()> {
    use std::os::unix::{fs::MetadataExt as _, net::UnixDatagram};
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("notify");
    let rx = UnixDatagram::bind(&socket)?;
    rx.set_read_timeout(Some(Duration::from_secs(30)))?;
    let recv = || -> Result<String> {
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).context("no notification within 30 s")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let log = dir.path().join("stderr");
    let stderr = std::fs::File::create(&log)?;
    let meta = stderr.metadata()?;
    let ndjson = dir.path().join("snapshots.ndjson");
    let ip = fresh_ipv4();
    let addr = SocketAddr::new(ip, integration_tests::free_port(ip)?);
    let mut child = Command::new(integration_tests::zkconn_bin())
        .args(["daemon", "--listen", &addr.to_string(), "--port", "2999"])
        .args(["--interval", "1s", "--ndjson"])
        .arg(&ndjson)
        .env("NOTIFY_SOCKET", &socket)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()?;
    let pid = i32::try_from(child.id())?;
    let ready = recv()?;
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving http://"),
        "{ready}"
    );
    // Ready means serving, with a snapshot published.
    assert_eq!(http_get(addr, "/healthz")?.0, 200);
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    assert!(lines(&ndjson) >= 1);
    // logrotate without copytruncate: rename, then SIGHUP.
    let rotated = dir.path().join("snapshots.ndjson.1");
    std::fs::rename(&ndjson, &rotated)?;
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(recv()?, "RELOADING=1");
    assert_eq!(recv()?, "READY=1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&ndjson) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(lines(&ndjson) >= 2, "the new file was not written");
    let moved = std::fs::metadata(&rotated)?.len();
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        std::fs::metadata(&rotated)?.len(),
        moved,
        "still writing the moved file"
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(recv()?, "STOPPING=1");
    assert!(child.wait()?.success());
    let text = std::fs::read_to_string(&log)?;
    let written: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(!written.is_empty());
    for line in &written {
        let prefixed = line.len() > 3
            && line.starts_with('<')
            && line.as_bytes()[1].is_ascii_digit()
            && line.as_bytes()[2] == b'>';
        // No timestamp of its own: the journal adds one.
        assert!(prefixed && !line.contains("Z "), "{line}");
    }
    assert!(
        text.contains("<4>zkconn::daemon: SIGHUP: --ndjson") && text.contains("reopened"),
        "{text}"
    );
    Ok(())
}

/// `--interval` paces NDJSON lines, not what a request sees: with a minute's interval,
/// connections made after start are in `/v1/snapshot` and `/metrics` within about a second,
/// exactly.
#[test]
fn documents_are_at_most_a_second_old_whatever_the_interval() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let d = Daemon::start(&["--zk", &zk.addr.to_string(), "--interval", "60s"])?;
    let (_, first) = d.get("/v1/snapshot")?;
    let _client = RawClient::new(zk.addr, 3).spawn()?;
    wait_settled(zk.addr)?;
    thread::sleep(Duration::from_millis(1200));
    let (status, body) = d.get("/v1/snapshot")?;
    assert_eq!(status, 200);
    let snap: Value = serde_json::from_str(&body)?;
    assert_ne!(body, first);
    assert_eq!(server_row(&snap, zk.addr)?["open"], 3, "{snap:#}");
    let (_, metrics) = d.get("/metrics")?;
    let samples = parse_metrics(&metrics)?;
    assert_eq!(
        server_sample(&samples, "zkconn_server_open_connections", zk.addr),
        Some(3.0)
    );
    Ok(())
}

/// The server said 5, then restarts with 2: the refusal below 5 puts the answer in doubt,
/// and the daemon asks again at once, instead of believing 5 for the next quarter hour.
#[test]
fn a_refusal_below_the_limit_the_server_said_makes_the_daemon_ask_again() -> Result<()> {
    let options = ZkOptions {
        four_letter_words: "srvr,mntr,cons,conf",
        ..ZkOptions::default()
    };
    let mut zk = ZkServer::start_with(fresh_ipv4(), 5, &options)?;
    // As for a server on another host: without the server's side, this host's own server
    // is not read through /proc, and is asked.
    let d = Daemon::start(&["--zk", &zk.addr.to_string(), "--no-server-side"])?;
    let server = zk.addr.to_string();
    d.snapshot_when(|s| s["max_client_cnxns"]["asked"][0]["limit"] == 5)?;
    zk.restart_with_limit(2)?;
    // Two fit; the third is refused below the 5 the server said.
    let _held = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let _refused = RawClient {
        expect_refused: true,
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    let snap = d.snapshot_when(|s| {
        s["servers"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["server"] == server.as_str() && r["limit"] == 2)
        })
    })?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(row["limit_source"], "server", "{row:#}");
    assert_eq!(row["alarm"], "critical", "{row:#}");
    assert_eq!(field(row, "open")?, 2, "{row:#}");
    Ok(())
}
