//! Trends over time and what makes an owner a leak suspect.
//!
//! Owns: the bounded history of one owner's counts (a step function, sampled each second,
//! kept only where it changes), the growth over a window, and the score that separates a
//! slow, sustained grower from a steady holder or a start-up burst (docs/suspects.md).
//! Pure: the caller supplies times and counts, so every rule is unit-tested on synthetic
//! series.

use std::collections::VecDeque;

use crate::verdict::Rates;

/// The window is cut into this many slices to tell sustained growth from a burst.
pub const SLICES: usize = 8;
/// Points kept per series; beyond it every other inner point is dropped (resolution
/// halves, the window stays covered).
const MAX_POINTS: usize = 256;

/// One owner's counts at time `t` (seconds since the source started). `opened`,
/// `closed` and `rejected` are cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub t: f64,
    pub open: u64,
    pub opened: u64,
    pub closed: u64,
    pub rejected: u64,
}

impl Sample {
    fn same_counts(&self, other: &Self) -> bool {
        (self.open, self.opened, self.closed, self.rejected)
            == (other.open, other.opened, other.closed, other.rejected)
    }
}

/// The counts of one owner over the last window: a step function, each point holding until
/// the next. The first point is the baseline (the counts when zkconn started, or zero just
/// before the owner first appeared).
#[derive(Clone, Debug)]
pub struct Series {
    points: VecDeque<Sample>,
    /// `open` of the first point, kept when the window moves on: what the owner held when
    /// zkconn first saw it.
    baseline: u64,
}

impl Series {
    pub fn new(first: Sample) -> Self {
        Self {
            points: VecDeque::from([first]),
            baseline: first.open,
        }
    }

    /// Connections held now beyond what the owner held when zkconn first saw it, however
    /// long ago: the growth that brought a budget to its limit, after the window forgot it.
    pub fn gained(&self) -> u64 {
        self.points
            .back()
            .map_or(0, |last| last.open.saturating_sub(self.baseline))
    }

    /// Records `s` (later than every point so far) if anything changed; forgets what lies
    /// before `s.t - window` except the one point that gives the value there.
    pub fn push(&mut self, s: Sample, window: f64) {
        let last = self.points.back().copied();
        if last.is_some_and(|l| s.t < l.t) {
            return;
        }
        if !last.is_some_and(|l| l.same_counts(&s)) {
            self.points.push_back(s);
        }
        while self.points.len() >= 2 && self.points[1].t <= s.t - window {
            self.points.pop_front();
        }
        if self.points.len() > MAX_POINTS {
            let last = self.points.len() - 1;
            let mut i = 0;
            self.points.retain(|_| {
                let keep = i == 0 || i == last || i % 2 == 0;
                i += 1;
                keep
            });
        }
    }

    /// Points stored (a steady owner keeps one).
    #[cfg(test)]
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// The counts in force at `t`; before the first point, the first point.
    pub fn at(&self, t: f64) -> Sample {
        let i = self.points.partition_point(|p| p.t <= t);
        self.points[i.saturating_sub(1)]
    }

    /// What changed over `[now - window, now]`.
    pub fn trend(&self, now: f64, window: f64) -> Trend {
        let window = window.max(0.0);
        let start = now - window;
        let a = self.at(start);
        let b = self.at(now);
        let mut slices = [0_i64; SLICES];
        let mut prev = a.open;
        for (i, slice) in slices.iter_mut().enumerate() {
            let edge = start + window * (i + 1) as f64 / SLICES as f64;
            let v = self.at(edge).open;
            *slice = v as i64 - prev as i64;
            prev = v;
        }
        let growth = b.open as i64 - a.open as i64;
        Trend {
            window_secs: window,
            growth,
            opened: b.opened.saturating_sub(a.opened),
            closed: b.closed.saturating_sub(a.closed),
            rejected: b.rejected.saturating_sub(a.rejected),
            sustained: sustained_growth(growth, &slices),
        }
    }
}

