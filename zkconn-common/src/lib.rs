//! Plain-old-data shared by zkconn's kernel programs and its userspace.
//!
//! Everything here crosses the kernel/user boundary through BPF maps, globals or the
//! ring buffer, so every type is `#[repr(C)]`, `Copy`, carries its padding explicitly and
//! has no `bool`. This crate must not grow logic: it is the contract, nothing else. Beside
//! it, [`hooks`] names the hooks for userspace, xtask and the tests, which depend on this
//! crate without building the eBPF object, and [`accounting`] holds the programs' decisions
//! as pure functions, tested on the host.
//!
//! Addresses are always 16 bytes: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so one key
//! type serves both families and a v4-mapped connect on an IPv6 socket matches its v4 target.
#![no_std]

pub mod accounting;
pub mod hooks;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Names of the maps in the eBPF object, used by userspace to find and size them.
pub mod map_names {
    /// Socket address → [`super::Conn`]: every tracked ZooKeeper socket.
    pub const CONNS: &str = "ZK_CONNS";
    /// 4-tuple → [`super::Conn`]: connections that existed before zkconn started.
    pub const SEEDS: &str = "ZK_SEEDS";
    /// tgid → [`super::Owner`]: live processes that own tracked sockets.
    pub const OWNERS: &str = "ZK_OWNERS";
    /// [`super::StatsKey`] (process, cgroup, server budget) → [`super::Counters`]: one row
    /// per combination, one update per counted transition; userspace sums the per-process,
    /// per-cgroup and per-server counters from it.
    pub const STATS: &str = "ZK_STATS";
    /// [`super::StatsKey`] with the process zeroed → [`super::Counters`]: where a cgroup's
    /// and a server's counts go when `STATS` is full (the process's are then lost, and
    /// counted as overflow).
    pub const STATS_SPILL: &str = "ZK_STATS_SPILL";
    /// Socket address → [`super::Inbound`]: every accepted connection on a watched port
    /// (this host is a ZooKeeper server) until the server lets it go.
    pub const INBOUND: &str = "ZK_INBOUND";
    /// 4-tuple (local side first) → [`super::Inbound`]: accepted connections that existed
    /// before zkconn started.
    pub const INBOUND_SEEDS: &str = "ZK_INBOUND_SEEDS";
    /// [`super::ClientKey`] (listener address and port, client address) →
    /// [`super::ClientCounters`]: what the server side saw of each client host.
    pub const CLIENTS: &str = "ZK_CLIENTS";
    /// Watched ports → [`super::port_flags`].
    pub const PORTS: &str = "ZK_PORTS";
    /// Switches userspace flips at run time, indexed by [`super::control`].
    pub const CONTROL: &str = "ZK_CONTROL";
    /// [`super::Endpoint`] → 1, for ports watched only towards given addresses.
    pub const ENDPOINTS: &str = "ZK_ENDPOINTS";
    /// Per-CPU probe health counters, indexed by [`super::probe_counter`].
    pub const PROBE_COUNTERS: &str = "ZK_PROBE_COUNTERS";
    /// [`super::Event`]s and [`super::OwnerEvent`]s: a ring buffer, or a perf event array
    /// (see [`super::event_output`]).
    pub const EVENTS: &str = "ZK_EVENTS";
    /// One per-CPU [`super::OwnerEvent`] where an event is built before a perf event array
    /// copies it out.
    pub const EVENT_SCRATCH: &str = "ZK_EVENT_SCRATCH";
}

/// Names of the globals userspace sets before loading.
pub mod global_names {
    /// [`super::StateTpLayout`] for `sock:inet_sock_set_state`.
    pub const STATE_TP_LAYOUT: &str = "STATE_TP_LAYOUT";
    /// [`super::ExitTpLayout`] for `sched:sched_process_exit`.
    pub const EXIT_TP_LAYOUT: &str = "EXIT_TP_LAYOUT";
    /// [`super::ResetTpLayout`] for `tcp:tcp_receive_reset`.
    pub const RESET_TP_LAYOUT: &str = "RESET_TP_LAYOUT";
    /// [`super::RefusalConfig`].
    pub const REFUSAL: &str = "REFUSAL";
    /// [`super::SockLayout`] for the hooks that get a `struct sock *`.
    pub const SOCK_LAYOUT: &str = "SOCK_LAYOUT";
    /// [`super::TaskLayout`]: where a task's cgroup names are.
    pub const TASK_LAYOUT: &str = "TASK_LAYOUT";
    /// A u32 [`super::event_output`] value: how events reach userspace.
    pub const EVENT_OUTPUT: &str = "EVENT_OUTPUT";
    /// [`super::PortList`]: the watched ports, when few.
    pub const PORT_LIST: &str = "PORT_LIST";
}

