//! Starting zkconn with fewer privileges than root: exactly as a systemd unit would (its
//! capability bounding set, no new privileges, its locked-memory limit), and with the
//! kernel refusing its map reads (a seccomp filter), to prove such a failure is loud.

use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow, bail};

/// The capabilities a unit may name here, as `capabilities(7)` numbers them.
const CAPS: &[(&str, u32)] = &[
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

/// A process's limits as a unit sets them.
#[derive(Clone, Debug, Default)]
pub struct UnitLimits {
    /// Capabilities left in the bounding set; `None`: all of root's.
    pub caps: Option<u64>,
    /// RLIMIT_MEMLOCK, soft and hard; `None`: as inherited.
    pub memlock: Option<libc::rlim_t>,
}

impl UnitLimits {
    /// `CAP_X,CAP_Y` to a bounding-set mask.
    pub fn caps_from(list: &str) -> anyhow::Result<u64> {
        let mut mask = 0u64;
        for name in list.split([',', ' ']).filter(|n| !n.is_empty()) {
            let bit = CAPS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, b)| *b)
                .ok_or_else(|| anyhow!("unknown capability {name}"))?;
            mask |= 1 << bit;
        }
        Ok(mask)
    }

    /// `BYTES` or `infinity`.
    pub fn memlock_from(value: &str) -> anyhow::Result<libc::rlim_t> {
        if value == "infinity" {
            Ok(libc::RLIM_INFINITY)
        } else {
            value
                .parse()
                .with_context(|| format!("{value:?} is not bytes or infinity"))
        }
    }

    /// What `unit` (a systemd unit file) grants: `CapabilityBoundingSet=` and
    /// `LimitMEMLOCK=` (64 KiB, systemd's default before v253, when absent).
    pub fn of_unit(unit: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(unit)
            .with_context(|| format!("cannot read {}", unit.display()))?;
        let value = |key: &str| {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim)
        };
        let caps = value("CapabilityBoundingSet=")
            .ok_or_else(|| anyhow!("{} has no CapabilityBoundingSet=", unit.display()))?;
        let memlock = value("LimitMEMLOCK=").unwrap_or("65536");
        Ok(UnitLimits {
            caps: Some(Self::caps_from(caps)?),
            memlock: Some(Self::memlock_from(memlock)?),
        })
    }

    /// Applies the limits to `cmd`'s child, between fork and exec.
    pub fn apply(&self, cmd: &mut Command) {
        let (caps, memlock) = (self.caps, self.memlock);
        if caps.is_none() && memlock.is_none() {
            return;
        }
        // SAFETY: the closure only makes async-signal-safe system calls (prctl, setrlimit)
        // on the child's own process state.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                if let Some(keep) = caps {
                    for cap in 0..64u64 {
                        if keep & (1 << cap) != 0 {
                            continue;
                        }
                        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                            let e = std::io::Error::last_os_error();
                            // Past the kernel's last capability.
                            if e.raw_os_error() != Some(libc::EINVAL) {
                                return Err(e);
                            }
                        }
                    }
                    // Ambient capabilities would survive exec: clear them (4.3+).
                    let _ = libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_CLEAR_ALL,
                        0,
                        0,
                        0,
                    );
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(limit) = memlock {
                    let mut r = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    // A host (a container) that cannot grant the unit's limit: the highest
                    // it can. From 5.11 the limit does not matter to BPF.
                    if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                        let mut now = libc::rlimit {
                            rlim_cur: 0,
                            rlim_max: 0,
                        };
                        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        r.rlim_cur = limit.min(now.rlim_max);
                        r.rlim_max = r.rlim_cur;
                        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
    }
}

/// `bpf()` commands that read a map: look-up, next key, batch look-up.
const MAP_READS: [u32; 3] = [1, 4, 24];

/// Makes the kernel refuse every map read of `cmd`'s child with EPERM (a seccomp filter),
/// as a kernel before 5.19 does once the capability it wants is gone. Loading, attaching
/// and map updates are left alone. x86-64 only.
pub fn refuse_map_reads(cmd: &mut Command) -> anyhow::Result<()> {
    refuse_syscall(cmd, libc::SYS_bpf, Some(MAP_READS), libc::EPERM)
}

/// Makes `bpf()` fail with ENOSYS for `cmd`'s child, as on a kernel built without
/// CONFIG_BPF_SYSCALL. x86-64 only.
pub fn without_bpf(cmd: &mut Command) -> anyhow::Result<()> {
    refuse_syscall(cmd, libc::SYS_bpf, None, libc::ENOSYS)
}

/// Makes `perf_event_open()` fail with EACCES for `cmd`'s child, as a policy forbidding
/// perf events does. x86-64 only.
pub fn refuse_perf_events(cmd: &mut Command) -> anyhow::Result<()> {
    refuse_syscall(cmd, libc::SYS_perf_event_open, None, libc::EACCES)
}

/// A seccomp filter failing syscall `nr` with `errno`: the calls whose first argument
/// `only` lists, or every one.
fn refuse_syscall(
    cmd: &mut Command,
    nr: libc::c_long,
    only: Option<[u32; 3]>,
    errno: i32,
) -> anyhow::Result<()> {
    if !cfg!(target_arch = "x86_64") {
        bail!("the seccomp filter is written for x86-64");
    }
    // SAFETY: prctl(2) calls on the child's own state between fork and exec; the filter
    // program is built inside the closure and outlives the call that copies it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            const LD_ABS_W: u16 = 0x20;
            const JEQ_K: u16 = 0x15;
            const JA: u16 = 0x05;
            const RET_K: u16 = 0x06;
            const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
            const RET_ALLOW: u32 = 0x7fff_0000;
            let ret_errno = 0x0005_0000 | (errno as u32 & 0xffff);
            let insn = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
            // seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low half, little-endian).
            let program = [
                insn(LD_ABS_W, 0, 0, 4),
                insn(JEQ_K, 0, 6, AUDIT_ARCH_X86_64),
                insn(LD_ABS_W, 0, 0, 0),
                insn(JEQ_K, 0, 4, nr as u32),
                insn(LD_ABS_W, 0, 0, 16),
                match only {
                    Some(cmds) => insn(JEQ_K, 3, 0, cmds[0]),
                    None => insn(JA, 0, 0, 3),
                },
                insn(JEQ_K, 2, 0, only.map_or(0, |c| c[1])),
                insn(JEQ_K, 1, 0, only.map_or(0, |c| c[2])),
                insn(RET_K, 0, 0, RET_ALLOW),
                insn(RET_K, 0, 0, ret_errno),
            ];
            let prog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                    0,
                    0,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}
