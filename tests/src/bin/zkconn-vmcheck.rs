//! The kernel matrix's check: `cargo xtask vm-test` runs it on this host and inside each
//! kernel it boots under qemu. For every hook named on the command line it starts zkconn
//! against plain TCP listeners (a ZooKeeper JVM is too slow under software emulation) with a
//! known traffic pattern, and prints one `zkconn-vm:` line per hook: whether the hook attached,
//! which hook zkconn reported, and whether every count was exact (else what differed).
//!
//! Usage: `ZKCONN_BIN=PATH zkconn-vmcheck HOOK...`; `hold ADDR N` is its own client process.
//! Root only. Every process it starts is stopped before it moves to the next hook.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use integration_tests::{kill, kill_and_reap, zkconn_bin};
use serde_json::Value;

/// Under software emulation zkconn's start (BTF parsing, the verifier) takes seconds.
const READY_WITHIN: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("hold") {
        return match hold(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hold: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.is_empty() {
        eprintln!("usage: ZKCONN_BIN=PATH zkconn-vmcheck HOOK...");
        return ExitCode::from(2);
    }
    for hook in &args {
        let line = match check_hook(hook) {
            Ok(outcome) => outcome.line(hook),
            Err(e) => format!(
                "hook={hook} attached=? error={:?}",
                format!("{e:#}").replace('\n', " ")
            ),
        };
        println!("zkconn-vm: {line}");
    }
    ExitCode::SUCCESS
}

/// What one hook's run showed.
enum Outcome {
    Refused(String),
    Ran {
        reported: String,
        mismatches: Vec<String>,
    },
}

impl Outcome {
    fn line(&self, hook: &str) -> String {
        match self {
            Outcome::Refused(why) => format!("hook={hook} attached=no reason={why:?}"),
            Outcome::Ran {
                reported,
                mismatches,
            } if mismatches.is_empty() => {
                format!("hook={hook} attached=yes reported={reported} exact=yes")
            }
            Outcome::Ran {
                reported,
                mismatches,
            } => format!(
                "hook={hook} attached=yes reported={reported} exact=no differences={:?}",
                mismatches.join("; ")
            ),
        }
    }
}

/// A listener that accepts everything, reads until the client closes, then closes too.
fn listener(addr: SocketAddr) -> Result<SocketAddr> {
    let l = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = l.local_addr()?;
    thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    Ok(local)
}

/// A client process holding `n` connections to `addr`; `close k` closes k of them.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(addr: SocketAddr, n: u32) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["hold", &addr.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a client process")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut h = Holder {
            child,
            stdin,
            stdout,
        };
        h.expect("ready")?;
        Ok(h)
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() != word {
            bail!("the client said {line:?}, not {word:?}");
        }
        Ok(())
    }

    fn close(&mut self, k: u32) -> Result<()> {
        writeln!(self.stdin, "close {k}")?;
        self.expect("closed")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// The client process: `hold ADDR N`.
fn hold(args: &[String]) -> Result<()> {
    let [addr, n] = args else {
        bail!("usage: hold ADDR N");
    };
    let addr: SocketAddr = addr.parse()?;
    let mut streams = (0..n.parse::<u32>()?)
        .map(|_| TcpStream::connect(addr))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    for line in std::io::stdin().lines() {
        let line = line?;
        let k: usize = line
            .strip_prefix("close ")
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| anyhow!("unknown command {line:?}"))?;
        streams.truncate(streams.len().saturating_sub(k));
        writeln!(out, "closed")?;
    }
    Ok(())
}