/// How the kernel programs hand events to userspace (the `EVENT_OUTPUT` global).
pub mod event_output {
    /// The BPF ring buffer (`ZK_EVENTS` is a ring buffer; 5.8+).
    pub const RING_BUFFER: u32 = 0;
    /// A perf event array, one buffer per CPU (`ZK_EVENTS` is loaded as a perf event array;
    /// every kernel zkconn loads on). Events are written into `ZK_EVENT_SCRATCH` first.
    pub const PERF_BUFFER: u32 = 1;
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    /// `sock:inet_sock_set_state` classic tracepoint.
    pub const STATE_TP: &str = "zk_inet_sock_set_state";
    /// `sched:sched_process_exit` classic tracepoint.
    pub const EXIT_TP: &str = "zk_sched_process_exit";
    /// `tcp:tcp_receive_reset` classic tracepoint.
    pub const RESET_TP: &str = "zk_tcp_receive_reset";
    /// `inet_sock_set_state` BTF tracepoint (`tp_btf`).
    pub const STATE_BTF: &str = "zk_btf_inet_sock_set_state";
    /// `tcp_receive_reset` BTF tracepoint (`tp_btf`), attached instead of [`RESET_TP`]
    /// where the kernel has BTF: it needs no perf event.
    pub const RESET_BTF: &str = "zk_btf_tcp_receive_reset";
    /// fentry on `tcp_connect` (the `fentry` hook's connect point).
    pub const CONNECT_FENTRY: &str = "zk_fentry_tcp_connect";
    /// fentry on `tcp_set_state` (the `fentry` hook's state changes).
    pub const SET_STATE_FENTRY: &str = "zk_fentry_tcp_set_state";
    /// kprobe on `tcp_connect` (the `kprobe` hook's connect point).
    pub const CONNECT_KPROBE: &str = "zk_kprobe_tcp_connect";
    /// kprobe on `tcp_set_state` (the `kprobe` hook's state changes).
    pub const SET_STATE_KPROBE: &str = "zk_kprobe_tcp_set_state";
    /// Every program, for per-program statistics (recursion misses, run time).
    pub const ALL: [&str; 9] = [
        STATE_TP,
        EXIT_TP,
        RESET_TP,
        RESET_BTF,
        STATE_BTF,
        CONNECT_FENTRY,
        SET_STATE_FENTRY,
        CONNECT_KPROBE,
        SET_STATE_KPROBE,
    ];
}

/// Indexes of the [`map_names::CONTROL`] array.
pub mod control {
    /// Nonzero while seeded connections may still wait in `SEEDS` (userspace clears it once
    /// `SEEDS` is empty, so later connections skip the seed table altogether).
    pub const SEEDS_PENDING: u32 = 0;
    /// Nonzero while userspace scans for connections that predate it: connects then record
    /// their socket's inode ([`super::Conn::ino`]), so seeding can tell a socket the kernel
    /// saw connect from an older one by the same inode `/proc` and sock_diag report.
    pub const SEEDING: u32 = 1;
    /// Nonzero while accepted connections on watched ports are followed (the server side:
    /// see [`super::map_names::INBOUND`]).
    pub const INBOUND: u32 = 2;
    /// Nonzero while seeded accepted connections may still wait in `INBOUND_SEEDS`.
    pub const INBOUND_SEEDS_PENDING: u32 = 3;
    /// Number of slots.
    pub const COUNT: u32 = 4;
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Values of the [`map_names::PORTS`] map.
pub mod port_flags {
    /// Every connection to this port is ZooKeeper's, whatever the address.
    pub const ANY_ADDRESS: u8 = 1;
    /// Connections to this port are ZooKeeper's when (address, port) is in `ENDPOINTS`.
    pub const ENDPOINTS: u8 = 2;
}

/// How many watched ports [`PortList`] holds.
pub const PORT_LIST_LEN: usize = 8;

/// The watched ports and their [`port_flags`], fixed at load: every TCP state change on the
/// host tests its destination port, and a few compares against constants cost less than a
/// lookup in [`map_names::PORTS`] (whose 64 KiB of entries a random port rarely finds in
/// cache). With more ports than the list holds, the map decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortList {
    pub ports: [u16; PORT_LIST_LEN],
    /// The flags of `ports[i]`; 0 in unused slots.
    pub flags: [u8; PORT_LIST_LEN],
    /// 1: the ports do not fit the list; look them up in [`map_names::PORTS`].
    pub use_map: u32,
    pub _pad: u32,
}

