//! Loading, attaching and reading zkconn's kernel programs.
//!
//! Owns: the eBPF object, the choice of hook, map sizes, the target maps, and reading the
//! kernel's state back as plain values ([`KernelState`]).
//! Must not: aggregate or attribute (that is `model`/`procfs`); it hands out raw rows.
//!
//! Hooks are an enum: each variant knows how to attach itself and what it needs; the maps
//! and the accounting in the kernel are shared by all of them.

pub mod batch;
pub mod btf;
pub mod caps;
pub mod compat;
pub mod events;
mod hooks;
mod layouts;
mod maps;
mod stats;
pub mod tracefs;

use anyhow::anyhow;
use aya::{Ebpf, EbpfLoader};
pub use zkconn_common::hooks::{Hook, RefusalDetection};
use zkconn_common::{
    ExitTpLayout, PortList, RefusalConfig, ResetTpLayout, event_output, global_names, map_names,
    program_names,
};

pub use self::maps::{KernelState, TrackedRows};
use self::{
    hooks::Needs,
    layouts::{layout_of_reset_tp, sock_layout, state_tp_layout, task_layout},
};
use crate::targets::Targets;

/// What the user asked for with `--hook`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookChoice {
    /// The best hook this kernel allows, in the order btf, fentry, tracepoint, kprobe.
    Auto,
    /// The BTF tracepoint (`tp_btf`) on `inet_sock_set_state`: the kernel passes the socket,
    /// no trace record is filled (BTF, kernel 5.5+).
    Btf,
    /// fentry on `tcp_connect` and `tcp_set_state` (BTF and BPF trampolines, 5.5+ on x86-64).
    Fentry,
    /// The `sock:inet_sock_set_state` classic tracepoint (tracefs).
    Tracepoint,
    /// kprobes on `tcp_connect` and `tcp_set_state` (CONFIG_KPROBES, BTF for the offsets).
    Kprobe,
    /// No BPF: the kernel's socket tables sampled over sock_diag each second (any kernel;
    /// connections shorter than a second and refusals are not seen). `auto` falls back to it
    /// when the kernel refuses every BPF hook.
    Poll,
}

/// Map capacities (entries). Full maps are counted as overflow, never silent.
#[derive(Clone, Copy, Debug)]
pub struct Capacities {
    pub conns: u32,
    /// Accepted connections followed, and their seeds: the connection capacity, or 1
    /// (nothing preallocated) with `--no-server-side`.
    pub inbound: u32,
    pub owners: u32,
    pub cgroups: u32,
    pub ring_buffer_bytes: u32,
}

/// A peer close this soon after ESTABLISHED, with nothing received, is a refusal even when
/// the client has not sent anything yet.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_millis(1000);

/// On the server's side, a close with nothing read or written this soon after the handshake
/// is a refusal even when the client sent nothing: just under ZooKeeper's own timeout for
/// connections that never start a session (`zookeeper.nio.sessionlessCnxnTimeout`, 10 s),
/// whose closes are not refusals; so a server paused up to this long still has its late
/// refusals counted.
pub const SERVER_REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(9);

pub struct Probe {
    ebpf: Ebpf,
    hook: Hook,
    pub refusal: RefusalDetection,
    /// False when the kernel's `sched_process_exit` has no `group_dead` (before 6.x):
    /// exits are then found from `/proc`.
    pub exit_events: bool,
    /// The events map's reader, until the source takes it.
    events: Option<events::Events>,
    /// What the kernel's seed flag says (see [`Probe::set_seeds_pending`]).
    seeds_pending: bool,
    /// What the kernel's server-side switch says (see [`Probe::set_inbound`]).
    inbound: bool,
    /// What the kernel's server-side seed flag says.
    inbound_seeds_pending: bool,
    /// Whether the server side can tell refusals (the kernel's BTF gives the byte counts and
    /// sequence numbers of `tcp_sock`).
    pub server_refusals: bool,
    /// What this run cannot see on this kernel, one sentence each (`probe.limitations`).
    pub limitations: Vec<String>,
    /// Kernel helpers replaced by older ones (see [`compat`]).
    pub fallbacks: Vec<compat::InUse>,
    /// The connection rows as last read (see [`Probe::read`]); `None` once userspace
    /// changed them.
    rows: Option<maps::RowsRead>,
    /// How many times the connection rows were read (each read's `rows_version`).
    rows_reads: u64,
    /// The counter rows as last read, and the counts of those deleted (see [`stats`]).
    stats: stats::StatsRows,
    /// The kernel's BTF for BTF-typed programs, while they are being attached.
    aya_btf: hooks::AyaBtf,
}

