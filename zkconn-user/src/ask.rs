//! Asking a ZooKeeper server for its `maxClientCnxns`, for servers whose limit no flag and no
//! zoo.cfg gives: the `conf` four-letter word on the watched port, where the server's
//! `4lw.commands.whitelist` allows it; when the server refuses this host (a host at its limit
//! has its questions refused too), `conf` again from another local address; else the
//! AdminServer's `/commands/configuration` (`--admin-port`, 8080 by default).
//!
//! Owns: those questions, their deadlines and reading the answers. Must not: ask anything
//! else, or ask after the probes attach without saying so (its connections to the watched
//! port are ZooKeeper connections of this host like any other, and counted as such).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// How one question may take at most: connect, then the whole answer.
const STEP: Duration = Duration::from_secs(2);
/// No new step starts after this much time on one server.
const BUDGET: Duration = Duration::from_secs(3);
/// Other local addresses tried after a refusal.
const MAX_OTHER_SOURCES: usize = 3;
/// An answer larger than this is no `conf` or configuration answer.
const MAX_ANSWER: u64 = 64 * 1024;

/// How the server told its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The `conf` four-letter word on the watched port.
    Conf,
    /// The AdminServer's `/commands/configuration`.
    AdminServer,
}

/// What the server said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub limit: u32,
    pub via: Via,
    /// The local address the answer came to.
    pub from: IpAddr,
    /// Taken from [`CACHE`]: another zkconn on this host heard it within [`CACHE_FOR`].
    pub cached: bool,
}

/// The result of asking one server: its answer, and what failed on the way (also when it
/// answered in the end: a refusal from this host's own address says something).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub answer: Option<Answer>,
    pub failures: Vec<String>,
    /// The local addresses whose question the server refused: it holds as many of their
    /// connections as it allows.
    pub refused_from: Vec<IpAddr>,
    pub at: Instant,
}

impl Asked {
    /// What a server said, heard now.
    pub fn new(answer: Option<Answer>, failures: Vec<String>) -> Self {
        Self {
            answer,
            failures,
            refused_from: Vec::new(),
            at: Instant::now(),
        }
    }
}

/// Asks every server at once; returns within about [`BUDGET`] and a [`STEP`] (each step
/// has its own timeout, a server that does not answer in time counts as not answering).
pub fn ask_all(servers: &[SocketAddr], admin_port: Option<u16>) -> Vec<(SocketAddr, Asked)> {
    let locals = local_addresses();
    std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|&server| {
                let locals = &locals;
                (server, scope.spawn(move || ask(server, admin_port, locals)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(server, h)| {
                let asked = h.join().unwrap_or_else(|_| {
                    Asked::new(None, vec!["asking it failed unexpectedly".to_owned()])
                });
                (server, asked)
            })
            .collect()
    })
}

/// Why one question got no limit.
#[derive(Debug, PartialEq, Eq)]
enum Miss {
    /// The server closed without a byte or reset: it refuses this source address.
    Refused(IpAddr),
    /// Anything else, in a sentence.
    Other(String),
}

/// Asks one server: `conf` from the default source, from other sources when refused, then
/// the AdminServer.
pub fn ask(server: SocketAddr, admin_port: Option<u16>, locals: &[IpAddr]) -> Asked {
    let mut asked = Asked::new(None, Vec::new());
    let until = Instant::now() + BUDGET;
    match conf(server, None) {
        Ok(answer) => {
            asked.answer = Some(answer);
            return asked;
        }
        Err(Miss::Refused(from)) => {
            asked.failures.push(format!(
                "`conf` from {from} was refused (this host may be at its limit)"
            ));
            asked.refused_from.push(from);
            for src in other_sources(server.ip(), from, locals) {
                if Instant::now() >= until {
                    break;
                }
                match conf(server, Some(src)) {
                    Ok(answer) => {
                        asked.answer = Some(answer);
                        return asked;
                    }
                    Err(Miss::Refused(from)) => {
                        asked
                            .failures
                            .push(format!("`conf` from {from} was refused"));
                        asked.refused_from.push(from);
                    }
                    Err(Miss::Other(why)) => {
                        asked.failures.push(format!("`conf` from {src}: {why}"));
                        break;
                    }
                }
            }
        }
        Err(Miss::Other(why)) => asked.failures.push(format!("`conf`: {why}")),
    }
    if let Some(port) = admin_port.filter(|_| Instant::now() < until) {
        match admin_server(server, port) {
            Ok(answer) => asked.answer = Some(answer),
            Err(why) => asked
                .failures
                .push(format!("AdminServer on port {port}: {why}")),
        }
    }
    asked
}

