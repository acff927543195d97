//! Command-line interface. Every value is validated here, before anything is loaded.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::probe::HookChoice;

/// The version and the commit it was built from (`git describe`, see build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ZKCONN_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "zkconn",
    version = VERSION,
    about = "Who holds this host's ZooKeeper connections: exact per-process and per-cgroup \
             counts from eBPF",
    long_about = "zkconn counts every TCP connection from this host to ZooKeeper in the kernel \
                  (eBPF on sock:inet_sock_set_state), per process and per cgroup, including \
                  the connections that existed before it started, and names every owner: \
                  HBase daemon and role, YARN container and application, Kubernetes pod, \
                  Docker container, systemd unit, service. It computes headroom against \
                  maxClientCnxns, time to limit and leak suspects. `zkconn` in a terminal opens \
                  the live view. Needs root, or CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN \
                  before Linux 5.8) plus CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; after \
                  attach it keeps CAP_BPF only where the kernel wants it for map access \
                  (before 5.19), and before 5.11 it needs LimitMEMLOCK=infinity (see \
                  docs/fleet.md). Where no BPF hook can load, `--hook auto` samples the \
                  socket tables instead (`poll`)."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Without one, `top` in a terminal.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live view: servers against their limits, owners, growth, refusals (the default
    /// in a terminal).
    ///
    /// Keys: g group, s/</> sort, r reverse, / filter, Enter drill down, p pause, ? help,
    /// q quit.
    Top(TopArgs),
    /// Attach, seed existing connections, observe for --duration, print once and exit.
    ///
    /// Ctrl-C or SIGTERM ends the observation early and prints the snapshot.
    Snapshot(SnapshotArgs),
    /// Nagios/Icinga plugin: observe for --duration, print one status line with
    /// performance data, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    ///
    /// CRITICAL when a server refused this host during the check or usage reached --crit;
    /// WARNING from --warn, or when counts are incomplete (lost events, full maps).
    Check(CheckArgs),
    /// Keep the probes attached and serve /metrics (Prometheus), /v1/snapshot (JSON) and
    /// /healthz over HTTP, read only; optionally append a snapshot per interval as NDJSON.
    ///
    /// SIGTERM or SIGINT detaches and exits 0; SIGHUP reloads --rules and --zoo-cfg.
    Daemon(DaemonArgs),
    /// What held the connections at a past time: the sample the daemon's history store
    /// (`daemon --history`) holds for --at, as tables or as the JSON document. Needs no
    /// privileges beyond reading the store.
    History(HistoryArgs),
    /// An incident report from the history store for the window around --around TIME or
    /// the last alarm (--alarm): the budgets that reached their limit, who held them and how
    /// that grew, who was refused, the YARN containers and applications involved, and a
    /// chart of usage against the limit; as report.md, report.html and usage.svg in --out.
    Report(ReportArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the manual page (roff) to standard output, or write a page per command into
    /// --dir.
    #[command(hide = true)]
    Man {
        /// Write zkconn.1 and zkconn-COMMAND.1 for every command here.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The shells `zkconn completions` writes for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where to serve HTTP. Loopback by default; any other address is reachable from other
    /// hosts (the endpoints are read only).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9661")]
    pub listen: std::net::SocketAddr,
    /// Append one snapshot per interval, one JSON document per line, to this file (`-`:
    /// stdout).
    #[arg(long, value_name = "PATH|-")]
    pub ndjson: Option<PathBuf>,
    /// Rotate the --ndjson file once it would pass this size: it becomes PATH.1 (replacing
    /// the one before), so both take at most twice this.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub ndjson_max_mib: u32,
    /// How often a snapshot is appended to --ndjson (and the documents refreshed when nobody
    /// asks). A request for /v1/snapshot or /metrics finds them at most a second old.
    #[arg(long, value_name = "SECONDS", default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Owners (by open connections) that get series of their own in /metrics; the rest
    /// are summed under owner="other".
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub metrics_owners: u16,
    /// Client hosts (by usage of their listener's limit) that get series of their own in
    /// /metrics where this host is a ZooKeeper server; the rest are summed under
    /// client_ip="other".
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub metrics_clients: u16,
    /// TLS and basic authentication for the HTTP server, from a file in the Prometheus
    /// exporter toolkit's format (the one node_exporter's --web.config.file takes). It is
    /// read again when it or a certificate file it names changes.
    #[arg(long, value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,
    /// Record a sample of the snapshot document every --history-interval to a history store
    /// in this directory, read back by `zkconn history --at TIME` (after the daemon, the
    /// processes and their containers are gone). Without a value: /var/lib/zkconn/history.
    /// One daemon per store; a full disk stops the recording, not the daemon (/healthz
    /// says so).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = DEFAULT_HISTORY_DIR)]
    pub history: Option<PathBuf>,
    /// How often --history records a sample (the daemon refreshes at least this often).
    #[arg(long, value_name = "SECONDS", default_value = "10s", value_parser = parse_interval)]
    pub history_interval: Duration,
    /// How long --history keeps samples (those older than a day thinned to one a minute).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub history_max_age: Duration,
    /// The most --history keeps on disk; the oldest hours go first.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub history_max_mib: u32,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// Where the daemon keeps its history store by default (the unit's `StateDirectory=zkconn`).
pub const DEFAULT_HISTORY_DIR: &str = "/var/lib/zkconn/history";

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The time to show: RFC 3339 (2026-12-03T03:10:00Z), HH:MM or HH:MM:SS (the last such
    /// time of day, local time), -2h (that long before now), or now.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        required_unless_present = "from",
        conflicts_with_all = ["from", "subject"]
    )]
    pub at: Option<String>,
    /// A series instead: every sample from this time (as --at) of one process, container,
    /// application, service, server or client host (give one).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        requires = "subject"
    )]
    pub from: Option<String>,
    /// The series ends at this time (as --at).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        default_value = "now",
        requires = "from"
    )]
    pub to: String,
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Print JSON: the snapshot's document (docs/json.md, with a `history` object naming the
    /// sample), or for a series `zkconn.history-series/v1` (docs/history.md).
    #[arg(long)]
    pub json: bool,
    /// The history store (the daemon's --history).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_HISTORY_DIR)]
    pub history: PathBuf,
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("centre").required(true).multiple(false))]
pub struct ReportArgs {
    /// The time the window is centred on (as `history --at`).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        group = "centre"
    )]
    pub around: Option<String>,
    /// Centre the window on the start of the last alarm the store holds (the last run of
    /// samples in which a budget was critical; else warning).
    #[arg(long, group = "centre")]
    pub alarm: bool,
    /// How far the window reaches before and after its centre.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_report_window)]
    pub window: Duration,
    /// Where to write report.md, report.html and usage.svg (made if missing; those three
    /// files are replaced). Default: zkconn-report-<centre time> in the current directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The history store (the daemon's --history).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_HISTORY_DIR)]
    pub history: PathBuf,
}

