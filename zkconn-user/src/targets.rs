//! Which connections are ZooKeeper's: parsing of `--zk` connect strings, `--port` lists and
//! `zoo.cfg`, and the matcher userspace shares with the kernel's `PORTS`/`ENDPOINTS` maps.
//!
//! Owns: syntax and resolution of targets, with errors that name the bad part.
//! Must not: touch the kernel or `/proc` (the probe module loads what this produces).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs as _},
    path::Path,
};

use thiserror::Error;

/// ZooKeeper's default client port.
pub const DEFAULT_CLIENT_PORT: u16 = 2181;
/// Conventional TLS client port (`secureClientPort`).
pub const DEFAULT_SECURE_PORT: u16 = 2281;

/// A target as written, before name resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("connect string {input:?}: {reason}")]
    ConnectString { input: String, reason: String },
    #[error("port list {input:?}: {reason}")]
    Port { input: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    ZooCfg {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    ZooCfgRead { path: String, reason: String },
    #[error(
        "cannot resolve ZooKeeper host {host:?}: {reason}; use an IP address or fix name resolution"
    )]
    Resolve { host: String, reason: String },
}

/// Parses a ZooKeeper connect string: `host[:port][,host[:port]...][/chroot]`, IPv6 as
/// `[addr]:port` (or a bare IPv6 address without port). The chroot is accepted and ignored.
pub fn parse_connect_string(input: &str) -> Result<Vec<HostPort>, TargetError> {
    let err = |reason: String| TargetError::ConnectString {
        input: input.to_owned(),
        reason,
    };
    let trimmed = input.trim();
    // The chroot starts at the first '/' outside brackets.
    let hosts = match trimmed.find('/') {
        Some(i) => &trimmed[..i],
        None => trimmed,
    };
    if hosts.is_empty() {
        return Err(err("no host given".into()));
    }
    hosts
        .split(',')
        .map(|part| parse_host_port(part.trim()).map_err(&err))
        .collect()
}

fn parse_host_port(part: &str) -> Result<HostPort, String> {
    if part.is_empty() {
        return Err("empty host between commas".into());
    }
    if let Some(rest) = part.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{part:?} opens '[' without closing ']'"))?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => DEFAULT_CLIENT_PORT,
            _ => parse_port(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after ']'"))?,
            )?,
        };
        return Ok(HostPort {
            host: addr.to_owned(),
            port,
        });
    }
    // A bare IPv6 address (several colons) has no port.
    if part.matches(':').count() > 1 {
        part.parse::<Ipv6Addr>()
            .map_err(|_| format!("{part:?} is not an IPv6 address; write it as [addr]:port"))?;
        return Ok(HostPort {
            host: part.to_owned(),
            port: DEFAULT_CLIENT_PORT,
        });
    }
    let (host, port) = match part.split_once(':') {
        Some((host, port)) => (host, parse_port(port)?),
        None => (part, DEFAULT_CLIENT_PORT),
    };
    if host.is_empty() {
        return Err(format!("{part:?} has no host before ':'"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err("port 0 is not a port".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("{text:?} is not a port (1-65535)")),
    }
}

/// Parses `--port 2181,2281`.
pub fn parse_port_list(input: &str) -> Result<Vec<u16>, TargetError> {
    input
        .split(',')
        .map(|p| {
            parse_port(p).map_err(|reason| TargetError::Port {
                input: input.to_owned(),
                reason,
            })
        })
        .collect()
}

/// What zkconn reads from `zoo.cfg`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZooCfg {
    pub client_port: Option<u16>,
    pub secure_client_port: Option<u16>,
    pub client_port_address: Option<String>,
    /// `secureClientPortAddress`: where a standalone server binds its secure port (else
    /// `clientPortAddress`).
    pub secure_client_port_address: Option<String>,
    /// `maxClientCnxns`; ZooKeeper's default is 60, 0 (or less) means unlimited.
    pub max_client_cnxns: Option<u32>,
    /// `maxCnxns` (ZooKeeper 3.6+): the server's cap on connections per listener, from every
    /// client host together; 0 (or less) means none. ZooKeeper sets it as the system
    /// property `zookeeper.maxCnxns`, as it does any key it does not know.
    pub max_cnxns: Option<u32>,
    /// What the file does that ZooKeeper accepts but an operator should hear about (a
    /// byte order mark hiding the first key), one sentence each.
    pub warnings: Vec<String>,
    /// `dynamicConfigFile`, until [`ZooCfg::read`] has followed it.
    pub dynamic_config_file: Option<String>,
    /// Client endpoints of `server.N` lines (`host` with the client port after `;`, or the
    /// file's `clientPort`).
    pub servers: Vec<HostPort>,
}

