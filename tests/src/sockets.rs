//! The independent truth: the kernel's socket table as `ss` reads it.

use std::{
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Waits until no socket towards `server` is in a transient state (connecting or
/// closing), so the kernel has reached the final state the test asserts on.
pub fn wait_settled(server: SocketAddr) -> anyhow::Result<()> {
    let dst = server.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("ss")
            .args([
                "-Htn",
                "state",
                "syn-sent",
                "state",
                "fin-wait-1",
                "state",
                "fin-wait-2",
            ])
            .args(["state", "closing", "state", "last-ack", "dst", &dst])
            .output()
            .context("cannot run ss")?;
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "sockets towards {server} did not settle: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Counts sockets towards `server` in `state` (an `ss` state name) according to `ss`.
pub fn ss_count(server: SocketAddr, state: &str) -> anyhow::Result<usize> {
    let out = Command::new("ss")
        .args(["-Htn", "state", state, "dst", &server.to_string()])
        .output()
        .context("cannot run ss")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}
