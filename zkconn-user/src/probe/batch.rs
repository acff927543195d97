//! Reading a whole hash map in a few system calls, consistently under churn.
//!
//! Walking a hash map key by key (`BPF_MAP_GET_NEXT_KEY`) costs two system calls per entry,
//! and when the entry just read is deleted meanwhile, the kernel restarts the walk from the
//! first bucket: a busy table is then read partly twice. `BPF_MAP_LOOKUP_BATCH` (kernel 5.6+)
//! copies whole buckets under their lock and resumes from a bucket cursor, so deletions never
//! restart it. On kernels without it, [`read`] falls back to the key walk and keeps the last
//! value per key, so a restart costs time but never counts an entry twice.
//! <https://docs.kernel.org/bpf/map_hash.html>, `generic_map_lookup_batch` in kernel/bpf.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per call. A call fails with ENOSPC if one bucket holds more than this,
/// which a hash table sized like zkconn's never does; the buffer is then grown.
const CHUNK: usize = 4096;

/// Every key of a map with its value (one per CPU for per-CPU maps).
pub type Entries<K, V> = Vec<(K, Vec<V>)>;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `map_elem` member of `union bpf_attr` (lookup and get-next-key).
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, writable `bpf_attr` prefix of its exact size; the kernel reads
    // and writes only within it and the buffers it points to, which the callers size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Every (key, values) of the hash map `fd`; `per_key` values per key (1, or the number of
/// possible CPUs for a per-CPU map, whose values the kernel pads to 8 bytes each).
pub fn read<K: Pod + Eq + std::hash::Hash, V: Pod>(
    fd: BorrowedFd<'_>,
    per_key: usize,
) -> io::Result<Entries<K, V>> {
    let stride = size_of::<V>().next_multiple_of(8);
    match read_batch::<K, V>(fd, per_key, stride) {
        Ok(entries) => Ok(entries),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
            // 524: ENOTSUPP, the kernel's own "not supported" for maps without batch ops.
            read_walk::<K, V>(fd, per_key, stride)
        }
        Err(e) => Err(e),
    }
}

fn values_of<V: Pod>(bytes: &[u8], per_key: usize, stride: usize) -> Vec<V> {
    (0..per_key)
        .map(|cpu| {
            // SAFETY: `bytes` holds `per_key` slots of `stride >= size_of::<V>()` bytes, and
            // `V: Pod` accepts any bit pattern; read_unaligned makes no alignment assumption.
            unsafe {
                bytes
                    .as_ptr()
                    .add(cpu * stride)
                    .cast::<V>()
                    .read_unaligned()
            }
        })
        .collect()
}

fn read_batch<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    per_key: usize,
    stride: usize,
) -> io::Result<Entries<K, V>> {
    let value_bytes = stride * per_key;
    let mut chunk = CHUNK;
    let mut keys = vec![0u8; chunk * size_of::<K>()];
    let mut values = vec![0u8; chunk * value_bytes];
    let mut out = Vec::new();
    // The cursor is the kernel's bucket index (a u32); 8 bytes leave room for any map type.
    let mut cursor = [0u64; 1];
    let mut next = [0u64; 1];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        if let Err(e) = &result
            && e.raw_os_error() == Some(libc::ENOSPC)
            && attr.count == 0
        {
            // One bucket holds more than the buffer: grow it and ask again.
            chunk *= 2;
            keys.resize(chunk * size_of::<K>(), 0);
            values.resize(chunk * value_bytes, 0);
            continue;
        }
        for i in 0..attr.count as usize {
            let key_bytes = &keys[i * size_of::<K>()..(i + 1) * size_of::<K>()];
            // SAFETY: `K: Pod`, and the slice holds exactly one K.
            let key = unsafe { key_bytes.as_ptr().cast::<K>().read_unaligned() };
            let v = &values[i * value_bytes..(i + 1) * value_bytes];
            out.push((key, values_of(v, per_key, stride)));
        }
        match result {
            Ok(_) => {}
            // The end of the table (the last call may still have returned entries).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        cursor = next;
        first = false;
    }
}

