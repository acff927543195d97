//! Leak suspects, time to limit and the Nagios check against a real ZooKeeper with a small
//! `maxClientCnxns`, real client processes and the real probes. Root only; run with
//! `cargo xtask test`.

use std::{thread, time::Duration};

use anyhow::{Result, anyhow};
use integration_tests::{
    Check, RawClient, ZkServer, Zkconn, field, fresh_ipv4, process, server_row, wait_settled,
};
use serde_json::Value;

fn suspects(snap: &Value) -> Vec<(Option<u64>, String)> {
    snap["suspects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["pid"].as_u64(),
                s["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// A steady holder (there before zkconn), a slow leaker that reaches the limit and is
/// refused, and a victim refused afterwards: the leaker is the one suspect, by what it
/// holds of the exhausted budget; the victim is listed as refused, never as a suspect.
#[test]
fn the_leaker_ranks_first_and_the_steady_holder_is_not_a_suspect() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 8, &[])?;
    let other_host = fresh_ipv4();
    let steady = RawClient {
        interval: Some(Duration::from_millis(300)),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--max-client-cnxns", "8"])?;
    let before = zk.connection_rejected(other_host)?;
    // One connect a second: five fit beside the steady three, three are refused.
    let leaker = RawClient {
        interval: Some(Duration::from_secs(1)),
        expect_refused: true,
        ..RawClient::new(zk.addr, 8)
    }
    .spawn()?;
    let victim = RawClient {
        interval: Some(Duration::from_millis(300)),
        expect_refused: true,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    thread::sleep(Duration::from_millis(300));
    let rejected = zk.connection_rejected(other_host)? - before;
    let snap = z.finish()?;

    assert_eq!(rejected, 5, "the server's own count");
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "rejected")?, rejected);
    assert_eq!(field(row, "open")?, 8);
    assert_eq!(row["alarm"], "critical");
    assert_eq!(row["refusing"], true);
    assert_eq!(field(process(&snap, leaker.pid())?, "rejected")?, 3);
    assert_eq!(field(process(&snap, victim.pid())?, "rejected")?, 2);
    assert_eq!(field(process(&snap, steady.pid())?, "rejected")?, 0);

    let s = suspects(&snap);
    let pids: Vec<Option<u64>> = s.iter().map(|(p, _)| *p).collect();
    assert_eq!(pids, vec![Some(u64::from(leaker.pid()))], "{s:?}");
    assert!(
        s[0].1.starts_with(&format!(
            "holds 5 of 8 at {} from 127.0.0.1, all since zkconn started; +5 in ",
            zk.addr
        )) && s[0].1.contains("; refused 3 times by "),
        "{s:?}"
    );
    let victims: Vec<(Option<u64>, Option<&str>)> = snap["victims"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["pid"].as_u64(), v["reason"].as_str()))
        .collect();
    let why = format!("refused 2 times by {} from 127.0.0.1", zk.addr);
    assert_eq!(
        victims,
        vec![(Some(u64::from(victim.pid())), Some(why.as_str()))]
    );
    // Where each process's connections count: the budget of (server, local IP).
    assert_eq!(
        process(&snap, leaker.pid())?["servers"],
        serde_json::json!([{"server": zk.addr.to_string(), "local_ip": "127.0.0.1", "open": 5}])
    );
    let leaker_row = process(&snap, leaker.pid())?;
    assert!(leaker_row["growth_per_min"].as_f64() > Some(0.0));
    let steady_row = process(&snap, steady.pid())?;
    assert_eq!(steady_row["growth_per_min"], 0.0);
    assert_eq!(steady_row["oldest_seeded"], true);
    // Seeded before the observation began (ages are rounded to 0.1 s).
    let oldest = steady_row["oldest_secs"].as_f64().unwrap_or(0.0);
    let observed = snap["observed_secs"].as_f64().unwrap_or(f64::MAX);
    assert!(oldest + 0.05 >= observed, "{oldest} < {observed}");
    // Reached the limit while growing: no time left.
    assert_eq!(row["time_to_limit_secs"], 0.0);
    Ok(())
}

