//! The ZooKeeper servers of this host: for each listening socket on a watched port, the
//! process that holds it and what that server's own configuration says of the listener
//! (plain `clientPort` or `secureClientPort`, `maxClientCnxns`, `maxCnxns`).
//!
//! Owns: finding a listener's process from its socket inode, and reading that process's
//! command line and configuration file, through `/proc/PID/root` and `/proc/PID/cwd` so
//! that a server in a container is read as it sees its files. Parsers are pure.
//! Must not: scan `/proc` again for a listener it knows (facts are kept per socket inode
//! until the socket is gone: a restarted server listens on a new one), or ask the server.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
};

use serde::Serialize;

use crate::{limits::ZOOKEEPER_DEFAULT, procfs::Procfs, sockdiag::Listening, targets::ZooCfg};

/// The main classes of a ZooKeeper server (ZooKeeper's own scripts and Debian's start one
/// of these).
const SERVER_MAINS: [&str; 2] = [
    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
    "org.apache.zookeeper.server.ZooKeeperServerMain",
];

/// Longest command line read (a JVM's class path can be long; the main class comes after).
const CMDLINE_READ_MAX: u64 = 1 << 20;

/// The process that holds a listening socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerProcess {
    pub pid: u32,
    pub comm: String,
    /// The JVM's main class, when the command line names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_class: Option<String>,
    /// The configuration file it was started with, as it names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Which of a ZooKeeper server's client listeners it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKind {
    /// `clientPort`: plain TCP, the NIO (or Netty) connection factory.
    Plain,
    /// `secureClientPort`: TLS, the Netty connection factory.
    Secure,
    /// Not known: no process or configuration found, or a process zkconn does not know.
    #[default]
    Unknown,
}

/// What this host knows of one listening socket's server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ListenerFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ServerProcess>,
    pub kind: ListenerKind,
    /// `maxClientCnxns` as the server's own configuration gives it (ZooKeeper's 60 when it
    /// gives none); `None` when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_cnxns: Option<u32>,
    /// `maxCnxns`, the server's cap on this listener's connections from every client host
    /// together (0: none, ZooKeeper's default); `None` when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cnxns: Option<u32>,
    /// Why something above is not known, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// What makes what is known doubtful, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A JVM's command line, as far as a ZooKeeper server's listener depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JvmCommand {
    pub main_class: Option<String>,
    /// The arguments after the main class.
    pub args: Vec<String>,
    /// `-Dzookeeper.maxCnxns=N`: the last one of the command line, else of
    /// `JDK_JAVA_OPTIONS`, else of `JAVA_TOOL_OPTIONS` (the JVM reads them in that order,
    /// a later definition replacing an earlier one).
    pub max_cnxns_property: Option<String>,
}

/// The JVM options of the environment variables the JVM reads them from
/// (`JAVA_TOOL_OPTIONS` first, then `JDK_JAVA_OPTIONS`: the command line's come after both),
/// from the raw bytes of `/proc/PID/environ`.
pub fn env_options(environ: &[u8]) -> Vec<String> {
    let mut tool = Vec::new();
    let mut jdk = Vec::new();
    for var in environ.split(|b| *b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("JAVA_TOOL_OPTIONS=") {
            tool = v.split_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = var.strip_prefix("JDK_JAVA_OPTIONS=") {
            jdk = v.split_whitespace().map(str::to_owned).collect();
        }
    }
    tool.extend(jdk);
    tool
}

/// Splits a `java` command line (without `argv[0]`): its options, main class and arguments.
/// A `-jar` launch has no main class on the command line.
pub fn parse_jvm(argv: &[String]) -> JvmCommand {
    parse_jvm_with(&[], argv)
}

/// As [`parse_jvm`], with the JVM options the environment gives first ([`env_options`]).
pub fn parse_jvm_with(env: &[String], argv: &[String]) -> JvmCommand {
    let mut command = JvmCommand::default();
    for option in env {
        if let Some(value) = option.strip_prefix("-Dzookeeper.maxCnxns=") {
            command.max_cnxns_property = Some(value.to_owned());
        }
    }
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if let Some(value) = arg.strip_prefix("-Dzookeeper.maxCnxns=") {
            command.max_cnxns_property = Some(value.to_owned());
        }
        if arg == "-jar" {
            return command;
        }
        if crate::attribution::service::OPTIONS_WITH_VALUE.contains(&arg.as_str()) {
            i += 2;
            continue;
        }
        if !arg.starts_with('-') {
            command.main_class = Some(arg.clone());
            command.args = argv[i + 1..].to_vec();
            return command;
        }
        i += 1;
    }
    command
}

