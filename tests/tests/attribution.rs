//! Attribution against a real ZooKeeper with real processes: a JVM that is an HBase
//! RegionServer to every tool, YARN containers found through a v1 cgroup, a v2 cgroup, the
//! environment and the working directory, a systemd unit, site rules, a leaker that
//! exits before anyone looks, and cgroup rows by v1 path where every process sits in the v2
//! root. Root only; run with `cargo xtask test`.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use integration_tests::{
    Cgroup, Client, RawClient, ZkServer, Zkconn, field, fresh_cluster_ts, fresh_ipv4, process,
    row_where, wait_settled,
};

#[test]
fn a_regionserver_jvm_is_an_hbase_regionserver() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let rs = Client::java_named(
        &zk,
        4,
        "org.apache.hadoop.hbase.regionserver.HRegionServer",
        &["-Dproc_regionserver", "-Dhbase.log.dir=/tmp"],
    )?;
    let plain = Client::raw(zk.addr, 2, 1, None)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let row = process(&snap, rs.pid())?;
    assert_eq!(row["kind"], "hbase");
    assert_eq!(row["service"], "HBase RegionServer");
    assert_eq!(row["hbase_role"], "RegionServer");
    assert_eq!(row["label"], "HBase RegionServer");
    assert_eq!(
        row["main_class"],
        "org.apache.hadoop.hbase.regionserver.HRegionServer"
    );
    assert_eq!(row["user"], "root");
    assert_eq!(row["yarn_container"], serde_json::Value::Null);
    assert_eq!(field(row, "open")?, 4);

    let row = process(&snap, plain.pid())?;
    assert_eq!(row["kind"], "process");
    let service = row["service"].as_str().unwrap_or_default();
    assert!(
        service.starts_with("python3") && service.ends_with(" raw_client.py"),
        "{service}"
    );
    assert_eq!(field(row, "open")?, 2);

    let svc = row_where(&snap, "services", "service", "HBase RegionServer")?;
    assert_eq!(field(svc, "open")?, 4);
    assert_eq!(svc["kinds"], serde_json::json!(["hbase"]));
    Ok(())
}

