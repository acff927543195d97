//! Limits and refusals against a real ZooKeeper with a small `maxClientCnxns`: zkconn's
//! count of refused connections must equal the server's own `zk_connection_rejected`.
//! Root only; run with `cargo xtask test`.

use std::{thread, time::Duration};

use anyhow::Result;
use integration_tests::{
    Cgroup, Check, RawClient, ZkOptions, ZkServer, Zkconn, field, free_port, fresh_ipv4, process,
    server_row, wait_settled, zkconn_bin,
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

/// Nobody gave the limit: zkconn asks the server (`conf`), before it attaches. A host at
/// its limit has its own question refused, so it asks again from another local address;
/// the server's own refusal count says exactly one question was refused, and zkconn (not
/// attached yet) counted none of it.
#[test]
fn the_limit_is_asked_from_the_server_and_from_another_address_at_the_limit() -> Result<()> {
    let options = ZkOptions {
        four_letter_words: "srvr,mntr,cons,conf",
        ..ZkOptions::default()
    };
    let zk = ZkServer::start_with(fresh_ipv4(), 3, &options)?;
    let holder = RawClient::new(zk.addr, 3).spawn()?;
    wait_settled(zk.addr)?;
    let witness = fresh_ipv4();
    let before = zk.connection_rejected(witness)?;
    // As for a server on another host: without the server's side, this host's own server
    // is not read through /proc, and is asked (so in the tests below).
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--no-server-side"])?;
    let snap = z.finish()?;
    assert_eq!(
        zk.connection_rejected(witness)? - before,
        1,
        "one question refused"
    );

    let row = server_row(&snap, zk.addr)?;
    let asked = &snap["max_client_cnxns"]["asked"];
    assert_eq!(row["local_ip"], "127.0.0.1", "{row:#}");
    assert_eq!(
        [
            field(row, "limit")?,
            field(row, "open")?,
            field(row, "opened")?,
            field(row, "rejected")?
        ],
        [3, 3, 0, 0],
        "{row:#} {asked:#}"
    );
    assert_eq!(row["limit_source"], "server", "{row:#}");
    assert_eq!(row["headroom"], 0, "{row:#}");
    assert_eq!(asked.as_array().map(Vec::len), Some(1), "{asked:#}");
    assert_eq!(asked[0]["server"], zk.addr.to_string());
    assert_eq!(asked[0]["limit"], 3, "{asked:#}");
    assert_eq!(asked[0]["via"], "conf", "{asked:#}");
    assert_eq!(asked[0]["from"], "127.0.0.2", "{asked:#}");
    assert_eq!(
        asked[0]["failures"],
        serde_json::json!(["`conf` from 127.0.0.1 was refused (this host may be at its limit)"]),
        "{asked:#}"
    );
    assert_eq!(field(process(&snap, holder.pid())?, "open")?, 3);

    // `check` knows the limit too: CRITICAL at it, without waiting for a refusal.
    let (code, line) = Check::run(&[
        "--zk",
        &zk.addr.to_string(),
        "--duration",
        "1s",
        "--no-server-side",
    ])?;
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(&format!(
            "ZKCONN CRITICAL - {} from 127.0.0.1: 3 of 3 open (100%), limit reached; top holder: ",
            zk.addr
        )),
        "{line}"
    );
    assert!(!line.contains("assumed"), "{line}");
    // The check took the answer the snapshot heard from zkconn's cache: it asked nothing,
    // so it was not refused either.
    assert_eq!(
        zk.connection_rejected(witness)? - before,
        1,
        "the check asked nothing"
    );
    assert_eq!(asked[0]["cached"], false, "{asked:#}");
    Ok(())
}

