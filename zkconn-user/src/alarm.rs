//! The alarm per (server, local IP): how close the host is to `maxClientCnxns`, and
//! whether the server is refusing it now.
//!
//! Owns: the thresholds, the state of one server row, and logging each raise and clear
//! once, when it happens. Must not: decide anything from one count alone that the row does
//! not show (the rule is the documented one, see docs/suspects.md).

use std::collections::HashMap;

use crate::{
    model::{ClientRow, ListenerRow, ServerRow},
    verdict::Alarm,
};
pub use crate::{
    threshold::{Range, parse_percent, parse_range},
    verdict::REFUSING_SECS,
};

/// Usage thresholds of the server alarm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub warn: Range,
    pub crit: Range,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: Range::at_or_over(80.0),
            crit: Range::at_or_over(95.0),
        }
    }
}

impl Thresholds {
    /// From `--warn` and `--crit`; plain ones: `warn` must not exceed `crit`.
    pub fn new(warn: Range, crit: Range) -> anyhow::Result<Self> {
        if let (Some(w), Some(c)) = (warn.plain(), crit.plain())
            && w > c
        {
            anyhow::bail!(
                "--warn {w} is above --crit {c}; the warning threshold must not exceed the critical one"
            );
        }
        Ok(Self { warn, crit })
    }

    /// Critical when the server refused within [`REFUSING_SECS`] or usage alerts `crit`;
    /// warning when it alerts `warn`. An unlimited server only alarms when it refuses.
    pub fn evaluate(&self, usage: Option<f64>, refusing: bool) -> Alarm {
        let pct = usage.map(|u| u * 100.0);
        if refusing || pct.is_some_and(|p| self.crit.alerts(p)) {
            Alarm::Critical
        } else if pct.is_some_and(|p| self.warn.alerts(p)) {
            Alarm::Warning
        } else {
            Alarm::Ok
        }
    }
}

