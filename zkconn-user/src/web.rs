//! `--web-config-file`: TLS and basic authentication for the daemon's HTTP server, in the
//! format of the Prometheus exporter toolkit's web configuration file
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>),
//! so the file that protects node_exporter protects zkconn.
//!
//! Owns: reading and checking the file (every mistake is one sentence naming the key),
//! building the TLS acceptor, checking a client's certificate names and a request's
//! credentials. The file, and the certificate files it names, are read again when one of
//! them changes (checked at each new connection), as the toolkit reads it at each request:
//! a renewed certificate is picked up without a restart. A file that turns bad refuses
//! every connection until it is mended (fail closed: a typo must not reopen what it locked).
//!
//! Where zkconn differs from the toolkit, by design, each said in docs/bad-input.md:
//! TLS 1.2 and 1.3 only; `RequireAnyClientCert` (any certificate, unverified) is refused;
//! `client_allowed_sans` matches DNS, URI and IP address names, not e-mail addresses;
//! HTTP/1.1 only (`http2` is accepted and has no effect).
//!
//! Must not: block the server. A bcrypt check (tens of milliseconds by design) runs on a
//! blocking thread, queued per user name, two at most at once, and a right answer is
//! remembered: a scrape pays it once (see [`Verdicts`]).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// The file as written. Unknown keys are refused, as the toolkit refuses them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<Users>,
    auth_excluded_paths: Option<Vec<String>>,
}

/// `basic_auth_users`, in file order: a user given twice is refused (a map would keep the
/// last silently, and the toolkit's strict parsing refuses it).
#[derive(Debug, Default)]
struct Users(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Users;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of user names to bcrypt hashes")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Users, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = m.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Users(pairs))
            }
            fn visit_unit<E>(self) -> Result<Users, E> {
                Ok(Users::default())
            }
        }
        d.deserialize_any(Pairs)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for the file's sake: zkconn serves HTTP/1.1 only.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The response headers the toolkit lets a file set, with the values it accepts (`None`:
/// any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// The largest web configuration file read (it holds a few keys and, at most, inline
/// certificates).
const MAX_FILE: u64 = 1 << 20;

/// What a configuration protects with. A file read while the daemon runs may change users,
/// passwords, certificates and names, never weaken this (see [`Protection::dropped_by`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protection {
    pub tls: bool,
    pub basic: bool,
    pub client_certs: bool,
    /// `client_allowed_sans` is set.
    pub allowed_names: bool,
    /// `auth_excluded_paths`.
    pub excluded: std::collections::BTreeSet<String>,
}

impl Protection {
    /// What `self` has that `new` lacks, named; empty when `new` keeps every kind of
    /// protection `self` has and excludes no path `self` does not. Kinds are fixed at start:
    /// a file half rewritten may hold one kind and not yet another, and is refused.
    pub fn dropped_by(&self, new: &Protection) -> Vec<String> {
        let mut lost = Vec::new();
        for (had, has, what) in [
            (self.tls, new.tls, "TLS"),
            (self.basic, new.basic, "basic authentication"),
            (
                self.client_certs,
                new.client_certs,
                "required client certificates",
            ),
            (self.allowed_names, new.allowed_names, "client_allowed_sans"),
        ] {
            if had && !has {
                lost.push(what.to_owned());
            }
        }
        let opened: Vec<&str> = new
            .excluded
            .difference(&self.excluded)
            .map(String::as_str)
            .collect();
        if (self.basic || new.basic) && !opened.is_empty() {
            lost.push(format!("authentication on {}", opened.join(", ")));
        }
        lost
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![if self.tls { "TLS" } else { "plain HTTP" }];
        if self.basic {
            parts.push("basic authentication");
        }
        if self.client_certs {
            parts.push("client certificates");
        }
        if !self.basic && !self.client_certs {
            parts.push("no authentication");
        }
        f.write_str(&parts.join(", "))
    }
}

