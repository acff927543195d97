//! The server's side: one row per client host on each watched listener of this host (a
//! ZooKeeper server), from the accepted connections the kernel follows and its counters.

use std::collections::BTreeMap;

use serde::Serialize;
use zkconn_common::{ClientCounters, ClientKey, Inbound, Tuple, inbound_flags, tcp_state};

use super::build::endpoint;
use crate::{
    limits::{self, LimitSource, Limits},
    targets::ip_from_bytes,
};

/// Connections listed per row at most (the oldest first); `open` counts them all.
pub const CONNECTIONS_LISTED: usize = 64;

/// One client host on one listener: what `maxClientCnxns` counts on the server.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientRow {
    /// The listener as the client reached it: `address:port`.
    pub listener: String,
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
}

/// One open accepted connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientConnection {
    pub client_port: u16,
    /// `established` or `close_wait`.
    pub state: &'static str,
    /// Seconds since the handshake; `null` for a connection that predates zkconn.
    pub age_secs: Option<f64>,
}

/// The rows, most used first: live rows from `inbound` and `seeds` (a seed the kernel also
/// follows, same tuple, counts once), counters from `counters`.
pub fn client_rows(
    inbound: &[Inbound],
    seeds: &[Inbound],
    counters: &[(ClientKey, ClientCounters)],
    limits: &Limits,
    now_ns: u64,
) -> Vec<ClientRow> {
    let mut live: BTreeMap<Tuple, &Inbound> = BTreeMap::new();
    for row in seeds.iter().chain(inbound) {
        // The kernel's own row wins over a seed of the same tuple.
        live.insert(row.tuple, row);
    }
    let mut rows: BTreeMap<ClientKey, (ClientCounters, Vec<&Inbound>)> = BTreeMap::new();
    for row in live.values() {
        rows.entry(ClientKey::of(&row.tuple))
            .or_default()
            .1
            .push(row);
    }
    for (key, c) in counters {
        rows.entry(*key).or_default().0.add(c);
    }
    let mut out: Vec<ClientRow> = rows
        .into_iter()
        .map(|(key, (c, mut conns))| {
            let listener = endpoint(key.local, key.port);
            let limits::ServerLimit { limit, source } = listener.parse().map_or(
                limits::ServerLimit {
                    limit: limits::ZOOKEEPER_DEFAULT,
                    source: LimitSource::Default,
                },
                |s| limits.for_server(s),
            );
            let open = conns.len() as u64;
            conns.sort_by_key(|r| (r.established_ns != 0, r.established_ns, r.tuple.dport));
            ClientRow {
                client_ip: ip_from_bytes(key.client).to_string(),
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
                listener,
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
    out
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
        let rows = client_rows(&inbound, &seeds, &counters, &limits, 10 * S);
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
}