fn parse_report_window(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(10) || d > Duration::from_secs(7 * 86_400) {
        return Err(format!("{text:?} is not a window between 10s and 7d"));
    }
    Ok(d)
}

/// Whose series `history --from` shows: one of these.
#[derive(Debug, Args)]
#[group(id = "subject", multiple = false)]
pub struct SubjectArgs {
    /// A process, by pid (a pid reused within the range shows both processes' rows).
    #[arg(long, value_name = "PID", requires = "from")]
    pub process: Option<u32>,
    /// A YARN container, by id.
    #[arg(long, value_name = "ID", requires = "from")]
    pub container: Option<String>,
    /// A YARN application, by id.
    #[arg(long, value_name = "ID", requires = "from")]
    pub application: Option<String>,
    /// A service, as the `services` rows name it ("HBase RegionServer").
    #[arg(long, value_name = "NAME", requires = "from")]
    pub service: Option<String>,
    /// A ZooKeeper server this host connects to (IP:PORT): a line per budget (local IP).
    #[arg(long, value_name = "IP:PORT", requires = "from")]
    pub server: Option<String>,
    /// A client host of this host's ZooKeeper listeners (IP): a line per listener.
    #[arg(long, value_name = "IP", requires = "from")]
    pub client: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// How long to observe (refusals during it make the check CRITICAL).
    #[arg(long, value_name = "SECONDS", default_value = "2s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Give up with UNKNOWN when no verdict came within this time (a kernel that takes
    /// long to load the programs, say), as monitoring plugins do. Longer than --duration.
    #[arg(short = 't', long, value_name = "SECONDS", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often the screen refreshes: seconds, or with a unit (500ms, 2s).
    #[arg(long, value_name = "SECONDS", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Open the view on the past: the samples of this history store (the daemon's
    /// --history; without a value /var/lib/zkconn/history), from the one at --at; `[` and
    /// `]` step, `t` goes to a time. Attaches nothing.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = DEFAULT_HISTORY_DIR,
        requires = "at"
    )]
    pub history: Option<PathBuf>,
    /// With --history: the time to open on (as `history --at`).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        requires = "history"
    )]
    pub at: Option<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!(
            "{text:?} is not a refresh interval between 100ms and 1h"
        ));
    }
    Ok(d)
}

