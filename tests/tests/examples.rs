//! Not a test: the scenario behind the examples in README.md, docs/json.md and
//! docs/suspects.md, run against a real ZooKeeper with the real probes. It writes the outputs
//! to `target/examples/`. Regenerate them (as root) with:
//!
//! ```sh
//! cargo xtask build && ZKCONN_BIN=$PWD/target/release/zkconn \
//!   cargo test --release -p integration-tests --test examples -- --ignored --nocapture
//! ```

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use integration_tests::{
    Cgroup, Check, Client, RawClient, ZkOptions, ZkServer, Zkconn, fresh_cluster_ts, fresh_ipv4,
    wait_settled, zkconn_bin,
};

#[test]
#[ignore = "writes documentation examples; run on purpose"]
fn docs_examples() -> Result<()> {
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/examples"));
    std::fs::create_dir_all(&out)?;
    // The server says its limit when asked (`conf` allowed): no flag gives it.
    let options = ZkOptions {
        four_letter_words: "srvr,mntr,cons,conf",
        ..ZkOptions::default()
    };
    let zk = ZkServer::start_with(fresh_ipv4(), 8, &options)?;
    let target = zk.addr.to_string();
    let flags = ["--zk", target.as_str()];
    let step = Some(Duration::from_millis(300));

    // Before zkconn: an HBase RegionServer with two sessions.
    let _rs = Client::java_named(
        &zk,
        2,
        "org.apache.hadoop.hbase.regionserver.HRegionServer",
        &["-Dproc_regionserver"],
    )?;
    let json = Zkconn::start(&flags)?;
    let mut text = Command::new(zkconn_bin())
        .args(["snapshot", "--duration", "600"])
        .args(flags)
        .stdout(Stdio::piped())
        .spawn()?;
    thread::sleep(Duration::from_secs(2));

    // A client that never closes what the server closed (a four-letter word each).
    let _stuck = RawClient {
        say: Some("srvr".into()),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    // A YARN container leaking one connection a second until refused.
    let ts = fresh_cluster_ts();
    let container = format!("container_e17_{ts}_0042_01_000002");
    let cg = Cgroup::v2(&format!("/yarn-example-{}/{container}", std::process::id()))?;
    let _leaker = RawClient {
        cgroups: vec![cg.path.clone()],
        interval: Some(Duration::from_secs(1)),
        expect_refused: true,
        ..RawClient::new(zk.addr, 8)
    }
    .spawn()?;
    // A victim, refused twice while a check is running.
    let check = Check::start(&[flags.as_slice(), &["--duration", "4s"]].concat())?;
    let _victim = RawClient {
        interval: step,
        expect_refused: true,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let (code, line) = check.finish()?;
    wait_settled(zk.addr)?;

    let snap = json.finish()?;
    // SAFETY: kill(2) on the pid of a child spawned above and not yet reaped.
    unsafe { libc::kill(text.id() as i32, libc::SIGINT) };
    let mut table = String::new();
    std::io::Read::read_to_string(text.stdout.as_mut().context("no stdout")?, &mut table)?;
    text.wait()?;
    std::fs::write(
        out.join("snapshot.json"),
        serde_json::to_string_pretty(&snap)?,
    )?;
    std::fs::write(out.join("snapshot.txt"), &table)?;
    std::fs::write(out.join("check.txt"), format!("{line}\nexit {code}\n"))?;
    println!("{table}\n{line}\nexit {code}\nwritten to {}", out.display());
    Ok(())
}
