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
pub mod tracefs;

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, PerCpuArray},
    programs::{BtfTracePoint, FEntry, KProbe, TracePoint},
};
use zkconn_common::{
    Conn, Counters, Endpoint, ExitTpLayout, Owner, OwnerKey, RefusalConfig, ResetTpLayout,
    ServerKey, SockLayout, StateTpLayout, TaskLayout, Tuple, control, event_output, global_names,
    map_names, probe_counter, program_names,
};

use crate::targets::{Targets, ip_to_bytes};

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

use zkconn_common::hooks::UNAVAILABLE;
pub use zkconn_common::hooks::{Hook, RefusalDetection};

/// Its programs, in attach order (the connect point before the state changes, so no
/// connection is seen leaving CLOSE without its connect).
fn programs(hook: Hook) -> &'static [&'static str] {
    match hook {
        Hook::Btf => &[program_names::STATE_BTF],
        Hook::Fentry => &[
            program_names::CONNECT_FENTRY,
            program_names::SET_STATE_FENTRY,
        ],
        Hook::Tracepoint => &[program_names::STATE_TP],
        Hook::Kprobe => &[
            program_names::CONNECT_KPROBE,
            program_names::SET_STATE_KPROBE,
        ],
        Hook::Poll => &[],
    }
}

/// Map capacities (entries). Full maps are counted as overflow, never silent.
#[derive(Clone, Copy, Debug)]
pub struct Capacities {
    pub conns: u32,
    pub owners: u32,
    pub cgroups: u32,
    pub ring_buffer_bytes: u32,
}

/// Everything the kernel holds, read in one pass.
#[derive(Clone, Debug, Default)]
pub struct KernelState {
    pub conns: Vec<Conn>,
    pub seeds: Vec<Conn>,
    /// Live processes (tgid → what the kernel recorded).
    pub owners: StdHashMap<u32, Owner>,
    pub proc_stats: Vec<(OwnerKey, Counters)>,
    pub cgroup_stats: Vec<(u64, Counters)>,
    pub server_stats: Vec<(ServerKey, Counters)>,
    pub counters: [u64; probe_counter::COUNT as usize],
    /// Runs the kernel skipped because a BPF program was already running on that CPU;
    /// `None` where the kernel does not count them (before 5.12).
    pub recursion_misses: Option<u64>,
}

/// The kernel's connection rows keyed by socket address, and its seeds ([`Probe::tracked`]).
#[derive(Clone, Debug, Default)]
pub struct TrackedRows {
    pub conns: Vec<(u64, Conn)>,
    pub seeds: Vec<Conn>,
}

