//! `zkconn top` used as a person would: the real binary in a tmux pane, against a real
//! ZooKeeper and real clients; the pane is read, keys are pressed, and the terminal must be
//! usable again afterwards. Root only; run with `cargo xtask test`.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use integration_tests::{Daemon, RawClient, ZkServer, fresh_ipv4, now_rfc3339, zkconn_bin};

/// A tmux session running a plain shell, killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Result<Self> {
        // Unique per test run; no dots or colons, which tmux reads as target separators.
        let name =
            format!("zkconn-top-{}-{}", std::process::id(), fresh_ipv4()).replace(['.', ':'], "-");
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(["env", "-i", "TERM=screen", "PS1=$ "])
            .arg(format!(
                "PATH={}",
                std::env::var("PATH").unwrap_or_default()
            ))
            .args(["bash", "--norc", "--noprofile"])
            .status()
            .context("cannot run tmux (cargo xtask setup installs it)")?;
        if !status.success() {
            bail!("tmux new-session failed: {status}");
        }
        Ok(Self { name })
    }

    fn keys(&self, keys: &[&str]) -> Result<()> {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()?;
        if !status.success() {
            bail!("tmux send-keys {keys:?} failed");
        }
        Ok(())
    }

    fn screen(&self) -> Result<String> {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pid of the command the pane's shell is running.
    fn child_of_shell(&self) -> Result<u32> {
        let out = Command::new("tmux")
            .args(["list-panes", "-t", &self.name, "-F", "#{pane_pid}"])
            .output()?;
        let shell = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))?;
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the shell {shell} runs nothing"))
    }

    /// Waits until `ok` holds for the pane; returns the pane.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen()?;
            if ok(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!("the pane never showed {what}:\n{screen}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// The whitespace-separated cells of the owners-table line of `pid`, from the pid on.
fn owner_cells(screen: &str, pid: u32) -> Option<Vec<String>> {
    let pid = pid.to_string();
    screen.lines().find_map(|line| {
        let cells: Vec<String> = line
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let at = cells.iter().position(|c| *c == pid)?;
        Some(cells[at..].to_vec())
    })
}

#[test]
fn top_shows_servers_and_owners_and_restores_the_terminal() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 5, &[])?;
    let step = Some(Duration::from_millis(300));
    let holder = RawClient {
        interval: step,
        ..RawClient::new(zk.addr, 3)
    }
    .spawn()?;
    // Wide enough for every column, so the cells read by position are all there.
    let tmux = Tmux::start(230, 40)?;
    let command = format!(
        "{} top --zk {} --max-client-cnxns 5 --interval 300ms; echo \"top exited $?\"",
        zkconn_bin().display(),
        zk.addr
    );
    tmux.keys(&[&command, "Enter"])?;
    let server = zk.addr.to_string();
    tmux.wait("the server at 3 of 5", |s| {
        s.contains("ZooKeeper servers")
            && s.lines()
                .any(|l| l.contains(&server) && l.contains("3/5 60%"))
    })?;
    // Two fit, two are refused.
    let leaker = RawClient {
        interval: step,
        expect_refused: true,
        ..RawClient::new(zk.addr, 4)
    }
    .spawn()?;
    let screen = tmux.wait("the server at its limit, refusing", |s| {
        s.lines().any(|l| {
            l.contains(&server)
                && l.contains("CRITICAL")
                && l.contains("5/5 100%")
                && l.contains("rejected 2 ")
        })
    })?;
    // PID USER OPEN Δ/MIN OPENED CLOSED REJECTED CLOSE_WAIT ...
    let holder_cells = owner_cells(&screen, holder.pid())
        .with_context(|| format!("no row for the holder:\n{screen}"))?;
    assert_eq!(holder_cells[2], "3", "holder open: {holder_cells:?}");
    assert_eq!(holder_cells[6], "0", "holder rejected: {holder_cells:?}");
    let leaker_cells = owner_cells(&screen, leaker.pid())
        .with_context(|| format!("no row for the leaker:\n{screen}"))?;
    assert_eq!(leaker_cells[2], "2", "leaker open: {leaker_cells:?}");
    assert_eq!(leaker_cells[4], "4", "leaker opened: {leaker_cells:?}");
    assert_eq!(leaker_cells[6], "2", "leaker rejected: {leaker_cells:?}");
    assert!(
        screen.contains("open 5  opened 4"),
        "header totals:\n{screen}"
    );

    // Group by service: both are one script, 5 open.
    tmux.keys(&["g", "g", "g"])?;
    let screen = tmux.wait("the service grouping", |s| {
        s.contains("Owners by service (1)")
    })?;
    assert!(
        screen
            .lines()
            .any(|l| l.contains("raw_client.py") && l.contains(" 5 ")),
        "{screen}"
    );
    tmux.keys(&["g"])?;
    tmux.wait("the process grouping", |s| {
        s.contains("Owners by process (2)")
    })?;

    // The second row is the leaker (sorted by open); drill into it.
    tmux.keys(&["Down", "Enter"])?;
    let screen = tmux.wait("the leaker's connections", |s| {
        s.contains("Connections (2)")
    })?;
    let established = screen
        .lines()
        .filter(|l| {
            l.contains(&server)
                && l.contains("ESTABLISHED")
                && l.contains(&leaker.pid().to_string())
        })
        .count();
    assert_eq!(established, 2, "{screen}");
    assert!(
        screen.contains("raw_client.py"),
        "the command line:\n{screen}"
    );
    tmux.keys(&["Escape"])?;
    tmux.wait("the owners table again", |s| {
        s.contains("Owners by process (2)")
    })?;
    // Esc at the top level does not quit (q does); the filter finds owners by the server
    // they use.
    tmux.keys(&["Escape"])?;
    std::thread::sleep(std::time::Duration::from_millis(700));
    tmux.keys(&["/", "10.255.255.254", "Enter"])?;
    tmux.wait("no owner uses that address", |s| {
        s.contains("Owners by process (0)") && !s.contains("top exited")
    })?;
    tmux.keys(&["/"])?;
    for _ in 0.."10.255.255.254".len() {
        tmux.keys(&["BSpace"])?;
    }
    tmux.keys(&[&server, "Enter"])?;
    tmux.wait("both use the server", |s| {
        s.contains("Owners by process (2)")
    })?;

    tmux.keys(&["q"])?;
    assert_restored(&tmux)?;

    // SIGTERM ends it cleanly too, with the terminal restored.
    tmux.keys(&["clear", "Enter"])?;
    tmux.keys(&[&command, "Enter"])?;
    tmux.wait("top again", |s| s.contains("ZooKeeper servers"))?;
    let top = tmux.child_of_shell()?;
    // SAFETY: kill(2) on the zkconn this test started in its own tmux pane.
    unsafe { libc::kill(top as i32, libc::SIGTERM) };
    assert_restored(&tmux)?;
    Ok(())
}

