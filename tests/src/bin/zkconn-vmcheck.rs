//! The kernel matrix's check: `cargo xtask vm-test` runs it on this host and inside each
//! kernel it boots under qemu. For every hook named on the command line it starts zkconn
//! against plain TCP listeners (a ZooKeeper JVM is too slow under software emulation) with a
//! known traffic pattern, and prints one `zkconn-vm: {JSON}` line per hook: whether the hook
//! attached, which hook zkconn reported, and whether every count was exact (else what
//! differed). `cargo xtask vm-test` reads the JSON back (`xtask/src/vm.rs`, `HookLine`).
//!
//! Usage: `ZKCONN_BIN=PATH zkconn-vmcheck [--mode NAME --caps CAP,... --memlock BYTES|infinity
//! --fallback F,...] HOOK...`; `hold ADDR N` is its own client process. With `--caps`, zkconn runs as a
//! systemd unit would run it: root with only those capabilities in its bounding set, no new
//! privileges, and that locked-memory limit (soft and hard). Root only. Every process it
//! starts is stopped before it moves to the next hook.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use integration_tests::{
    kill, kill_and_reap, limits::UnitLimits, read_all, stderr_lines, wait_ready, zkconn_bin,
};
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
    let (limits, hooks) = match Limits::parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("zkconn-vmcheck: {e:#}");
            return ExitCode::from(2);
        }
    };
    if hooks.is_empty() {
        eprintln!(
            "usage: ZKCONN_BIN=PATH zkconn-vmcheck [--mode NAME --caps CAP,... --memlock \
             BYTES|infinity] HOOK..."
        );
        return ExitCode::from(2);
    }
    for hook in hooks {
        let line = match check_hook_twice(hook, &limits) {
            Ok(outcome) => outcome.line(&limits.mode, hook),
            Err(e) => serde_json::json!({
                "mode": limits.mode,
                "hook": hook,
                "error": format!("{e:#}"),
            }),
        };
        println!("zkconn-vm: {line}");
    }
    ExitCode::SUCCESS
}

/// How zkconn is started: as full root, or within a unit's limits.
struct Limits {
    mode: String,
    unit: UnitLimits,
    /// zkconn's `--fallback`, if any.
    fallback: Option<String>,
}

impl Limits {
    fn parse(args: &[String]) -> Result<(Self, &[String])> {
        let mut limits = Limits {
            mode: "root".to_owned(),
            unit: UnitLimits::default(),
            fallback: None,
        };
        let mut rest = args;
        while let [flag, value, tail @ ..] = rest {
            match flag.as_str() {
                "--mode" => limits.mode.clone_from(value),
                "--caps" => limits.unit.caps = Some(UnitLimits::caps_from(value)?),
                "--memlock" => limits.unit.memlock = Some(UnitLimits::memlock_from(value)?),
                "--fallback" => limits.fallback = Some(value.clone()),
                _ => break,
            }
            rest = tail;
        }
        Ok((limits, rest))
    }
}

/// What one hook's run showed.
enum Outcome {
    Refused(String),
    Ran {
        reported: String,
        /// The capabilities zkconn kept after attach, `+`-joined.
        kept: String,
        mismatches: Vec<String>,
        /// Program runs the kernel skipped (`probe.lost_detail.recursion_misses`).
        skipped: u64,
        /// Why this is a second run: what the first one got wrong after the kernel skipped
        /// program runs.
        retried: Option<String>,
    },
}