impl PortList {
    /// The list for `ports` (port → flags): in place when they fit, else the map's.
    pub fn of(ports: impl ExactSizeIterator<Item = (u16, u8)>) -> PortList {
        let mut list = PortList::default();
        if ports.len() > PORT_LIST_LEN {
            list.use_map = 1;
            return list;
        }
        for (i, (port, flags)) in ports.enumerate() {
            list.ports[i] = port;
            list.flags[i] = flags;
        }
        list
    }
}

/// Bits of [`Conn::flags`].
pub mod conn_flags {
    /// The socket reached ESTABLISHED at least once (its close is `closed`, not `failed`).
    pub const ESTABLISHED: u8 = 1;
    /// The connection existed before zkconn started and was seeded from `/proc`.
    pub const SEEDED: u8 = 2;
    /// The server refused it: it closed or reset the connection right after the handshake
    /// without sending a byte (ZooKeeper's `maxClientCnxns` refusal).
    pub const REFUSED: u8 = 4;
    /// It connected while userspace seeded ([`control::SEEDING`]): the scan may have seeded
    /// it too, so its first change removes a seed of its tuple. Cleared then.
    pub const WHILE_SEEDING: u8 = 8;
}

/// Indexes of the [`map_names::PROBE_COUNTERS`] per-CPU array.
pub mod probe_counter {
    /// An event could not be written to the ring buffer or perf buffer (it was full).
    pub const LOST_EVENTS: u32 = 0;
    /// A ZooKeeper socket was not tracked because `CONNS` was full.
    pub const OVERFLOW_CONNS: u32 = 1;
    /// A process was not tracked because `OWNERS` was full.
    pub const OVERFLOW_OWNERS: u32 = 2;
    /// A counter row could not be created: [`map_names::STATS`] full (the process's counts
    /// lost), and once more when [`map_names::STATS_SPILL`] is full too (its cgroup's and
    /// server's lost).
    pub const OVERFLOW_STATS: u32 = 3;
    /// A seeded connection was picked up by the kernel at its first state change.
    pub const SEEDS_ADOPTED: u32 = 4;
    /// Changes the programs made to `CONNS` or `SEEDS` (a row added, changed or removed),
    /// counted after the change: while the sum stands still, userspace's last copy of the
    /// rows is current and it need not read them again.
    pub const ROW_CHANGES: u32 = 5;
    /// An accepted connection was not followed because `INBOUND` was full (or a seed could
    /// not move into it).
    pub const OVERFLOW_INBOUND: u32 = 6;
    /// A client host's counters could not be kept because `CLIENTS` was full.
    pub const OVERFLOW_CLIENTS: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
}

/// Field offsets of `sock:inet_sock_set_state`, read by userspace from tracefs
/// (`events/sock/inet_sock_set_state/format`) so no layout is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateTpLayout {
    pub skaddr: u16,
    pub oldstate: u16,
    pub newstate: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// 1 once userspace filled the offsets; the program does nothing while 0.
    pub valid: u16,
    /// Sizes in bytes (1, 2, 4 or 8) of the scalar fields, as the format file gives them:
    /// kernels differ (`protocol` was a `__u8` before 5.6, a `__u16` since).
    pub skaddr_size: u16,
    /// `oldstate` and `newstate`.
    pub state_size: u16,
    /// `sport` and `dport`.
    pub port_size: u16,
    pub family_size: u16,
    pub protocol_size: u16,
}

