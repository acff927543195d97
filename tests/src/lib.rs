//! Helpers for zkconn's root integration tests: a real ZooKeeper server per test on its own
//! 127.x address and free port, real clients (the ZooKeeper Java library, plain TCP from
//! Python) as separate processes, real cgroup v2 groups, and the real `zkconn` binary.
//! Every process a helper starts is killed by pid and reaped when the helper is dropped.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

pub mod edge;
pub mod limits;

const JARS: &[&str] = &[
    "zookeeper.jar",
    "zookeeper-jute.jar",
    "slf4j-api.jar",
    "slf4j-nop.jar",
    "netty-handler.jar",
    "netty-common.jar",
    "netty-buffer.jar",
    "netty-transport.jar",
    "netty-codec.jar",
    "netty-resolver.jar",
    "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar",
    "metrics-core.jar",
    "snappy-java.jar",
    "commons-cli.jar",
];

fn classpath(extra: &Path) -> String {
    let mut parts = vec![extra.display().to_string()];
    parts.extend(JARS.iter().map(|j| format!("/usr/share/java/{j}")));
    parts.join(":")
}

/// A fresh loopback address for this test: 127.<77>.<pid>.<n>, never shared.
pub fn fresh_ipv4() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(2);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    IpAddr::from([127, 77, (pid % 250) as u8 + 1, (n % 250) as u8 + 2])
}

pub fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// SIGKILL, then wait for it, so nothing a test started outlives it.
pub fn kill_and_reap(child: &mut Child) {
    kill(child, libc::SIGKILL);
    let _ = child.wait();
}