/// An owner's change over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Trend {
    /// The window actually covered: the configured one, or less just after start.
    pub window_secs: f64,
    /// Net change of open connections.
    pub growth: i64,
    pub opened: u64,
    pub closed: u64,
    pub rejected: u64,
    /// The part of `growth` that was spread over the window, not a burst (see
    /// [`sustained_growth`]).
    pub sustained: f64,
}

impl Trend {
    /// Its rates, as rows show them.
    pub fn rates(&self) -> Rates {
        Rates {
            growth_per_min: self.growth_per_min(),
            opened_per_min: self.opened_per_min(),
            closed_per_min: self.closed_per_min(),
        }
    }

    fn per_min(&self, n: f64) -> f64 {
        if self.window_secs < 1.0 {
            0.0
        } else {
            round2(n * 60.0 / self.window_secs)
        }
    }

    pub fn growth_per_min(&self) -> f64 {
        self.per_min(self.growth as f64)
    }

    pub fn opened_per_min(&self) -> f64 {
        self.per_min(self.opened as f64)
    }

    pub fn closed_per_min(&self) -> f64 {
        self.per_min(self.closed as f64)
    }

    /// Seconds until `headroom` is used up at the window's net growth rate; `None` unless
    /// the growth is sustained (at least one connection's worth, see [`sustained_growth`]):
    /// a burst says nothing about the future.
    pub fn time_to_limit(&self, headroom: Option<i64>) -> Option<f64> {
        let headroom = headroom?;
        if self.sustained < 1.0 || self.growth <= 0 || self.window_secs < 1.0 {
            return None;
        }
        if headroom <= 0 {
            return Some(0.0);
        }
        Some((headroom as f64 * self.window_secs / self.growth as f64).round())
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Net growth discounted by how much of it happened in the two busiest slices: growth
/// spread evenly over the window keeps its full size, a burst confined to one or two
/// slices (a daemon opening its pool at start) counts for nothing.
///
/// `spread = 1 - (two largest slice increases) / (sum of slice increases)` ranges from 0
/// (a burst) to `1 - 2/SLICES` (even growth); it is scaled so even growth gives 1.
pub fn sustained_growth(net: i64, slices: &[i64]) -> f64 {
    if net <= 0 || slices.len() < 3 {
        return 0.0;
    }
    let mut ups: Vec<u64> = slices.iter().map(|&d| d.max(0) as u64).collect();
    ups.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = ups.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let spread = 1.0 - (ups[0] + ups[1]) as f64 / total as f64;
    let even = 1.0 - 2.0 / slices.len() as f64;
    let net = net as f64;
    round2((net * spread / even).min(net))
}

/// What an owner holds of one budget (a server's connections from one local IP, as the
/// server sees it) that is at or near its limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holding {
    pub server: String,
    pub local_ip: String,
    pub open: u64,
    pub limit: u32,
    /// Of `open`, how many it gained since zkconn first saw it ([`Series::gained`]).
    pub gained: u64,
}

impl Holding {
    /// [`HOLD_POINTS`] for each whole budget held, as much again for what was gained.
    fn points(&self) -> f64 {
        if self.limit == 0 {
            return 0.0;
        }
        let limit = f64::from(self.limit);
        HOLD_POINTS * (self.open as f64 / limit + self.gained.min(self.open) as f64 / limit)
    }
}

/// The evidence against one owner, and its score.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub trend: Trend,
    /// CLOSE_WAIT sockets held longer than [`crate::verdict::CLOSE_WAIT_GRACE_SECS`].
    pub close_wait_held: u64,
    /// Its largest share of a budget at or near its limit.
    pub holding: Option<Holding>,
    /// Refusals in the window by server (from the kernel's refusal events), most first.
    pub refused_by: Vec<(String, u64)>,
}

/// Owners scoring at least this are listed as suspects.
pub const SUSPECT_MIN_SCORE: f64 = 2.0;
/// Points for holding a whole budget that is at or near its limit (and as many again when
/// all of it was gained since zkconn started): a quarter of a budget gained, or half of one
/// held from before, is enough to be listed.
pub const HOLD_POINTS: f64 = 4.0;