/// Where the fields a state hook needs sit in the running kernel's `struct sock`, from its
/// BTF at load time (the Rust BPF toolchain has no CO-RE relocations, so nothing is compiled
/// in). Read with `bpf_probe_read_kernel`: a wrong offset reads wrong data or fails, it never
/// faults.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLayout {
    /// `skc_dport` (big-endian u16).
    pub dport: u32,
    /// `inet_sock.inet_sport` (the local port, big-endian). Not `skc_num`: `tcp_set_state`
    /// zeroes that (`inet_put_port`) before the state store fires the BTF tracepoint on
    /// TCP_CLOSE, and a seeded connection's close would then not find its seed.
    /// <https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/inet_hashtables.c#L206>
    pub sport: u32,
    /// `skc_num` (the local port in host order, inside `struct sock`, so the BTF hooks load
    /// it directly): valid while the socket is bound, from the connect until the close.
    pub num: u32,
    /// `skc_family` (u16).
    pub family: u32,
    /// `skc_state` (u8): the state before a `tcp_set_state` call.
    pub state: u32,
    /// `skc_daddr` and `skc_rcv_saddr` (IPv4, 4 bytes each).
    pub daddr: u32,
    pub saddr: u32,
    /// `skc_v6_daddr` and `skc_v6_rcv_saddr` (16 bytes each); valid when `has_v6` is 1.
    pub daddr_v6: u32,
    pub saddr_v6: u32,
    /// `sk_protocol`: the aligned u32 holding it, then shift and mask (a bit field before
    /// kernel 5.6, a u16 since).
    pub protocol_word: u32,
    pub protocol_shift: u32,
    pub protocol_mask: u32,
    pub has_v6: u32,
    /// `sock.sk_socket` (the `struct socket *`, null for a kernel socket).
    pub sk_socket: u32,
    /// From a `struct socket` to its inode number: `socket_alloc.vfs_inode` +
    /// `inode.i_ino` - `socket_alloc.socket` (the socket and its inode are allocated
    /// together, as `SOCK_INODE()` relies on).
    pub socket_ino: u32,
    /// 1 when the two above are known.
    pub has_ino: u32,
    /// `sock.sk_err` (int): set before a reset or a timeout closes the socket, not when its
    /// own process aborts it.
    pub err: u32,
    /// 1 once userspace filled the offsets; the program does nothing while 0.
    pub valid: u32,
}

/// Where a task's cgroups and their names are, from the running kernel's BTF at load time:
/// `task_struct.cgroups` → `css_set.dfl_cgrp` (the v2 cgroup) and `css_set.subsys[cpu]` →
/// `cgroup_subsys_state.cgroup` (the cpu controller's cgroup: a v1 hierarchy on hybrid
/// hosts, where YARN puts its containers) → `cgroup.kn` → `kernfs_node.name` and `.parent`
/// (`__parent` since 6.15). Read with `bpf_probe_read_kernel`: a wrong offset fails, it never
/// faults.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// Offset of `css_set.subsys[cpu_cgrp_id]`.
    pub css_set_cpu: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_name: u32,
    pub kn_parent: u32,
    /// 1 when the cpu controller's entry is known.
    pub has_cpu: u32,
    /// 1 once userspace filled the offsets; no names are read while 0.
    pub valid: u32,
    pub _pad: u32,
}

/// Longest cgroup directory name kept (a Docker scope, `docker-<64 hex>.scope`, is 77).
pub const CGROUP_NAME_LEN: usize = 128;
/// Server addresses the kernel's endpoint table holds (`--zk`, `--zoo-cfg`); `--port`
/// watches a port towards any address without using it.
pub const MAX_ENDPOINTS: u32 = 4_096;

/// Capacity of the server's side's per-client-host counters (`ZK_CLIENTS`): client hosts
/// idle for `--retain-exited` leave it.
pub const MAX_CLIENTS: u32 = 16_384;
/// Levels of a cgroup path kept, innermost first (a Kubernetes container's v2 path has 4).
pub const CGROUP_DEPTH: usize = 5;

/// A cgroup's directory name and its ancestors', innermost first, each NUL-terminated;
/// unused levels are empty. The root itself is not named.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupNames {
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_DEPTH],
    /// 1 when the cgroup had more ancestors than fit (the path is then a tail).
    pub truncated: u32,
    pub _pad: u32,
}

