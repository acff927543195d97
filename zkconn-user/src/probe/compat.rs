//! Kernel features that older kernels lack, replaced before loading:
//! - a call to a helper the running kernel does not have is rewritten into a call to the
//!   older helper with the same arguments, as libbpf does for `bpf_probe_read_kernel`;
//! - the event ring buffer (5.8+) becomes a perf event array, as libbpf-tools' compat layer
//!   does: the map's definition is rewritten and the `EVENT_OUTPUT` global tells the programs
//!   (see `zkconn_common::event_output`).
//!
//! Which helpers exist is probed at load time by loading a three-instruction program that
//! calls each one, the ring buffer by creating one; `--fallback` forces a replacement on any
//! kernel (so every fallback runs on every kernel of the matrix).
//!
//! Owns: probing features, rewriting helper calls and the events map's definition.
//! Must not: change anything else in the object.

use std::io;

/// A replacement of one helper by an older one with the same arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) for `bpf_ktime_get_boot_ns` (5.8+): ages and
    /// times then exclude the time the host was suspended.
    MonotonicClock,
    /// `bpf_probe_read{,_str}` for `bpf_probe_read_kernel{,_str}` (5.5+).
    ProbeRead,
    /// A perf event array (one buffer per CPU, a wake-up per event) for the BPF ring buffer
    /// (5.8+).
    PerfBuffer,
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
            Fallback::PerfBuffer => &[],
        }
    }

    /// Whether the running kernel lacks what this fallback replaces.
    fn needed(self) -> bool {
        match self {
            Fallback::MonotonicClock => helper_missing(KTIME_GET_BOOT_NS),
            Fallback::ProbeRead => helper_missing(PROBE_READ_KERNEL),
            Fallback::PerfBuffer => ring_buffer_missing(),
        }
    }

    pub const ALL: [Fallback; 3] = [
        Fallback::MonotonicClock,
        Fallback::ProbeRead,
        Fallback::PerfBuffer,
    ];
}

impl Fallback {
    /// Its `--fallback` name.
    pub fn name(self) -> &'static str {
        match self {
            Fallback::MonotonicClock => "monotonic-clock",
            Fallback::ProbeRead => "probe-read",
            Fallback::PerfBuffer => "perf-buffer",
        }
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fallback in use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            } else if f.needed() {
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

/// Whether the running kernel refuses to create a BPF ring buffer as an unknown map type
/// (before 5.8). As for helpers, any other refusal is left to the real load to explain.
fn ring_buffer_missing() -> bool {
    /// `union bpf_attr` for BPF_MAP_CREATE, as far as this needs it.
    #[repr(C)]
    struct MapCreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        // SAFETY: sysconf has no memory-safety preconditions.
        max_entries: u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096),
    };
    // SAFETY: `attr` is a live BPF_MAP_CREATE attribute of its exact size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            std::ptr::from_ref(&attr).cast::<libc::c_void>(),
            size_of::<MapCreateAttr>(),
        )
    };
    if fd < 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL);
    }
    // SAFETY: the kernel just returned this map fd to us.
    unsafe { libc::close(fd as i32) };
    false
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

/// `object` (an ELF eBPF object) with `fallbacks` applied: helper calls rewritten, and the
/// events map retyped for [`Fallback::PerfBuffer`]. Returns the copy, 8-byte aligned as the
/// object parser wants it, and how many helper calls were rewritten.
pub fn rewrite(object: &[u8], fallbacks: &[Fallback]) -> anyhow::Result<(Vec<u64>, usize)> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: `words` owns at least `object.len()` initialised bytes; u8 has no alignment.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let sections = sections(object)?;
    let mut rewritten = 0;
    for s in sections.iter().filter(|s| s.flags & SHF_EXECINSTR != 0) {
        let code = &mut bytes[s.offset..s.offset + s.size];
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
    if fallbacks.contains(&Fallback::PerfBuffer) {
        let def = map_definition(object, &sections, zkconn_common::map_names::EVENTS)?;
        retype_as_perf_event_array(&mut bytes[def])?;
    }
    Ok((words, rewritten))
}

const SHF_EXECINSTR: u64 = 0x4;
const SHT_SYMTAB: u32 = 2;
/// `struct bpf_map_def` as aya-ebpf writes it in the `maps` section: type, key size,
/// value size, max entries, flags, id, pinning; u32 each.
const MAP_DEF_SIZE: usize = 28;
const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// A ring buffer's definition made a perf event array's: key and value are CPU index and
/// perf event fd, and no max entries lets the loader size it to the CPUs.
fn retype_as_perf_event_array(def: &mut [u8]) -> anyhow::Result<()> {
    let field =
        |i: usize| u32::from_le_bytes([def[4 * i], def[4 * i + 1], def[4 * i + 2], def[4 * i + 3]]);
    if field(0) != BPF_MAP_TYPE_RINGBUF {
        anyhow::bail!(
            "the eBPF object's events map has type {}, not a ring buffer; rebuild zkconn",
            field(0)
        );
    }
    for (i, value) in [BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0]
        .into_iter()
        .enumerate()
    {
        def[4 * i..4 * i + 4].copy_from_slice(&value.to_le_bytes());
    }
    Ok(())
}

