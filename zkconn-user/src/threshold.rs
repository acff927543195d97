//! A usage threshold, as `--warn` and `--crit` take it: a percent of the limit (at or over
//! it), or a range in the monitoring plugins' syntax.
//!
//! Owns: parsing, judging a usage against it, and writing it back. Must not: know about
//! servers or alarms (`alarm` does), so the document model can carry it.

/// A threshold on usage, in percent of the limit, in the monitoring plugins' range syntax
/// (<https://www.monitoring-plugins.org/doc/guidelines.html#THRESHOLDFORMAT>): `START:END`
/// alerts outside START..END (both included), `START:` below START, `~:END` above END,
/// `@START:END` inside. A plain `N` alerts **at or over** N (the guidelines' `0:N` would
/// let N itself pass; here `-c 100` is CRITICAL at the limit, as the alarm is everywhere).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// `None`: unbounded (`~`).
    start: Option<f64>,
    end: Option<f64>,
    inside: bool,
    /// A plain number: at or over `start`.
    plain: bool,
}

impl Range {
    /// At or over `percent`.
    pub const fn at_or_over(percent: f64) -> Self {
        Self {
            start: Some(percent),
            end: None,
            inside: false,
            plain: true,
        }
    }

    /// Whether `usage` (percent) alerts.
    pub fn alerts(&self, usage: f64) -> bool {
        if self.plain {
            return self.start.is_some_and(|n| usage >= n);
        }
        let within = self.start.is_none_or(|s| usage >= s) && self.end.is_none_or(|e| usage <= e);
        within == self.inside
    }

    /// The plain threshold, when this is one.
    pub fn plain(&self) -> Option<f64> {
        self.plain.then_some(self.start).flatten()
    }

    /// This range with every bound turned by `f` (percent into connections for the
    /// performance data), written in the range syntax.
    pub fn render(&self, f: impl Fn(f64) -> f64) -> String {
        // Three decimals at most (99.9 % of 3 is 2.997, not 3), without trailing zeros.
        let num = |v: f64| {
            let s = format!("{:.3}", f(v));
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        };
        if self.plain {
            return self.start.map(num).unwrap_or_default();
        }
        let start = match self.start {
            None => "~".to_owned(),
            Some(s) if s == 0.0 && self.end.is_some() && !self.inside => String::new(),
            Some(s) => num(s),
        };
        let end = self.end.map(num).unwrap_or_default();
        let at = if self.inside { "@" } else { "" };
        if start.is_empty() {
            format!("{at}{end}")
        } else {
            format!("{at}{start}:{end}")
        }
    }
}

impl serde::Serialize for Range {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        parse_range(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(|v| v))
    }
}

/// A threshold: `80`, `95.5%` (at or over that percent of the limit, 0 to 100), or a range
/// ([`Range`]) of percents.
pub fn parse_range(text: &str) -> Result<Range, String> {
    let trimmed = text.trim();
    let (inside, body) = match trimmed.strip_prefix('@') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let Some((start, end)) = body.split_once(':') else {
        if inside {
            return Err(format!(
                "{text:?}: `@` needs a range, START:END (alert inside it)"
            ));
        }
        return parse_percent(body).map(Range::at_or_over);
    };
    let start = match start.trim() {
        "~" => None,
        "" => Some(0.0),
        s => Some(parse_percent(s).map_err(|e| format!("{text:?}: {e}"))?),
    };
    let end = match end.trim() {
        "" => None,
        e => Some(parse_percent(e).map_err(|e| format!("{text:?}: {e}"))?),
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(format!(
            "{text:?}: the range starts above its end; write START:END with START <= END"
        ));
    }
    Ok(Range {
        start,
        end,
        inside,
        plain: false,
    })
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
