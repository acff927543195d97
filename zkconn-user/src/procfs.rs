//! Reading `/proc` and the cgroup2 tree: process facts, socket tables and socket owners.
//!
//! Owns: parsers over a root path (tests point it at fixtures) and secret redaction.
//! Must not: decide what is ZooKeeper's (that is `targets`) or aggregate counts (`model`).
//! Every unreadable entry is returned as an error for the caller to count, never dropped.

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use crate::attribution::{
    Clues,
    cgroup::{CgroupLine, parse_proc_cgroup},
};

/// Facts about a process read from `/proc/PID`: what attribution needs, read once while
/// the process lives. Nothing here is a secret: arguments are redacted, and of the
/// environment only `CONTAINER_ID` is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub comm: String,
    /// Redacted arguments (see [`redact_argv`]), long class paths shortened.
    pub argv: Vec<String>,
    /// `argv` joined with spaces, at most [`CMDLINE_MAX`] bytes.
    pub cmdline: String,
    pub uid: u32,
    /// Start time on the boot clock, in ns (from ticks, so a multiple of 1/CLK_TCK s).
    pub start_ns: u64,
    /// Every line of `/proc/PID/cgroup`: v2 and each v1 hierarchy.
    pub cgroups: Vec<CgroupLine>,
    /// Target of `/proc/PID/exe`.
    pub exe: Option<String>,
    /// Target of `/proc/PID/cwd`.
    pub cwd: Option<String>,
    /// `CONTAINER_ID` from `/proc/PID/environ`.
    pub container_env: Option<String>,
    /// `/proc/PID/environ` existed but could not be read.
    pub environ_unreadable: bool,
    /// It was exiting when read: its command line and environment may be gone, and its v1
    /// cgroup lines are left out (the kernel shows `/` for them).
    pub exiting: bool,
}

/// Longest command line kept per process; Hadoop's can run to hundreds of kilobytes.
pub const CMDLINE_MAX: usize = 4096;

impl ProcInfo {
    /// The cgroup v2 path (`0::/path`), when the host has a v2 hierarchy.
    pub fn cgroup_v2(&self) -> Option<&str> {
        self.cgroups
            .iter()
            .find(|l| l.is_v2())
            .map(|l| l.path.as_str())
    }

    pub fn clues(&self) -> Clues<'_> {
        Clues {
            comm: &self.comm,
            exe: self.exe.as_deref(),
            argv: &self.argv,
            cmdline: &self.cmdline,
            cgroups: &self.cgroups,
            container_env: self.container_env.as_deref(),
            cwd: self.cwd.as_deref(),
        }
    }
}

/// A `/proc`-like tree: `/proc` in production, a fixture directory in tests.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
    ticks_per_sec: u64,
}

impl Default for Procfs {
    fn default() -> Self {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            root: PathBuf::from("/proc"),
            ticks_per_sec: u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100),
        }
    }
}

impl Procfs {
    #[cfg(test)]
    pub fn at(root: impl Into<PathBuf>, ticks_per_sec: u64) -> Self {
        Self {
            root: root.into(),
            ticks_per_sec,
        }
    }

    fn pid_path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    /// The path of `file` under `/proc/PID` (e.g. `ns/net`, for entering a namespace).
    pub fn pid_file(&self, pid: u32, file: &str) -> PathBuf {
        self.pid_path(pid, file)
    }

    /// The inode of zkconn's own network namespace.
    pub fn netns_of_self(&self) -> io::Result<u64> {
        let link = fs::read_link(self.root.join("self/ns/net"))?;
        parse_bracketed_inode(&link.to_string_lossy(), "net:")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected ns/net link"))
    }