/// A peer close this soon after ESTABLISHED, with nothing received, is a refusal even when
/// the client has not sent anything yet.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_millis(1000);

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
    /// What this run cannot see on this kernel, one sentence each (`probe.limitations`).
    pub limitations: Vec<String>,
    /// Kernel helpers replaced by older ones (see [`compat`]).
    pub fallbacks: Vec<compat::InUse>,
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
        let kernel_btf = btf::Btf::from_sys_fs();
        let sock_layout = kernel_btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|b| sock_layout(b).map_err(|e| e.to_string()));
        let fields = |category: &str, name: &str, field: &str| {
            let root = root.as_ref().ok()?;
            let fields = tracefs::tracepoint_fields(root, category, name).ok()?;
            fields.get(field).map(|f| f.offset)
        };
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
        let reset_layout = fields("tcp", "tcp_receive_reset", "skaddr").map_or(
            ResetTpLayout::default(),
            |skaddr| ResetTpLayout { skaddr, valid: 1 },
        );
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
        let refusal = RefusalConfig {
            window_ns: u64::try_from(REFUSAL_WINDOW.as_nanos()).unwrap_or(u64::MAX),
            bytes_received_offset: bytes_offset.unwrap_or(0),
            has_bytes_received: u32::from(bytes_offset.is_some()),
            bytes_sent_offset: sent_offset.unwrap_or(0),
            has_bytes_sent: u32::from(sent_offset.is_some()),
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
        let mut loader = EbpfLoader::new();
        loader
            .override_global(global_names::STATE_TP_LAYOUT, &state_tp_layout, true)
            .override_global(global_names::SOCK_LAYOUT, &sock_layout_value, true)
            .override_global(global_names::EXIT_TP_LAYOUT, &exit_layout, true)
            .override_global(global_names::RESET_TP_LAYOUT, &reset_layout, true)
            .override_global(global_names::REFUSAL, &refusal, true)
            .override_global(global_names::TASK_LAYOUT, &task_layout, true)
            .override_global(global_names::EVENT_OUTPUT, &event_output, true)
            .map_max_entries(map_names::SERVER_STATS, caps.cgroups)
            .map_max_entries(map_names::CONNS, caps.conns)
            .map_max_entries(map_names::SEEDS, caps.conns)
            .map_max_entries(map_names::OWNERS, caps.owners)
            .map_max_entries(map_names::PROC_STATS, caps.owners)
            .map_max_entries(map_names::CGROUP_STATS, caps.cgroups);
        if !perf_buffer {
            // A perf event array is sized to the CPUs by the loader; its buffers by `events`.
            loader.map_max_entries(map_names::EVENTS, caps.ring_buffer_bytes);
        }
        let mut ebpf = loader
            .load(object_bytes)
            .map_err(|e| explain_load_error(&e, memlock))?;
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
            limitations: Vec::new(),
            fallbacks,
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

    /// Attaches the hook `choice` names, or for `auto` the first of [`Hook::AUTO_ORDER`]
    /// that this kernel accepts. A hook that fails part-way is unloaded before the next is
    /// tried, so no two hooks ever count the same connection.
    fn attach_hook(&mut self, choice: HookChoice, needs: &Needs) -> anyhow::Result<Hook> {
        let wanted: Vec<Hook> = match choice {
            HookChoice::Auto => Hook::AUTO_ORDER.to_vec(),
            HookChoice::Btf => vec![Hook::Btf],
            HookChoice::Fentry => vec![Hook::Fentry],
            HookChoice::Tracepoint => vec![Hook::Tracepoint],
            HookChoice::Kprobe => vec![Hook::Kprobe],
            HookChoice::Poll => bail!("--hook poll loads no BPF program"),
        };
        let mut refused = Vec::new();
        for hook in wanted {
            match needs.check(hook).and_then(|()| self.attach(hook)) {
                Ok(()) => {
                    if !refused.is_empty() {
                        tracing::info!("using --hook {hook}; {}", refused.join("; "));
                    }
                    return Ok(hook);
                }
                Err(e) => {
                    self.unload(hook);
                    if choice != HookChoice::Auto {
                        return Err(anyhow!(
                            "--hook {hook} ({}){UNAVAILABLE}{e:#}; --hook auto picks one that is",
                            hook.describe()
                        ));
                    }
                    refused.push(format!("{hook} is not available: {e:#}"));
                }
            }
        }
        Err(anyhow!(
            "no hook is available on this kernel: {}",
            refused.join("; ")
        ))
    }

    fn attach(&mut self, hook: Hook) -> anyhow::Result<()> {
        match hook {
            Hook::Btf => {
                let btf = aya_btf()?;
                let prog: &mut BtfTracePoint = self.program_mut(program_names::STATE_BTF)?;
                prog.load("inet_sock_set_state", &btf)
                    .context("the kernel refused to load it")?;
                prog.attach().context("the kernel refused to attach it")?;
                Ok(())
            }
            Hook::Tracepoint => {
                self.attach_tracepoint(program_names::STATE_TP, "sock", "inet_sock_set_state")
            }
            Hook::Fentry => {
                // Parsed once for both programs (several MB on a distribution kernel).
                let btf = aya_btf()?;
                self.attach_fentry(program_names::CONNECT_FENTRY, "tcp_connect", &btf)?;
                self.attach_fentry(program_names::SET_STATE_FENTRY, "tcp_set_state", &btf)
            }
            Hook::Kprobe => {
                self.attach_kprobe(program_names::CONNECT_KPROBE, "tcp_connect")?;
                self.attach_kprobe(program_names::SET_STATE_KPROBE, "tcp_set_state")
            }
            Hook::Poll => bail!("--hook poll loads no BPF program"),
        }
    }

    /// Detaches and unloads whatever part of `hook` got loaded.
    fn unload(&mut self, hook: Hook) {
        for name in programs(hook) {
            self.unload_program(name);
        }
    }

    /// Detaches and unloads program `name` if it got loaded.
    fn unload_program(&mut self, name: &str) {
        let Some(prog) = self.ebpf.program_mut(name) else {
            return;
        };
        let result = match prog {
            aya::programs::Program::BtfTracePoint(p) => p.unload(),
            aya::programs::Program::TracePoint(p) => p.unload(),
            aya::programs::Program::FEntry(p) => p.unload(),
            aya::programs::Program::KProbe(p) => p.unload(),
            _ => Ok(()),
        };
        if let Err(e) = result {
            // Not loaded at all is the usual case here.
            tracing::debug!("unloading {name}: {e}");
        }
    }

    fn attach_btf_tracepoint(&mut self, program: &str, name: &str) -> anyhow::Result<()> {
        let btf = aya_btf()?;
        let prog: &mut BtfTracePoint = self.program_mut(program)?;
        prog.load(name, &btf)
            .with_context(|| format!("the kernel refused to load the BTF tracepoint {name}"))?;
        prog.attach()
            .with_context(|| format!("the kernel refused to attach the BTF tracepoint {name}"))?;
        Ok(())
    }

    fn attach_fentry(
        &mut self,
        program: &str,
        function: &str,
        btf: &aya::Btf,
    ) -> anyhow::Result<()> {
        let prog: &mut FEntry = self.program_mut(program)?;
        prog.load(function, btf)
            .with_context(|| format!("the kernel refused to load fentry on {function}"))?;
        prog.attach().map_err(|e| {
            let e = anyhow::Error::from(e)
                .context(format!("the kernel refused to attach fentry on {function}"));
            // ENOTSUPP (524): no BPF trampoline on this architecture (arm64 before 6.4).
            if format!("{e:#}").contains("os error 524") {
                e.context(
                    "this kernel cannot attach fentry programs on this architecture (arm64 has \
                     BPF trampolines from Linux 6.4); --hook btf counts the same way",
                )
            } else {
                e
            }
        })?;
        Ok(())
    }

    fn attach_kprobe(&mut self, program: &str, function: &str) -> anyhow::Result<()> {
        if !std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
            bail!(
                "this kernel has no kprobe event source (/sys/bus/event_source/devices/kprobe: \
                 CONFIG_KPROBES is off)"
            );
        }
        let prog: &mut KProbe = self.program_mut(program)?;
        prog.load()
            .with_context(|| format!("the kernel refused to load the kprobe on {function}"))?;
        prog.attach(function, 0)
            .map_err(|e| perf_refused(anyhow::Error::new(e)))
            .with_context(|| format!("the kernel refused a kprobe on {function}"))?;
        Ok(())
    }

    fn program_mut<'a, P>(&'a mut self, name: &str) -> anyhow::Result<&'a mut P>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}; rebuild zkconn"))?
            .try_into()
            .with_context(|| format!("{name} has an unexpected program type; rebuild zkconn"))
    }

    pub fn hook(&self) -> Hook {
        self.hook
    }

    fn attach_tracepoint(
        &mut self,
        program: &str,
        category: &str,
        name: &str,
    ) -> anyhow::Result<()> {
        let prog: &mut TracePoint = self.program_mut(program)?;
        prog.load().map_err(|e| {
            anyhow!("the kernel's verifier refused {program} ({e}); report this with `uname -r`")
        })?;
        prog.attach(category, name)
            .map_err(|e| perf_refused(anyhow::Error::new(e)))
            .with_context(|| format!("attaching to the tracepoint {category}:{name} failed"))?;
        Ok(())
    }

    fn load_targets(&mut self, targets: &Targets) -> anyhow::Result<()> {
        let mut ports: Array<_, u8> = self.map_mut(map_names::PORTS)?;
        for (port, flags) in targets.port_flags() {
            ports
                .set(u32::from(port), flags, 0)
                .context("filling the ports map")?;
        }
        let mut endpoints: HashMap<_, Endpoint, u8> = self.map_mut(map_names::ENDPOINTS)?;
        for e in &targets.endpoints {
            let key = Endpoint {
                addr: ip_to_bytes(e.ip()),
                port: e.port(),
                _pad: [0; 6],
            };
            endpoints
                .insert(key, 1, 0)
                .context("filling the endpoints map")?;
        }
        Ok(())
    }

    fn map_mut<'a, T>(&'a mut self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    fn map<'a, T>(&'a self, name: &str) -> anyhow::Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    /// The reader of the kernel's events, registered with the runtime (once).
    pub fn take_events(&mut self) -> anyhow::Result<events::Events> {
        self.events
            .take()
            .ok_or_else(|| anyhow!("the event reader was already taken"))
    }

    /// Reads every map. Entries that vanish between listing and lookup were deleted by the
    /// kernel meanwhile (a socket closed) and are skipped, not counted as errors.
    pub fn read(&self) -> anyhow::Result<KernelState> {
        fn single<K, V: Copy>(entries: batch::Entries<K, V>) -> impl Iterator<Item = (K, V)> {
            entries
                .into_iter()
                .filter_map(|(k, v)| Some((k, *v.first()?)))
        }
        let counters: PerCpuArray<_, u64> = self.map(map_names::PROBE_COUNTERS)?;
        let mut sums = [0u64; probe_counter::COUNT as usize];
        for (i, slot) in sums.iter_mut().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let values = counters
                .get(&index, 0)
                .map_err(|e| map_error(map_names::PROBE_COUNTERS, &e))?;
            *slot = values.iter().sum();
        }
        Ok(KernelState {
            conns: self.dump::<u64, Conn>(map_names::CONNS, 1)?,
            seeds: self.dump::<Tuple, Conn>(map_names::SEEDS, 1)?,
            owners: single(self.dump_keyed::<u32, Owner>(map_names::OWNERS, 1)?).collect(),
            proc_stats: single(self.dump_keyed::<OwnerKey, Counters>(map_names::PROC_STATS, 1)?)
                .collect(),
            cgroup_stats: single(self.dump_keyed::<u64, Counters>(map_names::CGROUP_STATS, 1)?)
                .collect(),
            server_stats: single(
                self.dump_keyed::<ServerKey, Counters>(map_names::SERVER_STATS, 1)?,
            )
            .collect(),
            counters: sums,
            recursion_misses: self.recursion_misses(),
        })
    }

    /// Every entry of the hash map `name` (see [`batch`]). A map that cannot be read is an
    /// error, never an empty reading: every count would silently read 0.
    fn dump_keyed<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
        &self,
        name: &str,
        per_key: usize,
    ) -> anyhow::Result<batch::Entries<K, V>> {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the eBPF object has no map {name}; rebuild zkconn"))?;
        let data = match map {
            aya::maps::Map::HashMap(d) | aya::maps::Map::PerCpuHashMap(d) => d,
            _ => bail!("map {name} has an unexpected type"),
        };
        batch::read::<K, V>(data.fd().as_fd(), per_key).map_err(|e| map_error(name, &e))
    }

    /// The values of the single-valued hash map `name`.
    fn dump<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
        &self,
        name: &str,
        per_key: usize,
    ) -> anyhow::Result<Vec<V>> {
        Ok(self
            .dump_keyed::<K, V>(name, per_key)?
            .into_iter()
            .filter_map(|(_, v)| v.into_iter().next())
            .collect())
    }

    /// Sum of the kernel's `recursion_misses` over our programs, from their fdinfo; `None`
    /// where the kernel does not count them (before 5.12): unknown, not 0.
    fn recursion_misses(&self) -> Option<u64> {
        let mut total = None;
        for name in program_names::ALL {
            let Some(prog) = self.ebpf.program(name) else {
                continue;
            };
            let Ok(fd) = prog.fd() else { continue };
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            let Ok(info) = std::fs::read_to_string(path) else {
                continue;
            };
            if let Some(n) = info
                .lines()
                .find_map(|l| l.strip_prefix("recursion_misses:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                *total.get_or_insert(0) += n;
            }
        }
        total
    }

    /// The kernel's connection rows with their keys (socket addresses), and its seeds, for
    /// drift repair.
    pub fn tracked(&self) -> anyhow::Result<TrackedRows> {
        let conns = self
            .dump_keyed::<u64, Conn>(map_names::CONNS, 1)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, *v.first()?)))
            .collect();
        let seeds = self.dump::<Tuple, Conn>(map_names::SEEDS, 1)?;
        Ok(TrackedRows { conns, seeds })
    }

    /// Deletes the connection row of socket `skaddr` if it is still the one read as
    /// `expected` (same tuple and connect time: not a newer socket at the same address).
    /// False when it changed or was gone.
    pub fn remove_conn(&mut self, skaddr: u64, expected: &Conn) -> anyhow::Result<bool> {
        let mut conns = self.map_mut::<HashMap<_, u64, Conn>>(map_names::CONNS)?;
        match conns.get(&skaddr, 0) {
            Ok(now) if now.tuple == expected.tuple && now.opened_ns == expected.opened_ns => {
                match conns.remove(&skaddr) {
                    Ok(()) => Ok(true),
                    Err(e) if is_not_found(&e) => Ok(false),
                    Err(e) => Err(map_error(map_names::CONNS, &e)),
                }
            }
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::CONNS, &e)),
        }
    }

    /// Registers a process found by seeding. Returns the identity the kernel uses for it: an
    /// existing one when the process already connected since zkconn started; `None` when the
    /// table is full (the caller counts it as overflow).
    pub fn insert_owner(&mut self, tgid: u32, owner: Owner) -> anyhow::Result<Option<OwnerKey>> {
        let mut owners: HashMap<_, u32, Owner> = self.map_mut(map_names::OWNERS)?;
        let birth_ns = match owners.insert(tgid, owner, u64::from(aya_noexist())) {
            Ok(()) => owner.birth_ns,
            Err(insert) => match owners.get(&tgid, 0) {
                Ok(o) => o.birth_ns,
                Err(_) if is_full(&insert) => return Ok(None),
                Err(_) => return Err(map_error(map_names::OWNERS, &insert)),
            },
        };
        Ok(Some(OwnerKey {
            tgid,
            _pad: 0,
            birth_ns,
        }))
    }

    /// Tells the kernel whether seeded connections may still wait in `SEEDS`: set before
    /// the first seed goes in, cleared once a read finds the table empty.
    pub fn set_seeds_pending(&mut self, pending: bool) -> anyhow::Result<()> {
        if pending == self.seeds_pending {
            return Ok(());
        }
        let mut control: Array<_, u32> = self.map_mut(map_names::CONTROL)?;
        control
            .set(control::SEEDS_PENDING, u32::from(pending), 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))
            .context("setting the seed flag")?;
        self.seeds_pending = pending;
        Ok(())
    }

    pub fn seeds_pending(&self) -> bool {
        self.seeds_pending
    }

    /// Tells the kernel that seeding is scanning (connects then record their inode).
    pub fn set_seeding(&mut self, seeding: bool) -> anyhow::Result<()> {
        let mut control: Array<_, u32> = self.map_mut(map_names::CONTROL)?;
        control
            .set(control::SEEDING, u32::from(seeding), 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))
            .context("setting the seeding flag")
    }

    /// Hands a seed to the kernel; false when the table is full (the caller counts it as
    /// overflow).
    pub fn insert_seed(&mut self, conn: Conn) -> anyhow::Result<bool> {
        let mut seeds: HashMap<_, Tuple, Conn> = self.map_mut(map_names::SEEDS)?;
        match seeds.insert(conn.tuple, conn, 0) {
            Ok(()) => Ok(true),
            Err(e) if is_full(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::SEEDS, &e)),
        }
    }

    /// Forgets the counters of a cgroup that is gone and holds nothing (see the engine's
    /// retention).
    pub fn forget_cgroup(&mut self, id: u64) -> anyhow::Result<()> {
        let mut stats = self.map_mut::<HashMap<_, u64, Counters>>(map_names::CGROUP_STATS)?;
        match stats.remove(&id) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(map_error(map_names::CGROUP_STATS, &e)),
        }
    }

    /// Forgets the counters of an owner that exited and holds nothing (see the engine's
    /// retention): its row in `PROC_STATS` goes, so the table does not fill with the dead.
    pub fn forget_owner(&mut self, key: &OwnerKey) -> anyhow::Result<()> {
        let mut stats = self.map_mut::<HashMap<_, OwnerKey, Counters>>(map_names::PROC_STATS)?;
        match stats.remove(key) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(map_error(map_names::PROC_STATS, &e)),
        }
        // Where the kernel reports no exits (no group_dead), it never forgets the process
        // itself either: its identity goes too, unless the pid is already someone else's.
        let mut owners = self.map_mut::<HashMap<_, u32, Owner>>(map_names::OWNERS)?;
        match owners.get(&key.tgid, 0) {
            Ok(o) if o.birth_ns == key.birth_ns => match owners.remove(&key.tgid) {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                Err(e) => Err(map_error(map_names::OWNERS, &e)),
            },
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(map_error(map_names::OWNERS, &e)),
        }
    }

    /// Removes a seed; false when it was already gone (the kernel adopted or closed it).
    pub fn remove_seed(&mut self, tuple: &Tuple) -> anyhow::Result<bool> {
        let mut seeds = self.map_mut::<HashMap<_, Tuple, Conn>>(map_names::SEEDS)?;
        match seeds.remove(tuple) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_error(map_names::SEEDS, &e)),
        }
    }

    /// A real map look-up and update, as the source makes them every second: what
    /// [`caps::drop_after_attach`] probes the kernel with.
    pub fn check_map_access(&mut self) -> anyhow::Result<()> {
        let mut control: Array<_, u32> = self.map_mut(map_names::CONTROL)?;
        let seeding = control
            .get(&control::SEEDING, 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))?;
        control
            .set(control::SEEDING, seeding, 0)
            .map_err(|e| map_error(map_names::CONTROL, &e))?;
        self.dump::<Tuple, Conn>(map_names::SEEDS, 1).map(drop)
    }
}

