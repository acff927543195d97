//! `maxClientCnxns` per ZooKeeper server, and where each came from: `--limit SERVER=N`, else
//! `--max-client-cnxns N`, else the zoo.cfg (its `maxClientCnxns`, or ZooKeeper's default 60
//! when it has none), else what the server said when asked ([`crate::ask`]), else ZooKeeper's
//! default 60, assumed. `0` means unlimited, as in ZooKeeper.
//!
//! Owns: that precedence, and the answers servers gave (kept across reloads). Must not:
//! resolve host names after start (those in `--limit` resolve once, like `--zk`).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    ask::{self, Asked, Via},
    targets::{self, canonical_ip},
};

/// ZooKeeper's default `maxClientCnxns`.
pub const ZOOKEEPER_DEFAULT: u32 = 60;

/// How often a long-running zkconn asks again the servers that did not say their limit.
pub const ASK_AGAIN: Duration = Duration::from_secs(300);

/// More named servers than this are not asked (an ensemble has 3 to 7).
pub const MAX_ASKED: usize = 64;

/// How often it asks again the servers that did say.
pub const ASK_ANSWERED_AGAIN: Duration = Duration::from_secs(900);

/// Where a limit came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// `--limit` or `--max-client-cnxns`.
    Flag,
    /// `--zoo-cfg`.
    ZooCfg,
    /// The server said it (`conf` or the AdminServer).
    Server,
    /// Nobody said: ZooKeeper's default, assumed.
    #[default]
    Default,
}

impl LimitSource {
    /// Whether the limit is only assumed.
    pub fn assumed(self) -> bool {
        self == Self::Default
    }
}

/// One server's limit and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimit {
    /// 0 is unlimited.
    pub limit: u32,
    pub source: LimitSource,
}

/// What the snapshot says about the limits in force.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LimitInfo {
    /// The limit of servers without one of their own (from `--limit` or their answer); 0 is
    /// unlimited.
    pub default: u32,
    pub source: LimitSource,
    /// The servers asked for their limit, in address order.
    pub asked: Vec<AskedRow>,
    /// Why none was asked, when too many servers are named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_asked: Option<String>,
}

/// What one server said when asked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AskedRow {
    pub server: String,
    /// The limit it said; `null` when it did not.
    pub limit: Option<u32>,
    /// `conf` or `admin-server`; `null` when it did not say.
    pub via: Option<Via>,
    /// The local address the answer came to.
    pub from: Option<String>,
    /// What failed on the way, one sentence each (also when it answered in the end).
    pub failures: Vec<String>,
    /// The answer came from zkconn's cache (`/run/zkconn/server-limits.json`): another
    /// zkconn run on this host heard it within 10 minutes.
    pub cached: bool,
}

/// The answers servers gave, shared with the thread that asks again.
type Answers = Arc<Mutex<BTreeMap<SocketAddr, Asked>>>;

/// Servers whose answer a refusal put in doubt, and when each was last asked for that.
type Doubts = Arc<Mutex<BTreeMap<SocketAddr, (bool, Option<Instant>)>>>;

/// How often the thread that asks again looks for doubts.
const TICK: Duration = Duration::from_secs(5);
/// A server in doubt is asked again at most this often.
pub const DOUBT_EVERY: Duration = Duration::from_secs(45);

#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// `--max-client-cnxns` or the zoo.cfg's.
    base: Option<(u32, LimitSource)>,
    per_server: HashMap<SocketAddr, u32>,
    /// The servers to ask: named ones without a limit from a flag or zoo.cfg.
    to_ask: Vec<SocketAddr>,
    admin_port: Option<u16>,
    /// Why no server is asked, when too many are named.
    not_asked: Option<String>,
    answers: Answers,
    doubts: Doubts,
    /// What the servers listening on this host say of their limit in their own
    /// configuration (set by the engine from the listeners it knows): such a server is not
    /// asked, and its limit is that.
    local: Arc<Mutex<LocalLimits>>,
}

/// The `maxClientCnxns` of this host's own servers, per listening socket, and this host's
/// addresses (a server named by one of them is reached through a wildcard listener).
#[derive(Debug, Default)]
struct LocalLimits {
    per_listener: HashMap<SocketAddr, u32>,
    addresses: Option<Vec<std::net::IpAddr>>,
}