/// A checked web configuration.
pub struct WebConfig {
    /// Set when the file configures TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether clients must present a certificate that verifies.
    pub client_certs_required: bool,
    /// A verified client certificate must carry one of these names, when not empty.
    allowed_sans: Vec<AllowedName>,
    /// User name → bcrypt hash. Empty: no basic authentication.
    users: BTreeMap<String, String>,
    /// The bcrypt cost of the dearest hash, for the decoy.
    cost: u32,
    /// A hash of that cost that stands in for an unknown user's, so a wrong name costs the
    /// same time as a wrong password. Made when first needed.
    decoy: std::sync::OnceLock<String>,
    /// Paths served without credentials.
    excluded: Vec<String>,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// What a change to re-reads: the file and the files it names, with what they were.
    watched: Vec<(PathBuf, Option<Stamp>)>,
}

/// What tells a file changed: modification and change times, size and inode (a
/// symlink swap, as Kubernetes updates a mounted secret, changes the inode).
type Stamp = (SystemTime, i64, i64, u64, u64);

enum AllowedName {
    Dns(String),
    Uri(String),
    Ip(ServerName<'static>),
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a file was when last looked at, to tell whether it changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp(Option<Stamp>);

impl FileStamp {
    pub fn of(path: &Path) -> Self {
        Self(stamp(path))
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.modified().ok()?,
        m.ctime(),
        m.ctime_nsec(),
        m.len(),
        m.ino(),
    ))
}

/// Reads a file named by the web configuration: a regular file, at most [`MAX_FILE`].
fn read_named(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    crate::config_file::read_config_bytes(path, MAX_FILE)
        .with_context(|| format!("{key} {}", path.display()))
}

impl WebConfig {
    /// Reads and checks `path`. Every error is one sentence naming what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        // Each file's stamp is taken before it is read: a write that lands in between is
        // seen as a change at the next connection, never missed.
        let mut watched = vec![(path.to_owned(), stamp(path))];
        let text = crate::config_file::read_config_bytes(path, MAX_FILE)?;
        let file: File = if text.iter().all(u8::is_ascii_whitespace) {
            File::default()
        } else {
            serde_yaml::from_slice(&text).map_err(|e| anyhow!("{e}"))?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut resolve = |p: &Path| {
            let p = dir.join(p);
            watched.push((p.clone(), stamp(&p)));
            p
        };
        let tls_file = file.tls_server_config.unwrap_or_default();
        let (tls, client_certs_required, allowed_sans) = tls(tls_file, &mut resolve)?;
        let http = file.http_server_config.unwrap_or_default();
        let headers = headers(http.headers.unwrap_or_default())?;
        let mut users = BTreeMap::new();
        let mut cost = 0;
        for (user, hash) in file.basic_auth_users.unwrap_or_default().0 {
            if user.contains(':') {
                bail!(
                    "basic_auth_users: the user name {user:?} holds a ':', which basic authentication cannot carry"
                );
            }
            let parts = hash.parse::<bcrypt::HashParts>().map_err(|_| {
                anyhow!(
                    "basic_auth_users: the password of {user:?} is not a bcrypt hash \
                     (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )
            })?;
            cost = cost.max(parts.get_cost());
            if users.insert(user.clone(), hash).is_some() {
                bail!("basic_auth_users: {user:?} is given twice");
            }
        }
        let excluded = file.auth_excluded_paths.unwrap_or_default();
        if let Some(p) = excluded.iter().find(|p| !p.starts_with('/')) {
            bail!("auth_excluded_paths: {p:?} is not a path (it must start with '/')");
        }
        Ok(Self {
            tls,
            client_certs_required,
            allowed_sans,
            users,
            cost,
            decoy: std::sync::OnceLock::new(),
            excluded,
            headers,
            watched,
        })
    }

    /// Whether the file or a file it names changed since it was read.
    pub fn changed(&self) -> bool {
        self.watched.iter().any(|(p, was)| stamp(p) != *was)
    }

    /// What the file protects with, for the log and for refusing a reload that would
    /// drop protection the daemon started with.
    pub fn protection(&self) -> Protection {
        Protection {
            tls: self.tls.is_some(),
            basic: !self.users.is_empty(),
            client_certs: self.client_certs_required,
            allowed_names: !self.allowed_sans.is_empty(),
            excluded: self.excluded.iter().cloned().collect(),
        }
    }

    /// Whether requests need credentials.
    pub fn authenticates(&self) -> bool {
        !self.users.is_empty()
    }

    /// For `--listen` on a non-loopback address: whether someone who can connect must also
    /// prove who they are over an encrypted connection.
    pub fn protects(&self) -> bool {
        self.tls.is_some() && (self.authenticates() || self.client_certs_required)
    }

    /// Whether a verified client certificate (its chain, leaf first) carries an allowed
    /// name; always true without `client_allowed_sans`.
    pub fn client_allowed(&self, chain: Option<&[CertificateDer<'_>]>) -> bool {
        if self.allowed_sans.is_empty() {
            return true;
        }
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return false;
        };
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        self.allowed_sans.iter().any(|name| match name {
            AllowedName::Dns(n) => cert.valid_dns_names().any(|d| d == n),
            AllowedName::Uri(u) => cert.valid_uri_names().any(|d| d == u),
            AllowedName::Ip(ip) => cert.verify_is_valid_for_subject_name(ip).is_ok(),
        })
    }
}

/// The TLS part: the acceptor (when configured), whether client certificates are required,
/// and the allowed client names.
fn tls(
    t: TlsFile,
    resolve: &mut impl FnMut(&Path) -> PathBuf,
) -> anyhow::Result<(Option<tokio_rustls::TlsAcceptor>, bool, Vec<AllowedName>)> {
    // What needs no file first: a mistake here is named even before the files exist.
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let verify = match auth {
        "NoClientCert" | "RequestClientCert" => None,
        "VerifyClientCertIfGiven" => Some(false),
        "RequireAndVerifyClientCert" => Some(true),
        "RequireAnyClientCert" => bail!(
            "tls_server_config: client_auth_type RequireAnyClientCert lets any certificate in, \
             verified by no one; zkconn refuses it: use RequireAndVerifyClientCert with \
             client_ca_file"
        ),
        other => bail!(
            "tls_server_config: client_auth_type {other:?} is not one of NoClientCert, \
             RequestClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    };
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref())?;
    if t.cipher_suites.as_ref().is_some_and(Vec::is_empty) {
        bail!("tls_server_config: cipher_suites is empty; leave it out for the defaults");
    }
    if t.curve_preferences.as_ref().is_some_and(Vec::is_empty) {
        bail!("tls_server_config: curve_preferences is empty; leave it out for the defaults");
    }
    let mut allowed = Vec::new();
    for name in t.client_allowed_sans.iter().flatten() {
        if verify.is_none() {
            bail!(
                "tls_server_config: client_allowed_sans needs verified client certificates: \
                 set client_auth_type to RequireAndVerifyClientCert"
            );
        }
        allowed.push(allowed_name(name)?);
    }
    match (
        t.cert.is_some() || t.cert_file.is_some(),
        t.key.is_some() || t.key_file.is_some(),
    ) {
        (true, false) => bail!("tls_server_config: cert_file without key_file"),
        (false, true) => bail!("tls_server_config: key_file without cert_file"),
        _ => {}
    }
    let cert_pem = match (&t.cert, &t.cert_file) {
        (Some(_), Some(_)) => bail!("tls_server_config: give cert or cert_file, not both"),
        (Some(c), None) => Some(c.as_bytes().to_vec()),
        (None, Some(p)) => Some(read_named(&resolve(p), "tls_server_config.cert_file")?),
        (None, None) => None,
    };
    let key_pem = match (&t.key, &t.key_file) {
        (Some(_), Some(_)) => bail!("tls_server_config: give key or key_file, not both"),
        (Some(k), None) => Some(k.as_bytes().to_vec()),
        (None, Some(p)) => Some(read_named(&resolve(p), "tls_server_config.key_file")?),
        (None, None) => None,
    };
    let ca_pem = match (&t.client_ca, &t.client_ca_file) {
        (Some(_), Some(_)) => {
            bail!("tls_server_config: give client_ca or client_ca_file, not both")
        }
        (Some(c), None) => Some(c.as_bytes().to_vec()),
        (None, Some(p)) => Some(read_named(&resolve(p), "tls_server_config.client_ca_file")?),
        (None, None) => None,
    };
    let (cert_pem, key_pem) = match (cert_pem, key_pem) {
        (None, None) => {
            let rest = t.client_auth_type.is_some()
                || ca_pem.is_some()
                || t.client_allowed_sans.is_some()
                || t.min_version.is_some()
                || t.max_version.is_some()
                || t.cipher_suites.is_some()
                || t.curve_preferences.is_some();
            if rest {
                bail!(
                    "tls_server_config: TLS settings without a certificate: add cert_file and \
                     key_file (or cert and key)"
                );
            }
            return Ok((None, false, Vec::new()));
        }
        (Some(c), Some(k)) => (c, k),
        _ => bail!("tls_server_config: give both cert_file and key_file"),
    };
    if key_pem
        .windows(b"ENCRYPTED".len())
        .any(|w| w == b"ENCRYPTED")
    {
        bail!(
            "tls_server_config: the key is encrypted; give it unencrypted (as the toolkit \
             needs it too), readable only by zkconn's user"
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("tls_server_config: the certificate is not PEM ({e})"))?;
    if certs.is_empty() {
        bail!("tls_server_config: the certificate file holds no PEM certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("tls_server_config: the key is not a PEM private key ({e})"))?;

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        provider.cipher_suites = cipher_suites(&provider, names)?;
    }
    if let Some(names) = &t.curve_preferences {
        provider.kx_groups = curves(&provider, names)?;
    }
    let provider = Arc::new(provider);

    let roots = match &ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                let c =
                    c.map_err(|e| anyhow!("tls_server_config: the client CA is not PEM ({e})"))?;
                roots.add(c).map_err(|e| {
                    anyhow!("tls_server_config: a client CA certificate is not usable ({e})")
                })?;
            }
            if roots.is_empty() {
                bail!("tls_server_config: the client CA holds no PEM certificate");
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let verifier = |optional: bool| -> anyhow::Result<_> {
        let roots = roots.clone().ok_or_else(|| {
            anyhow!(
                "tls_server_config: client_auth_type {auth} needs client_ca_file (or client_ca)"
            )
        })?;
        let b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        let b = if optional {
            b.allow_unauthenticated()
        } else {
            b
        };
        b.build()
            .map_err(|e| anyhow!("tls_server_config: the client CA cannot verify clients ({e})"))
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| anyhow!("tls_server_config: {e}"))?;
    let (builder, required) = match verify {
        None => {
            if roots.is_some() {
                bail!(
                    "tls_server_config: a client CA is given but client_auth_type is {auth}: \
                     set it to RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
                );
            }
            (builder.with_no_client_auth(), false)
        }
        Some(required) => (
            builder.with_client_cert_verifier(verifier(!required)?),
            required,
        ),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow!("tls_server_config: the key does not fit the certificate ({e})"))?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok((
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        required,
        allowed,
    ))
}

fn allowed_name(name: &str) -> anyhow::Result<AllowedName> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(AllowedName::Ip(ServerName::IpAddress(ip.into())));
    }
    if name.contains("://") || name.starts_with("spiffe:") || name.starts_with("urn:") {
        return Ok(AllowedName::Uri(name.to_owned()));
    }
    if ServerName::try_from(name).is_ok() {
        return Ok(AllowedName::Dns(name.to_owned()));
    }
    bail!(
        "tls_server_config: client_allowed_sans entry {name:?} is not a DNS name, URI or IP \
         address (zkconn does not match e-mail names)"
    )
}

/// TLS versions from `min_version`/`max_version` (the toolkit's `TLS10`..`TLS13`).
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> anyhow::Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let rank = |key: &str, v: &str| -> anyhow::Result<u8> {
        match v {
            "TLS10" => Ok(10),
            "TLS11" => Ok(11),
            "TLS12" => Ok(12),
            "TLS13" => Ok(13),
            other => {
                bail!("tls_server_config: {key} {other:?} is not one of TLS10, TLS11, TLS12, TLS13")
            }
        }
    };
    let lo = min
        .map(|v| rank("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let hi = max
        .map(|v| rank("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if hi < 12 {
        bail!(
            "tls_server_config: max_version {}: zkconn speaks TLS 1.2 and 1.3 only (earlier \
             versions are broken)",
            max.unwrap_or_default()
        );
    }
    if lo > hi {
        bail!("tls_server_config: min_version is above max_version");
    }
    let mut v = Vec::new();
    if lo <= 12 {
        v.push(&rustls::version::TLS12);
    }
    if hi >= 13 {
        v.push(&rustls::version::TLS13);
    }
    Ok(v)
}

/// `cipher_suites`, by the IANA names Go also uses; they apply to TLS 1.2 (TLS 1.3's suites
/// are not configurable, as in Go).
fn cipher_suites(
    provider: &CryptoProvider,
    names: &[String],
) -> anyhow::Result<Vec<rustls::SupportedCipherSuite>> {
    let tls12 = |s: &rustls::SupportedCipherSuite| s.version() == &rustls::version::TLS12;
    let mut chosen: Vec<rustls::SupportedCipherSuite> = Vec::new();
    for name in names {
        let found = provider
            .cipher_suites
            .iter()
            .find(|s| tls12(s) && format!("{:?}", s.suite()) == *name)
            .ok_or_else(|| {
                let known: Vec<String> = provider
                    .cipher_suites
                    .iter()
                    .filter(|s| tls12(s))
                    .map(|s| format!("{:?}", s.suite()))
                    .collect();
                anyhow!(
                    "tls_server_config: cipher suite {name:?} is not one zkconn offers ({})",
                    known.join(", ")
                )
            })?;
        chosen.push(*found);
    }
    chosen.extend(provider.cipher_suites.iter().filter(|s| !tls12(s)).copied());
    Ok(chosen)
}

/// `curve_preferences`, by Go's names.
fn curves(
    provider: &CryptoProvider,
    names: &[String],
) -> anyhow::Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>> {
    let mut chosen = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "X25519" => rustls::NamedGroup::X25519,
            "CurveP256" => rustls::NamedGroup::secp256r1,
            "CurveP384" => rustls::NamedGroup::secp384r1,
            "CurveP521" => bail!(
                "tls_server_config: curve CurveP521 is not one zkconn offers (X25519, CurveP256, \
                 CurveP384)"
            ),
            other => bail!(
                "tls_server_config: curve {other:?} is not one of X25519, CurveP256, CurveP384"
            ),
        };
        let kx = provider
            .kx_groups
            .iter()
            .find(|g| g.name() == group)
            .ok_or_else(|| anyhow!("tls_server_config: curve {name} is not available"))?;
        chosen.push(*kx);
    }
    Ok(chosen)
}

fn headers(given: BTreeMap<String, String>) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut out = Vec::new();
    for (name, value) in given {
        let Some((canonical, allowed)) =
            HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(&name))
        else {
            let known: Vec<&str> = HEADERS.iter().map(|(h, _)| *h).collect();
            bail!(
                "http_server_config.headers: {name:?} cannot be set (only {})",
                known.join(", ")
            );
        };
        if value.is_empty() {
            continue;
        }
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&value))
        {
            bail!(
                "http_server_config.headers: {canonical} {value:?} is not one of {}",
                allowed.join(", ")
            );
        }
        let v = HeaderValue::from_str(&value).map_err(|_| {
            anyhow!("http_server_config.headers: {canonical} holds characters a header cannot")
        })?;
        // Canonical names from the table above: always valid (`from_bytes` lowercases).
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|_| anyhow!("http_server_config.headers: {canonical} is not a header name"))?;
        out.push((name, v));
    }
    Ok(out)
}

