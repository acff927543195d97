//! zkconn under fewer privileges than root: exactly as its systemd unit runs it, as an
//! unprivileged user with the BPF capabilities only, and with the kernel refusing its map
//! reads. Every connection still counts per server, or zkconn says loudly that it cannot
//! count; never a silent zero. Root only; run with `cargo xtask test`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{
    Client, ZkServer, Zkconn, field, fresh_ipv4, limits::UnitLimits, process, server_row, ss_count,
    wait_settled, zkconn_bin,
};
use serde_json::Value;

fn unit_file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/zkconn.service"
    ))
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> Result<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || -> Result<u32> {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .context("unreadable kernel release")
    };
    Ok((next()?, next()?))
}

fn kept(snap: &Value) -> Vec<String> {
    snap["probe"]["capabilities"]["kept"]
        .as_array()
        .map(|caps| {
            caps.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// As deploy/zkconn.service runs it (its bounding set, no new privileges, its memlock
/// limit): every connection is counted exactly, seeded or new, and after attach zkconn keeps
/// only what this kernel needs for its maps.
#[test]
fn under_the_units_limits_every_connection_counts_and_only_what_the_kernel_needs_is_kept()
-> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let mut before = Client::raw(zk.addr, 4, 1, None)?;
    let limits = UnitLimits::of_unit(&unit_file())?;
    let mut cmd = Command::new(zkconn_bin());
    limits.apply(&mut cmd);
    let z = Zkconn::start_with(cmd, &["--zk", &zk.addr.to_string()])?;
    let mut after = Client::raw(zk.addr, 5, 1, None)?;
    before.close(1)?;
    after.close(2)?;
    wait_settled(zk.addr)?;
    let truth = ss_count(zk.addr, "established")?;
    let snap = z.finish()?;

    assert_eq!(truth, 6);
    assert_eq!(field(server_row(&snap, zk.addr)?, "open")?, 6, "{snap:#}");
    let b = process(&snap, before.pid())?;
    assert_eq!((field(b, "open")?, field(b, "seeded")?), (3, 4));
    let a = process(&snap, after.pid())?;
    assert_eq!((field(a, "open")?, field(a, "opened")?), (3, 5));
    assert_eq!(snap["probe"]["seeds"]["ownerless"], 0);

    // The kernel decides what stays: from 5.19 map access needs no capability.
    let kept = kept(&snap);
    for never in ["CAP_PERFMON", "CAP_SYS_ADMIN"] {
        assert!(!kept.iter().any(|k| k == never), "{kept:?}");
    }
    let bpf_needed = kernel_version()? < (5, 19)
        && std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")?.trim() != "0";
    assert_eq!(kept.iter().any(|k| k == "CAP_BPF"), bpf_needed, "{kept:?}");
    assert!(kept.iter().any(|k| k == "CAP_SYS_PTRACE"), "{kept:?}");
    Ok(())
}

/// An unprivileged user with CAP_BPF and CAP_PERFMON only cannot read root's
/// `/proc/PID/fd`: the connections that predate zkconn have no known owner. They still count
/// per server, under "unknown owner", and the snapshot says how many and why; they count down
/// when they close.
#[test]
fn as_an_unprivileged_user_with_bpf_capabilities_only_every_connection_counts_per_server()
-> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let mut held = Client::raw(zk.addr, 11, 1, None)?;
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+bpf,+perfmon",
        "--ambient-caps=-all,+bpf,+perfmon",
    ])
    .arg(zkconn_bin());
    let z = Zkconn::start_with(cmd, &["--zk", &zk.addr.to_string()])?;
    held.close(4)?;
    wait_settled(zk.addr)?;
    let truth = ss_count(zk.addr, "established")?;
    let snap = z.finish()?;

    assert_eq!(truth, 7);
    assert_eq!(field(server_row(&snap, zk.addr)?, "open")?, 7, "{snap:#}");
    let unknown = process(&snap, 0)?;
    assert_eq!(unknown["label"], "unknown owner", "{unknown:#}");
    assert_eq!((field(unknown, "open")?, field(unknown, "closed")?), (7, 4));
    let seeds = &snap["probe"]["seeds"];
    assert_eq!(seeds["ownerless"], 11, "{seeds:#}");
    let why = seeds["ownerless_why"].as_str().unwrap_or_default();
    assert!(
        why.contains("CAP_SYS_PTRACE") && why.contains("unknown owner"),
        "{why}"
    );
    assert!(kept(&snap).is_empty(), "{:?}", kept(&snap));
    Ok(())
}

/// Runs zkconn with `args` while the kernel refuses its map reads; returns (exit code,
/// stdout, stderr). Killed after 60 s (then the test fails: it must end by itself).
fn run_refused(args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(zkconn_bin());
    integration_tests::limits::refuse_map_reads(&mut cmd)?;
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            integration_tests::kill_and_reap(&mut child);
            bail!("zkconn {args:?} went on running while it could not read its maps");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A kernel that refuses zkconn's map reads (as one before 5.19 does without CAP_BPF) used
/// to leave every count at 0 and `unreadable` rising: now `snapshot` fails with the reason,
/// `check` reports UNKNOWN, and the daemon does not start. Both with connections to seed and
/// without.
#[test]
fn map_reads_the_kernel_refuses_are_an_error_never_a_zero() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let target = zk.addr.to_string();
    let sentence = "the kernel refused zkconn access to its map";
    for with_connections in [false, true] {
        let _clients = if with_connections {
            Some(Client::raw(zk.addr, 3, 1, None)?)
        } else {
            None
        };
        let (code, out, err) =
            run_refused(&["snapshot", "--json", "--duration", "2", "--zk", &target])?;
        eprintln!("snapshot said: {}", err.trim());
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.is_empty(),
            "no document when nothing could be read: {out}"
        );
        assert!(err.contains(sentence) && err.contains("CAP_BPF"), "{err}");

        let (code, out, _) = run_refused(&["check", "--duration", "1", "--zk", &target])?;
        assert_eq!(code, 3, "{out}");
        assert!(
            out.starts_with("ZKCONN UNKNOWN - ") && out.contains(sentence),
            "{out}"
        );

        let listen = format!("{}:{}", fresh_ipv4(), 9661);
        let (code, _, err) = run_refused(&["daemon", "--listen", &listen, "--zk", &target])?;
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(sentence), "{err}");
    }
    Ok(())
}