/// What to watch and how to judge it: every mode that attaches takes these.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Print the JSON document (schema zkconn.snapshot/v1, see docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// How long to observe before printing: seconds, or with a unit (500ms, 30s, 5m, 1h).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// ZooKeeper's per-host limit, to compute usage and headroom against.
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// The servers' maxClientCnxns (0: unlimited). Default: the --zoo-cfg value (60 when it
    /// has none), else, for a server on this host, its own configuration (read through
    /// /proc), else what each server named by --zk says when asked (the `conf` four-letter
    /// word, from another local address when this one is refused, else the AdminServer),
    /// else 60, marked as assumed in every output.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = parse_connections)]
    pub max_client_cnxns: Option<u32>,
    /// The limit of one server, overriding the others: `zk1:2181=120`. Repeatable.
    #[arg(long = "limit", value_name = "SERVER=N")]
    pub limit: Vec<String>,
    /// The AdminServer's port, asked for /commands/configuration when `conf` gives no limit
    /// (0: never ask it).
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    pub admin_port: u16,
    /// Usage of the limit, in percent, at or over which a server's alarm is WARNING (80 or
    /// 80%; a value below 1 needs the % sign), or a range in the monitoring plugins' syntax
    /// (START:END alerts outside it, START: below, ~:END above, @START:END inside).
    #[arg(short = 'w', long, value_name = "PCT|RANGE", default_value = "80", value_parser = crate::alarm::parse_range)]
    pub warn: crate::alarm::Range,
    /// As --warn, for CRITICAL (also CRITICAL: the server refused this host within the last
    /// minute).
    #[arg(short = 'c', long, value_name = "PCT|RANGE", default_value = "95", value_parser = crate::alarm::parse_range)]
    pub crit: crate::alarm::Range,
    /// Window for growth rates, time to limit and leak suspects (docs/suspects.md).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_window)]
    pub window: Duration,
}

fn parse_connections(text: &str) -> Result<u32, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not a number of connections; write a whole number (0 is unlimited)")
    })
}

fn parse_window(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(10) {
        return Err(format!(
            "{text:?} is too short a window to tell a trend; give at least 10s"
        ));
    }
    Ok(d)
}

/// How owners are named.
#[derive(Debug, Args, Clone, Default)]
pub struct AttributionArgs {
    /// Site rules (TOML) that add or override classifications: match on main class,
    /// command line, comm, executable or cgroup; set kind and/or service (docs/rules.md).
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
}