fn read_walk<K: Pod + Eq + std::hash::Hash, V: Pod>(
    fd: BorrowedFd<'_>,
    per_key: usize,
    stride: usize,
) -> io::Result<Entries<K, V>> {
    let map_fd = u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX);
    let mut seen: HashMap<K, Vec<V>> = HashMap::new();
    let mut key = vec![0u8; size_of::<K>()];
    let mut next = vec![0u8; size_of::<K>()];
    let mut value = vec![0u8; stride * per_key];
    let mut first = true;
    loop {
        let mut attr = ElemAttr {
            map_fd,
            key: if first { 0 } else { key.as_ptr() as u64 },
            value_or_next: next.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        let mut attr = ElemAttr {
            map_fd,
            key: key.as_ptr() as u64,
            value_or_next: value.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            // Deleted since the walk found it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
            Ok(_) => {
                // SAFETY: `K: Pod`, and the buffer holds exactly one K.
                let k = unsafe { key.as_ptr().cast::<K>().read_unaligned() };
                seen.insert(k, values_of(&value, per_key, stride));
            }
        }
    }
    Ok(seen.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd as _, FromRawFd as _, OwnedFd};

    use super::*;

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;

    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }

    /// A hash map u64 → u64 holding `k → k * 10` for k in 0..n (in every CPU's slot of a
    /// per-CPU map).
    fn map_with(map_type: u32, n: u64, cpus: usize) -> OwnedFd {
        let mut create = CreateAttr {
            map_type,
            key_size: 8,
            value_size: 8,
            max_entries: 100_000,
            ..CreateAttr::default()
        };
        let fd = bpf(BPF_MAP_CREATE, &mut create).expect("BPF_MAP_CREATE needs root");
        // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap()) };
        for k in 0..n {
            let values = vec![k * 10; cpus];
            let mut update = ElemAttr {
                map_fd: u32::try_from(fd.as_raw_fd()).unwrap(),
                key: std::ptr::from_ref(&k) as u64,
                value_or_next: values.as_ptr() as u64,
                ..ElemAttr::default()
            };
            bpf(BPF_MAP_UPDATE_ELEM, &mut update).unwrap();
        }
        fd
    }

    fn sorted(mut e: Entries<u64, u64>) -> Entries<u64, u64> {
        e.sort_unstable_by_key(|(k, _)| *k);
        e
    }

    /// Root only (the unit tests run as root under `cargo xtask test`); as another user the
    /// kernel refuses to create maps and the test says so and stops.
    #[test]
    fn batch_and_walk_read_every_entry_once() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating BPF maps needs root");
            return;
        }
        let cpus = aya::util::nr_cpus().unwrap();
        let expect = |per: usize| -> Entries<u64, u64> {
            (0..10_000u64).map(|k| (k, vec![k * 10; per])).collect()
        };
        let plain = map_with(BPF_MAP_TYPE_HASH, 10_000, 1);
        let batched = read_batch::<u64, u64>(plain.as_fd(), 1, 8).unwrap();
        assert_eq!(sorted(batched), expect(1));
        let walked = read_walk::<u64, u64>(plain.as_fd(), 1, 8).unwrap();
        assert_eq!(sorted(walked), expect(1));
        let per_cpu = map_with(BPF_MAP_TYPE_PERCPU_HASH, 10_000, cpus);
        let batched = read::<u64, u64>(per_cpu.as_fd(), cpus).unwrap();
        assert_eq!(sorted(batched), expect(cpus));
        let walked = read_walk::<u64, u64>(per_cpu.as_fd(), cpus, 8).unwrap();
        assert_eq!(sorted(walked), expect(cpus));
        // An empty map is no entries, not an error.
        let empty = map_with(BPF_MAP_TYPE_HASH, 0, 1);
        assert!(read::<u64, u64>(empty.as_fd(), 1).unwrap().is_empty());
    }
}
