//! The history store: the daemon records what held the connections, and `zkconn history`
//! shows it after the holder, its YARN container and the daemon itself are gone. Against a
//! real ZooKeeper, with a real v2 cgroup named as YARN names its containers; a full disk is
//! a real tmpfs that fills. Root only; run with `cargo xtask test`.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use integration_tests::{
    Cgroup, Daemon, RawClient, ZkServer, field, fresh_cluster_ts, fresh_ipv4, now_rfc3339,
    zkconn_bin,
};
use serde_json::Value;

/// `zkconn history ARGS`: exit code, standard output, standard error.
fn history(args: &[&str]) -> Result<(i32, String, String)> {
    zkconn(&[&["history"], args].concat())
}

fn start(zk: SocketAddr, store: &Path) -> Result<Daemon> {
    Daemon::start(&[
        "--zk",
        &zk.to_string(),
        "--history",
        &store.display().to_string(),
        "--history-interval",
        "1s",
    ])
}

fn container_row<'a>(doc: &'a Value, id: &str) -> Option<&'a Value> {
    doc["containers"]
        .as_array()?
        .iter()
        .find(|r| r["container"] == id)
}

/// `zkconn ARGS`: exit code, standard output, standard error.
fn zkconn(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(zkconn_bin())
        .args(args)
        .output()
        .context("cannot run zkconn")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The cells of the Markdown table row of `report` starting with `first`, under `heading`.
fn report_row(report: &str, heading: &str, first: &str) -> Option<Vec<String>> {
    let section = report.split("\n## ").find(|s| s.starts_with(heading))?;
    section.lines().find_map(|l| {
        let cells: Vec<String> = l
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect();
        (cells.first().map(String::as_str) == Some(first)).then_some(cells)
    })
}

/// A YARN container leaks connections up to the server's limit of 10, one every 200 ms,
/// and a process beside it is refused twice; the container finishes, its cgroup is
/// removed, the daemon stops and a new one starts on the same store. Then, from the
/// store: `history --at` the time of the leak names the container and its process with
/// their counts as the daemon showed them; `history --from --container` gives its series;
/// `report --around` and `report --alarm` name the budget at its limit, the container's
/// process as its holder with its growth, and the refused process with the server's own
/// count of refusals. A second daemon on the same store is refused while the first runs,
/// and a time before the store is refused with the range it holds.
#[test]
fn a_finished_containers_rows_are_there_after_the_daemon_restarts() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let other_host = fresh_ipv4();
    let store = tempfile::tempdir()?;
    let store_arg = store.path().display().to_string();
    let container = format!("container_e17_{}_0042_01_000002", fresh_cluster_ts());
    let base = format!("/zkconn-history-{}/hadoop-yarn", std::process::id());
    let _parents = Cgroup::v2(&base)?;
    let mut cgroup = Cgroup::v2(&format!("{base}/{container}"))?;
    let began = now_rfc3339()?;
    let mut d = start(zk.addr, store.path())?;

    // While it records, a second daemon on the store is refused, in one sentence.
    let other = Command::new(zkconn_bin())
        .args(["daemon", "--listen"])
        .arg(format!("{}:9661", fresh_ipv4()))
        .args(["--zk", &zk.addr.to_string(), "--history"])
        .arg(store.path())
        .output()?;
    let said = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{said}");
    assert!(
        said.contains("another zkconn daemon records to this store"),
        "{said}"
    );

    let rejected_before = zk.connection_rejected(other_host)?;
    let mut leaker = RawClient {
        cgroups: vec![cgroup.path.clone()],
        interval: Some(Duration::from_millis(200)),
        ..RawClient::new(zk.addr, 10)
    }
    .spawn()?;
    let pid = leaker.pid();
    d.snapshot_when(|s| container_row(s, &container).is_some_and(|r| r["open"] == 10))?;
    let mut victim = RawClient {
        interval: Some(Duration::from_millis(300)),
        expect_refused: true,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let victim_pid = victim.pid();
    d.snapshot_when(|s| {
        s["processes"].as_array().is_some_and(|p| {
            p.iter()
                .any(|r| r["pid"] == victim_pid && r["rejected"] == 2)
        })
    })?;
    let rejected = zk.connection_rejected(other_host)? - rejected_before;
    assert_eq!(rejected, 2, "the server's own count");
    // Two samples at least while it holds them.
    thread::sleep(Duration::from_millis(2500));
    let at = now_rfc3339()?;
    thread::sleep(Duration::from_millis(1500));
    leaker.kill();
    victim.kill();
    cgroup.remove()?;
    d.snapshot_when(|s| container_row(s, &container).is_some_and(|r| r["open"] == 0))?;
    d.signal(libc::SIGTERM);
    d.child.wait()?;

    let again = start(zk.addr, store.path())?;
    let (code, out, err) = history(&["--history", &store_arg, "--at", &at, "--json"])?;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out)?;
    let row = container_row(&doc, &container)
        .ok_or_else(|| anyhow!("no row of {container} at {at}: {doc:#}"))?;
    assert_eq!(field(row, "open")?, 10, "{row:#}");
    assert_eq!(field(row, "opened")?, 10, "{row:#}");
    let process = doc["processes"]
        .as_array()
        .and_then(|p| p.iter().find(|r| r["pid"] == pid))
        .ok_or_else(|| anyhow!("no process {pid}: {doc:#}"))?;
    assert_eq!(process["yarn_container"], container.as_str(), "{process:#}");
    assert_eq!(field(process, "open")?, 10, "{process:#}");
    assert_eq!(doc["history"]["asked"], at.as_str());
    // The same as tables.
    let (code, text, err) = history(&["--history", &store_arg, "--at", &at])?;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains(&container), "{text}");
    // Before the store: refused, with what it holds.
    let (code, _, err) = history(&["--history", &store_arg, "--at", "2001-01-01T00:00:00Z"])?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing recorded at 2001-01-01T00:00:00Z: the store at"),
        "{err}"
    );
    assert!(err.contains(" holds 20"), "{err}");

    // The container's series: it grew to 10 one connect at a time, then went to 0.
    let (code, out, err) = history(&[
        "--history",
        &store_arg,
        "--from",
        &began,
        "--container",
        &container,
        "--json",
    ])?;
    assert_eq!(code, 0, "{err}");
    let series: Value = serde_json::from_str(&out)?;
    let opens: Vec<u64> = series["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["rows"][0]["open"].as_u64())
        .collect();
    assert_eq!(opens.iter().max(), Some(&10), "{opens:?}");
    assert_eq!(opens.last(), Some(&0), "{opens:?}");
    assert!(
        opens.windows(2).all(|w| w[1] >= w[0]) || opens.contains(&0),
        "{opens:?}"
    );

    // The report around the leak, and around the last alarm.
    let reports = tempfile::tempdir()?;
    for (name, centre) in [
        ("around", vec!["--around", at.as_str()]),
        ("alarm", vec!["--alarm"]),
    ] {
        let dir = reports.path().join(name);
        let dir_arg = dir.display().to_string();
        let mut args = vec![
            "report",
            "--history",
            &store_arg,
            "--window",
            "2m",
            "--out",
            &dir_arg,
        ];
        args.extend(&centre);
        let (code, out, err) = zkconn(&args)?;
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("wrote "), "{out}");
        let md = std::fs::read_to_string(dir.join("report.md"))?;
        let budget = format!("{} from 127.0.0.1", zk.addr);
        let b = report_row(&md, "Budgets that reached their limit", &budget)
            .ok_or_else(|| anyhow!("no budget row: {md}"))?;
        // limit, peak, peak at, first at the limit, refusals, alarm.
        assert_eq!(b[1..3], ["10", "10"], "{md}");
        assert_eq!(b[5], rejected.to_string(), "{md}");
        assert_eq!(b[6], "critical", "{md}");
        let h = report_row(&md, "Who held", &pid.to_string())
            .ok_or_else(|| anyhow!("no holder row: {md}"))?;
        // kind, container, open at the peak, at the start, growth, opened, end.
        assert_eq!(h[2..4], ["yarn", container.as_str()], "{md}");
        assert_eq!(h[5..10], ["10", "0", "+10", "10", "exited"], "{md}");
        let v = report_row(&md, "Who was refused", &victim_pid.to_string())
            .ok_or_else(|| anyhow!("no refused row: {md}"))?;
        assert_eq!(v[4], "2", "{md}");
        assert_eq!(v[5], budget, "{md}");
        let c = report_row(&md, "YARN containers and applications involved", &container)
            .ok_or_else(|| anyhow!("no container row: {md}"))?;
        assert_eq!(c[2], "finished", "{md}");
        let svg = std::fs::read_to_string(dir.join("usage.svg"))?;
        assert!(svg.contains(&budget), "the chart's legend names the budget");
        let html = std::fs::read_to_string(dir.join("report.html"))?;
        assert!(html.contains("<svg"), "the chart is inline");
        if name == "alarm" {
            assert!(md.contains("went critical at"), "{md}");
        }
    }
    drop(again);
    Ok(())
}