impl LocalLimits {
    /// The limit of a server named `server`, when one of this host's listeners is it.
    fn of(&mut self, server: SocketAddr) -> Option<u32> {
        if self.per_listener.is_empty() {
            return None;
        }
        if let Some(&limit) = self.per_listener.get(&server) {
            return Some(limit);
        }
        let ip = canonical_ip(server.ip());
        let addresses = self.addresses.get_or_insert_with(ask::local_addresses);
        let local = ip.is_loopback() || addresses.iter().any(|a| canonical_ip(*a) == ip);
        if !local {
            return None;
        }
        [
            std::net::IpAddr::from([0u8; 4]),
            std::net::IpAddr::from([0u8; 16]),
        ]
        .into_iter()
        .find_map(|any| {
            self.per_listener
                .get(&SocketAddr::new(any, server.port()))
                .copied()
        })
    }
}

fn key(server: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(server.ip()), server.port())
}

impl Limits {
    /// From the flags and the zoo.cfg's value (`Some` whenever a zoo.cfg is given);
    /// `overrides` are `--limit` values.
    pub fn new(
        flag: Option<u32>,
        zoo_cfg: Option<u32>,
        overrides: &[String],
    ) -> anyhow::Result<Self> {
        let base = match (flag, zoo_cfg) {
            (Some(n), _) => Some((n, LimitSource::Flag)),
            (None, Some(n)) => Some((n, LimitSource::ZooCfg)),
            (None, None) => None,
        };
        let mut per_server = HashMap::new();
        for text in overrides {
            let (servers, limit) = parse_override(text).context("--limit")?;
            for s in servers {
                per_server.insert(key(s), limit);
            }
        }
        Ok(Self {
            base,
            per_server,
            ..Self::default()
        })
    }

    /// Which of `servers` to ask for their limit (those no flag and no zoo.cfg gives one),
    /// and the AdminServer's port (`None`: never ask it).
    pub fn to_ask(
        mut self,
        servers: impl IntoIterator<Item = SocketAddr>,
        admin_port: Option<u16>,
    ) -> Self {
        if self.base.is_none() {
            let mut to_ask: Vec<SocketAddr> = servers
                .into_iter()
                .map(key)
                .filter(|s| !self.per_server.contains_key(s))
                .collect();
            to_ask.sort();
            to_ask.dedup();
            if to_ask.len() > MAX_ASKED {
                self.not_asked = Some(format!(
                    "not asked: {} servers are named, and zkconn asks at most {MAX_ASKED} \
                     (give --limit, --max-client-cnxns or --zoo-cfg)",
                    to_ask.len()
                ));
                to_ask.clear();
            }
            self.to_ask = to_ask;
        }
        self.admin_port = admin_port;
        self
    }

    /// Asks the servers that have not said their limit, and waits for them (a few seconds
    /// at most). Before the probes attach, so these connections are not counted.
    pub fn ask_now(&self) {
        ask_into(&self.to_ask, self.admin_port, &self.answers, false);
    }

