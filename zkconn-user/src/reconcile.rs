//! Drift repair: the kernel's rows (`CONNS` + `SEEDS`) against the kernel's socket table.
//!
//! Owns: deciding, from two consecutive comparisons, which rows describe sockets that are
//! gone (retired: deleted, the owner's cumulative counters untouched, because how the
//! connection ended is not known) and which live sockets towards a target no row describes
//! (adopted: handed to the kernel as seeds, as seeding does), and counting both.
//! Must not: act on one sighting. The maps are read before the table, so a socket that
//! opens or closes in between looks missing once; only what is missing on two consecutive
//! rounds is repaired.
//!
//! What it cannot know: sock_diag has no socket address, so the same 4-tuple in two network
//! namespaces cannot be told apart (such a tuple is never retired while one socket has it,
//! and only one of them can be adopted: the others count as `conflicts`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use zkconn_common::{Conn, Tuple, tcp_state};

use crate::{
    model::RepairHealth,
    probe::Probe,
    procfs::{CgroupPaths, Procfs, TcpSocket},
    seed::{self, SeedReport},
    sockdiag::{Tables, is_live_state},
    targets::Targets,
};

/// Where a kernel row lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `CONNS`, keyed by socket address.
    Conn(u64),
    /// `SEEDS`, keyed by its tuple.
    Seed,
    /// `INBOUND` (the server's side), keyed by socket address.
    Inbound(u64),
    /// `INBOUND_SEEDS`, keyed by its tuple.
    InboundSeed,
}

/// One kernel row as the comparison sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub slot: Slot,
    pub conn: Conn,
}

/// A row's identity across rounds: a newer connection at the same socket address (or a
/// seed replaced) is another row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RowId {
    slot: Slot,
    tuple: Tuple,
    opened_ns: u64,
}

impl Row {
    fn id(&self) -> RowId {
        RowId {
            slot: self.slot,
            tuple: self.conn.tuple,
            opened_ns: self.conn.opened_ns,
        }
    }
}

/// A live socket towards a target, from some namespace's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Live {
    pub tuple: Tuple,
    pub state: u8,
    pub inode: u64,
}

/// What was missing in the last round, to be repaired if it is still missing in the next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    retire: HashSet<RowId>,
    /// By tuple and inode, not state: a socket that changed state since is the same one.
    adopt: HashSet<(Tuple, u64)>,
}

impl Candidates {
    pub fn is_empty(&self) -> bool {
        self.retire.is_empty() && self.adopt.is_empty()
    }
}

/// What one comparison decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rows whose socket was missing now and in the previous round.
    pub retire: Vec<Row>,
    /// Sockets no row described now and in the previous round (one per tuple).
    pub adopt: Vec<Live>,
    /// Sockets that would be adopted but share their tuple with another one (two
    /// namespaces): the kernel's seed key holds one.
    pub conflicts: u64,
    /// What is missing now, for the next round.
    pub candidates: Candidates,
}

/// The (local address, server) of a row or socket: what a connect seen by a state
/// tracepoint is known by until it leaves SYN_SENT (its source port is 0 until then).
fn connecting_key(t: &Tuple) -> Tuple {
    Tuple { sport: 0, ..*t }
}

