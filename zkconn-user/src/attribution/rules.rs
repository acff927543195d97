//! Site rules (`--rules PATH`, TOML): classifications zkconn cannot know by itself.
//!
//! Owns: parsing and validating the rules file, with the line of every mistake, and matching
//! a process against the rules. Must not: read anything but the file it is given.
//!
//! ```toml
//! [[rule]]
//! name = "ingest"                         # optional; shown as the row's `rule`
//! main_class = "com.example.ingest.Main"  # match keys: all that are given must match
//! service = "Ingest pipeline"             # results: `service` and/or `kind`
//! ```

use std::{ops::Range, path::Path};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::Kind;

/// Everything a rule may look at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub main_class: Option<&'a str>,
    /// The redacted command line, arguments joined by single spaces.
    pub cmdline: &'a str,
    pub comm: &'a str,
    pub exe: Option<&'a str>,
    /// Every cgroup path of the process (v2 and each v1 hierarchy).
    pub cgroups: &'a [&'a str],
}

#[derive(Debug)]
pub struct Rule {
    pub name: Option<String>,
    main_class: Option<String>,
    cmdline: Option<Regex>,
    comm: Option<String>,
    exe: Option<String>,
    cgroup: Option<Regex>,
    pub kind: Option<Kind>,
    pub service: Option<String>,
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> bool {
        self.main_class
            .as_deref()
            .is_none_or(|m| s.main_class == Some(m))
            && self.cmdline.as_ref().is_none_or(|r| r.is_match(s.cmdline))
            && self.comm.as_deref().is_none_or(|c| s.comm == c)
            && self.exe.as_deref().is_none_or(|e| {
                s.exe.is_some_and(|x| {
                    x == e || (!e.contains('/') && Path::new(x).file_name().is_some_and(|n| n == e))
                })
            })
            && self
                .cgroup
                .as_ref()
                .is_none_or(|r| s.cgroups.iter().any(|p| r.is_match(p)))
    }
}

/// The site's rules, in file order.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    main_class: Option<String>,
    cmdline: Option<Spanned<String>>,
    comm: Option<String>,
    exe: Option<String>,
    cgroup: Option<Spanned<String>>,
    kind: Option<Kind>,
    service: Option<Spanned<String>>,
}

/// A mistake in the rules file, with its 1-based line.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RulesError {
    pub line: usize,
    pub message: String,
}

/// The one-line reason of a regex error (its `Display` draws the pattern with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim())
        .to_owned()
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text.get(..span.start)
        .map_or(1, |t| t.matches('\n').count() + 1)
}

/// The most rules a file may hold.
pub const MAX_RULES: usize = 1_000;

