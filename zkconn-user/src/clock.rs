//! The clock the kernel programs stamp times with, read from userspace.
//!
//! Owns: which clock that is (boot, or monotonic with `--fallback monotonic-clock` or before
//! 5.8), and the timing of steps for `ZKCONN_LOG=trace` ([`Lap`]). Must not: depend on any
//! other module of zkconn.

/// Set when the kernel programs read CLOCK_MONOTONIC (`--fallback monotonic-clock`, or a
/// kernel before 5.8): userspace then reads the same clock.
static MONOTONIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn use_monotonic_clock() {
    MONOTONIC.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Now on the clock the kernel programs stamp times with: the boot clock, or the monotonic
/// one where the kernel has no `bpf_ktime_get_boot_ns`.
pub fn now_boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let clock = if MONOTONIC.load(std::sync::atomic::Ordering::Relaxed) {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_BOOTTIME
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Times the steps of some work, for `ZKCONN_LOG=trace`: `{what}: {step} in N ms`.
pub struct Lap {
    what: &'static str,
    at: std::time::Instant,
}

impl Lap {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            at: std::time::Instant::now(),
        }
    }

    pub fn at(&mut self, step: &str) {
        tracing::trace!(
            "{}: {step} in {:.1} ms",
            self.what,
            self.at.elapsed().as_secs_f64() * 1e3
        );
        self.at = std::time::Instant::now();
    }
}