/// Compares the kernel's rows with the live sockets of every namespace. Pure.
///
/// A row with a full tuple is there when a socket has that tuple (any number of them: the
/// same tuple in two namespaces is one row's or two's, which cannot be told). A row of a
/// connect still without its port stands for one SYN_SENT socket with the same addresses
/// and server port. Whatever is missing is a candidate; it is repaired when it was already
/// a candidate in `previous`.
pub fn plan(rows: &[Row], table: &[Live], previous: &Candidates) -> Plan {
    let mut plan = Plan::default();
    let full: HashSet<Tuple> = rows
        .iter()
        .filter(|r| r.conn.tuple.sport != 0)
        .map(|r| r.conn.tuple)
        .collect();
    let present: HashSet<Tuple> = table.iter().map(|s| s.tuple).collect();
    // Connecting sockets not claimed by a full row, per (local address, server).
    let mut connecting: HashMap<Tuple, Vec<&Live>> = HashMap::new();
    for s in table {
        if s.state == tcp_state::SYN_SENT && !full.contains(&s.tuple) {
            connecting
                .entry(connecting_key(&s.tuple))
                .or_default()
                .push(s);
        }
    }
    // Claimed lowest inode first, whatever order the tables came in: the same socket
    // stays unclaimed from one round to the next.
    for waiting in connecting.values_mut() {
        waiting.sort_unstable_by_key(|s| std::cmp::Reverse(s.inode));
    }
    let mut claimed: HashSet<Live> = HashSet::new();
    for row in rows {
        let there = if row.conn.tuple.sport != 0 {
            present.contains(&row.conn.tuple)
        } else {
            match connecting.get_mut(&connecting_key(&row.conn.tuple)) {
                Some(waiting) => waiting.pop().map(|s| claimed.insert(*s)).is_some(),
                None => false,
            }
        };
        if !there {
            plan.candidates.retire.insert(row.id());
            if previous.retire.contains(&row.id()) {
                plan.retire.push(*row);
            }
        }
    }
    let mut adopting: BTreeMap<Tuple, Vec<Live>> = BTreeMap::new();
    for s in table {
        if full.contains(&s.tuple) || claimed.contains(s) {
            continue;
        }
        // Inode 0: no process holds the socket. It is the time-wait remainder of a closed
        // connection the table still lists as FIN_WAIT2 (its close was already counted),
        // and there is no owner to adopt it for.
        if s.inode == 0 {
            continue;
        }
        plan.candidates.adopt.insert((s.tuple, s.inode));
        if previous.adopt.contains(&(s.tuple, s.inode)) {
            adopting.entry(s.tuple).or_default().push(*s);
        }
    }
    for (_, mut same) in adopting {
        same.sort_unstable_by_key(|s| s.inode);
        plan.conflicts += same.len().saturating_sub(1) as u64;
        plan.adopt.extend(same.first());
    }
    plan
}

/// What drift repair did so far, for `probe.repaired`.
#[derive(Clone, Debug, Default)]
pub struct Repaired {
    pub retired: u64,
    pub adopted: u64,
    pub inbound_retired: u64,
    pub inbound_adopted: u64,
    /// Sockets that could not be adopted because their tuple is in two namespaces.
    pub conflicts: u64,
    /// When the last complete round ended.
    pub last: Option<Instant>,
}

/// One round's outcome, for the source's counters and log.
#[derive(Debug, Default)]
pub struct Round {
    /// Why the round decided nothing (a map or a namespace's table unreadable).
    pub error: Option<anyhow::Error>,
    pub retired: u64,
    pub adopted: u64,
    pub inbound_retired: u64,
    pub inbound_adopted: u64,
    pub unreadable: u64,
    pub ownerless: u64,
    pub sockets: usize,
    pub rows: usize,
    pub took: Duration,
    /// The listening sockets the round's scan found, when it read every namespace.
    pub listeners: Option<Vec<crate::sockdiag::Listening>>,
}

/// A long round may take at most this share of the time between rounds: where the tables
/// are so large that a round takes [`LONG_ROUND`] or more (about 0.5 s at 100,000
/// connections here), the next round waits 400 times as long as this one took, so such
/// repair never costs more than a quarter of a percent of a core. Shorter rounds keep
/// `--reconcile-interval` as given.
const REPAIR_SHARE: u32 = 400;

/// A round this long is spaced by [`REPAIR_SHARE`].
const LONG_ROUND: Duration = Duration::from_millis(100);

/// The time from a round that took `took` to the next: `interval`, or, for a long round,
/// [`REPAIR_SHARE`] times `took` where that is longer.
fn spacing(interval: Duration, took: Duration) -> Duration {
    if took < LONG_ROUND {
        interval
    } else {
        interval.max(took * REPAIR_SHARE)
    }
}

