//! Kernel helpers that older kernels lack, replaced before loading: a call to a helper the
//! running kernel does not have is rewritten into a call to the older helper with the same
//! arguments, as libbpf does for `bpf_probe_read_kernel`. Which helpers exist is probed at
//! load time by loading a three-instruction program that calls each one; `--fallback`
//! forces a replacement on any kernel (so every fallback runs on every kernel of the matrix).
//!
//! Owns: probing helpers, rewriting helper calls in the object's code sections.
//! Must not: change anything but the helper number of a call instruction.

use std::io;

/// A replacement of one helper by an older one with the same arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) for `bpf_ktime_get_boot_ns` (5.8+): ages and
    /// times then exclude the time the host was suspended.
    MonotonicClock,
    /// `bpf_probe_read{,_str}` for `bpf_probe_read_kernel{,_str}` (5.5+).
    ProbeRead,
}

/// Helper numbers from `enum bpf_func_id` (include/uapi/linux/bpf.h).
const KTIME_GET_NS: i32 = 5;
const PROBE_READ: i32 = 4;
const PROBE_READ_STR: i32 = 45;
const PROBE_READ_KERNEL: i32 = 113;
const PROBE_READ_KERNEL_STR: i32 = 115;
const KTIME_GET_BOOT_NS: i32 = 125;

impl Fallback {
    /// (new helper, its replacement) pairs.
    fn replacements(self) -> &'static [(i32, i32)] {
        match self {
            Fallback::MonotonicClock => &[(KTIME_GET_BOOT_NS, KTIME_GET_NS)],
            Fallback::ProbeRead => &[
                (PROBE_READ_KERNEL, PROBE_READ),
                (PROBE_READ_KERNEL_STR, PROBE_READ_STR),
            ],
        }
    }

    /// The helper whose absence calls for this fallback.
    fn needs(self) -> i32 {
        match self {
            Fallback::MonotonicClock => KTIME_GET_BOOT_NS,
            Fallback::ProbeRead => PROBE_READ_KERNEL,
        }
    }

    pub const ALL: [Fallback; 2] = [Fallback::MonotonicClock, Fallback::ProbeRead];
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fallback::MonotonicClock => "monotonic-clock",
            Fallback::ProbeRead => "probe-read",
        })
    }
}

/// A fallback in use, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InUse {
    pub fallback: Fallback,
    /// `forced` (`--fallback`) or `kernel` (the helper is missing).
    pub reason: &'static str,
}

/// The fallbacks this kernel needs, plus the `forced` ones.
pub fn choose(forced: &[Fallback]) -> Vec<InUse> {
    Fallback::ALL
        .into_iter()
        .filter_map(|f| {
            if forced.contains(&f) {
                Some(InUse {
                    fallback: f,
                    reason: "forced",
                })
            } else if helper_missing(f.needs()) {
                Some(InUse {
                    fallback: f,
                    reason: "kernel",
                })
            } else {
                None
            }
        })
        .collect()
}

/// Whether the running kernel refuses a tracepoint program calling helper `id` as an
/// unknown function. Anything else (a privilege, a limit) is not taken for an absence: the
/// real load says what is wrong.
fn helper_missing(id: i32) -> bool {
    matches!(probe_helper(id), Err(e) if e.raw_os_error() == Some(libc::EINVAL))
}

/// `union bpf_attr` for BPF_PROG_LOAD, as far as this needs it.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