    /// Reads what attribution needs of `pid`. Fails when `stat` or `status` cannot be read
    /// (the process is gone, or unreadable), or when `cgroup` or `cmdline` are gone (it was
    /// reaped mid-read); otherwise an unreadable file degrades to empty or `None`.
    pub fn process(&self, pid: u32) -> io::Result<ProcInfo> {
        // A process reaped while it is read is gone, not a process without a cgroup or
        // command line: an empty cgroup list would lose its container, which the kernel's
        // own record of it (the caller's fallback) still names.
        let cgroup = fs::read_to_string(self.pid_path(pid, "cgroup"));
        let mut cgroups = parse_proc_cgroup(&unless_gone(cgroup)?);
        // Read after the cgroups: a task not exiting now was not exiting then either.
        let stat = fs::read_to_string(self.pid_path(pid, "stat"))?;
        let Stat {
            comm,
            start_ticks,
            exiting,
        } = parse_stat(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat is malformed"),
            )
        })?;
        if exiting {
            // An exiting task's v1 lines all read `/` whatever its cgroups were; its v2 line
            // stays true, marked ` (deleted)` when its cgroup was removed under it (only an
            // exiting task can be in a removed cgroup: a live one keeps it populated).
            cgroups.retain(CgroupLine::is_v2);
            for line in &mut cgroups {
                if let Some(path) = line.path.strip_suffix(" (deleted)") {
                    line.path = path.to_owned();
                }
            }
        }
        let status = fs::read_to_string(self.pid_path(pid, "status"))?;
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX);
        let argv = redact_argv(&unless_gone(fs::read(self.pid_path(pid, "cmdline")))?);
        let link = |name: &str| {
            fs::read_link(self.pid_path(pid, name))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        };
        let (container_env, environ_unreadable) = match fs::read(self.pid_path(pid, "environ")) {
            Ok(env) => (environ_value(&env, "CONTAINER_ID"), false),
            Err(e) => (None, e.kind() != io::ErrorKind::NotFound),
        };
        Ok(ProcInfo {
            comm,
            cmdline: join_capped(&argv, CMDLINE_MAX),
            argv,
            uid,
            start_ns: start_ticks.saturating_mul(1_000_000_000 / self.ticks_per_sec),
            cgroups,
            exe: link("exe"),
            cwd: link("cwd"),
            container_env,
            environ_unreadable,
            exiting,
        })
    }

    /// The lines of `/proc/PID/cgroup`.
    pub fn cgroups(&self, pid: u32) -> io::Result<Vec<CgroupLine>> {
        Ok(parse_proc_cgroup(&fs::read_to_string(
            self.pid_path(pid, "cgroup"),
        )?))
    }

    /// Start time of `pid` on the boot clock in ns, or `None` when it does not exist.
    pub fn start_ns(&self, pid: u32) -> Option<u64> {
        let stat = fs::read_to_string(self.pid_path(pid, "stat")).ok()?;
        let ticks = parse_stat(&stat)?.start_ticks;
        Some(ticks.saturating_mul(1_000_000_000 / self.ticks_per_sec))
    }

    /// The comm of `pid`, or `None` when it does not exist.
    pub fn comm(&self, pid: u32) -> Option<String> {
        let stat = fs::read_to_string(self.pid_path(pid, "stat")).ok()?;
        parse_stat(&stat).map(|s| s.comm)
    }

    /// Numeric entries of the root: every pid.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// The network namespace of `pid` (`net:[inode]` → inode).
    /// The threads of `pid` (`/proc/PID/task`).
    pub fn tasks(&self, pid: u32) -> io::Result<Vec<u32>> {
        let mut tids: Vec<u32> = fs::read_dir(self.pid_path(pid, "task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// The network namespace of thread `tid` of `pid`: a thread may have entered another
    /// one (`setns`), and a process whose main thread exited is only reachable through its
    /// other threads.
    pub fn task_netns(&self, pid: u32, tid: u32) -> io::Result<u64> {
        let link = fs::read_link(self.pid_path(pid, &format!("task/{tid}/ns/net")))?;
        parse_bracketed_inode(&link.to_string_lossy(), "net:")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected ns/net link"))
    }

    /// The TCP sockets of the network namespace thread `tid` of `pid` is in.
    pub fn task_tcp_sockets(&self, pid: u32, tid: u32) -> io::Result<Vec<TcpSocket>> {
        let mut out = parse_proc_net_tcp(&fs::read_to_string(
            self.pid_path(pid, &format!("task/{tid}/net/tcp")),
        )?);
        if let Ok(v6) = fs::read_to_string(self.pid_path(pid, &format!("task/{tid}/net/tcp6"))) {
            out.extend(parse_proc_net_tcp(&v6));
        }
        Ok(out)
    }

    pub fn netns(&self, pid: u32) -> io::Result<u64> {
        let link = fs::read_link(self.pid_path(pid, "ns/net"))?;
        parse_bracketed_inode(&link.to_string_lossy(), "net:")
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected ns/net link"))
    }

    /// Socket inodes held open by `pid`.
    pub fn socket_inodes(&self, pid: u32) -> io::Result<Vec<u64>> {
        Ok(self
            .socket_fds(pid)?
            .into_iter()
            .map(|(_, inode)| inode)
            .collect())
    }

    /// The socket descriptors of `pid`, with their inodes. A process whose main thread
    /// exited (`pthread_exit`) while others run shows no descriptors under `/proc/PID/fd`:
    /// they are read through another of its threads then.
    pub fn socket_fds(&self, pid: u32) -> io::Result<Vec<(u32, u64)>> {
        let (fds, entries) = self.socket_fds_in(&self.pid_path(pid, "fd"))?;
        // Only a table with no descriptor at all: most processes hold no socket.
        if entries > 0 {
            return Ok(fds);
        }
        let Ok(tids) = self.tasks(pid) else {
            return Ok(fds);
        };
        match tids.into_iter().find(|&tid| tid != pid) {
            Some(tid) => self
                .socket_fds_in(&self.pid_path(pid, &format!("task/{tid}/fd")))
                .map(|(fds, _)| fds)
                .or(Ok(fds)),
            None => Ok(fds),
        }
    }

    /// The socket descriptors in `dir`, and how many entries it listed.
    fn socket_fds_in(&self, dir: &Path) -> io::Result<(Vec<(u32, u64)>, usize)> {
        let mut fds = Vec::new();
        let mut entries = 0;
        for entry in fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            entries += 1;
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // An fd closed between read_dir and read_link is not an error.
            let Ok(link) = fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(inode) = parse_bracketed_inode(&link.to_string_lossy(), "socket:") {
                fds.push((fd, inode));
            }
        }
        Ok((fds, entries))
    }

    /// Whether descriptor `fd` of `pid` is the socket `inode` now.
    pub fn holds_socket(&self, pid: u32, fd: u32, inode: u64) -> bool {
        fs::read_link(self.pid_path(pid, &format!("fd/{fd}"))).is_ok_and(|link| {
            parse_bracketed_inode(&link.to_string_lossy(), "socket:") == Some(inode)
        })
    }

    /// TCP sockets of `pid`'s network namespace (`net/tcp` and `net/tcp6`).
    pub fn tcp_sockets(&self, pid: u32) -> io::Result<Vec<TcpSocket>> {
        let mut out = parse_proc_net_tcp(&fs::read_to_string(self.pid_path(pid, "net/tcp"))?);
        // tcp6 is absent when IPv6 is disabled.
        if let Ok(v6) = fs::read_to_string(self.pid_path(pid, "net/tcp6")) {
            out.extend(parse_proc_net_tcp(&v6));
        }
        Ok(out)
    }
}

/// `comm` and `starttime` (ticks since boot) from `/proc/PID/stat`. The comm is in
/// parentheses and may itself contain spaces and parentheses: split at the last ')'.
/// `read`'s contents; empty when unreadable, except when the file is gone (`NotFound`).
fn unless_gone<T: Default>(read: io::Result<T>) -> io::Result<T> {
    match read {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        other => Ok(other.unwrap_or_default()),
    }
}

/// What `/proc/PID/stat` says: the comm, the start time in ticks, and whether the process
/// is exiting (`PF_EXITING`, zombies included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub start_ticks: u64,
    pub exiting: bool,
}