/// Which connections are ZooKeeper's. With none of these, ports 2181 and 2281 on any address.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// ZooKeeper connect string (`zk1:2181,zk2:2181/chroot`, IPv6 as `[addr]:port`);
    /// hostnames are resolved at start to all their addresses. Repeatable.
    #[arg(long = "zk", value_name = "CONNECT_STRING")]
    pub zk: Vec<String>,
    /// Watch these ports towards any address (`2181,2281`). Repeatable.
    #[arg(long = "port", value_name = "PORT[,PORT...]")]
    pub port: Vec<String>,
    /// Read clientPort, secureClientPort, clientPortAddress and server.N from a zoo.cfg.
    #[arg(long = "zoo-cfg", value_name = "PATH")]
    pub zoo_cfg: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Kernel hook for connects and state changes: `auto` tries btf, fentry, tracepoint,
    /// kprobe in that order and takes the first this kernel accepts, and falls back to poll
    /// (the socket tables sampled each second, no BPF) when the kernel refuses them all
    /// (docs/kernels.md).
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub hook: HookChoice,
    /// Replace a kernel feature by its older equivalent even where the kernel has the newer
    /// one (they are replaced anyway where it does not): `monotonic-clock` and `perf-buffer`
    /// (a perf event array for the ring buffer) for kernels before 5.8, `probe-read` for
    /// kernels before 5.5 (docs/kernels.md).
    #[arg(
        long = "fallback",
        value_enum,
        value_delimiter = ',',
        value_name = "FALLBACK[,...]"
    )]
    pub fallback: Vec<crate::probe::compat::Fallback>,
    /// Capacity of the kernel's connection table; ZooKeeper sockets beyond it are counted
    /// as overflow; the server's side has tables of this size too. Preallocated: about 700
    /// bytes of kernel memory each (46 MiB by default; 400 bytes with --no-server-side), at
    /// most 1048576.
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = parse_max_connections)]
    pub max_connections: u32,
    /// Capacity of the kernel's process table (processes that hold or held connections).
    /// Each also has a row in the kernel's counter table (see --max-cgroups). Preallocated:
    /// about 290 bytes each, at most 1048576.
    #[arg(long, value_name = "N", default_value_t = 16_384, value_parser = parse_max_processes)]
    pub max_processes: u32,
    /// Rows of the kernel's counter table beyond one per process: it keeps one row per
    /// process, cgroup it connected from and server budget, so a process that used several
    /// servers or cgroups takes more than one. Also the rows, per cgroup and server budget,
    /// that keep counting for cgroups and servers when that table is full. Preallocated:
    /// about 356 bytes each, at most 262144.
    #[arg(long, value_name = "N", default_value_t = 4_096, value_parser = parse_max_cgroups)]
    pub max_cgroups: u32,
    /// Do not follow the connections that this host's listeners on the watched ports accept
    /// (a ZooKeeper server's side: open connections and refusals per client host, the
    /// `clients` rows). Followed by default; it costs nothing on a host without such a
    /// listener.
    #[arg(long)]
    pub no_server_side: bool,
    /// Size of the kernel→user event ring buffer in KiB (a power of two, at least 4); with
    /// the perf-buffer fallback, shared among the CPUs' buffers (8 to 64 pages each).
    #[arg(long, value_name = "KIB", default_value_t = 256, value_parser = parse_ring_kib)]
    pub ring_buffer_kib: u32,
    /// NAT: `auto` asks the host's connection tracking table which source address a server
    /// sees for each connection (a container's, masqueraded to the host's) and counts it
    /// there against `maxClientCnxns`; this keeps CAP_NET_ADMIN after attach. `off` never
    /// asks: connections count under their own source address.
    #[arg(long, value_enum, default_value_t = NatChoice::Auto)]
    pub nat: NatChoice,
    /// How often to compare the kernel's connection rows with the kernel's socket table
    /// (sock_diag) and repair drift: rows whose socket is gone are retired, untracked live
    /// connections adopted, each after two consecutive rounds. After a round of 0.1 s or more
    /// (about 0.5 s at 100,000 connections), the next waits 400 times as long as it took
    /// where that is longer. 0 turns it off.
    #[arg(long, value_name = "SECONDS", default_value = "10s", value_parser = parse_reconcile_interval)]
    pub reconcile_interval: Duration,
    /// How long a process that exited and holds no connection stays a row of its own. Then
    /// it leaves the process rows and the kernel's tables (which would otherwise fill on a
    /// busy node); its counts stay in its container, application and service rows. A finished
    /// YARN container (then application) leaves its rows the same time after its last process.
    /// On a ZooKeeper server's host, a client host with nothing open whose counts did not
    /// change leaves the client rows after the same time (its counts stay in its listener's).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub retain_exited: Duration,
}

/// `--nat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NatChoice {
    Auto,
    Off,
}

fn parse_reconcile_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if !d.is_zero() && (d < Duration::from_secs(1) || d > Duration::from_secs(3600)) {
        return Err(format!(
            "{text:?} is not a reconciliation interval; give 0 (off) or 1s to 1h"
        ));
    }
    Ok(d)
}

/// `30`, `1.5`, `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!("{text:?} is not a duration; write seconds (30) or 500ms, 30s, 5m, 1h, 7d")
    })?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=31_536_000.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (0 to one year)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Kernel memory per entry of each capacity flag, as `bpftool map show` reports the