/// Checks `hook`; once more when counts differed, and says so with the first run's
/// differences (the matrix shows them). Two causes are known: the kernel skipped program
/// runs (a softirq run nested in another on one CPU: a documented limit, not zkconn's
/// miscount), and, rarely and not yet explained, one close of a killed process missing
/// under the classic tracepoint with every fallback (docs/kernels.md). A second miss is a
/// miss.
fn check_hook_twice(hook: &str, limits: &Limits) -> Result<Outcome> {
    let first = check_hook(hook, limits)?;
    let Outcome::Ran {
        mismatches,
        skipped,
        ..
    } = &first
    else {
        return Ok(first);
    };
    if mismatches.is_empty() {
        return Ok(first);
    }
    let why = format!(
        "first run: {}; the kernel skipped {skipped} program runs",
        mismatches.join("; ")
    );
    eprintln!("zkconn-vmcheck: --hook {hook} not exact on a first run ({why}); checking again");
    Ok(match check_hook(hook, limits)? {
        Outcome::Ran {
            reported,
            kept,
            mismatches,
            skipped,
            retried: _,
        } => Outcome::Ran {
            reported,
            kept,
            mismatches,
            skipped,
            retried: Some(why),
        },
        refused => refused,
    })
}

impl Outcome {
    /// The JSON object of one `zkconn-vm:` line (one line: JSON escapes newlines).
    fn line(&self, mode: &str, hook: &str) -> serde_json::Value {
        match self {
            Outcome::Refused(why) => serde_json::json!({
                "mode": mode,
                "hook": hook,
                "attached": false,
                "reason": why,
            }),
            Outcome::Ran {
                reported,
                kept,
                mismatches,
                skipped,
                retried,
            } => serde_json::json!({
                "mode": mode,
                "hook": hook,
                "attached": true,
                "reported": reported,
                "kept": kept,
                "exact": mismatches.is_empty(),
                "differences": mismatches,
                "skipped": skipped,
                "retried": retried,
            }),
        }
    }
}

/// What a listener does with each connection it accepts.
#[derive(Clone, Copy)]
enum Server {
    /// Reads until the client closes, then closes too.
    Serve,
    /// Resets it at once without sending a byte: ZooKeeper's refusal of a host over
    /// `maxClientCnxns`.
    Refuse,
    /// Sends one byte and closes: the client, keeping its socket, sits in CLOSE_WAIT.
    AnswerAndClose,
}

fn listener(addr: SocketAddr, server: Server) -> Result<SocketAddr> {
    let l = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = l.local_addr()?;
    thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            match server {
                Server::Serve => {
                    thread::spawn(move || {
                        let mut buf = [0u8; 64];
                        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    });
                }
                Server::Refuse => {
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                }
                Server::AnswerAndClose => {
                    let _ = s.write_all(b"x");
                }
            }
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
        Self::spawn(addr, n, "must-connect")
    }

    /// Like `start`, but connects that fail are fine (a port nobody listens on).
    fn attempt(addr: SocketAddr, n: u32) -> Result<Self> {
        Self::spawn(addr, n, "may-fail")
    }

    fn spawn(addr: SocketAddr, n: u32, mode: &str) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["hold", &addr.to_string(), &n.to_string(), mode])
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