/// `PF_EXITING` in the task flags (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

pub fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // Fields after the comm start at field 3 (state); flags is field 9, starttime 22.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let flags: u64 = fields.get(9 - 3)?.parse().ok()?;
    let start_ticks = fields.get(22 - 3)?.parse().ok()?;
    Some(Stat {
        comm,
        start_ticks,
        exiting: flags & PF_EXITING != 0,
    })
}

fn parse_bracketed_inode(link: &str, prefix: &str) -> Option<u64> {
    link.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One row of `/proc/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state number.
    pub state: u8,
    pub inode: u64,
    /// The socket's owning uid (as `ss -e` shows it).
    pub uid: u32,
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6`. Malformed rows are skipped: the kernel
/// writes this file, so a bad row means a format this parser does not know, not bad input.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let local = parse_hex_addr(f.next()?)?;
            let remote = parse_hex_addr(f.next()?)?;
            let state = u8::from_str_radix(f.next()?, 16).ok()?;
            // tx:rx, tr:when, retrnsmt, uid, timeout, inode
            let uid = f.nth(3)?.parse().ok()?;
            let inode = f.nth(1)?.parse().ok()?;
            Some(TcpSocket {
                local,
                remote,
                state,
                inode,
                uid,
            })
        })
        .collect()
}