#[test]
fn containers_of_one_application_from_every_clue() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let app = format!("application_{ts}_0042");
    let c_v1 = format!("container_e17_{ts}_0042_01_000002");
    let c_v2 = format!("container_{ts}_0042_01_000003");
    let c_env = format!("container_{ts}_0042_01_000004");
    let c_cwd = format!("container_e17_{ts}_0042_02_000005");
    let pid = std::process::id();
    // Site-specific hierarchy names, as on real clusters.
    let cg_v1 = Cgroup::v1("cpu", &format!("/hadoop-yarn-zkconn-{pid}/{c_v1}"))?;
    let cg_v2 = Cgroup::v2(&format!("/yarn-zkconn-{pid}/{c_v2}"))?;
    let local = tempfile::tempdir()?;
    let workdir = |container: &str| -> Result<PathBuf> {
        let dir = local
            .path()
            .join(format!("usercache/alice/appcache/{app}/{container}"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    };

    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let a = RawClient {
        cgroups: vec![cg_v1.path.clone()],
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let b = RawClient {
        cgroups: vec![cg_v2.path.clone()],
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    // DefaultContainerExecutor: no container cgroup; the NodeManager's environment and
    // working directory are the only clues.
    let c = RawClient {
        env: vec![("CONTAINER_ID".into(), c_env.clone())],
        cwd: Some(workdir(&c_env)?),
        ..RawClient::new(zk.addr, 4)
    }
    .spawn()?;
    let d = RawClient {
        cwd: Some(workdir(&c_cwd)?),
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    for (client, container, source, open) in [
        (&a, &c_v1, "cgroup", 2),
        (&b, &c_v2, "cgroup", 3),
        (&c, &c_env, "environ", 4),
        (&d, &c_cwd, "cwd", 1),
    ] {
        let row = process(&snap, client.pid())?;
        assert_eq!(row["kind"], "yarn", "{row:#}");
        assert_eq!(row["yarn_container"], container.as_str(), "{row:#}");
        assert_eq!(row["yarn_application"], app.as_str(), "{row:#}");
        assert_eq!(row["yarn_source"], source, "{row:#}");
        assert_eq!(field(row, "open")?, open);
        let crow = row_where(&snap, "containers", "container", container)?;
        assert_eq!(field(crow, "open")?, open);
        assert_eq!(crow["application"], app.as_str());
    }
    let row = row_where(&snap, "applications", "application", &app)?;
    let mut want = vec![c_v1.clone(), c_v2.clone(), c_env.clone(), c_cwd.clone()];
    want.sort();
    assert_eq!(row["containers"], serde_json::json!(want));
    assert_eq!(field(row, "open")?, 10);
    assert_eq!(field(row, "opened")?, 10);
    assert_eq!(field(row, "closed")?, 0);
    assert_eq!(field(row, "failed")?, 0);
    assert_eq!(field(row, "processes")?, 4);
    // The v2 container cgroup is also a cgroup row of its own.
    let cg = row_where(&snap, "cgroups", "label", &c_v2)?;
    assert_eq!(cg["kind"], "yarn");
    assert_eq!(field(cg, "open")?, 3);
    drop((a, b, c, d));
    Ok(())
}

#[test]
fn a_unit_a_plain_process_and_a_site_rule() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let unit = format!("zkconn-test-{}.service", std::process::id());
    let cg = Cgroup::v2(&format!("/system.slice/{unit}"))?;
    let rules = tempfile::NamedTempFile::new()?;
    std::fs::write(
        rules.path(),
        "# tagged feeders are the ingest pipeline\n[[rule]]\nname = \"ingest\"\n\
         cmdline = '--tag ingest-7\\b'\nservice = \"Ingest feeder\"\n",
    )?;
    let z = Zkconn::start(&[
        "--zk",
        &zk.addr.to_string(),
        "--rules",
        &rules.path().display().to_string(),
    ])?;
    let in_unit = RawClient {
        cgroups: vec![cg.path.clone()],
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let plain = Client::raw(zk.addr, 1, 1, None)?;
    let tagged = RawClient {
        tag: Some("ingest-7".into()),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let row = process(&snap, in_unit.pid())?;
    assert_eq!(row["kind"], "systemd", "{row:#}");
    assert_eq!(row["unit"], unit.as_str());
    assert_eq!(field(row, "open")?, 2);
    let row = process(&snap, plain.pid())?;
    assert_eq!(row["kind"], "process", "{row:#}");
    assert_eq!(row["unit"], serde_json::Value::Null);
    assert_eq!(row["rule"], serde_json::Value::Null);
    let row = process(&snap, tagged.pid())?;
    assert_eq!(row["service"], "Ingest feeder", "{row:#}");
    assert_eq!(row["rule"], "ingest");
    assert_eq!(row["kind"], "process");
    assert_eq!(field(row, "open")?, 3);
    assert_eq!(snap["probe"]["attribution"]["rules"], 1);
    let cgrow = row_where(&snap, "cgroups", "label", &unit)?;
    assert_eq!(cgrow["kind"], "systemd");
    Ok(())
}

#[test]
fn a_leaker_that_exits_at_once_keeps_its_container() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let container = format!("container_e5_{ts}_0077_01_000002");
    // v1 only: once the process is gone, nothing in the kernel's records names the
    // container; only what was read from /proc at its first connect does.
    let mut cg = Cgroup::v1(
        "cpu",
        &format!("/hadoop-yarn-zkconn-{}/{container}", std::process::id()),
    )?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let mut leaker = RawClient {
        cgroups: vec![cg.path.clone()],
        exit_after: Some(Duration::from_millis(200)),
        ..RawClient::new(zk.addr, 5)
    }
    .spawn()?;
    let pid = leaker.pid();
    leaker.wait_exit(Duration::from_secs(5))?;
    // YARN removes a finished container's cgroup.
    cg.remove()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let row = process(&snap, pid)?;
    assert_eq!(row["alive"], false);
    assert_eq!(row["kind"], "yarn", "{row:#}");
    assert_eq!(row["yarn_container"], container.as_str());
    assert_eq!(field(row, "opened")?, 5);
    assert_eq!(field(row, "closed")?, 5);
    assert_eq!(field(row, "open")?, 0);
    let app = row_where(
        &snap,
        "applications",
        "application",
        &format!("application_{ts}_0077"),
    )?;
    assert_eq!(field(app, "opened")?, 5);
    assert_eq!(field(app, "open")?, 0);
    Ok(())
}

#[test]
fn a_removed_v2_container_cgroup_keeps_its_name() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let container = format!("container_{ts}_0078_01_000002");
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    // Created after zkconn started: only the process's own /proc entry names it.
    let mut cg = Cgroup::v2(&format!(
        "/hadoop-yarn-zkconn-{}/{container}",
        std::process::id()
    ))?;
    let mut leaker = RawClient {
        cgroups: vec![cg.path.clone()],
        exit_after: Some(Duration::from_millis(200)),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    leaker.wait_exit(Duration::from_secs(5))?;
    cg.remove()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let row = process(&snap, leaker.pid())?;
    assert_eq!(row["cgroup"], cg.rel.as_str());
    let cgrow = row_where(&snap, "cgroups", "label", &container)?;
    assert_eq!(cgrow["kind"], "yarn");
    assert_eq!(cgrow["path"], cg.rel.as_str());
    assert_eq!(field(cgrow, "opened")?, 3);
    assert_eq!(field(cgrow, "closed")?, 3);
    Ok(())
}

#[test]
fn a_reused_pid_is_a_new_owner_in_its_own_container() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let first = format!("container_{ts}_0079_01_000002");
    let second = format!("container_{ts}_0079_01_000003");
    let pid = std::process::id();
    let cg_first = Cgroup::v1("cpu", &format!("/hadoop-yarn-zkconn-{pid}/{first}"))?;
    let cg_second = Cgroup::v1("cpu", &format!("/hadoop-yarn-zkconn-{pid}/{second}"))?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let mut old = RawClient {
        cgroups: vec![cg_first.path.clone()],
        exit_after: Some(Duration::from_millis(100)),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let reused = old.pid();
    old.wait_exit(Duration::from_secs(5))?;
    let new = integration_tests::spawn_with_pid(reused, || {
        RawClient {
            cgroups: vec![cg_second.path.clone()],
            ..RawClient::new(zk.addr, 3)
        }
        .spawn_in_background()
    })?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let rows: Vec<&serde_json::Value> = snap["processes"]
        .as_array()
        .map(|r| r.iter().filter(|p| p["pid"] == reused).collect())
        .unwrap_or_default();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let dead = rows
        .iter()
        .find(|r| r["alive"] == false)
        .expect("the exited owner");
    let live = rows
        .iter()
        .find(|r| r["alive"] == true)
        .expect("the new owner");
    assert_eq!(dead["yarn_container"], first.as_str());
    assert_eq!((field(dead, "opened")?, field(dead, "open")?), (2, 0));
    assert_eq!(live["yarn_container"], second.as_str());
    assert_eq!((field(live, "opened")?, field(live, "open")?), (3, 3));
    drop(new);
    Ok(())
}

/// A pid reused at once: twenty short-lived connectors (a shell that joins its container,
/// connects through bash's `/dev/tcp` and exits, a few milliseconds in all) are reaped, and
/// each pid goes straight to a process of another container that makes no connection.
/// `/proc` gives start times in 10 ms ticks, so the newcomer often looks as old as the
/// connector there; the kernel forgot the connector at its exit, so zkconn knows `/proc` no
/// longer shows it, and each connection stays with its own container.
#[test]
fn a_pid_reused_at_once_does_not_lend_its_process_to_the_exited_one() -> Result<()> {
    use std::process::{Child, Command, Stdio};
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let parent = format!("/hadoop-yarn-zkconn-{}-reuse", std::process::id());
    let _parent = Cgroup::v2(&parent)?;
    let joined = |cg: &Cgroup, then: &str| -> std::io::Result<Child> {
        Command::new("bash")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && {then}",
                cg.path.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
    };
    let mut seen = Vec::new();
    let mut newcomers: Vec<Child> = Vec::new();
    let mut groups = Vec::new();
    for i in 0..20u32 {
        let mine = format!("container_e9_{ts}_0093_01_{:06}", i + 2);
        let other = format!("container_e9_{ts}_0094_01_{:06}", i + 2);
        let cg = Cgroup::v2(&format!("{parent}/{mine}"))?;
        let cg_other = Cgroup::v2(&format!("{parent}/{other}"))?;
        let connect = format!("exec 3<>/dev/tcp/{}/{}", zk.addr.ip(), zk.addr.port());
        let mut connector = joined(&cg, &connect)?;
        let pid = connector.id();
        let status = connector.wait()?;
        anyhow::ensure!(status.success(), "the connector failed: {status}");
        // The same pid for a newcomer that never connects (other forks may take it first).
        for _ in 0..200 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())?;
            let mut newcomer = joined(&cg_other, "exec sleep 60")?;
            if newcomer.id() == pid {
                newcomers.push(newcomer);
                break;
            }
            newcomer.kill()?;
            newcomer.wait()?;
        }
        seen.push((pid, mine));
        groups.push((cg, cg_other));
    }
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    for n in &mut newcomers {
        n.kill()?;
        n.wait()?;
    }
    assert!(
        newcomers.len() >= 10,
        "only {} pids reused",
        newcomers.len()
    );

    for (pid, container) in &seen {
        let rows: Vec<&serde_json::Value> = snap["processes"]
            .as_array()
            .map(|r| r.iter().filter(|p| p["pid"] == *pid).collect())
            .unwrap_or_default();
        assert_eq!(rows.len(), 1, "pid {pid}: {rows:#?}");
        let row = rows[0];
        assert_eq!(row["yarn_container"], container.as_str(), "{row:#}");
        assert_eq!([field(row, "opened")?, field(row, "closed")?], [1, 1]);
    }
    let app = row_where(
        &snap,
        "applications",
        "application",
        &format!("application_{ts}_0093"),
    )?;
    assert_eq!(field(app, "opened")?, 20, "{app:#}");
    Ok(())
}

/// Short-lived processes in containers whose cgroups are gone before zkconn can look: zkconn
/// is stopped (as on a host too loaded to schedule it) while six one-connection processes,
/// three in v2 and three in v1 (cpu) YARN container cgroups, connect, exit and have their
/// cgroups removed. Only what the kernel wrote at the connect is left: it names the
/// containers.
#[test]
fn processes_gone_with_their_cgroups_before_zkconn_looks_keep_their_containers() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let mut z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    z.signal(libc::SIGSTOP);
    let mut seen = Vec::new();
    for i in 0..6u32 {
        let container = format!("container_e9_{ts}_0091_01_{:06}", i + 2);
        let rel = format!("/hadoop-yarn-zkconn-{}/{container}", std::process::id());
        let mut cg = if i % 2 == 0 {
            Cgroup::v2(&rel)?
        } else {
            Cgroup::v1("cpu", &rel)?
        };
        let mut client = RawClient {
            cgroups: vec![cg.path.clone()],
            exit_after: Some(Duration::ZERO),
            ..RawClient::new(zk.addr, 1)
        }
        .spawn()?;
        client.wait_exit(Duration::from_secs(5))?;
        cg.remove()?;
        seen.push((client.pid(), container, i % 2 == 0, cg.rel.clone()));
    }
    z.signal(libc::SIGCONT);
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    for (pid, container, v2, rel) in &seen {
        let row = process(&snap, *pid)?;
        assert_eq!(row["alive"], false, "{row:#}");
        assert_eq!(row["kind"], "yarn", "{row:#}");
        assert_eq!(row["yarn_container"], container.as_str(), "{row:#}");
        assert_eq!(
            row["yarn_application"],
            format!("application_{ts}_0091").as_str()
        );
        assert_eq!([field(row, "opened")?, field(row, "closed")?], [1, 1]);
        if *v2 {
            assert_eq!(row["cgroup"], rel.as_str(), "{row:#}");
        }
    }
    let app = row_where(
        &snap,
        "applications",
        "application",
        &format!("application_{ts}_0091"),
    )?;
    assert_eq!(field(app, "opened")?, 6, "{app:#}");
    assert_eq!(
        snap["probe"]["attribution"]["kernel_only"], 6,
        "{:#}",
        snap["probe"]
    );
    Ok(())
}

/// Short-lived processes read by zkconn while they exit: forty one-connection processes,
/// each in its own YARN container's cgroup (v2 and v1 `cpu` by turns), connect, exit at once
/// and have their cgroup removed as soon as they are reaped, while zkconn runs (woken by
/// each new process). A process reaped between two of zkconn's reads of its `/proc` entry
/// has no cgroup left to read there, and one read while exiting shows `/` for its v1
/// cgroups: each must still be in its container, by what the kernel wrote at the connect.
#[test]
fn processes_reaped_while_zkconn_reads_them_keep_their_containers() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let parent = format!("/hadoop-yarn-zkconn-{}-reaped", std::process::id());
    let _parents = (Cgroup::v2(&parent)?, Cgroup::v1("cpu", &parent)?);
    let mut seen = Vec::new();
    for i in 0..40u32 {
        let container = format!("container_e9_{ts}_0092_01_{:06}", i + 2);
        let rel = format!("{parent}/{container}");
        let mut cg = if i % 2 == 0 {
            Cgroup::v2(&rel)?
        } else {
            Cgroup::v1("cpu", &rel)?
        };
        let mut client = RawClient {
            cgroups: vec![cg.path.clone()],
            exit_after: Some(Duration::ZERO),
            ..RawClient::new(zk.addr, 1)
        }
        .spawn()?;
        client.wait_exit(Duration::from_secs(5))?;
        cg.remove()?;
        seen.push((client.pid(), container));
    }
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let mut wrong = Vec::new();
    for (pid, container) in &seen {
        let row = process(&snap, *pid)?;
        if row["yarn_container"] != container.as_str() {
            wrong.push(row.clone());
        }
        assert_eq!([field(row, "opened")?, field(row, "closed")?], [1, 1]);
    }
    assert!(
        wrong.is_empty(),
        "{} of 40 lost their container: {wrong:#?}",
        wrong.len()
    );
    let app = row_where(
        &snap,
        "applications",
        "application",
        &format!("application_{ts}_0092"),
    )?;
    assert_eq!(field(app, "opened")?, 40, "{app:#}");
    Ok(())
}

