//! Real clients as separate processes: the ZooKeeper Java library, plain TCP from Python, connections handed from one process to another.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    reap::{Reaped, kill_and_reap},
    zookeeper::{ZkServer, classpath},
};

/// A client process that prints `ready N` when connected and obeys `close K`.
pub struct Client {
    pub child: Reaped,
    pub(crate) stdin: Option<ChildStdin>,
    lines: BufReader<ChildStdout>,
}

impl Client {
    fn spawn(cmd: Command) -> anyhow::Result<Self> {
        let mut client = Self::start(cmd)?;
        client.wait_ready()?;
        Ok(client)
    }

    /// Waits for the client's `ready` line (after all its connects).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let line = self.read_line()?;
        if !line.starts_with("ready") {
            bail!("client failed: {line}");
        }
        Ok(())
    }

    pub(crate) fn start(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Client {
            child: Reaped::new(child),
            stdin,
            lines: BufReader::new(stdout),
        })
    }

    pub(crate) fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.lines.read_line(&mut line)?;
        if line.is_empty() {
            bail!("client exited");
        }
        Ok(line.trim().to_owned())
    }

    /// Plain TCP connections from a Python process: `threads` threads, `count` each.
    pub fn raw(
        server: SocketAddr,
        count: u32,
        threads: u32,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut opts = RawClient::new(server, count);
        opts.threads = threads;
        opts.cgroups.extend(cgroup.map(Path::to_path_buf));
        opts.spawn()
    }

    /// A connect that the server refuses (nothing listens there).
    pub fn refused(server: SocketAddr) -> anyhow::Result<Self> {
        RawClient {
            expect_refused: true,
            ..RawClient::new(server, 1)
        }
        .spawn()
    }

    /// Real ZooKeeper sessions through the official Java client library.
    pub fn java_sessions(server: &ZkServer, count: u32) -> anyhow::Result<Self> {
        Self::java_named(server, count, "ZkHolder", &[])
    }

    /// Real ZooKeeper sessions from a JVM whose main class is `main_class` (the holder
    /// compiled under that package and name), started with the system properties `props`:
    /// a process that looks exactly like, say, an HBase RegionServer to `ps` and `/proc`.
    pub fn java_named(
        server: &ZkServer,
        count: u32,
        main_class: &str,
        props: &[&str],
    ) -> anyhow::Result<Self> {
        Self::java_named_in(server, count, main_class, props, None)
    }

    /// The same, started inside the cgroup directory `cgroup` (v1 or v2): a shell joins it,
    /// then execs the JVM, so every connection is made from there and the pid is the JVM's.
    pub fn java_named_in(
        server: &ZkServer,
        count: u32,
        main_class: &str,
        props: &[&str],
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let classes = compiled_java_client(main_class)?;
        let mut cmd = match cgroup {
            Some(dir) => {
                let mut c = Command::new("sh");
                c.args(["-c", r#"echo $$ > "$0/cgroup.procs" && exec java "$@""#])
                    .arg(dir);
                c
            }
            None => Command::new("java"),
        };
        cmd.args(props)
            .args(["-Xmx64m", "-XX:+UseSerialGC", "-Xss512k", "-cp"])
            .arg(classpath(&classes))
            .arg(main_class)
            .arg(server.connect_string())
            .arg(count.to_string());
        Self::spawn(cmd)
    }

    /// `count` connections that are reconnected whenever the server closes them, as ZooKeeper
    /// client libraries do (`src/clients/reconnect_client.py`).
    pub fn reconnecting(server: SocketAddr, count: u32) -> anyhow::Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/reconnect_client.py"
        ))
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .args(["--count", &count.to_string()]);
        Self::spawn(cmd)
    }

    /// How many connections a reconnecting client holds now.
    pub fn connected(&mut self) -> anyhow::Result<u32> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        writeln!(stdin, "count")?;
        stdin.flush()?;
        let line = self.read_line()?;
        line.strip_prefix("count ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow!("unexpected reply {line:?}"))
    }

    pub fn close(&mut self, k: u32) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        writeln!(stdin, "close {k}")?;
        stdin.flush()?;
        let line = self.read_line()?;
        if line != "closed" {
            bail!("unexpected reply {line:?}");
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("pid {} did not exit within {within:?}", self.pid())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Connections made by one process and then held by another, the connector gone
/// (`src/clients/handoff_client.py`): `mode` is `fork` (a forked child keeps them) or
/// `unix` (sent over a Unix socket to a process that never connected).
pub struct Handoff {
    /// Talks to the holder (it inherited the connector's pipes).
    pub client: Client,
    pub connector: u32,
    pub holder: u32,
}

impl Handoff {
    pub fn start(server: SocketAddr, count: u32, mode: &str) -> anyhow::Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/handoff_client.py"
        ))
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .args(["--count", &count.to_string(), "--mode", mode]);
        let mut client = Client::start(cmd)?;
        let line = client.read_line()?;
        let holder = line
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("handoff client failed: {line}"))?;
        let connector = client.pid();
        // The connector exited by itself: reap it.
        client.wait_exit(Duration::from_secs(5))?;
        Ok(Self {
            client,
            connector,
            holder,
        })
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        // The holder is this test's own grandchild, alive until its stdin closes.
        // SAFETY: a plain signal to a pid this test started.
        unsafe { libc::kill(self.holder as i32, libc::SIGKILL) };
    }
}