/// `0100007F:0885` (IPv4, each 32-bit word in host byte order) or the 32-hex-digit IPv6 form.
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address as a native-endian integer.
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = word(addr.get(i * 8..i * 8 + 8)?)?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(crate::targets::canonical_ip(ip), port))
}

/// The value of one variable in a NUL-separated environment block; nothing else is kept.
fn environ_value(env: &[u8], name: &str) -> Option<String> {
    env.split(|&b| b == 0).find_map(|kv| {
        let value = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// Options whose next argument is a class path.
const CLASSPATH_OPTIONS: [&str; 3] = ["-cp", "-classpath", "--class-path"];

/// Class paths longer than this are shown as their number of entries.
const CLASSPATH_SHOWN: usize = 256;

/// Redacts secrets from a NUL-separated command line: the value of every `-D`/`--` option
/// and `key=value` argument whose key names a secret, and URL credentials. Long class paths
/// become `<classpath: N entries>`. The number and order of arguments is kept.
pub fn redact_argv(raw: &[u8]) -> Vec<String> {
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| redact_arg(&String::from_utf8_lossy(a)))
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut redact_next = false;
    let mut classpath_next = false;
    for arg in args {
        if redact_next {
            // `Authorization: Bearer x`: the scheme stays, the credential after it goes.
            if AUTH_SCHEMES.iter().any(|s| arg.eq_ignore_ascii_case(s)) {
                out.push(arg);
                continue;
            }
            out.push("<redacted>".to_owned());
            redact_next = false;
            continue;
        }
        if classpath_next {
            classpath_next = false;
            if arg.len() > CLASSPATH_SHOWN {
                out.push(format!("<classpath: {} entries>", arg.split(':').count()));
                continue;
            }
        }
        // `--password secret`, `PASSWORD: secret`, `Authorization: Bearer x`, ZooKeeper's
        // `addauth digest user:password` (the value in the next argument)
        if arg.eq_ignore_ascii_case("digest")
            || ((arg.starts_with('-') || arg.ends_with(':'))
                && !arg.contains('=')
                && is_secret_key(arg.trim_end_matches(':')))
        {
            redact_next = true;
        }
        classpath_next = CLASSPATH_OPTIONS.contains(&arg.as_str());
        out.push(arg);
    }
    out
}

/// The redacted command line as one string (arguments joined by spaces).
#[cfg(test)]
pub fn redact_cmdline(raw: &[u8]) -> String {
    redact_argv(raw).join(" ")
}

/// Joins with spaces, cut at a character boundary at most `max` bytes long, marked with `…`.
fn join_capped(argv: &[String], max: usize) -> String {
    let mut s = argv.join(" ");
    if s.len() > max {
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// A key naming a secret contains one of these (case-insensitive): `password`, `passwd`,
/// `passphrase`, `keytab.pass`, `db-pass` by `pass`; `keyStore`, `api.key`,
/// `account.key` by `key`. Over-redaction (`key.serializer`) is the price of never showing
/// a secret. docs/attribution.md lists the policy, each row a test.
const SECRET_WORDS: [&str; 9] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "authorization",
    "digest",
    "signature",
];

/// HTTP authorization schemes that precede the credential itself.
const AUTH_SCHEMES: [&str; 5] = ["bearer", "basic", "token", "digest", "negotiate"];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `secret_name = value` anywhere in an argument: URL query parameters, code, configuration
/// strings (`user=u&password=x`, `api_token='x'`).
static ASSIGNED: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r#"(?i)([a-z0-9_.\-]*(?:pass|pwd|secret|token|key|credential|authorization|digest|signature)[a-z0-9_.\-]*\s*=\s*)(["']?)[^"'&\s,;)}]*"#,
    )
    .ok()
});

/// `"secret_name": value` (JSON, YAML-ish fragments in quotes).
static QUOTED_KEY: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r#"(?i)(["'][a-z0-9_.\-]*(?:pass|pwd|secret|token|key|credential|authorization|digest|signature)[a-z0-9_.\-]*["']\s*:\s*)(["']?)[^"',}\s]*"#,
    )
    .ok()
});

