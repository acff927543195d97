//! The real `zkconn` binary driven as each mode runs: `snapshot`, `check`, `daemon`, and what it leaves in the kernel.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::{
    http::http_get,
    reap::{Reaped, kill, kill_and_reap},
    zookeeper::{free_port, fresh_ipv4},
};

/// Starts the zkconn under test with `mode` then `args`; its stdout is read in a thread.
/// `ZKCONN_TEST_HOOK` runs every zkconn a test starts with `--hook` set to it (`cargo xtask
/// test` runs the accounting tests once per hook this kernel has).
pub fn test_hook() -> Option<String> {
    std::env::var("ZKCONN_TEST_HOOK")
        .ok()
        .filter(|h| !h.is_empty())
}

pub(crate) fn hook_args() -> Vec<String> {
    test_hook()
        .map(|h| vec!["--hook".to_owned(), h])
        .unwrap_or_default()
}

/// The hook zkconn reports: the forced one, else what `auto` picks on a kernel with BTF
/// (the BTF tracepoint) or without (the classic one).
pub fn expected_hook() -> String {
    test_hook().unwrap_or_else(|| {
        if Path::new("/sys/kernel/btf/vmlinux").exists() {
            "btf".to_owned()
        } else {
            "tracepoint".to_owned()
        }
    })
}

pub(crate) fn spawn_zkconn(
    mode: &[&str],
    args: &[&str],
) -> anyhow::Result<(Child, thread::JoinHandle<String>, ChildStderr)> {
    spawn_zkconn_with(Command::new(zkconn_bin()), mode, args)
}

/// Like `spawn_zkconn`, with `cmd` prepared by the caller (a `setpriv` wrapper, limits).
pub(crate) fn spawn_zkconn_with(
    mut cmd: Command,
    mode: &[&str],
    args: &[&str],
) -> anyhow::Result<(Child, thread::JoinHandle<String>, ChildStderr)> {
    let mut child = cmd
        .args(mode)
        .args(args)
        .args(hook_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start zkconn; build it with `cargo xtask build`")?;
    let stdout = read_all(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let err = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    Ok((child, stdout, err))
}

/// The lines of `err`, read in a thread.
pub fn stderr_lines(err: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// How long a zkconn under test may take to attach and seed.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// Waits up to `within` for zkconn's `ready:` log line; else returns the lines it logged
/// (all of them when it exited).
pub fn wait_ready(lines: &mpsc::Receiver<String>, within: Duration) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("ready:") => return Ok(()),
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(seen)
}

/// Reads all of `out` in a thread (a child blocked on a full pipe would never exit).
pub fn read_all(mut out: ChildStdout) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    })
}

/// A running `zkconn snapshot --json`; `finish` ends it with SIGINT and parses the output.
pub struct Zkconn {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
}

/// Now, in UTC, as RFC 3339 to the second (as `history --at` takes it).
pub fn now_rfc3339() -> anyhow::Result<String> {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

pub fn zkconn_bin() -> PathBuf {
    std::env::var_os("ZKCONN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/zkconn"
            ))
        })
}