/// A cgroup v1 host as RHEL 8 or CentOS 7 run by default, on this hybrid machine: the test's
/// processes sit in the v2 root, where the kernel's cgroup id names nobody, and two YARN
/// containers exist only under the v1 `cpu` hierarchy. The cgroup rows go by those v1 paths,
/// with exact counts: a real ZooKeeper client (a JVM named as a Spark executor) and a Python
/// one in the first; in the second, one that closed a connection and one that exited.
#[test]
fn cgroup_rows_go_by_v1_path_where_every_process_is_in_the_v2_root() -> Result<()> {
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    assert!(
        own.lines().any(|l| l == "0::/"),
        "this test needs to run in the cgroup v2 root: {own}"
    );
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let ts = fresh_cluster_ts();
    let app = format!("application_{ts}_0005");
    let (c_a, c_b) = (
        format!("container_e17_{ts}_0005_01_000005"),
        format!("container_e17_{ts}_0005_01_000006"),
    );
    let parent = format!("/zkconn-test-{}-v1rows", std::process::id());
    let cg_a = Cgroup::v1("cpu", &format!("{parent}/{c_a}"))?;
    let cg_b = Cgroup::v1("cpu", &format!("{parent}/{c_b}"))?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;

    let executor = Client::java_named_in(
        &zk,
        3,
        "org.apache.spark.executor.YarnCoarseGrainedExecutorBackend",
        &[],
        Some(&cg_a.path),
    )?;
    let py_a = Client::raw(zk.addr, 2, 1, Some(&cg_a.path))?;
    let mut closer = Client::raw(zk.addr, 4, 1, Some(&cg_b.path))?;
    closer.close(1)?;
    let mut gone = RawClient {
        cgroups: vec![cg_b.path.clone()],
        exit_after: Some(Duration::from_millis(200)),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    gone.wait_exit(Duration::from_secs(5))?;
    // In no cgroup of its own in either hierarchy: the root row of the host's hierarchy.
    let plain = Client::raw(zk.addr, 1, 1, None)?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    // Asked once zkconn is done: the question is a connection too.
    let server_open = zk.alive_connections(fresh_ipv4())?;

    // (cgroup, open, opened, closed, failed, pids)
    let mut pids_a = vec![executor.pid(), py_a.pid()];
    pids_a.sort_unstable();
    let mut pids_b = vec![closer.pid(), gone.pid()];
    pids_b.sort_unstable();
    for (cg, container, counts, pids) in [
        (&cg_a, &c_a, [5, 5, 0, 0], pids_a),
        (&cg_b, &c_b, [3, 6, 3, 0], pids_b),
    ] {
        let row = row_where(&snap, "cgroups", "path", &cg.rel)?;
        assert_eq!(row["hierarchy"], "v1:cpu", "{row:#}");
        assert_eq!(row["id"], 0, "{row:#}");
        assert_eq!(row["kind"], "yarn", "{row:#}");
        assert_eq!(row["label"], container.as_str(), "{row:#}");
        let got = [
            field(row, "open")?,
            field(row, "opened")?,
            field(row, "closed")?,
            field(row, "failed")?,
        ];
        assert_eq!(got, counts, "{row:#}");
        assert_eq!(row["pids"], serde_json::json!(pids), "{row:#}");
        for pid in pids {
            let p = process(&snap, pid)?;
            assert_eq!(p["cgroup_hierarchy"], "v1:cpu", "{p:#}");
            assert_eq!(p["cgroup_v1"], cg.rel.as_str(), "{p:#}");
            assert_eq!(p["cgroup"], "/", "{p:#}");
            assert_eq!(p["yarn_container"], container.as_str(), "{p:#}");
            assert_eq!(p["yarn_application"], app.as_str(), "{p:#}");
        }
    }
    assert_eq!(process(&snap, executor.pid())?["service"], "Spark executor");
    assert_eq!(process(&snap, gone.pid())?["alive"], false);

    // The plain process is alone in the root row of the host's hierarchy, whichever it is
    // (other tests put processes in v2 groups while this one starts).
    let host = snap["cgroups_hierarchy"].as_str().unwrap_or_default();
    assert!(["v1:cpu", "v2"].contains(&host), "{host}");
    let rows = snap["cgroups"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let root = rows
        .iter()
        .find(|r| r["pids"] == serde_json::json!([plain.pid()]))
        .ok_or_else(|| anyhow::anyhow!("no row of the plain process: {rows:#?}"))?;
    assert_eq!(root["hierarchy"], host, "{root:#}");
    assert_eq!(root["path"], "/", "{root:#}");
    assert_eq!(
        [
            field(root, "open")?,
            field(root, "opened")?,
            field(root, "closed")?
        ],
        [1, 1, 0],
        "{root:#}"
    );
    assert_eq!(process(&snap, plain.pid())?["cgroup_hierarchy"], host);

    // Every open connection in exactly one row: the rows add up to what the server holds.
    let total: u64 = rows.iter().map(|r| r["open"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total, 9);
    assert_eq!(server_open, 9, "the server's own count");
    assert_eq!(integration_tests::server_open(&snap, zk.addr).0, 9);
    drop((executor, py_a, closer, gone, plain));
    Ok(())
}