/// The compiled kernel programs, embedded at build time by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zkconn"));

impl Probe {
    /// Loads the programs sized by `caps`, fills the target maps and attaches `choice`.
    pub fn load(
        choice: HookChoice,
        caps: Capacities,
        targets: &Targets,
        forced: &[compat::Fallback],
    ) -> anyhow::Result<Self> {
        let memlock = caps::raise_memlock();
        let fallbacks = compat::choose(forced);
        let replaced: Vec<compat::Fallback> = fallbacks.iter().map(|f| f.fallback).collect();
        let (object, rewritten) = compat::rewrite(OBJECT, &replaced)?;
        for f in &fallbacks {
            tracing::info!(
                "fallback {} ({}); {rewritten} helper calls rewritten",
                f.fallback,
                f.reason
            );
        }
        if replaced.contains(&compat::Fallback::MonotonicClock) {
            crate::clock::use_monotonic_clock();
        }
        // SAFETY: `object` owns at least OBJECT.len() initialised bytes, 8-byte aligned.
        let object_bytes =
            unsafe { std::slice::from_raw_parts(object.as_ptr().cast::<u8>(), OBJECT.len()) };
        let root = tracefs::events_root();
        let state_layout = root
            .as_ref()
            .map_err(|e| format!("{e:#}"))
            .and_then(|root| state_tp_layout(root).map_err(|e| format!("{e:#}")));
        let mut lap = crate::clock::Lap::new("loading");
        let aya_btf = hooks::AyaBtf::start();
        let kernel_btf = btf::Btf::from_sys_fs();
        lap.at("kernel BTF read for layouts");
        let sock_layout = kernel_btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|b| sock_layout(b).map_err(|e| e.to_string()));
        // Why exits cannot come from the kernel: no such field, or a format file zkconn
        // could not read (tracefs wants CAP_DAC_READ_SEARCH of a process not root).
        let exit_format = root
            .as_ref()
            .map_err(|e| format!("{e:#}"))
            .and_then(|root| {
                tracefs::tracepoint_fields(root, "sched", "sched_process_exit")
                    .map_err(|e| format!("{e:#}"))
            });
        let exit_layout = match exit_format.as_ref().map(|f| f.get("group_dead")) {
            Ok(Some(group_dead)) => ExitTpLayout {
                group_dead: group_dead.offset,
                valid: 1,
            },
            _ => ExitTpLayout::default(),
        };
        let reset_layout = root
            .as_ref()
            .ok()
            .and_then(|root| tracefs::tracepoint_fields(root, "tcp", "tcp_receive_reset").ok())
            .map_or(ResetTpLayout::default(), |f| layout_of_reset_tp(&f));
        let bytes_offset = kernel_btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| b.member_offset("tcp_sock", "bytes_received"))
            .inspect_err(|e| {
                tracing::warn!("refusals are recognised by resets only: {e}");
            })
            .ok();
        if let Some(off) = bytes_offset {
            tracing::debug!("tcp_sock.bytes_received is at offset {off} in this kernel");
        }
        let sent_offset = kernel_btf
            .as_ref()
            .ok()
            .and_then(|b| b.member_offset("tcp_sock", "bytes_sent").ok());
        if bytes_offset.is_some() && sent_offset.is_none() {
            tracing::warn!(
                "this kernel's tcp_sock has no bytes_sent (before 4.19): a refusal later than \
                 {REFUSAL_WINDOW:?} after the handshake is counted as a plain close"
            );
        }
        // What the server side needs to tell its refusals: how much was read of what came.
        let seq_offsets = kernel_btf.as_ref().ok().and_then(|b| {
            Some((
                b.member_offset("tcp_sock", "rcv_nxt").ok()?,
                b.member_offset("tcp_sock", "copied_seq").ok()?,
            ))
        });
        let server_side = bytes_offset.is_some() && sent_offset.is_some() && seq_offsets.is_some();
        let refusal = RefusalConfig {
            window_ns: u64::try_from(REFUSAL_WINDOW.as_nanos()).unwrap_or(u64::MAX),
            bytes_received_offset: bytes_offset.unwrap_or(0),
            has_bytes_received: u32::from(bytes_offset.is_some()),
            bytes_sent_offset: sent_offset.unwrap_or(0),
            has_bytes_sent: u32::from(sent_offset.is_some()),
            rcv_nxt_offset: seq_offsets.map_or(0, |o| o.0),
            copied_seq_offset: seq_offsets.map_or(0, |o| o.1),
            has_server_side: u32::from(server_side),
            _pad: 0,
            server_window_ns: u64::try_from(SERVER_REFUSAL_WINDOW.as_nanos()).unwrap_or(u64::MAX),
        };

        let task_layout = kernel_btf
            .as_ref()
            .map_err(Clone::clone)
            .and_then(task_layout)
            .inspect_err(|e| {
                tracing::warn!(
                    "the kernel cannot name the cgroups of new processes ({e}): a process gone \
                     before /proc is read is attributed by its cgroup id alone"
                );
            })
            .unwrap_or_default();
        let perf_buffer = replaced.contains(&compat::Fallback::PerfBuffer);
        let event_output = if perf_buffer {
            event_output::PERF_BUFFER
        } else {
            event_output::RING_BUFFER
        };
        let state_tp_layout = state_layout.clone().unwrap_or_default();
        let sock_layout_value = sock_layout.clone().unwrap_or_default();
        lap.at("layouts");
        let flags = targets.port_flags();
        let port_list = PortList::of(flags.into_iter());
        let mut loader = EbpfLoader::new();
        lap.at("kernel BTF read for relocations");
        loader
            .override_global(global_names::STATE_TP_LAYOUT, &state_tp_layout, true)
            .override_global(global_names::SOCK_LAYOUT, &sock_layout_value, true)
            .override_global(global_names::EXIT_TP_LAYOUT, &exit_layout, true)
            .override_global(global_names::RESET_TP_LAYOUT, &reset_layout, true)
            .override_global(global_names::REFUSAL, &refusal, true)
            .override_global(global_names::TASK_LAYOUT, &task_layout, true)
            .override_global(global_names::EVENT_OUTPUT, &event_output, true)
            .override_global(global_names::PORT_LIST, &port_list, true)
            .map_max_entries(map_names::CONNS, caps.conns)
            .map_max_entries(map_names::SEEDS, caps.conns)
            .map_max_entries(map_names::INBOUND, caps.inbound)
            .map_max_entries(map_names::INBOUND_SEEDS, caps.inbound)
            .map_max_entries(map_names::OWNERS, caps.owners)
            .map_max_entries(map_names::STATS, caps.owners.saturating_add(caps.cgroups))
            .map_max_entries(map_names::STATS_SPILL, caps.cgroups);
        if !perf_buffer {
            // A perf event array is sized to the CPUs by the loader; its buffers by `events`.
            loader.map_max_entries(map_names::EVENTS, caps.ring_buffer_bytes);
        }
        let mut ebpf = loader
            .load(object_bytes)
            .map_err(|e| explain_load_error(&e, memlock))?;
        lap.at("maps created");
        // Opened now, with every privilege still held (a perf buffer is a perf event), and
        // before any hook runs: a kernel that refuses it refuses the load.
        let events = open_events(&mut ebpf, perf_buffer.then_some(caps.ring_buffer_bytes))?;

        let mut probe = Probe {
            ebpf,
            hook: Hook::Tracepoint,
            refusal: if bytes_offset.is_some() {
                RefusalDetection::NoBytesReceived
            } else {
                RefusalDetection::ResetOnly
            },
            exit_events: exit_layout.valid == 1,
            events: Some(events),
            seeds_pending: false,
            inbound: false,
            inbound_seeds_pending: false,
            server_refusals: server_side && sock_layout.is_ok(),
            limitations: Vec::new(),
            fallbacks,
            rows: None,
            rows_reads: 0,
            stats: stats::StatsRows::default(),
            aya_btf,
        };
        probe.load_targets(targets)?;
        // From the first connect the hook sees until seeding is done, connects record their
        // socket's inode (see `seed::Tracked`); the source clears it.
        probe.set_seeding(true)?;
        let needs = Needs {
            kernel_btf: kernel_btf.as_ref().map(|_| ()).map_err(ToString::to_string),
            sock_layout: sock_layout.as_ref().map(|_| ()).map_err(Clone::clone),
            state_layout: state_layout.as_ref().map(|_| ()).map_err(Clone::clone),
        };
        probe.hook = probe.attach_hook(choice, &needs)?;
        lap.at("hook attached");
        // The two rare events are worth having, not worth failing for: without them zkconn
        // finds exits from /proc, and refusals by their byte counts alone.
        if !probe.exit_events {
            probe.limitations.push(match &exit_format {
                Ok(_) => "process exits are found from /proc each second, not from the kernel \
                          (this kernel's sched:sched_process_exit has no group_dead field)"
                    .to_owned(),
                Err(e) => format!(
                    "process exits are found from /proc each second, not from the kernel \
                     (the format of sched:sched_process_exit could not be read: {e})"
                ),
            });
        }
        if probe.exit_events
            && let Err(e) =
                probe.attach_tracepoint(program_names::EXIT_TP, "sched", "sched_process_exit")
        {
            probe.exit_events = false;
            probe.limitations.push(format!(
                "process exits are found from /proc each second, not from the kernel \
                 (sched:sched_process_exit: {e:#})"
            ));
        }
        // Through BTF where there is BTF: a BTF tracepoint needs no perf event.
        let reset = match &kernel_btf {
            Ok(_) => probe.attach_btf_tracepoint(program_names::RESET_BTF, "tcp_receive_reset"),
            Err(e) => Err(anyhow!("no BTF: {e}")),
        };
        let reset = reset.or_else(|btf_error| {
            probe.unload_program(program_names::RESET_BTF);
            if reset_layout.valid == 1 {
                probe.attach_tracepoint(program_names::RESET_TP, "tcp", "tcp_receive_reset")
            } else {
                Err(btf_error.context("this kernel has no tcp:tcp_receive_reset"))
            }
        });
        probe.aya_btf = hooks::AyaBtf::Dropped;
        lap.at("exit and reset programs attached");
        if let Err(e) = reset {
            probe.limitations.push(if bytes_offset.is_some() {
                format!(
                    "a refusal by reset alone (no FIN first) is not recognised: \
                     tcp_receive_reset could not be attached ({e:#})"
                )
            } else {
                format!(
                    "refusals are not recognised: this kernel has no BTF and \
                     tcp_receive_reset could not be attached ({e:#})"
                )
            });
        }
        for l in &probe.limitations {
            tracing::warn!("{l}");
        }
        Ok(probe)
    }

    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// The reader of the kernel's events, registered with the runtime (once).
    pub fn take_events(&mut self) -> anyhow::Result<events::Events> {
        self.events
            .take()
            .ok_or_else(|| anyhow!("the event reader was already taken"))
    }
}