/// The client process: `hold ADDR N must-connect|may-fail`.
fn hold(args: &[String]) -> Result<()> {
    let [addr, n, mode] = args else {
        bail!("usage: hold ADDR N must-connect|may-fail");
    };
    let addr: SocketAddr = addr.parse()?;
    let mut streams = Vec::new();
    for _ in 0..n.parse::<u32>()? {
        match TcpStream::connect(addr) {
            Ok(s) => streams.push(s),
            Err(_) if mode == "may-fail" => {}
            Err(e) => return Err(e.into()),
        }
    }
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
/// - F is refused twice (reset right after the handshake, as ZooKeeper refuses);
/// - G gets an answer and the server's close twice, and keeps both sockets (CLOSE_WAIT);
/// - H tries 2 connects to a port nobody listens on (failed);
/// - D holds 2 to a port zkconn does not watch: no row.
fn check_hook(hook: &str, limits: &Limits) -> Result<Outcome> {
    let any = "127.0.0.1:0".parse()?;
    let v4 = listener(any, Server::Serve)?;
    let v6 = listener(
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), v4.port()),
        Server::Serve,
    )
    .ok();
    let refusing = listener(any, Server::Refuse)?;
    let closing = listener(any, Server::AnswerAndClose)?;
    let nobody = TcpListener::bind(any)?.local_addr()?;
    let other = listener(any, Server::Serve)?;
    let watched = [v4, refusing, closing, nobody].map(|a| a.port());
    let mut a = Holder::start(v4, 2)?;

    let mut cmd = Command::new(zkconn_bin());
    limits.unit.apply(&mut cmd);
    let mut zkconn = cmd
        .args([
            "snapshot",
            "--json",
            "--duration",
            "600",
            "-v",
            "--hook",
            hook,
        ])
        .args(["--port", &watched.map(|p| p.to_string()).join(",")])
        .args(
            limits
                .fallback
                .iter()
                .flat_map(|f| ["--fallback".to_owned(), f.clone()]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start zkconn (ZKCONN_BIN)")?;
    let stdout = read_all(zkconn.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let lines = stderr_lines(zkconn.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
    if let Err(mut said) = wait_ready(&lines, READY_WITHIN) {
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

    let traffic = (|| -> Result<(Vec<Holder>, Option<Holder>, u32)> {
        let mut b = Holder::start(v4, 5)?;
        b.close(2)?;
        let mut c = Holder::start(v4, 3)?;
        let c_pid = c.pid();
        kill_and_reap(&mut c.child);
        let e = v6.map(|addr| Holder::start(addr, 2)).transpose()?;
        // A reset that lands before connect() returns makes it fail: counted all the same.
        let f = Holder::attempt(refusing, 2)?;
        let g = Holder::start(closing, 2)?;
        let h = Holder::attempt(nobody, 2)?;
        let d = Holder::start(other, 2)?;
        a.close(1)?;
        Ok((vec![b, d, f, g, h], e, c_pid))
    })();
    let (holders, e, c_pid) = match traffic {
        Ok(t) => t,
        Err(e) => {
            kill_and_reap(&mut zkconn);
            return Err(e);
        }
    };
    let [b, d, f, g, h] = holders.as_slice() else {
        bail!("five client processes expected");
    };
    let expected_open = 1 + 3 + if e.is_some() { 2 } else { 0 };
    wait_settled(&watched, expected_open, 2);
    // A closing socket shows in /proc as TIME_WAIT (its timewait entry is hashed) a moment
    // before the socket itself reaches TCP_CLOSE (`tcp_time_wait` → `tcp_done`), which is
    // where zkconn counts the close; under software emulation that moment can outlast the
    // check's own reaction (an arm64 guest, emulated on two busy host cores, once took over
    // half a second). Let it pass before the final snapshot.
    thread::sleep(Duration::from_secs(2));

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
    // open, opened, closed, failed, rejected, close_wait, alive
    for (name, pid, want) in [
        ("A (seeded)", a.pid(), [1, 0, 1, 0, 0, 0, 1]),
        ("B", b.pid(), [3, 5, 2, 0, 0, 0, 1]),
        ("C (killed)", c_pid, [0, 3, 3, 0, 0, 0, 0]),
        ("F (refused)", f.pid(), [0, 2, 2, 0, 2, 0, 1]),
        ("G (CLOSE_WAIT)", g.pid(), [0, 2, 0, 0, 0, 2, 1]),
        ("H (nobody listens)", h.pid(), [0, 2, 0, 2, 0, 0, 1]),
    ] {
        let r = row(pid);
        let fields = [
            "open",
            "opened",
            "closed",
            "failed",
            "rejected",
            "close_wait",
        ];
        for (field, want) in fields.into_iter().zip(want) {
            expect(format!("{name} {field}"), &r[field], want.into());
        }
        expect(format!("{name} alive"), &r["alive"], (want[6] == 1).into());
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
    // The listeners' side of the same connections (they are on this host): per listener,
    // client 127.0.0.1 (::1 for E). The plain listener never writes, so what it let go it
    // never answered; the refusing one aborts unread connections at once.
    let client_row = |listener: SocketAddr| {
        snap["clients"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["listener"] == listener.to_string()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // open, seeded, opened, closed, rejected, unanswered
    let mut sides = vec![
        ("listener of A, B, C", v4, [4, 1, 8, 6, 0, 6]),
        ("refusing listener", refusing, [0, 0, 2, 2, 2, 0]),
        ("answering listener", closing, [0, 0, 2, 2, 0, 0]),
    ];
    if let (Some(addr), Some(_)) = (v6, &e) {
        sides.push(("IPv6 listener", addr, [2, 0, 2, 0, 0, 0]));
    }
    for (name, listener, want) in sides {
        let r = client_row(listener);
        let fields = [
            "open",
            "seeded",
            "opened",
            "closed",
            "rejected",
            "unanswered",
        ];
        for (field, want) in fields.into_iter().zip(want) {
            expect(format!("{name} {field}"), &r[field], want.into());
        }
    }
    expect(
        "server's side followed".into(),
        &snap["probe"]["server_side"]["followed"],
        true.into(),
    );
    // Events the ring buffer dropped would mean missing detail. Program runs the kernel
    // skipped (recursion misses: a softirq run nested in another on the same CPU, frequent
    // under software emulation) are not required to be 0: a skipped run that mattered shows
    // in the exact counts above.
    expect(
        "lost events".into(),
        &snap["probe"]["lost_detail"]["events"],
        0.into(),
    );
    expect("overflow".into(), &snap["probe"]["overflow"], 0.into());
    let wanted_events = if limits
        .fallback
        .iter()
        .flat_map(|f| f.split(','))
        .any(|f| f == "perf-buffer")
    {
        "perf-buffer"
    } else {
        "ring-buffer"
    };
    expect(
        "events path".into(),
        &snap["probe"]["events"],
        wanted_events.into(),
    );
    // Counts come from maps; events carry the names of new processes and the refusals.
    // Each of B, C, E, F, G and H is a new process that connects (one event each), and F is
    // refused twice: at least 8 events must have arrived, through whichever buffer is in use.
    let received = snap["probe"]["events_received"].as_u64().unwrap_or(0);
    if received < 8 {
        mismatches.push(format!(
            "{received} kernel events arrived through the {}, not at least 8",
            snap["probe"]["events"]
        ));
    }
    // A forced fallback must be in use, and said so.
    for f in limits.fallback.iter().flat_map(|f| f.split(',')) {
        let used = snap["probe"]["fallbacks"]
            .as_array()
            .is_some_and(|all| all.iter().any(|u| u["fallback"] == f));
        if !used {
            mismatches.push(format!("fallback {f} is not in probe.fallbacks"));
        }
    }
    let kept = snap["probe"]["capabilities"]["kept"]
        .as_array()
        .map(|caps| {
            caps.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("+")
        })
        .unwrap_or_default();
    Ok(Outcome::Ran {
        reported: snap["probe"]["hook"].as_str().unwrap_or("?").to_owned(),
        kept: if kept.is_empty() {
            "none".to_owned()
        } else {
            kept
        },
        mismatches,
        skipped: snap["probe"]["lost_detail"]["recursion_misses"]
            .as_u64()
            .unwrap_or(0),
        retried: None,
    })
}

/// Waits (up to 30 s) until the client sockets towards `ports` are exactly `open`
/// established and `close_wait` in CLOSE_WAIT, none in between, from /proc/net/tcp{,6}.
fn wait_settled(ports: &[u16], open: usize, close_wait: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client_sockets(ports) == (open, close_wait, 0) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// (established, CLOSE_WAIT, any other state) client sockets towards `ports`.
fn client_sockets(ports: &[u16]) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
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
            if !rport.is_some_and(|p| ports.contains(&p)) {
                continue;
            }
            // 01 ESTABLISHED, 08 CLOSE_WAIT; 06 TIME_WAIT is a closed socket's leftover.
            match *state {
                "01" => counts.0 += 1,
                "08" => counts.1 += 1,
                "06" => {}
                _ => counts.2 += 1,
            }
        }
    }
    counts
}
