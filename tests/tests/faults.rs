//! Faults zkconn must survive with exact counts. Root only; run with `cargo xtask test`.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use integration_tests::{
    Client, ZkServer, Zkconn, field, fresh_ipv4, process, server_row, ss_count, wait_settled,
};

/// The ZooKeeper server crashes and comes back under 500 clients that reconnect, as client
/// libraries do: the storm of closes, refused connects and reconnects is counted, and the
/// open counts end exact.
#[test]
fn a_zookeeper_restart_under_500_clients_is_counted_and_ends_exact() -> Result<()> {
    let mut zk = ZkServer::start(fresh_ipv4(), 0, &[])?;
    let z = Zkconn::start(&["--zk", &zk.addr.to_string()])?;
    let mut clients = Client::reconnecting(zk.addr, 500)?;
    // Older than the refusal window (1 s): a crash right after the handshake would look
    // exactly like a refusal (accepted, closed, not a byte sent).
    thread::sleep(Duration::from_secs(2));
    zk.restart()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connected = clients.connected()?;
        let established = ss_count(zk.addr, "established")?;
        if connected == 500 && established == 500 {
            break;
        }
        if Instant::now() > deadline {
            bail!("after the restart: {connected} connected, {established} established");
        }
        thread::sleep(Duration::from_millis(200));
    }
    wait_settled(zk.addr)?;
    let snap = z.finish()?;

    let p = process(&snap, clients.pid())?;
    let open = field(p, "open")?;
    let opened = field(p, "opened")?;
    let closed = field(p, "closed")?;
    let failed = field(p, "failed")?;
    assert_eq!(open, 500, "{p:#}");
    assert_eq!(
        closed, 500,
        "every first connection was closed by the crash once: {p:#}"
    );
    // Each connect either holds now, was closed by the crash, or was refused while the
    // server was down.
    assert_eq!(opened, open + closed + failed, "{p:#}");
    assert_eq!(
        (
            field(p, "close_wait")?,
            field(p, "closing")?,
            field(p, "rejected")?
        ),
        (0, 0, 0)
    );
    let row = server_row(&snap, zk.addr)?;
    assert_eq!(
        (
            field(row, "open")?,
            field(row, "opened")?,
            field(row, "closed")?
        ),
        (500, opened, 500)
    );
    assert_eq!(snap["probe"]["lost"], 0);
    assert_eq!(snap["probe"]["overflow"], 0);
    Ok(())
}