/// A load failure with a fix on the operator's side (a limit, a privilege): `auto` reports
/// it rather than falling back to the poll hook.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FixableLoadError(pub String);

fn explain_load_error(e: &aya::EbpfError, memlock: Option<u64>) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    let refused = text.contains("Operation not permitted") || text.contains("EPERM");
    // Only kernels before 5.11 charge BPF memory to the memlock limit.
    let charged = caps::kernel_release().is_some_and(|v| v < (5, 11));
    match memlock {
        // check_privileges passed: with a finite limit, the limit is what refused.
        Some(limit) if refused && charged => FixableLoadError(format!(
            "the kernel refused to create zkconn's BPF maps: before Linux 5.11 they are \
             charged to the locked-memory limit (RLIMIT_MEMLOCK), {} KiB here, which zkconn \
             may not raise; start it with LimitMEMLOCK=infinity (systemd, as \
             deploy/zkconn.service does), `ulimit -l unlimited`, or CAP_SYS_RESOURCE",
            limit / 1024
        ))
        .into(),
        // The capabilities are there (checked before): a user namespace, a seccomp filter
        // or an LSM policy forbids BPF. Not fixable by a flag: `auto` samples instead.
        _ if refused => anyhow!(
            "the kernel refused zkconn's BPF maps or programs although it holds CAP_BPF and \
             CAP_PERFMON: a user namespace, a seccomp filter or a security policy forbids BPF \
             here ({text})"
        ),
        _ => anyhow!("loading zkconn's eBPF object failed: {text}"),
    }
}

