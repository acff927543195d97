//! The kernel's accounting decisions as pure functions: the programs (zkconn-ebpf) call them
//! with what they read, and they are unit-tested here, on the host, with tables. `bool`
//! arguments are fine: nothing here crosses a map.

use crate::{Conn, RefusalConfig, conn_flags, tcp_state};

/// What a connection reaching TCP_CLOSE counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// It was established: `closed`.
    Closed,
    /// It never was (a connect that failed): `failed`.
    Failed,
}

/// How a tracked connection that reaches TCP_CLOSE from `old` counts: closed when it was
/// ever established, or when it left a state other than SYN_SENT (a seed first seen past
/// it), else failed.
#[inline(always)]
pub fn close_kind(flags: u8, old: u8) -> Close {
    if flags & conn_flags::ESTABLISHED != 0 || old != tcp_state::SYN_SENT {
        Close::Closed
    } else {
        Close::Failed
    }
}

/// Whether a peer close of `conn` (a reset when `reset`, else a FIN: the state is
/// CLOSE_WAIT) is the server refusing the host; `now_ns` reads the boot clock.
///
/// ZooKeeper refuses a host over `maxClientCnxns` by accepting and closing at once, before
/// sending anything (NIO: FIN then RST; Netty: FIN). A server that accepts a connection
/// always answers a client's ConnectRequest before anything else. So a refusal is a peer
/// close with no byte received, either within the window after ESTABLISHED (a fast refusal
/// may arrive before the client sent anything) or later once the client had sent its
/// request (a server paused in GC, or a full accept queue, refuses late). A server that
/// stops or crashes between a client's request and its answer looks the same and is counted
/// as a refusal too. Without the byte counts (no BTF), only a reset within the window
/// counts. Seeded connections have no true ESTABLISHED time; a connection is refused once.
///
/// `received` and `sent` read `tcp_sock.bytes_received` and `bytes_sent`; each is called
/// only when the rule needs it, and a failed read (`None`) is no refusal.
#[inline(always)]
pub fn is_refusal(
    conn: &Conn,
    now_ns: impl FnOnce() -> u64,
    reset: bool,
    cfg: &RefusalConfig,
    received: impl FnOnce() -> Option<u64>,
    sent: impl FnOnce() -> Option<u64>,
) -> bool {
    if conn.flags & conn_flags::ESTABLISHED == 0
        || conn.flags & (conn_flags::SEEDED | conn_flags::REFUSED) != 0
        || conn.established_ns == 0
    {
        return false;
    }
    let in_window = now_ns().saturating_sub(conn.established_ns) <= cfg.window_ns;
    if cfg.has_bytes_received == 0 {
        return reset && in_window;
    }
    // `bytes_received` advances with `rcv_nxt`, so a received FIN counts one: in CLOSE_WAIT
    // (or entering it) nothing but the FIN means 1.
    // https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/tcp_input.c#L3591
    let fin = u64::from(conn.state == tcp_state::CLOSE_WAIT || !reset);
    match received() {
        Some(bytes) if bytes <= fin => {}
        _ => return false,
    }
    if in_window {
        return true;
    }
    cfg.has_bytes_sent != 0 && matches!(sent(), Some(bytes) if bytes > 0)
}

/// How an accepted connection on a watched port ended, as the server's side saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundEnd {
    /// The server sent something first: a session (or a four-letter word's answer).
    Answered,
    /// The server never sent a byte, but this was no refusal: see
    /// [`crate::ClientCounters::unanswered`].
    Unanswered,
    /// The server refused the client host.
    Rejected,
}

/// What the kernel read of an accepted socket's byte counts when the server let it go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboundBytes {
    /// `tcp_sock.bytes_sent`.
    pub sent: u64,
    /// `tcp_sock.bytes_received` (a received FIN counts one).
    pub received: u64,
    /// `rcv_nxt - copied_seq`: what arrived and the server never read (a FIN too).
    pub unread: u32,
}