impl Evidence {
    /// Sustained growth + one point per held CLOSE_WAIT socket + what it holds of a
    /// budget at or near its limit. Being refused scores nothing: a refused owner is a
    /// victim of the holders.
    pub fn score(&self) -> f64 {
        let holding = self.holding.as_ref().map_or(0.0, Holding::points);
        round2(self.trend.sustained + self.close_wait_held as f64 + holding)
    }

    /// One sentence per finding, joined with "; ". Empty when nothing is wrong.
    pub fn reason(&self) -> String {
        let t = &self.trend;
        let mut parts = Vec::new();
        if let Some(h) = self.holding.as_ref().filter(|h| h.open > 0) {
            let gained = match h.gained.min(h.open) {
                0 => String::new(),
                g if g == h.open => ", all since zkconn started".to_owned(),
                g => format!(", {g} since zkconn started"),
            };
            parts.push(format!(
                "holds {} of {} at {} from {}{gained}",
                h.open, h.limit, h.server, h.local_ip
            ));
        }
        if t.sustained > 0.0 {
            let span = human_secs(t.window_secs);
            // Refusals are told apart below; "closed" here is what the owner closed.
            let closed = t.closed.saturating_sub(t.rejected);
            if closed == 0 {
                parts.push(format!("+{} in {span}, none closed", t.growth));
            } else {
                parts.push(format!(
                    "+{} in {span} (opened {}, closed {closed})",
                    t.growth, t.opened
                ));
            }
        }
        if self.close_wait_held > 0 {
            parts.push(format!(
                "{} in CLOSE_WAIT: server closed, app did not",
                self.close_wait_held
            ));
        }
        if t.rejected > 0 {
            parts.push(refusals(t.rejected, &self.refused_by));
        }
        parts.join("; ")
    }
}

