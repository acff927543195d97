//! Capabilities and the locked-memory limit: what zkconn needs to load its programs, and what
//! it keeps once they are attached.
//!
//! Owns: checking the privileges before loading, raising `RLIMIT_MEMLOCK` where the kernel
//! charges BPF memory to it, and the drop after attach, which probes the running kernel for
//! what map access still needs rather than trusting a version number.
//! Must not: touch the maps itself (the caller hands in the access to probe).

use std::io;

use anyhow::{Context as _, bail};

use crate::model::Kept;

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The names `capabilities(7)` gives the capabilities zkconn deals with.
const NAMES: &[(u32, &str)] = &[
    (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    (CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"),
    (CAP_PERFMON, "CAP_PERFMON"),
    (CAP_BPF, "CAP_BPF"),
];

/// The names of the capabilities in `mask` (unknown bits as `cap_N`), lowest bit first.
pub fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            NAMES
                .iter()
                .find(|(b, _)| *b == bit)
                .map_or_else(|| format!("cap_{bit}"), |(_, n)| (*n).to_owned())
        })
        .collect()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// This thread's (effective, permitted) sets.
fn get() -> io::Result<(u64, u64)> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) with a v3 header and room for the two words v3 writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok((join(|d| d.effective), join(|d| d.permitted)))
}

/// Sets this thread's effective and permitted sets (inheritable empty). Lowering the
/// effective set alone can be undone; lowering the permitted set cannot.
fn set(effective: u64, permitted: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    for (i, word) in data.iter_mut().enumerate() {
        *word = CapData {
            effective: (effective >> (32 * i)) as u32,
            permitted: (permitted >> (32 * i)) as u32,
            inheritable: 0,
        };
    }
    // SAFETY: capset(2) on this thread with the v3 header and its two words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Once the programs are loaded, attached and seeded: drops every capability but
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (if held), CAP_NET_ADMIN when `keep_net_admin`
/// (NAT look-ups in the connection tracking table need it), and whatever this kernel needs
/// for zkconn to go on reading and writing its own maps.
///
/// Before 5.19, a kernel with `kernel.unprivileged_bpf_disabled` set refuses every bpf()
/// command, map look-ups and updates included, to a task without CAP_BPF (CAP_SYS_ADMIN
/// before 5.8, which has no CAP_BPF); 5.19 let a task use the map fds it already holds
/// (the series "bpf: refine kernel.unprivileged_bpf_disabled behaviour", tested by the
/// kernel's `tools/testing/selftests/bpf/prog_tests/unpriv_bpf_disabled.c`). Which case
/// this is, `map_access` answers: it is called with the effective set lowered (the
/// permitted set still whole) and must exercise a real map read and update.
pub fn drop_after_attach(
    keep_net_admin: bool,
    mut map_access: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Kept> {
    let (_, permitted) = get().context("cannot read this process's capabilities")?;
    let net_admin = if keep_net_admin {
        1 << CAP_NET_ADMIN
    } else {
        0
    };
    // What zkconn still uses once attached: reading other users' `/proc/PID/*` to
    // attribute processes it has not seen yet, and NAT look-ups.
    let base = permitted & ((1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH) | net_admin);
    let candidates = [
        (base, None),
        (
            base | (permitted & (1 << CAP_BPF)),
            Some(
                "this kernel refuses map access without CAP_BPF (before Linux 5.19, with kernel.unprivileged_bpf_disabled set)",
            ),
        ),
        (
            base | (permitted & (1 << CAP_SYS_ADMIN)),
            Some(
                "this kernel refuses map access without CAP_SYS_ADMIN (before Linux 5.8, with kernel.unprivileged_bpf_disabled set)",
            ),
        ),
    ];
    let mut refused = None;
    for (i, (mask, why)) in candidates.iter().enumerate() {
        if i > 0 && *mask == base {
            continue; // that capability is not held: nothing new to try
        }
        set(*mask, permitted).context("cannot lower the effective capabilities after attach")?;
        match map_access() {
            Ok(()) => {
                set(*mask, *mask).context("cannot drop the permitted capabilities after attach")?;
                if let Some(why) = why {
                    tracing::info!("keeping {}: {why}", names(*mask & !base).join(", "));
                }
                return Ok(Kept {
                    kept: names(*mask),
                    why: why.map(str::to_owned),
                    mask: *mask,
                });
            }
            Err(e) => refused = Some(e),
        }
    }
    // Nothing kept works: put everything back so the caller's error is about the maps.
    let _ = set(permitted, permitted);
    let e = refused.map_or_else(|| "no map access".to_owned(), |e| format!("{e:#}"));
    bail!(
        "zkconn cannot reach its own maps with the capabilities it keeps after attach ({e}); \
         give it CAP_BPF (CAP_SYS_ADMIN before Linux 5.8)"
    )
}

/// The current effective set, from `/proc/self/status` (0 when unreadable).
fn effective() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("cannot read /proc/self/status to check privileges; is /proc mounted?")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0))
}

/// Checks the capabilities zkconn needs before touching the kernel, so a missing privilege
/// is one clear sentence rather than an errno from deep inside the loader.
pub fn check_privileges() -> anyhow::Result<()> {
    let eff = effective()?;
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let bpf_ok = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    if !bpf_ok {
        bail!(
            "zkconn needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN \
             before Linux 5.8), to load its eBPF programs; run it with sudo (or `cargo xtask \
             run`), or without BPF with --hook poll (connections shorter than a second and \
             refusals are then not seen)"
        );
    }
    let missing: Vec<&str> = [
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "without {} other users' /proc/PID/fd and network namespaces cannot be read: \
             connections that predate zkconn count under an unknown owner, or not at all in \
             namespaces zkconn cannot find",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// `(major, minor)` of the running kernel, for diagnoses only (what zkconn does is decided
/// by probing the kernel, never by its version).
pub fn kernel_release() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The locked-memory limit, soft and hard, in bytes (`None`: unlimited).
pub fn memlock_limit() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into `r`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok((finite(r.rlim_cur), finite(r.rlim_max)))
}

/// Before 5.11 every BPF map and program is charged to `RLIMIT_MEMLOCK` (from 5.11 to the
/// memory cgroup): raises the soft limit to the hard one, or to unlimited where allowed
/// (CAP_SYS_RESOURCE). Returns the soft limit now in force (`None`: unlimited).
pub fn raise_memlock() -> Option<u64> {
    let Ok((soft, hard)) = memlock_limit() else {
        return None;
    };
    soft?;
    for want in [libc::RLIM_INFINITY, hard.unwrap_or(libc::RLIM_INFINITY)] {
        let r = libc::rlimit {
            rlim_cur: want,
            rlim_max: want.max(hard.unwrap_or(libc::RLIM_INFINITY)),
        };
        // SAFETY: setrlimit(2) reads one rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } == 0 {
            break;
        }
    }
    memlock_limit().ok().and_then(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named_as_capabilities_7_names_them() {
        let mask = (1 << CAP_BPF) | (1 << CAP_SYS_PTRACE) | (1 << 63);
        assert_eq!(names(mask), ["CAP_SYS_PTRACE", "CAP_BPF", "cap_63"]);
        assert!(names(0).is_empty());
    }
}