/// Sends `signal` to a child this process started and has not reaped.
pub fn kill(child: &mut Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A standalone ZooKeeper 3.8 server from Debian's package.
pub struct ZkServer {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    props: Vec<String>,
    probe_src: Option<IpAddr>,
    /// The network namespace the server runs in (`ip netns exec`), if not this one.
    netns: Option<String>,
}

impl ZkServer {
    /// Starts a server on `ip` with `maxClientCnxns` and extra JVM system properties.
    pub fn start(ip: IpAddr, max_client_cnxns: u32, props: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(None, ip, max_client_cnxns, props)
    }

    /// As [`ZkServer::start`], inside network namespace `netns` (on one of its addresses,
    /// reached from here by routing: its readiness probe comes from this namespace's own
    /// address on that route).
    pub fn start_in(
        netns: Option<&str>,
        ip: IpAddr,
        max_client_cnxns: u32,
        props: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // In another namespace `ip` is not an address here; any free port will do there.
        let port = free_port(if netns.is_some() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        })?;
        let host = match ip {
            IpAddr::V6(v6) => format!("{v6}"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress={host}\n\
                 maxClientCnxns={max_client_cnxns}\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=srvr,mntr,cons\n",
                dir.path().join("data").display()
            ),
        )?;
        let props: Vec<String> = props.iter().map(|p| (*p).to_owned()).collect();
        let netns = netns.map(str::to_owned);
        let child = Self::spawn_jvm(dir.path(), &props, netns.as_deref())?;
        let mut server = ZkServer {
            addr: SocketAddr::new(ip, port),
            child,
            dir,
            props,
            probe_src: (ip.is_ipv4() && netns.is_none()).then(fresh_ipv4),
            netns,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn_jvm(dir: &Path, props: &[String], netns: Option<&str>) -> anyhow::Result<Child> {
        let mut cmd = match netns {
            // `ip netns exec` execs java: the child's pid is the JVM's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "java"]);
                c
            }
            None => Command::new("java"),
        };
        cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-Xss512k"])
            // The raw test clients never start a session; the NIO listener would otherwise
            // close such connections after 10 s.
            .arg("-Dzookeeper.nio.sessionlessCnxnTimeout=3600000")
            .args(props)
            .arg("-cp")
            .arg(classpath(dir))
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(dir.join("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start java (install Debian's zookeeper: cargo xtask setup)")
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ready_probe().is_ok_and(|s| s.contains("Mode:")) {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("ZooKeeper on {} did not come up within 60 s", self.addr)
    }

    /// Kills the server (SIGKILL, as a crash) and starts it again on the same address and
    /// data; returns once it serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        kill_and_reap(&mut self.child);
        self.child = Self::spawn_jvm(self.dir.path(), &self.props, self.netns.as_deref())?;
        self.wait_ready()
    }

    /// The server's JVM.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the server's JVM (SIGSTOP pauses it as a long GC pause would).
    pub fn signal(&mut self, signal: i32) {
        kill(&mut self.child, signal);
    }

    /// The connect string for this server.
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn four_letter(&self, word: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        Self::exchange(&mut s, word)
    }

    /// A four-letter word asked from source address `src`: a host at its limit has its own
    /// questions refused, so ask as another client host.
    pub fn four_letter_from(&self, src: IpAddr, word: &str) -> anyhow::Result<String> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let sock = Socket::new(Domain::for_address(self.addr), Type::STREAM, None)?;
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .with_context(|| format!("cannot bind to {src}"))?;
        sock.connect_timeout(&SockAddr::from(self.addr), Duration::from_secs(2))?;
        Self::exchange(&mut TcpStream::from(sock), word)
    }

    /// The server's own count of refused connections (`zk_connection_rejected` in `mntr`),
    /// asked from `src`.
    pub fn connection_rejected(&self, src: IpAddr) -> anyhow::Result<u64> {
        let mntr = self.four_letter_from(src, "mntr")?;
        mntr.lines()
            .find_map(|l| l.strip_prefix("zk_connection_rejected\t"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no zk_connection_rejected in mntr: {mntr}"))
    }

    /// The server's own count of live connections (`zk_num_alive_connections` in `mntr`),
    /// asked from `src`, less the asking connection itself.
    pub fn alive_connections(&self, src: IpAddr) -> anyhow::Result<u64> {
        let mntr = self.four_letter_from(src, "mntr")?;
        mntr.lines()
            .find_map(|l| l.strip_prefix("zk_num_alive_connections\t"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|n| n.saturating_sub(1))
            .ok_or_else(|| anyhow!("no zk_num_alive_connections in mntr: {mntr}"))
    }

    /// `srvr`, waiting as long as the server takes to answer: a client that gave up first
    /// would leave a FIN-WAIT-2 socket behind that tests waiting for quiet sockets trip on.
    /// `srvr` from an address of its own (never 127.0.0.1, which the tests' clients use:
    /// the probe must not count in their rows or against their limit).
    fn ready_probe(&self) -> anyhow::Result<String> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let sock = Socket::new(Domain::for_address(self.addr), Type::STREAM, None)?;
        if let Some(src) = self.probe_src {
            sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        sock.connect_timeout(&SockAddr::from(self.addr), Duration::from_secs(2))?;
        let mut s = TcpStream::from(sock);
        // A server still starting may accept and never answer nor close: read briefly (the
        // caller retries), and close with a reset, so no half-closed socket lingers for
        // `wait_settled` to wait on.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"srvr")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn exchange(s: &mut TcpStream, word: &str) -> anyhow::Result<String> {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(word.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A client process that prints `ready N` when connected and obeys `close K`.
pub struct Client {
    pub child: Child,
    stdin: Option<ChildStdin>,
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

    fn start(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Client {
            child,
            stdin,
            lines: BufReader::new(stdout),
        })
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
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

impl Drop for Client {
    fn drop(&mut self) {
        self.kill();
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
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }
}

/// The holder compiled once per main class: `a.b.C` is ZkHolder.java placed in package
/// `a.b` and renamed `C`.
fn compiled_java_client(main_class: &str) -> anyhow::Result<PathBuf> {
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

/// A cgroup (v2, or one v1 hierarchy), removed on drop with every directory created for
/// it (after its processes are gone).
pub struct Cgroup {
    /// The group's directory.
    pub path: PathBuf,
    /// Its path inside the hierarchy, as `/proc/PID/cgroup` shows it.
    pub rel: String,
    created: Vec<PathBuf>,
}

impl Cgroup {
    /// `/zkconn-test-<pid>-<name>` in the cgroup v2 hierarchy.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        Self::v2(&format!("/zkconn-test-{}-{name}", std::process::id()))
    }

    /// `rel` (nested directories allowed) in the cgroup v2 hierarchy.
    pub fn v2(rel: &str) -> anyhow::Result<Self> {
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|m| Path::new(m).join("cgroup.procs").exists() && is_cgroup2(m))
            .ok_or_else(|| anyhow!("no cgroup2 mount"))?;
        Self::at(Path::new(mount), rel)
    }

    /// `rel` in the cgroup v1 hierarchy of `controller` (`cpu`, `memory`, ...).
    pub fn v1(controller: &str, rel: &str) -> anyhow::Result<Self> {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        if !mount.join("tasks").exists() {
            bail!("no cgroup v1 hierarchy at {}", mount.display());
        }
        Self::at(&mount, rel)
    }

    fn at(mount: &Path, rel: &str) -> anyhow::Result<Self> {
        let mut created = Vec::new();
        let mut dir = mount.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                created.push(dir.clone());
            }
        }
        Ok(Cgroup {
            path: dir,
            rel: rel.to_owned(),
            created,
        })
    }

    /// Removes the group now (as YARN does when a container ends); `drop` then has nothing
    /// left to do.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        while let Some(dir) = self.created.pop() {
            remove_cgroup_dir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
        }
        Ok(())
    }
}

fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    // A process that just exited may still be leaving the group.
    let mut last = Ok(());
    for _ in 0..50 {
        last = std::fs::remove_dir(dir);
        if last.is_ok() {
            return last;
        }
        thread::sleep(Duration::from_millis(100));
    }
    last
}

fn is_cgroup2(mount: &str) -> bool {
    Path::new(mount).join("cgroup.controllers").exists()
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        while let Some(dir) = self.created.pop() {
            let _ = remove_cgroup_dir(&dir);
        }
    }
}

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