/// On a ZooKeeper server's host, top has a pane of the listeners' client hosts: each with
/// its gauge of the limit and its refusals, the one refused first.
#[test]
fn top_shows_the_client_hosts_of_a_server() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 3, &[])?;
    let (calm, refused) = (fresh_ipv4(), fresh_ipv4());
    let tmux = Tmux::start(200, 40)?;
    let command = format!(
        "{} top --zk {} --max-client-cnxns 3 --interval 300ms; echo \"top exited $?\"",
        zkconn_bin().display(),
        zk.addr
    );
    tmux.keys(&[&command, "Enter"])?;
    tmux.wait("top", |s| s.contains("ZooKeeper servers"))?;
    let step = Some(Duration::from_millis(300));
    let _calm = RawClient {
        bind: Some(calm),
        ..RawClient::new(zk.addr, 1)
    }
    .spawn()?;
    // Three fit, the next two are refused.
    let _refused = RawClient {
        bind: Some(refused),
        interval: step,
        ..RawClient::new(zk.addr, 5)
    }
    .spawn()?;
    let listener = zk.addr.to_string();
    let screen = tmux.wait("both client hosts, the refused one first", |s| {
        let lines: Vec<&str> = s
            .lines()
            .skip_while(|l| !l.contains("Client hosts of this host's listeners"))
            .collect();
        let at = |ip: std::net::IpAddr, usage: &str, rejected: &str| {
            lines.iter().position(|l| {
                l.contains(&format!("{ip} → {listener}"))
                    && l.contains(usage)
                    && l.contains(rejected)
            })
        };
        matches!(
            (
                at(refused, " 3/3 100% ", " rejected 2 "),
                at(calm, " 1/3 33% ", " rejected 0 ")
            ),
            (Some(a), Some(b)) if a < b
        )
    })?;
    assert!(screen.contains("█"), "a gauge:\n{screen}");
    // c: every client host in a table; Enter on the first (the refused one): its
    // connections with their client ports, as `ss` would list them.
    tmux.keys(&["c"])?;
    tmux.wait("the client hosts table", |s| s.contains("Client hosts (2)"))?;
    tmux.keys(&["Enter"])?;
    let drill = tmux.wait("the refused host's connections", |s| {
        s.contains(&format!("client host {refused} on {listener}"))
            && s.contains("Connections (3)")
            && s.matches("established").count() == 3
    })?;
    assert!(drill.contains("5 accepted, 2 let go, 2 refused"), "{drill}");
    tmux.keys(&["Escape"])?;
    tmux.wait("back to the table", |s| s.contains("Client hosts (2)"))?;
    tmux.keys(&["c"])?;
    tmux.wait("back to the owners", |s| s.contains("Owners by"))?;
    tmux.keys(&["q"])?;
    assert_restored(&tmux)?;
    Ok(())
}