/// Connects from `src` (the kernel's choice when `None`) within [`STEP`]; a failure says
/// the local address it was made from, when known.
fn connect(
    to: SocketAddr,
    src: Option<IpAddr>,
) -> Result<TcpStream, (std::io::Error, Option<IpAddr>)> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None).map_err(|e| (e, src))?;
    // Closed with a reset, always: nothing of a question stays in the socket table (a
    // FIN_WAIT2 towards a server that never answers would be there for a minute, and seen by
    // seeding and by `ss` as this host's connection).
    sock.set_linger(Some(Duration::ZERO))
        .map_err(|e| (e, src))?;
    if let Some(src) = src {
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(|e| (e, Some(src)))?;
    }
    if let Err(e) = sock.connect_timeout(&SockAddr::from(to), STEP) {
        // A refusal can meet the connect already (the server accepted and reset at once).
        let from = src.or_else(|| route_source(to));
        return Err((e, from));
    }
    let stream = TcpStream::from(sock);
    let timeouts = stream
        .set_read_timeout(Some(STEP))
        .and_then(|()| stream.set_write_timeout(Some(STEP)));
    timeouts.map_err(|e| (e, src))?;
    Ok(stream)
}

/// The local address the kernel picks towards `to` (a UDP socket's connect sends nothing).
fn route_source(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let udp = std::net::UdpSocket::bind(any).ok()?;
    udp.connect(to).ok()?;
    Some(udp.local_addr().ok()?.ip())
}

/// Whether an error is the server closing at once: how ZooKeeper refuses.
fn is_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
    )
}