/// A zoo.cfg's bytes (1 MiB at most, a regular file).
fn read_cfg(path: &Path) -> Result<Vec<u8>, TargetError> {
    crate::config_file::read_config_bytes(path, 1 << 20).map_err(|e| TargetError::ZooCfgRead {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl ZooCfg {
    pub fn read(path: &Path) -> Result<Self, TargetError> {
        Self::read_in(path, &|name| std::path::PathBuf::from(name))
    }

    /// As [`ZooCfg::read`], with the file names the configuration gives
    /// (`dynamicConfigFile`) resolved by `resolve`: a server's own file read through
    /// `/proc/PID/root` names its other files as that server sees them.
    pub fn read_in(
        path: &Path,
        resolve: &dyn Fn(&str) -> std::path::PathBuf,
    ) -> Result<Self, TargetError> {
        let bytes = read_cfg(path)?;
        let mut cfg = Self::parse_bytes(&path.display().to_string(), &bytes)?;
        if let Some(dynamic) = cfg.dynamic_config_file.take() {
            // ZooKeeper 3.5+ keeps the ensemble in this file; a relative name is taken from
            // the directory of zoo.cfg when it is not found as given.
            let mut file = resolve(&dynamic);
            if std::path::Path::new(&dynamic).is_relative()
                && !file.exists()
                && let Some(dir) = path.parent()
            {
                file = dir.join(&dynamic);
            }
            let bytes = read_cfg(&file)?;
            let more = Self::parse_bytes(&file.display().to_string(), &bytes)?;
            if !more.servers.is_empty() {
                cfg.servers = more.servers;
            }
            cfg.client_port = cfg.client_port.or(more.client_port);
            cfg.warnings.extend(more.warnings);
        }
        Ok(cfg)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, TargetError> {
        Self::parse_bytes(path, text.as_bytes())
    }

    /// zoo.cfg read as ZooKeeper reads it: Java properties (see [`crate::properties`]),
    /// keys and values trimmed, a later key replacing an earlier one.
    pub fn parse_bytes(path: &str, bytes: &[u8]) -> Result<Self, TargetError> {
        let props =
            crate::properties::parse(bytes).map_err(|(line, reason)| TargetError::ZooCfg {
                path: path.to_owned(),
                line,
                reason,
            })?;
        let mut cfg = ZooCfg::default();
        if let Some(first) = props.first()
            && let Some(key) = first.key.strip_prefix("\u{ef}\u{bb}\u{bf}")
        {
            cfg.warnings.push(format!(
                "{path} starts with a UTF-8 byte order mark: ZooKeeper reads its first key \
                 ({key}) with the mark's three bytes in front and ignores it, and so does \
                 zkconn; remove the mark"
            ));
        }
        // server.N client ports may be omitted and then come from clientPort, which can
        // appear later in the file: resolve after the whole file is read. A repeated
        // server.N replaces the earlier one, as in ZooKeeper.
        let mut servers: std::collections::BTreeMap<u64, (String, Option<u16>)> =
            std::collections::BTreeMap::new();
        for prop in props {
            let line = prop.line;
            let err = |reason: String| TargetError::ZooCfg {
                path: path.to_owned(),
                line,
                reason,
            };
            let (key, value) = (prop.key.as_str(), prop.value.as_str());
            match key {
                "clientPort" => cfg.client_port = Some(parse_port(value).map_err(err)?),
                "secureClientPort" => {
                    cfg.secure_client_port = Some(parse_port(value).map_err(err)?)
                }
                "clientPortAddress" => {
                    parse_host_port(value).map_err(err)?;
                    cfg.client_port_address = Some(value.trim_matches(['[', ']']).to_owned());
                }
                "secureClientPortAddress" => {
                    parse_host_port(value).map_err(err)?;
                    cfg.secure_client_port_address =
                        Some(value.trim_matches(['[', ']']).to_owned());
                }
                "maxClientCnxns" => {
                    // A Java int; ZooKeeper limits only when it is above 0.
                    let n: i32 = value.parse().map_err(|_| {
                        err(format!("maxClientCnxns {value:?} is not a whole number"))
                    })?;
                    cfg.max_client_cnxns = Some(u32::try_from(n.max(0)).unwrap_or(0));
                }
                "maxCnxns" => {
                    // Read with Integer.getInteger: what is not a number is no cap.
                    let n = value.parse::<i32>().unwrap_or_else(|_| {
                        cfg.warnings.push(format!(
                            "{path} line {line}: maxCnxns {value:?} is not a whole number; \
                             ZooKeeper then sets no cap"
                        ));
                        0
                    });
                    cfg.max_cnxns = Some(u32::try_from(n.max(0)).unwrap_or(0));
                }
                "dynamicConfigFile" => cfg.dynamic_config_file = Some(value.to_owned()),
                _ if key.starts_with("server.") => {
                    let id = key["server.".len()..].parse::<u64>().map_err(|_| {
                        err(format!(
                            "{key:?}: the server id after 'server.' is not a number"
                        ))
                    })?;
                    servers.insert(id, parse_server_line(value).map_err(err)?);
                }
                _ => {}
            }
        }
        for (host, port) in servers.into_values() {
            if let Some(port) = port.or(cfg.client_port) {
                cfg.servers.push(HostPort { host, port });
            }
        }
        Ok(cfg)
    }

    /// The targets this file describes: every server's client endpoint; for a standalone
    /// server, its `clientPortAddress` or else its client ports on any address.
    pub fn targets(&self) -> (Vec<HostPort>, Vec<u16>) {
        if !self.servers.is_empty() {
            let mut endpoints = self.servers.clone();
            if let Some(secure) = self.secure_client_port {
                for server in &self.servers {
                    endpoints.push(HostPort {
                        host: server.host.clone(),
                        port: secure,
                    });
                }
            }
            return (endpoints, Vec::new());
        }
        // Each port on its own address, or on any address when none is given.
        let mut endpoints = Vec::new();
        let mut any = Vec::new();
        let secure_address = self
            .secure_client_port_address
            .as_ref()
            .or(self.client_port_address.as_ref());
        for (port, address) in [
            (self.client_port, self.client_port_address.as_ref()),
            (self.secure_client_port, secure_address),
        ] {
            match (port, address) {
                (Some(port), Some(address)) => endpoints.push(HostPort {
                    host: address.clone(),
                    port,
                }),
                (Some(port), None) => any.push(port),
                (None, _) => {}
            }
        }
        (endpoints, any)
    }
}

/// `host:peer:election[:role][;[addr:]clientPort]` → (host, client port if given).
fn parse_server_line(value: &str) -> Result<(String, Option<u16>), String> {
    let (quorum, client) = match value.split_once(';') {
        Some((q, c)) => (q.trim(), Some(c.trim())),
        None => (value.trim(), None),
    };
    let host = if let Some(rest) = quorum.strip_prefix('[') {
        rest.split_once(']')
            .map(|(h, _)| h.to_owned())
            .ok_or_else(|| format!("{quorum:?} opens '[' without closing ']'"))?
    } else {
        let mut parts = quorum.split(':');
        let host = parts.next().unwrap_or_default();
        if host.is_empty() || parts.next().is_none() {
            return Err(format!(
                "{value:?} is not host:peerPort:electionPort[:role][;[addr:]clientPort]"
            ));
        }
        host.to_owned()
    };
    let client_port = match client {
        None | Some("") => None,
        Some(c) => {
            // `[addr:]clientPort`: the address, when given, is where the server listens.
            Some(match c.rsplit_once(':') {
                Some((_, port)) => parse_port(port)?,
                None => parse_port(c)?,
            })
        }
    };
    Ok((host, client_port))
}

/// Resolved targets: what the kernel maps and the seeding matcher use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Watched towards these addresses only.
    pub endpoints: BTreeSet<SocketAddr>,
    /// Watched towards any address.
    pub ports: BTreeSet<u16>,
}

impl Targets {
    /// Resolves every host (all its addresses). A wildcard address (`0.0.0.0`, `::`) means
    /// the port on any address, as for a server's own listener (`clientPortAddress=0.0.0.0`,
    /// `server.1=0.0.0.0:2888:3888;2181` in the server's own zoo.cfg): nothing connects to
    /// the literal wildcard. With no target at all, ZooKeeper's conventional ports 2181 and
    /// 2281 are watched on any address.
    pub fn resolve(endpoints: &[HostPort], ports: &[u16]) -> Result<Self, TargetError> {
        let mut targets = Targets::default();
        for hp in endpoints {
            if let Ok(ip) = hp.host.parse::<IpAddr>() {
                targets.insert(SocketAddr::new(ip, hp.port));
                continue;
            }
            let addrs = (hp.host.as_str(), hp.port).to_socket_addrs().map_err(|e| {
                TargetError::Resolve {
                    host: hp.host.clone(),
                    reason: e.to_string(),
                }
            })?;
            let mut any = false;
            for addr in addrs {
                targets.insert(addr);
                any = true;
            }
            if !any {
                return Err(TargetError::Resolve {
                    host: hp.host.clone(),
                    reason: "no address".into(),
                });
            }
        }
        targets.ports.extend(ports.iter().copied());
        if targets.endpoints.is_empty() && targets.ports.is_empty() {
            targets
                .ports
                .extend([DEFAULT_CLIENT_PORT, DEFAULT_SECURE_PORT]);
        }
        Ok(targets)
    }

    fn insert(&mut self, addr: SocketAddr) {
        if canonical_ip(addr.ip()).is_unspecified() {
            self.ports.insert(addr.port());
        } else {
            self.endpoints.insert(addr);
        }
    }

    /// Port → flags, as loaded into the kernel's `PORTS` map.
    pub fn port_flags(&self) -> BTreeMap<u16, u8> {
        use zkconn_common::port_flags::{ANY_ADDRESS, ENDPOINTS};
        let mut map = BTreeMap::new();
        for e in &self.endpoints {
            *map.entry(e.port()).or_insert(0) |= ENDPOINTS;
        }
        for &p in &self.ports {
            *map.entry(p).or_insert(0) |= ANY_ADDRESS;
        }
        map
    }

    /// The same decision the kernel makes for a connect to `dest`.
    pub fn matches(&self, dest: SocketAddr) -> bool {
        let dest = SocketAddr::new(canonical_ip(dest.ip()), dest.port());
        self.ports.contains(&dest.port())
            || self
                .endpoints
                .iter()
                .any(|e| SocketAddr::new(canonical_ip(e.ip()), e.port()) == dest)
    }
}

impl Targets {
    /// Whether a listening socket on `addr` accepts connections towards a target: one on
    /// a target's address, or on the wildcard of a target's port.
    pub fn listened_on(&self, addr: SocketAddr) -> bool {
        self.matches(addr)
            || (canonical_ip(addr.ip()).is_unspecified()
                && (self.ports.contains(&addr.port())
                    || self.endpoints.iter().any(|e| e.port() == addr.port())))
    }

    /// Each target as shown to users: `ip:port` endpoints, `*:port` for any address.
    pub fn names(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.endpoints.iter().map(|e| e.to_string()).collect();
        parts.extend(self.ports.iter().map(|p| format!("*:{p}")));
        parts
    }
}

impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The 16-byte form the kernel maps use (IPv4 as IPv4-mapped IPv6).
pub fn ip_to_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Inverse of [`ip_to_bytes`].
pub fn ip_from_bytes(bytes: [u8; 16]) -> IpAddr {
    canonical_ip(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[rstest]
    #[case("zk1", vec![hp("zk1", 2181)])]
    #[case("zk1:2182,zk2:2183,zk3/hbase", vec![hp("zk1", 2182), hp("zk2", 2183), hp("zk3", 2181)])]
    #[case(" 10.0.0.1:2181 , 10.0.0.2 ", vec![hp("10.0.0.1", 2181), hp("10.0.0.2", 2181)])]
    #[case("[::1]:2182", vec![hp("::1", 2182)])]
    #[case("[fe80::1]", vec![hp("fe80::1", 2181)])]
    #[case("::1", vec![hp("::1", 2181)])]
    #[case("zk-1.example_site.net:2181/a/b/c", vec![hp("zk-1.example_site.net", 2181)])]
    fn connect_strings_parse(#[case] input: &str, #[case] expected: Vec<HostPort>) {
        assert_eq!(parse_connect_string(input).unwrap(), expected);
    }

    #[rstest]
    #[case("", "no host given")]
    #[case("/hbase", "no host given")]
    #[case("zk1,,zk2", "empty host between commas")]
    #[case("zk1:99999", "\"99999\" is not a port (1-65535)")]
    #[case("zk1:0", "port 0 is not a port")]
    #[case("zk1:abc", "\"abc\" is not a port (1-65535)")]
    #[case(":2181", "\":2181\" has no host before ':'")]
    #[case("[::1:2181", "\"[::1:2181\" opens '[' without closing ']'")]
    #[case("[zk1]:2181", "\"zk1\" is not an IPv6 address")]
    #[case(
        "fe80::1::2",
        "\"fe80::1::2\" is not an IPv6 address; write it as [addr]:port"
    )]
    #[case("zk 1:2181", "\"zk 1\" is not a valid host name")]
    fn bad_connect_strings_name_the_bad_part(#[case] input: &str, #[case] reason: &str) {
        assert_eq!(
            parse_connect_string(input).unwrap_err(),
            TargetError::ConnectString {
                input: input.into(),
                reason: reason.into()
            }
        );
    }

    #[rstest]
    #[case("2181", Ok(vec![2181]))]
    #[case("2181,2281, 3181", Ok(vec![2181, 2281, 3181]))]
    #[case("2181,x", Err("\"x\" is not a port (1-65535)"))]
    #[case("", Err("\"\" is not a port (1-65535)"))]
    fn port_lists(#[case] input: &str, #[case] expected: Result<Vec<u16>, &str>) {
        let got = parse_port_list(input).map_err(|e| match e {
            TargetError::Port { reason, .. } => reason,
            other => other.to_string(),
        });
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn zoo_cfg_ensemble() {
        let cfg = ZooCfg::parse(
            "zoo.cfg",
            "# comment\ntickTime=2000\nmaxClientCnxns=5\nclientPort=2182\n\
             server.1=zk1:2888:3888\nserver.2=zk2:2888:3888:participant;2183\n\
             server.3=[::1]:2888:3888;0.0.0.0:2184\nsecureClientPort=2281\n",
        )
        .unwrap();
        assert_eq!(cfg.max_client_cnxns, Some(5));
        assert_eq!(
            cfg.servers,
            vec![hp("zk1", 2182), hp("zk2", 2183), hp("::1", 2184)]
        );
        let (endpoints, ports) = cfg.targets();
        assert!(ports.is_empty());
        assert_eq!(endpoints.len(), 6);
        assert!(endpoints.contains(&hp("zk2", 2281)));
    }

    /// What ZooKeeper accepts, zkconn reads the same way: Java properties syntax, a
    /// negative limit meaning unlimited, a repeated key replacing the earlier one, Latin-1.
    #[test]
    fn zoo_cfg_is_read_as_zookeeper_reads_it() {
        let cfg = ZooCfg::parse_bytes(
            "z",
            b"! comment\nclientPort : 2181\nmaxClientCnxns -1\nserver.1=zk1:2888:3888\n\
              server.1=zk9:2888:\\\n   3888;2281\ndataDir=/caf\xe9\n",
        )
        .unwrap();
        assert_eq!(cfg.client_port, Some(2181));
        assert_eq!(cfg.max_client_cnxns, Some(0));
        assert_eq!(cfg.servers, vec![hp("zk9", 2281)]);
        assert!(cfg.warnings.is_empty());

        let bom =
            ZooCfg::parse_bytes("z", b"\xef\xbb\xbfclientPort=2181\nmaxClientCnxns=5\n").unwrap();
        assert_eq!(bom.client_port, None);
        assert_eq!(bom.max_client_cnxns, Some(5));
        assert!(
            bom.warnings[0].contains("byte order mark") && bom.warnings[0].contains("clientPort"),
            "{:?}",
            bom.warnings
        );
    }

    #[test]
    fn a_dynamic_config_file_brings_the_ensemble() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("zoo.cfg"),
            "clientPort=2181\ndynamicConfigFile=zoo.cfg.dynamic.100000000\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("zoo.cfg.dynamic.100000000"),
            "server.1=10.0.0.1:2888:3888:participant;0.0.0.0:2181\n\
             server.2=10.0.0.2:2888:3888:participant;2182\n",
        )
        .unwrap();
        let cfg = ZooCfg::read(&dir.path().join("zoo.cfg")).unwrap();
        assert_eq!(
            cfg.servers,
            vec![hp("10.0.0.1", 2181), hp("10.0.0.2", 2182)]
        );
        std::fs::remove_file(dir.path().join("zoo.cfg.dynamic.100000000")).unwrap();
        let e = ZooCfg::read(&dir.path().join("zoo.cfg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zoo.cfg.dynamic.100000000"), "{e}");
    }

    #[test]
    fn zoo_cfg_standalone() {
        let cfg = ZooCfg::parse("z", "clientPort=2181\nclientPortAddress=127.0.0.5\n").unwrap();
        assert_eq!(cfg.targets(), (vec![hp("127.0.0.5", 2181)], vec![]));
        let cfg = ZooCfg::parse("z", "clientPort=2181\nsecureClientPort=2281\n").unwrap();
        assert_eq!(cfg.targets(), (vec![], vec![2181, 2281]));
        let cfg = ZooCfg::parse(
            "z",
            "clientPortAddress=127.0.0.2\nclientPort=2181\nsecureClientPort=2281\n\
             secureClientPortAddress=127.0.0.5\n",
        )
        .unwrap();
        assert_eq!(
            cfg.targets(),
            (vec![hp("127.0.0.2", 2181), hp("127.0.0.5", 2281)], vec![])
        );
        let cfg = ZooCfg::parse(
            "z",
            "clientPort=2181\nsecureClientPort=2281\nsecureClientPortAddress=127.0.0.5\n",
        )
        .unwrap();
        assert_eq!(cfg.targets(), (vec![hp("127.0.0.5", 2281)], vec![2181]));
    }

    #[rstest]
    #[case("clientPort=abc", 1, "\"abc\" is not a port (1-65535)")]
    #[case(
        "\n\nmaxClientCnxns=ten",
        3,
        "maxClientCnxns \"ten\" is not a whole number"
    )]
    #[case("# c\nclientPort=\\u12", 2, "malformed \\u escape \\u12")]
    #[case(
        "server.x=zk1:2888:3888",
        1,
        "\"server.x\": the server id after 'server.' is not a number"
    )]
    #[case(
        "server.1=zk1",
        1,
        "\"zk1\" is not host:peerPort:electionPort[:role][;[addr:]clientPort]"
    )]
    #[case("server.1=zk1:2888:3888;x", 1, "\"x\" is not a port (1-65535)")]
    fn bad_zoo_cfg_names_line(#[case] text: &str, #[case] line: usize, #[case] reason: &str) {
        assert_eq!(
            ZooCfg::parse("zoo.cfg", text).unwrap_err(),
            TargetError::ZooCfg {
                path: "zoo.cfg".into(),
                line,
                reason: reason.into()
            }
        );
    }

    #[test]
    fn defaults_and_matching() {
        let t = Targets::resolve(&[], &[]).unwrap();
        assert_eq!(t.ports, BTreeSet::from([2181, 2281]));
        let t = Targets::resolve(&[hp("127.0.0.9", 2181), hp("::1", 2182)], &[3000]).unwrap();
        assert!(t.matches("127.0.0.9:2181".parse().unwrap()));
        assert!(t.matches("[::ffff:127.0.0.9]:2181".parse().unwrap()));
        assert!(!t.matches("127.0.0.8:2181".parse().unwrap()));
        assert!(t.matches("[::1]:2182".parse().unwrap()));
        assert!(t.matches("10.1.1.1:3000".parse().unwrap()));
        let flags = t.port_flags();
        assert_eq!(flags[&2181], zkconn_common::port_flags::ENDPOINTS);
        assert_eq!(flags[&3000], zkconn_common::port_flags::ANY_ADDRESS);
    }

    #[rstest]
    #[case("0.0.0.0", 2181)]
    #[case("::", 2182)]
    #[case("::ffff:0.0.0.0", 2183)]
    fn a_wildcard_address_watches_the_port_on_any_address(#[case] host: &str, #[case] port: u16) {
        let t = Targets::resolve(&[hp(host, port), hp("127.0.0.9", 9999)], &[]).unwrap();
        assert_eq!(t.ports, BTreeSet::from([port]));
        assert_eq!(t.endpoints.len(), 1, "{t:?}");
        assert!(t.matches(SocketAddr::new("127.0.0.1".parse().unwrap(), port)));
        assert!(t.matches(SocketAddr::new("::1".parse().unwrap(), port)));
        assert!(!t.matches(SocketAddr::new("127.0.0.1".parse().unwrap(), 9999)));
    }

    #[test]
    fn a_servers_own_zoo_cfg_naming_itself_by_wildcard_watches_its_port() {
        let cfg = ZooCfg::parse(
            "zoo.cfg",
            "clientPort=2181\nserver.1=0.0.0.0:2888:3888;2181\nserver.2=10.0.0.2:2888:3888\n",
        )
        .unwrap();
        let (endpoints, ports) = cfg.targets();
        let t = Targets::resolve(&endpoints, &ports).unwrap();
        assert_eq!(t.ports, BTreeSet::from([2181]));
        assert!(t.matches("127.0.0.1:2181".parse().unwrap()));
    }

    #[test]
    fn unresolvable_host_is_named() {
        let err = Targets::resolve(&[hp("no-such-host.invalid", 2181)], &[]).unwrap_err();
        assert!(
            matches!(err, TargetError::Resolve { ref host, .. } if host == "no-such-host.invalid")
        );
    }

    #[test]
    fn ip_bytes_round_trip() {
        for ip in ["127.0.0.1", "::1", "fe80::2"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_from_bytes(ip_to_bytes(ip)), ip);
        }
    }
}