impl Zkconn {
    /// Starts `zkconn snapshot --json --duration 600 -v ARGS` and waits until it is attached
    /// and seeded.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(Command::new(zkconn_bin()), args)
    }

    /// Like `start`, run by `cmd`: `zkconn_bin()` itself with limits applied, or a wrapper
    /// (`setpriv ... zkconn_bin()`).
    pub fn start_with(cmd: Command, args: &[&str]) -> anyhow::Result<Self> {
        let (child, stdout, err) = spawn_zkconn_with(
            cmd,
            &["snapshot", "--json", "--duration", "600", "-v"],
            args,
        )?;
        let mut z = Zkconn {
            child,
            stdout: Some(stdout),
            stderr: stderr_lines(err),
        };
        if let Err(seen) = wait_ready(&z.stderr, READY_WITHIN) {
            z.stop();
            bail!("zkconn did not become ready: {}", seen.join("\n"));
        }
        Ok(z)
    }

    fn stop(&mut self) {
        kill_and_reap(&mut self.child);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ids of the BPF programs and maps this zkconn holds (`prog_id:`/`map_id:` in
    /// `/proc/PID/fdinfo`), as ("prog" or "map", id).
    pub fn bpf_objects(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{}/fdinfo", self.pid()))? {
            let Ok(text) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            for line in text.lines() {
                for (kind, prefix) in [("prog", "prog_id:"), ("map", "map_id:")] {
                    if let Some(id) = line.strip_prefix(prefix) {
                        out.push((kind, id.trim().parse()?));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Sends `signal` to zkconn (SIGSTOP/SIGCONT: a zkconn too slow to read `/proc` in time).
    pub fn signal(&mut self, signal: i32) {
        kill(&mut self.child, signal);
    }

    /// SIGINT ends the observation; returns the snapshot document.
    pub fn finish(mut self) -> anyhow::Result<Value> {
        kill(&mut self.child, libc::SIGINT);
        let status = self.child.wait()?;
        let out = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            let err: Vec<String> = self.stderr.try_iter().collect();
            bail!("zkconn exited with {status}: {}", err.join("\n"));
        }
        serde_json::from_str(&out).with_context(|| format!("zkconn printed no JSON: {out}"))
    }
}

impl Drop for Zkconn {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            self.stop();
        }
    }
}

/// A running `zkconn check -v ARGS`, attached and observing.
pub struct Check {
    child: Reaped,
    stdout: Option<thread::JoinHandle<String>>,
}

impl Check {
    /// Starts the check and waits until its hooks are live.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let (mut child, stdout, err) = spawn_zkconn(&["check", "-v"], args)?;
        let mut seen = Vec::new();
        let mut lines = BufReader::new(err).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("ready:") {
                // The rest of stderr is drained, so the check never blocks on it.
                thread::spawn(move || lines.for_each(drop));
                return Ok(Self {
                    child: Reaped::new(child),
                    stdout: Some(stdout),
                });
            }
            seen.push(line);
        }
        let _ = child.wait();
        bail!("zkconn check did not become ready: {}", seen.join("\n"))
    }

    /// Waits for the check to end; returns its exit code and its output.
    pub fn finish(mut self) -> anyhow::Result<(i32, String)> {
        let status = self.child.wait()?;
        let out = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let code = status
            .code()
            .ok_or_else(|| anyhow!("zkconn check died: {status}"))?;
        Ok((code, out.trim().to_owned()))
    }

    /// Runs a whole check and returns its exit code and output.
    pub fn run(args: &[&str]) -> anyhow::Result<(i32, String)> {
        Self::start(args)?.finish()
    }
}

/// A running `zkconn daemon -v --listen ADDR --interval 1s ARGS`.
pub struct Daemon {
    /// Killed and reaped when the daemon is dropped.
    pub child: Reaped,
    pub addr: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the daemon on a fresh loopback address and waits until it serves.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let ip = fresh_ipv4();
        Self::start_at(SocketAddr::new(ip, free_port(ip)?), args)
    }

    /// As [`Daemon::start`], listening on `addr`.
    pub fn start_at(addr: SocketAddr, args: &[&str]) -> anyhow::Result<Self> {
        let listen = addr.to_string();
        let mut cmd_args = vec!["--listen", listen.as_str()];
        if !args.contains(&"--interval") {
            cmd_args.extend(["--interval", "1s"]);
        }
        cmd_args.extend_from_slice(args);
        let (child, _stdout, err) = spawn_zkconn(&["daemon", "-v"], &cmd_args)?;
        let mut d = Self {
            child: Reaped::new(child),
            addr,
            stderr: stderr_lines(err),
        };
        if let Err(seen) = wait_ready(&d.stderr, READY_WITHIN) {
            d.kill9();
            bail!("zkconn daemon did not become ready: {}", seen.join("\n"));
        }
        Ok(d)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.addr, path)
    }

    /// The snapshot document, once `ok` holds for it (the daemon refreshes every second).
    pub fn snapshot_when(&self, ok: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get("/v1/snapshot")?;
            if status == 200 {
                let snap: Value = serde_json::from_str(&body)?;
                if ok(&snap) {
                    return Ok(snap);
                }
                if Instant::now() > deadline {
                    bail!("the snapshot never reached the expected state: {snap:#}");
                }
            } else if Instant::now() > deadline {
                bail!("/v1/snapshot answered {status}: {body}");
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    pub fn signal(&mut self, signal: i32) {
        kill(&mut self.child, signal);
    }

    pub fn kill9(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Ids of the eBPF programs, maps and links in the kernel now, as `"prog 12"`.
pub fn bpf_ids() -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for kind in ["prog", "map", "link"] {
        let out = Command::new("bpftool")
            .args([kind, "show", "--json"])
            .output()
            .context("cannot run bpftool (cargo xtask setup installs it)")?;
        let list: Value = serde_json::from_slice(&out.stdout)?;
        for o in list.as_array().into_iter().flatten() {
            if let Some(id) = o["id"].as_u64() {
                ids.insert(format!("{kind} {id}"));
            }
        }
    }
    Ok(ids)
}

/// The kernel objects not in `before` that are still there after up to 5 s (freeing is
/// asynchronous in the kernel); empty when everything new went away.
pub fn wait_gone_from_kernel(
    before: &std::collections::BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut left: Vec<String> = bpf_ids()?.difference(before).cloned().collect();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        let now = bpf_ids()?;
        left.retain(|id| now.contains(id));
    }
    Ok(left)
}
