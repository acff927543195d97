//! `cargo xtask bench`: zkconn's cost and exactness, measured side by side, printed as
//! tables and written to docs/benchmarks.md. Root only (it attaches zkconn and tcplife).
//!
//! Every figure comes from interleaved rounds (no tracer, zkconn, tcplife, again...), so
//! slow drift of the machine hits all of them alike; medians and the spread are reported.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{fresh_ipv4, zkconn_bin};

const CONNECTIONS: u64 = 200_000;
const ROUNDS: usize = 5;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        // Internal: a worker process of the churn benchmark.
        Some("churn-worker") => churn_worker(&args[2..]),
        Some("hold-worker") => hold_worker(&args[2..]),
        Some(out) => run(out),
        None => Err(anyhow::anyhow!("usage: zkconn-bench OUTPUT.md")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zkconn-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A listener that accepts and drops, on its own threads, until the process ends.
fn listener() -> Result<SocketAddr> {
    let ip = fresh_ipv4();
    let l = TcpListener::bind((ip, 0))?;
    let addr = l.local_addr()?;
    let l = Arc::new(l);
    for _ in 0..2 {
        let l = l.clone();
        thread::spawn(move || {
            while let Ok((s, _)) = l.accept() {
                drop(s);
            }
        });
    }
    Ok(addr)
}

/// One connect and an abortive close (no TIME_WAIT, so ports never run out).
fn connect_close(addr: SocketAddr) -> Result<()> {
    let s = TcpStream::connect(addr)?;
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// `n` connects/closes over one worker thread per CPU; connections per second.
fn connect_loop(addr: SocketAddr, n: u64) -> Result<f64> {
    let workers = thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            thread::spawn(move || -> Result<()> {
                for _ in 0..n / workers {
                    connect_close(addr)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok((n / workers * workers) as f64 / start.elapsed().as_secs_f64())
}

/// A tracer running in the background.
struct Tracer(Child);

impl Tracer {
    /// `zkconn snapshot` watching `port`, once its hooks are live.
    fn zkconn(port: u16) -> Result<Self> {
        let mut child = Command::new(zkconn_bin())
            .args([
                "snapshot",
                "--duration",
                "3600",
                "-v",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start zkconn")?;
        let err = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(err).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("ready:") => break,
                Some(Ok(_)) => {}
                _ => bail!("zkconn did not become ready"),
            }
        }
        thread::spawn(move || lines.for_each(drop));
        Ok(Self(child))
    }

    /// libbpf-tools' tcplife for remote `port`, after it had time to attach.
    fn tcplife(port: u16) -> Result<Self> {
        let child = Command::new("tcplife")
            .args(["-D", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tcplife (Debian's libbpf-tools)")?;
        thread::sleep(Duration::from_secs(2));
        Ok(Self(child))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on a child this benchmark started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.0.wait();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median and spread (min–max) of each mode's throughput over interleaved rounds.
fn overhead(
    addr: SocketAddr,
    watched: bool,
    with_tcplife: bool,
) -> Result<Vec<(String, f64, f64, f64)>> {
    let watch_port = if watched {
        addr.port()
    } else {
        addr.port() + 1
    };
    let mut modes: Vec<(&str, Vec<f64>)> = vec![("no tracer", Vec::new()), ("zkconn", Vec::new())];
    if with_tcplife {
        modes.push(("tcplife", Vec::new()));
    }
    connect_loop(addr, 20_000)?; // warm-up
    for round in 0..ROUNDS {
        for (name, results) in &mut modes {
            let _tracer = match *name {
                "zkconn" => Some(Tracer::zkconn(watch_port)?),
                "tcplife" => Some(Tracer::tcplife(addr.port())?),
                _ => None,
            };
            let rate = connect_loop(addr, CONNECTIONS)?;
            eprintln!("  round {} {name}: {rate:.0} connections/s", round + 1);
            results.push(rate);
        }
    }
    let base = median(&mut modes[0].1.clone());
    Ok(modes
        .into_iter()
        .map(|(name, mut r)| {
            let m = median(&mut r);
            let (lo, hi) = (r[0], r[r.len() - 1]);
            (
                name.to_owned(),
                m,
                (base - m) / base * 100.0,
                (hi - lo) / m * 100.0,
            )
        })
        .collect())
}

/// Internal: `churn-worker ADDR N`: N connects/closes.
fn churn_worker(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args.first().context("addr")?.parse()?;
    let n: u64 = args.get(1).context("n")?.parse()?;
    for _ in 0..n {
        connect_close(addr)?;
    }
    Ok(())
}

/// Internal: `hold-worker ADDR N`: holds N connections until stdin closes.
fn hold_worker(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args.first().context("addr")?.parse()?;
    let n: usize = args.get(1).context("n")?.parse()?;
    let held: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr))
        .collect::<Result<_, _>>()?;
    println!("ready {}", held.len());
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// Processes holding `per` connections each; returned once all are connected.
fn holders(addr: SocketAddr, processes: usize, per: usize) -> Result<Vec<Child>> {
    let me = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut c = Command::new(&me)
            .args(["hold-worker", &addr.to_string(), &per.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().context("stdout")?).read_line(&mut line)?;
        if !line.starts_with("ready") {
            bail!("a holder failed: {line}");
        }
        children.push(c);
    }
    Ok(children)
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn snapshot_json(args: &[&str]) -> Result<(serde_json::Value, Duration)> {
    let start = Instant::now();
    let out = Command::new(zkconn_bin()).args(args).output()?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("zkconn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((serde_json::from_slice(&out.stdout)?, took))
}

/// ≥1,000,000 connections churned by 50 processes while 10,000 stay open.
fn exactness(addr: SocketAddr) -> Result<String> {
    let held = holders(addr, 10, 1000)?;
    let port = addr.port().to_string();
    let mut z = Command::new(zkconn_bin())
        .args([
            "snapshot",
            "--json",
            "--duration",
            "3600",
            "-v",
            "--port",
            &port,
        ])
        .args(["--max-connections", "65536"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let err = z.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(err).lines();
    while let Some(Ok(l)) = lines.next() {
        if l.contains("ready:") {
            break;
        }
    }
    thread::spawn(move || lines.for_each(drop));
    let me = std::env::current_exe()?;
    let start = Instant::now();
    let workers: Vec<Child> = (0..50)
        .map(|_| {
            Command::new(&me)
                .args(["churn-worker", &addr.to_string(), "20000"])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let pids: Vec<u32> = workers.iter().map(Child::id).collect();
    for mut w in workers {
        if !w.wait()?.success() {
            bail!("a churn worker failed");
        }
    }
    let churn = start.elapsed();
    let truth = Command::new("ss")
        .args(["-Htn", "state", "established", "dst", &addr.to_string()])
        .output()?;
    let ss_open = String::from_utf8_lossy(&truth.stdout).lines().count();
    // SAFETY: kill(2) on the zkconn this benchmark started.
    unsafe { libc::kill(z.id() as i32, libc::SIGINT) };
    let out = z.wait_with_output()?;
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    stop(held);
    let procs = snap["processes"].as_array().cloned().unwrap_or_default();
    let mut exact = 0;
    for pid in &pids {
        let row = procs.iter().find(|p| p["pid"] == *pid);
        if row.is_some_and(|r| r["opened"] == 20_000 && r["open"] == 0) {
            exact += 1;
        }
    }
    let open: u64 = procs.iter().filter_map(|p| p["open"].as_u64()).sum();
    let mut s = String::new();
    writeln!(s, "| measure | zkconn | truth |")?;
    writeln!(s, "|---|---|---|")?;
    writeln!(
        s,
        "| connections churned | {} | 1,000,000 |",
        procs
            .iter()
            .filter(|p| pids.contains(&(p["pid"].as_u64().unwrap_or(0) as u32)))
            .filter_map(|p| p["opened"].as_u64())
            .sum::<u64>()
    )?;
    writeln!(
        s,
        "| churners with exactly 20,000 opened and 0 open | {exact} | 50 |"
    )?;
    writeln!(s, "| open at the end | {open} | {ss_open} (`ss`) |")?;
    writeln!(s, "| lost | {} | 0 |", snap["probe"]["lost"])?;
    writeln!(s, "| overflow | {} | 0 |", snap["probe"]["overflow"])?;
    writeln!(
        s,
        "\nChurn took {:.1} s ({:.0} connections/s).",
        churn.as_secs_f64(),
        1e6 / churn.as_secs_f64()
    )?;
    Ok(s)
}

/// Start-up with 10,000 connections held by 100 processes: zkconn's first snapshot next to
/// `ss -tnp`.
fn startup(addr: SocketAddr) -> Result<String> {
    let held = holders(addr, 100, 100)?;
    let port = addr.port().to_string();
    let mut z = Vec::new();
    let mut ss = Vec::new();
    let mut correct = true;
    for _ in 0..ROUNDS {
        let (snap, took) = snapshot_json(&["snapshot", "--json", "--port", &port])?;
        let open: u64 = snap["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["open"].as_u64())
            .sum();
        correct &= open == 10_000;
        z.push(took.as_secs_f64());
        let start = Instant::now();
        Command::new("ss")
            .args(["-tnp"])
            .stdout(Stdio::null())
            .status()?;
        ss.push(start.elapsed().as_secs_f64());
    }
    stop(held);
    Ok(format!(
        "| tool | median | min–max | result |\n|---|---|---|---|\n\
         | `zkconn snapshot --json` (attach, seed, snapshot, detach) | {:.2} s | {:.2}–{:.2} s | {} |\n\
         | `ss -tnp` | {:.2} s | {:.2}–{:.2} s | a listing, no owners' classification |\n",
        median(&mut z.clone()),
        z.iter().copied().fold(f64::MAX, f64::min),
        z.iter().copied().fold(0.0, f64::max),
        if correct {
            "10,000 open, exact"
        } else {
            "NOT exact"
        },
        median(&mut ss.clone()),
        ss.iter().copied().fold(f64::MAX, f64::min),
        ss.iter().copied().fold(0.0, f64::max),
    ))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} CPUs ({cpu}), Linux {}", kernel.trim())
}

fn run(out: &str) -> Result<()> {
    let addr = listener()?;
    let mut doc = String::new();
    writeln!(doc, "# Benchmarks\n")?;
    writeln!(
        doc,
        "Measured by `cargo xtask bench` (as root; it writes this file). Machine: {}.\n",
        machine()
    )?;

    eprintln!("zkconn-bench: overhead on a watched port");
    let watched = overhead(addr, true, true)?;
    eprintln!("zkconn-bench: overhead on a port zkconn does not watch");
    let unwatched = overhead(addr, false, false)?;
    let table = |rows: &[(String, f64, f64, f64)]| {
        let mut s = String::from(
            "| tracer | connections/s (median) | cost | spread (min–max) |\n|---|---|---|---|\n",
        );
        for (name, m, cost, spread) in rows {
            let _ = writeln!(s, "| {name} | {m:.0} | {cost:+.1} % | {spread:.1} % |");
        }
        s
    };
    writeln!(doc, "## Probe overhead on connect-heavy work\n")?;
    writeln!(
        doc,
        "{CONNECTIONS} connect/close pairs per run (abortive close, so no TIME_WAIT), one worker thread per CPU, against a local listener on the watched port; {ROUNDS} interleaved rounds. tcplife is libbpf-tools' (Debian's package), filtered to the same remote port in the kernel (`-D`).\n"
    )?;
    writeln!(doc, "{}", table(&watched))?;
    writeln!(doc, "## Cost on traffic that is not ZooKeeper's\n")?;
    writeln!(doc, "The same loop while zkconn watches another port.\n")?;
    writeln!(doc, "{}", table(&unwatched))?;
    eprintln!("zkconn-bench: exactness at scale");
    writeln!(doc, "## Exactness at scale\n")?;
    writeln!(
        doc,
        "50 processes churn 20,000 connections each (1,000,000) while 10 processes hold 10,000 open; zkconn observes throughout.\n"
    )?;
    writeln!(doc, "{}", exactness(addr)?)?;
    eprintln!("zkconn-bench: start-up");
    writeln!(doc, "## Start-up\n")?;
    writeln!(
        doc,
        "10,000 connections that exist before start, held by 100 processes; {ROUNDS} runs each.\n"
    )?;
    writeln!(doc, "{}", startup(addr)?)?;
    writeln!(doc, "## Not measured yet\n")?;
    writeln!(
        doc,
        "The daemon's CPU and memory at a steady connect rate, and snapshot cost at 1k/10k/100k tracked connections, are not part of this benchmark yet."
    )?;
    std::fs::write(out, &doc)?;
    println!("{doc}");
    Ok(())
}
