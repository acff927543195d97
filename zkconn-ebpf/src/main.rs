//! zkconn's kernel programs: exact accounting of TCP connections towards ZooKeeper.
//!
//! Owns: deciding which sockets are ZooKeeper's (from the `PORTS`/`ENDPOINTS` target maps),
//! recording each connection's owner at connect time, following its state changes, and
//! keeping cumulative per-process and per-cgroup counters.
//! Must not: trust "current" after the connect (later transitions run in softirq or in the
//! peer's context on loopback), read kernel structs at compiled-in offsets (no CO-RE from
//! this toolchain: the one field read, `tcp_sock.bytes_received`, is at the offset userspace
//! took from the running kernel's BTF), loop unboundedly, or let a full map or ring buffer
//! go uncounted.
//!
//! Attach points are thin shims over hook-independent functions (`on_connect`,
//! `on_state_change`, `on_group_exit`), so further hooks feed the same accounting.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs {
    use core::ptr::read_volatile;

    use aya_ebpf::{
        bindings::{BPF_ANY, BPF_NOEXIST},
        helpers::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
            bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
        },
        macros::{btf_tracepoint, map, tracepoint},
        maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
        programs::{BtfTracePointContext, TracePointContext},
    };
    use zkconn_common::{
        Conn, Counters, Endpoint, Event, ExitTpLayout, Owner, OwnerKey, RefusalConfig,
        ResetTpLayout, ServerKey, SockLayout, StateTpLayout, Tuple, conn_flags, event_kind,
        port_flags, probe_counter, tcp_state,
    };

    const AF_INET: u16 = 2;
    /// `BPF_RB_NO_WAKEUP` (include/uapi/linux/bpf.h).
    const BPF_RB_NO_WAKEUP: u32 = 1;
    const IPPROTO_TCP: u16 = 6;

    // Layouts come from tracefs at load time (userspace sets them before loading).
    #[unsafe(no_mangle)]
    static STATE_TP_LAYOUT: StateTpLayout = StateTpLayout {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static SOCK_LAYOUT: SockLayout = SockLayout {
        dport: 0,
        num: 0,
        family: 0,
        daddr: 0,
        saddr: 0,
        daddr_v6: 0,
        saddr_v6: 0,
        protocol_word: 0,
        protocol_shift: 0,
        protocol_mask: 0,
        has_v6: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static EXIT_TP_LAYOUT: ExitTpLayout = ExitTpLayout {
        group_dead: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static RESET_TP_LAYOUT: ResetTpLayout = ResetTpLayout {
        skaddr: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static REFUSAL: RefusalConfig = RefusalConfig {
        window_ns: 0,
        bytes_received_offset: 0,
        has_bytes_received: 0,
    };

    // Capacities below are defaults; userspace resizes every map from its flags.
    #[map(name = "ZK_CONNS")]
    static CONNS: HashMap<u64, Conn> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_SEEDS")]
    static SEEDS: HashMap<Tuple, Conn> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_OWNERS")]
    static OWNERS: HashMap<u32, Owner> = HashMap::with_max_entries(16_384, 0);
    #[map(name = "ZK_PROC_STATS")]
    static PROC_STATS: PerCpuHashMap<OwnerKey, Counters> =
        PerCpuHashMap::with_max_entries(16_384, 0);
    #[map(name = "ZK_CGROUP_STATS")]
    static CGROUP_STATS: PerCpuHashMap<u64, Counters> = PerCpuHashMap::with_max_entries(4_096, 0);
    #[map(name = "ZK_SERVER_STATS")]
    static SERVER_STATS: PerCpuHashMap<ServerKey, Counters> =
        PerCpuHashMap::with_max_entries(4_096, 0);
    #[map(name = "ZK_PORTS")]
    static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1_024, 0);
    #[map(name = "ZK_ENDPOINTS")]
    static ENDPOINTS: HashMap<Endpoint, u8> = HashMap::with_max_entries(4_096, 0);
    #[map(name = "ZK_PROBE_COUNTERS")]
    static PROBE_COUNTERS: PerCpuArray<u64> =
        PerCpuArray::with_max_entries(probe_counter::COUNT, 0);
    #[map(name = "ZK_EVENTS")]
    static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

    /// What a state-change hook knows about the socket, whatever the hook.
    struct Change {
        skaddr: u64,
        old: u8,
        new: u8,
        /// Present only once the kernel chose them (after SYN_SENT for the source port).
        tuple: Tuple,
    }

    #[tracepoint]
    pub fn zk_inet_sock_set_state(ctx: TracePointContext) -> u32 {
        let _ = try_inet_sock_set_state(&ctx);
        0
    }

    #[btf_tracepoint(function = "inet_sock_set_state")]
    pub fn zk_btf_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
        let _ = try_btf_set_state(&ctx);
        0
    }

    #[tracepoint]
    pub fn zk_sched_process_exit(ctx: TracePointContext) -> u32 {
        let _ = try_sched_process_exit(&ctx);
        0
    }

    #[tracepoint]
    pub fn zk_tcp_receive_reset(ctx: TracePointContext) -> u32 {
        let _ = try_tcp_receive_reset(&ctx);
        0
    }

    fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i32> {
        // SAFETY: a plain read of a global the loader may have patched; volatile so the
        // compiler cannot fold the compile-time zero.
        let l = unsafe { read_volatile(&STATE_TP_LAYOUT) };
        if l.valid == 0 {
            return Ok(());
        }
        // SAFETY (all `read_at` below): offsets come from the tracepoint's own format file
        // and `read_at` goes through bpf_probe_read, so a bad offset fails, never faults.
        let protocol: u16 = unsafe { ctx.read_at(l.protocol.into())? };
        if protocol != IPPROTO_TCP {
            return Ok(());
        }
        let dport: u16 = unsafe { ctx.read_at(l.dport.into())? };
        // The one lookup that every non-ZooKeeper socket pays.
        let Some(&flags) = (unsafe { PORTS.get(dport) }) else {
            return Ok(());
        };
        let old: i32 = unsafe { ctx.read_at(l.oldstate.into())? };
        let new: i32 = unsafe { ctx.read_at(l.newstate.into())? };
        let family: u16 = unsafe { ctx.read_at(l.family.into())? };
        let (saddr, daddr) = if family == AF_INET {
            let s: [u8; 4] = unsafe { ctx.read_at(l.saddr.into())? };
            let d: [u8; 4] = unsafe { ctx.read_at(l.daddr.into())? };
            (v4_mapped(s), v4_mapped(d))
        } else {
            let s: [u8; 16] = unsafe { ctx.read_at(l.saddr_v6.into())? };
            let d: [u8; 16] = unsafe { ctx.read_at(l.daddr_v6.into())? };
            (s, d)
        };
        let change = Change {
            skaddr: unsafe { ctx.read_at(l.skaddr.into())? },
            old: old as u8,
            new: new as u8,
            tuple: Tuple {
                saddr,
                daddr,
                sport: unsafe { ctx.read_at(l.sport.into())? },
                dport,
                _pad: 0,
            },
        };
        on_transition(&change, flags);
        Ok(())
    }

    /// The same transition seen through the BTF tracepoint: the kernel passes the socket
    /// itself and no record is filled, so a socket on an unwatched port costs one 2-byte
    /// read and one lookup. Fields are read at the offsets userspace took from this
    /// kernel's BTF (`SOCK_LAYOUT`).
    fn try_btf_set_state(ctx: &BtfTracePointContext) -> Result<(), i32> {
        // SAFETY: see `try_inet_sock_set_state`.
        let l = unsafe { read_volatile(&SOCK_LAYOUT) };
        if l.valid == 0 {
            return Ok(());
        }
        let sk: *const u8 = ctx.arg(0);
        let dport = u16::from_be_bytes(read_sk(sk, l.dport)?);
        // The one lookup that every non-ZooKeeper socket pays.
        let Some(&flags) = (unsafe { PORTS.get(dport) }) else {
            return Ok(());
        };
        let word = u32::from_ne_bytes(read_sk(sk, l.protocol_word)?);
        if (word >> l.protocol_shift) & l.protocol_mask != u32::from(IPPROTO_TCP) {
            return Ok(());
        }
        let old: i32 = ctx.arg(1);
        let new: i32 = ctx.arg(2);
        let family = u16::from_ne_bytes(read_sk(sk, l.family)?);
        let (saddr, daddr) = if family == AF_INET {
            (
                v4_mapped(read_sk(sk, l.saddr)?),
                v4_mapped(read_sk(sk, l.daddr)?),
            )
        } else if l.has_v6 == 1 {
            (read_sk(sk, l.saddr_v6)?, read_sk(sk, l.daddr_v6)?)
        } else {
            return Ok(());
        };
        let change = Change {
            skaddr: sk as u64,
            old: old as u8,
            new: new as u8,
            tuple: Tuple {
                saddr,
                daddr,
                sport: u16::from_ne_bytes(read_sk(sk, l.num)?),
                dport,
                _pad: 0,
            },
        };
        on_transition(&change, flags);
        Ok(())
    }

    /// `N` bytes of the socket at `offset`.
    fn read_sk<const N: usize>(sk: *const u8, offset: u32) -> Result<[u8; N], i32> {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
        unsafe { bpf_probe_read_kernel(sk.wrapping_add(offset as usize).cast::<[u8; N]>()) }
    }

    /// A transition of a socket towards a watched port, whatever hook saw it.
    fn on_transition(change: &Change, flags: u8) {
        if change.old == tcp_state::CLOSE && change.new == tcp_state::SYN_SENT {
            if flags & port_flags::ANY_ADDRESS == 0 {
                let endpoint = Endpoint {
                    addr: change.tuple.daddr,
                    port: change.tuple.dport,
                    _pad: [0; 6],
                };
                // SAFETY: the value is copied out at once.
                if unsafe { ENDPOINTS.get(endpoint) }.is_none() {
                    return;
                }
            }
            on_connect(change);
        } else {
            on_state_change(change);
        }
    }

    fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), i32> {
        // SAFETY: see `try_inet_sock_set_state`.
        let l = unsafe { read_volatile(&EXIT_TP_LAYOUT) };
        if l.valid == 0 {
            return Ok(());
        }
        // SAFETY: offset from the tracepoint's format file.
        let group_dead: u8 = unsafe { ctx.read_at(l.group_dead.into())? };
        if group_dead != 0 {
            on_group_exit();
        }
        Ok(())
    }

    /// A reset arrived on some socket. On loopback this runs in the peer's context, so only
    /// the socket address is used: one lookup, and nothing for sockets zkconn does not track.
    fn try_tcp_receive_reset(ctx: &TracePointContext) -> Result<(), i32> {
        // SAFETY: see `try_inet_sock_set_state`.
        let l = unsafe { read_volatile(&RESET_TP_LAYOUT) };
        if l.valid == 0 {
            return Ok(());
        }
        // SAFETY: offset from the tracepoint's format file.
        let skaddr: u64 = unsafe { ctx.read_at(l.skaddr.into())? };
        if let Some(conn) = CONNS.get_ptr_mut(skaddr) {
            // SAFETY: the reset is processed under the socket's lock, like its state changes.
            let conn = unsafe { &mut *conn };
            if matches!(conn.state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT)
                && is_refusal(conn, skaddr, true)
            {
                conn.flags |= conn_flags::REFUSED;
            }
        }
        Ok(())
    }

    /// ZooKeeper refuses a host over `maxClientCnxns` by accepting and closing at once, before
    /// sending anything (NIO: FIN then RST; Netty: FIN). So: the peer closed within the
    /// window after ESTABLISHED, and no byte was received. Without the byte count (no BTF),
    /// only a reset within the window counts. Seeded connections have no true ESTABLISHED time.
    fn is_refusal(conn: &Conn, skaddr: u64, reset: bool) -> bool {
        if conn.flags & conn_flags::ESTABLISHED == 0
            || conn.flags & (conn_flags::SEEDED | conn_flags::REFUSED) != 0
            || conn.established_ns == 0
        {
            return false;
        }
        // SAFETY: see `try_inet_sock_set_state`.
        let cfg = unsafe { read_volatile(&REFUSAL) };
        if boot_ns().saturating_sub(conn.established_ns) > cfg.window_ns {
            return false;
        }
        if cfg.has_bytes_received == 0 {
            return reset;
        }
        let field = skaddr.wrapping_add(u64::from(cfg.bytes_received_offset)) as *const u64;
        // `bytes_received` advances with `rcv_nxt`, so a received FIN counts one: in
        // CLOSE_WAIT (or entering it) nothing but the FIN means 1.
        // https://elixir.bootlin.com/linux/v6.12/source/net/ipv4/tcp_input.c#L3591
        let fin = u64::from(conn.state == tcp_state::CLOSE_WAIT || !reset);
        // SAFETY: bpf_probe_read_kernel checks the address; a failed read is no refusal.
        match unsafe { bpf_probe_read_kernel(field) } {
            Ok(bytes) => bytes <= fin,
            Err(_) => false,
        }
    }

    /// CLOSE → SYN_SENT of a ZooKeeper-bound socket: runs in the connecting task, so
    /// "current" is the owner. This is the only place that reads it.
    #[inline(never)]
    fn on_connect(change: &Change) {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        let uid_gid = bpf_get_current_uid_gid();
        let now = boot_ns();
        // SAFETY: a helper with no arguments.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        let owner = owner_of(tgid, pid_tgid as u32, uid_gid, cgroup_id, now);
        let conn = Conn {
            tuple: change.tuple,
            owner,
            cgroup_id,
            opened_ns: now,
            changed_ns: now,
            established_ns: 0,
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            state: tcp_state::SYN_SENT,
            flags: 0,
            _pad: [0; 6],
        };
        // BPF_ANY: a socket address is reused only after its TCP_CLOSE removed the old
        // entry; a leftover (a missed run of this program) must not block the new socket.
        if CONNS.insert(change.skaddr, conn, BPF_ANY.into()).is_err() {
            count(probe_counter::OVERFLOW_CONNS);
            return;
        }
        bump_owner(&owner, cgroup_id, |c| c.opened += 1);
        bump(
            &SERVER_STATS,
            &server_key(&change.tuple),
            &|c: &mut Counters| c.opened += 1,
        );
    }

    fn server_key(t: &Tuple) -> ServerKey {
        ServerKey {
            daddr: t.daddr,
            saddr: t.saddr,
            dport: t.dport,
            _pad: [0; 6],
        }
    }

    /// The process's identity for counting: its tgid and when it was first seen. A new
    /// process reusing a pid gets a new `birth_ns` because `on_group_exit` forgot the old one.
    fn owner_of(tgid: u32, tid: u32, uid_gid: u64, cgroup_id: u64, now: u64) -> OwnerKey {
        // SAFETY: the value is copied out at once.
        if let Some(owner) = unsafe { OWNERS.get(tgid) } {
            return OwnerKey {
                tgid,
                _pad: 0,
                birth_ns: owner.birth_ns,
            };
        }
        let owner = Owner {
            birth_ns: now,
            cgroup_id,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            comm: bpf_get_current_comm().unwrap_or_default(),
        };
        let key = OwnerKey {
            tgid,
            _pad: 0,
            birth_ns: now,
        };
        if OWNERS.insert(tgid, owner, BPF_NOEXIST.into()).is_ok() {
            emit(event_kind::OWNER_NEW, tid, key, &owner, now, None);
            return key;
        }
        // Another thread of the process won the race, or the map is full.
        // SAFETY: the value is copied out at once.
        match unsafe { OWNERS.get(tgid) } {
            Some(existing) => OwnerKey {
                tgid,
                _pad: 0,
                birth_ns: existing.birth_ns,
            },
            None => {
                count(probe_counter::OVERFLOW_OWNERS);
                // Still counted, under birth 0: pid reuse may then merge rows, which the
                // overflow counter makes visible.
                OwnerKey {
                    tgid,
                    _pad: 0,
                    birth_ns: 0,
                }
            }
        }
    }

    /// Any other transition. Never reads "current": the owner is the one stored at connect.
    #[inline(never)]
    fn on_state_change(change: &Change) {
        if let Some(conn) = CONNS.get_ptr_mut(change.skaddr) {
            // SAFETY: the entry belongs to this socket and a socket's state changes are
            // serialised by its lock, so nothing else writes it concurrently.
            let conn = unsafe { &mut *conn };
            if change.new == tcp_state::ESTABLISHED {
                // The source port exists only now; record the full tuple, and drop a seed
                // that userspace may have taken from /proc for this same connection.
                conn.tuple = change.tuple;
                conn.flags |= conn_flags::ESTABLISHED;
                conn.established_ns = boot_ns();
                let _ = SEEDS.remove(change.tuple);
            }
            apply(conn, change);
            if change.new == tcp_state::CLOSE {
                let _ = CONNS.remove(change.skaddr);
            }
            return;
        }
        // Not seen at connect: maybe a connection that predates zkconn.
        let Some(seed) = SEEDS.get_ptr(change.tuple) else {
            return;
        };
        // SAFETY: copied out before the entry is removed.
        let mut conn = unsafe { *seed };
        let _ = SEEDS.remove(change.tuple);
        count(probe_counter::SEEDS_ADOPTED);
        apply(&mut conn, change);
        if change.new != tcp_state::CLOSE
            && CONNS
                .insert(change.skaddr, conn, BPF_NOEXIST.into())
                .is_err()
        {
            count(probe_counter::OVERFLOW_CONNS);
        }
    }

    /// The accounting of one transition of a tracked connection.
    fn apply(conn: &mut Conn, change: &Change) {
        conn.state = change.new;
        conn.changed_ns = boot_ns();
        match change.new {
            tcp_state::CLOSE_WAIT => {
                if is_refusal(conn, change.skaddr, false) {
                    conn.flags |= conn_flags::REFUSED;
                }
                bump_owner(&conn.owner, conn.cgroup_id, |c| c.close_wait += 1);
            }
            tcp_state::CLOSE => {
                let established =
                    conn.flags & conn_flags::ESTABLISHED != 0 || change.old != tcp_state::SYN_SENT;
                let refused = conn.flags & conn_flags::REFUSED != 0;
                let f = |c: &mut Counters| {
                    if established {
                        c.closed += 1;
                    } else {
                        c.failed += 1;
                    }
                    if refused {
                        c.rejected += 1;
                    }
                };
                bump_owner(&conn.owner, conn.cgroup_id, f);
                let server = server_key(&conn.tuple);
                bump(&SERVER_STATS, &server, &f);
                if refused {
                    let info = Owner {
                        cgroup_id: conn.cgroup_id,
                        uid: conn.uid,
                        ..Owner::default()
                    };
                    emit(
                        event_kind::REFUSED,
                        conn.tid,
                        conn.owner,
                        &info,
                        conn.changed_ns,
                        Some(&server),
                    );
                }
            }
            _ => {}
        }
    }

    /// The whole thread group exited: forget its identity so a reused pid starts afresh.
    /// Its sockets close after this (exit_files runs later) and still count for it, because
    /// each connection keeps its owner key.
    #[inline(never)]
    fn on_group_exit() {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tgid = (pid_tgid >> 32) as u32;
        // SAFETY: the value is copied out at once.
        let Some(owner) = (unsafe { OWNERS.get(tgid) }).copied() else {
            return;
        };
        let _ = OWNERS.remove(tgid);
        let key = OwnerKey {
            tgid,
            _pad: 0,
            birth_ns: owner.birth_ns,
        };
        emit(
            event_kind::OWNER_EXIT,
            pid_tgid as u32,
            key,
            &owner,
            boot_ns(),
            None,
        );
    }

    fn bump_owner(owner: &OwnerKey, cgroup_id: u64, f: impl Fn(&mut Counters)) {
        bump(&PROC_STATS, owner, &f);
        bump(&CGROUP_STATS, &cgroup_id, &f);
    }

    /// Increment this CPU's slot. Tracepoint programs run with preemption off and the
    /// kernel refuses to nest them on one CPU (`bpf_prog_active`, counted as the program's
    /// recursion misses, which userspace reports as lost), so a plain add cannot race.
    fn bump<K>(map: &PerCpuHashMap<K, Counters>, key: &K, f: &impl Fn(&mut Counters)) {
        let slot = match map.get_ptr_mut(key) {
            Some(slot) => slot,
            None => {
                // NOEXIST: a concurrent insert on another CPU must not be clobbered.
                let _ = map.insert(key, Counters::default(), BPF_NOEXIST.into());
                match map.get_ptr_mut(key) {
                    Some(slot) => slot,
                    None => {
                        count(probe_counter::OVERFLOW_STATS);
                        return;
                    }
                }
            }
        };
        // SAFETY: this CPU's own slot; see above for why nothing else writes it now.
        f(unsafe { &mut *slot });
    }

    /// Written in place in the ring buffer: an `Event` on the stack would not fit beside
    /// the connection being built (the BPF stack is 512 bytes).
    fn emit(
        kind: u32,
        tid: u32,
        owner: OwnerKey,
        info: &Owner,
        ts_ns: u64,
        server: Option<&ServerKey>,
    ) {
        let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
            count(probe_counter::LOST_EVENTS);
            return;
        };
        entry.write(Event {
            kind,
            tid,
            owner,
            info: *info,
            ts_ns,
            server: server.copied().unwrap_or_default(),
        });
        // Only a new process needs userspace at once (to read its /proc entry while it
        // lives). Exits and refusals wait for the next read of the ring buffer, at the
        // latest the next once-a-second sample: a refusal storm then costs no wake-up per
        // refusal. Each event carries its own time.
        let flags = if kind == event_kind::OWNER_NEW {
            0
        } else {
            BPF_RB_NO_WAKEUP
        };
        entry.submit(flags.into());
    }

    fn count(index: u32) {
        if let Some(slot) = PROBE_COUNTERS.get_ptr_mut(index) {
            // SAFETY: this CPU's own slot (see `bump`).
            unsafe { *slot += 1 };
        }
    }

    fn boot_ns() -> u64 {
        // SAFETY: a helper with no arguments.
        unsafe { bpf_ktime_get_boot_ns() }
    }

    fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
        ]
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}

/// Host builds (`cargo clippy --all-targets`) compile this crate too; there is nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
