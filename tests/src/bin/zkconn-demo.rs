//! `cargo xtask demo`: zkconn on a machine with no Hadoop. Starts a real ZooKeeper (Debian's
//! package) with a small limit on a 127.x address, a JVM that is named and started exactly
//! like an HBase RegionServer holding real sessions, and two processes in YARN container
//! cgroups of one application (one steady, one leaking slowly until the server refuses it),
//! then opens `zkconn top` on it. Everything it started is stopped when top exits.
//! Root only (cgroups, BPF); xtask runs it through sudo when needed.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    Cgroup, Client, RawClient, ZkServer, fresh_cluster_ts, fresh_ipv4, zkconn_bin,
};

/// The server's `maxClientCnxns`: 4 RegionServer sessions + 3 steady + the leaker's 5.
const LIMIT: u32 = 12;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zkconn-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    eprintln!("zkconn-demo: starting ZooKeeper (maxClientCnxns={LIMIT})…");
    let zk = ZkServer::start(fresh_ipv4(), LIMIT, &[])?;
    eprintln!(
        "zkconn-demo: ZooKeeper on {}; starting an HBase RegionServer JVM…",
        zk.addr
    );
    let _regionserver = Client::java_named(
        &zk,
        4,
        "org.apache.hadoop.hbase.regionserver.HRegionServer",
        &["-Dproc_regionserver"],
    )?;
    let ts = fresh_cluster_ts();
    let root = format!("/yarn-zkconn-demo-{}", std::process::id());
    let steady_cg = Cgroup::v2(&format!("{root}/container_e17_{ts}_0007_01_000002"))?;
    let leaky_cg = Cgroup::v2(&format!("{root}/container_e17_{ts}_0007_01_000003"))?;
    let _steady = RawClient {
        cgroups: vec![steady_cg.path.clone()],
        interval: Some(Duration::from_millis(300)),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    // One connection every 4 s: five fit, then every attempt is refused.
    let _leaker = RawClient {
        cgroups: vec![leaky_cg.path.clone()],
        interval: Some(Duration::from_secs(4)),
        expect_refused: true,
        ..RawClient::new(zk.addr, 60)
    }
    .spawn_in_background()?;
    eprintln!(
        "zkconn-demo: application_{ts}_0007 has a steady and a leaking container; opening zkconn top (q quits)…"
    );
    let status = Command::new(zkconn_bin())
        .args(["top", "--zk", &zk.addr.to_string()])
        .args(["--max-client-cnxns", &LIMIT.to_string()])
        .status()
        .context("cannot start zkconn; build it with `cargo xtask build`")?;
    eprintln!("zkconn-demo: stopping ZooKeeper and the clients…");
    if !status.success() {
        bail!("zkconn top exited with {status}");
    }
    Ok(())
}