    /// Keeps asking, for `top` and the daemon: every [`ASK_AGAIN`] the servers that did not
    /// say, every [`ASK_ANSWERED_AGAIN`] all of them (a restarted server may say otherwise),
    /// and within [`TICK`] a server [`doubt`](Self::doubt)ed (at most every
    /// [`DOUBT_EVERY`]). Those connections are counted like any other of this host, as
    /// zkconn's own. With `now`, it asks once at once (after a reload). The thread ends once
    /// these limits are dropped.
    pub fn keep_asking(&self, now: bool) {
        if self.to_ask.is_empty() {
            return;
        }
        let weak: Weak<Mutex<BTreeMap<SocketAddr, Asked>>> = Arc::downgrade(&self.answers);
        let doubts = Arc::clone(&self.doubts);
        let local = Arc::clone(&self.local);
        // A server of this host whose configuration was read is not asked: its answer
        // would say the same, and a question to a listener that closes unread connections
        // (a secure port whose TLS set-up failed) counts as a refusal of this host.
        let elsewhere = move |servers: &[SocketAddr]| -> Vec<SocketAddr> {
            let mut local = local.lock().unwrap_or_else(PoisonError::into_inner);
            servers
                .iter()
                .copied()
                .filter(|s| local.of(*s).is_none())
                .collect()
        };
        let (to_ask, admin_port) = (self.to_ask.clone(), self.admin_port);
        let spawned = std::thread::Builder::new()
            .name("zkconn-ask".to_owned())
            .spawn(move || {
                let start = Instant::now();
                let (mut unanswered_at, mut all_at) = (start, start);
                let mut first = now;
                loop {
                    if !first {
                        std::thread::sleep(TICK);
                    }
                    let Some(answers) = weak.upgrade() else {
                        return;
                    };
                    let due: Vec<SocketAddr> = {
                        let mut d = doubts.lock().unwrap_or_else(PoisonError::into_inner);
                        let due: Vec<SocketAddr> = d
                            .iter()
                            .filter(|(_, (wanted, last))| {
                                *wanted && last.is_none_or(|t| t.elapsed() >= DOUBT_EVERY)
                            })
                            .map(|(s, _)| *s)
                            .collect();
                        for s in &due {
                            d.insert(*s, (false, Some(Instant::now())));
                        }
                        due
                    };
                    let due = elsewhere(&due);
                    if !due.is_empty() {
                        ask_into(&due, admin_port, &answers, true);
                    }
                    if first || all_at.elapsed() >= ASK_ANSWERED_AGAIN {
                        ask_into(&elsewhere(&to_ask), admin_port, &answers, !first);
                        (all_at, unanswered_at) = (Instant::now(), Instant::now());
                    } else if unanswered_at.elapsed() >= ASK_AGAIN {
                        ask_into(&elsewhere(&to_ask), admin_port, &answers, false);
                        unanswered_at = Instant::now();
                    }
                    first = false;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that asks servers for their limit again: {e}");
        }
    }

    /// The server refused this host below the limit zkconn holds for it, or refuses while
    /// its limit is only assumed: what it said may no longer hold (a restart with another
    /// `maxClientCnxns`), so `keep_asking` asks it again soon.
    pub fn doubt(&self, server: SocketAddr) {
        let server = key(server);
        if self.to_ask.contains(&server) {
            let mut d = self.doubts.lock().unwrap_or_else(PoisonError::into_inner);
            d.entry(server).or_insert((false, None)).0 = true;
        }
    }

    /// A server of this host listening on `listener` was restarted (another process holds
    /// it): what the servers it stands for said may no longer hold, so they are asked again
    /// soon (see [`Limits::doubt`]).
    pub fn doubt_listener(&self, listener: SocketAddr) {
        let listener = key(listener);
        let on_it: Vec<SocketAddr> = {
            let mut local = LocalLimits {
                per_listener: [(listener, 0)].into_iter().collect(),
                addresses: None,
            };
            self.to_ask
                .iter()
                .copied()
                .filter(|s| local.of(*s).is_some())
                .collect()
        };
        for server in on_it {
            self.doubt(server);
        }
    }

    /// Whether this host's own question to `server` was refused from `local_ip` within
    /// [`REFUSING_SECS`](crate::verdict::REFUSING_SECS): the budget (server, local IP) is at
    /// its limit.
    pub fn question_refused(&self, server: SocketAddr, local_ip: &str) -> bool {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.get(&key(server)).is_some_and(|a| {
            a.at.elapsed().as_secs_f64() < crate::verdict::REFUSING_SECS
                && a.refused_from
                    .iter()
                    .any(|ip| canonical_ip(*ip).to_string() == local_ip)
        })
    }

    /// What this host's own servers' configurations say, per listening socket (`None`:
    /// not read). Replaces what was set before.
    pub fn set_local(&self, listeners: impl IntoIterator<Item = (SocketAddr, Option<u32>)>) {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        local.per_listener = listeners
            .into_iter()
            .filter_map(|(addr, limit)| Some((key(addr), limit?)))
            .collect();
    }

    /// The limit this host's own server named `server` has in its configuration, if it is
    /// one of this host's listeners and it was read.
    fn local_limit(&self, server: SocketAddr) -> Option<u32> {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .of(key(server))
    }

    /// Takes over the answers `before` had (a reload keeps what servers said).
    pub fn adopt(&mut self, before: &Limits) {
        let old = before
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut new = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        for (server, asked) in old.iter() {
            if self.to_ask.contains(server) {
                new.entry(*server).or_insert_with(|| asked.clone());
            }
        }
        let known = before
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_listener
            .clone();
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .per_listener = known;
    }

    pub fn info(&self) -> LimitInfo {
        let (default, source) = self
            .base
            .unwrap_or((ZOOKEEPER_DEFAULT, LimitSource::Default));
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let asked = self
            .to_ask
            .iter()
            .filter_map(|s| answers.get(s).map(|a| (s, a)))
            .map(|(s, a)| AskedRow {
                server: s.to_string(),
                limit: a.answer.as_ref().map(|x| x.limit),
                via: a.answer.as_ref().map(|x| x.via),
                from: a.answer.as_ref().map(|x| x.from.to_string()),
                failures: a.failures.clone(),
                cached: a.answer.as_ref().is_some_and(|x| x.cached),
            })
            .collect();
        LimitInfo {
            default,
            source,
            asked,
            not_asked: self.not_asked.clone(),
        }
    }

    /// Why the limit of `server` (a row's name) is assumed, in a sentence.
    pub fn why_assumed(info: &LimitInfo, server: &str) -> String {
        match info.asked.iter().find(|a| a.server == server) {
            Some(a) if a.failures.is_empty() => "it did not say".to_owned(),
            Some(a) => a.failures.join("; "),
            None => info.not_asked.clone().unwrap_or_else(|| {
                "not asked: it is not named with --zk (give --zk, --limit or --zoo-cfg)".to_owned()
            }),
        }
    }

    /// The limit towards `server` and where it came from.
    pub fn for_server(&self, server: SocketAddr) -> ServerLimit {
        let server = key(server);
        if let Some(&limit) = self.per_server.get(&server) {
            return ServerLimit {
                limit,
                source: LimitSource::Flag,
            };
        }
        if let Some((limit, source)) = self.base {
            return ServerLimit { limit, source };
        }
        // A server of this host that no flag and no --zoo-cfg gives a limit: its own
        // configuration, read through /proc.
        if let Some(limit) = self.local_limit(server) {
            return ServerLimit {
                limit,
                source: LimitSource::ZooCfg,
            };
        }
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        match answers.get(&server).and_then(|a| a.answer.as_ref()) {
            Some(a) => ServerLimit {
                limit: a.limit,
                source: LimitSource::Server,
            },
            None => ServerLimit {
                limit: ZOOKEEPER_DEFAULT,
                source: LimitSource::Default,
            },
        }
    }
}

/// Asks those of `to_ask` without an answer (all of them with `all`) and keeps what they
/// say; a server that answered before and does not now keeps its earlier answer.
fn ask_into(
    to_ask: &[SocketAddr],
    admin_port: Option<u16>,
    answers: &Mutex<BTreeMap<SocketAddr, Asked>>,
    all: bool,
) {
    let pending: Vec<SocketAddr> = {
        let answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
        to_ask
            .iter()
            .copied()
            .filter(|s| all || answers.get(s).is_none_or(|a| a.answer.is_none()))
            .collect()
    };
    if pending.is_empty() {
        return;
    }
    let cache = std::path::Path::new(ask::CACHE);
    // What another zkconn on this host heard lately is not asked again (a check every
    // minute, at the limit, would otherwise be refused every minute), unless asking all.
    let mut results: Vec<(SocketAddr, Asked)> = if all {
        Vec::new()
    } else {
        ask::cached(cache, &pending)
            .into_iter()
            .map(|(s, answer)| (s, Asked::new(Some(answer), Vec::new())))
            .collect()
    };
    let unknown: Vec<SocketAddr> = pending
        .into_iter()
        .filter(|s| !results.iter().any(|(c, _)| c == s))
        .collect();
    if !unknown.is_empty() {
        let asked = ask::ask_all(&unknown, admin_port);
        let heard: Vec<(SocketAddr, &ask::Answer)> = asked
            .iter()
            .filter_map(|(s, a)| a.answer.as_ref().map(|x| (*s, x)))
            .collect();
        ask::remember(cache, &heard);
        results.extend(asked);
    }
    let mut answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
    for (server, asked) in results {
        // Every output marks an assumed limit and says why; the log only with -v.
        tracing::info!(
            "asked {server} for its maxClientCnxns: {}",
            describe(&asked)
        );
        match answers.get_mut(&server) {
            Some(before) if before.answer.is_some() && asked.answer.is_none() => {
                before.failures = asked.failures;
                before.refused_from = asked.refused_from;
                before.at = asked.at;
            }
            _ => {
                answers.insert(server, asked);
            }
        }
    }
}

/// One line on what a server said.
fn describe(asked: &Asked) -> String {
    let answer = match &asked.answer {
        Some(a) => format!(
            "{} (by {} to {}{})",
            a.limit,
            match a.via {
                Via::Conf => "conf",
                Via::AdminServer => "the AdminServer",
            },
            a.from,
            if a.cached { ", from the cache" } else { "" }
        ),
        None => "no answer, 60 assumed".to_owned(),
    };
    if asked.failures.is_empty() {
        answer
    } else {
        format!("{answer}; {}", asked.failures.join("; "))
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

    /// A server of this host whose configuration was read: its limit, through a wildcard
    /// listener for any of this host's addresses (a loopback one here) and not for another
    /// host's server on the same port; a flag or `--zoo-cfg` given still wins.
    #[test]
    fn this_hosts_own_servers_limit_comes_from_its_configuration() {
        let limits = Limits::new(None, None, &[]).unwrap();
        limits.set_local([(addr("0.0.0.0:2181"), Some(7)), (addr("[::]:2182"), None)]);
        let at = |s: &str| {
            let l = limits.for_server(addr(s));
            (l.limit, l.source)
        };
        assert_eq!(at("127.9.9.9:2181"), (7, LimitSource::ZooCfg));
        assert_eq!(
            at("192.0.2.77:2181"),
            (60, LimitSource::Default),
            "not this host"
        );
        assert_eq!(at("127.9.9.9:2182"), (60, LimitSource::Default), "not read");
        for (flag, cfg, source) in [
            (Some(9), None, LimitSource::Flag),
            (None, Some(9), LimitSource::ZooCfg),
        ] {
            let given = Limits::new(flag, cfg, &[]).unwrap();
            given.set_local([(addr("0.0.0.0:2181"), Some(7))]);
            let l = given.for_server(addr("127.9.9.9:2181"));
            assert_eq!((l.limit, l.source), (9, source));
        }
    }

    fn lim(limit: u32, source: LimitSource) -> ServerLimit {
        ServerLimit { limit, source }
    }

    fn answered(limit: u32) -> Asked {
        let mut a = Asked::new(
            Some(ask::Answer {
                limit,
                via: Via::Conf,
                from: "127.0.0.2".parse().unwrap(),
                cached: false,
            }),
            vec!["`conf` from 127.0.0.1 was refused".into()],
        );
        a.refused_from.push("127.0.0.1".parse().unwrap());
        a
    }

    #[test]
    fn precedence_flag_then_zoo_cfg_then_the_server_then_assumed_and_per_server_wins() {
        let l = Limits::new(Some(10), Some(20), &["127.0.0.5:2181=3".into()])
            .unwrap()
            .to_ask([addr("127.0.0.5:2181"), addr("127.0.0.5:2182")], Some(8080));
        assert_eq!(
            l.for_server(addr("127.0.0.5:2181")),
            lim(3, LimitSource::Flag)
        );
        assert_eq!(
            l.for_server(addr("127.0.0.5:2182")),
            lim(10, LimitSource::Flag)
        );
        assert_eq!(l.info().source, LimitSource::Flag);
        assert!(l.to_ask.is_empty(), "a flag leaves nothing to ask");
        let l = Limits::new(None, Some(20), &[]).unwrap();
        assert_eq!(
            l.for_server(addr("10.0.0.1:2181")),
            lim(20, LimitSource::ZooCfg)
        );
        assert_eq!(l.info().source, LimitSource::ZooCfg);
        // Nobody gave one: the named servers without a --limit are asked; what one said
        // is its limit, the others are assumed.
        let l = Limits::new(None, None, &["127.0.0.5:2181=3".into()])
            .unwrap()
            .to_ask(
                [
                    addr("127.0.0.5:2181"),
                    addr("127.0.0.7:2181"),
                    addr("127.0.0.8:2181"),
                ],
                None,
            );
        assert_eq!(
            l.to_ask,
            vec![addr("127.0.0.7:2181"), addr("127.0.0.8:2181")]
        );
        l.answers
            .lock()
            .unwrap()
            .insert(addr("127.0.0.7:2181"), answered(7));
        assert_eq!(
            l.for_server(addr("127.0.0.5:2181")),
            lim(3, LimitSource::Flag)
        );
        assert_eq!(
            l.for_server(addr("[::ffff:127.0.0.7]:2181")),
            lim(7, LimitSource::Server)
        );
        assert_eq!(
            l.for_server(addr("127.0.0.8:2181")),
            lim(60, LimitSource::Default)
        );
        assert_eq!(l.info().source, LimitSource::Default);
        let info = l.info();
        assert_eq!(info.asked.len(), 1);
        assert_eq!(
            (info.asked[0].limit, info.asked[0].from.as_deref()),
            (Some(7), Some("127.0.0.2"))
        );
        assert_eq!(
            Limits::why_assumed(&info, "127.0.0.8:2181"),
            "not asked: it is not named with --zk (give --zk, --limit or --zoo-cfg)",
            "asked, but no answer recorded yet"
        );
        // A reload keeps what the servers said.
        let mut again = Limits::new(None, None, &[])
            .unwrap()
            .to_ask([addr("127.0.0.7:2181")], None);
        again.adopt(&l);
        assert_eq!(
            again.for_server(addr("127.0.0.7:2181")),
            lim(7, LimitSource::Server)
        );
        // The default port applies, and v4-mapped addresses are the same server.
        let l = Limits::new(None, None, &["127.0.0.6=0".into()]).unwrap();
        assert_eq!(
            l.for_server(addr("[::ffff:127.0.0.6]:2181")),
            lim(0, LimitSource::Flag)
        );
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