/// Starts the zkconn under test with `mode` then `args`; its stdout is read in a thread.
/// `ZKCONN_TEST_HOOK` runs every zkconn a test starts with `--hook` set to it (`cargo xtask
/// test` runs the accounting tests once per hook this kernel has).
pub fn test_hook() -> Option<String> {
    std::env::var("ZKCONN_TEST_HOOK")
        .ok()
        .filter(|h| !h.is_empty())
}

fn hook_args() -> Vec<String> {
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

fn spawn_zkconn(
    mode: &[&str],
    args: &[&str],
) -> anyhow::Result<(Child, thread::JoinHandle<String>, ChildStderr)> {
    spawn_zkconn_with(Command::new(zkconn_bin()), mode, args)
}

/// Like `spawn_zkconn`, with `cmd` prepared by the caller (a `setpriv` wrapper, limits).
fn spawn_zkconn_with(
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

/// The `servers` row of `server` seen from this host's usual source address, 127.0.0.1.
pub fn server_row(snap: &Value, server: SocketAddr) -> anyhow::Result<&Value> {
    snap["servers"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["server"] == server.to_string() && r["local_ip"] == "127.0.0.1")
        })
        .ok_or_else(|| anyhow!("no row for {server} from 127.0.0.1 in {snap:#}"))
}

/// A running `zkconn snapshot --json`; `finish` ends it with SIGINT and parses the output.
pub struct Zkconn {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
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

/// The `processes` row of `pid`.
pub fn process(snap: &Value, pid: u32) -> anyhow::Result<&Value> {
    snap["processes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["pid"] == pid))
        .ok_or_else(|| anyhow!("no process row for pid {pid} in {snap:#}"))
}

/// The `servers` rows towards `server`, summed over local IPs: (open, close_wait).
pub fn server_open(snap: &Value, server: SocketAddr) -> (u64, u64) {
    let name = server.to_string();
    snap["servers"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["server"] == name.as_str())
                .fold((0, 0), |(o, c), r| {
                    (
                        o + r["open"].as_u64().unwrap_or(0),
                        c + r["close_wait"].as_u64().unwrap_or(0),
                    )
                })
        })
        .unwrap_or((0, 0))
}

/// Reads a u64 field, failing with the row when absent.
pub fn field(row: &Value, name: &str) -> anyhow::Result<u64> {
    row[name]
        .as_u64()
        .ok_or_else(|| anyhow!("field {name} missing in {row:#}"))
}