/// The pattern, the same for every hook:
/// - A holds 2 connections from before zkconn starts (seeded), then closes 1;
/// - B opens 5 and closes 2; C opens 3 and is killed (the kernel closes them);
/// - E holds 2 over IPv6 (`[::1]`), when the kernel has it;
/// - D holds 2 to a port zkconn does not watch: no row.
fn check_hook(hook: &str) -> Result<Outcome> {
    let v4 = listener("127.0.0.1:0".parse()?)?;
    let v6 = listener(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), v4.port())).ok();
    let other = listener("127.0.0.1:0".parse()?)?;
    let mut a = Holder::start(v4, 2)?;

    let mut zkconn = Command::new(zkconn_bin())
        .args([
            "snapshot",
            "--json",
            "--duration",
            "600",
            "-v",
            "--hook",
            hook,
        ])
        .args(["--port", &v4.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start zkconn (ZKCONN_BIN)")?;
    let out = zkconn.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let stdout = thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(out).read_to_string(&mut s);
        s
    });
    let err = zkconn.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_WITHIN;
    let mut said = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("ready:") => break,
            Ok(line) => said.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                kill_and_reap(&mut zkconn);
                said.extend(lines.try_iter());
                for line in &said {
                    eprintln!("zkconn --hook {hook}: {line}");
                }
                // zkconn's sentence follows its log lines; a verifier log may follow it.
                let start = said
                    .iter()
                    .position(|l| l.starts_with("zkconn: "))
                    .unwrap_or(said.len().saturating_sub(1));
                return Ok(Outcome::Refused(said[start..].join(" / ")));
            }
        }
    }

    let traffic = (|| -> Result<(Holder, Holder, Option<Holder>, u32)> {
        let mut b = Holder::start(v4, 5)?;
        b.close(2)?;
        let mut c = Holder::start(v4, 3)?;
        let c_pid = c.pid();
        kill_and_reap(&mut c.child);
        let e = v6.map(|addr| Holder::start(addr, 2)).transpose()?;
        let d = Holder::start(other, 2)?;
        a.close(1)?;
        Ok((b, d, e, c_pid))
    })();
    let (b, d, e, c_pid) = match traffic {
        Ok(t) => t,
        Err(e) => {
            kill_and_reap(&mut zkconn);
            return Err(e);
        }
    };
    let expected_open = 1 + 3 + if e.is_some() { 2 } else { 0 };
    wait_settled(v4.port(), expected_open);

    kill(&mut zkconn, libc::SIGINT);
    let status = zkconn.wait()?;
    let json = stdout.join().unwrap_or_default();
    if !status.success() {
        let rest: Vec<String> = lines.try_iter().collect();
        bail!("zkconn exited with {status}: {}", rest.join(" / "));
    }
    let snap: Value = serde_json::from_str(&json).context("zkconn printed no JSON")?;

    let mut mismatches = Vec::new();
    let mut expect = |what: String, got: &Value, want: Value| {
        if *got != want {
            mismatches.push(format!("{what} is {got}, not {want}"));
        }
    };
    let row = |pid: u32| {
        snap["processes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["pid"] == pid))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (name, pid, open, opened, closed, alive) in [
        ("A (seeded)", a.pid(), 1, 0, 1, true),
        ("B", b.pid(), 3, 5, 2, true),
        ("C (killed)", c_pid, 0, 3, 3, false),
    ] {
        let r = row(pid);
        expect(format!("{name} open"), &r["open"], open.into());
        expect(format!("{name} opened"), &r["opened"], opened.into());
        expect(format!("{name} closed"), &r["closed"], closed.into());
        expect(format!("{name} failed"), &r["failed"], 0.into());
        expect(format!("{name} alive"), &r["alive"], alive.into());
    }
    if let Some(e) = &e {
        let r = row(e.pid());
        expect("E (IPv6) open".into(), &r["open"], 2.into());
        expect("E (IPv6) opened".into(), &r["opened"], 2.into());
    }
    expect("D (unwatched port)".into(), &row(d.pid()), Value::Null);
    let server_open: u64 = snap["servers"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["open"].as_u64()).sum())
        .unwrap_or(0);
    expect(
        "servers' open".into(),
        &server_open.into(),
        expected_open.into(),
    );
    expect("lost".into(), &snap["probe"]["lost"], 0.into());
    expect("overflow".into(), &snap["probe"]["overflow"], 0.into());
    Ok(Outcome::Ran {
        reported: snap["probe"]["hook"].as_str().unwrap_or("?").to_owned(),
        mismatches,
    })
}

/// Waits (up to 30 s) until the watched port has exactly `open` established client
/// sockets and none closing, from /proc/net/tcp{,6}.
fn wait_settled(port: u16, open: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (established, other) = client_sockets(port);
        if established == open && other == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (established, in any other state) client sockets towards `port`.
fn client_sockets(port: u16) -> (usize, usize) {
    let mut counts = (0, 0);
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (f.get(2), f.get(3)) else {
                continue;
            };
            let rport = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if rport != Some(port) {
                continue;
            }
            // 01 ESTABLISHED; 06 TIME_WAIT is a closed socket's leftover, not a socket.
            match *state {
                "01" => counts.0 += 1,
                "06" => {}
                _ => counts.1 += 1,
            }
        }
    }
    counts
}
