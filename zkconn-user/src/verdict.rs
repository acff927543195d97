//! The vocabulary of judgement: what the judges (`alarm`, `history`) say of the rows the
//! engine builds, as the document spells it.
//!
//! Owns: the types of alarms and rates (what a suspect is of is the model's
//! [`Level`](crate::model::Level)). Must not: judge anything, or depend
//! on any other module of zkconn (the document model and the judges both import it).

use serde::Serialize;

/// A server counts as refusing for this long after its last refusal (zkconn's own refused
/// question for its limit included).
pub const REFUSING_SECS: f64 = 60.0;

/// A CLOSE_WAIT socket older than this is held by an application that missed the close.
pub const CLOSE_WAIT_GRACE_SECS: f64 = 2.0;

/// A server row's alarm.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Alarm {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Alarm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
        }
    }
}

/// Rates over the trend window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Rates {
    /// Net change of open connections per minute.
    pub growth_per_min: f64,
    pub opened_per_min: f64,
    pub closed_per_min: f64,
}

/// A budget's use in words: `60 of 60 (assumed) open (100%), limit reached`, or
/// `5 open (unlimited)`. One wording for `check` and the alarm log, whichever side.
pub fn usage_words(open: u64, limit: u32, assumed: bool, usage: Option<f64>) -> String {
    let mut text = match usage {
        Some(u) => format!(
            "{open} of {limit}{} open ({:.0}%)",
            if assumed { " (assumed)" } else { "" },
            u * 100.0
        ),
        None => format!("{open} open (unlimited)"),
    };
    if limit > 0 && open >= u64::from(limit) {
        text.push_str(", limit reached");
    }
    text
}
