//! The server's side: one row per client host on each watched listener of this host (a
//! ZooKeeper server), from the accepted connections the kernel follows and its counters.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use serde::Serialize;
use zkconn_common::{ClientCounters, ClientKey, Inbound, Tuple, inbound_flags, tcp_state};

use crate::{
    limits::{self, LimitSource, Limits},
    listener::ListenerFacts,
    targets::ip_from_bytes,
    verdict::Alarm,
};

/// Connections listed per row at most (the oldest first); `open` counts them all.
pub const CONNECTIONS_LISTED: usize = 64;

/// One client host on one listener: what `maxClientCnxns` counts on the server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ClientRow {
    /// The listening socket that accepted the connections, `address:port`: what ZooKeeper
    /// counts a client host's connections per (`0.0.0.0:2181` for a server listening on
    /// every address, however the clients reached it). Where no listener was found (yet:
    /// one that started after zkconn is found at the next drift-repair round), the address
    /// the clients reached.
    pub listener: String,
    /// The addresses the clients reached it on (`address:port`), when that is not the
    /// listener's own.
    pub reached: Vec<String>,
    pub client_ip: String,
    /// Accepted connections the server has not let go (ESTABLISHED or CLOSE_WAIT): what
    /// ZooKeeper counts against the limit.
    pub open: u64,
    /// Of `open`, the ones the client already closed (CLOSE_WAIT): the server has yet to.
    pub close_wait: u64,
    /// Of `open`, the ones that existed before zkconn started.
    pub seeded: u64,
    /// `maxClientCnxns` for this listener; 0 is unlimited.
    pub limit: u32,
    pub limit_source: LimitSource,
    /// `open / limit`; `null` when unlimited.
    pub usage: Option<f64>,
    /// `limit - open`; `null` when unlimited.
    pub headroom: Option<i64>,
    /// Connections accepted since zkconn started.
    pub opened: u64,
    /// Connections the server let go since zkconn started (refusals included).
    pub closed: u64,
    /// Of `closed`, the server's refusals: it closed before reading or writing a byte.
    pub rejected: u64,
    /// Of `closed`, the others the server never sent a byte on: no session started.
    pub unanswered: u64,
    /// The open connections, oldest first (at most [`CONNECTIONS_LISTED`]).
    pub connections: Vec<ClientConnection>,
    /// Refusals within the trend window (`trend_window_secs`).
    pub rejected_window: u64,
    /// Refused within the last [`crate::verdict::REFUSING_SECS`] seconds: at its limit now.
    pub refusing: bool,
    /// Change of `open` per minute over the trend window; `null` until it spans a minute.
    pub growth_per_min: Option<f64>,
    /// `open` only grew over the window (never fell from one reading to the next), by
    /// `GROWING_BY` (3) or more over two minutes or more: how a leak looks from the server.
    pub growing: bool,
    /// `ok`, `warning` or `critical`: the thresholds of `--warn`/`--crit` on `usage`, and
    /// critical while refusing.
    pub alarm: Alarm,
    /// Its listener holds as many connections as its server's `maxCnxns` allows: a refusal
    /// now is the server's cap, not this host's limit.
    pub listener_full: bool,
}

/// One open accepted connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ClientConnection {
    pub client_port: u16,
    /// `established` or `close_wait`.
    #[serde(deserialize_with = "crate::intern::de")]
    pub state: crate::intern::Name,
    /// Seconds since the handshake; `null` for a connection that predates zkconn.
    pub age_secs: Option<f64>,
}

/// The listening socket among `listeners` that accepts connections reaching `reached`: one
/// bound to that address, else one on the wildcard of its family (an IPv4 client of a
/// dual-stack IPv6 listener on `[::]`); `None` when none is known.
fn listener_of(reached: SocketAddr, listeners: &[SocketAddr]) -> Option<SocketAddr> {
    let port = reached.port();
    let candidates = [
        reached,
        SocketAddr::new(
            if reached.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            port,
        ),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
    ];
    candidates.into_iter().find(|c| listeners.contains(c))
}

/// One (listener, client) budget: its counters, its open connections, and the addresses it
/// was reached on that are not the listener's own.
type Group<'a> = (ClientCounters, Vec<&'a Inbound>, Vec<SocketAddr>);

/// The group of kernel key `key` (address reached, client) in `rows`, under its listener.
fn group<'m, 'a>(
    rows: &'m mut BTreeMap<(SocketAddr, IpAddr), Group<'a>>,
    key: &ClientKey,
    listeners: &[SocketAddr],
) -> &'m mut Group<'a> {
    let reached = SocketAddr::new(ip_from_bytes(key.local), key.port);
    let listener = listener_for(key, listeners);
    let g = rows
        .entry((listener, ip_from_bytes(key.client)))
        .or_default();
    if reached != listener && !g.2.contains(&reached) {
        g.2.push(reached);
    }
    g
}