/// The server's facts for its listener on `port`, from its command line and, where it
/// names one, its configuration (`config`: the file read, or why it could not be). Pure.
pub fn facts_of(
    process: ServerProcess,
    command: &JvmCommand,
    config: Option<Result<ZooCfg, String>>,
    port: u16,
) -> ListenerFacts {
    let mut facts = ListenerFacts {
        process: Some(process),
        ..ListenerFacts::default()
    };
    let Some(main) = command.main_class.as_deref() else {
        facts.unknown =
            Some("its command line names no main class (not a JVM, or started with -jar)".into());
        return facts;
    };
    if !SERVER_MAINS.contains(&main) {
        facts.unknown = Some(format!(
            "its main class {main} is not ZooKeeper's own server (an embedded server, such as \
             HBase's HQuorumPeer, keeps its limits elsewhere)"
        ));
        return facts;
    }
    if let Some(p) = facts.process.as_mut() {
        p.main_class = Some(main.to_owned());
    }
    let property = command
        .max_cnxns_property
        .as_deref()
        // Integer.getInteger: what is not a number is no cap.
        .map(|v| u32::try_from(v.trim().parse::<i32>().unwrap_or(0).max(0)).unwrap_or(0));
    // ZooKeeperServerMain PORT DATADIR [TICKTIME [MAXCLIENTCNXNS]]: no file.
    if command.args.len() >= 2 && command.args[0].parse::<u16>().is_ok() {
        facts.kind = if command.args[0].parse::<u16>() == Ok(port) {
            ListenerKind::Plain
        } else {
            ListenerKind::Unknown
        };
        // ServerConfig's field, not the file's default of 60: 0 (none) unless the fourth
        // argument gives it.
        facts.max_client_cnxns = Some(match command.args.get(3) {
            Some(n) => u32::try_from(n.parse::<i32>().unwrap_or(0).max(0)).unwrap_or(0),
            None => 0,
        });
        facts.max_cnxns = Some(property.unwrap_or(0));
        return facts;
    }
    match config {
        None => {
            facts.unknown = Some("its command line names no configuration file".into());
        }
        Some(Err(why)) => facts.unknown = Some(why),
        Some(Ok(cfg)) => {
            let plain = cfg.client_port == Some(port)
                || (cfg.client_port.is_none() && cfg.servers.iter().any(|s| s.port == port));
            facts.kind = if cfg.secure_client_port == Some(port) {
                ListenerKind::Secure
            } else if plain {
                ListenerKind::Plain
            } else {
                // Not this listener's configuration, as far as can be told: its limits are
                // not taken from it.
                facts.unknown = Some(format!(
                    "port {port} is neither the clientPort nor the secureClientPort of its \
                     configuration, so its limits are not read from it"
                ));
                return facts;
            };
            facts.max_client_cnxns = Some(cfg.max_client_cnxns.unwrap_or(ZOOKEEPER_DEFAULT));
            // A key of the file is set as the property after the command line's.
            facts.max_cnxns = Some(cfg.max_cnxns.or(property).unwrap_or(0));
        }
    }
    facts
}

