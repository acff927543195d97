//! The alarm per (server, local IP): how close the host is to `maxClientCnxns`, and
//! whether the server is refusing it now.
//!
//! Owns: the thresholds, the state of one server row, and logging each raise and clear
//! once, when it happens. Must not: decide anything from one count alone that the row does
//! not show (the rule is the documented one, see docs/suspects.md).

use std::collections::HashMap;

use crate::{model::ServerRow, verdict::Alarm};

/// A server counts as refusing for this long after its last refusal.
pub const REFUSING_SECS: f64 = 60.0;

/// Usage thresholds, as fractions of the limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub warn: f64,
    pub crit: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: 0.8,
            crit: 0.95,
        }
    }
}

impl Thresholds {
    /// From percentages; `warn` must not exceed `crit`.
    pub fn from_percent(warn: f64, crit: f64) -> anyhow::Result<Self> {
        if warn > crit {
            anyhow::bail!(
                "--warn {warn} is above --crit {crit}; the warning threshold must not exceed the critical one"
            );
        }
        Ok(Self {
            warn: warn / 100.0,
            crit: crit / 100.0,
        })
    }

    /// Critical when the server refused within [`REFUSING_SECS`] or usage reached `crit`;
    /// warning from `warn`. An unlimited server only alarms when it refuses.
    pub fn evaluate(&self, usage: Option<f64>, refusing: bool) -> Alarm {
        let usage = usage.unwrap_or(0.0);
        if refusing || usage >= self.crit {
            Alarm::Critical
        } else if usage >= self.warn {
            Alarm::Warning
        } else {
            Alarm::Ok
        }
    }
}

/// `80`, `95.5` (percent of the limit, 0 to 100).
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let t = trimmed.trim_end_matches('%');
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage; write a number from 0 to 100"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(format!(
            "{text:?} is out of range; write a number from 0 to 100"
        ));
    }
    // 0.8 is 0.8 % here, which is almost never what is meant: a fraction written out of
    // habit from other tools. Said, unless the % sign says it is meant.
    if v > 0.0 && v < 1.0 && t.len() == trimmed.len() {
        return Err(format!(
            "{text:?} is ambiguous: thresholds are percent of the limit; write {} for {} %, or \
             {text}% if you mean it",
            v * 100.0,
            v * 100.0
        ));
    }
    Ok(v)
}

/// Remembers each server's alarm and logs every change once.
#[derive(Debug, Default)]
pub struct AlarmLog {
    states: HashMap<(String, String), Alarm>,
}

impl AlarmLog {
    /// Updates from fresh rows; returns the transitions as log lines (also logged).
    pub fn update(&mut self, servers: &[ServerRow]) -> Vec<String> {
        let mut lines = Vec::new();
        for row in servers {
            let key = (row.server.clone(), row.local_ip.clone());
            let before = self.states.get(&key).copied().unwrap_or_default();
            if before == row.alarm {
                continue;
            }
            self.states.insert(key, row.alarm);
            let line = transition(row, before);
            tracing::warn!("{line}");
            lines.push(line);
        }
        // A server no row names any more has no connections and no counters: cleared.
        self.states
            .retain(|(s, l), _| servers.iter().any(|r| &r.server == s && &r.local_ip == l));
        lines
    }
}

fn transition(row: &ServerRow, before: Alarm) -> String {
    let limit = if row.limit == 0 {
        "unlimited".to_owned()
    } else {
        format!(
            "{} of {}{} ({:.0}%)",
            row.states.open,
            row.limit,
            if row.limit_source.assumed() {
                " (assumed)"
            } else {
                ""
            },
            row.usage.unwrap_or(0.0) * 100.0
        )
    };
    let verb = if row.alarm > before {
        "raised"
    } else {
        "cleared to"
    };
    let refusing = if row.refusing {
        format!(", refused {} so far", row.rejected)
    } else {
        String::new()
    };
    format!(
        "alarm {verb} {}: ZooKeeper connections from {} to {}: {limit}{refusing}",
        row.alarm.as_str(),
        row.local_ip,
        row.server
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(open: u64, limit: u32, refusing: bool) -> ServerRow {
        let mut r = ServerRow::for_test("127.0.0.2:2181", "127.0.0.1", open, limit);
        r.refusing = refusing;
        r.alarm = Thresholds::default().evaluate(r.usage, r.refusing);
        r
    }

    #[test]
    fn thresholds_and_refusals() {
        assert_eq!(row(47, 60, false).alarm, Alarm::Ok);
        assert_eq!(row(48, 60, false).alarm, Alarm::Warning);
        assert_eq!(row(57, 60, false).alarm, Alarm::Critical);
        assert_eq!(row(3, 60, true).alarm, Alarm::Critical);
        assert_eq!(row(5000, 0, false).alarm, Alarm::Ok, "unlimited");
        assert_eq!(row(0, 0, true).alarm, Alarm::Critical);
    }

    #[test]
    fn each_transition_is_logged_once() {
        let mut log = AlarmLog::default();
        assert!(log.update(&[row(10, 60, false)]).is_empty());
        let raised = log.update(&[row(50, 60, false)]);
        assert_eq!(
            raised,
            vec![
                "alarm raised WARNING: ZooKeeper connections from 127.0.0.1 to 127.0.0.2:2181: \
                 50 of 60 (83%)"
            ]
        );
        assert!(log.update(&[row(51, 60, false)]).is_empty(), "no repeat");
        let crit = log.update(&[row(58, 60, true)]);
        assert_eq!(crit.len(), 1);
        assert!(crit[0].starts_with("alarm raised CRITICAL"), "{crit:?}");
        let cleared = log.update(&[row(20, 60, false)]);
        assert_eq!(cleared.len(), 1);
        assert!(cleared[0].starts_with("alarm cleared to OK"), "{cleared:?}");
        assert!(log.update(&[row(20, 60, false)]).is_empty());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("80"), Ok(80.0));
        assert_eq!(parse_percent("95.5%"), Ok(95.5));
        assert!(parse_percent("120").is_err());
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("lots").is_err());
        assert!(Thresholds::from_percent(90.0, 80.0).is_err());
        // A fraction written out of habit is refused, unless the % sign says it is meant.
        let e = parse_percent("0.8").unwrap_err();
        assert!(
            e.contains("is ambiguous") && e.contains("write 80 for 80 %"),
            "{e}"
        );
        assert_eq!(parse_percent("0.8%"), Ok(0.8));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert_eq!(parse_percent("1"), Ok(1.0));
    }
}