/// The running kernel's BTF as aya reads it, for loading BTF-typed programs.
fn aya_btf() -> anyhow::Result<aya::Btf> {
    aya::Btf::from_sys_fs().context("reading /sys/kernel/btf/vmlinux failed")
}

/// What the kernel offers, found before loading, for the hooks' preconditions.
struct Needs {
    kernel_btf: Result<(), String>,
    sock_layout: Result<(), String>,
    state_layout: Result<(), String>,
}

impl Needs {
    fn check(&self, hook: Hook) -> anyhow::Result<()> {
        let sock = || {
            self.kernel_btf.clone().map_err(|e| anyhow!("{e}"))?;
            self.sock_layout
                .clone()
                .map_err(|e| anyhow!("the kernel's BTF does not describe the socket: {e}"))
        };
        match hook {
            Hook::Btf | Hook::Fentry | Hook::Kprobe => sock(),
            Hook::Tracepoint => self.state_layout.clone().map_err(|e| anyhow!("{e}")),
            Hook::Poll => bail!("--hook poll loads no BPF program"),
        }
    }
}

fn aya_noexist() -> u32 {
    // BPF_NOEXIST from the UAPI.
    1
}

/// Offsets of `sock:inet_sock_set_state`'s fields, from its tracefs format file.
fn state_tp_layout(root: &std::path::Path) -> anyhow::Result<StateTpLayout> {
    let state = tracefs::tracepoint_fields(root, "sock", "inet_sock_set_state")?;
    layout_of_state_tp(&state)
}

