//! Limits and refusals against a real ZooKeeper with a small `maxClientCnxns`: zkconn's
//! count of refused connections must equal the server's own `zk_connection_rejected`.
//! Root only; run with `cargo xtask test`.

use std::{thread, time::Duration};

use anyhow::Result;
use integration_tests::{
    Cgroup, RawClient, ZkServer, Zkconn, field, fresh_ipv4, process, server_row, wait_settled,
};

/// Also per cgroup: the kernel's count of each cgroup's refusals equals its process's, so
/// the cgroup rows (and `top`'s cgroup view, which reads them) name who was refused.
#[test]
fn refusals_equal_the_servers_own_count() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 3, &[])?;
    let (cg_leaker, cg_victim) = (Cgroup::create("leaker")?, Cgroup::create("victim")?);
    let other_host = fresh_ipv4();
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "3"])?;
    let before = zk.connection_rejected(other_host)?;

    let step = Some(Duration::from_millis(300));
    // A server that answers and then closes: not a refusal.
    let mut asker = RawClient {
        say: Some("srvr".into()),
        exit_after: Some(Duration::from_millis(100)),
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    asker.wait_exit(Duration::from_secs(5))?;
    let holder = RawClient {
        interval: step,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    // One more fits; the next three are refused.
    let leaker = RawClient {
        interval: step,
        cgroups: vec![cg_leaker.path.clone()],
        ..RawClient::new(zk.addr, 4)
    }
    .spawn()?;
    let victim = RawClient {
        interval: step,
        cgroups: vec![cg_victim.path.clone()],
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    thread::sleep(Duration::from_millis(200));
    let rejected = zk.connection_rejected(other_host)? - before;
    let snap = z.finish()?;

    assert_eq!(rejected, 5, "the server's own count");
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "rejected")?, rejected);
    assert_eq!(field(row, "open")?, 3);
    assert_eq!(field(row, "limit")?, 3);
    assert_eq!(row["headroom"], 0);
    assert_eq!(row["usage"], 1.0);
    // 2 questions + 2 held + 4 + 2 attempts.
    assert_eq!(field(row, "opened")?, 10);
    assert_eq!(field(process(&snap, asker.pid())?, "rejected")?, 0);
    // The server answered and closed at once: closed, and not a refusal.
    assert_eq!(field(process(&snap, asker.pid())?, "closed")?, 2);
    assert_eq!(field(process(&snap, holder.pid())?, "rejected")?, 0);
    assert_eq!(field(process(&snap, leaker.pid())?, "rejected")?, 3);
    assert_eq!(field(process(&snap, leaker.pid())?, "open")?, 1);
    assert_eq!(field(process(&snap, victim.pid())?, "rejected")?, 2);
    let cgroups = snap["cgroups"].as_array().cloned().unwrap_or_default();
    for (cg, pid, open, rejected) in [
        (&cg_leaker, leaker.pid(), 1, 3),
        (&cg_victim, victim.pid(), 0, 2),
    ] {
        let row = cgroups
            .iter()
            .find(|r| r["path"] == cg.rel.as_str())
            .ok_or_else(|| anyhow::anyhow!("no row for {}: {cgroups:#?}", cg.rel))?;
        assert_eq!(field(row, "rejected")?, rejected, "{row:#}");
        assert_eq!(field(row, "open")?, open, "{row:#}");
        assert_eq!(row["pids"], serde_json::json!([pid]), "{row:#}");
        assert_eq!(row["users"], serde_json::json!(["root"]), "{row:#}");
    }
    assert_eq!(snap["max_client_cnxns"]["source"], "flag");
    assert_eq!(snap["probe"]["refusal_detection"], "no_bytes_received");
    Ok(())
}

#[test]
fn the_limit_comes_from_zoo_cfg_and_per_server_flags() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(
        cfg.path(),
        format!("clientPort={}\nmaxClientCnxns=7\n", zk.addr.port()),
    )?;
    let cfg_path = cfg.path().display().to_string();
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--zoo-cfg", &cfg_path])?;
    let client = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "limit")?, 7);
    assert_eq!(row["headroom"], 5);
    assert_eq!(snap["max_client_cnxns"]["source"], "zoo-cfg");

    let limit = format!("{}=4", zk.addr);
    let z = Zkconn::start(&[
        "--zk",
        &zk.addr.to_string(),
        "--zoo-cfg",
        &cfg_path,
        "--limit",
        &limit,
    ])?;
    let snap = z.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "limit")?, 4);
    assert_eq!(row["headroom"], 2);
    assert_eq!(row["usage"], 0.5);
    drop(client);
    Ok(())
}