/// The open connections of `pid` in a snapshot document.
fn open_of(doc: &serde_json::Value, pid: u32) -> Option<u64> {
    doc["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)?["open"]
        .as_u64()
}

/// `top --history` opens the view on the past: a daemon records a process holding 2
/// connections, then a second one holding 3; once the daemon is gone, top opens on a time
/// between them (only the first, 2 open), says it is not live, goes to the later time on `t`
/// (both, 5 open), says so at the last sample when `]` would go past it, and `[` steps back
/// from there; q leaves the terminal as it was.
#[test]
fn top_travels_in_the_history_store() -> Result<()> {
    let zk = ZkServer::start(fresh_ipv4(), 10, &[])?;
    let store = tempfile::tempdir()?;
    let store_arg = store.path().display().to_string();
    let mut d = Daemon::start(&[
        "--zk",
        &zk.addr.to_string(),
        "--history",
        &store_arg,
        "--history-interval",
        "1s",
    ])?;
    let first = RawClient::new(zk.addr, 2).spawn()?;
    d.snapshot_when(|s| open_of(s, first.pid()) == Some(2))?;
    thread::sleep(Duration::from_millis(2500));
    let early = now_rfc3339()?;
    thread::sleep(Duration::from_millis(1500));
    let second = RawClient::new(zk.addr, 3).spawn()?;
    d.snapshot_when(|s| open_of(s, second.pid()) == Some(3))?;
    thread::sleep(Duration::from_millis(2500));
    let late = now_rfc3339()?;
    thread::sleep(Duration::from_millis(1500));
    d.signal(libc::SIGTERM);
    d.child.wait()?;

    let tmux = Tmux::start(230, 40)?;
    let command = format!(
        "{} top --history {store_arg} --at {early}; echo \"top exited $?\"",
        zkconn_bin().display(),
    );
    tmux.keys(&[&command, "Enter"])?;
    let screen = tmux.wait("the past, with the first process", |s| {
        s.contains("HISTORY") && s.contains("not live") && owner_cells(s, first.pid()).is_some()
    })?;
    let cells = owner_cells(&screen, first.pid()).unwrap_or_default();
    assert_eq!(cells[2], "2", "{cells:?}\n{screen}");
    assert!(owner_cells(&screen, second.pid()).is_none(), "{screen}");
    assert!(screen.contains("open 2  opened 2"), "{screen}");

    tmux.keys(&["t"])?;
    tmux.keys(&[&late, "Enter"])?;
    let screen = tmux.wait("the later time, with both", |s| {
        owner_cells(s, second.pid()).is_some_and(|c| c[2] == "3")
    })?;
    assert!(screen.contains("open 5  opened 5"), "{screen}");
    for _ in 0..8 {
        tmux.keys(&["]"])?;
    }
    tmux.wait("the end of the store", |s| {
        s.contains("this is the last sample the store holds")
    })?;
    let at_end = tmux.screen()?;
    let count = |s: &str| -> Option<(String, String)> {
        let l = s.lines().find(|l| l.contains("HISTORY"))?;
        let (_, rest) = l.split_once("(sample ")?;
        let (i, rest) = rest.split_once(" of ")?;
        let (n, _) = rest.split_once(',')?;
        Some((i.to_owned(), n.to_owned()))
    };
    let (i, n) = count(&at_end).with_context(|| at_end.clone())?;
    assert_eq!(i, n, "at the last sample: {at_end}");
    tmux.keys(&["["])?;
    let before = (i.parse::<u64>()? - 1).to_string();
    tmux.wait("a step back", |s| {
        count(s).is_some_and(|(j, _)| j == before)
    })?;
    tmux.keys(&["q"])?;
    assert_restored(&tmux)?;
    Ok(())
}

/// top exited 0, the alternate screen is gone and the terminal is in cooked mode with echo.
fn assert_restored(tmux: &Tmux) -> Result<()> {
    let screen = tmux.wait("the shell after top", |s| s.contains("top exited 0"))?;
    assert!(
        !screen.contains("ZooKeeper servers"),
        "alternate screen left:\n{screen}"
    );
    tmux.keys(&[
        "stty -a | tr ' ' '\\n' | grep -E -x -- '-?(icanon|echo)' | tr '\\n' ' '; echo",
        "Enter",
    ])?;
    tmux.wait("cooked mode with echo", |s| {
        s.contains("icanon echo") && !s.contains("-icanon")
    })?;
    Ok(())
}

#[test]
fn without_a_terminal_top_points_at_snapshot_json() -> Result<()> {
    for args in [vec!["top"], vec![]] {
        let out = Command::new(zkconn_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("needs a terminal") && err.contains("zkconn snapshot --json"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
    Ok(())
}
