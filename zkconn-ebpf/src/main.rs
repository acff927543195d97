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
//! `on_state_change`, `on_group_exit`), so every hook feeds the same accounting. The state
//! tracepoints (classic and BTF) see the connect as the CLOSE → SYN_SENT transition; the
//! function hooks (fentry, kprobe) see it at `tcp_connect`, where the source port is
//! chosen, and every later transition at `tcp_set_state`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: the BPF target has no compare-and-swap, so `AtomicU64::fetch_add` is not
// offered; an atomic add whose result is unused compiles to BPF's XADD on every kernel.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod programs {
    use core::{ffi::c_void, ptr::read_volatile};

    use aya_ebpf::{
        EbpfContext as _,
        bindings::{BPF_ANY, BPF_NOEXIST},
        helpers::{
            bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
            bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
            bpf_probe_read_kernel_buf, generated,
        },
        macros::{btf_tracepoint, fentry, kprobe, map, tracepoint},
        maps::{Array, HashMap, PerCpuArray, RingBuf},
        programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
    };
    use zkconn_common::{
        CGROUP_DEPTH, CGROUP_NAME_LEN, CgroupNames, ClientCounters, ClientKey, Conn, Counters,
        Endpoint, Event, ExitTpLayout, Inbound, MAX_ENDPOINTS, Owner, OwnerEvent, OwnerKey,
        PORT_LIST_LEN, PortList, RefusalConfig, ResetTpLayout, ServerKey, SockLayout,
        StateTpLayout, StatsKey, TaskLayout, Tuple,
        accounting::{self, Close, InboundBytes, InboundEnd},
        conn_flags, control, event_kind, event_output, port_flags, probe_counter, tcp_state,
    };

    /// The running program's context, passed down to where an event is written: a perf
    /// event array needs it (`bpf_perf_event_output`), the ring buffer does not.
    type Ctx = *mut c_void;

    const AF_INET: u16 = 2;
    // Ring buffer flags and queries (include/uapi/linux/bpf.h).
    const BPF_RB_NO_WAKEUP: u32 = 1;
    const BPF_RB_FORCE_WAKEUP: u32 = 2;
    const BPF_RB_AVAIL_DATA: u32 = 0;
    const BPF_RB_RING_SIZE: u32 = 1;
    /// `bpf_perf_event_output` index: this CPU's buffer.
    const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;
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
        skaddr_size: 0,
        state_size: 0,
        port_size: 0,
        family_size: 0,
        protocol_size: 0,
    };

    #[unsafe(no_mangle)]
    static SOCK_LAYOUT: SockLayout = SockLayout {
        dport: 0,
        sport: 0,
        num: 0,
        family: 0,
        state: 0,
        daddr: 0,
        saddr: 0,
        daddr_v6: 0,
        saddr_v6: 0,
        protocol_word: 0,
        protocol_shift: 0,
        protocol_mask: 0,
        has_v6: 0,
        sk_socket: 0,
        socket_ino: 0,
        has_ino: 0,
        err: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static TASK_LAYOUT: TaskLayout = TaskLayout {
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        css_set_cpu: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kn_name: 0,
        kn_parent: 0,
        has_cpu: 0,
        valid: 0,
        _pad: 0,
    };

    #[unsafe(no_mangle)]
    static EXIT_TP_LAYOUT: ExitTpLayout = ExitTpLayout {
        group_dead: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static RESET_TP_LAYOUT: ResetTpLayout = ResetTpLayout {
        skaddr: 0,
        dport: 0,
        port_size: 0,
        valid: 0,
    };

    #[unsafe(no_mangle)]
    static PORT_LIST: PortList = PortList {
        ports: [0; PORT_LIST_LEN],
        flags: [0; PORT_LIST_LEN],
        use_map: 1,
        _pad: 0,
    };

    #[unsafe(no_mangle)]
    static REFUSAL: RefusalConfig = RefusalConfig {
        window_ns: 0,
        bytes_received_offset: 0,
        has_bytes_received: 0,
        bytes_sent_offset: 0,
        has_bytes_sent: 0,
        rcv_nxt_offset: 0,
        copied_seq_offset: 0,
        has_server_side: 0,
        _pad: 0,
        server_window_ns: 0,
    };

    // Capacities below are defaults; userspace resizes every map from its flags.
    #[map(name = "ZK_CONNS")]
    static CONNS: HashMap<u64, Conn> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_SEEDS")]
    static SEEDS: HashMap<Tuple, Conn> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_OWNERS")]
    static OWNERS: HashMap<u32, Owner> = HashMap::with_max_entries(16_384, 0);
    // Counters shared by every CPU, incremented with atomic adds (see `bump`): one row per
    // key rather than one per possible CPU, and nothing lost when a program run interrupts
    // another on the same CPU.
    #[map(name = "ZK_STATS")]
    static STATS: HashMap<StatsKey, Counters> = HashMap::with_max_entries(20_480, 0);
    #[map(name = "ZK_STATS_SPILL")]
    static STATS_SPILL: HashMap<StatsKey, Counters> = HashMap::with_max_entries(4_096, 0);
    /// Indexed by destination port: 0 for a port zkconn does not watch, else `port_flags`.
    /// An array lookup is inlined by the verifier: a socket on an unwatched port costs no
    /// hash computation.
    #[map(name = "ZK_INBOUND")]
    static INBOUND: HashMap<u64, Inbound> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_INBOUND_SEEDS")]
    static INBOUND_SEEDS: HashMap<Tuple, Inbound> = HashMap::with_max_entries(65_536, 0);
    #[map(name = "ZK_CLIENTS")]
    static CLIENTS: HashMap<ClientKey, ClientCounters> =
        HashMap::with_max_entries(zkconn_common::MAX_CLIENTS, 0);
    #[map(name = "ZK_PORTS")]
    static PORTS: Array<u8> = Array::with_max_entries(65_536, 0);
    /// Run-time switches, indexed by `zkconn_common::control`.
    #[map(name = "ZK_CONTROL")]
    static CONTROL: Array<u32> = Array::with_max_entries(control::COUNT, 0);
    #[map(name = "ZK_ENDPOINTS")]
    static ENDPOINTS: HashMap<Endpoint, u8> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);
    #[map(name = "ZK_PROBE_COUNTERS")]
    static PROBE_COUNTERS: PerCpuArray<u64> =
        PerCpuArray::with_max_entries(probe_counter::COUNT, 0);
    /// A ring buffer, or, where the kernel has none (before 5.8) or `--fallback perf-buffer`
    /// asks, rewritten by userspace into a perf event array before loading (`EVENT_OUTPUT`
    /// says which). Only the matching branch of `Slot` survives verification: the other
    /// reads a frozen global the verifier knows, so its helpers are never checked.
    #[map(name = "ZK_EVENTS")]
    static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
    /// Where an event is built for a perf event array, which copies it out: one entry per
    /// nesting level, since a program run can interrupt another on the same CPU between its
    /// writing the entry and the copy (a softirq's refusal inside a process's exit, say).
    #[map(name = "ZK_EVENT_SCRATCH")]
    static EVENT_SCRATCH: PerCpuArray<OwnerEvent> =
        PerCpuArray::with_max_entries(SCRATCH_LEVELS, 0);
    /// How many of this CPU's scratch entries are being written (see `Slot::reserve`).
    #[map(name = "ZK_EVENT_NEST")]
    static EVENT_NEST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
    /// Nesting levels: process context, softirq, hardirq, NMI.
    const SCRATCH_LEVELS: u32 = 4;

    /// An `event_output` value; userspace sets it with the map type it loads.
    #[unsafe(no_mangle)]
    static EVENT_OUTPUT: u32 = event_output::RING_BUFFER;

    /// Where a hook reads a socket's fields. A transition reads only what it needs: the
    /// destination port first (every TCP socket on the host pays for that one), the protocol
    /// and addresses at the connect, the source port once it exists, nothing more later.
    trait Sock {
        /// The socket's address: the connection table's key.
        fn addr(&self) -> u64;
        /// The destination port.
        fn dport(&self) -> Result<u16, i32>;
        /// Whether the socket is TCP's (the state tracepoints fire for other protocols too).
        fn is_tcp(&self) -> Result<bool, i32>;
        /// The family and both addresses, into `t` (zeroed but for its port fields).
        fn addrs(&self, t: &mut Tuple) -> Result<(), i32>;
        /// The local port in any state, the close's included.
        fn sport(&self) -> Result<u16, i32>;
        /// The local port while the socket is bound (from the connect that chose it until
        /// the close).
        fn sport_bound(&self) -> Result<u16, i32> {
            self.sport()
        }
        /// The state it is in (before a `tcp_set_state` call: the old one).
        fn state(&self) -> Result<u8, i32>;
        /// `sk_err`: nonzero once a reset or a timeout ended the connection.
        fn err(&self) -> Result<i32, i32> {
            if global(&SOCK_LAYOUT.valid) == 0 {
                return Err(0);
            }
            probed(self.addr() as *const u8, global(&SOCK_LAYOUT.err))
        }
    }

    /// A socket handed over with its BTF type (the BTF tracepoints, fentry): fields of
    /// `struct sock` are plain loads, which the verifier checks against the kernel's type
    /// (the offsets are frozen globals it knows) and makes fault-free. What lies beyond
    /// `struct sock` (`inet_sock.inet_sport`) is read through `bpf_probe_read_kernel`.
    struct Typed(*const u8);

    /// A socket known only by its address (kprobes): every field through
    /// `bpf_probe_read_kernel`.
    struct Untyped(*const u8);

    /// The record of the classic `sock:inet_sock_set_state` tracepoint.
    struct Record<'a> {
        ctx: &'a TracePointContext,
        skaddr: u64,
    }

    /// A frozen global the loader patched (volatile, so the compiler cannot fold the
    /// compile-time value; read field by field where a load uses it as an offset, so the
    /// verifier sees each as the constant it is).
    #[inline(always)]
    fn global<T: Copy>(field: &T) -> T {
        // SAFETY: a plain read of a global.
        unsafe { read_volatile(field) }
    }

    /// The `T` at `offset` in a BTF-typed socket.
    #[inline(always)]
    fn typed<T: Copy>(sk: *const u8, offset: u32) -> T {
        // SAFETY: `sk` is BTF-typed: the verifier checks this load against the kernel's
        // `struct sock` and turns it into one that cannot fault.
        unsafe { read_volatile(sk.wrapping_add(offset as usize).cast::<T>()) }
    }

    /// The `T` at `offset` in kernel memory at `base`.
    #[inline(always)]
    fn probed<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
        unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
            .map_err(|e| e as i32)
    }

    /// `sk_protocol` is TCP's, from the aligned word that holds it (a bit field before
    /// kernel 5.6, a u16 since).
    #[inline(always)]
    fn protocol_is_tcp(word: u32) -> bool {
        (word >> global(&SOCK_LAYOUT.protocol_shift)) & global(&SOCK_LAYOUT.protocol_mask)
            == u32::from(IPPROTO_TCP)
    }

    /// Writes a 4-byte address into `dst`.
    #[inline(always)]
    fn put(dst: &mut [u8], word: u32) {
        dst[..4].copy_from_slice(&word.to_ne_bytes());
    }

    impl Sock for Typed {
        fn addr(&self) -> u64 {
            self.0 as u64
        }

        fn dport(&self) -> Result<u16, i32> {
            Ok(u16::from_be(typed(self.0, global(&SOCK_LAYOUT.dport))))
        }

        fn is_tcp(&self) -> Result<bool, i32> {
            probed(self.0, global(&SOCK_LAYOUT.protocol_word)).map(protocol_is_tcp)
        }

        fn addrs(&self, t: &mut Tuple) -> Result<(), i32> {
            let family: u16 = typed(self.0, global(&SOCK_LAYOUT.family));
            if family == AF_INET {
                v4_mapped(t);
                put(
                    &mut t.saddr[12..],
                    typed(self.0, global(&SOCK_LAYOUT.saddr)),
                );
                put(
                    &mut t.daddr[12..],
                    typed(self.0, global(&SOCK_LAYOUT.daddr)),
                );
            } else if global(&SOCK_LAYOUT.has_v6) == 1 {
                for i in 0..4 {
                    let at = 4 * i as u32;
                    put(
                        &mut t.saddr[4 * i..],
                        typed(self.0, global(&SOCK_LAYOUT.saddr_v6) + at),
                    );
                    put(
                        &mut t.daddr[4 * i..],
                        typed(self.0, global(&SOCK_LAYOUT.daddr_v6) + at),
                    );
                }
            } else {
                return Err(0);
            }
            Ok(())
        }

        fn sport(&self) -> Result<u16, i32> {
            probed(self.0, global(&SOCK_LAYOUT.sport)).map(u16::from_be)
        }

        fn sport_bound(&self) -> Result<u16, i32> {
            // `skc_num`, in host order, inside `struct sock`: one load.
            Ok(typed(self.0, global(&SOCK_LAYOUT.num)))
        }

        fn state(&self) -> Result<u8, i32> {
            Ok(typed(self.0, global(&SOCK_LAYOUT.state)))
        }

        fn err(&self) -> Result<i32, i32> {
            Ok(typed(self.0, global(&SOCK_LAYOUT.err)))
        }
    }

    impl Sock for Untyped {
        fn addr(&self) -> u64 {
            self.0 as u64
        }

        fn dport(&self) -> Result<u16, i32> {
            probed(self.0, global(&SOCK_LAYOUT.dport)).map(u16::from_be)
        }

        fn is_tcp(&self) -> Result<bool, i32> {
            probed(self.0, global(&SOCK_LAYOUT.protocol_word)).map(protocol_is_tcp)
        }

        fn addrs(&self, t: &mut Tuple) -> Result<(), i32> {
            let family: u16 = probed(self.0, global(&SOCK_LAYOUT.family))?;
            if family == AF_INET {
                v4_mapped(t);
                read_into(self.0, global(&SOCK_LAYOUT.saddr), &mut t.saddr[12..])?;
                read_into(self.0, global(&SOCK_LAYOUT.daddr), &mut t.daddr[12..])?;
            } else if global(&SOCK_LAYOUT.has_v6) == 1 {
                read_into(self.0, global(&SOCK_LAYOUT.saddr_v6), &mut t.saddr)?;
                read_into(self.0, global(&SOCK_LAYOUT.daddr_v6), &mut t.daddr)?;
            } else {
                return Err(0);
            }
            Ok(())
        }

        fn sport(&self) -> Result<u16, i32> {
            probed(self.0, global(&SOCK_LAYOUT.sport)).map(u16::from_be)
        }

        fn state(&self) -> Result<u8, i32> {
            probed(self.0, global(&SOCK_LAYOUT.state))
        }
    }

    impl Sock for Record<'_> {
        fn addr(&self) -> u64 {
            self.skaddr
        }

        fn dport(&self) -> Result<u16, i32> {
            let l = &STATE_TP_LAYOUT;
            Ok(tp_field(self.ctx, global(&l.dport), global(&l.port_size))? as u16)
        }

        fn is_tcp(&self) -> Result<bool, i32> {
            let l = &STATE_TP_LAYOUT;
            Ok(
                tp_field(self.ctx, global(&l.protocol), global(&l.protocol_size))?
                    == u64::from(IPPROTO_TCP),
            )
        }

        fn addrs(&self, t: &mut Tuple) -> Result<(), i32> {
            let l = &STATE_TP_LAYOUT;
            let family = tp_field(self.ctx, global(&l.family), global(&l.family_size))? as u16;
            let record = self.ctx.as_ptr() as *const u8;
            if family == AF_INET {
                v4_mapped(t);
                read_into(record, global(&l.saddr).into(), &mut t.saddr[12..])?;
                read_into(record, global(&l.daddr).into(), &mut t.daddr[12..])?;
            } else {
                read_into(record, global(&l.saddr_v6).into(), &mut t.saddr)?;
                read_into(record, global(&l.daddr_v6).into(), &mut t.daddr)?;
            }
            Ok(())
        }

        fn sport(&self) -> Result<u16, i32> {
            let l = &STATE_TP_LAYOUT;
            Ok(tp_field(self.ctx, global(&l.sport), global(&l.port_size))? as u16)
        }

        fn state(&self) -> Result<u8, i32> {
            let l = &STATE_TP_LAYOUT;
            Ok(tp_field(self.ctx, global(&l.oldstate), global(&l.state_size))? as u8)
        }
    }

    /// A tuple with only its destination port known.
    #[inline(always)]
    fn towards(dport: u16) -> Tuple {
        Tuple {
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 0,
            dport,
            _pad: 0,
        }
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

    /// `int tcp_connect(struct sock *sk)`: the SYN is about to leave; the caller
    /// (`tcp_v4_connect`/`tcp_v6_connect`) set SYN_SENT and chose the source port, and runs
    /// in the connecting task.
    #[fentry(function = "tcp_connect")]
    pub fn zk_fentry_tcp_connect(ctx: FEntryContext) -> i32 {
        let sk: *const u8 = ctx.arg(0);
        let _ = try_tcp_connect(ctx.as_ptr(), &Typed(sk));
        0
    }

    /// `void tcp_set_state(struct sock *sk, int state)`: every later transition.
    #[fentry(function = "tcp_set_state")]
    pub fn zk_fentry_tcp_set_state(ctx: FEntryContext) -> i32 {
        let sk: *const u8 = ctx.arg(0);
        let _ = try_tcp_set_state(ctx.as_ptr(), &Typed(sk), ctx.arg(1));
        0
    }

    #[kprobe]
    pub fn zk_kprobe_tcp_connect(ctx: ProbeContext) -> u32 {
        if let Some(sk) = ctx.arg(0) {
            let _ = try_tcp_connect(ctx.as_ptr(), &Untyped(sk));
        }
        0
    }

    #[kprobe]
    pub fn zk_kprobe_tcp_set_state(ctx: ProbeContext) -> u32 {
        if let (Some(sk), Some(state)) = (ctx.arg(0), ctx.arg(1)) {
            let _ = try_tcp_set_state(ctx.as_ptr(), &Untyped(sk), state);
        }
        0
    }

    /// `tcp_receive_reset(struct sock *sk)` through BTF: no perf event needed to attach
    /// (kernels that allow perf events only with CAP_SYS_ADMIN refuse the classic one).
    /// Every reset on the host runs this: the port is tested before the table is searched.
    #[btf_tracepoint(function = "tcp_receive_reset")]
    pub fn zk_btf_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
        let sk: *const u8 = ctx.arg(0);
        if global(&SOCK_LAYOUT.valid) == 1
            && Typed(sk).dport().is_ok_and(|dport| watched(dport) != 0)
        {
            on_reset(sk as u64);
        }
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
        let l = &STATE_TP_LAYOUT;
        if global(&l.valid) == 0 {
            return Ok(());
        }
        let record = Record { ctx, skaddr: 0 };
        let (sport, dport) = ports(ctx, &record)?;
        // The two tests every other socket pays: the destination port (a connect towards
        // ZooKeeper), then the local port (a connection this host's listener accepted).
        let flags = watched(dport);
        let local_flags = watched(sport);
        if flags == 0 && local_flags == 0 {
            return Ok(());
        }
        let old = record.state()?;
        let new = tp_field(ctx, global(&l.newstate), global(&l.state_size))? as u8;
        let record = Record {
            ctx,
            skaddr: tp_field(ctx, global(&l.skaddr), global(&l.skaddr_size))?,
        };
        if flags != 0 {
            on_transition(ctx.as_ptr(), &record, old, new, dport, flags)?;
        }
        // Also when the destination port is watched: a client may connect from the watched
        // port itself (NAT, a remote host's ephemeral range, or on purpose).
        if local_flags != 0 && inbound_transition(old, new) {
            on_inbound(&record, old, new, sport, local_flags);
        }
        Ok(())
    }

    /// The record's source and destination ports. Every kernel's format has them side by
    /// side (`__u16 sport; __u16 dport;`), so one read gives both, in host order (the
    /// tracepoint stores them so): the read every state change on the host pays, halved.
    /// A layout where they are not adjacent is read field by field.
    #[inline(always)]
    fn ports(ctx: &TracePointContext, record: &Record<'_>) -> Result<(u16, u16), i32> {
        let l = &STATE_TP_LAYOUT;
        let sport_at = global(&l.sport);
        if global(&l.port_size) == 2 && global(&l.dport) == sport_at.wrapping_add(2) {
            let both = tp_field(ctx, sport_at, 4)?;
            // Little-endian (bpfel): the first field is the low half.
            Ok((both as u16, (both >> 16) as u16))
        } else {
            Ok((record.sport()?, record.dport()?))
        }
    }

    /// A scalar field of a classic tracepoint's record, zero-extended: read at the size its
    /// format file gives, since that differs between kernels.
    #[inline(always)]
    fn tp_field(ctx: &TracePointContext, offset: u16, size: u16) -> Result<u64, i32> {
        let offset = usize::from(offset);
        // SAFETY: offset and size come from the tracepoint's own format file, and `read_at`
        // goes through bpf_probe_read, so a bad offset fails, never faults.
        unsafe {
            Ok(match size {
                1 => u64::from(ctx.read_at::<u8>(offset)?),
                2 => u64::from(ctx.read_at::<u16>(offset)?),
                4 => u64::from(ctx.read_at::<u32>(offset)?),
                _ => ctx.read_at::<u64>(offset)?,
            })
        }
    }

    /// The same transition seen through the BTF tracepoint: the kernel passes the socket
    /// itself and fills no record, so a socket on an unwatched port costs one load and one
    /// array lookup.
    fn try_btf_set_state(ctx: &BtfTracePointContext) -> Result<(), i32> {
        if global(&SOCK_LAYOUT.valid) == 0 {
            return Ok(());
        }
        let sock = Typed(ctx.arg(0));
        let dport = sock.dport()?;
        let old: i32 = ctx.arg(1);
        let new: i32 = ctx.arg(2);
        // The one test that every other socket pays, and the local port's for the few
        // transitions an accepted connection counts.
        let flags = watched(dport);
        if flags != 0 {
            on_transition(ctx.as_ptr(), &sock, old as u8, new as u8, dport, flags)?;
        }
        // Also when the destination port is watched: a client may connect from the watched
        // port itself (NAT, a remote host's ephemeral range, or on purpose).
        inbound_of(&sock, old as u8, new as u8)
    }

    /// Whether transition `old` → `new` may count for an accepted connection: its
    /// ESTABLISHED, or leaving ESTABLISHED or CLOSE_WAIT (where the server lets it go).
    #[inline(always)]
    fn inbound_transition(old: u8, new: u8) -> bool {
        (old == tcp_state::SYN_RECV && new == tcp_state::ESTABLISHED)
            || old == tcp_state::ESTABLISHED
            || old == tcp_state::CLOSE_WAIT
    }

    /// A transition of a socket whose destination port is not watched: counted when it is
    /// an accepted connection on a watched local port.
    #[inline(always)]
    fn inbound_of<S: Sock>(sock: &S, old: u8, new: u8) -> Result<(), i32> {
        if !inbound_transition(old, new) {
            return Ok(());
        }
        // `skc_num` is zeroed before the close's state change where the port is released.
        let port = if new == tcp_state::CLOSE {
            sock.sport()?
        } else {
            sock.sport_bound()?
        };
        let flags = watched(port);
        if flags != 0 {
            on_inbound(sock, old, new, port, flags);
        }
        Ok(())
    }

    /// `tcp_connect(sk)`, from the fentry or kprobe hook: a TCP socket (the function is
    /// TCP's own) in SYN_SENT with its source port chosen, in the connecting task.
    fn try_tcp_connect<S: Sock>(ctx: Ctx, sock: &S) -> Result<(), i32> {
        if global(&SOCK_LAYOUT.valid) == 0 {
            return Ok(());
        }
        let dport = sock.dport()?;
        let flags = watched(dport);
        if flags == 0 {
            return Ok(());
        }
        let mut tuple = towards(dport);
        sock.addrs(&mut tuple)?;
        tuple.sport = sock.sport_bound()?;
        if is_target(&tuple, flags) {
            let now = boot_ns();
            on_connect(sock.addr(), &tuple, &owner_of(ctx, now), now);
        }
        Ok(())
    }

    /// `tcp_set_state(sk, new)`, from the fentry or kprobe hook: the old state is still in
    /// the socket. The connect itself is `tcp_connect`'s, so CLOSE → SYN_SENT is skipped
    /// here (it runs before the source port is chosen).
    fn try_tcp_set_state<S: Sock>(ctx: Ctx, sock: &S, new: i32) -> Result<(), i32> {
        if global(&SOCK_LAYOUT.valid) == 0 {
            return Ok(());
        }
        let dport = sock.dport()?;
        let old = sock.state()?;
        if old == new as u8 {
            return Ok(());
        }
        // The connect itself is `tcp_connect`'s.
        if watched(dport) != 0 && new as u8 != tcp_state::SYN_SENT {
            on_state_change(ctx, sock, old, new as u8, dport);
        }
        // Also when the destination port is watched (see `try_btf_set_state`).
        inbound_of(sock, old, new as u8)
    }

    /// `dst.len()` bytes of kernel memory at `base + offset` (a socket, or a trace
    /// record), into `dst`.
    #[inline(always)]
    fn read_into(base: *const u8, offset: u32, dst: &mut [u8]) -> Result<(), i32> {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
        unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(offset as usize), dst) }
            .map_err(|e| e as i32)
    }

    /// The `port_flags` of destination port `dport`, 0 when it is not watched: compared
    /// with the few ports fixed at load, or looked up when there are more.
    #[inline(always)]
    fn watched(dport: u16) -> u8 {
        let l = &PORT_LIST;
        if global(&l.use_map) != 0 {
            return PORTS.get(u32::from(dport)).copied().unwrap_or(0);
        }
        let mut i = 0;
        while i < PORT_LIST_LEN {
            // Unused slots have flags 0.
            if global(&l.ports[i]) == dport {
                return global(&l.flags[i]);
            }
            i += 1;
        }
        0
    }

    fn seeds_pending() -> bool {
        CONTROL.get(control::SEEDS_PENDING).is_some_and(|&v| v != 0)
    }

    fn seeding() -> bool {
        CONTROL.get(control::SEEDING).is_some_and(|&v| v != 0)
    }

    /// The inode number of socket `sk` (`sock_i_ino`), 0 when unknown (no BTF, a kernel
    /// socket, a failed read).
    #[inline(never)]
    fn sock_ino(sk: u64) -> u64 {
        let l = &SOCK_LAYOUT;
        if global(&l.valid) == 0 || global(&l.has_ino) == 0 {
            return 0;
        }
        let Ok(socket) = read_ptr(sk as *const u8, global(&l.sk_socket)) else {
            return 0;
        };
        probed(socket, global(&l.socket_ino)).unwrap_or(0)
    }

    /// A transition of a socket towards a watched port (`flags`: the port's), seen by a
    /// state tracepoint: the connect is CLOSE → SYN_SENT, before the source port exists.
    #[inline(always)]
    fn on_transition<S: Sock>(
        ctx: Ctx,
        sock: &S,
        old: u8,
        new: u8,
        dport: u16,
        flags: u8,
    ) -> Result<(), i32> {
        if old == tcp_state::CLOSE && new == tcp_state::SYN_SENT {
            if !sock.is_tcp()? {
                return Ok(());
            }
            let mut tuple = towards(dport);
            sock.addrs(&mut tuple)?;
            if is_target(&tuple, flags) {
                let now = boot_ns();
                on_connect(sock.addr(), &tuple, &owner_of(ctx, now), now);
            }
        } else {
            on_state_change(ctx, sock, old, new, dport);
        }
        Ok(())
    }

    /// Whether a connection to a watched port goes to a watched server: any address on the
    /// port, or one of the endpoints listed for it.
    fn is_target(tuple: &Tuple, flags: u8) -> bool {
        is_watched_endpoint(&tuple.daddr, tuple.dport, flags)
    }

    /// Whether (`addr`, `port`) is watched, the port's flags being `flags`: any address on
    /// the port, or one of the endpoints listed for it.
    fn is_watched_endpoint(addr: &[u8; 16], port: u16, flags: u8) -> bool {
        if flags & port_flags::ANY_ADDRESS != 0 {
            return true;
        }
        let endpoint = Endpoint {
            addr: *addr,
            port,
            _pad: [0; 6],
        };
        // SAFETY: the value is only tested for presence.
        unsafe { ENDPOINTS.get(endpoint) }.is_some()
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
            on_group_exit(ctx.as_ptr());
        }
        Ok(())
    }

    /// A reset arrived on some socket. On loopback this runs in the peer's context, so only
    /// the socket is used: its port (where the record has it), then one lookup, and nothing
    /// for sockets zkconn does not track.
    fn try_tcp_receive_reset(ctx: &TracePointContext) -> Result<(), i32> {
        let l = &RESET_TP_LAYOUT;
        if global(&l.valid) == 0 {
            return Ok(());
        }
        let port_size = global(&l.port_size);
        if port_size != 0 && watched(tp_field(ctx, global(&l.dport), port_size)? as u16) == 0 {
            return Ok(());
        }
        // SAFETY: offset from the tracepoint's format file.
        let skaddr: u64 = unsafe { ctx.read_at(global(&l.skaddr).into())? };
        on_reset(skaddr);
        Ok(())
    }

    /// A reset arrived on socket `skaddr`: a refusal if it lands within the window.
    fn on_reset(skaddr: u64) {
        if let Some(conn) = CONNS.get_ptr_mut(skaddr) {
            // SAFETY: the reset is processed under the socket's lock, like its state changes.
            let conn = unsafe { &mut *conn };
            if matches!(conn.state, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT)
                && is_refusal(conn, skaddr, true, boot_ns())
            {
                conn.flags |= conn_flags::REFUSED;
                count(probe_counter::ROW_CHANGES);
            }
        }
    }

    /// Whether this peer close of `conn` is the server refusing the host: the rule is
    /// `zkconn_common::accounting::is_refusal` (tested there); this reads what it needs
    /// (`tcp_sock.bytes_received` and `bytes_sent`, at the offsets userspace took from the
    /// kernel's BTF) only when it asks.
    fn is_refusal(conn: &Conn, skaddr: u64, reset: bool, now: u64) -> bool {
        // SAFETY: see `try_inet_sock_set_state`.
        let cfg = unsafe { read_volatile(&REFUSAL) };
        // SAFETY: bpf_probe_read_kernel checks the address; a failed read is no refusal.
        let read = |offset: u32| unsafe {
            bpf_probe_read_kernel(skaddr.wrapping_add(u64::from(offset)) as *const u64).ok()
        };
        accounting::is_refusal(
            conn,
            || now,
            reset,
            &cfg,
            || read(cfg.bytes_received_offset),
            || read(cfg.bytes_sent_offset),
        )
    }

    /// A ZooKeeper-bound connect (CLOSE → SYN_SENT, or `tcp_connect`) of socket `skaddr`
    /// at `now`: runs in the connecting task, so "current" is the owner (`owner`, from
    /// `owner_of`, which the caller runs first so the two frames are not stacked). These
    /// two are the only places that read "current".
    #[inline(never)]
    fn on_connect(skaddr: u64, tuple: &Tuple, owner: &OwnerKey, now: u64) {
        let owner = *owner;
        let pid_tgid = bpf_get_current_pid_tgid();
        let uid_gid = bpf_get_current_uid_gid();
        // SAFETY: a helper with no arguments.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        let seeding = seeding();
        let conn = Conn {
            tuple: *tuple,
            owner,
            cgroup_id,
            opened_ns: now,
            changed_ns: now,
            established_ns: 0,
            ino: if seeding { sock_ino(skaddr) } else { 0 },
            tid: pid_tgid as u32,
            uid: uid_gid as u32,
            state: tcp_state::SYN_SENT,
            flags: if seeding {
                conn_flags::WHILE_SEEDING
            } else {
                0
            },
            _pad: [0; 6],
        };
        // BPF_ANY: a socket address is reused only after its TCP_CLOSE removed the old
        // entry; a leftover (a missed run of this program) must not block the new socket.
        if CONNS.insert(skaddr, conn, BPF_ANY.into()).is_err() {
            count(probe_counter::OVERFLOW_CONNS);
            return;
        }
        bump(
            &mut stats_key(&owner, cgroup_id, tuple),
            Field::Opened,
            false,
        );
        count(probe_counter::ROW_CHANGES);
    }

    /// The counter row of a connection: its owner, the cgroup it connected from, and its
    /// server budget (server endpoint and local address).
    #[inline(always)]
    fn stats_key(owner: &OwnerKey, cgroup_id: u64, t: &Tuple) -> StatsKey {
        StatsKey {
            owner: *owner,
            cgroup_id,
            server: ServerKey {
                daddr: t.daddr,
                saddr: t.saddr,
                dport: t.dport,
                _pad: [0; 6],
            },
        }
    }

    /// The current process's identity for counting: its tgid and when it was first seen. A
    /// new process reusing a pid gets a new `birth_ns` because `on_group_exit` forgot the old
    /// one. Not inlined, and reading "current" itself: its frame (the new owner and its
    /// event) then does not add to the connect's on the 512-byte BPF stack.
    #[inline(never)]
    fn owner_of(ctx: Ctx, now: u64) -> OwnerKey {
        let pid_tgid = bpf_get_current_pid_tgid();
        let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
        // SAFETY: the value is copied out at once.
        if let Some(owner) = unsafe { OWNERS.get(tgid) } {
            return OwnerKey {
                tgid,
                _pad: 0,
                birth_ns: owner.birth_ns,
            };
        }
        // A process not seen before: the rest of its identity.
        let uid_gid = bpf_get_current_uid_gid();
        // SAFETY: a helper with no arguments.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        let mut owner = Owner {
            birth_ns: now,
            cgroup_id,
            uid: uid_gid as u32,
            gid: (uid_gid >> 32) as u32,
            comm: [0; 16],
        };
        // Straight into place: a copy through a temporary would cost this frame 16 bytes
        // more, and the deepest call chain (tracepoint, owner_of, emit_owner_new, memset)
        // fills the 512-byte stack of kernels before 6.13 to the byte. On failure the helper
        // zeroes the buffer.
        // SAFETY: the destination is the 16-byte `comm` array of a live stack value.
        unsafe {
            generated::bpf_get_current_comm(owner.comm.as_mut_ptr().cast(), owner.comm.len() as u32)
        };
        let key = OwnerKey {
            tgid,
            _pad: 0,
            birth_ns: now,
        };
        if OWNERS.insert(tgid, owner, BPF_NOEXIST.into()).is_ok() {
            emit_owner_new(ctx, tid, &key, &owner, now);
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

    /// Any other transition of a socket towards a watched port. Never reads "current": the
    /// owner is the one stored at connect.
    #[inline(never)]
    fn on_state_change<S: Sock>(ctx: Ctx, sock: &S, old: u8, new: u8, dport: u16) {
        let skaddr = sock.addr();
        // One clock read per transition.
        let now = boot_ns();
        if let Some(conn) = CONNS.get_ptr_mut(skaddr) {
            // SAFETY: the entry belongs to this socket and a socket's state changes are
            // serialised by its lock, so nothing else writes it concurrently.
            let conn = unsafe { &mut *conn };
            if new == tcp_state::ESTABLISHED {
                // The source port exists only now (the state tracepoints saw the connect
                // before it was chosen): complete the tuple. A failed read leaves what the
                // connect saw; the transition still counts.
                let _ = sock.addrs(&mut conn.tuple);
                if let Ok(sport) = sock.sport_bound() {
                    conn.tuple.sport = sport;
                }
                conn.flags |= conn_flags::ESTABLISHED;
                conn.established_ns = now;
            }
            // A socket that connected while zkconn seeded may also have been seeded from
            // /proc (connected between attach and the scan): drop that seed at the socket's
            // first change, whatever it is, so it cannot outlive the socket (a connect that
            // fails goes SYN_SENT → CLOSE without ESTABLISHED). Sockets that connected
            // later cannot be in the scan, and never touch the seed table.
            if conn.flags & conn_flags::WHILE_SEEDING != 0 {
                conn.flags &= !conn_flags::WHILE_SEEDING;
                if let Ok(sport) = sock.sport()
                    && sport != 0
                {
                    // The key is the entry itself: no copy on the stack.
                    conn.tuple.sport = sport;
                    let _ = SEEDS.remove(&conn.tuple);
                }
            }
            conn.changed_ns = now;
            apply(ctx, conn, skaddr, old, new);
            if new == tcp_state::CLOSE {
                let _ = CONNS.remove(skaddr);
            }
            count(probe_counter::ROW_CHANGES);
            return;
        }
        // Not seen at connect: maybe a connection that predates zkconn.
        if !seeds_pending() || !sock.is_tcp().unwrap_or(false) {
            return;
        }
        let mut tuple = towards(dport);
        if sock.addrs(&mut tuple).is_err() {
            return;
        }
        match sock.sport() {
            Ok(sport) => tuple.sport = sport,
            Err(_) => return,
        }
        let Some(seed) = SEEDS.get_ptr(&tuple) else {
            return;
        };
        // Map value to map value: a `Conn` copied through the stack would not fit beside
        // the callers' frames on kernels before 6.13 (512 bytes in all).
        // SAFETY: `seed` points at a live entry; the update copies it before the removal.
        let moved = CONNS.insert(skaddr, unsafe { &*seed }, BPF_NOEXIST.into());
        let _ = SEEDS.remove(&tuple);
        count(probe_counter::SEEDS_ADOPTED);
        count(probe_counter::ROW_CHANGES);
        let conn = match (moved, CONNS.get_ptr_mut(skaddr)) {
            (Ok(()), Some(conn)) => conn,
            _ => {
                count(probe_counter::OVERFLOW_CONNS);
                return;
            }
        };
        // SAFETY: the entry now belongs to this socket, serialised by its lock as above.
        let conn = unsafe { &mut *conn };
        conn.changed_ns = now;
        apply(ctx, conn, skaddr, old, new);
        if new == tcp_state::CLOSE {
            let _ = CONNS.remove(skaddr);
        }
        count(probe_counter::ROW_CHANGES);
    }

    /// The accounting of one transition (`old` → `new`) of socket `skaddr`'s tracked
    /// connection, made at `conn.changed_ns` (set by the caller: one clock read per
    /// transition).
    fn apply(ctx: Ctx, conn: &mut Conn, skaddr: u64, old: u8, new: u8) {
        conn.state = new;
        let now = conn.changed_ns;
        match new {
            tcp_state::CLOSE_WAIT => {
                if is_refusal(conn, skaddr, false, now) {
                    conn.flags |= conn_flags::REFUSED;
                }
                bump(
                    &mut stats_key(&conn.owner, conn.cgroup_id, &conn.tuple),
                    Field::CloseWait,
                    false,
                );
            }
            tcp_state::CLOSE => {
                let refused = conn.flags & conn_flags::REFUSED != 0;
                let field = match accounting::close_kind(conn.flags, old) {
                    Close::Closed => Field::Closed,
                    Close::Failed => Field::Failed,
                };
                let mut key = stats_key(&conn.owner, conn.cgroup_id, &conn.tuple);
                bump(&mut key, field, refused);
                if refused {
                    emit_refused(ctx, conn, &key.server);
                }
            }
            _ => {}
        }
    }

    /// A transition of an accepted connection on watched local port `port` (`flags`: the
    /// port's): this host is a ZooKeeper server. Counted per client host on the listener,
    /// from the handshake (SYN_RECV → ESTABLISHED) until the server lets the connection go
    /// (it leaves ESTABLISHED or CLOSE_WAIT for anything but CLOSE_WAIT). Never reads
    /// "current": these run in softirq or in the client's context.
    #[inline(never)]
    fn on_inbound<S: Sock>(sock: &S, old: u8, new: u8, port: u16, flags: u8) {
        if !CONTROL.get(control::INBOUND).is_some_and(|&v| v != 0) {
            return;
        }
        let skaddr = sock.addr();
        let now = boot_ns();
        if old == tcp_state::SYN_RECV {
            if !sock.is_tcp().unwrap_or(false) {
                return;
            }
            let mut row = Inbound {
                tuple: towards(0),
                established_ns: now,
                changed_ns: now,
                state: tcp_state::ESTABLISHED,
                flags: 0,
                _pad: [0; 6],
            };
            if sock.addrs(&mut row.tuple).is_err() {
                return;
            }
            row.tuple.sport = port;
            row.tuple.dport = match sock.dport() {
                Ok(p) => p,
                Err(_) => return,
            };
            if !is_listener(&row.tuple, flags) {
                return;
            }
            // BPF_ANY: a leftover of a missed close must not block the new socket.
            if INBOUND.insert(skaddr, row, BPF_ANY.into()).is_err() {
                count(probe_counter::OVERFLOW_INBOUND);
                return;
            }
            bump_client(&ClientKey::of(&row.tuple), None);
            count(probe_counter::ROW_CHANGES);
            return;
        }
        let row = match INBOUND.get_ptr_mut(skaddr) {
            Some(row) => row,
            None => match adopt_inbound(sock, skaddr, port) {
                Some(row) => row,
                None => return,
            },
        };
        // SAFETY: the entry belongs to this socket, whose state changes are serialised by
        // its lock.
        let row = unsafe { &mut *row };
        row.changed_ns = now;
        if new == tcp_state::CLOSE_WAIT {
            row.state = new;
            count(probe_counter::ROW_CHANGES);
            return;
        }
        // SAFETY: see `try_inet_sock_set_state`.
        let cfg = unsafe { read_volatile(&REFUSAL) };
        let in_window = row.established_ns != 0
            && now.saturating_sub(row.established_ns) <= cfg.server_window_ns;
        let end = accounting::inbound_end(
            old,
            new,
            sock.err().ok(),
            in_window,
            inbound_bytes(skaddr, &cfg),
        );
        let key = ClientKey::of(&row.tuple);
        let _ = INBOUND.remove(skaddr);
        bump_client(&key, Some(end));
        count(probe_counter::ROW_CHANGES);
    }

    /// An accepted connection that predates zkconn, at its first transition: its seed moved
    /// into `INBOUND` (map value to map value).
    #[inline(always)]
    fn adopt_inbound<S: Sock>(sock: &S, skaddr: u64, port: u16) -> Option<*mut Inbound> {
        if !CONTROL
            .get(control::INBOUND_SEEDS_PENDING)
            .is_some_and(|&v| v != 0)
        {
            return None;
        }
        let mut tuple = towards(0);
        sock.addrs(&mut tuple).ok()?;
        tuple.sport = port;
        tuple.dport = sock.dport().ok()?;
        let seed = INBOUND_SEEDS.get_ptr(&tuple)?;
        // SAFETY: `seed` points at a live entry; the update copies it before the removal.
        let moved = INBOUND.insert(skaddr, unsafe { &*seed }, BPF_NOEXIST.into());
        let _ = INBOUND_SEEDS.remove(&tuple);
        count(probe_counter::ROW_CHANGES);
        match (moved, INBOUND.get_ptr_mut(skaddr)) {
            (Ok(()), Some(row)) => Some(row),
            _ => {
                count(probe_counter::OVERFLOW_INBOUND);
                None
            }
        }
    }

    /// What the server sent, received and left unread on socket `skaddr`, from `tcp_sock`
    /// at the offsets userspace took from the kernel's BTF; `None` without them or when a
    /// read fails.
    fn inbound_bytes(skaddr: u64, cfg: &RefusalConfig) -> Option<InboundBytes> {
        if cfg.has_server_side == 0 {
            return None;
        }
        let sk = skaddr as *const u8;
        let rcv_nxt: u32 = probed(sk, cfg.rcv_nxt_offset).ok()?;
        let copied: u32 = probed(sk, cfg.copied_seq_offset).ok()?;
        Some(InboundBytes {
            sent: probed(sk, cfg.bytes_sent_offset).ok()?,
            received: probed(sk, cfg.bytes_received_offset).ok()?,
            unread: rcv_nxt.wrapping_sub(copied),
        })
    }

    /// Whether an accepted connection reached a watched listener: any address on the port,
    /// or one of the endpoints listed for it.
    fn is_listener(tuple: &Tuple, flags: u8) -> bool {
        is_watched_endpoint(&tuple.saddr, tuple.sport, flags)
    }

    /// Adds one to `key`'s `opened` (`end` is `None`), or to its `closed` and to how it
    /// ended, creating the row first; atomically (see `bump`).
    fn bump_client(key: &ClientKey, end: Option<InboundEnd>) {
        let row = match CLIENTS.get_ptr_mut(key) {
            Some(row) => row,
            None => {
                let _ = CLIENTS.insert(key, &ZERO_CLIENT_COUNTERS, BPF_NOEXIST.into());
                match CLIENTS.get_ptr_mut(key) {
                    Some(row) => row,
                    None => {
                        count(probe_counter::OVERFLOW_CLIENTS);
                        return;
                    }
                }
            }
        };
        // SAFETY: `row` points at a live map value, only ever changed by atomic adds.
        unsafe {
            match end {
                None => atomic_add(&raw mut (*row).opened),
                Some(end) => {
                    atomic_add(&raw mut (*row).closed);
                    match end {
                        InboundEnd::Rejected => atomic_add(&raw mut (*row).rejected),
                        InboundEnd::Unanswered => atomic_add(&raw mut (*row).unanswered),
                        InboundEnd::Answered => {}
                    }
                }
            }
        }
    }

    static ZERO_CLIENT_COUNTERS: ClientCounters = ClientCounters {
        opened: 0,
        closed: 0,
        rejected: 0,
        unanswered: 0,
        _reserved: 0,
    };

    /// The whole thread group exited: forget its identity so a reused pid starts afresh.
    /// Its sockets close after this (exit_files runs later) and still count for it, because
    /// each connection keeps its owner key.
    #[inline(never)]
    fn on_group_exit(ctx: Ctx) {
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
            ctx,
            event_kind::OWNER_EXIT,
            pid_tgid as u32,
            &key,
            &owner,
            boot_ns(),
        );
    }

    /// Which of [`Counters`]' fields a transition increments.
    #[derive(Clone, Copy)]
    enum Field {
        Opened,
        Closed,
        Failed,
        CloseWait,
    }

    /// Adds one to `field` of `key`'s row (and to `rejected` too when `rejected`), creating
    /// the row first: the one map update of a counted transition. The adds are atomic
    /// (XADD): rows are shared by every CPU, and on kernels before 6.1 a `tp_btf` run in
    /// softirq can interrupt one in process context on the same CPU, which would lose a
    /// plain read-modify-write.
    ///
    /// When the table is full the process's counts are lost (counted as overflow), but its
    /// cgroup's and server's are not: they go to a row without the process in
    /// `STATS_SPILL` (`key.owner` is zeroed for it, in place: no second key on the stack).
    fn bump(key: &mut StatsKey, field: Field, rejected: bool) {
        let row = match row_of(&STATS, key) {
            Some(row) => row,
            None => {
                count(probe_counter::OVERFLOW_STATS);
                key.owner = OwnerKey::default();
                match row_of(&STATS_SPILL, key) {
                    Some(row) => row,
                    None => {
                        count(probe_counter::OVERFLOW_STATS);
                        return;
                    }
                }
            }
        };
        // SAFETY: `row` points at a live map value; the fields are only ever changed by
        // atomic adds.
        unsafe {
            let slot = match field {
                Field::Opened => &raw mut (*row).opened,
                Field::Closed => &raw mut (*row).closed,
                Field::Failed => &raw mut (*row).failed,
                Field::CloseWait => &raw mut (*row).close_wait,
            };
            atomic_add(slot);
            if rejected {
                atomic_add(&raw mut (*row).rejected);
            }
        }
    }

    /// `key`'s row in `map`, created (zeroed) if missing; `None` when the map is full.
    #[inline(always)]
    fn row_of(map: &HashMap<StatsKey, Counters>, key: &StatsKey) -> Option<*mut Counters> {
        if let Some(row) = map.get_ptr_mut(key) {
            return Some(row);
        }
        // NOEXIST: a concurrent insert on another CPU must not be clobbered (it wins; both
        // then add to its row). The zeros come from a global, not the stack.
        let _ = map.insert(key, &ZERO_COUNTERS, BPF_NOEXIST.into());
        map.get_ptr_mut(key)
    }

    /// `*slot += 1`, atomically. The result is unused, so LLVM emits XADD, which every
    /// kernel since 3.18 verifies (a used result would need BPF_FETCH, 5.12+).
    ///
    /// # Safety
    /// `slot` must point at a live, 8-byte-aligned u64 in a map value.
    #[inline(always)]
    unsafe fn atomic_add(slot: *mut u64) {
        // SAFETY: per the contract above.
        let _ = unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                slot, 1,
            )
        };
    }

    /// Where an event is written in place: a slot reserved in the ring buffer, or this
    /// CPU's scratch entry that a perf event array then copies out. Which one is fixed at
    /// load (`EVENT_OUTPUT`, see `perf_output`).
    ///
    /// A struct, not an enum of the two: both fields are always written, so LLVM never
    /// stores an undefined variant field from a register a helper call clobbered (which the
    /// verifier refuses).
    struct Slot<T> {
        p: *mut T,
        /// This CPU's nesting count, to give the scratch entry back (null for the ring).
        nest: *mut u32,
    }

    /// Whether events go through the perf event array: a read of a frozen global, which the
    /// verifier knows, so only one branch of every test on it is ever verified.
    #[inline(always)]
    fn perf_output() -> bool {
        // SAFETY: see `try_inet_sock_set_state`.
        unsafe { read_volatile(&EVENT_OUTPUT) == event_output::PERF_BUFFER }
    }

    impl<T> Slot<T> {
        /// A slot for one `T` (at most an `OwnerEvent`), or `None` (counted as lost) when the
        /// buffer is full.
        #[inline(always)]
        fn reserve() -> Option<Self> {
            let slot = if perf_output() {
                // A run that interrupts this one on the same CPU takes the next entry and
                // gives it back before this one resumes, so a count is enough.
                EVENT_NEST.get_ptr_mut(0).and_then(|nest| {
                    // SAFETY: this CPU's own counter; nested runs restore it (above).
                    let level = unsafe { *nest };
                    if level >= SCRATCH_LEVELS {
                        return None;
                    }
                    let p = EVENT_SCRATCH.get_ptr_mut(level)?;
                    // SAFETY: as above.
                    unsafe { *nest = level + 1 };
                    Some(Slot {
                        p: p.cast::<T>(),
                        nest,
                    })
                })
            } else {
                // SAFETY: the map pointer is `EVENTS`'s definition, which the loader
                // relocates; the size is a constant.
                let p = unsafe {
                    generated::bpf_ringbuf_reserve(
                        (&raw const EVENTS).cast_mut().cast::<c_void>(),
                        size_of::<T>() as u64,
                        0,
                    )
                };
                if p.is_null() {
                    None
                } else {
                    Some(Slot {
                        p: p.cast::<T>(),
                        nest: core::ptr::null_mut(),
                    })
                }
            };
            if slot.is_none() {
                count(probe_counter::LOST_EVENTS);
            }
            slot
        }

        /// Hands the event to userspace. `wake`: at once (a new process); otherwise the ring
        /// buffer wakes userspace only when a quarter of it waits (a perf event array wakes
        /// it for every event).
        #[inline(always)]
        fn submit(self, ctx: Ctx, wake: bool) {
            let events = (&raw const EVENTS).cast_mut().cast::<c_void>();
            if perf_output() {
                // SAFETY: `p` is this CPU's scratch entry, at least size_of::<T>() bytes.
                let r = unsafe {
                    generated::bpf_perf_event_output(
                        ctx,
                        events,
                        BPF_F_CURRENT_CPU,
                        self.p.cast::<c_void>(),
                        size_of::<T>() as u64,
                    )
                };
                if r < 0 {
                    count(probe_counter::LOST_EVENTS);
                }
                // SAFETY: this CPU's counter, raised by `reserve` for this entry.
                unsafe { *self.nest = (*self.nest).saturating_sub(1) };
            } else {
                // Only a new process needs userspace at once. Exits and refusals wait for
                // the next read of the ring buffer, at the latest the next once-a-second
                // sample, so a refusal storm costs no wake-up per refusal; each event
                // carries its own time. But a storm fills the buffer within that second
                // (256 KiB holds about 1,900 events): once a quarter of it waits, userspace
                // is woken to drain it, so events are not dropped.
                // SAFETY: queries of `EVENTS`, and the submit of the slot `reserve` took
                // from it.
                unsafe {
                    let flags = if wake
                        || generated::bpf_ringbuf_query(events, BPF_RB_AVAIL_DATA.into())
                            > generated::bpf_ringbuf_query(events, BPF_RB_RING_SIZE.into()) / 4
                    {
                        BPF_RB_FORCE_WAKEUP
                    } else {
                        BPF_RB_NO_WAKEUP
                    };
                    generated::bpf_ringbuf_submit(self.p.cast::<c_void>(), flags.into());
                }
            }
        }
    }

    /// A process event (new or exited), written in place: an `Event` built on the stack
    /// would cost its size in the caller's frame, and all frames share 512 bytes on kernels
    /// before 6.13.
    fn emit(ctx: Ctx, kind: u32, tid: u32, owner: &OwnerKey, info: &Owner, ts_ns: u64) {
        let Some(slot) = Slot::<Event>::reserve() else {
            return;
        };
        let e = slot.p;
        // SAFETY: `e` is the reserved, exclusively owned slot of one `Event`; every field is
        // written before submit, through raw pointers so no reference to uninit memory exists.
        unsafe {
            (&raw mut (*e).kind).write(kind);
            (&raw mut (*e).tid).write(tid);
            (&raw mut (*e).owner).write(*owner);
            (&raw mut (*e).info).write(*info);
            (&raw mut (*e).ts_ns).write(ts_ns);
            (&raw mut (*e).server).write(ServerKey::default());
            (&raw mut (*e).sport).write(0);
            (&raw mut (*e)._pad).write([0; 6]);
        }
        slot.submit(ctx, false);
    }

    /// A new owner, with the names of its cgroups, in place like `emit`. Userspace is woken
    /// at once (new processes are rare): it reads `/proc` while the process lives, and the
    /// names carry its container even when the process and its cgroup are gone by then.
    #[inline(never)]
    fn emit_owner_new(ctx: Ctx, tid: u32, owner: &OwnerKey, info: &Owner, ts_ns: u64) {
        let Some(slot) = Slot::<OwnerEvent>::reserve() else {
            return;
        };
        let e = slot.p;
        // SAFETY: `e` is the reserved, exclusively owned slot of one `OwnerEvent`; every
        // field userspace reads is written before submit (each name's first byte at least).
        unsafe {
            let ev = &raw mut (*e).event;
            (&raw mut (*ev).kind).write(event_kind::OWNER_NEW);
            (&raw mut (*ev).tid).write(tid);
            (&raw mut (*ev).owner).write(*owner);
            (&raw mut (*ev).info).write(*info);
            (&raw mut (*ev).ts_ns).write(ts_ns);
            // Volatile, so LLVM does not merge these into a call to memset: its frame
            // would make the deepest call chain (tracepoint, owner_of, this) one frame
            // deeper than the 512-byte stack of kernels before 6.13 allows.
            let server = (&raw mut (*ev).server).cast::<u64>();
            for i in 0..size_of::<ServerKey>() / 8 {
                server.add(i).write_volatile(0);
            }
            (&raw mut (*ev).sport).write_volatile(0);
            let pad = (&raw mut (*ev)._pad).cast::<u16>();
            for i in 0..3 {
                pad.add(i).write_volatile(0);
            }
            for names in [&raw mut (*e).v2, &raw mut (*e).cpu] {
                (&raw mut (*names).truncated).write_volatile(0);
                (&raw mut (*names)._pad).write_volatile(0);
                for level in 0..CGROUP_DEPTH {
                    (&raw mut (*names).names[level][0]).write(0);
                }
            }
        }
        // SAFETY: see `try_inet_sock_set_state`.
        let l = unsafe { read_volatile(&TASK_LAYOUT) };
        if l.valid == 1 {
            // SAFETY: a helper with no arguments; the pointer is only read through
            // bpf_probe_read_kernel.
            let task = unsafe { bpf_get_current_task() } as *const u8;
            if let Ok(css_set) = read_ptr(task, l.task_cgroups) {
                if let Ok(cgroup) = read_ptr(css_set, l.css_set_dfl_cgrp) {
                    // SAFETY: a field of the reserved slot, as above.
                    cgroup_names(cgroup, &l, unsafe { &raw mut (*e).v2 });
                }
                if l.has_cpu == 1
                    && let Ok(css) = read_ptr(css_set, l.css_set_cpu)
                    && let Ok(cgroup) = read_ptr(css, l.css_cgroup)
                {
                    // SAFETY: as above.
                    cgroup_names(cgroup, &l, unsafe { &raw mut (*e).cpu });
                }
            }
        }
        slot.submit(ctx, true);
    }

    /// The directory names of `cgroup` and its ancestors below the root, innermost first,
    /// into `out` (an event slot).
    #[inline(always)]
    fn cgroup_names(cgroup: *const u8, l: &TaskLayout, out: *mut CgroupNames) {
        let Ok(mut kn) = read_ptr(cgroup, l.cgroup_kn) else {
            return;
        };
        for level in 0..CGROUP_DEPTH {
            // The root's node has no parent and is not named.
            let Ok(parent) = read_ptr(kn, l.kn_parent) else {
                return;
            };
            let Ok(name) = read_ptr(kn, l.kn_name) else {
                return;
            };
            // SAFETY: the destination is one name of the reserved slot, CGROUP_NAME_LEN
            // bytes; the source is read by the helper, which checks it.
            unsafe {
                generated::bpf_probe_read_kernel_str(
                    (&raw mut (*out).names[level]).cast(),
                    CGROUP_NAME_LEN as u32,
                    name.cast(),
                );
            }
            kn = parent;
        }
        // Levels left above the ones kept: the path is only its tail.
        if read_ptr(kn, l.kn_parent).is_ok() {
            // SAFETY: a field of the reserved slot.
            unsafe { (&raw mut (*out).truncated).write(1) };
        }
    }

    /// The non-null pointer at `base + offset` in kernel memory.
    #[inline(always)]
    fn read_ptr(base: *const u8, offset: u32) -> Result<*const u8, i32> {
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error.
        let p: u64 =
            unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<u64>()) }
                .map_err(|e| e as i32)?;
        if p == 0 { Err(0) } else { Ok(p as *const u8) }
    }

    /// A refusal by `server`, in place like `emit`.
    fn emit_refused(ctx: Ctx, conn: &Conn, server: &ServerKey) {
        let Some(slot) = Slot::<Event>::reserve() else {
            return;
        };
        let e = slot.p;
        // SAFETY: as in `emit`.
        unsafe {
            (&raw mut (*e).kind).write(event_kind::REFUSED);
            (&raw mut (*e).tid).write(conn.tid);
            (&raw mut (*e).owner).write(conn.owner);
            (&raw mut (*e).info).write(Owner::default());
            (&raw mut (*e).info.cgroup_id).write(conn.cgroup_id);
            (&raw mut (*e).info.uid).write(conn.uid);
            (&raw mut (*e).ts_ns).write(conn.changed_ns);
            (&raw mut (*e).server).write(*server);
            (&raw mut (*e).sport).write(conn.tuple.sport);
            (&raw mut (*e)._pad).write([0; 6]);
        }
        slot.submit(ctx, false);
    }

    static ZERO_COUNTERS: Counters = Counters {
        opened: 0,
        closed: 0,
        failed: 0,
        close_wait: 0,
        rejected: 0,
    };

    fn count(index: u32) {
        if let Some(slot) = PROBE_COUNTERS.get_ptr_mut(index) {
            // SAFETY: this CPU's own slot; atomic because a nested run on this CPU may add
            // to it too (see `bump`).
            unsafe { atomic_add(slot) };
        }
    }

    fn boot_ns() -> u64 {
        // SAFETY: a helper with no arguments.
        unsafe { bpf_ktime_get_boot_ns() }
    }

    /// Makes both (zeroed) addresses `::ffff:0:0`; the IPv4 address goes in the last four
    /// bytes.
    fn v4_mapped(t: &mut Tuple) {
        for a in [&mut t.saddr, &mut t.daddr] {
            a[10] = 0xff;
            a[11] = 0xff;
        }
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