impl Default for CgroupNames {
    fn default() -> Self {
        Self {
            names: [[0; CGROUP_NAME_LEN]; CGROUP_DEPTH],
            truncated: 0,
            _pad: 0,
        }
    }
}

/// The [`event_kind::OWNER_NEW`] event: the common part plus what the kernel knows of the
/// process's cgroups, so a container is named even when its process and its cgroup are
/// gone before userspace reads `/proc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerEvent {
    pub event: Event,
    /// The cgroup v2 path (`task->cgroups->dfl_cgrp`).
    pub v2: CgroupNames,
    /// The cpu controller's cgroup path (a v1 hierarchy on hybrid hosts).
    pub cpu: CgroupNames,
}

/// Field offsets of `sched:sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitTpLayout {
    /// Offset of `group_dead`; the program does nothing while `valid` is 0 (kernels
    /// before the field existed: userspace then finds exits by polling `/proc`).
    pub group_dead: u16,
    pub valid: u16,
}

/// Field offsets of `tcp:tcp_receive_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetTpLayout {
    pub skaddr: u16,
    /// `dport` (host order), so a reset on an unwatched port costs no table lookup; unused
    /// while `port_size` is 0.
    pub dport: u16,
    pub port_size: u16,
    /// The program does nothing while 0 (kernels without the tracepoint, before 4.15).
    pub valid: u16,
}

/// How a refusal is recognised (set by userspace before loading).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalConfig {
    /// A peer close (FIN or RST) within this many ns of ESTABLISHED may be a refusal.
    pub window_ns: u64,
    /// Offset of `bytes_received` in `struct tcp_sock`, from the running kernel's BTF.
    pub bytes_received_offset: u32,
    /// 1 when `bytes_received_offset` is known: a refusal is then a peer close with no byte
    /// received, within the window or (see `has_bytes_sent`) later. 0: a reset within the
    /// window (no byte count to check).
    pub has_bytes_received: u32,
    /// Offset of `bytes_sent` in `struct tcp_sock` (4.19+), from the running kernel's BTF.
    pub bytes_sent_offset: u32,
    /// 1 when `bytes_sent_offset` is known: a peer close with nothing received after the
    /// window is still a refusal when the client had sent something (its ConnectRequest,
    /// which a ZooKeeper server that accepts always answers first).
    pub has_bytes_sent: u32,
    /// Offsets of `rcv_nxt` and `copied_seq` in `struct tcp_sock` (u32 sequence numbers):
    /// how much a server read of what it received, for its refusals.
    pub rcv_nxt_offset: u32,
    pub copied_seq_offset: u32,
    /// 1 when the two above and both byte counts are known: the server side can then tell
    /// a refusal (see [`crate::accounting::inbound_end`]).
    pub has_server_side: u32,
    pub _pad: u32,
    /// The server's side: a close by the server with nothing read or written within this
    /// many ns of the handshake is a refusal even when the client sent nothing.
    pub server_window_ns: u64,
}

/// What ZooKeeper's `maxClientCnxns` counts per: one server endpoint and one client
/// address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub daddr: [u8; 16],
    pub saddr: [u8; 16],
    pub dport: u16,
    pub _pad: [u8; 6],
}

/// Key of [`map_names::STATS`]: the process, the cgroup it connected from and the server
/// budget of the connections a row counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatsKey {
    pub owner: OwnerKey,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    pub server: ServerKey,
}

/// A process identity that survives pid reuse: the tgid plus the boot-clock time at which
/// zkconn first saw the process (kernel: its first tracked connect; seeding: its start time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    pub tgid: u32,
    pub _pad: u32,
    pub birth_ns: u64,
}

impl OwnerKey {
    /// The owner of connections that predate zkconn and whose process could not be found
    /// or read: counted under it, per server, never left out.
    pub const UNKNOWN: OwnerKey = OwnerKey {
        tgid: 0,
        _pad: 0,
        birth_ns: 0,
    };
}

/// Value of the [`map_names::OWNERS`] map: what the kernel knew of a process when it first
/// connected to ZooKeeper.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub birth_ns: u64,
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    pub comm: [u8; COMM_LEN],
}

