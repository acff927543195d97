//! `java.util.Properties.load(InputStream)`, as ZooKeeper reads zoo.cfg: ISO-8859-1 bytes,
//! `key=value`, `key:value` or `key value`, `#` and `!` comments, backslash continuations
//! (the next line's leading blanks dropped), `\uXXXX` and `\t \n \r \f` escapes, a later key
//! replacing an earlier one. ZooKeeper then trims keys and values. Compared against the JDK's
//! own class on the same files in this module's tests.
//!
//! Owns: the file format. Must not: know what any key means (targets.rs does).

/// One property: the line its logical line starts on (1-based), key and value as ZooKeeper
/// sees them (trimmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// The properties of `bytes`, in file order (a repeated key appears twice; the last wins, as
/// in `Properties`). Fails, naming the line, where the JDK throws: a malformed `\u` escape.
pub fn parse(bytes: &[u8]) -> Result<Vec<Property>, (usize, String)> {
    // ISO-8859-1: every byte is the character of the same number.
    let chars: Vec<char> = bytes.iter().map(|&b| char::from(b)).collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut line = 1;
    while let Some((start_line, logical)) = read_line(&chars, &mut at, &mut line) {
        let (key, value) = split(&logical);
        let key = unescape(key).map_err(|e| (start_line, e))?;
        let value = unescape(value).map_err(|e| (start_line, e))?;
        out.push(Property {
            line: start_line,
            key: java_trim(&key),
            value: java_trim(&value),
        });
    }
    Ok(out)
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

/// `String.trim()`: every character up to U+0020 off both ends.
fn java_trim(s: &str) -> String {
    s.trim_matches(|c: char| c <= ' ').to_owned()
}

/// The next logical line (continuations joined, comments and blank lines skipped), with the
/// natural line it starts on; `None` at the end.
fn read_line(chars: &[char], at: &mut usize, line: &mut usize) -> Option<(usize, Vec<char>)> {
    loop {
        if *at >= chars.len() {
            return None;
        }
        // Leading blanks of a natural line.
        while *at < chars.len() && is_blank(chars[*at]) {
            *at += 1;
        }
        let start_line = *line;
        let &first = chars.get(*at)?;
        if first == '\n' || first == '\r' {
            skip_newline(chars, at, line);
            continue;
        }
        if first == '#' || first == '!' {
            // A comment ends with its natural line, whatever it ends with.
            while *at < chars.len() && chars[*at] != '\n' && chars[*at] != '\r' {
                *at += 1;
            }
            skip_newline(chars, at, line);
            continue;
        }
        let mut logical = Vec::new();
        loop {
            let begin = *at;
            while *at < chars.len() && chars[*at] != '\n' && chars[*at] != '\r' {
                *at += 1;
            }
            let natural = &chars[begin..*at];
            let backslashes = natural.iter().rev().take_while(|&&c| c == '\\').count();
            let continues = backslashes % 2 == 1;
            logical.extend_from_slice(if continues {
                &natural[..natural.len() - 1]
            } else {
                natural
            });
            let at_end = *at >= chars.len();
            skip_newline(chars, at, line);
            if !continues || at_end {
                return Some((start_line, logical));
            }
            // The continuation's leading blanks are not part of the value.
            while *at < chars.len() && is_blank(chars[*at]) {
                *at += 1;
            }
        }
    }
}

/// Past one `\n`, `\r` or `\r\n`, counting the line.
fn skip_newline(chars: &[char], at: &mut usize, line: &mut usize) {
    match chars.get(*at) {
        Some('\r') => {
            *at += 1;
            if chars.get(*at) == Some(&'\n') {
                *at += 1;
            }
            *line += 1;
        }
        Some('\n') => {
            *at += 1;
            *line += 1;
        }
        _ => {}
    }
}

/// Key and value of a logical line: the key ends at the first unescaped `=`, `:` or blank;
/// blanks and one `=` or `:` after it are skipped.
fn split(line: &[char]) -> (&[char], &[char]) {
    let mut key_len = 0;
    let mut value_start = line.len();
    let mut has_separator = false;
    let mut escaped = false;
    while key_len < line.len() {
        let c = line[key_len];
        if (c == '=' || c == ':') && !escaped {
            value_start = key_len + 1;
            has_separator = true;
            break;
        }
        if is_blank(c) && !escaped {
            value_start = key_len + 1;
            break;
        }
        escaped = c == '\\' && !escaped;
        key_len += 1;
    }
    while value_start < line.len() {
        let c = line[value_start];
        if !is_blank(c) {
            if !has_separator && (c == '=' || c == ':') {
                has_separator = true;
            } else {
                break;
            }
        }
        value_start += 1;
    }
    (&line[..key_len], &line[value_start..])
}

fn unescape(text: &[char]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut it = text.iter();
    while let Some(&c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('u') => {
                let hex: String = it.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or_else(|| format!("malformed \\u escape \\u{hex}"))?;
                // A lone surrogate half cannot be a Rust char: shown as U+FFFD.
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, process::Command};

    use super::*;

    /// The files every case reads, as bytes (Latin-1 and a BOM included).
    fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("plain", b"clientPort=2181\nmaxClientCnxns=60\n".to_vec()),
            (
                "separators",
                b"clientPort:2181\nsecureClientPort 2281\n  maxClientCnxns  =  -1  \n\
                  dataDir\t=\t/var/lib/zk\nempty=\nonlykey\n"
                    .to_vec(),
            ),
            (
                "comments",
                b"# a comment\n! another\n   # indented\nclientPort=2181\n#clientPort=9999\n"
                    .to_vec(),
            ),
            (
                "continuations",
                b"server.1=zk1:2888:\\\n    3888;2181\nclientPort=21\\\n\\\n   81\n\
                  even=a\\\\\nodd=b\\\\\\\n  c\n# comment \\\nnot.continued=1\n"
                    .to_vec(),
            ),
            (
                "escapes",
                b"key\\=with\\:seps=v\nunicode=\\u0041\\u00e9\\u20ac\ntab=a\\tb\n\
                  sp\\ ace=x\nback=\\q\\\\\n"
                    .to_vec(),
            ),
            (
                "latin1",
                b"dataDir=/data/caf\xe9\nclientPort=2181\n".to_vec(),
            ),
            (
                "crlf",
                b"clientPort=2181\r\nmaxClientCnxns=10\r\r\nx=1\r".to_vec(),
            ),
            (
                "bom",
                b"\xef\xbb\xbfclientPort=2181\nmaxClientCnxns=5\n".to_vec(),
            ),
            ("repeated", b"clientPort=1\nclientPort=2181\n".to_vec()),
            ("trailing backslash at end", b"a=1\nb=2\\".to_vec()),
        ]
    }

    /// `\uXXXX` for anything outside printable ASCII, tab and backslash (both sides print
    /// the same way).
    fn escape(s: &str) -> String {
        s.chars()
            .flat_map(|c| {
                if (' '..='~').contains(&c) && c != '\\' {
                    vec![c]
                } else {
                    format!("\\u{:04x}", c as u32).chars().collect()
                }
            })
            .collect()
    }

    const JAVA: &str = r#"
import java.io.*;
import java.util.*;

public class Props {
    public static void main(String[] files) throws Exception {
        for (String f : files) {
            Properties p = new Properties();
            try (InputStream in = new FileInputStream(f)) { p.load(in); }
            TreeMap<String, String> m = new TreeMap<>();
            for (String k : p.stringPropertyNames()) {
                // As ZooKeeper's QuorumPeerConfig does.
                m.put(k.trim(), p.getProperty(k).trim());
            }
            System.out.println("FILE " + new File(f).getName());
            for (Map.Entry<String, String> e : m.entrySet()) {
                System.out.println(esc(e.getKey()) + "\t" + esc(e.getValue()));
            }
        }
    }

    static String esc(String s) {
        StringBuilder b = new StringBuilder();
        for (char c : s.toCharArray()) {
            if (c >= ' ' && c <= '~' && c != '\\') b.append(c);
            else b.append(String.format("\\u%04x", (int) c));
        }
        return b.toString();
    }
}
"#;

    /// Every fixture read by the JDK's `Properties` (javac and java, from the test setup's
    /// openjdk-17) and by this parser: the same keys and values.
    #[test]
    fn the_jdk_reads_every_fixture_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Props.java"), JAVA).unwrap();
        let javac = Command::new("javac")
            .arg("-d")
            .arg(dir.path())
            .arg(dir.path().join("Props.java"))
            .output()
            .expect("javac (openjdk-17-jdk-headless, installed by cargo xtask setup)");
        assert!(
            javac.status.success(),
            "{}",
            String::from_utf8_lossy(&javac.stderr)
        );
        let mut expected = String::new();
        let mut paths = Vec::new();
        for (name, bytes) in fixtures() {
            let file = name.replace(' ', "_");
            let path = dir.path().join(&file);
            std::fs::write(&path, &bytes).unwrap();
            paths.push(path);
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            for p in parse(&bytes).unwrap() {
                last.insert(p.key, p.value);
            }
            expected.push_str(&format!("FILE {file}\n"));
            for (k, v) in last {
                expected.push_str(&format!("{}\t{}\n", escape(&k), escape(&v)));
            }
        }
        let java = Command::new("java")
            .arg("-cp")
            .arg(dir.path())
            .arg("Props")
            .args(&paths)
            .output()
            .expect("java");
        assert!(
            java.status.success(),
            "{}",
            String::from_utf8_lossy(&java.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&java.stdout), expected);
    }

    #[test]
    fn lines_are_numbered_from_where_each_logical_line_starts() {
        let props = parse(b"# c\n\na=1\\\n  2\nb:3\n").unwrap();
        assert_eq!(
            props,
            vec![
                Property {
                    line: 3,
                    key: "a".into(),
                    value: "12".into()
                },
                Property {
                    line: 5,
                    key: "b".into(),
                    value: "3".into()
                },
            ]
        );
        assert_eq!(parse(b"x=1\ny=\\u12\n").unwrap_err().0, 2);
    }
}