/// How an accepted connection that leaves ESTABLISHED or CLOSE_WAIT (`old`) for `new` ended.
///
/// ZooKeeper refuses a client host over its limit in the accept loop, before it reads or
/// writes anything: NIO shuts the output (a FIN) and closes with SO_LINGER 0 (a reset),
/// Netty closes the channel (a FIN, or a reset when the client's first bytes wait unread).
/// So a refusal is the server's own close (FIN_WAIT1 or LAST_ACK, or CLOSE with no socket
/// error: a reset or a timeout sets `sk_err` before it closes the socket) of a connection it
/// never read from nor wrote to, where the client had sent something (its ConnectRequest,
/// or its FIN) or the close came within `in_window` of the handshake. A server that closes
/// an idle connection later (NIO's `sessionlessCnxnTimeout`), or that read the request and
/// closed without answering (a server not serving), ended it without a session: unanswered.
///
/// `err` is `sk_err` and `bytes` the counts, `None` where they could not be read: then
/// nothing is a refusal and nothing is unanswered (the server side counts opens and closes
/// only).
#[inline(always)]
pub fn inbound_end(
    old: u8,
    new: u8,
    err: Option<i32>,
    in_window: bool,
    bytes: Option<InboundBytes>,
) -> InboundEnd {
    let Some(b) = bytes else {
        return InboundEnd::Answered;
    };
    if b.sent != 0 {
        return InboundEnd::Answered;
    }
    let own_close = match new {
        tcp_state::FIN_WAIT1 | tcp_state::LAST_ACK => true,
        tcp_state::CLOSE => err == Some(0),
        _ => false,
    };
    let read_nothing = u64::from(b.unread) == b.received;
    let from_open = old == tcp_state::ESTABLISHED || old == tcp_state::CLOSE_WAIT;
    if own_close && from_open && read_nothing && (b.received > 0 || in_window) {
        InboundEnd::Rejected
    } else {
        InboundEnd::Unanswered
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[rstest]
    #[case::established_then_closed(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED, Close::Closed)]
    #[case::refused_after_established(conn_flags::ESTABLISHED | conn_flags::REFUSED, tcp_state::CLOSE_WAIT, Close::Closed)]
    #[case::connect_that_failed(0, tcp_state::SYN_SENT, Close::Failed)]
    #[case::seed_first_seen_past_syn_sent(conn_flags::SEEDED, tcp_state::FIN_WAIT1, Close::Closed)]
    fn a_close_counts_as_closed_once_established(
        #[case] flags: u8,
        #[case] old: u8,
        #[case] expected: Close,
    ) {
        assert_eq!(close_kind(flags, old), expected);
    }

    fn cfg(bytes_received: bool, bytes_sent: bool) -> RefusalConfig {
        RefusalConfig {
            window_ns: SEC,
            bytes_received_offset: 8,
            has_bytes_received: u32::from(bytes_received),
            bytes_sent_offset: 16,
            has_bytes_sent: u32::from(bytes_sent),
            ..RefusalConfig::default()
        }
    }

    fn conn(flags: u8, state: u8) -> Conn {
        Conn {
            flags,
            state,
            established_ns: 10 * SEC,
            ..Conn::default()
        }
    }

    /// (flags, state, seconds after ESTABLISHED, reset, BTF byte counts, (bytes received,
    /// bytes sent)) → refused.
    #[rstest]
    // A reset at once with nothing received: ZooKeeper's NIO refusal.
    #[case(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED, 0, true, true, (Some(0), Some(0)), true)]
    // A FIN at once (Netty): the FIN is the one byte counted.
    #[case(conn_flags::ESTABLISHED, tcp_state::CLOSE_WAIT, 0, false, true, (Some(1), Some(0)), true)]
    // The server answered something first: a session, not a refusal.
    #[case(conn_flags::ESTABLISHED, tcp_state::CLOSE_WAIT, 0, false, true, (Some(42), Some(48)), false)]
    // Late, after the request was sent, nothing answered: a paused server refusing.
    #[case(conn_flags::ESTABLISHED, tcp_state::CLOSE_WAIT, 5, false, true, (Some(1), Some(48)), true)]
    // Late, and the client never sent anything: an idle close, not a refusal.
    #[case(conn_flags::ESTABLISHED, tcp_state::CLOSE_WAIT, 5, false, true, (Some(1), Some(0)), false)]
    // A failed read is no refusal.
    #[case(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED, 0, true, true, (None, Some(0)), false)]
    // No BTF: a reset within the window only.
    #[case(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED, 0, true, false, (None, None), true)]
    #[case(conn_flags::ESTABLISHED, tcp_state::CLOSE_WAIT, 0, false, false, (None, None), false)]
    #[case(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED, 5, true, false, (None, None), false)]
    // Never established, seeded, or refused already: never (again).
    #[case(0, tcp_state::SYN_SENT, 0, true, true, (Some(0), Some(0)), false)]
    #[case(conn_flags::ESTABLISHED | conn_flags::SEEDED, tcp_state::ESTABLISHED, 0, true, true, (Some(0), Some(0)), false)]
    #[case(conn_flags::ESTABLISHED | conn_flags::REFUSED, tcp_state::ESTABLISHED, 0, true, true, (Some(0), Some(0)), false)]
    fn a_peer_close_with_nothing_received_is_a_refusal(
        #[case] flags: u8,
        #[case] state: u8,
        #[case] after_secs: u64,
        #[case] reset: bool,
        #[case] btf: bool,
        #[case] (received, sent): (Option<u64>, Option<u64>),
        #[case] refused: bool,
    ) {
        let c = conn(flags, state);
        let now = c.established_ns + after_secs * SEC;
        assert_eq!(
            is_refusal(&c, || now, reset, &cfg(btf, btf), || received, || sent),
            refused
        );
    }

    /// Byte counts are read only when the rule needs them.
    #[test]
    fn reads_only_what_the_rule_needs() {
        let c = conn(conn_flags::ESTABLISHED, tcp_state::ESTABLISHED);
        let never = || -> Option<u64> { panic!("read although not needed") };
        // Within the window, nothing received: `bytes_sent` is not read.
        assert!(is_refusal(
            &c,
            || c.established_ns,
            true,
            &cfg(true, true),
            || Some(0),
            never
        ));
        // Never established: nothing is read, not even the clock.
        let fresh = conn(0, tcp_state::SYN_SENT);
        assert!(!is_refusal(
            &fresh,
            || panic!("clock read"),
            true,
            &cfg(true, true),
            never,
            never
        ));
    }

    const E: u8 = tcp_state::ESTABLISHED;
    const CW: u8 = tcp_state::CLOSE_WAIT;

    fn bytes(sent: u64, received: u64, unread: u32) -> Option<InboundBytes> {
        Some(InboundBytes {
            sent,
            received,
            unread,
        })
    }

    /// (old, new, sk_err, within the window, byte counts) → how it ended.
    #[rstest]
    // NIO's refusal: the output shut at once, the ConnectRequest (48 bytes) unread.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        true,
        bytes(0, 48, 48),
        InboundEnd::Rejected
    )]
    // ... and before the client sent it.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        true,
        bytes(0, 0, 0),
        InboundEnd::Rejected
    )]
    // ... late (a paused server), the request waiting unread.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        false,
        bytes(0, 48, 48),
        InboundEnd::Rejected
    )]
    // Netty's refusal with the client's bytes unread: an abort, no socket error.
    #[case(
        E,
        tcp_state::CLOSE,
        Some(0),
        false,
        bytes(0, 300, 300),
        InboundEnd::Rejected
    )]
    // The client had given up (its FIN and request unread) when the server refused.
    #[case(
        CW,
        tcp_state::LAST_ACK,
        Some(0),
        false,
        bytes(0, 49, 49),
        InboundEnd::Rejected
    )]
    #[case(
        CW,
        tcp_state::CLOSE,
        Some(0),
        false,
        bytes(0, 1, 1),
        InboundEnd::Rejected
    )]
    // A session: the server answered.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        true,
        bytes(41, 48, 0),
        InboundEnd::Answered
    )]
    #[case(
        CW,
        tcp_state::LAST_ACK,
        Some(0),
        false,
        bytes(900, 700, 0),
        InboundEnd::Answered
    )]
    // A port check: the client closed, the server read the end of the stream and closed.
    #[case(
        CW,
        tcp_state::LAST_ACK,
        Some(0),
        true,
        bytes(0, 1, 0),
        InboundEnd::Unanswered
    )]
    // NIO's idle close of a connection that never sent a byte, after its timeout.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        false,
        bytes(0, 0, 0),
        InboundEnd::Unanswered
    )]
    // A server not serving read the request and closed without answering.
    #[case(
        E,
        tcp_state::FIN_WAIT1,
        Some(0),
        true,
        bytes(0, 48, 0),
        InboundEnd::Unanswered
    )]
    // The client reset the connection (sk_err set): not the server's doing.
    #[case(
        E,
        tcp_state::CLOSE,
        Some(104),
        true,
        bytes(0, 0, 0),
        InboundEnd::Unanswered
    )]
    // sk_err unreadable: an abort cannot be told from a reset.
    #[case(
        E,
        tcp_state::CLOSE,
        None,
        true,
        bytes(0, 0, 0),
        InboundEnd::Unanswered
    )]
    // No byte counts (no BTF): opens and closes only.
    #[case(E, tcp_state::FIN_WAIT1, Some(0), true, None, InboundEnd::Answered)]
    fn a_server_that_closes_before_reading_or_writing_refused(
        #[case] old: u8,
        #[case] new: u8,
        #[case] err: Option<i32>,
        #[case] in_window: bool,
        #[case] counts: Option<InboundBytes>,
        #[case] expected: InboundEnd,
    ) {
        assert_eq!(inbound_end(old, new, err, in_window, counts), expected);
    }
}