/// Reads until the peer closes, at most [`MAX_ANSWER`] bytes and [`STEP`] in all.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let until = Instant::now() + STEP;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() as u64 > MAX_ANSWER {
                    return Err(std::io::Error::other("the answer is too long"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn conf(server: SocketAddr, src: Option<IpAddr>) -> Result<Answer, Miss> {
    let mut stream = connect(server, src).map_err(|(e, from)| match from {
        Some(from) if is_refusal(&e) => Miss::Refused(from),
        _ => Miss::Other(io_sentence(&e)),
    })?;
    let from = stream
        .local_addr()
        .map_err(|e| Miss::Other(io_sentence(&e)))?
        .ip();
    // ZooKeeper closes a refused connection at once with SO_LINGER 0: the write may already
    // meet the reset, and the read finds EOF with no byte or the reset.
    let answer = stream
        .write_all(b"conf")
        .and_then(|()| read_answer(&mut stream));
    let bytes = match answer {
        Ok(b) if b.is_empty() => return Err(Miss::Refused(from)),
        Ok(b) => b,
        Err(e) if is_refusal(&e) => return Err(Miss::Refused(from)),
        Err(e) => return Err(Miss::Other(io_sentence(&e))),
    };
    let text = String::from_utf8_lossy(&bytes);
    match parse_conf(&text) {
        Ok(limit) => Ok(Answer {
            limit,
            via: Via::Conf,
            from,
            cached: false,
        }),
        Err(why) => Err(Miss::Other(why)),
    }
}

/// `maxClientCnxns=N` in a `conf` answer; a negative N is unlimited (0), as in ZooKeeper.
pub fn parse_conf(text: &str) -> Result<u32, String> {
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("maxClientCnxns="));
    match value {
        Some(v) => parse_limit(v.trim()),
        None if text.contains("is not executed because it is not in the whitelist") => Err(
            "not in the server's 4lw.commands.whitelist (add conf there, or give --limit)"
                .to_owned(),
        ),
        None => Err(format!(
            "the answer names no maxClientCnxns (it begins \"{}\")",
            quoted(&text.chars().take(60).collect::<String>())
        )),
    }
}

fn parse_limit(value: &str) -> Result<u32, String> {
    let n: i64 = value
        .parse()
        .map_err(|_| format!("maxClientCnxns {value:?} is not a number"))?;
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

fn admin_server(server: SocketAddr, port: u16) -> Result<Answer, String> {
    let to = SocketAddr::new(server.ip(), port);
    let mut stream = connect(to, None).map_err(|(e, _)| io_sentence(&e))?;
    let from = stream.local_addr().map_err(|e| io_sentence(&e))?.ip();
    let host = match server.ip() {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        IpAddr::V4(v4) => format!("{v4}:{port}"),
    };
    let request = format!(
        "GET /commands/configuration HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_sentence(&e))?;
    let bytes = read_answer(&mut stream).map_err(|e| io_sentence(&e))?;
    let limit = parse_admin(&String::from_utf8_lossy(&bytes), server.port())?;
    Ok(Answer {
        limit,
        via: Via::AdminServer,
        from,
        cached: false,
    })
}

/// `max_client_cnxns` in an HTTP answer from `/commands/configuration`, when its
/// `client_port` (or `secure_client_port`) is the watched one.
pub fn parse_admin(response: &str, port: u16) -> Result<u32, String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("the answer is not HTTP")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        return Err(format!("answered \"{}\"", quoted(status.trim())));
    }
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the answer is not JSON".to_owned())?;
    // A number, or a number in a string.
    let number = |v: &serde_json::Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    let ports: Vec<i64> = ["client_port", "secure_client_port"]
        .iter()
        .filter_map(|k| doc.get(k).and_then(number))
        .collect();
    if ports.is_empty() {
        return Err("the answer names no client_port, so it may be another server's".to_owned());
    }
    if !ports.contains(&i64::from(port)) {
        return Err(format!(
            "it serves the ZooKeeper on client port {}, not {port}",
            ports[0]
        ));
    }
    let n = doc
        .get("max_client_cnxns")
        .and_then(number)
        .ok_or("the answer names no max_client_cnxns")?;
    Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// Where zkconn keeps what servers said, for the other zkconn runs on this host: a check
/// run every minute then asks nobody (and, at the limit, is not refused every minute).
/// `/run` is emptied at boot.
pub const CACHE: &str = "/run/zkconn/server-limits.json";
/// How long an answer in [`CACHE`] is taken as said: a server restarted with another
/// limit is believed wrong at most this long by a one-shot run (a refusal under the limit
/// makes `top` and the daemon ask again at once, see `limits`).
pub const CACHE_FOR: Duration = Duration::from_secs(600);

#[derive(serde::Serialize, serde::Deserialize)]
struct Remembered {
    limit: u32,
    via: Via,
    from: IpAddr,
    /// Seconds since the epoch.
    at: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The file's answers, when it and its directory are this user's own and nobody else can
/// write them (a file anyone could write could set any limit); else none.
fn read_cache(path: &std::path::Path) -> std::collections::BTreeMap<String, Remembered> {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let own = |p: &std::path::Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == me && m.mode() & 0o022 == 0)
    };
    let dir_ok = path.parent().is_some_and(own);
    if !dir_ok || !own(path) {
        return Default::default();
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Fresh answers for `servers` from [`CACHE`] at `path`.
pub fn cached(path: &std::path::Path, servers: &[SocketAddr]) -> Vec<(SocketAddr, Answer)> {
    let now = unix_now();
    let known = read_cache(path);
    servers
        .iter()
        .filter_map(|s| {
            let r = known.get(&s.to_string())?;
            // An answer from the future (the clock was set back) is not taken either.
            (r.at <= now && now - r.at < CACHE_FOR.as_secs()).then_some((
                *s,
                Answer {
                    limit: r.limit,
                    via: r.via,
                    from: r.from,
                    cached: true,
                },
            ))
        })
        .collect()
}

/// Adds fresh `answers` to [`CACHE`] at `path` (written whole and renamed into place, the
/// directory made 0700); a failure is logged with -v and changes nothing else.
pub fn remember(path: &std::path::Path, answers: &[(SocketAddr, &Answer)]) {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let fresh: Vec<_> = answers.iter().filter(|(_, a)| !a.cached).collect();
    if fresh.is_empty() {
        return;
    }
    let write = || -> std::io::Result<()> {
        let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)?;
        // One writer at a time, or two runs at once would each drop the other's answers.
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path.with_extension("lock"))?;
        // SAFETY: flock on a file descriptor this function owns; released when `lock` drops.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut known = read_cache(path);
        let now = unix_now();
        known.retain(|_, r| r.at <= now && now - r.at < CACHE_FOR.as_secs());
        for (server, a) in fresh {
            known.insert(
                server.to_string(),
                Remembered {
                    limit: a.limit,
                    via: a.via,
                    from: a.from,
                    at: now,
                },
            );
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(&known).map_err(std::io::Error::other)?)?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::info!("cannot keep the servers' limits in {}: {e}", path.display());
    }
}

/// What a server sent, safe to quote in a sentence: control characters (a line feed, a
/// terminal escape) become U+FFFD.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

fn io_sentence(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {} s", STEP.as_secs())
        }
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => e.to_string(),
    }
}