/// `refused 5 times by 10.1.2.3:2181`, `refused once`.
pub fn refusals(rejected: u64, refused_by: &[(String, u64)]) -> String {
    let times = if rejected == 1 { "once" } else { "times" };
    let count = if rejected == 1 {
        String::new()
    } else {
        format!("{rejected} ")
    };
    let by = match refused_by {
        [] => String::new(),
        [(server, _)] => format!(" by {server}"),
        many => format!(
            " by {}",
            many.iter()
                .map(|(s, n)| format!("{s} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!("refused {count}{times}{by}")
}

/// A server's time to limit for people: `-` when not growing, `reached`, else a span.
/// `reached` at or over the limit (growing or not), `-` when not growing.
pub fn human_time_to_limit(secs: Option<f64>, headroom: Option<i64>) -> String {
    if headroom.is_some_and(|h| h <= 0) {
        return "reached".to_owned();
    }
    match secs {
        None => "-".to_owned(),
        Some(0.0) => "reached".to_owned(),
        Some(s) => human_secs(s),
    }
}

/// `45 s`, `10 min`, `2 h`.
pub fn human_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", (secs / 60.0).round() as u64)
    } else {
        format!("{} h", (secs / 3600.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, open: u64) -> Sample {
        Sample {
            t,
            open,
            ..Sample::default()
        }
    }

    /// A series sampled each second from `f(t)` for `secs` seconds.
    fn series(secs: u32, f: impl Fn(u32) -> (u64, u64, u64)) -> Series {
        let at = |t: u32| {
            let (open, opened, closed) = f(t);
            Sample {
                t: f64::from(t),
                open,
                opened,
                closed,
                rejected: 0,
            }
        };
        let mut s = Series::new(at(0));
        for t in 1..=secs {
            s.push(at(t), 600.0);
        }
        s
    }

    #[test]
    fn even_growth_keeps_its_size_and_a_burst_counts_nothing() {
        assert_eq!(sustained_growth(16, &[2; 8]), 16.0);
        assert_eq!(sustained_growth(30, &[0, 0, 30, 0, 0, 0, 0, 0]), 0.0);
        assert_eq!(sustained_growth(30, &[0, 0, 15, 15, 0, 0, 0, 0]), 0.0);
        // Growth in half the slices keeps two thirds.
        let half = sustained_growth(8, &[2, 0, 2, 0, 2, 0, 2, 0]);
        assert!((half - 5.33).abs() < 0.01, "{half}");
        assert_eq!(sustained_growth(0, &[1, -1, 1, -1, 1, -1, 1, -1]), 0.0);
        assert_eq!(sustained_growth(-4, &[0; 8]), 0.0);
    }

    #[test]
    fn a_slow_monotonic_leaker_is_sustained_growth() {
        // One more connection every 40 s for 10 min, never closed.
        let s = series(600, |t| (u64::from(t / 40), u64::from(t / 40), 0));
        let tr = s.trend(600.0, 600.0);
        assert_eq!((tr.growth, tr.opened, tr.closed), (15, 15, 0));
        assert!(tr.sustained >= 14.0, "{tr:?}");
        assert_eq!(tr.growth_per_min(), 1.5);
        let e = Evidence {
            trend: tr,
            ..Evidence::default()
        };
        assert!(e.score() >= SUSPECT_MIN_SCORE);
        assert_eq!(e.reason(), "+15 in 10 min, none closed");
    }

    #[test]
    fn a_leaker_of_one_connection_a_minute_is_listed_after_four_minutes() {
        // zkconn started at t = 0; the window is what it has observed (up to 10 min).
        let mut s = Series::new(sample(0.0, 0));
        let listed = (1..=900_u32).find(|&t| {
            let now = f64::from(t);
            let n = u64::from(t / 60);
            s.push(
                Sample {
                    t: now,
                    open: n,
                    opened: n,
                    ..Sample::default()
                },
                600.0,
            );
            let e = Evidence {
                trend: s.trend(now, now.min(600.0)),
                ..Evidence::default()
            };
            e.score() >= SUSPECT_MIN_SCORE
        });
        assert_eq!(listed, Some(240), "docs/suspects.md says four minutes");
    }

    #[test]
    fn a_steady_holder_with_churn_is_not_a_suspect() {
        // 40 connections, one replaced every 5 s: opens and closes, the count never moves
        // by more than one.
        let s = series(600, |t| {
            (
                40 - u64::from(t % 5 == 0),
                40 + u64::from(t / 5),
                u64::from(t / 5),
            )
        });
        let tr = s.trend(600.0, 600.0);
        // 39 at both ends of the window (t = 0 and t = 600 are both multiples of 5).
        assert_eq!((tr.growth, tr.sustained), (0, 0.0), "{tr:?}");
        assert_eq!((tr.opened, tr.closed), (120, 120));
        let e = Evidence {
            trend: tr,
            ..Evidence::default()
        };
        assert_eq!(e.score(), 0.0);
        assert_eq!(e.reason(), "");
    }

    #[test]
    fn a_pool_opened_at_start_is_a_burst_not_a_leak() {
        // Nothing, then 30 connections within 3 s, then flat for the rest of the window.
        let s = series(600, |t| {
            let n = u64::from(t.saturating_sub(100).min(3)) * 10;
            (n, n, 0)
        });
        let tr = s.trend(600.0, 600.0);
        assert_eq!(tr.growth, 30);
        assert_eq!(tr.sustained, 0.0);
        assert_eq!(tr.time_to_limit(Some(30)), None);
    }

    #[test]
    fn time_to_limit_follows_the_sustained_rate() {
        // +1 every 10 s over 100 s: 10 in 100 s; 20 of headroom take 200 s more.
        let s = series(100, |t| (u64::from(t / 10), u64::from(t / 10), 0));
        let tr = s.trend(100.0, 100.0);
        assert_eq!(tr.growth, 10);
        assert_eq!(tr.time_to_limit(Some(20)), Some(200.0));
        assert_eq!(tr.time_to_limit(Some(0)), Some(0.0));
        assert_eq!(tr.time_to_limit(None), None, "unlimited");
    }

    #[test]
    fn steady_state_has_no_time_to_limit() {
        let s = series(100, |_| (12, 0, 0));
        let tr = s.trend(100.0, 100.0);
        assert_eq!((tr.growth, tr.sustained), (0, 0.0));
        assert_eq!(tr.time_to_limit(Some(5)), None);
        assert_eq!(s.points(), 1, "an unchanging series keeps one point");
    }

    #[test]
    fn history_is_bounded_and_still_covers_the_window() {
        // Changes every second for an hour, window 10 min.
        let mut s = Series::new(sample(0.0, 0));
        for t in 1..=3600_u32 {
            s.push(sample(f64::from(t), u64::from(t)), 600.0);
        }
        assert!(s.points() <= MAX_POINTS);
        assert_eq!(s.at(3600.0).open, 3600);
        // The value at the window's start is still known to within the thinned resolution.
        let start = s.at(3000.0).open;
        assert!((2970..=3000).contains(&start), "{start}");
        let tr = s.trend(3600.0, 600.0);
        assert!((600..=630).contains(&tr.growth), "{tr:?}");
    }

    #[test]
    fn the_first_point_is_the_baseline() {
        let mut s = Series::new(sample(5.0, 0));
        s.push(sample(6.0, 3), 600.0);
        assert_eq!(s.at(0.0).open, 0);
        assert_eq!(s.at(5.5).open, 0);
        assert_eq!(s.at(6.0).open, 3);
        assert_eq!(s.at(100.0).open, 3);
        // A sample older than the last point is ignored.
        s.push(sample(5.5, 9), 600.0);
        assert_eq!(s.at(100.0).open, 3);
    }

    #[test]
    fn reasons_read_as_sentences() {
        let e = Evidence {
            trend: Trend {
                window_secs: 40.0,
                growth: 6,
                opened: 14,
                closed: 8,
                rejected: 5,
                sustained: 6.0,
            },
            close_wait_held: 37,
            holding: Some(Holding {
                server: "10.1.2.3:2181".into(),
                local_ip: "10.0.0.9".into(),
                open: 6,
                limit: 10,
                gained: 4,
            }),
            refused_by: vec![("10.1.2.3:2181".into(), 5)],
        };
        assert_eq!(
            e.reason(),
            "holds 6 of 10 at 10.1.2.3:2181 from 10.0.0.9, 4 since zkconn started; \
             +6 in 40 s (opened 14, closed 3); 37 in CLOSE_WAIT: server closed, app did not; \
             refused 5 times by 10.1.2.3:2181"
        );
        // Holding 6 of 10 is 2.4 points, 4 of them gained 1.6 more; refusals add nothing.
        assert_eq!(e.score(), 6.0 + 37.0 + 2.4 + 1.6);
        let victim = Evidence {
            trend: Trend {
                window_secs: 40.0,
                rejected: 1,
                ..Trend::default()
            },
            refused_by: vec![("a:2181".into(), 1), ("b:2181".into(), 1)],
            ..Evidence::default()
        };
        assert_eq!(victim.reason(), "refused once by a:2181 (1), b:2181 (1)");
        assert_eq!(victim.score(), 0.0, "a victim is no suspect");
        assert_eq!(Evidence::default().reason(), "");
        assert_eq!(Evidence::default().score(), 0.0);
    }

    /// Half a budget gained since zkconn started is enough to be listed; half a budget
    /// held from before is not, nor is any share of a budget without a limit.
    #[test]
    fn holding_a_budget_scores_by_share_and_by_what_was_gained() {
        let held = |open, limit, gained| {
            Evidence {
                holding: Some(Holding {
                    open,
                    limit,
                    gained,
                    ..Holding::default()
                }),
                ..Evidence::default()
            }
            .score()
        };
        assert_eq!(held(5, 10, 5), 4.0);
        assert!(held(5, 10, 5) >= SUSPECT_MIN_SCORE);
        assert_eq!(held(5, 10, 0), 2.0);
        assert_eq!(held(3, 8, 0), 1.5);
        assert!(held(3, 8, 0) < SUSPECT_MIN_SCORE);
        // Gained beyond what it holds there (it grew towards another server): capped.
        assert_eq!(held(2, 10, 9), 1.6);
        assert_eq!(held(40, 0, 40), 0.0);
    }

    #[test]
    fn spans_are_human() {
        assert_eq!(human_secs(40.2), "40 s");
        assert_eq!(human_secs(600.0), "10 min");
        assert_eq!(human_secs(7200.0), "2 h");
    }
}