/// The configuration file argument of a ZooKeeper main class: its only argument.
fn config_arg(command: &JvmCommand) -> Option<&str> {
    match command.args.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// `name` as process `pid` sees it: under its root, or its working directory when relative.
fn under(procfs: &Procfs, pid: u32, name: &str) -> PathBuf {
    match name.strip_prefix('/') {
        Some(rest) => procfs.pid_file(pid, "root").join(rest),
        None => procfs.pid_file(pid, "cwd").join(name),
    }
}

/// The raw arguments of `pid`, `argv[0]` first.
fn argv(procfs: &Procfs, pid: u32) -> std::io::Result<Vec<String>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(procfs.pid_file(pid, "cmdline"))?
        .take(CMDLINE_READ_MAX)
        .read_to_end(&mut bytes)?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The facts of the listener on `port` held by `pid`, read now.
fn read_facts(procfs: &Procfs, pid: u32, port: u16) -> ListenerFacts {
    let comm = procfs.comm(pid).unwrap_or_default();
    let argv = match argv(procfs, pid) {
        Ok(a) => a,
        Err(e) => {
            return ListenerFacts {
                process: Some(ServerProcess {
                    pid,
                    comm,
                    ..ServerProcess::default()
                }),
                unknown: Some(format!("/proc/{pid}/cmdline could not be read ({e})")),
                ..ListenerFacts::default()
            };
        }
    };
    // Only a JVM has a main class to look for: `python3 -m http.server` has none.
    let is_jvm = argv
        .first()
        .and_then(|a| a.rsplit('/').next())
        .is_some_and(|name| name == "java" || name == "jsvc")
        || comm == "java";
    if !is_jvm {
        return ListenerFacts {
            process: Some(ServerProcess {
                pid,
                comm: comm.clone(),
                ..ServerProcess::default()
            }),
            unknown: Some(format!(
                "pid {pid} ({comm}) is not a Java process: not a ZooKeeper server whose \
                 configuration zkconn can read"
            )),
            ..ListenerFacts::default()
        };
    }
    let environ = std::fs::read(procfs.pid_file(pid, "environ")).unwrap_or_default();
    let command = parse_jvm_with(&env_options(&environ), argv.get(1..).unwrap_or_default());
    let config_name = config_arg(&command)
        .filter(|_| {
            command
                .main_class
                .as_deref()
                .is_some_and(|m| SERVER_MAINS.contains(&m))
        })
        .map(str::to_owned);
    let config = config_name.as_deref().map(|name| {
        ZooCfg::read_in(&under(procfs, pid, name), &|other| {
            under(procfs, pid, other)
        })
        .map_err(|e| format!("its configuration {name} could not be read: {e}"))
    });
    let changed = config_name
        .as_deref()
        .and_then(|name| changed_after_start(procfs, pid, &under(procfs, pid, name)));
    let process = ServerProcess {
        pid,
        comm,
        main_class: None,
        config: config_name,
    };
    let mut facts = facts_of(process, &command, config, port);
    facts.warning = changed;
    facts
}

/// A sentence when the file at `path` was changed after process `pid` started: what is read
/// from it now may not be what the server runs with.
fn changed_after_start(procfs: &Procfs, pid: u32, path: &std::path::Path) -> Option<String> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let started_ns = procfs.start_ns(pid)?;
    let age =
        std::time::Duration::from_nanos(crate::clock::now_boot_ns().saturating_sub(started_ns));
    let started = std::time::SystemTime::now().checked_sub(age)?;
    // A second of slack: the start time is in clock ticks.
    (modified > started + std::time::Duration::from_secs(1)).then(|| {
        "its configuration file was changed after the server started: the values read from \
         it may not be the ones it runs with"
            .to_owned()
    })
}

/// The process holding socket `inode`: the lowest pid among those that hold it (a forked
/// child shares its parent's sockets).
fn holder_of(procfs: &Procfs, inode: u64) -> Option<u32> {
    let mut pids = procfs.pids().ok()?;
    pids.sort_unstable();
    pids.into_iter()
        .find(|&pid| procfs.socket_inodes(pid).is_ok_and(|s| s.contains(&inode)))
}

/// The listeners on watched ports and their servers' facts, kept per socket inode.
#[derive(Debug, Default)]
pub struct Servers {
    known: HashMap<u64, (SocketAddr, ListenerFacts)>,
}

impl Servers {
    /// Learns the listeners of `found` on watched ports it does not know yet (`watched`
    /// decides), and forgets those no longer listed.
    pub fn update(
        &mut self,
        procfs: &Procfs,
        found: &[Listening],
        watched: &dyn Fn(SocketAddr) -> bool,
    ) {
        let wanted: Vec<&Listening> = found.iter().filter(|l| watched(l.addr)).collect();
        self.known
            .retain(|inode, _| wanted.iter().any(|l| l.inode == *inode));
        for l in wanted {
            if self.known.contains_key(&l.inode) {
                continue;
            }
            let facts = match (l.inode != 0).then(|| holder_of(procfs, l.inode)).flatten() {
                Some(pid) => read_facts(procfs, pid, l.addr.port()),
                None => ListenerFacts {
                    unknown: Some("no process was found holding the listening socket".into()),
                    ..ListenerFacts::default()
                },
            };
            tracing::info!(
                "listener {}: {}",
                l.addr,
                match (&facts.process, &facts.unknown) {
                    (Some(p), None) => format!(
                        "{:?} listener of pid {} ({}), maxClientCnxns {}",
                        facts.kind,
                        p.pid,
                        p.comm,
                        facts.max_client_cnxns.unwrap_or(ZOOKEEPER_DEFAULT)
                    ),
                    (_, Some(why)) => why.clone(),
                    (None, None) => "unknown".into(),
                }
            );
            self.known.insert(l.inode, (l.addr, facts));
        }
    }