/// The offsets and sizes of `sock:inet_sock_set_state`'s fields, from its format file.
fn layout_of_state_tp(state: &StdHashMap<String, tracefs::Field>) -> anyhow::Result<StateTpLayout> {
    let get = |name: &str| {
        state.get(name).ok_or_else(|| {
            anyhow!(
                "this kernel's sock:inet_sock_set_state has no field {name:?}; zkconn needs \
                 kernel 4.16 or newer"
            )
        })
    };
    let field = |name: &str| get(name).map(|f| f.offset);
    // A scalar zkconn reads whole: 1, 2, 4 or 8 bytes, the same for each field of a pair.
    let size = |names: &[&str]| -> anyhow::Result<u16> {
        let sizes = names
            .iter()
            .map(|n| get(n).map(|f| f.size))
            .collect::<anyhow::Result<Vec<u16>>>()?;
        match sizes.as_slice() {
            [first, rest @ ..]
                if [1, 2, 4, 8].contains(first) && rest.iter().all(|s| s == first) =>
            {
                Ok(*first)
            }
            _ => bail!(
                "this kernel's sock:inet_sock_set_state gives {} the sizes {sizes:?}, which \
                 zkconn cannot read; use --hook btf",
                names.join(" and ")
            ),
        }
    };
    Ok(StateTpLayout {
        skaddr: field("skaddr")?,
        oldstate: field("oldstate")?,
        newstate: field("newstate")?,
        sport: field("sport")?,
        dport: field("dport")?,
        family: field("family")?,
        protocol: field("protocol")?,
        saddr: field("saddr")?,
        daddr: field("daddr")?,
        saddr_v6: field("saddr_v6")?,
        daddr_v6: field("daddr_v6")?,
        valid: 1,
        skaddr_size: size(&["skaddr"])?,
        state_size: size(&["oldstate", "newstate"])?,
        port_size: size(&["sport", "dport"])?,
        family_size: size(&["family"])?,
        protocol_size: size(&["protocol"])?,
    })
}