/// Steady state has no time to limit; a grower has a finite one; a process that keeps
/// sockets the server closed is flagged.
#[test]
fn time_to_limit_and_close_wait_leaks() -> Result<()> {
    // ZooKeeper's default limit, in the server's zoo.cfg (zkconn reads it there).
    let zk = ZkServer::start(fresh_ipv4(), 60, &[])?;
    let target = zk.addr.to_string();
    let steady = RawClient::new(zk.addr, 3).spawn()?;
    let z = Zkconn::start(&["--zk", &target])?;
    thread::sleep(Duration::from_secs(3));
    let snap = z.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!((field(row, "open")?, field(row, "limit")?), (3, 60));
    assert_eq!(row["time_to_limit_secs"], Value::Null, "steady state");
    assert_eq!(row["growth_per_min"], 0.0);
    assert_eq!(snap["suspects"], serde_json::json!([]));

    let z = Zkconn::start(&["--zk", &target])?;
    // Six more, one a second; and three connections the server answers and closes, which
    // the client never closes (CLOSE_WAIT).
    let grower = RawClient {
        interval: Some(Duration::from_secs(1)),
        ..RawClient::new(zk.addr, 6)
    }
    .spawn()?;
    let stuck = RawClient {
        say: Some("srvr".into()),
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    thread::sleep(Duration::from_millis(2500));
    let snap = z.finish()?;
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(field(row, "open")?, 9);
    assert_eq!(field(row, "close_wait")?, 3);
    let ttl = row["time_to_limit_secs"]
        .as_f64()
        .ok_or_else(|| anyhow!("no time to limit for a grower: {row:#}"))?;
    assert!(ttl > 0.0 && ttl < 600.0, "{ttl}");
    let s = suspects(&snap);
    let find = |pid: u32| {
        s.iter()
            .find(|(p, _)| *p == Some(u64::from(pid)))
            .map(|(_, r)| r.clone())
    };
    assert_eq!(
        find(stuck.pid()).as_deref(),
        Some("3 in CLOSE_WAIT: server closed, app did not"),
        "{s:?}"
    );
    assert!(
        find(grower.pid()).is_some_and(|r| r.starts_with("+6 in ") && r.ends_with("none closed")),
        "{s:?}"
    );
    assert_eq!(find(steady.pid()), None);
    assert_eq!(field(process(&snap, stuck.pid())?, "close_wait_held")?, 3);
    Ok(())
}

/// The Nagios plugin: OK, WARNING from --warn, CRITICAL when refused during the check;
/// UNKNOWN for bad flags.
#[test]
fn check_exit_codes() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let target = zk.addr.to_string();
    let args = [
        "--zk",
        target.as_str(),
        "--max-client-cnxns",
        "10",
        "--duration",
        "1s",
    ];
    let step = Some(Duration::from_millis(300));
    let holder = RawClient {
        interval: step,
        ..RawClient::new(zk.addr, 2)
    }
    .spawn()?;
    let (code, line) = Check::run(&args)?;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with(&format!(
            "ZKCONN OK - {target} from 127.0.0.1: 2 of 10 open (20%)"
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("pid {} (2 open)", holder.pid())),
        "{line}"
    );
    assert!(
        line.contains(&format!(" {target} from 127.0.0.1'=2;8;9.5;0;10"))
            && line.contains("'open "),
        "{line}"
    );

    let more = RawClient {
        interval: step,
        ..RawClient::new(zk.addr, 6)
    }
    .spawn()?;
    wait_settled(zk.addr)?;
    let (code, line) = Check::run(&args)?;
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("ZKCONN WARNING - "), "{line}");
    assert!(line.contains("8 of 10 open (80%)"), "{line}");
    assert!(
        line.contains(&format!("pid {} (6 open)", more.pid())),
        "{line}"
    );

    // Refused during the check: two fit, the third is refused.
    let mut args4 = args.to_vec();
    args4[5] = "4s";
    let check = Check::start(&args4)?;
    let late = RawClient {
        interval: step,
        expect_refused: true,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    let (code, line) = check.finish()?;
    assert_eq!(code, 2, "{line}");
    assert!(line.starts_with("ZKCONN CRITICAL - "), "{line}");
    assert!(
        line.contains("10 of 10 open (100%), limit reached, refused 1 in the last"),
        "{line}"
    );
    assert!(
        line.contains(&format!(" {target} from 127.0.0.1'=1 ")) && line.contains("'rejected "),
        "{line}"
    );
    // The refused process is named as refused, not as the suspect.
    assert!(
        line.contains(&format!(
            "; refused: python3.11 raw_client.py pid {} (refused once",
            late.pid()
        )),
        "{line}"
    );
    assert!(
        !line.contains(&format!(
            "suspect: python3.11 raw_client.py pid {}",
            late.pid()
        )),
        "{line}"
    );
    drop((holder, more, late));

    for bad in [
        vec!["--warn", "90", "--crit", "80"],
        vec!["--warn", "lots"],
        vec!["--zk", "nonsense:port"],
    ] {
        let out = std::process::Command::new(integration_tests::zkconn_bin())
            .arg("check")
            .args(&bad)
            .output()?;
        assert_eq!(out.status.code(), Some(3), "{bad:?}: {out:?}");
    }
    Ok(())
}