/// A YARN cluster timestamp no other test (or test run) uses, for fresh application ids.
pub fn fresh_cluster_ts() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    1_700_000_000_000 + u64::from(std::process::id()) * 1000 + n
}

/// The row of `rows` (a top-level array) whose `key` equals `value`.
pub fn row_where<'a>(
    snap: &'a Value,
    rows: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<&'a Value> {
    snap[rows]
        .as_array()
        .and_then(|r| r.iter().find(|row| row[key] == value))
        .ok_or_else(|| anyhow!("no {rows} row with {key} = {value} in {snap:#}"))
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

/// A running `zkconn check -v ARGS`, attached and observing.
pub struct Check {
    child: Child,
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
                    child,
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

impl Drop for Check {
    fn drop(&mut self) {
        if self.stdout.is_some() {
            kill_and_reap(&mut self.child);
        }
    }
}

/// `GET path` on `addr` (HTTP/1.1, one request per connection): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` as is; returns the status and body of the answer.
pub fn http_request(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running `zkconn daemon -v --listen ADDR --interval 1s ARGS`.
pub struct Daemon {
    pub child: Child,
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
            child,
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

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Prometheus server (Debian's package) on a fresh loopback address, scraping `targets`
/// every second as job `zkconn`.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr]) -> anyhow::Result<Self> {
        Self::start_with(targets, "")
    }

    /// As [`Prometheus::start`], with `scrape` (YAML lines indented for the job, e.g. a
    /// `scheme`, `tls_config` or `basic_auth`) added to the job's scrape configuration.
    pub fn start_with(targets: &[SocketAddr], scrape: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ip = fresh_ipv4();
        let addr = SocketAddr::new(ip, free_port(ip)?);
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: zkconn\n    static_configs:\n      - targets: [{}]\n{scrape}",
                list.join(", ")
            ),
        )?;
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start prometheus (cargo xtask setup installs Debian's package)")?;
        let p = Self {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200) {
                return Ok(p);
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("prometheus on {addr} did not become ready")
    }

    /// The value of the instant query `expr`, if it has one result.
    pub fn query(&self, expr: &str) -> anyhow::Result<Option<f64>> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )?;
        if status != 200 {
            bail!("query {expr} answered {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse().ok()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Percent-encoding of everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of a metrics exposition: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Samples of the Prometheus text `name{labels} value`, checking every line is well formed.
pub fn parse_metrics(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow!("no value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .ok_or_else(|| anyhow!("unclosed labels: {line:?}"))?,
            ),
            None => (series, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line:?}");
        }
        let mut pairs = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, v) = rest
                .split_once("=\"")
                .ok_or_else(|| anyhow!("bad label in {line:?}"))?;
            let mut end = None;
            let mut escaped = false;
            for (i, c) in v.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.ok_or_else(|| anyhow!("unterminated label value in {line:?}"))?;
            pairs.push((k.to_owned(), v[..end].to_owned()));
            rest = v[end + 1..].trim_start_matches(',');
        }
        out.push((name.to_owned(), pairs, value));
    }
    Ok(out)
}

/// A network namespace joined to this one by a veth pair: the host side has `host`, the
/// namespace side `inside` (a /30 of 10.213.0.0/16). Removed on drop.
pub struct NetNs {
    pub name: String,
    pub host: IpAddr,
    pub inside: IpAddr,
    /// The host side of the veth pair.
    pub veth: String,
}

impl NetNs {
    pub fn create() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("zkconn-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let veth = format!("zkv{}{n}", pid % 100_000);
        let (a, b) = ((pid % 250) as u8, (n * 4 % 252) as u8);
        let host = IpAddr::from([10, 213, a, b + 1]);
        let inside = IpAddr::from([10, 213, a, b + 2]);
        let ns = Self {
            name: name.clone(),
            host,
            inside,
            veth: veth.clone(),
        };
        let peer = format!("{veth}p");
        for args in [
            vec!["netns", "add", &name],
            vec!["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", &name],
            vec!["addr", "add", &format!("{host}/30"), "dev", &veth],
            vec!["link", "set", &veth, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{inside}/30"),
                "dev",
                &peer,
            ],
            vec!["-n", &name, "link", "set", &peer, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .context("cannot run ip (cargo xtask setup installs iproute2)")?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
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
