//! Processes in another network namespace (a container's, say) connecting to ZooKeeper
//! across a veth pair, with addresses that exist only inside the namespace: counted and
//! seeded like any other. Root only; run with `cargo xtask test`.

use std::time::Duration;

use anyhow::Result;
use integration_tests::{NetNs, RawClient, ZkServer, Zkconn, field, process, wait_settled};
use serde_json::Value;

#[test]
fn connections_from_another_network_namespace_are_counted_and_seeded() -> Result<()> {
    let ns = NetNs::create()?;
    // The server listens on the host side of the veth; the clients only see it from inside.
    let zk = ZkServer::start(ns.host, 0, &[])?;
    let inside = |count| RawClient {
        netns: Some(ns.name.clone()),
        interval: Some(Duration::from_millis(100)),
        ..RawClient::new(zk.addr, count)
    };
    let before = inside(2).spawn()?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let after = inside(3).spawn()?;
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let row = snap["servers"]
        .as_array()
        .and_then(|rows| {
            rows.iter().find(|r| {
                r["server"] == zk.addr.to_string() && r["local_ip"] == ns.inside.to_string()
            })
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(field(&row, "open")?, 5, "{snap:#}");
    assert_eq!(field(&row, "opened")?, 3);
    let b = process(&snap, before.pid())?;
    assert_eq!((field(b, "open")?, field(b, "seeded")?), (2, 2));
    let a = process(&snap, after.pid())?;
    assert_eq!((field(a, "open")?, field(a, "opened")?), (3, 3));
    assert_eq!(snap["probe"]["seeds"]["seeded"], 2);
    assert_eq!(snap["probe"]["seeds"]["conflicts"], 0);
    Ok(())
}