/// Periodic reconciliation, every `interval` (or longer, see [`REPAIR_SHARE`]).
pub struct Reconciler {
    interval: Option<Duration>,
    /// The time between the last round and the next.
    spacing: Duration,
    due: Instant,
    candidates: Candidates,
    /// The server's side's, compared on their own.
    inbound_candidates: Candidates,
    pub repaired: Repaired,
}

impl Reconciler {
    /// `interval` zero disables it.
    pub fn new(interval: Duration) -> Self {
        Reconciler {
            interval: (!interval.is_zero()).then_some(interval),
            spacing: interval,
            due: Instant::now() + interval,
            candidates: Candidates::default(),
            inbound_candidates: Candidates::default(),
            repaired: Repaired::default(),
        }
    }

    /// What it did so far, for the snapshot.
    pub fn health(&self) -> RepairHealth {
        RepairHealth {
            retired: self.repaired.retired,
            adopted: self.repaired.adopted,
            conflicts: self.repaired.conflicts,
            inbound_retired: self.repaired.inbound_retired,
            inbound_adopted: self.repaired.inbound_adopted,
            interval_secs: self.interval.map_or(0.0, |i| i.as_secs_f64()),
            spacing_secs: self.interval.map_or(0.0, |_| self.spacing.as_secs_f64()),
            last_secs_ago: self.repaired.last.map(|t| t.elapsed().as_secs_f64()),
        }
    }

    /// Whether a round is due now.
    pub fn due(&self) -> bool {
        self.interval.is_some() && Instant::now() >= self.due
    }

    /// One round: reads the kernel's rows, then every namespace's table, compares, and
    /// repairs what was missing last round too. A round that cannot read everything decides
    /// nothing (and forgets the candidates: absence is not evidence then).
    pub fn run(
        &mut self,
        probe: &mut Probe,
        tables: &mut Tables,
        procfs: &Procfs,
        cgroups: &CgroupPaths,
        targets: &Targets,
    ) -> Round {
        let started = Instant::now();
        let mut round = Round::default();
        let result = self.compare_and_repair(probe, tables, procfs, cgroups, targets, &mut round);
        match result {
            Ok(()) => self.repaired.last = Some(Instant::now()),
            Err(e) => {
                self.candidates = Candidates::default();
                self.inbound_candidates = Candidates::default();
                round.error = Some(e);
            }
        }
        round.took = started.elapsed();
        if let Some(interval) = self.interval {
            self.spacing = spacing(interval, round.took);
            self.due = started + self.spacing;
        }
        round
    }

