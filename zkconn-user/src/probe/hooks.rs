//! Attaching and detaching each hook's programs, and what each hook needs of the kernel.
//!
//! Owns: the programs of a hook, attach order, unloading a hook that failed part-way.
//! Must not: read or write maps.

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{BtfTracePoint, FEntry, KProbe, TracePoint};
use zkconn_common::{hooks::UNAVAILABLE, program_names};

use super::{Hook, HookChoice, Probe, perf_refused};

impl Probe {
    /// Attaches the hook `choice` names, or for `auto` the first of [`Hook::AUTO_ORDER`]
    /// that this kernel accepts. A hook that fails part-way is unloaded before the next is
    /// tried, so no two hooks ever count the same connection.
    pub(super) fn attach_hook(
        &mut self,
        choice: HookChoice,
        needs: &Needs,
    ) -> anyhow::Result<Hook> {
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

    pub(super) fn attach(&mut self, hook: Hook) -> anyhow::Result<()> {
        match hook {
            Hook::Btf => {
                let btf = self.aya_btf.get()?;
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
                let btf = self.aya_btf.get()?;
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
    pub(super) fn unload(&mut self, hook: Hook) {
        for name in programs(hook) {
            self.unload_program(name);
        }
    }

    /// Detaches and unloads program `name` if it got loaded.
    pub(super) fn unload_program(&mut self, name: &str) {
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

    pub(super) fn attach_btf_tracepoint(
        &mut self,
        program: &str,
        name: &str,
    ) -> anyhow::Result<()> {
        let btf = self.aya_btf.get()?;
        let prog: &mut BtfTracePoint = self.program_mut(program)?;
        prog.load(name, &btf)
            .with_context(|| format!("the kernel refused to load the BTF tracepoint {name}"))?;
        prog.attach()
            .with_context(|| format!("the kernel refused to attach the BTF tracepoint {name}"))?;
        Ok(())
    }

    pub(super) fn attach_fentry(
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

    pub(super) fn attach_kprobe(&mut self, program: &str, function: &str) -> anyhow::Result<()> {
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

    pub(super) fn program_mut<'a, P>(&'a mut self, name: &str) -> anyhow::Result<&'a mut P>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the eBPF object has no program {name}; rebuild zkconn"))?
            .try_into()
            .with_context(|| format!("{name} has an unexpected program type; rebuild zkconn"))
    }

    pub(super) fn attach_tracepoint(
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
}

/// Its programs, in attach order (the connect point before the state changes, so no
/// connection is seen leaving CLOSE without its connect).
pub(super) fn programs(hook: Hook) -> &'static [&'static str] {
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

/// The running kernel's BTF as aya reads it, for loading BTF-typed programs: several MB on
/// a distribution kernel, so parsed once, on a thread started with the load (it runs while
/// the maps are made), and dropped once the programs are attached.
pub(super) enum AyaBtf {
    Parsing(std::thread::JoinHandle<Result<aya::Btf, String>>),
    Parsed(Result<Arc<aya::Btf>, String>),
    Dropped,
}

impl AyaBtf {
    pub(super) fn start() -> Self {
        match std::thread::Builder::new()
            .name("zkconn-btf".into())
            .spawn(|| aya::Btf::from_sys_fs().map_err(|e| e.to_string()))
        {
            Ok(thread) => AyaBtf::Parsing(thread),
            // No thread to spare: parsed when first needed, here.
            Err(_) => AyaBtf::Parsed(
                aya::Btf::from_sys_fs()
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            ),
        }
    }

    fn get(&mut self) -> anyhow::Result<Arc<aya::Btf>> {
        if let AyaBtf::Parsing(_) = self
            && let AyaBtf::Parsing(thread) = std::mem::replace(self, AyaBtf::Dropped)
        {
            *self = AyaBtf::Parsed(match thread.join() {
                Ok(parsed) => parsed.map(Arc::new),
                Err(_) => Err("the thread reading it panicked".into()),
            });
        }
        match self {
            AyaBtf::Parsed(parsed) => parsed
                .clone()
                .map_err(|e| anyhow!("reading /sys/kernel/btf/vmlinux failed: {e}")),
            AyaBtf::Parsing(_) | AyaBtf::Dropped => {
                bail!("the kernel's BTF was dropped after the programs were attached")
            }
        }
    }
}

/// What the kernel offers, found before loading, for the hooks' preconditions.
pub(super) struct Needs {
    pub(super) kernel_btf: Result<(), String>,
    pub(super) sock_layout: Result<(), String>,
    pub(super) state_layout: Result<(), String>,
}

impl Needs {
    pub(super) fn check(&self, hook: Hook) -> anyhow::Result<()> {
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
