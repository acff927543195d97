//! HTTP without a client library, a real Prometheus server, and the text format parsed.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::{
    reap::Reaped,
    zookeeper::{free_port, fresh_ipv4},
};

/// `GET path` on `addr` (HTTP/1.1, one request per connection): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// `GET path` with an `Accept` header: status, the `Content-Type`, and body.
pub fn http_get_accepting(
    addr: SocketAddr,
    path: &str,
    accept: &str,
) -> anyhow::Result<(u16, String, String)> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    let (status, head, body) = exchange(addr, &request)?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((status, content_type, body))
}

/// Sends `request` as is; returns the status and body of the answer.
pub fn http_request(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    exchange(addr, request).map(|(status, _, body)| (status, body))
}

/// Sends `request` as is; returns the status, the head and the (dechunked) body.
fn exchange(addr: SocketAddr, request: &str) -> anyhow::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, head.to_owned(), body))
}

pub(crate) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A Prometheus server (Debian's package) on a fresh loopback address, scraping `targets`
/// every second as job `zkconn`.
pub struct Prometheus {
    pub addr: SocketAddr,
    _child: Reaped,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr]) -> anyhow::Result<Self> {
        Self::start_with(targets, "")
    }

    /// As [`Prometheus::start`], with `scrape` (YAML lines indented for the job, e.g. a
    /// `scheme`, `tls_config` or `basic_auth`) added to the job's scrape configuration.
    pub fn start_with(targets: &[SocketAddr], scrape: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ip = fresh_ipv4();
        let addr = SocketAddr::new(ip, free_port(ip)?);
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: zkconn\n    static_configs:\n      - targets: [{}]\n{scrape}",
                list.join(", ")
            ),
        )?;
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start prometheus (cargo xtask setup installs Debian's package)")?;
        let p = Self {
            addr,
            _child: Reaped::new(child),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200) {
                return Ok(p);
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("prometheus on {addr} did not become ready")
    }

    /// The value of the instant query `expr`, if it has one result.
    pub fn query(&self, expr: &str) -> anyhow::Result<Option<f64>> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )?;
        if status != 200 {
            bail!("query {expr} answered {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"]["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse().ok()))
    }
}

/// Percent-encoding of everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One sample of a metrics exposition: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Samples of the Prometheus text `name{labels} value`, checking every line is well formed.
pub fn parse_metrics(text: &str) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow!("no value: {line:?}"))?;
        let value: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .ok_or_else(|| anyhow!("unclosed labels: {line:?}"))?,
            ),
            None => (series, ""),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line:?}");
        }
        let mut pairs = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, v) = rest
                .split_once("=\"")
                .ok_or_else(|| anyhow!("bad label in {line:?}"))?;
            let mut end = None;
            let mut escaped = false;
            for (i, c) in v.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.ok_or_else(|| anyhow!("unterminated label value in {line:?}"))?;
            pairs.push((k.to_owned(), v[..end].to_owned()));
            rest = v[end + 1..].trim_start_matches(',');
        }
        out.push((name.to_owned(), pairs, value));
    }
    Ok(out)
}