/// Counts of client hosts retired from the kernel's table (see
/// [`crate::engine`]'s client retention), per listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetiredClients {
    pub counters: ClientCounters,
    pub hosts: u64,
}

/// What the server's side is built from.
pub struct ServerSideInputs<'a> {
    pub inbound: &'a [Inbound],
    pub seeds: &'a [Inbound],
    pub counters: &'a [(ClientKey, ClientCounters)],
    /// This host's listening sockets (any port).
    pub listeners: &'a [SocketAddr],
    /// What is known of the servers on watched listeners.
    pub servers: &'a BTreeMap<SocketAddr, ListenerFacts>,
    pub retired: &'a BTreeMap<SocketAddr, RetiredClients>,
    pub limits: &'a Limits,
    pub now_ns: u64,
}

/// The server's side of a snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerSide {
    pub clients: Vec<ClientRow>,
    pub listeners: Vec<ListenerRow>,
}

/// One watched listening socket of this host: its server, and every client host together.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ListenerRow {
    pub listener: String,
    /// The addresses it was reached on, when not its own.
    pub reached: Vec<String>,
    /// The server holding it, which listener of it this is, and its own limits.
    #[serde(flatten)]
    pub server: ListenerFacts,
    /// `maxClientCnxns` in force per client host (`limit` of its client rows).
    pub limit: u32,
    pub limit_source: LimitSource,
    /// Connections it holds now, from every client host.
    pub open: u64,
    /// `max_cnxns - open`, when the server caps its connections (`maxCnxns` above 0).
    pub max_cnxns_headroom: Option<i64>,
    /// Client hosts with a row now.
    pub client_hosts: u64,
    /// Since zkconn started, every client host's, those retired included: they only grow.
    pub opened: u64,
    pub closed: u64,
    pub rejected: u64,
    pub unanswered: u64,
    /// Client hosts whose rows were retired (idle: nothing open, no change, for
    /// `--retain-exited`); their counts stay in the four above.
    pub retired_hosts: u64,
    /// `ok`, `warning` or `critical`: `--warn`/`--crit` on `open` against `max_cnxns`,
    /// critical at it; `ok` when the server sets no cap.
    pub alarm: Alarm,
}

/// The listener that accepted the connections of kernel key `key` (the address reached
/// where none of `listeners` is known for it).
pub fn listener_for(key: &ClientKey, listeners: &[SocketAddr]) -> SocketAddr {
    let reached = SocketAddr::new(ip_from_bytes(key.local), key.port);
    listener_of(reached, listeners).unwrap_or(reached)
}

/// The limit per client host on `listener` (reached first on `limit_of`): a flag's or
/// `--zoo-cfg`'s, else the server's own configuration's, else what `limits` holds for it
/// (asked, or assumed).
fn limit_for(
    limits: &Limits,
    limit_of: SocketAddr,
    facts: Option<&ListenerFacts>,
) -> limits::ServerLimit {
    let held = limits.for_server(limit_of);
    match facts.and_then(|f| f.max_client_cnxns) {
        Some(limit) if !matches!(held.source, LimitSource::Flag | LimitSource::ZooCfg) => {
            limits::ServerLimit {
                limit,
                source: LimitSource::ZooCfg,
            }
        }
        _ => held,
    }
}