/// preallocated hash maps behind it on 6.18 (`ZK_CONNS` 184 + `ZK_SEEDS` 216 bytes per
/// connection; `ZK_OWNERS` 112 + a `ZK_STATS` row 178 per process; a `ZK_STATS` row and a
/// `ZK_STATS_SPILL` row, 178 each, per `--max-cgroups`).
/// Measured with `bpftool map show` (6.18): the connection and seed tables of both sides.
const BYTES_PER_CONNECTION: u64 = 704;
const BYTES_PER_PROCESS: u64 = 290;
const BYTES_PER_CGROUP: u64 = 356;

fn parse_max_connections(text: &str) -> Result<u32, String> {
    capacity(text, 1 << 20, BYTES_PER_CONNECTION)
}

fn parse_max_processes(text: &str) -> Result<u32, String> {
    capacity(text, 1 << 20, BYTES_PER_PROCESS)
}

fn parse_max_cgroups(text: &str) -> Result<u32, String> {
    capacity(text, 1 << 18, BYTES_PER_CGROUP)
}

/// A table capacity: at least 1, at most `max`, with what a refused one would cost.
fn capacity(text: &str, max: u32, bytes_each: u64) -> Result<u32, String> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of entries"))?;
    let mib = |n: u64| (n * bytes_each).div_ceil(1 << 20);
    if n == 0 {
        return Err("the table needs at least 1 entry".to_owned());
    }
    if n > u64::from(max) {
        return Err(format!(
            "{n} entries would preallocate about {} MiB of kernel memory ({bytes_each} bytes \
             each) before anything is counted; at most {max} (about {} MiB)",
            mib(n),
            mib(u64::from(max))
        ));
    }
    Ok(n as u32)
}

fn parse_ring_kib(text: &str) -> Result<u32, String> {
    let kib: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!(
            "{kib} KiB is not a power of two between 4 and 1048576 (the kernel requires it)"
        ));
    }
    Ok(kib)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use rstest::rstest;

    use super::*;

    /// `--hook`'s help spells `auto`'s order in prose: it must be the order `auto` tries.
    #[test]
    fn the_hook_help_names_autos_order() {
        let cmd = Cli::command();
        let snapshot = cmd
            .find_subcommand("snapshot")
            .expect("snapshot subcommand");
        let help = snapshot
            .get_arguments()
            .find(|a| a.get_id() == "hook")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .expect("--hook has help")
            .to_string();
        let names: Vec<&str> = zkconn_common::hooks::Hook::AUTO_ORDER
            .iter()
            .map(|h| h.name())
            .collect();
        let order = format!("tries {} in that order", names.join(", "));
        assert!(help.contains(&order), "{help:?} should say {order:?}");
    }

    #[rstest]
    #[case("0", Ok(Duration::ZERO))]
    #[case("2", Ok(Duration::from_secs(2)))]
    #[case("1.5", Ok(Duration::from_millis(1500)))]
    #[case("500ms", Ok(Duration::from_millis(500)))]
    #[case("5m", Ok(Duration::from_secs(300)))]
    #[case("1h", Ok(Duration::from_secs(3600)))]
    #[case("-1", Err(()))]
    #[case("soon", Err(()))]
    #[case("inf", Err(()))]
    #[case("NaN", Err(()))]
    fn durations(#[case] text: &str, #[case] expected: Result<Duration, ()>) {
        assert_eq!(parse_duration(text).map_err(|_| ()), expected);
    }

    #[rstest]
    #[case("256", Ok(256))]
    #[case("4", Ok(4))]
    #[case("3", Err(()))]
    #[case("100", Err(()))]
    #[case("x", Err(()))]
    fn ring_sizes(#[case] text: &str, #[case] expected: Result<u32, ()>) {
        assert_eq!(parse_ring_kib(text).map_err(|_| ()), expected);
    }

    #[rstest]
    #[case("0", Ok(Duration::ZERO))]
    #[case("1s", Ok(Duration::from_secs(1)))]
    #[case("10", Ok(Duration::from_secs(10)))]
    #[case("1h", Ok(Duration::from_secs(3600)))]
    #[case("500ms", Err(()))]
    #[case("2h", Err(()))]
    #[case("often", Err(()))]
    fn reconcile_intervals(#[case] text: &str, #[case] expected: Result<Duration, ()>) {
        assert_eq!(parse_reconcile_interval(text).map_err(|_| ()), expected);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