    /// The facts per listening address.
    pub fn facts(&self) -> BTreeMap<SocketAddr, ListenerFacts> {
        self.known.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn cfg(text: &str) -> Option<Result<ZooCfg, String>> {
        Some(Ok(ZooCfg::parse("zoo.cfg", text).unwrap()))
    }

    fn process() -> ServerProcess {
        ServerProcess {
            pid: 7,
            comm: "java".into(),
            ..ServerProcess::default()
        }
    }

    #[test]
    fn the_main_class_follows_the_jvm_options() {
        let c = parse_jvm(&args(
            "-Dzookeeper.log.dir=/var/log -cp /a:/b -Xmx1g -Dzookeeper.maxCnxns=500 \
             org.apache.zookeeper.server.quorum.QuorumPeerMain /etc/zookeeper/conf/zoo.cfg",
        ));
        assert_eq!(
            c.main_class.as_deref(),
            Some("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        );
        assert_eq!(c.args, ["/etc/zookeeper/conf/zoo.cfg"]);
        assert_eq!(c.max_cnxns_property.as_deref(), Some("500"));
        assert_eq!(parse_jvm(&args("-jar zk.jar conf")).main_class, None);
        assert_eq!(
            parse_jvm(&args("--add-opens java.base/x=ALL Main"))
                .main_class
                .as_deref(),
            Some("Main")
        );
        // --enable-native-access takes a value too.
        assert_eq!(
            parse_jvm(&args("--enable-native-access ALL-UNNAMED Main z.cfg")).args,
            ["z.cfg"]
        );
    }

    #[rstest]
    #[case::plain(
        "clientPort=2181\nsecureClientPort=2281\n",
        2181,
        ListenerKind::Plain,
        60,
        0
    )]
    #[case::secure(
        "clientPort=2181\nsecureClientPort=2281\nmaxClientCnxns=10\n",
        2281,
        ListenerKind::Secure,
        10,
        0
    )]
    #[case::dynamic_config(
        "server.1=10.0.0.1:2888:3888;2181\nmaxCnxns=300\n",
        2181,
        ListenerKind::Plain,
        60,
        300
    )]
    #[case::neither("clientPort=2181\n", 2182, ListenerKind::Unknown, 60, 0)]
    #[case::unlimited(
        "clientPort=2181\nmaxClientCnxns=0\nmaxCnxns=-4\n",
        2181,
        ListenerKind::Plain,
        0,
        0
    )]
    fn the_configuration_says_which_listener_and_its_limits(
        #[case] text: &str,
        #[case] port: u16,
        #[case] kind: ListenerKind,
        #[case] per_host: u32,
        #[case] cap: u32,
    ) {
        let command = parse_jvm(&args(
            "-cp x org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg",
        ));
        let f = facts_of(process(), &command, cfg(text), port);
        assert_eq!(f.kind, kind);
        assert_eq!(f.unknown.is_some(), kind == ListenerKind::Unknown);
        if kind == ListenerKind::Unknown {
            // A configuration that is not this listener's gives it no limits.
            assert_eq!((f.max_client_cnxns, f.max_cnxns), (None, None));
        } else {
            assert_eq!(f.max_client_cnxns, Some(per_host));
            assert_eq!(f.max_cnxns, Some(cap));
        }
    }

    #[test]
    fn the_file_key_wins_over_the_command_line_property() {
        let command = parse_jvm(&args(
            "-Dzookeeper.maxCnxns=100 org.apache.zookeeper.server.quorum.QuorumPeerMain z",
        ));
        let with_key = facts_of(process(), &command, cfg("clientPort=1\nmaxCnxns=7\n"), 1);
        assert_eq!(with_key.max_cnxns, Some(7));
        let without = facts_of(process(), &command, cfg("clientPort=1\n"), 1);
        assert_eq!(without.max_cnxns, Some(100));
    }

    /// The JVM reads options from JAVA_TOOL_OPTIONS, then JDK_JAVA_OPTIONS, then its
    /// command line, a later definition replacing an earlier one.
    #[test]
    fn jvm_options_from_the_environment_count_before_the_command_lines() {
        let environ = b"PATH=/bin\0JDK_JAVA_OPTIONS=-Xmx1g -Dzookeeper.maxCnxns=4\0\
                        JAVA_TOOL_OPTIONS=-Dzookeeper.maxCnxns=9\0";
        let env = env_options(environ);
        let main = "org.apache.zookeeper.server.quorum.QuorumPeerMain z";
        let c = parse_jvm_with(&env, &args(main));
        assert_eq!(c.max_cnxns_property.as_deref(), Some("4"));
        let c = parse_jvm_with(&env, &args(&format!("-Dzookeeper.maxCnxns=6 {main}")));
        assert_eq!(c.max_cnxns_property.as_deref(), Some("6"));
        let c = parse_jvm_with(&env, &args(main));
        let f = facts_of(process(), &c, cfg("clientPort=1\n"), 1);
        assert_eq!(f.max_cnxns, Some(4));
    }

    #[test]
    fn the_standalone_arguments_form_has_no_file() {
        let command = parse_jvm(&args(
            "org.apache.zookeeper.server.ZooKeeperServerMain 2181 /data 2000 15",
        ));
        let f = facts_of(process(), &command, None, 2181);
        assert_eq!(
            (f.kind, f.max_client_cnxns, f.max_cnxns),
            (ListenerKind::Plain, Some(15), Some(0))
        );
        // Without the fourth argument, ServerConfig's 0: no limit (not the file's 60).
        let short = parse_jvm(&args(
            "org.apache.zookeeper.server.ZooKeeperServerMain 2181 /d",
        ));
        assert_eq!(
            facts_of(process(), &short, None, 2181).max_client_cnxns,
            Some(0)
        );
    }

    #[test]
    fn another_program_or_an_unreadable_file_is_unknown_with_a_reason() {
        let hbase = parse_jvm(&args("org.apache.hadoop.hbase.zookeeper.HQuorumPeer"));
        let f = facts_of(process(), &hbase, None, 2181);
        assert_eq!((f.kind, f.max_client_cnxns), (ListenerKind::Unknown, None));
        assert!(f.unknown.unwrap().contains("HQuorumPeer"));
        let zk = parse_jvm(&args("org.apache.zookeeper.server.quorum.QuorumPeerMain z"));
        let f = facts_of(process(), &zk, Some(Err("gone".into())), 2181);
        assert_eq!(
            (f.max_client_cnxns, f.unknown.as_deref()),
            (None, Some("gone"))
        );
    }

    #[test]
    fn a_server_in_a_fixture_proc_is_found_by_its_socket_and_read_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("42");
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::create_dir_all(p.join("root/etc/zk")).unwrap();
        std::os::unix::fs::symlink("socket:[9001]", p.join("fd/5")).unwrap();
        std::fs::write(
            p.join("stat"),
            "42 (java) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0",
        )
        .unwrap();
        std::fs::write(
            p.join("cmdline"),
            b"java\0-cp\0/x\0org.apache.zookeeper.server.quorum.QuorumPeerMain\0/etc/zk/zoo.cfg\0",
        )
        .unwrap();
        std::fs::write(
            p.join("root/etc/zk/zoo.cfg"),
            "dynamicConfigFile=/etc/zk/zoo.cfg.dynamic\nmaxClientCnxns=9\n",
        )
        .unwrap();
        std::fs::write(
            p.join("root/etc/zk/zoo.cfg.dynamic"),
            "server.1=h:1:2;2181\n",
        )
        .unwrap();
        let procfs = Procfs::at(dir.path(), 100);
        let mut servers = Servers::default();
        let addr: SocketAddr = "0.0.0.0:2181".parse().unwrap();
        let found = [Listening { addr, inode: 9001 }];
        servers.update(&procfs, &found, &|a| a.port() == 2181);
        let facts = servers.facts();
        let f = &facts[&addr];
        assert_eq!(f.unknown, None);
        assert_eq!(f.kind, ListenerKind::Plain);
        assert_eq!(f.max_client_cnxns, Some(9));
        let p = f.process.as_ref().unwrap();
        assert_eq!(
            (p.pid, p.comm.as_str(), p.config.as_deref()),
            (42, "java", Some("/etc/zk/zoo.cfg"))
        );
        // Gone from the table: forgotten.
        servers.update(&procfs, &[], &|_| true);
        assert!(servers.facts().is_empty());
    }
}
