//! `maxClientCnxns` per ZooKeeper server: from `--limit SERVER=N`, else
//! `--max-client-cnxns N`, else the zoo.cfg's `maxClientCnxns`, else ZooKeeper's default 60.
//! `0` means unlimited, as in ZooKeeper.
//!
//! Must not: resolve anything after start (host names in `--limit` resolve once, like `--zk`).

use std::{collections::HashMap, net::SocketAddr};

use anyhow::Context as _;

use crate::targets::{self, canonical_ip};

/// ZooKeeper's default `maxClientCnxns`.
pub const ZOOKEEPER_DEFAULT: u32 = 60;

/// Where the host-wide limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    Flag,
    ZooCfg,
    Default,
}

/// What the snapshot says about the limits in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LimitInfo {
    /// The limit of servers without a `--limit` of their own; 0 is unlimited.
    pub default: u32,
    pub source: LimitSource,
}

#[derive(Clone, Debug)]
pub struct Limits {
    default: u32,
    source: LimitSource,
    per_server: HashMap<SocketAddr, u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default: ZOOKEEPER_DEFAULT,
            source: LimitSource::Default,
            per_server: HashMap::new(),
        }
    }
}

impl Limits {
    /// From the flags and the zoo.cfg value; `overrides` are `--limit` values.
    pub fn new(
        flag: Option<u32>,
        zoo_cfg: Option<u32>,
        overrides: &[String],
    ) -> anyhow::Result<Self> {
        let (default, source) = match (flag, zoo_cfg) {
            (Some(n), _) => (n, LimitSource::Flag),
            (None, Some(n)) => (n, LimitSource::ZooCfg),
            (None, None) => (ZOOKEEPER_DEFAULT, LimitSource::Default),
        };
        let mut per_server = HashMap::new();
        for text in overrides {
            let (servers, limit) = parse_override(text).context("--limit")?;
            for s in servers {
                per_server.insert(SocketAddr::new(canonical_ip(s.ip()), s.port()), limit);
            }
        }
        Ok(Self {
            default,
            source,
            per_server,
        })
    }

    pub fn info(&self) -> LimitInfo {
        LimitInfo {
            default: self.default,
            source: self.source,
        }
    }

    /// The limit towards `server`; 0 is unlimited.
    pub fn for_server(&self, server: SocketAddr) -> u32 {
        let key = SocketAddr::new(canonical_ip(server.ip()), server.port());
        self.per_server.get(&key).copied().unwrap_or(self.default)
    }
}

/// `HOST[:PORT]=N`: the limit of one server (every address the host resolves to).
fn parse_override(text: &str) -> anyhow::Result<(Vec<SocketAddr>, u32)> {
    let (host, n) = text.rsplit_once('=').with_context(|| {
        format!("{text:?} is not SERVER=N; write it like zk1:2181=120 (0 is unlimited)")
    })?;
    let limit: u32 = n.trim().parse().with_context(|| {
        format!("{n:?} in {text:?} is not a whole number of connections (0 is unlimited)")
    })?;
    if host.contains(',') || host.contains('/') {
        anyhow::bail!("{text:?}: give one server per --limit, without a chroot");
    }
    let hosts = targets::parse_connect_string(host)?;
    let servers = targets::Targets::resolve(&hosts, &[])?
        .endpoints
        .into_iter()
        .collect();
    Ok((servers, limit))
}

/// Usage 0..1 of `limit` by `open`; `None` when unlimited.
pub fn usage(open: u64, limit: u32) -> Option<f64> {
    (limit > 0).then(|| open as f64 / f64::from(limit))
}

/// Connections left before the server refuses; `None` when unlimited. Negative when the
/// host holds more than the limit (ZooKeeper's accept check races with registration).
pub fn headroom(open: u64, limit: u32) -> Option<i64> {
    (limit > 0).then(|| i64::from(limit) - i64::try_from(open).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn precedence_flag_then_zoo_cfg_then_default_and_per_server_wins() {
        let l = Limits::new(Some(10), Some(20), &["127.0.0.5:2181=3".into()]).unwrap();
        assert_eq!(l.for_server(addr("127.0.0.5:2181")), 3);
        assert_eq!(l.for_server(addr("127.0.0.5:2182")), 10);
        assert_eq!(l.info().source, LimitSource::Flag);
        let l = Limits::new(None, Some(20), &[]).unwrap();
        assert_eq!(
            (l.for_server(addr("10.0.0.1:2181")), l.info().source),
            (20, LimitSource::ZooCfg)
        );
        let l = Limits::new(None, None, &[]).unwrap();
        assert_eq!(
            (l.for_server(addr("10.0.0.1:2181")), l.info().source),
            (60, LimitSource::Default)
        );
        // The default port applies, and v4-mapped addresses are the same server.
        let l = Limits::new(None, None, &["127.0.0.6=0".into()]).unwrap();
        assert_eq!(l.for_server(addr("[::ffff:127.0.0.6]:2181")), 0);
    }

    #[rstest]
    #[case("127.0.0.5:2181")]
    #[case("127.0.0.5:2181=many")]
    #[case("127.0.0.5:2181=-1")]
    #[case("a:2181,b:2181=3")]
    #[case("127.0.0.5:99999=3")]
    fn bad_overrides(#[case] text: &str) {
        assert!(Limits::new(None, None, &[text.into()]).is_err());
    }

    #[rstest]
    #[case(0, 60, Some(0.0), Some(60))]
    #[case(45, 60, Some(0.75), Some(15))]
    #[case(61, 60, Some(61.0 / 60.0), Some(-1))]
    #[case(500, 0, None, None)]
    fn usage_and_headroom(
        #[case] open: u64,
        #[case] limit: u32,
        #[case] u: Option<f64>,
        #[case] h: Option<i64>,
    ) {
        assert_eq!(usage(open, limit), u);
        assert_eq!(headroom(open, limit), h);
    }
}
