//! The `poll` hook (no BPF: the socket tables sampled each second), forced with `--hook
//! poll` and chosen by `auto` on a kernel without BPF (a seccomp filter makes `bpf()` fail
//! with ENOSYS, as on a kernel built without it). Against a real ZooKeeper: every connection
//! that lives across a sample counts exactly, and every output says what poll cannot see.
//! Root only; run with `cargo xtask test`.

use std::{process::Command, thread, time::Duration};

use anyhow::Result;
use integration_tests::{
    Client, ZkServer, Zkconn, field, fresh_ipv4, kill_and_reap,
    limits::{refuse_perf_events, without_bpf},
    process, server_row, ss_count, wait_settled, zkconn_bin,
};
use serde_json::Value;

/// Longer than the sampling interval (1 s), with room for a slow sample.
const SEEN: Duration = Duration::from_millis(2500);

fn says_what_poll_cannot_see(snap: &Value) {
    assert_eq!(snap["probe"]["hook"], "poll", "{:#}", snap["probe"]);
    assert_eq!(snap["probe"]["refusal_detection"], Value::Null);
    let limits = snap["probe"]["limitations"].to_string();
    assert!(
        limits.contains("connections that open and close between two samples are not seen")
            && limits.contains("refusals are not recognised"),
        "{limits}"
    );
}

#[test]
fn the_poll_hook_counts_every_connection_that_lives_across_a_sample() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let mut before = Client::raw(zk.addr, 4, 1, None)?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string(), "--hook", "poll"])?;
    let mut after = Client::raw(zk.addr, 5, 2, None)?;
    let mut killed = Client::raw(zk.addr, 3, 1, None)?;
    let killed_pid = killed.pid();
    thread::sleep(SEEN);
    before.close(1)?;
    after.close(2)?;
    kill_and_reap(&mut killed.child);
    wait_settled(zk.addr)?;
    thread::sleep(SEEN);
    let truth = ss_count(zk.addr, "established")?;
    let cons = zk.four_letter("cons")?;
    let snap = z.finish()?;

    says_what_poll_cannot_see(&snap);
    // 3 + 2 threads x 5 - 2 (one thread's 2 closed).
    assert_eq!(truth, 11);
    assert_eq!(
        cons.lines().filter(|l| l.contains("queued=")).count(),
        11 + 1, // the `cons` connection itself
        "{cons}"
    );
    let server = server_row(&snap, zk.addr)?;
    assert_eq!(field(server, "open")?, 11, "{snap:#}");
    assert_eq!(field(server, "opened")?, 13);
    assert_eq!(field(server, "closed")?, 6);
    let b = process(&snap, before.pid())?;
    assert_eq!(
        (
            field(b, "open")?,
            field(b, "seeded")?,
            field(b, "opened")?,
            field(b, "closed")?
        ),
        (3, 4, 0, 1)
    );
    let a = process(&snap, after.pid())?;
    assert_eq!(
        (field(a, "open")?, field(a, "opened")?, field(a, "closed")?),
        (8, 10, 2)
    );
    let k = process(&snap, killed_pid)?;
    assert_eq!(
        (field(k, "open")?, field(k, "opened")?, field(k, "closed")?),
        (0, 3, 3)
    );
    assert_eq!(k["alive"], false);
    assert_eq!(snap["probe"]["seeds"]["seeded"], 4);
    Ok(())
}

#[test]
fn auto_falls_back_to_poll_on_a_kernel_without_bpf_and_says_why() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let held = Client::raw(zk.addr, 3, 1, None)?;
    let mut cmd = Command::new(zkconn_bin());
    without_bpf(&mut cmd)?;
    let z = Zkconn::start_with(cmd, &["--zk", &zk.addr.to_string(), "--hook", "auto"])?;
    thread::sleep(SEEN);
    let snap = z.finish()?;
    says_what_poll_cannot_see(&snap);
    let why = snap["probe"]["limitations"][0].as_str().unwrap_or_default();
    assert!(
        why.starts_with("no BPF hook can be used on this kernel (")
            && why.contains("samples the socket tables"),
        "{why}"
    );
    assert_eq!(field(server_row(&snap, zk.addr)?, "open")?, 3);
    assert_eq!(field(process(&snap, held.pid())?, "open")?, 3);

    // A hook asked for by name is never replaced: one sentence, exit 1.
    let mut cmd = Command::new(zkconn_bin());
    without_bpf(&mut cmd)?;
    let out = cmd
        .args(["snapshot", "--duration", "1", "--hook", "btf"])
        .args(["--zk", &zk.addr.to_string()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("zkconn: loading zkconn's eBPF object failed"),
        "{err}"
    );
    Ok(())
}

/// In a user namespace zkconn holds every capability, but only there: the host's kernel
/// refuses its maps. That is a policy, not a limit to raise: `auto` samples the socket
/// tables instead and says why.
#[test]
fn auto_falls_back_to_poll_where_a_policy_forbids_bpf() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let held = Client::raw(zk.addr, 2, 1, None)?;
    let mut cmd = Command::new("unshare");
    cmd.arg("-Ur").arg(zkconn_bin());
    let z = Zkconn::start_with(cmd, &["--zk", &zk.addr.to_string()])?;
    thread::sleep(SEEN);
    let snap = z.finish()?;
    says_what_poll_cannot_see(&snap);
    let why = snap["probe"]["limitations"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("a user namespace, a seccomp filter or a security policy forbids BPF"),
        "{why}"
    );
    assert_eq!(field(server_row(&snap, zk.addr)?, "open")?, 2);
    // Root's /proc/PID/fd is another user's to a user namespace's root: the holder cannot be
    // read, and the connections count under the unknown owner, with the reason.
    assert!(process(&snap, held.pid()).is_err());
    assert_eq!(field(process(&snap, 0)?, "open")?, 2);
    assert_eq!(snap["probe"]["seeds"]["ownerless"], 2);
    assert!(snap["probe"]["seeds"]["ownerless_why"].is_string());
    Ok(())
}

/// Perf buffers (kernels before 5.8, or `--fallback perf-buffer`) are perf events, which a
/// policy or a missing CAP_PERFMON can refuse. That is for the operator to fix, not a kernel
/// without BPF: zkconn stops with the reason (exit 1) even under `--hook auto`, rather than
/// sampling without refusals or short connections.
#[test]
fn a_refused_perf_buffer_is_reported_not_sampled_around() -> Result<()> {
    let mut cmd = Command::new(zkconn_bin());
    refuse_perf_events(&mut cmd)?;
    let out = cmd
        .args(["snapshot", "--duration", "0", "--hook", "auto"])
        .args(["--port", "2999", "--fallback", "perf-buffer"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot open the perf buffer of CPU")
            && stderr.contains("CAP_PERFMON")
            && !stderr.contains("samples the socket tables"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    Ok(())
}
