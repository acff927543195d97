//! The hooks zkconn counts with, as every output, `--hook`, xtask and the tests name them:
//! their names, the order `auto` tries them, and the words of a refusal. One home, so a
//! test or the kernel matrix matches on these rather than on prose of its own.

use core::fmt;

/// The hook in use, as named in every output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Hook {
    Btf,
    Fentry,
    Tracepoint,
    Kprobe,
    Poll,
}

impl Hook {
    /// The order `auto` tries: stable tracepoints before functions the compiler could
    /// inline away, and within each the one that fills no trace record first.
    pub const AUTO_ORDER: [Hook; 4] = [Hook::Btf, Hook::Fentry, Hook::Tracepoint, Hook::Kprobe];

    /// Its name, as `--hook` takes it and every output gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Btf => "btf",
            Hook::Fentry => "fentry",
            Hook::Tracepoint => "tracepoint",
            Hook::Kprobe => "kprobe",
            Hook::Poll => "poll",
        }
    }

    /// What it attaches to, for messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Hook::Btf => "the BTF tracepoint on inet_sock_set_state",
            Hook::Fentry => "fentry on tcp_connect and tcp_set_state",
            Hook::Tracepoint => "the classic tracepoint sock:inet_sock_set_state",
            Hook::Kprobe => "kprobes on tcp_connect and tcp_set_state",
            Hook::Poll => "samples of the kernel's socket tables over sock_diag",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The words between a forced hook and the kernel's reason when it cannot be used:
/// `--hook NAME (WHAT IT ATTACHES TO) is not available on this kernel: REASON`.
pub const UNAVAILABLE: &str = " is not available on this kernel: ";

/// How the kernel recognises a server's refusal (see `is_refusal` in zkconn-ebpf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum RefusalDetection {
    /// Peer close with no byte received (`tcp_sock.bytes_received` via BTF), within the
    /// window, or later when the client had sent its request (`tcp_sock.bytes_sent`).
    NoBytesReceived,
    /// No BTF: a reset within the window (ZooKeeper's NIO listener resets; Netty does not).
    ResetOnly,
}