/// Where a task's cgroup names are in this kernel (see [`TaskLayout`]). The cpu controller's
/// entry is optional: a kernel without it still names the v2 cgroup.
pub fn task_layout(b: &btf::Btf) -> Result<TaskLayout, btf::BtfError> {
    let cpu = b
        .enum_value("cgroup_subsys_id", "cpu_cgrp_id")
        .and_then(|id| Ok(b.member_offset("css_set", "subsys")? + 8 * id));
    Ok(TaskLayout {
        task_cgroups: b.member_offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: b.member_offset("css_set", "dfl_cgrp")?,
        css_set_cpu: cpu.as_ref().map_or(0, |&o| o),
        css_cgroup: b.member_offset("cgroup_subsys_state", "cgroup")?,
        cgroup_kn: b.member_offset("cgroup", "kn")?,
        kn_name: b.member_offset("kernfs_node", "name")?,
        // Renamed `__parent` in 6.15 (kernfs: RCU-protected parent).
        kn_parent: b
            .member_offset("kernfs_node", "__parent")
            .or_else(|_| b.member_offset("kernfs_node", "parent"))?,
        has_cpu: u32::from(cpu.is_ok()),
        valid: 1,
        _pad: 0,
    })
}

/// Where the BTF hook finds its fields in this kernel's `struct sock`.
pub fn sock_layout(b: &btf::Btf) -> Result<SockLayout, btf::BtfError> {
    let common = b.member_offset("sock", "__sk_common")?;
    let at = |member: &str| b.member_offset("sock_common", member).map(|o| common + o);
    let (proto_bits, proto_size) = b.member_bits("sock", "sk_protocol")?;
    if proto_size > 16 || proto_bits % 32 + proto_size > 32 {
        return Err(btf::BtfError::Malformed(
            "sock.sk_protocol is not a small integer",
        ));
    }
    let v6 = at("skc_v6_daddr").and_then(|d| Ok((d, at("skc_v6_rcv_saddr")?)));
    // `SOCK_INODE(socket)`: the inode allocated right after the socket in `socket_alloc`.
    let ino = (|| {
        let sk_socket = b.member_offset("sock", "sk_socket")?;
        let socket = b.member_offset("socket_alloc", "socket")?;
        let inode = b.member_offset("socket_alloc", "vfs_inode")?;
        let i_ino = b.member_offset("inode", "i_ino")?;
        let delta = (inode + i_ino)
            .checked_sub(socket)
            .ok_or(btf::BtfError::Malformed("socket_alloc has its inode first"))?;
        Ok::<_, btf::BtfError>((sk_socket, delta))
    })();
    Ok(SockLayout {
        dport: at("skc_dport")?,
        sport: b.member_offset("inet_sock", "inet_sport")?,
        family: at("skc_family")?,
        state: at("skc_state")?,
        daddr: at("skc_daddr")?,
        saddr: at("skc_rcv_saddr")?,
        daddr_v6: v6.as_ref().map_or(0, |v| v.0),
        saddr_v6: v6.as_ref().map_or(0, |v| v.1),
        protocol_word: proto_bits / 32 * 4,
        protocol_shift: proto_bits % 32,
        protocol_mask: (1u32 << proto_size) - 1,
        has_v6: u32::from(v6.is_ok()),
        sk_socket: ino.as_ref().map_or(0, |i| i.0),
        socket_ino: ino.as_ref().map_or(0, |i| i.1),
        has_ino: u32::from(ino.is_ok()),
        valid: 1,
    })
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

/// A map read or update that failed, in one sentence that says what to do.
fn map_error(name: &str, e: &dyn std::error::Error) -> anyhow::Error {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if text.contains("Operation not permitted") {
        anyhow!(
            "the kernel refused zkconn access to its map {name} ({text}): this kernel wants \
             CAP_BPF (CAP_SYS_ADMIN before Linux 5.8) for every map access while \
             kernel.unprivileged_bpf_disabled is set; give zkconn that capability"
        )
    } else {
        anyhow!("reading the kernel map {name} failed: {text}")
    }
}

/// Whether a map error is only "no such entry".
/// A hash map with no room for another key (E2BIG).
fn is_full(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG))
}

fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

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