/// `secret_name: value` within one argument (YAML-ish; a space after the colon, so a class
/// path's `keystore.jar:/next.jar` is left alone).
static COLON_VALUE: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)((?:^|\s)[a-z0-9_.\-]*(?:pass|pwd|secret|token|key|credential|digest|signature)[a-z0-9_.\-]*:\s+)[^\s,;}]+",
    )
    .ok()
});

/// Values shaped like well-known credentials, whatever names them: JSON web tokens, GitHub,
/// AWS access key ids, Slack tokens.
static TOKEN_SHAPED: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"\b(?:eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9._-]+|gh[pousr]_[A-Za-z0-9]{8,}|github_pat_[A-Za-z0-9_]{8,}|AKIA[0-9A-Z]{12,}|xox[abprs]-[A-Za-z0-9-]{8,})",
    )
    .ok()
});

/// `Authorization: Bearer x` within one argument.
static AUTH_HEADER: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)(authorization\s*:\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)\S+",
    )
    .ok()
});

fn redact_arg(arg: &str) -> String {
    // A whole `--key=value` or `-Dkey=value` argument: the value goes whole, whatever it
    // holds. Anything else (code, URLs, JSON) is searched for its secret parts below.
    if let Some((key, _)) = arg.split_once('=')
        && is_secret_key(key)
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return format!("{key}=<redacted>");
    }
    // `--passwd:value`
    if arg.starts_with('-')
        && let Some((key, _)) = arg.split_once(':')
        && is_secret_key(key)
        && !key.contains('/')
    {
        return format!("{key}:<redacted>");
    }
    let mut arg = redact_url_credentials(arg);
    for (pattern, with) in [
        (&*ASSIGNED, "${1}${2}<redacted>"),
        (&*QUOTED_KEY, "${1}${2}<redacted>"),
        (&*AUTH_HEADER, "${1}<redacted>"),
        (&*COLON_VALUE, "${1}<redacted>"),
        (&*TOKEN_SHAPED, "<redacted>"),
    ] {
        // The patterns are constants the tests compile; were one ever refused, nothing of
        // the argument is shown rather than a secret.
        let Some(pattern) = pattern else {
            return "<redacted>".to_owned();
        };
        if let std::borrow::Cow::Owned(changed) = pattern.replace_all(&arg, with) {
            arg = changed;
        }
    }
    arg
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host` (the last `@` of the
/// authority ends the credentials, so a password holding `@` goes whole), and a bare
/// `scheme://token@host` → `scheme://<redacted>@host`.
fn redact_url_credentials(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let start = scheme_end + 3;
    let rest = &arg[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return arg.to_owned();
    };
    let user = match rest[..at].find(':') {
        Some(colon) => format!("{}:<redacted>", &rest[..colon]),
        None => "<redacted>".to_owned(),
    };
    format!("{}{user}{}", &arg[..start], &rest[at..])
}

/// Maps cgroup v2 ids (directory inode numbers) to paths under the cgroup2 mount.
///
/// A path once known stays known after its cgroup is removed (YARN removes a container's
/// group when it ends), up to [`CGROUPS_REMEMBERED`] entries. An id that a rescan did not
/// find is not looked for again, so removed groups never cost a rescan per snapshot.
#[derive(Debug, Default)]
pub struct CgroupPaths {
    mount: Option<PathBuf>,
    paths: HashMap<u64, String>,
    missing: HashSet<u64>,
}

/// Bound on remembered cgroup paths; beyond it the table is rebuilt from the live tree.
pub const CGROUPS_REMEMBERED: usize = 65_536;