/// Remembers each server's alarm and logs every change once.
#[derive(Debug, Default)]
pub struct AlarmLog {
    states: HashMap<(String, String), Alarm>,
    /// Per (listener, client host), on a server's host.
    clients: HashMap<(String, String), Alarm>,
    /// The client hosts last seen `growing`.
    growing: std::collections::HashSet<(String, String)>,
    /// Per listener, against its server's `maxCnxns`.
    listeners: HashMap<String, Alarm>,
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

impl AlarmLog {
    /// As [`AlarmLog::update`], for the client hosts of this host's listeners.
    pub fn update_clients(&mut self, clients: &[ClientRow]) -> Vec<String> {
        let mut lines = Vec::new();
        for row in clients {
            let key = (row.listener.clone(), row.client_ip.clone());
            let before = self.clients.get(&key).copied().unwrap_or_default();
            if before == row.alarm {
                continue;
            }
            self.clients.insert(key, row.alarm);
            let verb = if row.alarm > before {
                "raised"
            } else {
                "cleared to"
            };
            let limit = crate::verdict::usage_words(
                row.open,
                row.limit,
                row.limit_source.assumed(),
                row.usage,
            );
            let refused = match (row.refusing, row.listener_full) {
                (true, true) => format!(
                    ", refusing: {} refused in the window, its listener at the server's \
                     maxCnxns (not this host's limit)",
                    row.rejected_window
                ),
                (true, false) => {
                    format!(", refusing: {} refused in the window", row.rejected_window)
                }
                _ => String::new(),
            };
            let line = format!(
                "alarm {verb} {}: connections from client host {} on listener {}: {limit}{refused}",
                row.alarm.as_str(),
                row.client_ip,
                row.listener
            );
            tracing::warn!("{line}");
            lines.push(line);
        }
        for row in clients {
            let key = (row.listener.clone(), row.client_ip.clone());
            if !row.growing {
                self.growing.remove(&key);
            } else if self.growing.insert(key) {
                let line = format!(
                    "client host {} on listener {} keeps growing: {} open, {:+.1} a minute, never \
                     down over the window",
                    row.client_ip,
                    row.listener,
                    row.open,
                    row.growth_per_min.unwrap_or(0.0)
                );
                tracing::warn!("{line}");
                lines.push(line);
            }
        }
        let present = |l: &String, c: &String| {
            clients
                .iter()
                .any(|r| &r.listener == l && &r.client_ip == c)
        };
        self.clients.retain(|(l, c), _| present(l, c));
        self.growing.retain(|(l, c)| present(l, c));
        lines
    }
}

impl AlarmLog {
    /// As [`AlarmLog::update`], for this host's listeners against their server's cap.
    pub fn update_listeners(&mut self, listeners: &[ListenerRow]) -> Vec<String> {
        let mut lines = Vec::new();
        for l in listeners {
            let before = self.listeners.get(&l.listener).copied().unwrap_or_default();
            if before == l.alarm {
                continue;
            }
            self.listeners.insert(l.listener.clone(), l.alarm);
            let verb = if l.alarm > before {
                "raised"
            } else {
                "cleared to"
            };
            let line = format!(
                "alarm {verb} {}: listener {} holds {} of its server's maxCnxns {}",
                l.alarm.as_str(),
                l.listener,
                l.open,
                l.server.max_cnxns.unwrap_or(0)
            );
            tracing::warn!("{line}");
            lines.push(line);
        }
        self.listeners
            .retain(|name, _| listeners.iter().any(|l| &l.listener == name));
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

    /// A client host's alarm and its growth are each logged once, when they change.
    #[test]
    fn client_hosts_are_logged_once_per_change() {
        let mut log = AlarmLog::default();
        let mut row = ClientRow {
            listener: "0.0.0.0:2181".into(),
            client_ip: "10.0.0.7".into(),
            open: 10,
            limit: 10,
            limit_source: crate::limits::LimitSource::ZooCfg,
            usage: Some(1.0),
            refusing: true,
            rejected_window: 3,
            alarm: Alarm::Critical,
            ..ClientRow::default()
        };
        let first = log.update_clients(std::slice::from_ref(&row));
        assert_eq!(
            first,
            [
                "alarm raised CRITICAL: connections from client host 10.0.0.7 on listener \
              0.0.0.0:2181: 10 of 10 open (100%), limit reached, refusing: 3 refused in the \
              window"
            ]
        );
        assert!(log.update_clients(std::slice::from_ref(&row)).is_empty());
        row.growing = true;
        row.growth_per_min = Some(2.0);
        let grew = log.update_clients(std::slice::from_ref(&row));
        assert_eq!(grew.len(), 1);
        assert!(
            grew[0].contains("keeps growing: 10 open, +2.0 a minute"),
            "{grew:?}"
        );
        assert!(log.update_clients(std::slice::from_ref(&row)).is_empty());
        row.alarm = Alarm::Ok;
        row.refusing = false;
        let cleared = log.update_clients(std::slice::from_ref(&row));
        assert!(cleared[0].starts_with("alarm cleared to OK"), "{cleared:?}");
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
        assert!(Thresholds::new(Range::at_or_over(90.0), Range::at_or_over(80.0)).is_err());
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

    #[rstest::rstest]
    // A plain number: at or over it.
    #[case("80", &[(79.9, false), (80.0, true), (100.0, true)])]
    // The guidelines' forms.
    #[case("10:20", &[(9.0, true), (10.0, false), (20.0, false), (21.0, true)])]
    #[case("10:", &[(9.9, true), (10.0, false), (100.0, false)])]
    #[case("~:90", &[(0.0, false), (90.0, false), (90.5, true)])]
    #[case(":90", &[(0.0, false), (90.0, false), (90.5, true)])]
    #[case("@10:20", &[(9.0, false), (10.0, true), (20.0, true), (21.0, false)])]
    #[case("@~:50%", &[(0.0, true), (50.0, true), (51.0, false)])]
    fn ranges(#[case] text: &str, #[case] cases: &[(f64, bool)]) {
        let r = parse_range(text).unwrap();
        for &(usage, alerts) in cases {
            assert_eq!(r.alerts(usage), alerts, "{text} at {usage}");
        }
    }

    #[rstest::rstest]
    #[case("20:10", "starts above its end")]
    #[case("@80", "`@` needs a range")]
    #[case("0.5:", "ambiguous")]
    #[case("10:200", "out of range")]
    #[case("a:b", "not a percentage")]
    fn bad_ranges(#[case] text: &str, #[case] says: &str) {
        let e = parse_range(text).unwrap_err();
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn ranges_render_back() {
        for text in ["80", "10:20", "10:", "~:90", "@10:20", "@~:50", "95.5"] {
            assert_eq!(parse_range(text).unwrap().to_string(), text);
        }
        assert_eq!(parse_range(":90").unwrap().to_string(), "90");
        let unlimited_default = Thresholds::default();
        assert_eq!(
            unlimited_default.evaluate(None, false),
            Alarm::Ok,
            "an unlimited server alarms only when refused"
        );
        let t = Thresholds::new(parse_range("@0:10").unwrap(), parse_range("95").unwrap()).unwrap();
        assert_eq!(t.evaluate(Some(0.05), false), Alarm::Warning);
        assert_eq!(t.evaluate(Some(0.5), false), Alarm::Ok);
        assert_eq!(t.evaluate(Some(0.96), false), Alarm::Critical);
    }
}