/// Local addresses to ask from after `refused`, of the server's family: for a loopback
/// server the loopback addresses (any 127/8 address is this host's), else the interfaces'
/// addresses that are not loopback or link-local.
fn other_sources(server: IpAddr, refused: IpAddr, locals: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = locals
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == server.is_ipv4() && *a != refused)
        .filter(|a| a.is_loopback() == server.is_loopback())
        .filter(|a| match a {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .collect();
    if server.is_loopback() && server.is_ipv4() {
        // Every 127/8 address is local; one beside the refused one will do.
        for last in [2u8, 3] {
            let a = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            if a != refused && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out.dedup();
    out.truncate(MAX_OTHER_SOURCES);
    out
}

/// This host's interface addresses (getifaddrs(3)); none when it fails.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("clientPort=2181\nmaxClientCnxns=10\ntickTime=2000\n", Ok(10))]
    #[case("maxClientCnxns=0\n", Ok(0))]
    #[case("maxClientCnxns=-1\n", Ok(0))]
    #[case(
        "conf is not executed because it is not in the whitelist.\n",
        Err("whitelist")
    )]
    // A line that happens to say so does not hide a limit.
    #[case(
        "x=is not executed because it is not in the whitelist\nmaxClientCnxns=4\n",
        Ok(4)
    )]
    #[case("clientPort=2181\n", Err("names no maxClientCnxns"))]
    #[case("maxClientCnxns=many\n", Err("not a number"))]
    fn conf_answers(#[case] text: &str, #[case] want: Result<u32, &str>) {
        match (parse_conf(text), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{got:?} but wanted {want:?}"),
        }
    }

    const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";

    #[rstest]
    #[case(&format!("{HEAD}{{\"client_port\":2181,\"max_client_cnxns\":7}}"), Ok(7))]
    #[case(&format!("{HEAD}{{\"client_port\":2181,\"max_client_cnxns\":-1}}"), Ok(0))]
    #[case(&format!("{HEAD}{{\"client_port\":\"2181\",\"max_client_cnxns\":\"9\"}}"), Ok(9))]
    #[case(&format!("{HEAD}{{\"max_client_cnxns\":7}}"), Err("no client_port"))]
    #[case(&format!("{HEAD}{{\"client_port\":2182,\"max_client_cnxns\":7}}"), Err("client port 2182"))]
    #[case(&format!("{HEAD}{{\"client_port\":2181}}"), Err("no max_client_cnxns"))]
    #[case(&format!("{HEAD}<html>"), Err("not JSON"))]
    #[case("HTTP/1.1 404 Not Found\r\n\r\n", Err("404"))]
    #[case("SSH-2.0-OpenSSH", Err("not HTTP"))]
    fn admin_answers(#[case] text: &str, #[case] want: Result<u32, &str>) {
        match (parse_admin(text, 2181), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{got:?} but wanted {want:?}"),
        }
    }

    #[test]
    fn the_cache_keeps_fresh_answers_and_trusts_only_its_own_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zkconn/server-limits.json");
        let s1: SocketAddr = "127.0.0.5:2181".parse().unwrap();
        let s2: SocketAddr = "127.0.0.6:2181".parse().unwrap();
        let a = Answer {
            limit: 7,
            via: Via::Conf,
            from: "127.0.0.2".parse().unwrap(),
            cached: false,
        };
        assert!(cached(&path, &[s1]).is_empty(), "no file yet");
        remember(&path, &[(s1, &a)]);
        let got = cached(&path, &[s1, s2]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.limit, got[0].1.cached), (s1, 7, true));
        // An answer taken from the cache is not written back as fresh.
        remember(&path, &[(s2, &got[0].1)]);
        assert_eq!(cached(&path, &[s2]).len(), 0);
        // Stale answers are not taken.
        std::fs::write(
            &path,
            format!(
                "{{\"{s1}\":{{\"limit\":7,\"via\":\"conf\",\"from\":\"127.0.0.2\",\"at\":{}}}}}",
                unix_now() - CACHE_FOR.as_secs() - 1
            ),
        )
        .unwrap();
        assert!(cached(&path, &[s1]).is_empty(), "stale");
        // A file others can write is not trusted.
        remember(&path, &[(s1, &a)]);
        assert_eq!(cached(&path, &[s1]).len(), 1);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(cached(&path, &[s1]).is_empty(), "world-writable");
    }

    #[test]
    fn other_sources_stay_in_the_servers_family_and_reach() {
        let locals: Vec<IpAddr> = [
            "127.0.0.1",
            "10.0.0.5",
            "10.0.0.6",
            "::1",
            "fe80::1",
            "2001:db8::5",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            other_sources(ip("10.1.1.1"), ip("10.0.0.5"), &locals),
            vec![ip("10.0.0.6")]
        );
        assert_eq!(
            other_sources(ip("127.77.0.9"), ip("127.0.0.1"), &locals),
            vec![ip("127.0.0.2"), ip("127.0.0.3")]
        );
        assert_eq!(
            other_sources(ip("2001:db8::9"), ip("2001:db8::5"), &locals),
            Vec::<IpAddr>::new()
        );
        assert!(local_addresses().iter().any(IpAddr::is_loopback));
    }
}