/// The rows, most used first: live rows from `inbound` and `seeds` (a seed the kernel also
/// follows, same tuple, counts once), counters from `counters`, each kernel key (address
/// reached, client) under the listener of `listeners` that accepted it; and one row per
/// listener (every watched one known, with or without clients), in address order.
pub fn client_rows(inputs: &ServerSideInputs<'_>) -> ServerSide {
    let ServerSideInputs {
        inbound,
        seeds,
        counters,
        listeners,
        servers,
        retired,
        limits,
        now_ns,
    } = *inputs;
    let mut live: BTreeMap<Tuple, &Inbound> = BTreeMap::new();
    for row in seeds.iter().chain(inbound) {
        // The kernel's own row wins over a seed of the same tuple.
        live.insert(row.tuple, row);
    }
    // Grouped by (listener, client): the budget ZooKeeper keeps.
    let mut rows: BTreeMap<(SocketAddr, IpAddr), Group<'_>> = BTreeMap::new();
    for row in live.values() {
        group(&mut rows, &ClientKey::of(&row.tuple), listeners)
            .1
            .push(row);
    }
    for (key, c) in counters {
        group(&mut rows, key, listeners).0.add(c);
    }
    let mut per_listener: BTreeMap<SocketAddr, ListenerRow> = BTreeMap::new();
    let mut out: Vec<ClientRow> = rows
        .into_iter()
        .map(|((listener, client), (c, mut conns, mut reached))| {
            // A wildcard listener has no address of its own to look a limit up by: the first
            // address it was reached on stands for it.
            reached.sort();
            let limit_of = if listener.ip().is_unspecified() {
                reached.first().copied().unwrap_or(listener)
            } else {
                listener
            };
            let limits::ServerLimit { limit, source } =
                limit_for(limits, limit_of, servers.get(&listener));
            let open = conns.len() as u64;
            conns.sort_by_key(|r| (r.established_ns != 0, r.established_ns, r.tuple.dport));
            let l = per_listener.entry(listener).or_default();
            l.open += open;
            l.client_hosts += 1;
            l.opened += c.opened;
            l.closed += c.closed;
            l.rejected += c.rejected;
            l.unanswered += c.unanswered;
            for r in &reached {
                let r = r.to_string();
                if !l.reached.contains(&r) {
                    l.reached.push(r);
                }
            }
            (l.limit, l.limit_source) = (limit, source);
            ClientRow {
                client_ip: client.to_string(),
                open,
                close_wait: conns
                    .iter()
                    .filter(|r| r.state == tcp_state::CLOSE_WAIT)
                    .count() as u64,
                seeded: conns
                    .iter()
                    .filter(|r| r.flags & inbound_flags::SEEDED != 0)
                    .count() as u64,
                usage: limits::usage(open, limit),
                headroom: limits::headroom(open, limit),
                limit,
                limit_source: source,
                listener: listener.to_string(),
                reached: reached.iter().map(ToString::to_string).collect(),
                opened: c.opened,
                closed: c.closed,
                rejected: c.rejected,
                unanswered: c.unanswered,
                connections: conns
                    .iter()
                    .take(CONNECTIONS_LISTED)
                    .map(|r| ClientConnection {
                        client_port: r.tuple.dport,
                        state: if r.state == tcp_state::CLOSE_WAIT {
                            "close_wait"
                        } else {
                            "established"
                        },
                        age_secs: (r.established_ns != 0)
                            .then(|| now_ns.saturating_sub(r.established_ns) as f64 / 1e9),
                    })
                    .collect(),
                ..ClientRow::default()
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.usage
            .unwrap_or(0.0)
            .total_cmp(&a.usage.unwrap_or(0.0))
            .then(b.open.cmp(&a.open))
            .then(b.rejected.cmp(&a.rejected))
            .then(a.listener.cmp(&b.listener))
            .then(a.client_ip.cmp(&b.client_ip))
    });
    // Every watched listener known, and every one that retired hosts had.
    for listener in servers.keys().chain(retired.keys()) {
        if !per_listener.contains_key(listener) {
            let limit_of = *listener;
            let limits::ServerLimit { limit, source } =
                limit_for(limits, limit_of, servers.get(listener));
            per_listener.insert(
                *listener,
                ListenerRow {
                    limit,
                    limit_source: source,
                    ..ListenerRow::default()
                },
            );
        }
    }
    let listeners = per_listener
        .into_iter()
        .map(|(addr, mut l)| {
            l.listener = addr.to_string();
            l.reached.sort();
            match servers.get(&addr) {
                Some(facts) => l.server = facts.clone(),
                None => {
                    l.server.unknown = Some(
                        "no socket listens on this address now (its server stopped, or has not \
                         been seen since it started)"
                            .into(),
                    );
                }
            }
            if let Some(r) = retired.get(&addr) {
                l.opened += r.counters.opened;
                l.closed += r.counters.closed;
                l.rejected += r.counters.rejected;
                l.unanswered += r.counters.unanswered;
                l.retired_hosts = r.hosts;
            }
            l.max_cnxns_headroom = l
                .server
                .max_cnxns
                .filter(|&cap| cap > 0)
                .map(|cap| i64::from(cap) - l.open as i64);
            l
        })
        .collect();
    ServerSide {
        clients: out,
        listeners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::ip_to_bytes;

    fn tuple(client: &str, port: u16) -> Tuple {
        Tuple {
            saddr: ip_to_bytes("127.0.0.1".parse().unwrap()),
            daddr: ip_to_bytes(client.parse().unwrap()),
            sport: 2181,
            dport: port,
            _pad: 0,
        }
    }

    fn row(client: &str, port: u16, state: u8, established_ns: u64, flags: u8) -> Inbound {
        Inbound {
            tuple: tuple(client, port),
            established_ns,
            changed_ns: established_ns,
            state,
            flags,
            _pad: [0; 6],
        }
    }

    /// Open connections per client host from the kernel's rows and its seeds (a seed it
    /// also follows counted once), counters from the counter rows, a host with only
    /// refusals kept, the fullest host first, its oldest connection first.
    #[test]
    fn rows_per_client_host_count_each_connection_once() {
        const S: u64 = 1_000_000_000;
        let inbound = [
            row("127.0.0.2", 40001, tcp_state::ESTABLISHED, 5 * S, 0),
            row("127.0.0.2", 40002, tcp_state::CLOSE_WAIT, 3 * S, 0),
            row("127.0.0.3", 40003, tcp_state::ESTABLISHED, 9 * S, 0),
            // A seed the kernel adopted: its row, flagged.
            row(
                "127.0.0.2",
                40004,
                tcp_state::ESTABLISHED,
                0,
                inbound_flags::SEEDED,
            ),
        ];
        let seeds = [
            row(
                "127.0.0.2",
                40004,
                tcp_state::ESTABLISHED,
                0,
                inbound_flags::SEEDED,
            ),
            row(
                "127.0.0.3",
                40005,
                tcp_state::ESTABLISHED,
                0,
                inbound_flags::SEEDED,
            ),
        ];
        let key = |client: &str| ClientKey::of(&tuple(client, 0));
        let counters = [
            (
                key("127.0.0.2"),
                ClientCounters {
                    opened: 2,
                    ..ClientCounters::default()
                },
            ),
            (
                key("127.0.0.4"),
                ClientCounters {
                    opened: 7,
                    closed: 7,
                    rejected: 7,
                    ..ClientCounters::default()
                },
            ),
        ];
        let limits = Limits::new(None, Some(3), &[]).unwrap();
        let none = BTreeMap::new();
        let rows = client_rows(&ServerSideInputs {
            inbound: &inbound,
            seeds: &seeds,
            counters: &counters,
            listeners: &[],
            servers: &none,
            retired: &BTreeMap::new(),
            limits: &limits,
            now_ns: 10 * S,
        })
        .clients;
        // client, open, close_wait, seeded, rejected, headroom
        let summary: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {:?}",
                    r.client_ip, r.open, r.close_wait, r.seeded, r.rejected, r.headroom
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "127.0.0.2 3 1 1 0 Some(0)",
                "127.0.0.3 2 0 1 0 Some(1)",
                "127.0.0.4 0 0 0 7 Some(3)",
            ]
        );
        assert_eq!(rows[0].listener, "127.0.0.1:2181");
        assert_eq!(rows[0].opened, 2);
        let ports: Vec<(u16, Option<f64>)> = rows[0]
            .connections
            .iter()
            .map(|c| (c.client_port, c.age_secs))
            .collect();
        assert_eq!(
            ports,
            [(40004, None), (40002, Some(7.0)), (40001, Some(5.0))]
        );
    }

    /// A client host reaching one listener on two of its addresses is one budget, as
    /// ZooKeeper counts it: under the wildcard listener that accepted both (with the
    /// addresses reached), or under each address where each has a listener of its own.
    #[test]
    fn one_listener_reached_on_two_addresses_is_one_budget() {
        let at = |local: &str, port: u16| Inbound {
            tuple: Tuple {
                saddr: ip_to_bytes(local.parse().unwrap()),
                daddr: ip_to_bytes("127.0.0.9".parse().unwrap()),
                sport: 2181,
                dport: port,
                _pad: 0,
            },
            state: tcp_state::ESTABLISHED,
            ..Inbound::default()
        };
        let inbound = [
            at("127.0.0.1", 40001),
            at("127.0.0.1", 40002),
            at("127.0.0.2", 40003),
        ];
        let limits = Limits::new(None, Some(3), &[]).unwrap();
        let rows = |listeners: &[&str]| {
            let listeners: Vec<SocketAddr> = listeners.iter().map(|l| l.parse().unwrap()).collect();
            client_rows(&ServerSideInputs {
                inbound: &inbound,
                seeds: &[],
                counters: &[],
                listeners: &listeners,
                servers: &BTreeMap::new(),
                retired: &BTreeMap::new(),
                limits: &limits,
                now_ns: 0,
            })
            .clients
            .into_iter()
            .map(|r| (r.listener, r.open, r.headroom, r.reached))
            .collect::<Vec<_>>()
        };
        assert_eq!(
            rows(&["0.0.0.0:2181", "0.0.0.0:22"]),
            [(
                "0.0.0.0:2181".to_owned(),
                3,
                Some(0),
                vec!["127.0.0.1:2181".to_owned(), "127.0.0.2:2181".to_owned()]
            )]
        );
        // A dual-stack listener accepts IPv4 clients too.
        assert_eq!(rows(&["[::]:2181"])[0].1, 3);
        // Two listeners of their own (two servers on one host): two budgets.
        assert_eq!(
            rows(&["127.0.0.1:2181", "127.0.0.2:2181"]),
            [
                ("127.0.0.1:2181".to_owned(), 2, Some(1), vec![]),
                ("127.0.0.2:2181".to_owned(), 1, Some(2), vec![]),
            ]
        );
    }
}
