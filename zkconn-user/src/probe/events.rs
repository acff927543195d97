//! How the kernel's events reach userspace: the BPF ring buffer (5.8+), or, with the
//! perf-buffer fallback, a perf event array with one buffer per online CPU. Either way the
//! reader hands out each event's bytes in the order its buffer holds them.
//!
//! Owns: the event buffers, waiting on them in the runtime, dropped-event reports.
//! Must not: interpret events (the source does).

use std::{future::poll_fn, task::Poll};

use anyhow::{Context as _, anyhow};
use aya::maps::{
    Map, MapData, RingBuf,
    perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
};
use tokio::io::{Interest, unix::AsyncFd};

pub enum Events {
    Ring(AsyncFd<RingBuf<MapData>>),
    Perf {
        buffers: Vec<AsyncFd<PerfEventArrayBuffer<MapData>>>,
        /// Events the kernel reported dropped because a buffer was full.
        lost: u64,
        /// A sample that wraps around its buffer's end, put back together.
        joined: Vec<u8>,
    },
}

impl Events {
    /// The ring buffer `map`, registered with the runtime.
    pub fn ring(map: Map) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(map).context("the events map is not a ring buffer")?;
        // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long
        // as the `AsyncFd` owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow!("cannot register the event ring buffer with the runtime: {e}"))?;
        Ok(Events::Ring(fd))
    }

    /// The perf event array `map`, with a buffer opened for every online CPU; `bytes` of
    /// buffer in all, at least 8 pages per CPU.
    pub fn perf(map: Map, bytes: u32) -> anyhow::Result<Self> {
        let mut array =
            PerfEventArray::try_from(map).context("the events map is not a perf event array")?;
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| anyhow!("cannot read the online CPUs from {path}: {e}"))?;
        let pages = per_cpu_pages(bytes, cpus.len(), page_size());
        let mut buffers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let buffer = array.open(cpu, Some(pages)).map_err(|e| {
                anyhow!(
                    "cannot open the perf buffer of CPU {cpu} ({pages} pages): {e} (needs \
                     CAP_PERFMON, or CAP_SYS_ADMIN before 5.8, and a locked-memory allowance \
                     of kernel.perf_event_mlock_kb per CPU or LimitMEMLOCK=infinity)"
                )
            })?;
            // SAFETY: the buffer owns its perf event fd and keeps it open, unchanged, for as
            // long as the `AsyncFd` owns the buffer.
            let fd = unsafe { AsyncFd::register_with_interest(buffer, Interest::READABLE) }
                .map_err(|e| {
                    anyhow!("cannot register CPU {cpu}'s perf buffer with the runtime: {e}")
                })?;
            buffers.push(fd);
        }
        tracing::info!(
            "events through a perf event array: {} buffers of {pages} pages",
            buffers.len()
        );
        Ok(Events::Perf {
            buffers,
            lost: 0,
            joined: Vec::new(),
        })
    }

    /// Waits until some buffer has events.
    pub async fn readable(&mut self) -> anyhow::Result<()> {
        match self {
            Events::Ring(fd) => {
                let mut guard = fd
                    .readable_mut()
                    .await
                    .context("waiting on the event ring buffer failed")?;
                guard.clear_ready();
                Ok(())
            }
            Events::Perf { buffers, .. } => {
                poll_fn(|cx| {
                    let mut ready = false;
                    for fd in buffers.iter() {
                        if let Poll::Ready(guard) = fd.poll_read_ready(cx) {
                            match guard {
                                Ok(mut guard) => guard.clear_ready(),
                                Err(e) => {
                                    return Poll::Ready(Err(anyhow!(
                                        "waiting on a perf buffer failed: {e}"
                                    )));
                                }
                            }
                            ready = true;
                        }
                    }
                    if ready {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }

    /// Hands every event already written to `f`, without waiting.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        match self {
            Events::Ring(fd) => {
                let ring = fd.get_mut();
                while let Some(item) = ring.next() {
                    f(&item);
                }
            }
            Events::Perf {
                buffers,
                lost,
                joined,
            } => {
                for fd in buffers.iter_mut() {
                    fd.get_mut().for_each(|event| match event {
                        PerfEvent::Sample { head, tail: [] } => f(head),
                        PerfEvent::Sample { head, tail } => {
                            joined.clear();
                            joined.extend_from_slice(head);
                            joined.extend_from_slice(tail);
                            f(joined);
                        }
                        PerfEvent::Lost { count } => *lost += count,
                    });
                }
            }
        }
    }

    /// Events the perf buffers reported dropped since start (the ring buffer's are counted
    /// by the kernel programs instead).
    pub fn lost(&self) -> u64 {
        match self {
            Events::Ring(_) => 0,
            Events::Perf { lost, .. } => *lost,
        }
    }

    /// `ring-buffer` or `perf-buffer`, for the outputs.
    pub fn kind(&self) -> &'static str {
        match self {
            Events::Ring(_) => "ring-buffer",
            Events::Perf { .. } => "perf-buffer",
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// Pages per CPU buffer: `bytes` shared among `cpus`, a power of two (the kernel's rule),
/// at least 8 (a refusal storm on one CPU needs room) and at most 64.
fn per_cpu_pages(bytes: u32, cpus: usize, page: usize) -> usize {
    let share = (bytes as usize / page.max(1)) / cpus.max(1);
    share.next_power_of_two().clamp(8, 64)
}

#[cfg(test)]
mod tests {
    use super::per_cpu_pages;

    #[test]
    fn perf_buffers_are_a_power_of_two_pages_within_bounds() {
        // 256 KiB on 2 CPUs: 32 pages each.
        assert_eq!(per_cpu_pages(256 * 1024, 2, 4096), 32);
        // On 96 CPUs, never below 8 pages.
        assert_eq!(per_cpu_pages(256 * 1024, 96, 4096), 8);
        // A huge request on one CPU is capped.
        assert_eq!(per_cpu_pages(64 << 20, 1, 4096), 64);
        // Not a power of two: rounded up.
        assert_eq!(per_cpu_pages(3 * 16 * 4096, 1, 4096), 64);
        assert_eq!(per_cpu_pages(12 * 4096, 1, 4096), 16);
        for cpus in 1..200 {
            assert!(per_cpu_pages(256 * 1024, cpus, 4096).is_power_of_two());
        }
    }
}