/// Answers to the right credentials already checked, so a scrape pays bcrypt once: keyed by
/// a SHA-256 of (user, hash, password), never the password itself. Wrong ones are not
/// remembered (a flood of guesses cannot push the right one out).
///
/// Checks queue per user name (every unknown name shares one queue), at most two run at a
/// time, and a check runs to its end even when its request is gone, remembering a right
/// answer: a flood of guesses under names that are not users never delays a user's check,
/// and a scrape that gave up finds its answer remembered next time. A client address waits
/// for one check per user name at a time; its other requests under that name meanwhile are
/// answered 429 at once.
pub struct Verdicts {
    right: Mutex<std::collections::HashSet<[u8; 32]>>,
    pending: Mutex<std::collections::HashSet<(std::net::IpAddr, String)>>,
    queues: Mutex<HashMap<Option<String>, Arc<Semaphore>>>,
    /// bcrypt checks running at once (each takes a core for tens of milliseconds).
    cores: Arc<Semaphore>,
}

/// The answer to a request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Its address already waits for a check under that name.
    Busy,
}

/// Right credentials remembered; beyond this, one is forgotten for each new one.
const RIGHT_KEPT: usize = 256;

impl Default for Verdicts {
    fn default() -> Self {
        Self {
            right: Mutex::new(std::collections::HashSet::new()),
            pending: Mutex::new(std::collections::HashSet::new()),
            queues: Mutex::new(HashMap::new()),
            cores: Arc::new(Semaphore::new(2)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Verdicts {
    /// Whether `authorization` (the header's value), sent from `from`, names a user of
    /// `config` with the right password.
    pub async fn check(
        self: &Arc<Self>,
        config: &Arc<WebConfig>,
        from: std::net::IpAddr,
        authorization: Option<&[u8]>,
    ) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        let hash = config.users.get(&user).cloned();
        let key = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [
                user.as_bytes(),
                hash.as_deref().unwrap_or("").as_bytes(),
                &password,
            ] {
                ctx.update(&(part.len() as u64).to_le_bytes());
                ctx.update(part);
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(ctx.finish().as_ref());
            k
        };
        if lock(&self.right).contains(&key) {
            return Verdict::Allowed;
        }
        let pending = (from, user.clone());
        if !lock(&self.pending).insert(pending.clone()) {
            return Verdict::Busy;
        }
        let queue = lock(&self.queues)
            .entry(hash.is_some().then_some(user))
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let config = config.clone();
        // Detached: it ends, and remembers, whether or not the request still waits.
        tokio::spawn(async move {
            let right = match (
                queue.acquire_owned().await,
                this.cores.clone().acquire_owned().await,
            ) {
                (Ok(in_line), Ok(core)) => tokio::task::spawn_blocking(move || {
                    let _held = (in_line, core);
                    match &hash {
                        Some(h) => bcrypt::verify(&password, h).unwrap_or(false),
                        None => {
                            // The same work for a name that is not a user.
                            let decoy = config.decoy.get_or_init(|| {
                                bcrypt::hash(b"zkconn: no user has this password", config.cost)
                                    .unwrap_or_default()
                            });
                            let _ = bcrypt::verify(&password, decoy);
                            false
                        }
                    }
                })
                .await
                .unwrap_or(false),
                _ => false,
            };
            if right {
                let mut known = lock(&this.right);
                if known.len() >= RIGHT_KEPT
                    && let Some(old) = known.iter().next().copied()
                {
                    known.remove(&old);
                }
                known.insert(key);
            }
            lock(&this.pending).remove(&pending);
            let _ = tx.send(right);
        });
        match rx.await {
            Ok(true) => Verdict::Allowed,
            _ => Verdict::Denied,
        }
    }
}

impl WebConfig {
    /// Whether `path` is served without credentials.
    pub fn excluded(&self, path: &str) -> bool {
        self.excluded.iter().any(|p| p == path)
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn load(yaml: &str) -> anyhow::Result<WebConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("web.yml");
        std::fs::write(&path, yaml)?;
        WebConfig::load(&path)
    }

    #[rstest]
    #[case("", false, false)]
    #[case(
        "basic_auth_users:\n  prom: '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'\n",
        false,
        true
    )]
    #[case(
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n",
        false,
        false
    )]
    #[case("tls_server_config: {}\n", false, false)]
    fn files_without_tls_load(#[case] yaml: &str, #[case] tls: bool, #[case] auth: bool) {
        let c = load(yaml).unwrap();
        assert_eq!((c.tls.is_some(), c.authenticates()), (tls, auth));
    }

    /// Each mistake is refused with a sentence that names it.
    #[rstest]
    #[case(
        "tls_server_config:\n  cert_file: x.pem\n  certfile: y\n",
        "unknown field `certfile`"
    )]
    #[case("basic_auth_users:\n  prom: hunter2\n", "not a bcrypt hash")]
    #[case(
        "basic_auth_users:\n  'a:b': '$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi'\n",
        "holds a ':'"
    )]
    #[case("tls_server_config:\n  min_version: TLS12\n", "without a certificate")]
    #[case(
        "tls_server_config:\n  key_file: k.pem\n",
        "key_file without cert_file"
    )]
    #[case(
        "tls_server_config:\n  cert_file: /nonexistent/c.pem\n  key_file: k.pem\n",
        "cert_file /nonexistent/c.pem"
    )]
    #[case(
        "http_server_config:\n  headers:\n    Server: x\n",
        "\"Server\" cannot be set"
    )]
    #[case(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "is not one of deny, sameorigin"
    )]
    #[case("auth_excluded_paths: [healthz]\n", "is not a path")]
    #[case("- a\n- b\n", "invalid type")]
    #[case(
        "tls_server_config:\n  cipher_suites: []\n  cert: x\n  key: y\n",
        "cipher_suites is empty"
    )]
    #[case(
        "tls_server_config:\n  cert: x\n  key: \"-----BEGIN ENCRYPTED PRIVATE KEY-----\"\n",
        "the key is encrypted"
    )]
    fn mistakes_are_named(#[case] yaml: &str, #[case] says: &str) {
        let e = format!("{:#}", load(yaml).unwrap_err());
        assert!(e.contains(says), "{e}");
    }

    #[rstest]
    #[case(None, None, &[12, 13])]
    #[case(Some("TLS13"), None, &[13])]
    #[case(None, Some("TLS12"), &[12])]
    // Below 1.2 is not spoken: the floor is 1.2.
    #[case(Some("TLS10"), None, &[12, 13])]
    fn versions_follow_min_and_max(
        #[case] min: Option<&str>,
        #[case] max: Option<&str>,
        #[case] expected: &[u8],
    ) {
        let got: Vec<u8> = versions(min, max)
            .unwrap()
            .iter()
            .map(|v| {
                if v.version == rustls::ProtocolVersion::TLSv1_3 {
                    13
                } else {
                    12
                }
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case(Some("TLS11"), Some("TLS11"), "1.2 and 1.3 only")]
    #[case(Some("TLS13"), Some("TLS12"), "above max_version")]
    #[case(Some("SSL3"), None, "not one of TLS10")]
    fn bad_versions_are_refused(
        #[case] min: Option<&str>,
        #[case] max: Option<&str>,
        #[case] says: &str,
    ) {
        let e = versions(min, max).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }

    #[rstest]
    #[case(b"Basic cHJvbTpzM2NyZXQ=".as_slice(), Some(("prom", b"s3cret".as_slice())))]
    #[case(b"basic cHJvbTpzM2NyZXQ=".as_slice(), Some(("prom", b"s3cret".as_slice())))]
    // A password may hold ':'.
    #[case(b"Basic dTphOmI=".as_slice(), Some(("u", b"a:b".as_slice())))]
    #[case(b"Bearer cHJvbTpzM2NyZXQ=".as_slice(), None)]
    #[case(b"Basic !!!".as_slice(), None)]
    #[case(b"Basic bm9jb2xvbg==".as_slice(), None)]
    fn basic_credentials_are_read(#[case] header: &[u8], #[case] expected: Option<(&str, &[u8])>) {
        let got = basic_credentials(header);
        assert_eq!(
            got.as_ref().map(|(u, p)| (u.as_str(), p.as_slice())),
            expected
        );
    }

    #[rstest]
    #[case((true, true, false, false), (true, true, false, false), &[], &[])]
    // One kind may not replace another while running: a half-written file looks so.
    #[case((true, true, false, false), (true, false, true, false), &[], &["basic authentication"])]
    #[case((true, true, false, false), (false, true, false, false), &[], &["TLS"])]
    #[case((true, false, true, true), (true, false, true, false), &[], &["client_allowed_sans"])]
    #[case((false, false, false, false), (true, true, false, false), &[], &[])]
    #[case((true, true, false, false), (true, true, false, false), &["/metrics"], &["authentication on /metrics"])]
    fn a_reload_may_not_weaken_protection(
        #[case] was: (bool, bool, bool, bool),
        #[case] now: (bool, bool, bool, bool),
        #[case] now_excluded: &[&str],
        #[case] lost: &[&str],
    ) {
        let p = |(tls, basic, client_certs, allowed_names), excluded: &[&str]| Protection {
            tls,
            basic,
            client_certs,
            allowed_names,
            excluded: excluded.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(
            p(was, &["/healthz"]).dropped_by(&p(now, &[&["/healthz"], now_excluded].concat())),
            lost
        );
    }

    /// A user given twice is refused, whichever hash comes last.
    #[test]
    fn a_user_given_twice_is_refused() {
        let h = bcrypt::hash("x", 4).unwrap();
        let e = load(&format!(
            "basic_auth_users:\n  prom: '{h}'\n  prom: '{h}'\n"
        ))
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("\"prom\" is given twice"),
            "{e:#}"
        );
    }

    /// Right credentials are allowed and remembered, wrong ones and unknown users denied; a
    /// second request from an address already waiting for a check is told so at once.
    #[tokio::test]
    async fn credentials_are_checked_once_per_address() {
        let h = bcrypt::hash("s3cret", 4).unwrap();
        let c = Arc::new(load(&format!("basic_auth_users:\n  prom: '{h}'\n")).unwrap());
        let v = Arc::new(Verdicts::default());
        let ip: std::net::IpAddr = [127, 0, 0, 1].into();
        let basic = |cred: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(cred)
            )
        };
        let ask = |cred: &str| {
            let header = basic(cred);
            let (v, c) = (&v, &c);
            async move { v.check(c, ip, Some(header.as_bytes())).await }
        };
        assert_eq!(ask("prom:wrong").await, Verdict::Denied);
        assert_eq!(ask("nobody:s3cret").await, Verdict::Denied);
        assert_eq!(c.decoy.get().map(|d| d.starts_with("$2b$04$")), Some(true));
        assert_eq!(ask("prom:s3cret").await, Verdict::Allowed);
        assert_eq!(lock(&v.right).len(), 1);
        // Remembered: allowed even while the address waits for another check.
        lock(&v.pending).insert((ip, "prom".into()));
        assert_eq!(ask("prom:s3cret").await, Verdict::Allowed);
        assert_eq!(ask("prom:other").await, Verdict::Busy);
        // Another name from the same address is not held up.
        assert_eq!(ask("nobody:other").await, Verdict::Denied);
        assert_eq!(v.check(&c, ip, None).await, Verdict::Denied);
    }
}
