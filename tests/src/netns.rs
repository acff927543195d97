//! Network namespaces joined by veth pairs, removed when dropped.

use std::{
    net::IpAddr,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

/// A network namespace joined to this one by a veth pair: the host side has `host`, the
/// namespace side `inside` (a /30 of 10.213.0.0/16). Removed on drop.
pub struct NetNs {
    pub name: String,
    pub host: IpAddr,
    pub inside: IpAddr,
    /// The host side of the veth pair.
    pub veth: String,
}

impl NetNs {
    pub fn create() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("zkconn-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let veth = format!("zkv{}{n}", pid % 100_000);
        let (a, b) = ((pid % 250) as u8, (n * 4 % 252) as u8);
        let host = IpAddr::from([10, 213, a, b + 1]);
        let inside = IpAddr::from([10, 213, a, b + 2]);
        let ns = Self {
            name: name.clone(),
            host,
            inside,
            veth: veth.clone(),
        };
        let peer = format!("{veth}p");
        for args in [
            vec!["netns", "add", &name],
            vec!["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", &name],
            vec!["addr", "add", &format!("{host}/30"), "dev", &veth],
            vec!["link", "set", &veth, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{inside}/30"),
                "dev",
                &peer,
            ],
            vec!["-n", &name, "link", "set", &peer, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .context("cannot run ip (cargo xtask setup installs iproute2)")?;
            if !out.status.success() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