/// Key of the [`map_names::ENDPOINTS`] map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Key of the [`map_names::SEEDS`] map: a connection by its addresses and ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
}

/// Key of [`map_names::CLIENTS`]: what ZooKeeper's `maxClientCnxns` counts per on the
/// server's side, one client address on one listener (the address the client connected to,
/// and the port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    pub local: [u8; 16],
    pub client: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

impl ClientKey {
    /// The key of an accepted connection's tuple (local side first).
    pub fn of(t: &Tuple) -> ClientKey {
        ClientKey {
            local: t.saddr,
            client: t.daddr,
            port: t.sport,
            _pad: [0; 6],
        }
    }
}

/// Bits of [`Inbound::flags`].
pub mod inbound_flags {
    /// The connection existed before zkconn started and was seeded.
    pub const SEEDED: u8 = 1;
}

/// One accepted connection on a watched port (value of `INBOUND` and `INBOUND_SEEDS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Local side first: `saddr`/`sport` are the listener's address and port as the client
    /// reached them, `daddr`/`dport` the client's.
    pub tuple: Tuple,
    /// Boot-clock ns of ESTABLISHED (seeded: 0, unknown).
    pub established_ns: u64,
    /// Boot-clock ns of the last state change (seeded: when zkconn seeded it).
    pub changed_ns: u64,
    /// ESTABLISHED or CLOSE_WAIT: a row goes when the server lets the connection go.
    pub state: u8,
    /// [`inbound_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// Cumulative counters of one client host on one listener, as the server's side sees them.
/// Shared by every CPU; the programs only add atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// Connections accepted (the handshake completed).
    pub opened: u64,
    /// Connections the server let go (closed, aborted, or reset), refusals included.
    pub closed: u64,
    /// Of those, the server's refusals (see [`crate::accounting::inbound_end`]).
    pub rejected: u64,
    /// Of those, the ones the server never sent a byte on that were not refusals: no
    /// session started (a port check, a client gone before its request, a server not
    /// serving).
    pub unanswered: u64,
    pub _reserved: u64,
}

impl ClientCounters {
    /// Adds every field of `other`.
    pub fn add(&mut self, other: &ClientCounters) {
        self.opened += other.opened;
        self.closed += other.closed;
        self.rejected += other.rejected;
        self.unanswered += other.unanswered;
    }
}

/// One tracked ZooKeeper connection (value of `CONNS` and `SEEDS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub tuple: Tuple,
    pub owner: OwnerKey,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Boot-clock ns of the connect (seeded: when zkconn seeded it).
    pub opened_ns: u64,
    /// Boot-clock ns of the last state change.
    pub changed_ns: u64,
    /// Boot-clock ns of ESTABLISHED (0 before; seeded: when zkconn seeded it).
    pub established_ns: u64,
    /// The socket's inode, recorded at connect while userspace seeds ([`control::SEEDING`]);
    /// 0 otherwise.
    pub ino: u64,
    /// Thread that called connect() (seeded: the owning pid).
    pub tid: u32,
    pub uid: u32,
    /// A [`tcp_state`] value.
    pub state: u8,
    /// [`conn_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// Cumulative counters per process, cgroup or server. One row per key, shared by every CPU:
/// the kernel programs only ever add to a field atomically (XADD).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// connect() attempts (CLOSE → SYN_SENT).
    pub opened: u64,
    /// Connections that reached ESTABLISHED and later TCP_CLOSE.
    pub closed: u64,
    /// Connections that reached TCP_CLOSE without ever being ESTABLISHED.
    pub failed: u64,
    /// Transitions into CLOSE_WAIT (the server closed first).
    pub close_wait: u64,
    /// Connections the server refused ([`conn_flags::REFUSED`]); also counted in `closed`.
    pub rejected: u64,
}

impl Counters {
    /// Adds every field of `other` (userspace sums; the kernel adds atomically).
    pub fn add(&mut self, other: &Counters) {
        self.opened += other.opened;
        self.closed += other.closed;
        self.failed += other.failed;
        self.close_wait += other.close_wait;
        self.rejected += other.rejected;
    }
}

