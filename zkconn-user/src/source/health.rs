//! What the source says of itself in `probe`: the hook, lost and overflowed events, seeds,
//! repair, NAT, capabilities, and what this run cannot see.
//!
//! Owns: turning the source's counters into [`SourceHealth`]. Must not: read anything.

use zkconn_common::probe_counter;

use super::{Feed, Source};
use crate::{
    model::{
        FallbackInUse, Kept, LostDetail, OverflowDetail, RepairHealth, SeedHealth,
        ServerSideHealth, SourceHealth,
    },
    probe::KernelState,
};

impl Source {
    /// What this run cannot see, one sentence each (`probe.limitations`).
    pub(super) fn limitations(&self) -> Vec<String> {
        let mut out = match &self.feed {
            Feed::Kernel { probe, .. } => probe.limitations.clone(),
            Feed::Poll(_, why) => why
                .iter()
                .cloned()
                .chain([crate::poll::LIMITATION.to_owned()])
                .collect(),
        };
        if let Feed::Kernel { probe, .. } = &self.feed
            && probe.inbound()
            && !probe.server_refusals
        {
            out.push(
                "on the server's side, refusals are not told from other closes (this kernel's \
                 BTF does not give tcp_sock's byte counts and sequence numbers): the clients \
                 rows count accepted and closed connections only"
                    .to_owned(),
            );
        }
        let hidden = self.tables.hidden();
        if hidden > 0 {
            out.push(format!(
                "the network namespace of {hidden} processes could not be read (another user's \
                 /proc/PID/ns/net needs CAP_SYS_PTRACE; a sandbox may hide its init): \
                 connections in a namespace only they are in are not seen by seeding, drift \
                 repair or the poll hook (the kernel hooks count their new connections)"
            ));
        }
        out
    }

    /// The source's own health, as of this reading.
    pub(super) fn health(&self, state: &KernelState, translated: u64) -> SourceHealth {
        let c = state.counters;
        // The kernel counts an event it could not write; a perf buffer also reports the
        // events it dropped, which are the same events where the helper returns the error
        // (4.18 does not): the larger of the two, never their sum.
        let perf_lost = match &self.feed {
            Feed::Kernel { events, .. } => events.lost(),
            Feed::Poll(..) => 0,
        };
        // Poll finds owners at every sample, not only at start.
        let ownerless = match &self.feed {
            Feed::Kernel { .. } => self.seeds.ownerless,
            Feed::Poll(poller, _) => poller.ownerless,
        };
        SourceHealth {
            hook: Some(self.hook()),
            refusal_detection: match &self.feed {
                Feed::Kernel { probe, .. } => Some(probe.refusal),
                Feed::Poll(..) => None,
            },
            events: match &self.feed {
                Feed::Kernel { events, .. } => Some(events.kind()),
                Feed::Poll(..) => None,
            },
            events_received: self.events_received,
            lost_detail: LostDetail {
                events: c[probe_counter::LOST_EVENTS as usize].max(perf_lost),
                recursion_misses: state.recursion_misses,
            },
            // The kernel's counts, plus what did not fit while seeding.
            overflow_detail: OverflowDetail {
                connections: c[probe_counter::OVERFLOW_CONNS as usize]
                    + self.seeds.overflow_connections,
                processes: c[probe_counter::OVERFLOW_OWNERS as usize]
                    + self.seeds.overflow_processes,
                counters: c[probe_counter::OVERFLOW_STATS as usize],
                server_side: c[probe_counter::OVERFLOW_INBOUND as usize]
                    + self.seeds.overflow_inbound,
                client_hosts: c[probe_counter::OVERFLOW_CLIENTS as usize],
            },
            server_side: match &self.feed {
                Feed::Kernel { probe, .. } => ServerSideHealth {
                    followed: probe.inbound(),
                    refusals_told: probe.inbound() && probe.server_refusals,
                    seeded: self.seeds.seeded_inbound,
                },
                Feed::Poll(..) => ServerSideHealth::default(),
            },
            seeds: SeedHealth {
                seeded: self.seeds.seeded,
                adopted: c[probe_counter::SEEDS_ADOPTED as usize],
                conflicts: self.seeds.conflicts,
                ownerless,
                ownerless_why: ownerless_why(ownerless, &self.kept),
            },
            repaired: match &self.feed {
                Feed::Kernel { .. } => self.reconciler.health(),
                // Every sample is a full reading: there is nothing to repair.
                Feed::Poll(..) => RepairHealth::default(),
            },
            nat: self.nat.health(translated),
            unreadable: self.unreadable + self.seeds.unreadable,
            capabilities: self.kept.clone(),
            fallbacks: match &self.feed {
                Feed::Kernel { probe, .. } => probe
                    .fallbacks
                    .iter()
                    .map(|f| FallbackInUse {
                        fallback: f.fallback.name(),
                        reason: f.reason,
                    })
                    .collect(),
                Feed::Poll(..) => Vec::new(),
            },
            limitations: self.limitations(),
            undeleted: (self.unforgotten.0.len() + self.unforgotten.1.len()) as u64,
        }
    }
}

/// Why connections that predate zkconn have no owner, for `probe.seeds.ownerless_why`.
fn ownerless_why(ownerless: u64, kept: &Kept) -> Option<String> {
    if ownerless == 0 {
        return None;
    }
    let missing: Vec<&str> = ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        .into_iter()
        .filter(|c| !kept.kept.iter().any(|k| k == c))
        .collect();
    Some(if missing.is_empty() {
        format!(
            "{ownerless} connections were held by no process whose /proc/PID/fd could be \
             read (their holder exited, or /proc entries were unreadable); they count per \
             server under \"unknown owner\""
        )
    } else {
        format!(
            "{ownerless} connections have no known owner: without {} zkconn cannot read \
             other users' /proc/PID/fd; they count per server under \"unknown owner\"",
            missing.join(" and ")
        )
    })
}