/// One section header of a little-endian ELF64 object.
#[derive(Debug)]
struct Section {
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: usize,
}

/// Every section header of `elf`, checked to lie inside it.
fn sections(elf: &[u8]) -> anyhow::Result<Vec<Section>> {
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        anyhow::bail!("the eBPF object is not a little-endian ELF64 file; rebuild zkconn");
    }
    let bad = || anyhow::anyhow!("the eBPF object's section table is damaged; rebuild zkconn");
    let shoff = usize::try_from(u64_at(elf, 0x28).ok_or_else(bad)?)?;
    let shentsize = usize::from(u16_at(elf, 0x3a).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(elf, 0x3c).ok_or_else(bad)?);
    let mut out = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let header = shoff + i * shentsize;
        let offset = usize::try_from(u64_at(elf, header + 24).ok_or_else(bad)?)?;
        let size = usize::try_from(u64_at(elf, header + 32).ok_or_else(bad)?)?;
        let kind = u32_at(elf, header + 4).ok_or_else(bad)?;
        // SHT_NOBITS (8) occupies no bytes in the file.
        if kind != 8 && offset.checked_add(size).is_none_or(|end| end > elf.len()) {
            return Err(bad());
        }
        out.push(Section {
            kind,
            flags: u64_at(elf, header + 8).ok_or_else(bad)?,
            offset,
            size,
            link: usize::try_from(u32_at(elf, header + 40).ok_or_else(bad)?)?,
        });
    }
    Ok(out)
}

/// The bytes of the `maps`-section definition of the map named `name`, found through the
/// symbol table.
fn map_definition(
    elf: &[u8],
    sections: &[Section],
    name: &str,
) -> anyhow::Result<std::ops::Range<usize>> {
    let missing = || anyhow::anyhow!("the eBPF object has no map {name}; rebuild zkconn");
    let symtab = sections
        .iter()
        .find(|s| s.kind == SHT_SYMTAB)
        .ok_or_else(missing)?;
    let strtab = sections.get(symtab.link).ok_or_else(missing)?;
    const SYM_SIZE: usize = 24;
    for sym in elf[symtab.offset..symtab.offset + symtab.size].chunks_exact(SYM_SIZE) {
        let name_at = strtab.offset + u32_at(sym, 0).ok_or_else(missing)? as usize;
        let Some(symbol) = elf
            .get(name_at..strtab.offset + strtab.size)
            .and_then(|rest| rest.split(|&b| b == 0).next())
        else {
            continue;
        };
        if symbol != name.as_bytes() {
            continue;
        }
        let section = sections
            .get(usize::from(u16_at(sym, 6).ok_or_else(missing)?))
            .ok_or_else(missing)?;
        let value = usize::try_from(u64_at(sym, 8).ok_or_else(missing)?)?;
        let start = section.offset + value;
        if value + MAP_DEF_SIZE > section.size {
            return Err(missing());
        }
        return Ok(start..start + MAP_DEF_SIZE);
    }
    Err(missing())
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helper calls by number in the code sections of `object`.
    fn calls(object: &[u8], id: i32) -> usize {
        sections(object)
            .unwrap()
            .into_iter()
            .filter(|s| s.flags & SHF_EXECINSTR != 0)
            .flat_map(|s| object[s.offset..s.offset + s.size].chunks_exact(8))
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

    #[test]
    fn the_perf_buffer_fallback_retypes_the_events_map_and_nothing_else() {
        let object = super::super::OBJECT;
        let sections = sections(object).unwrap();
        let def = map_definition(object, &sections, zkconn_common::map_names::EVENTS).unwrap();
        assert_eq!(u32_at(&object[def.clone()], 0), Some(BPF_MAP_TYPE_RINGBUF));
        let (words, n) = rewrite(object, &[Fallback::PerfBuffer]).unwrap();
        assert_eq!(n, 0);
        let perf = as_bytes(&words, object.len());
        let fields: Vec<u32> = (0..7)
            .map(|i| u32_at(&perf[def.clone()], 4 * i).unwrap())
            .collect();
        assert_eq!(fields[..4], [BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0]);
        // Flags, id and pinning kept; nothing outside the definition touched.
        assert_eq!(
            perf[def.start + 16..def.end],
            object[def.start + 16..def.end]
        );
        let differing: Vec<usize> = (0..object.len())
            .filter(|&i| object[i] != perf[i])
            .collect();
        assert!(differing.iter().all(|i| def.contains(i)), "{differing:?}");
        // Retyping twice is refused rather than done blindly.
        let mut again = perf[def.clone()].to_vec();
        assert!(retype_as_perf_event_array(&mut again).is_err());
        assert!(map_definition(object, &sections, "NO_SUCH_MAP").is_err());
    }
}
