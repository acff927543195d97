//! Reading rows out of zkconn's JSON document.

use std::net::SocketAddr;

use anyhow::anyhow;
use serde_json::Value;

/// The `servers` row of `server` seen from this host's usual source address, 127.0.0.1.
pub fn server_row(snap: &Value, server: SocketAddr) -> anyhow::Result<&Value> {
    snap["servers"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["server"] == server.to_string() && r["local_ip"] == "127.0.0.1")
        })
        .ok_or_else(|| anyhow!("no row for {server} from 127.0.0.1 in {snap:#}"))
}

/// The `processes` row of `pid`.
pub fn process(snap: &Value, pid: u32) -> anyhow::Result<&Value> {
    snap["processes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["pid"] == pid))
        .ok_or_else(|| anyhow!("no process row for pid {pid} in {snap:#}"))
}

/// The `servers` rows towards `server`, summed over local IPs: (open, close_wait).
pub fn server_open(snap: &Value, server: SocketAddr) -> (u64, u64) {
    let name = server.to_string();
    snap["servers"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["server"] == name.as_str())
                .fold((0, 0), |(o, c), r| {
                    (
                        o + r["open"].as_u64().unwrap_or(0),
                        c + r["close_wait"].as_u64().unwrap_or(0),
                    )
                })
        })
        .unwrap_or((0, 0))
}

/// Reads a u64 field, failing with the row when absent.
pub fn field(row: &Value, name: &str) -> anyhow::Result<u64> {
    row[name]
        .as_u64()
        .ok_or_else(|| anyhow!("field {name} missing in {row:#}"))
}

/// The row of `rows` (a top-level array) whose `key` equals `value`.
pub fn row_where<'a>(
    snap: &'a Value,
    rows: &str,
    key: &str,
    value: &str,
) -> anyhow::Result<&'a Value> {
    snap[rows]
        .as_array()
        .and_then(|r| r.iter().find(|row| row[key] == value))
        .ok_or_else(|| anyhow!("no {rows} row with {key} = {value} in {snap:#}"))
}