impl Rules {
    /// Reads and validates a rules file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = crate::config_file::read_config(path, 4 << 20)
            .map_err(|e| anyhow::anyhow!("cannot read the rules file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "the rules file {} is not valid, {e} (see docs/rules.md)",
                path.display()
            )
        })
    }

    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| RulesError {
            line: e.span().map_or(1, |s| line_of(text, &s)),
            message: e.message().trim_end().to_owned(),
        })?;
        // Every new process is matched against every rule, and each rule compiles up to
        // three regular expressions at start: a bound keeps both quick.
        if raw.rule.len() > MAX_RULES {
            return Err(RulesError {
                line: 1,
                message: format!(
                    "{} rules, and zkconn takes at most {MAX_RULES} (every new process is \
                     matched against each; merge rules with alternations in one regex)",
                    raw.rule.len()
                ),
            });
        }
        let rules = raw
            .rule
            .into_iter()
            .map(|spanned| {
                let line = line_of(text, &spanned.span());
                let r = spanned.into_inner();
                let at = |message: String| RulesError { line, message };
                let regex = |field: &str, v: Option<Spanned<String>>| {
                    v.map(|s| {
                        let line = line_of(text, &s.span());
                        Regex::new(s.get_ref()).map_err(|e| RulesError {
                            line,
                            message: format!(
                                "`{field}` = {:?} is not a valid regular expression: {}",
                                s.get_ref(),
                                regex_reason(&e)
                            ),
                        })
                    })
                    .transpose()
                };
                let rule = Rule {
                    name: r.name,
                    main_class: r.main_class,
                    cmdline: regex("cmdline", r.cmdline)?,
                    comm: r.comm,
                    exe: r.exe,
                    cgroup: regex("cgroup", r.cgroup)?,
                    kind: r.kind,
                    service: match r.service {
                        Some(s) if s.get_ref().trim().is_empty() => {
                            return Err(RulesError {
                                line: line_of(text, &s.span()),
                                message: "`service` is empty".into(),
                            });
                        }
                        s => s.map(Spanned::into_inner),
                    },
                };
                let matches_something = rule.main_class.is_some()
                    || rule.cmdline.is_some()
                    || rule.comm.is_some()
                    || rule.exe.is_some()
                    || rule.cgroup.is_some();
                if !matches_something {
                    return Err(at("the rule has no match key; give at least one of \
                                   main_class, cmdline, comm, exe, cgroup"
                        .into()));
                }
                if rule.kind.is_none() && rule.service.is_none() {
                    return Err(at(
                        "the rule sets nothing; give `kind`, `service` or both".into()
                    ));
                }
                Ok(rule)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// The first rule that matches, with its position in the file.
    pub fn find_indexed(&self, subject: &Subject<'_>) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(subject))
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn subject<'a>(cgroups: &'a [&'a str]) -> Subject<'a> {
        Subject {
            main_class: Some("com.example.ingest.Main"),
            cmdline: "java -Dapp=ingest -cp x com.example.ingest.Main --zk zk1:2181",
            comm: "java",
            exe: Some("/usr/lib/jvm/java-17/bin/java"),
            cgroups,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_all_keys_must_match() {
        let rules = Rules::parse(
            r#"
[[rule]]
name = "needs both"
comm = "java"
cgroup = '^/batch/'
service = "Batch"

[[rule]]
name = "ingest"
main_class = "com.example.ingest.Main"
exe = "java"
kind = "systemd"
service = "Ingest pipeline"

[[rule]]
name = "shadowed"
cmdline = 'ingest'
service = "never"
"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
        let r = rules.find_indexed(&subject(&["/"])).unwrap().1;
        assert_eq!(r.name.as_deref(), Some("ingest"));
        assert_eq!(r.kind, Some(Kind::Systemd));
        let r = rules.find_indexed(&subject(&["/", "/batch/x"])).unwrap().1;
        assert_eq!(r.name.as_deref(), Some("needs both"));
    }

    #[rstest]
    #[case("exe = \"/usr/lib/jvm/java-17/bin/java\"", true)]
    #[case("exe = \"java\"", true)]
    #[case("exe = \"/usr/bin/java\"", false)]
    #[case("comm = \"jav\"", false)]
    #[case("cmdline = '--zk\\s+zk1'", true)]
    #[case("main_class = \"com.example\"", false)]
    fn single_keys(#[case] key: &str, #[case] matches: bool) {
        let rules = Rules::parse(&format!("[[rule]]\n{key}\nservice = \"x\"\n")).unwrap();
        assert_eq!(rules.find_indexed(&subject(&["/"])).is_some(), matches);
    }

    #[rstest]
    #[case(
        "[[rule]]\ncomm = \"java\"\nservce = \"x\"\n",
        3,
        "unknown field `servce`"
    )]
    #[case(
        "[[rule]]\ncomm = \"java\"\nkind = \"vm\"\n",
        3,
        "unknown variant `vm`"
    )]
    #[case(
        "\n[[rule]]\ncmdline = '(unclosed'\nservice = \"x\"\n",
        3,
        "`cmdline` = \"(unclosed\" is not a valid regular expression: unclosed group"
    )]
    #[case("[[rule]]\nservice = \"x\"\n", 1, "no match key")]
    #[case("\n\n[[rule]]\ncomm = \"x\"\n", 3, "sets nothing")]
    #[case("[[rule]]\ncomm = \"x\"\nservice = \"  \"\n", 3, "`service` is empty")]
    #[case("[[rule]\n", 1, "")]
    #[case("[[rules]]\ncomm = \"x\"\n", 1, "unknown field `rules`")]
    #[case("[[rule]]\ncomm = 3\nservice = \"x\"\n", 2, "")]
    fn mistakes_name_the_line(#[case] text: &str, #[case] line: usize, #[case] what: &str) {
        let e = Rules::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(what), "{e}");
        assert!(!e.message.contains('\n'), "one line: {e}");
    }

    #[test]
    fn empty_file_is_no_rules() {
        assert_eq!(Rules::parse("# nothing yet\n").unwrap().len(), 0);
    }

    #[test]
    fn more_rules_than_the_bound_are_refused_before_compiling() {
        let rule = "[[rule]]\nname = \"r\"\ncmdline = \"x\"\nservice = \"S\"\n";
        assert!(Rules::parse(&rule.repeat(MAX_RULES)).is_ok());
        let e = Rules::parse(&rule.repeat(MAX_RULES + 1)).unwrap_err();
        assert!(
            e.message
                .starts_with("1001 rules, and zkconn takes at most 1000"),
            "{e:?}"
        );
    }
}