    fn compare_and_repair(
        &mut self,
        probe: &mut Probe,
        tables: &mut Tables,
        procfs: &Procfs,
        cgroups: &CgroupPaths,
        targets: &Targets,
        round: &mut Round,
    ) -> anyhow::Result<()> {
        // The maps first, then the tables: a socket that changes in between is missing
        // from this comparison only.
        let tracked = probe.tracked()?;
        let rows: Vec<Row> = tracked
            .conns
            .iter()
            .map(|(skaddr, conn)| Row {
                slot: Slot::Conn(*skaddr),
                conn: *conn,
            })
            .chain(tracked.seeds.iter().map(|conn| Row {
                slot: Slot::Seed,
                conn: *conn,
            }))
            .collect();
        let inbound = probe.inbound();
        let scan = tables.scan_both(
            procfs,
            &|s| is_live_state(s.state) && targets.matches(s.remote),
            &|s| inbound && seed::is_followed_accepted(targets, s),
        );
        round.unreadable += scan.unreadable;
        if !scan.incomplete {
            round.listeners = Some(scan.listeners.clone());
        }
        if scan.incomplete {
            anyhow::bail!(
                "a network namespace's socket table could not be read ({} of its readers \
                 failed); nothing repaired this round",
                scan.unreadable
            );
        }
        let sockets: Vec<&TcpSocket> = scan.sockets.iter().map(|(_, s)| s).collect();
        let table: Vec<Live> = sockets
            .iter()
            .map(|s| Live {
                tuple: seed::tuple_of(s),
                state: s.state,
                inode: s.inode,
            })
            .collect();
        round.sockets = table.len();
        round.rows = rows.len();
        let plan = plan(&rows, &table, &self.candidates);
        self.candidates = plan.candidates;
        self.repaired.conflicts += plan.conflicts;

        for row in &plan.retire {
            let gone = match row.slot {
                Slot::Conn(skaddr) => probe.remove_conn(skaddr, &row.conn)?,
                Slot::Seed => probe.remove_seed(&row.conn.tuple)?,
                // Compared on their own, in `repair_inbound`.
                Slot::Inbound(_) | Slot::InboundSeed => false,
            };
            if gone {
                round.retired += 1;
                tracing::info!(
                    "drift repair: retired a row of {} whose socket is gone",
                    describe(&row.conn.tuple)
                );
            }
        }
        if !plan.adopt.is_empty() {
            let wanted: Vec<&TcpSocket> = plan
                .adopt
                .iter()
                .filter_map(|live| sockets.iter().find(|s| s.inode == live.inode).copied())
                .collect();
            let mut report = SeedReport::default();
            let inserted = seed::insert_seeds(probe, procfs, cgroups, &wanted, None, &mut report)
                .context("adopting untracked connections failed")?;
            round.adopted += inserted.len() as u64;
            round.ownerless += report.ownerless;
            round.unreadable += report.unreadable;
            for tuple in inserted.keys() {
                tracing::info!(
                    "drift repair: adopted {} (live, tracked by no row)",
                    describe(tuple)
                );
            }
        }
        if inbound {
            self.repair_inbound(probe, &tracked, &scan.accepted, round)?;
        }
        self.repaired.retired += round.retired;
        self.repaired.adopted += round.adopted;
        self.repaired.inbound_retired += round.inbound_retired;
        self.repaired.inbound_adopted += round.inbound_adopted;
        Ok(())
    }

    /// The server's side: the kernel's accepted-connection rows against the accepted
    /// connections of the same scan, by the same two-round rule.
    fn repair_inbound(
        &mut self,
        probe: &mut Probe,
        tracked: &crate::probe::TrackedRows,
        accepted: &[(u64, TcpSocket)],
        round: &mut Round,
    ) -> anyhow::Result<()> {
        // As connection rows: the handshake time stands for the connect time.
        let as_row = |slot, r: &zkconn_common::Inbound| Row {
            slot,
            conn: Conn {
                tuple: r.tuple,
                opened_ns: r.established_ns,
                ..Conn::default()
            },
        };
        let rows: Vec<Row> = tracked
            .inbound
            .iter()
            .map(|(skaddr, r)| as_row(Slot::Inbound(*skaddr), r))
            .chain(
                tracked
                    .inbound_seeds
                    .iter()
                    .map(|r| as_row(Slot::InboundSeed, r)),
            )
            .collect();
        let table: Vec<Live> = accepted
            .iter()
            .map(|(_, s)| Live {
                tuple: seed::tuple_of(s),
                state: s.state,
                inode: s.inode,
            })
            .collect();
        let plan = plan(&rows, &table, &self.inbound_candidates);
        self.inbound_candidates = plan.candidates;
        self.repaired.conflicts += plan.conflicts;
        for row in &plan.retire {
            let gone = match row.slot {
                Slot::Inbound(skaddr) => match tracked.inbound.iter().find(|(k, _)| *k == skaddr) {
                    Some((_, expected)) => probe.remove_inbound(skaddr, expected)?,
                    None => false,
                },
                _ => probe.remove_inbound_seed(&row.conn.tuple)?,
            };
            if gone {
                round.inbound_retired += 1;
                tracing::info!(
                    "drift repair: retired an accepted connection {} whose socket is gone",
                    describe(&row.conn.tuple)
                );
            }
        }
        if !plan.adopt.is_empty() {
            let wanted: Vec<TcpSocket> = plan
                .adopt
                .iter()
                .filter_map(|live| {
                    accepted
                        .iter()
                        .find(|(_, s)| s.inode == live.inode && seed::tuple_of(s) == live.tuple)
                        .map(|(_, s)| *s)
                })
                .collect();
            let mut report = SeedReport::default();
            let inserted = seed::insert_inbound_seeds(probe, &wanted, &mut report)
                .context("adopting untracked accepted connections failed")?;
            round.inbound_adopted += inserted.len() as u64;
            for tuple in &inserted {
                tracing::info!(
                    "drift repair: adopted the accepted connection {} (live, tracked by no row)",
                    describe(tuple)
                );
            }
        }
        Ok(())
    }
}