impl CgroupPaths {
    /// Finds the cgroup2 mount (`/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified`
    /// on hybrid ones) from `/proc/self/mountinfo`.
    pub fn discover() -> Self {
        let mount = fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|info| {
                info.lines().find_map(|l| {
                    let (pre, post) = l.split_once(" - ")?;
                    let mount_point = pre.split_whitespace().nth(4)?;
                    (post.split_whitespace().next()? == "cgroup2")
                        .then(|| PathBuf::from(mount_point))
                })
            });
        let mut this = Self {
            mount,
            ..Self::default()
        };
        this.rescan();
        this
    }

    /// Whether a cgroup2 hierarchy is mounted.
    pub fn mounted(&self) -> bool {
        self.mount.is_some()
    }

    /// The path of cgroup `id`, rescanning once when it is new.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if !self.paths.contains_key(&id) && !self.missing.contains(&id) {
            self.rescan();
            if !self.paths.contains_key(&id) {
                self.missing.insert(id);
            }
        }
        self.paths.get(&id).cloned()
    }

    /// Records a path learnt elsewhere (`/proc/PID/cgroup` of a process seen in it).
    pub fn remember(&mut self, id: u64, path: &str) {
        if id == 0 {
            return;
        }
        if self.paths.len() >= CGROUPS_REMEMBERED {
            self.paths.clear();
            self.missing.clear();
        }
        self.missing.remove(&id);
        self.paths.insert(id, path.to_owned());
    }

    /// The id (directory inode) of the cgroup at `path` under the cgroup2 mount.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let mount = self.mount.as_ref()?;
        fs::metadata(mount.join(path.trim_start_matches('/')))
            .ok()
            .map(|m| m.ino())
    }

    fn rescan(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let Some(mount) = self.mount.clone() else {
            return;
        };
        if self.paths.len() >= CGROUPS_REMEMBERED {
            self.paths.clear();
            self.missing.clear();
        }
        let mut stack = vec![mount.clone()];
        // Bounded: the cgroup tree is finite and has no symlinks.
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&mount).unwrap_or(Path::new(""));
            self.paths.insert(meta.ino(), format!("/{}", rel.display()));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        let stat = "4242 (java (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 40 0 \
                    123456 1000000 200 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                comm: "java (x) y".into(),
                start_ticks: 123456,
                exiting: false
            })
        );
        // A zombie: PF_EXITING (0x4) among its flags.
        let zombie = "77 (python3) Z 76 77 76 0 -1 4227148 100 0 0 0 5 3 0 0 20 0 1 0 \
                      999 0 0 18446744073709551615";
        assert!(parse_stat(zombie).is_some_and(|s| s.exiting && s.start_ticks == 999));
    }

    #[test]
    fn proc_net_tcp_rows() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0885 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 31337 1 0000000000000000 100 0 0 10 0\n\
   1: 0200007F:C350 0100007F:0885 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let rows = parse_proc_net_tcp(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].local, "127.0.0.2:50000".parse().unwrap());
        assert_eq!(rows[1].remote, "127.0.0.1:2181".parse().unwrap());
        assert_eq!(rows[1].state, 1);
        assert_eq!(rows[1].inode, 4242);
        assert_eq!((rows[0].uid, rows[1].uid), (107, 0));
    }

    #[test]
    fn proc_net_tcp6_rows() {
        let text = "header\n   0: 00000000000000000000000001000000:C350 00000000000000000000000001000000:0885 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0 20 4 30 10 -1\n\
   1: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000200007F:0885 08 00000000:00000000 00:00000000 00000000     0        0 778 1 0 20 4 30 10 -1\n";
        let rows = parse_proc_net_tcp(text);
        assert_eq!(rows[0].remote, "[::1]:2181".parse().unwrap());
        // v4-mapped becomes the IPv4 address
        assert_eq!(rows[1].remote, "127.0.0.2:2181".parse().unwrap());
        assert_eq!(rows[1].state, 8);
    }

    #[rstest]
    #[case(
        b"java\0-Djavax.net.ssl.keyStorePassword=hunter2\0-Dproc_regionserver\0Main\0".as_slice(),
        "java -Djavax.net.ssl.keyStorePassword=<redacted> -Dproc_regionserver Main"
    )]
    #[case(
        b"hive\0--hiveconf\0hive.metastore.password=x\0".as_slice(),
        "hive --hiveconf hive.metastore.password=<redacted>"
    )]
    #[case(b"tool\0--password\0s3cr3t\0-v\0".as_slice(), "tool --password <redacted> -v")]
    #[case(
        b"curl\0https://alice:pw@zk.example:8080/x\0".as_slice(),
        "curl https://alice:<redacted>@zk.example:8080/x"
    )]
    #[case(b"app\0-Dzk.auth.token=abc\0".as_slice(), "app -Dzk.auth.token=<redacted>")]
    #[case(b"plain\0args\0".as_slice(), "plain args")]
    #[case(
        b"java\0-cp\0/a/keystore.jar:/b/c.jar\0Main\0".as_slice(),
        "java -cp /a/keystore.jar:/b/c.jar Main"
    )]
    #[case(
        b"java\0-Djdbc=jdbc:mysql://db/x?user=u&password=hunter7\0".as_slice(),
        "java -Djdbc=jdbc:mysql://db/x?user=u&password=<redacted>"
    )]
    #[case(
        b"java\0-Dfs.azure.account.key.acct.blob.core.windows.net=hunter8\0".as_slice(),
        "java -Dfs.azure.account.key.acct.blob.core.windows.net=<redacted>"
    )]
    #[case(b"tool\0--db-pass\0hunter9\0".as_slice(), "tool --db-pass <redacted>")]
    #[case(b"j\0-Dssl.keystore.pwd=hunter10\0".as_slice(), "j -Dssl.keystore.pwd=<redacted>")]
    #[case(
        b"tool\0mysql://user:hun@ter11@db/x\0".as_slice(),
        "tool mysql://user:<redacted>@db/x"
    )]
    #[case(
        b"tool\0--conf\0{\"password\":\"hunter12\"}\0".as_slice(),
        "tool --conf {\"password\":\"<redacted>\"}"
    )]
    #[case(
        b"curl\0-H\0Authorization:\0Bearer\0hunter14\0".as_slice(),
        "curl -H Authorization: Bearer <redacted>"
    )]
    #[case(
        b"curl\0-H\0Authorization: Bearer hunter14\0".as_slice(),
        "curl -H Authorization: Bearer <redacted>"
    )]
    #[case(b"tool\0--pass=hunter15\0".as_slice(), "tool --pass=<redacted>")]
    #[case(b"tool\0PASSWORD:\0hunter20\0".as_slice(), "tool PASSWORD: <redacted>")]
    #[case(
        b"python3\0-c\0import kazoo; api_token='hunter21'; go()\0".as_slice(),
        "python3 -c import kazoo; api_token='<redacted>'; go()"
    )]
    #[case(
        b"git\0https://ghp_hunter22@github.com/x\0".as_slice(),
        "git https://<redacted>@github.com/x"
    )]
    fn cmdline_redaction(#[case] raw: &[u8], #[case] expected: &str) {
        assert_eq!(redact_cmdline(raw), expected);
    }

    /// The table of docs/attribution.md ("Secrets"): each row's command line is stored as
    /// the row says, and no `hunter` secret of it survives.
    #[test]
    fn the_documented_redactions_hold() {
        let doc = include_str!("../../docs/attribution.md");
        let mut rows = 0;
        for line in doc
            .lines()
            .filter(|l| l.starts_with("| `") && l.contains(" · "))
        {
            let cells: Vec<&str> = line.split(" | ").collect();
            let input = cells[0].trim_start_matches("| `").trim_end_matches('`');
            let stored = cells[1].trim_end_matches(" |").trim_matches('`');
            let raw: Vec<u8> = input
                .split(" · ")
                .flat_map(|a| a.bytes().chain([0]))
                .collect();
            let got = redact_cmdline(&raw);
            assert_eq!(got, stored, "{input}");
            assert!(!got.contains("hunter"), "{got}");
            rows += 1;
        }
        assert!(rows >= 14, "only {rows} rows read from docs/attribution.md");
    }

    #[test]
    fn fixture_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("77");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("stat"),
            "77 (zkcli) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 250 0 0",
        )
        .unwrap();
        fs::write(
            p.join("status"),
            "Name:\tzkcli\nUid:\t1001\t1001\t1001\t1001\n",
        )
        .unwrap();
        fs::write(p.join("cmdline"), b"zkcli\0--token=abc\0").unwrap();
        fs::write(
            p.join("cgroup"),
            "4:cpu:/hadoop-yarn/c1\n0::/system.slice/x.service\n",
        )
        .unwrap();
        fs::write(
            p.join("environ"),
            b"PATH=/bin\0AWS_SECRET_ACCESS_KEY=nope\0CONTAINER_ID=container_1_0001_01_000002\0",
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/bin/zkcli", p.join("exe")).unwrap();
        std::os::unix::fs::symlink("/home/u", p.join("cwd")).unwrap();
        let info = Procfs::at(dir.path(), 100).process(77).unwrap();
        assert_eq!(
            info,
            ProcInfo {
                comm: "zkcli".into(),
                argv: vec!["zkcli".into(), "--token=<redacted>".into()],
                cmdline: "zkcli --token=<redacted>".into(),
                uid: 1001,
                start_ns: 2_500_000_000,
                cgroups: parse_proc_cgroup("4:cpu:/hadoop-yarn/c1\n0::/system.slice/x.service\n"),
                exe: Some("/usr/bin/zkcli".into()),
                cwd: Some("/home/u".into()),
                container_env: Some("container_1_0001_01_000002".into()),
                environ_unreadable: false,
                exiting: false,
            }
        );
        assert_eq!(info.cgroup_v2(), Some("/system.slice/x.service"));
        assert!(Procfs::at(dir.path(), 100).process(78).is_err());
    }

    #[test]
    fn a_process_reaped_mid_read_is_gone() {
        // stat and status read, then reaped: its cgroup is unknown, not empty (an empty list
        // would attribute a container's process to no container).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("9");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("stat"),
            "9 (x) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0",
        )
        .unwrap();
        fs::write(p.join("status"), "Uid:\t0\t0\t0\t0\n").unwrap();
        let procfs = Procfs::at(dir.path(), 100);
        let gone = procfs.process(9).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
        // With cmdline but no cgroup: gone too.
        fs::write(p.join("cmdline"), b"x\0").unwrap();
        assert_eq!(
            procfs.process(9).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // A zombie (empty cmdline, a cgroup) whose other links are gone is what is known.
        fs::write(p.join("cmdline"), b"").unwrap();
        fs::write(p.join("cgroup"), "0::/a.slice\n").unwrap();
        let info = procfs.process(9).unwrap();
        assert_eq!(info.comm, "x");
        assert!(info.argv.is_empty() && info.exe.is_none());
        assert_eq!(info.cgroup_v2(), Some("/a.slice"));
        assert!(!info.environ_unreadable);
        // Alive, in a cgroup whose name ends like the kernel's mark: the name stands.
        fs::write(p.join("cgroup"), "0::/a/weird (deleted)\n").unwrap();
        let info = procfs.process(9).unwrap();
        assert_eq!(info.cgroup_v2(), Some("/a/weird (deleted)"));
        // Exiting, its v2 cgroup removed: the v1 lines (all `/` then) are left out, the v2
        // path is the cgroup's without the kernel's mark.
        fs::write(
            p.join("stat"),
            "9 (x) Z 1 9 9 0 -1 4227148 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0",
        )
        .unwrap();
        fs::write(
            p.join("cgroup"),
            "1:cpu,cpuacct:/\n0::/hadoop-yarn/container_e1_1_0001_01_000002 (deleted)\n",
        )
        .unwrap();
        let info = procfs.process(9).unwrap();
        assert!(info.exiting);
        assert_eq!(info.cgroups.len(), 1, "{:?}", info.cgroups);
        assert_eq!(
            info.cgroup_v2(),
            Some("/hadoop-yarn/container_e1_1_0001_01_000002")
        );
    }

    #[test]
    fn long_classpaths_are_counted_not_shown() {
        let cp: Vec<String> = (0..40)
            .map(|i| format!("/usr/lib/hadoop/lib/jar-{i}.jar"))
            .collect();
        let raw = format!("java\0-cp\0{}\0-Dproc_master\0org.Main\0", cp.join(":"));
        let argv = redact_argv(raw.as_bytes());
        assert_eq!(
            argv,
            vec![
                "java",
                "-cp",
                "<classpath: 40 entries>",
                "-Dproc_master",
                "org.Main"
            ]
        );
        assert_eq!(
            redact_cmdline(b"java\0-cp\0/a:/b\0Main\0"),
            "java -cp /a:/b Main"
        );
    }

    #[test]
    fn command_lines_are_capped_at_a_char_boundary() {
        let argv = vec!["é".repeat(3000)];
        let s = join_capped(&argv, CMDLINE_MAX);
        assert!(s.len() <= CMDLINE_MAX && s.ends_with('…'));
        assert_eq!(join_capped(&["a".into(), "b".into()], CMDLINE_MAX), "a b");
    }

    #[rstest]
    #[case(b"A=1\0CONTAINER_ID=c\0".as_slice(), Some("c"))]
    #[case(b"CONTAINER_IDX=c\0".as_slice(), None)]
    #[case(b"".as_slice(), None)]
    fn environ_values(#[case] env: &[u8], #[case] expected: Option<&str>) {
        assert_eq!(environ_value(env, "CONTAINER_ID").as_deref(), expected);
    }
}