/// Kinds of [`Event`].
pub mod event_kind {
    /// A process made its first tracked connect.
    pub const OWNER_NEW: u32 = 1;
    /// A tracked process (its whole thread group) exited.
    pub const OWNER_EXIT: u32 = 2;
    /// A server refused one of the owner's connections; [`super::Event::server`] names it.
    /// (The count itself lives in the maps; the event says by whom and when.)
    pub const REFUSED: u32 = 3;
}

/// A message from the kernel to userspace through the ring buffer. Counts never depend on
/// events (they live in maps); events let userspace read `/proc` while the process lives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// An [`event_kind`] value.
    pub kind: u32,
    pub tid: u32,
    pub owner: OwnerKey,
    pub info: Owner,
    pub ts_ns: u64,
    /// The server and local address ([`event_kind::REFUSED`] only; zero otherwise).
    pub server: ServerKey,
    /// The refused connection's local port ([`event_kind::REFUSED`] only): with `server`, its
    /// whole 4-tuple, for NAT look-ups after it closed.
    pub sport: u16,
    pub _pad: [u8; 6],
}

#[cfg(feature = "user")]
mod user {
    //! `aya::Pod` for the types userspace reads from and writes to maps.
    use super::*;

    // SAFETY: all of these are `#[repr(C)]`, `Copy`, made only of integers and byte arrays,
    // with all padding spelled out as fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for StateTpLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExitTpLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OwnerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StatsKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Owner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Tuple {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Conn {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ResetTpLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RefusalConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PortList {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServerKey {}
    // SAFETY: as above (eighteen u32s, no padding).
    unsafe impl aya::Pod for SockLayout {}
    // SAFETY: as above (ten u32s).
    unsafe impl aya::Pod for TaskLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OwnerEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ClientKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Inbound {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ClientCounters {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_few_ports_go_in_the_list_and_more_leave_it_to_the_map() {
        let list = PortList::of(
            [
                (2181, port_flags::ANY_ADDRESS),
                (2281, port_flags::ENDPOINTS),
            ]
            .into_iter(),
        );
        assert_eq!(list.use_map, 0);
        assert_eq!(&list.ports[..3], &[2181, 2281, 0]);
        assert_eq!(
            &list.flags[..3],
            &[port_flags::ANY_ADDRESS, port_flags::ENDPOINTS, 0]
        );
        let full = PortList::of((1..=8).map(|p| (p, 1)));
        assert_eq!((full.use_map, full.ports[7]), (0, 8));
        let more = PortList::of((1..=9).map(|p| (p, 1)));
        assert_eq!(
            more,
            PortList {
                use_map: 1,
                ..PortList::default()
            }
        );
    }

    use core::mem::size_of;

    use super::*;

    // The layouts are an ABI between two compilers; a silent size change would corrupt maps.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<OwnerKey>(), 16);
        assert_eq!(size_of::<Owner>(), 40);
        assert_eq!(size_of::<Endpoint>(), 24);
        assert_eq!(size_of::<Tuple>(), 40);
        assert_eq!(
            size_of::<Conn>(),
            40 + 16 + 8 + 8 + 8 + 8 + 8 + 4 + 4 + 1 + 1 + 6
        );
        assert_eq!(size_of::<Counters>(), 40);
        assert_eq!(size_of::<ServerKey>(), 40);
        assert_eq!(size_of::<StatsKey>(), 64);
        assert_eq!(size_of::<PortList>(), 32);
        assert_eq!(size_of::<RefusalConfig>(), 48);
        assert_eq!(size_of::<ClientKey>(), 40);
        assert_eq!(size_of::<Inbound>(), 40 + 8 + 8 + 1 + 1 + 6);
        assert_eq!(size_of::<ClientCounters>(), 40);
        assert_eq!(size_of::<SockLayout>(), 4 * 18);
        assert_eq!(size_of::<ResetTpLayout>(), 8);
        assert_eq!(size_of::<Event>(), 4 + 4 + 16 + 40 + 8 + 40 + 8);
        assert_eq!(size_of::<TaskLayout>(), 40);
        assert_eq!(size_of::<CgroupNames>(), CGROUP_NAME_LEN * CGROUP_DEPTH + 8);
        assert_eq!(size_of::<OwnerEvent>(), 120 + 2 * size_of::<CgroupNames>());
    }
}
