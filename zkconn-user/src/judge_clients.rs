//! The server's side judged: each client host's trend over the window, its refusals within
//! it and its alarm; each listener against its server's `maxCnxns`.
//!
//! Owns: what is remembered of each client host between readings to judge it. Must not:
//! build the rows (that is `model`) or log (that is `alarm`).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::{
    alarm::{REFUSING_SECS, Thresholds},
    limits,
    model::{ClientRow, ListenerRow},
    verdict::Alarm,
};

/// Net growth for a client host to be [`ClientRow::growing`].
pub const GROWING_BY: u64 = 3;

/// What the server's side remembers of each client host over the trend window, to judge
/// it: its open count and refusals at each reading.
#[derive(Debug, Default)]
pub struct ClientTrends {
    /// (time, open, rejected) per (listener, client IP), oldest first.
    samples: HashMap<HostKey, VecDeque<(f64, u64, u64)>>,
    /// When each host's refusals last went up.
    refused_at: HashMap<HostKey, (u64, f64)>,
}

/// (listener, client IP), as the rows name them.
type HostKey = (String, String);

impl ClientTrends {
    /// Records `rows` at `now` and fills in their trend, refusals and alarm.
    pub fn judge(&mut self, rows: &mut [ClientRow], now: f64, window: f64, t: &Thresholds) {
        let mut seen = HashSet::with_capacity(rows.len());
        for row in rows.iter_mut() {
            let key = (row.listener.clone(), row.client_ip.clone());
            let samples = self.samples.entry(key.clone()).or_default();
            // The last reading at or before the window's start stays, as its baseline.
            while samples.get(1).is_some_and(|(at, ..)| now - at >= window) {
                samples.pop_front();
            }
            // A host first seen within the window: its counters started within it, at 0.
            let baseline = match samples.front() {
                Some((at, _, rejected)) if now - at >= window => *rejected,
                _ => 0,
            };
            samples.push_back((now, row.open, row.rejected));
            row.rejected_window = row.rejected.saturating_sub(baseline);
            let last = self.refused_at.entry(key.clone()).or_insert((0, f64::MIN));
            if row.rejected > last.0 {
                *last = (row.rejected, now);
            }
            row.refusing = now - last.1 < REFUSING_SECS;
            if let (Some(first), Some(end)) = (samples.front(), samples.back()) {
                let span = end.0 - first.0;
                if span >= 60.0 {
                    row.growth_per_min = Some((end.1 as f64 - first.1 as f64) * 60.0 / span);
                }
                let never_fell = samples
                    .iter()
                    .zip(samples.iter().skip(1))
                    .all(|(a, b)| b.1 >= a.1);
                row.growing = never_fell && span >= 120.0 && end.1 >= first.1 + GROWING_BY;
            }
            row.alarm = t.evaluate(
                row.usage,
                row.refusing || row.headroom.is_some_and(|h| h <= 0),
            );
            seen.insert(key);
        }
        self.samples.retain(|k, _| seen.contains(k));
        self.refused_at.retain(|k, _| seen.contains(k));
    }
}

/// Judges each listener against its server's cap, and marks the client hosts of a full one.
pub fn judge_listeners(listeners: &mut [ListenerRow], clients: &mut [ClientRow], t: &Thresholds) {
    for l in listeners.iter_mut() {
        l.alarm = match l.server.max_cnxns {
            Some(cap) if cap > 0 => t.evaluate(
                limits::usage(l.open, cap),
                l.max_cnxns_headroom.is_some_and(|h| h <= 0),
            ),
            _ => Alarm::Ok,
        };
    }
    for c in clients.iter_mut() {
        c.listener_full = listeners
            .iter()
            .any(|l| l.listener == c.listener && l.max_cnxns_headroom.is_some_and(|h| h <= 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals count within the window and alarm for a minute; a host whose open count
    /// only grows for two minutes is `growing`, one that also fell is not.
    #[test]
    fn client_trends_window_refusals_and_tell_a_steady_climb() {
        let mut trends = ClientTrends::default();
        let t = Thresholds::default();
        let row = |ip: &str, open: u64, rejected: u64| ClientRow {
            listener: "0.0.0.0:2181".into(),
            client_ip: ip.into(),
            open,
            rejected,
            limit: 60,
            usage: limits::usage(open, 60),
            headroom: limits::headroom(open, 60),
            ..ClientRow::default()
        };
        let mut last = Vec::new();
        for (i, now) in [0.0, 60.0, 120.0, 180.0].into_iter().enumerate() {
            let i = i as u64;
            let mut rows = vec![
                row(
                    "10.0.0.1",
                    10 + 2 * i,
                    if i == 1 {
                        4
                    } else if i > 1 {
                        5
                    } else {
                        0
                    },
                ),
                row("10.0.0.2", [10, 12, 9, 16][i as usize], 0),
            ];
            trends.judge(&mut rows, now, 600.0, &t);
            last = rows;
        }
        let (a, b) = (&last[0], &last[1]);
        assert_eq!(
            (a.rejected_window, a.refusing),
            (5, false),
            "last refusal at 120 s"
        );
        assert_eq!(a.alarm, Alarm::Ok);
        assert_eq!(a.growth_per_min, Some(2.0));
        assert!(a.growing);
        assert!(!b.growing, "it fell once");
        // Refused now: critical for a minute, then not.
        let mut rows = vec![row("10.0.0.1", 16, 6)];
        trends.judge(&mut rows, 200.0, 600.0, &t);
        assert_eq!((rows[0].refusing, rows[0].alarm), (true, Alarm::Critical));
        let mut rows = vec![row("10.0.0.1", 16, 6)];
        trends.judge(&mut rows, 261.0, 600.0, &t);
        assert_eq!((rows[0].refusing, rows[0].alarm), (false, Alarm::Ok));
        // Past the window, the refusals before it are out of the count.
        let mut rows = vec![row("10.0.0.1", 16, 6)];
        trends.judge(&mut rows, 700.0, 600.0, &t);
        assert_eq!(rows[0].rejected_window, 2, "6 now, 4 at 60 s");
        let mut rows = vec![row("10.0.0.1", 16, 6)];
        trends.judge(&mut rows, 900.0, 600.0, &t);
        assert_eq!(rows[0].rejected_window, 0, "6 now, 6 at 261 s");
    }
}