/// A full disk stops the recording, not the daemon: /healthz says why while /v1/snapshot
/// and /metrics stay current; once there is room, it records again and /healthz is 200.
#[test]
fn a_full_disk_stops_recording_and_healthz_says_so() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let mount = tempfile::tempdir()?;
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(mount.path())
        .status()?;
    anyhow::ensure!(status.success(), "cannot mount a tmpfs");
    let unmount = Unmount(mount.path().to_owned());
    let store = mount.path().join("history");
    let d = start(zk.addr, &store)?;
    let _client = RawClient::new(zk.addr, 2).spawn()?;
    d.snapshot_when(|s| s["servers"].as_array().is_some_and(|r| !r.is_empty()))?;
    // Fill what is left.
    let filler = mount.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=100000"])
        .arg(format!("of={}", filler.display()))
        .output()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let (status, body) = d.get("/healthz")?;
        if status == 503 && body.contains("--history") {
            break body;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "healthz never said it: {status} {body}"
        );
        thread::sleep(Duration::from_millis(300));
    };
    assert!(said.contains("No space left on device"), "{said}");
    let (status, snap) = d.get("/v1/snapshot")?;
    assert_eq!(status, 200);
    let snap: Value = serde_json::from_str(&snap)?;
    assert_eq!(field(&snap["servers"][0], "open")?, 2);
    std::fs::remove_file(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = d.get("/healthz")?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "healthz stayed {status}: {body}");
        thread::sleep(Duration::from_millis(300));
    }
    let log = d.log().join("\n");
    assert!(log.contains("recording again"), "{log}");
    drop(d);
    drop(unmount);
    Ok(())
}

/// Unmounts the test's tmpfs, also when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