fn probe_helper(id: i32) -> io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
    // call id; r0 = 0; exit
    let insns: [u64; 3] = [0x85 | (u64::from(id as u32) << 32), 0xb7, 0x95];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` is a live BPF_PROG_LOAD attribute of its exact size; the instructions
    // and license it points to outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            std::ptr::from_mut(&mut attr).cast::<libc::c_void>(),
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this program fd to us.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// `object` (an ELF eBPF object) with the helper calls of `fallbacks` rewritten; returns the
/// copy, 8-byte aligned as the object parser wants it, and how many calls were rewritten.
pub fn rewrite(object: &[u8], fallbacks: &[Fallback]) -> anyhow::Result<(Vec<u64>, usize)> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: `words` owns at least `object.len()` initialised bytes; u8 has no alignment.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let mut rewritten = 0;
    for (offset, size) in code_sections(bytes)? {
        let code = &mut bytes[offset..offset + size];
        for insn in code.chunks_exact_mut(8) {
            // BPF_JMP | BPF_CALL with src_reg 0: a helper call (1 is a subprogram, 2 a kfunc).
            if insn[0] != 0x85 || insn[1] >> 4 != 0 {
                continue;
            }
            let id = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let replacement = fallbacks
                .iter()
                .flat_map(|f| f.replacements())
                .find(|(new, _)| *new == id);
            if let Some((_, old)) = replacement {
                insn[4..8].copy_from_slice(&old.to_le_bytes());
                rewritten += 1;
            }
        }
    }
    Ok((words, rewritten))
}

/// (offset, size) of every executable section of a little-endian ELF64 object.
fn code_sections(elf: &[u8]) -> anyhow::Result<Vec<(usize, usize)>> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        anyhow::bail!("the eBPF object is not a little-endian ELF64 file; rebuild zkconn");
    }
    let bad = || anyhow::anyhow!("the eBPF object's section table is damaged; rebuild zkconn");
    let shoff = usize::try_from(u64_at(0x28).ok_or_else(bad)?)?;
    let shentsize = usize::from(u16_at(0x3a).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(0x3c).ok_or_else(bad)?);
    const SHF_EXECINSTR: u64 = 0x4;
    let mut out = Vec::new();
    for i in 0..shnum {
        let header = shoff + i * shentsize;
        let flags = u64_at(header + 8).ok_or_else(bad)?;
        if flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let offset = usize::try_from(u64_at(header + 24).ok_or_else(bad)?)?;
        let size = usize::try_from(u64_at(header + 32).ok_or_else(bad)?)?;
        if offset.checked_add(size).is_none_or(|end| end > elf.len()) {
            return Err(bad());
        }
        out.push((offset, size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helper calls by number in the code sections of `object`.
    fn calls(object: &[u8], id: i32) -> usize {
        code_sections(object)
            .unwrap()
            .into_iter()
            .flat_map(|(o, s)| object[o..o + s].chunks_exact(8))
            .filter(|i| i[0] == 0x85 && i[1] >> 4 == 0)
            .filter(|i| i32::from_le_bytes([i[4], i[5], i[6], i[7]]) == id)
            .count()
    }

    fn as_bytes(words: &[u64], len: usize) -> &[u8] {
        // SAFETY: a u64 slice viewed as its first `len` bytes.
        unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
    }

    #[test]
    fn every_call_of_a_replaced_helper_is_rewritten_and_nothing_else() {
        let object = super::super::OBJECT;
        let before: Vec<usize> = [
            KTIME_GET_BOOT_NS,
            KTIME_GET_NS,
            PROBE_READ_KERNEL,
            PROBE_READ,
        ]
        .iter()
        .map(|&id| calls(object, id))
        .collect();
        assert!(before[0] > 0 && before[2] > 0, "{before:?}");

        let (words, n) = rewrite(object, &[Fallback::MonotonicClock]).unwrap();
        let clock = as_bytes(&words, object.len());
        assert_eq!(n, before[0]);
        assert_eq!(calls(clock, KTIME_GET_BOOT_NS), 0);
        assert_eq!(calls(clock, KTIME_GET_NS), before[0] + before[1]);
        assert_eq!(calls(clock, PROBE_READ_KERNEL), before[2]);

        let (words, _) = rewrite(object, &Fallback::ALL).unwrap();
        let both = as_bytes(&words, object.len());
        assert_eq!(calls(both, PROBE_READ_KERNEL), 0);
        assert_eq!(calls(both, PROBE_READ_KERNEL_STR), 0);
        assert_eq!(calls(both, PROBE_READ), before[2] + before[3]);
        // Only call instructions changed: every other byte is the object's.
        let differing = object.iter().zip(both).filter(|(a, b)| a != b).count();
        assert!(differing <= 4 * n + 4 * (before[2] + calls(object, PROBE_READ_KERNEL_STR)));

        assert!(rewrite(b"not an elf", &Fallback::ALL).is_err());
    }
}
