//! Edge-case TCP peers (`src/clients/edge_client.py`): connects left pending, sockets
//! closed with a reset, a listener that never accepts, a connect storm, a client that asks
//! and reads to EOF. One process each, reaped on drop (through [`Client`]).

use std::{io::Write as _, net::SocketAddr, process::Command};

use anyhow::{anyhow, bail};

use crate::Client;

/// One edge-case peer process.
pub struct Edge {
    client: Client,
    /// What the process printed when it was set up (`ready N`, or the answer of `ask`).
    pub first_line: String,
}

impl Edge {
    fn start(mode: &str, server: SocketAddr, rest: &[String]) -> anyhow::Result<Self> {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/edge_client.py"
        ))
        .arg(mode)
        .arg(server.ip().to_string())
        .arg(server.port().to_string())
        .args(rest);
        let mut client = Client::start(cmd)?;
        let first_line = client.read_line()?;
        Ok(Edge { client, first_line })
    }

    fn ready(mode: &str, server: SocketAddr, rest: &[String]) -> anyhow::Result<Self> {
        let edge = Self::start(mode, server, rest)?;
        if !edge.first_line.starts_with("ready") {
            bail!("{mode} peer failed: {}", edge.first_line);
        }
        Ok(edge)
    }

    /// A listener on `addr` with backlog 0 that never accepts.
    pub fn listener(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::ready("listen", addr, &[])
    }

    /// A listener on `addr` that accepts and closes each connection `seconds` later, never
    /// sending a byte.
    pub fn lazy_listener(addr: SocketAddr, seconds: f64) -> anyhow::Result<Self> {
        Self::ready("lazy", addr, &[seconds.to_string()])
    }

    /// A listener on `addr` that sends each connection a line and keeps it open.
    pub fn chatty_listener(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::ready("chatty", addr, &[])
    }

    /// SIGKILL, and reap (the kernel closes its sockets).
    pub fn kill(&mut self) {
        self.client.kill();
    }

    /// `n` non-blocking connects to `server`, left as they are.
    pub fn pending(server: SocketAddr, n: u32) -> anyhow::Result<Self> {
        Self::ready("pending", server, &[n.to_string()])
    }

    /// `n` connects to `server` that complete.
    pub fn hold(server: SocketAddr, n: u32) -> anyhow::Result<Self> {
        Self::ready("hold", server, &[n.to_string()])
    }

    /// Connects to `server` every `pause` for `seconds`, at most `keep` pending at once
    /// (the oldest is aborted first).
    pub fn storm(
        server: SocketAddr,
        seconds: f64,
        keep: u32,
        pause: std::time::Duration,
    ) -> anyhow::Result<Self> {
        Self::ready(
            "storm",
            server,
            &[
                seconds.to_string(),
                keep.to_string(),
                pause.as_secs_f64().to_string(),
            ],
        )
    }

    /// Connects, sends `word`, reads to EOF: `Ok(bytes received)`, or the error it met.
    pub fn ask(server: SocketAddr, word: &str) -> anyhow::Result<Result<u64, String>> {
        let edge = Self::start("ask", server, &[word.to_owned()])?;
        Ok(match edge.first_line.strip_prefix("got ") {
            Some(n) => Ok(n.parse()?),
            None => Err(edge.first_line.clone()),
        })
    }

    /// `n` connections to `server` whose namespace only a thread shows
    /// (`src/clients/ns_thread_client.py`): `netns` None: the process's main thread exits
    /// once they are made (a zombie thread-group leader holding live sockets); Some: a worker
    /// thread enters that namespace (`ip netns` name) and connects from there.
    pub fn thread_held(
        server: SocketAddr,
        n: u32,
        netns: Option<&str>,
        run_in: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut cmd = match run_in {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/ns_thread_client.py"
        ));
        match netns {
            Some(ns) => cmd.args(["setns", ns]),
            None => cmd.arg("zombie"),
        };
        cmd.args([
            server.ip().to_string(),
            server.port().to_string(),
            n.to_string(),
        ]);
        let mut client = Client::start(cmd)?;
        let first_line = client.read_line()?;
        if !first_line.starts_with("ready") {
            bail!("thread-held client failed: {first_line}");
        }
        Ok(Edge { client, first_line })
    }

    /// Starts `ask` and returns at once; [`Edge::answer`] waits for its line.
    pub fn ask_in_background(server: SocketAddr, word: &str) -> anyhow::Result<Client> {
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/clients/edge_client.py"
        ))
        .args([
            "ask",
            &server.ip().to_string(),
            &server.port().to_string(),
            word,
        ]);
        Client::start(cmd)
    }

    /// The line a background `ask` printed.
    pub fn answer(client: &mut Client) -> anyhow::Result<String> {
        client.read_line()
    }

    /// Sends one command and returns the answer line.
    pub fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        let stdin = self
            .client
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin closed"))?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        self.client.read_line()
    }

    /// Closes every socket with SO_LINGER 0: a reset, or the abort of a pending connect.
    pub fn reset_all(&mut self) -> anyhow::Result<()> {
        match self.command("reset")?.as_str() {
            "closed" => Ok(()),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.client.pid()
    }
}