/// A host at a limit nobody knows: the server does not say it (`conf` not allowed, no
/// AdminServer), and refuses zkconn's own question from the host's address while it
/// answers another. That refusal is the evidence: the budget is CRITICAL, not OK at an
/// assumed 60.
#[test]
fn a_refused_question_is_a_refusal_when_the_limit_is_unknown() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 2, &[])?;
    let holder = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let target = zk.addr.to_string();
    let flags = [
        "--zk",
        target.as_str(),
        "--admin-port",
        "0",
        "--no-server-side",
    ];
    let (code, line) = Check::run(&[&flags[..], &["--duration", "1s"]].concat())?;
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(&format!(
            "ZKCONN CRITICAL - {target} from 127.0.0.1: 2 of 60 (assumed) open (3%), refused \
             zkconn's own question from 127.0.0.1: at its limit; top holder: "
        )),
        "{line}"
    );
    let snap = Zkconn::start(&flags)?.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(row["question_refused"], true, "{row:#}");
    assert_eq!(row["refusing"], true, "{row:#}");
    assert_eq!(row["alarm"], "critical", "{row:#}");
    assert_eq!(
        field(row, "rejected")?,
        0,
        "asked before attaching: {row:#}"
    );
    assert_eq!(field(process(&snap, holder.pid())?, "open")?, 2);
    Ok(())
}

/// `conf` not allowed: the AdminServer's `/commands/configuration` says it.
#[test]
fn the_admin_server_says_the_limit_when_conf_is_not_allowed() -> Result<()> {
    let ip = fresh_ipv4();
    let admin = free_port(ip)?;
    let options = ZkOptions {
        admin_port: Some(admin),
        ..ZkOptions::default()
    };
    let zk = ZkServer::start_with(ip, 5, &options)?;
    let client = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let z = Zkconn::start(&[
        "--zk",
        &zk.addr.to_string(),
        "--admin-port",
        &admin.to_string(),
        "--no-server-side",
    ])?;
    let snap = z.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(
        [field(row, "limit")?, field(row, "open")?],
        [5, 2],
        "{row:#}"
    );
    assert_eq!(row["limit_source"], "server", "{row:#}");
    let asked = &snap["max_client_cnxns"]["asked"][0];
    assert_eq!(asked["via"], "admin-server", "{asked:#}");
    assert_eq!(
        asked["failures"],
        serde_json::json!([
            "`conf`: not in the server's 4lw.commands.whitelist (add conf there, or give --limit)"
        ]),
        "{asked:#}"
    );
    drop(client);
    Ok(())
}

/// Nobody says: ZooKeeper's default is assumed, and every output says so and why.
#[test]
fn an_unanswered_limit_is_assumed_and_marked_in_every_output() -> Result<()> {
    let ip = fresh_ipv4();
    let closed_admin = free_port(ip)?;
    let zk = ZkServer::start(ip, 3, &[])?;
    let client = RawClient::new(zk.addr, 2).spawn()?;
    wait_settled(zk.addr)?;
    let target = zk.addr.to_string();
    let admin = closed_admin.to_string();
    let flags = [
        "--zk",
        target.as_str(),
        "--admin-port",
        admin.as_str(),
        "--no-server-side",
    ];
    let why = format!(
        "`conf`: not in the server's 4lw.commands.whitelist (add conf there, or give --limit); \
         AdminServer on port {closed_admin}: connection refused"
    );

    let snap = Zkconn::start(&flags)?.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(
        [field(row, "limit")?, field(row, "open")?],
        [60, 2],
        "{row:#}"
    );
    assert_eq!(row["limit_source"], "default", "{row:#}");
    assert_eq!(snap["max_client_cnxns"]["source"], "default");
    let asked = &snap["max_client_cnxns"]["asked"][0];
    assert_eq!(asked["limit"], serde_json::Value::Null, "{asked:#}");
    assert_eq!(
        asked["failures"].as_array().map(Vec::len),
        Some(2),
        "{asked:#}"
    );

    let out = std::process::Command::new(zkconn_bin())
        .args(["snapshot"])
        .args(flags)
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&target))
        .ok_or_else(|| anyhow::anyhow!("no row for {target}: {table}"))?;
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[2..4], ["2", "60?"], "{table}");
    assert!(
        table.contains(&format!(
            "? limit of {target} assumed (ZooKeeper's default): {why}"
        )),
        "{table}"
    );

    let (code, line) = Check::run(&[&flags[..], &["--duration", "1s"]].concat())?;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with(&format!(
            "ZKCONN OK - {target} from 127.0.0.1: 2 of 60 (assumed) open (3%); top holder: "
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("; limit assumed: {why} | ")),
        "{line}"
    );
    drop(client);
    Ok(())
}