/// Options of the Python client (`src/clients/raw_client.py`).
#[derive(Clone, Debug)]
pub struct RawClient {
    pub server: SocketAddr,
    /// Connections per thread.
    pub count: u32,
    pub threads: u32,
    /// cgroup directories (v1 or v2) the process joins before connecting.
    pub cgroups: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Exit this long after connecting, without closing anything first.
    pub exit_after: Option<Duration>,
    /// An argument that only marks the command line (for site rules).
    pub tag: Option<String>,
    /// Pause between connects (ZooKeeper's limit check lags behind quick bursts).
    pub interval: Option<Duration>,
    /// Send this on each connection and read the answer to EOF (a four-letter word).
    pub say: Option<String>,
    pub expect_refused: bool,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// Source address of every connection: another client host, as the server sees it.
    pub bind: Option<std::net::IpAddr>,
}

impl RawClient {
    pub fn new(server: SocketAddr, count: u32) -> Self {
        Self {
            server,
            count,
            threads: 1,
            cgroups: Vec::new(),
            env: Vec::new(),
            cwd: None,
            exit_after: None,
            tag: None,
            interval: None,
            say: None,
            expect_refused: false,
            netns: None,
            bind: None,
        }
    }

    /// Starts the client and waits until it has made all its connects.
    pub fn spawn(&self) -> anyhow::Result<Client> {
        Client::spawn(self.command())
    }

    /// Starts the client and returns at once (it goes on connecting at its `interval`).
    pub fn spawn_in_background(&self) -> anyhow::Result<Client> {
        Client::start(self.command())
    }

    fn command(&self) -> Command {
        // `ip netns exec` execs the client: the pid stays the client's.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/raw_client.py"
        ))
        .arg(self.server.ip().to_string())
        .arg(self.server.port().to_string())
        .args(["--count", &self.count.to_string()])
        .args(["--threads", &self.threads.to_string()]);
        for cg in &self.cgroups {
            cmd.arg("--cgroup").arg(cg);
        }
        if let Some(after) = self.exit_after {
            cmd.args(["--exit-after", &after.as_secs_f64().to_string()]);
        }
        if let Some(tag) = &self.tag {
            cmd.args(["--tag", tag]);
        }
        if let Some(interval) = self.interval {
            cmd.args(["--interval", &interval.as_secs_f64().to_string()]);
        }
        if let Some(say) = &self.say {
            cmd.args(["--say", say]);
        }
        if self.expect_refused {
            cmd.arg("--expect-refused");
        }
        if let Some(ip) = self.bind {
            cmd.args(["--bind", &ip.to_string()]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }
}

/// The holder compiled once per main class: `a.b.C` is ZkHolder.java placed in package
/// `a.b` and renamed `C`.
pub(crate) fn compiled_java_client(main_class: &str) -> anyhow::Result<PathBuf> {
    static DIRS: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut dirs = DIRS.lock().map_err(|_| anyhow!("poisoned"))?;
    if let Some((_, dir)) = dirs.iter().find(|(c, _)| c == main_class) {
        return Ok(dir.clone());
    }
    let (package, name) = match main_class.rsplit_once('.') {
        Some((p, n)) => (Some(p), n),
        None => (None, main_class),
    };
    let dir =
        std::env::temp_dir().join(format!("zkconn-java-{}-{}", std::process::id(), dirs.len()));
    let src_dir = dir.join("src");
    std::fs::create_dir_all(&src_dir)?;
    let holder = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/clients/ZkHolder.java"
    ))?;
    let mut source = holder.replace("public class ZkHolder", &format!("public class {name}"));
    if let Some(p) = package {
        source = format!("package {p};\n{source}");
    }
    let file = src_dir.join(format!("{name}.java"));
    std::fs::write(&file, source)?;
    let status = Command::new("javac")
        .arg("-d")
        .arg(&dir)
        .arg("-cp")
        .arg(classpath(&dir))
        .arg(&file)
        .status()
        .context("cannot run javac (cargo xtask setup installs it)")?;
    if !status.success() {
        bail!("javac failed on {}", file.display());
    }
    dirs.push((main_class.to_owned(), dir.clone()));
    Ok(dir)
}

/// Starts a process with `spawn` until it gets pid `pid` (through
/// `/proc/sys/kernel/ns_last_pid`): a pid reused on purpose. Other tests fork too, so a
/// few attempts may be needed; the misses are stopped.
///
/// `spawn` must return at once (`RawClient::spawn_in_background`): other processes and
/// threads of a busy machine take pids too, so it may take many cheap tries. The client
/// that got the pid is then waited for until it is ready.
pub fn spawn_with_pid(
    pid: u32,
    mut spawn: impl FnMut() -> anyhow::Result<Client>,
) -> anyhow::Result<Client> {
    for _ in 0..2000 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .context("cannot write /proc/sys/kernel/ns_last_pid (needs root)")?;
        let mut client = spawn()?;
        if client.pid() == pid {
            client.wait_ready()?;
            return Ok(client);
        }
    }
    bail!("could not get pid {pid} again in 2000 attempts")
}