/// A perf event the kernel refused (classic tracepoints and kprobes attach through one):
/// says why when `kernel.perf_event_paranoid` is the reason.
fn perf_refused(e: anyhow::Error) -> anyhow::Error {
    match paranoid_3(&e) {
        Some(paranoid) => e.context(format!(
            "kernel.perf_event_paranoid is {paranoid} here, a level (Debian's default) that \
             allows perf events only to CAP_SYS_ADMIN: use --hook btf or fentry, which need \
             none, or give zkconn CAP_SYS_ADMIN"
        )),
        None => e,
    }
}

/// The same for the perf buffers of `--fallback perf-buffer`, which every hook needs.
fn perf_buffer_refused(e: anyhow::Error) -> anyhow::Error {
    match paranoid_3(&e) {
        Some(paranoid) => e.context(format!(
            "kernel.perf_event_paranoid is {paranoid} here, a level (Debian's default) that \
             allows perf events only to CAP_SYS_ADMIN, and without a BPF ring buffer (5.8+, or \
             with --fallback perf-buffer) events need perf buffers: give zkconn CAP_SYS_ADMIN"
        )),
        None => e,
    }
}

/// The `kernel.perf_event_paranoid` value when `e` is a refusal it explains (3 or more:
/// Debian's patch allows perf events to CAP_SYS_ADMIN only).
fn paranoid_3(e: &anyhow::Error) -> Option<String> {
    if !format!("{e:#}").contains("Permission denied") {
        return None;
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    paranoid
        .parse::<i32>()
        .is_ok_and(|p| p >= 3)
        .then_some(paranoid)
}

/// The events map taken out of `ebpf` as its reader: a ring buffer, or with
/// `perf_buffer_bytes` a perf event array sharing that many bytes among the CPUs.
fn open_events(ebpf: &mut Ebpf, perf_buffer_bytes: Option<u32>) -> anyhow::Result<events::Events> {
    let map = ebpf
        .take_map(map_names::EVENTS)
        .ok_or_else(|| anyhow!("the eBPF object has no events map; rebuild zkconn"))?;
    match perf_buffer_bytes {
        None => events::Events::ring(map),
        // A privilege or a limit: reported, not taken for a kernel without BPF (`auto` would
        // sample instead, seeing no refusal and no short connection).
        Some(bytes) => events::Events::perf(map, bytes)
            .map_err(|e| FixableLoadError(format!("{:#}", perf_buffer_refused(e))).into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::{hooks::programs, layouts::layout_of_state_tp, *};

    #[test]
    fn auto_tries_every_hook_once_under_the_name_its_flag_takes() {
        let mut seen = Vec::new();
        for hook in Hook::AUTO_ORDER {
            let name = hook.to_string();
            let choice = HookChoice::from_str(&name, false).expect("a --hook value");
            assert_ne!(choice, HookChoice::Auto);
            assert!(!seen.contains(&name), "{name} twice");
            assert!(!programs(hook).is_empty());
            seen.push(name);
        }
        // Every forced choice is in the order `auto` tries.
        let forced = HookChoice::value_variants()
            .iter()
            .filter(|c| !matches!(c, HookChoice::Auto | HookChoice::Poll))
            .count();
        assert_eq!(forced, Hook::AUTO_ORDER.len());
        assert_eq!(seen, ["btf", "fentry", "tracepoint", "kprobe"]);
    }

    /// `sock:inet_sock_set_state` as 5.4 and 6.1 format it: `protocol` became a `__u16`
    /// in 5.6, and the addresses moved by one byte.
    fn state_format(protocol: &str) -> String {
        let (protocol_type, protocol_size, after) = match protocol {
            "u8" => ("__u8", 1, 31),
            _ => ("__u16", 2, 32),
        };
        format!(
            "name: inet_sock_set_state\nID: 1\nformat:\n\
             \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
             \tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
             \tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
             \tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
             \tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
             \tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
             \tfield:{protocol_type} protocol;\toffset:30;\tsize:{protocol_size};\tsigned:0;\n\
             \tfield:__u8 saddr[4];\toffset:{after};\tsize:4;\tsigned:0;\n\
             \tfield:__u8 daddr[4];\toffset:{};\tsize:4;\tsigned:0;\n\
             \tfield:__u8 saddr_v6[16];\toffset:{};\tsize:16;\tsigned:0;\n\
             \tfield:__u8 daddr_v6[16];\toffset:{};\tsize:16;\tsigned:0;\n",
            after + 4,
            after + 8,
            after + 24
        )
    }

    #[test]
    fn state_tracepoint_fields_are_read_at_the_size_the_kernel_gives() {
        let old = layout_of_state_tp(&tracefs::parse_format(&state_format("u8"))).unwrap();
        assert_eq!((old.protocol, old.protocol_size, old.saddr), (30, 1, 31));
        let new = layout_of_state_tp(&tracefs::parse_format(&state_format("u16"))).unwrap();
        assert_eq!((new.protocol, new.protocol_size, new.saddr), (30, 2, 32));
        for l in [old, new] {
            assert_eq!(
                (l.skaddr_size, l.state_size, l.port_size, l.family_size),
                (8, 4, 2, 2)
            );
        }
        // A size zkconn cannot read whole is refused, not read wrong.
        let odd = state_format("u16").replace(
            "size:2;\tsigned:0;\n\tfield:__u16 dport",
            "size:3;\tsigned:0;\n\tfield:__u16 dport",
        );
        let e = layout_of_state_tp(&tracefs::parse_format(&odd)).unwrap_err();
        assert!(e.to_string().contains("sport and dport"), "{e}");
    }

    #[test]
    fn a_reset_on_another_port_is_told_by_its_record_where_it_has_the_port() {
        // This host's format (6.18): skaddr, then the ports as __u16 in host order.
        let format = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
                      \tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;\n\
                      \tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;\n";
        let l = layout_of_reset_tp(&tracefs::parse_format(format));
        assert_eq!((l.skaddr, l.dport, l.port_size, l.valid), (8, 18, 2, 1));
        // Without the port (or at a size not read whole) every reset is looked up.
        let bare = layout_of_reset_tp(&tracefs::parse_format(
            "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n",
        ));
        assert_eq!((bare.skaddr, bare.port_size, bare.valid), (8, 0, 1));
        let odd = layout_of_reset_tp(&tracefs::parse_format(
            &format.replace("offset:18;\tsize:2", "offset:18;\tsize:3"),
        ));
        assert_eq!((odd.port_size, odd.valid), (0, 1));
        // Without the socket, nothing.
        let none = layout_of_reset_tp(&tracefs::parse_format(""));
        assert_eq!(none.valid, 0);
    }

    #[test]
    fn a_hook_needs_what_it_reads() {
        let no_btf = Needs {
            kernel_btf: Err("no /sys/kernel/btf/vmlinux".into()),
            sock_layout: Err("no BTF".into()),
            state_layout: Ok(()),
        };
        for hook in [Hook::Btf, Hook::Fentry, Hook::Kprobe] {
            let e = no_btf.check(hook).expect_err("needs BTF");
            assert!(e.to_string().contains("/sys/kernel/btf/vmlinux"), "{e}");
        }
        assert!(no_btf.check(Hook::Tracepoint).is_ok());
        let no_tracefs = Needs {
            kernel_btf: Ok(()),
            sock_layout: Ok(()),
            state_layout: Err("tracefs is not mounted".into()),
        };
        assert!(no_tracefs.check(Hook::Tracepoint).is_err());
        assert!(no_tracefs.check(Hook::Fentry).is_ok());
    }
}
