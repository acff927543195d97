//! A real ZooKeeper server (Debian's package) per test, on its own 127.x address and free port.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use crate::reap::{Reaped, kill, kill_and_reap};

pub(crate) const JARS: &[&str] = &[
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
    // The AdminServer's (Jetty), for the servers that enable it.
    "jetty9-server.jar",
    "jetty9-servlet.jar",
    "jetty9-http.jar",
    "jetty9-io.jar",
    "jetty9-util.jar",
    "jetty9-security.jar",
    "servlet-api.jar",
    "jackson-annotations.jar",
    "jackson-core.jar",
    "jackson-databind.jar",
];

/// What a test server allows beyond the usual: the four-letter words it answers, and an
/// AdminServer.
#[derive(Clone, Debug)]
pub struct ZkOptions {
    /// `4lw.commands.whitelist`.
    pub four_letter_words: &'static str,
    /// The AdminServer's port (on the server's address); `None`: disabled.
    pub admin_port: Option<u16>,
}

impl Default for ZkOptions {
    fn default() -> Self {
        Self {
            four_letter_words: "srvr,mntr,cons",
            admin_port: None,
        }
    }
}

pub(crate) fn classpath(extra: &Path) -> String {
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

/// A standalone ZooKeeper 3.8 server from Debian's package.
pub struct ZkServer {
    pub addr: SocketAddr,
    child: Reaped,
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

    /// As [`ZkServer::start`], with `options`.
    pub fn start_with(
        ip: IpAddr,
        max_client_cnxns: u32,
        options: &ZkOptions,
    ) -> anyhow::Result<Self> {
        Self::start_full(None, ip, max_client_cnxns, &[], options)
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
        Self::start_full(netns, ip, max_client_cnxns, props, &ZkOptions::default())
    }

    fn start_full(
        netns: Option<&str>,
        ip: IpAddr,
        max_client_cnxns: u32,
        props: &[&str],
        options: &ZkOptions,
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
        let admin = match options.admin_port {
            None => "admin.enableServer=false\n".to_owned(),
            Some(p) => format!(
                "admin.enableServer=true\nadmin.serverAddress={host}\nadmin.serverPort={p}\n"
            ),
        };
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress={host}\n\
                 maxClientCnxns={max_client_cnxns}\n{admin}4lw.commands.whitelist={}\n",
                dir.path().join("data").display(),
                options.four_letter_words
            ),
        )?;
        let props: Vec<String> = props.iter().map(|p| (*p).to_owned()).collect();
        let netns = netns.map(str::to_owned);
        let child = Reaped::new(Self::spawn_jvm(dir.path(), &props, netns.as_deref())?);
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

    /// Restarts the server (as [`ZkServer::restart`]) with another `maxClientCnxns`.
    pub fn restart_with_limit(&mut self, max_client_cnxns: u32) -> anyhow::Result<()> {
        let path = self.dir.path().join("zoo.cfg");
        let cfg = std::fs::read_to_string(&path)?;
        let cfg: Vec<String> = cfg
            .lines()
            .map(|l| {
                if l.starts_with("maxClientCnxns=") {
                    format!("maxClientCnxns={max_client_cnxns}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(&path, cfg.join("\n") + "\n")?;
        self.restart()
    }

    /// Kills the server (SIGKILL, as a crash) and starts it again on the same address and
    /// data; returns once it serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        kill_and_reap(&mut self.child);
        self.child = Reaped::new(Self::spawn_jvm(
            self.dir.path(),
            &self.props,
            self.netns.as_deref(),
        )?);
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

    /// The server's own list of its connections (`cons`), asked from `src`, counted per
    /// client address; the asking connection itself is left out.
    pub fn connections_per_ip(
        &self,
        src: IpAddr,
    ) -> anyhow::Result<std::collections::BTreeMap<IpAddr, u64>> {
        let cons = self.four_letter_from(src, "cons")?;
        let mut out = std::collections::BTreeMap::new();
        for line in cons.lines() {
            // ` /127.0.0.5:40000[1](queued=0,recved=1,...)`
            let Some(rest) = line.trim().strip_prefix('/') else {
                continue;
            };
            let end = rest.find('[').unwrap_or(rest.len());
            let addr: SocketAddr = rest[..end]
                .parse()
                .with_context(|| format!("cannot read the address in cons line {line:?}"))?;
            *out.entry(addr.ip()).or_insert(0) += 1;
        }
        match out.get_mut(&src) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                out.remove(&src);
            }
            None => bail!("cons does not list the connection that asked: {cons}"),
        }
        Ok(out)
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