fn describe(t: &Tuple) -> String {
    use crate::targets::ip_from_bytes;
    format!(
        "{} -> {}",
        std::net::SocketAddr::new(ip_from_bytes(t.saddr), t.sport),
        std::net::SocketAddr::new(ip_from_bytes(t.daddr), t.dport)
    )
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[test]
    fn a_long_round_spaces_the_next_so_repair_stays_under_a_quarter_of_a_percent() {
        let ten = Duration::from_secs(10);
        assert_eq!(spacing(ten, Duration::from_millis(20)), ten);
        assert_eq!(
            spacing(ten, Duration::from_millis(500)),
            Duration::from_secs(200)
        );
        // A short round keeps the interval asked for, however short.
        let one = Duration::from_secs(1);
        assert_eq!(spacing(one, Duration::from_millis(12)), one);
        assert_eq!(spacing(one, Duration::from_millis(99)), one);
        assert_eq!(
            spacing(one, Duration::from_millis(100)),
            Duration::from_secs(40)
        );
    }
    use crate::targets::ip_to_bytes;

    fn tuple(sport: u16) -> Tuple {
        Tuple {
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            daddr: ip_to_bytes("127.0.0.9".parse().unwrap()),
            sport,
            dport: 2181,
            _pad: 0,
        }
    }

    /// A `CONNS` row at socket address `sk` for source port `sport` (0: connect seen, port
    /// not yet known).
    fn conn(sk: u64, sport: u16) -> Row {
        Row {
            slot: Slot::Conn(sk),
            conn: Conn {
                tuple: tuple(sport),
                opened_ns: sk,
                state: if sport == 0 {
                    tcp_state::SYN_SENT
                } else {
                    tcp_state::ESTABLISHED
                },
                ..Conn::default()
            },
        }
    }

    fn seed_row(sport: u16) -> Row {
        Row {
            slot: Slot::Seed,
            conn: Conn {
                tuple: tuple(sport),
                state: tcp_state::ESTABLISHED,
                ..Conn::default()
            },
        }
    }

    fn live(sport: u16, state: u8, inode: u64) -> Live {
        Live {
            tuple: tuple(sport),
            state,
            inode,
        }
    }

    const EST: u8 = tcp_state::ESTABLISHED;
    const SYN: u8 = tcp_state::SYN_SENT;

    /// Two rounds over the same inputs; what the second one repairs.
    fn twice(rows: &[Row], table: &[Live]) -> Plan {
        let first = plan(rows, table, &Candidates::default());
        assert!(
            first.retire.is_empty() && first.adopt.is_empty(),
            "{first:?}"
        );
        plan(rows, table, &first.candidates)
    }

    #[rstest]
    // In agreement: nothing to do.
    #[case(&[conn(1, 40000)], &[live(40000, EST, 7)], &[], &[])]
    #[case(&[seed_row(40000)], &[live(40000, EST, 7)], &[], &[])]
    // A close the kernel missed: the row goes.
    #[case(&[conn(1, 40000)], &[], &[conn(1, 40000)], &[])]
    #[case(&[seed_row(40000)], &[], &[seed_row(40000)], &[])]
    // A connect the kernel missed: the socket is adopted.
    #[case(&[], &[live(40000, EST, 7)], &[], &[live(40000, EST, 7)])]
    // A connect still without its port stands for one SYN_SENT socket to the same server...
    #[case(&[conn(1, 0)], &[live(40000, SYN, 7)], &[], &[])]
    // ... not for two (the second is adopted) ...
    #[case(&[conn(1, 0)], &[live(40001, SYN, 8), live(40000, SYN, 7)], &[], &[live(40001, SYN, 8)])]
    // ... and not for an established one (its ESTABLISHED was missed: both repaired).
    #[case(&[conn(1, 0)], &[live(40000, EST, 7)], &[conn(1, 0)], &[live(40000, EST, 7)])]
    // Two rows for one tuple (two namespaces, or one stale): neither is retired while the
    // tuple is live.
    #[case(&[conn(1, 40000), conn(2, 40000)], &[live(40000, EST, 7)], &[], &[])]
    // A socket no process holds (inode 0: a closed connection's time-wait remainder listed
    // as FIN_WAIT2) is never adopted.
    #[case(&[], &[live(40000, tcp_state::FIN_WAIT2, 0)], &[], &[])]
    fn the_second_round_repairs_what_is_still_missing(
        #[case] rows: &[Row],
        #[case] table: &[Live],
        #[case] retire: &[Row],
        #[case] adopt: &[Live],
    ) {
        let got = twice(rows, table);
        assert_eq!(got.retire, retire);
        assert_eq!(got.adopt, adopt);
        assert_eq!(got.conflicts, 0);
    }

    #[rstest]
    // Opened between the map read and the dump: missing once, tracked the next time.
    #[case(&[], &[live(40000, EST, 7)], &[conn(1, 40000)], &[live(40000, EST, 7)])]
    // Closed between the map read and the dump: gone from both the next time.
    #[case(&[conn(1, 40000)], &[], &[], &[])]
    // Established between them: the port-less row is now a full one, another identity.
    #[case(&[conn(1, 0)], &[live(40000, EST, 7)], &[conn(1, 40000)], &[live(40000, EST, 7)])]
    // Same tuple, another socket (inode) the next time: a new candidate, not repaired yet.
    #[case(&[], &[live(40000, EST, 7)], &[], &[live(40000, EST, 8)])]
    // A newer connection at the same socket address: another row, not retired yet.
    #[case(&[conn(1, 40000)], &[], &[Row { conn: Conn { opened_ns: 99, ..conn(1, 40000).conn }, ..conn(1, 40000) }], &[])]
    fn one_sighting_is_never_repaired(
        #[case] rows1: &[Row],
        #[case] table1: &[Live],
        #[case] rows2: &[Row],
        #[case] table2: &[Live],
    ) {
        let first = plan(rows1, table1, &Candidates::default());
        let second = plan(rows2, table2, &first.candidates);
        assert!(second.retire.is_empty(), "{second:?}");
        assert!(second.adopt.is_empty(), "{second:?}");
    }

    #[test]
    fn a_socket_that_changed_state_between_rounds_is_adopted_as_it_is_now() {
        let first = plan(&[], &[live(40000, SYN, 7)], &Candidates::default());
        let second = plan(&[], &[live(40000, EST, 7)], &first.candidates);
        assert_eq!(second.adopt, [live(40000, EST, 7)]);
    }

    #[test]
    fn the_same_tuple_in_two_namespaces_is_adopted_once() {
        let table = [live(40000, EST, 8), live(40000, EST, 7)];
        let got = twice(&[], &table);
        assert_eq!(got.adopt, [live(40000, EST, 7)]);
        assert_eq!(got.conflicts, 1);
    }

    #[test]
    fn a_round_that_repaired_starts_afresh() {
        let first = plan(&[conn(1, 40000)], &[], &Candidates::default());
        let second = plan(&[conn(1, 40000)], &[], &first.candidates);
        assert_eq!(second.retire.len(), 1);
        // Retired: the row is gone from the next reading; nothing left to do.
        let third = plan(&[], &[], &second.candidates);
        assert!(third.retire.is_empty() && third.candidates.is_empty());
    }
}
