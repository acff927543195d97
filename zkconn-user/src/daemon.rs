//! `zkconn daemon`: keeps the probes attached and serves what they count over HTTP, read
//! only: `/v1/snapshot` (the `snapshot --json` document), `/metrics` (Prometheus) and
//! `/healthz`. Optionally appends one snapshot per interval to an NDJSON file.
//!
//! Owns: a sink of the driver's loop (a refresh each `--interval`, requests for fresher
//! documents and SIGHUP as its input), publishing each refresh as ready-made bodies, and
//! the HTTP server. Handlers never touch the kernel: they hand out the last published
//! bodies, so a request costs a copy. Requests are bounded: 5 s to send the headers, 30 s
//! per connection, no request bodies, and at most 256 connections, where a newcomer makes
//! room by closing an idle one (see [`crate::gate`]): a flood of idle or slow connections
//! cannot keep a scrape out. With `--web-config-file`, TLS and basic authentication (see
//! [`crate::web`]); the TLS handshake shares the 5 s of the headers.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    signal::unix::{Signal, SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    Setup,
    archive::{Recorder, Retention},
    cli::DaemonArgs,
    driver::{self, Flow, Sink, Stop, Watch},
    gate::Gate,
    metrics,
    ndjson::Ndjson,
    output,
    web::{FileStamp, Protection, Verdict, Verdicts, WebConfig},
};

/// What the last refresh published.
struct Published {
    json: Bytes,
    metrics: Bytes,
    /// The same in the classic text format, for scrapers that do not ask for OpenMetrics.
    metrics_classic: Bytes,
    at: Instant,
    hook: String,
    /// The last refresh that failed, if the latest did.
    error: Option<String>,
    /// Why `--ndjson` could not take the latest snapshot (a full disk, say): the other
    /// outputs stay current all the same.
    sink_error: Option<String>,
    /// Why `--history` cannot record, while it cannot.
    history_error: Option<String>,
    /// Why the counts are incomplete, while a kernel table was full recently.
    overflow: Option<String>,
}

/// How long a full kernel table keeps `/healthz` at 503 after it last refused a row.
const OVERFLOW_UNHEALTHY: Duration = Duration::from_secs(600);

/// When the kernel last refused a row because a table was full.
#[derive(Default)]
struct OverflowWatch {
    seen: u64,
    grew_at: Option<Instant>,
}

impl OverflowWatch {
    /// The reason to report, if a table refused a row within [`OVERFLOW_UNHEALTHY`].
    fn note(&mut self, p: &crate::model::ProbeHealth) -> Option<String> {
        if p.overflow > self.seen {
            self.seen = p.overflow;
            self.grew_at = Some(Instant::now());
        }
        let recent = self.grew_at?.elapsed() < OVERFLOW_UNHEALTHY;
        let d = &p.overflow_detail;
        recent.then(|| {
            format!(
                "counts are incomplete: the kernel's tables were full within the last {} min \
                 ({} connections not tracked and {} on the server's side: raise \
                 --max-connections; {} processes and {} counter rows not kept: raise \
                 --max-processes or --max-cgroups; {} client hosts not counted on the \
                 server's side, whose table holds 16384: restart zkconn)",
                OVERFLOW_UNHEALTHY.as_secs() / 60,
                d.connections,
                d.server_side,
                d.processes,
                d.counters,
                d.client_hosts
            )
        })
    }
}

const MAX_CONNECTIONS: usize = 256;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds first (a bad `--listen` fails before anything is attached), then runs until
/// SIGINT or SIGTERM; SIGHUP reloads `--rules` and `--zoo-cfg`.
pub async fn run(args: DaemonArgs, setup: Setup) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "--listen {}: cannot listen there (in use, or not an address of this host)",
            args.listen
        )
    })?;
    let web = match &args.web_config_file {
        Some(path) => Some(
            WebConfig::load(path)
                .with_context(|| format!("--web-config-file {}", path.display()))?,
        ),
        None => None,
    };
    let mut ndjson = match &args.ndjson {
        Some(path) => Some(Ndjson::open(path, u64::from(args.ndjson_max_mib) << 20)?),
        None => None,
    };
    let mut history = match &args.history {
        Some(dir) => Some(Recorder::open(
            dir,
            args.history_interval,
            Retention {
                max_age: args.history_max_age,
                thin_after: Retention::default().thin_after.min(args.history_max_age),
                max_bytes: u64::from(args.history_max_mib) << 20,
            },
        )?),
        None => None,
    };
    let mut watch = Watch::start(setup, &args.watch.probe)?;
    watch.keep_asking_limits();
    let mut stop = Stop::install()?;
    let sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let owners = metrics::Top {
        owners: usize::from(args.metrics_owners),
        clients: usize::from(args.metrics_clients),
    };
    let mut overflow = OverflowWatch::default();
    let first = publish(
        &mut watch,
        owners,
        Sinks {
            ndjson: ndjson.as_mut(),
            history: history.as_mut(),
        },
        &mut overflow,
    )?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let (want_tx, want_rx) = mpsc::channel::<()>(1);
    let interval = args.interval;
    let scheme = if web.as_ref().is_some_and(|w| w.tls.is_some()) {
        "https"
    } else {
        "http"
    };
    let protected = web.as_ref().is_some_and(WebConfig::protects);
    let auth = web.as_ref().map_or_else(
        || "plain HTTP, no authentication".to_owned(),
        |w| w.protection().to_string(),
    );
    if !args.listen.ip().is_loopback() && !protected {
        tracing::warn!(
            "--listen {} is reachable from other hosts: /v1/snapshot and /metrics show pids, \
             users, cgroups and (redacted) command lines to anyone who can connect ({auth}); give --web-config-file with TLS and basic_auth_users (or client \
             certificates), or firewall the port to the Prometheus servers",
            args.listen
        );
    }
    let server = tokio::spawn(serve(
        listener,
        (rx, want_tx),
        interval,
        args.web_config_file.clone().zip(web),
    ));
    tracing::info!(
        "ready: serving {scheme}://{}/metrics, /v1/snapshot and /healthz ({}, {auth})",
        args.listen,
        describe_listen(args.listen)
    );
    crate::systemd::tell(&format!(
        "READY=1\nSTATUS=serving {scheme}://{}/metrics",
        args.listen
    ));

    let mut daemon = Daemon {
        args: &args,
        ndjson,
        ndjson_last: Some(std::time::Instant::now()),
        history,
        owners,
        overflow,
        tx,
        want: want_rx,
        sighup,
    };
    driver::run(&mut watch, &mut stop, &mut daemon).await?;
    server.abort();
    crate::systemd::tell("STOPPING=1");
    tracing::info!("stopping: detaching the probes");
    drop(watch);
    Ok(())
}

/// The daemon as a sink of the driver's loop.
struct Daemon<'a> {
    args: &'a DaemonArgs,
    ndjson: Option<Ndjson>,
    /// When the last NDJSON line was written: one each --interval, even when --history
    /// samples more often.
    ndjson_last: Option<std::time::Instant>,
    history: Option<Recorder>,
    owners: metrics::Top,
    overflow: OverflowWatch,
    tx: watch::Sender<Arc<Published>>,
    /// Requests that found the published documents older than [`FRESH`].
    want: mpsc::Receiver<()>,
    sighup: Signal,
}

enum DaemonInput {
    Reload,
    Fresh,
}

impl Sink for Daemon<'_> {
    type Input = DaemonInput;

    fn every(&self) -> Option<Duration> {
        // A --history sample is taken at a refresh: as often as it asks, if more often.
        Some(match &self.history {
            Some(_) => self.args.interval.min(self.args.history_interval),
            None => self.args.interval,
        })
    }

    async fn input(&mut self) -> DaemonInput {
        tokio::select! {
            _ = self.sighup.recv() => DaemonInput::Reload,
            Some(()) = self.want.recv() => DaemonInput::Fresh,
            // The server is gone (it ends only with the process): SIGHUP alone.
            else => {
                self.sighup.recv().await;
                DaemonInput::Reload
            }
        }
    }

    fn on_input(&mut self, input: DaemonInput, watch: &mut Watch) -> anyhow::Result<Flow> {
        match input {
            DaemonInput::Reload => reload(self.args, watch, self.ndjson.as_mut()),
            // A request found the published documents older than a second: a fresh one
            // (without an NDJSON line, which keeps its --interval).
            DaemonInput::Fresh => {
                if self.tx.borrow().at.elapsed() >= FRESH {
                    refresh_now(
                        watch,
                        self.owners,
                        Sinks::default(),
                        &mut self.overflow,
                        &self.tx,
                    );
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn refresh(&mut self, watch: &mut Watch) -> anyhow::Result<Flow> {
        // A tenth of the interval early still counts as due (refreshes paced at it arrive
        // a hair before).
        let every = self.args.interval;
        let early = (every / 10).max(Duration::from_millis(50));
        let ndjson_due = self
            .ndjson_last
            .is_none_or(|t| t.elapsed() + early >= every);
        if ndjson_due {
            self.ndjson_last = Some(std::time::Instant::now());
        }
        refresh_now(
            watch,
            self.owners,
            Sinks {
                ndjson: self.ndjson.as_mut().filter(|_| ndjson_due),
                history: self.history.as_mut(),
            },
            &mut self.overflow,
            &self.tx,
        );
        Ok(Flow::Continue)
    }

    fn sample_failed(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        tracing::error!("sampling failed: {e:#}");
        Ok(())
    }
}

/// SIGHUP: rules and zoo.cfg again, and the `--ndjson` file reopened (after logrotate
/// moved it away). A mistake keeps the running configuration.
fn reload(args: &DaemonArgs, watch: &mut Watch, ndjson: Option<&mut Ndjson>) {
    crate::systemd::tell("RELOADING=1");
    match Setup::new(&args.watch) {
        Ok(setup) => {
            let changed = watch.reconfigure(setup);
            tracing::warn!("SIGHUP: reloaded rules and limits{changed}");
        }
        Err(e) => {
            tracing::error!("SIGHUP: reload refused, keeping the running configuration: {e:#}")
        }
    }
    if let Some(out) = ndjson {
        out.reopen();
    }
    crate::systemd::tell("READY=1");
}

/// How old the published documents may be when a request reads them: older, and the
/// request waits (up to [`FRESH_WAIT`]) for a refresh it asks for.
const FRESH: Duration = Duration::from_secs(1);
const FRESH_WAIT: Duration = Duration::from_secs(2);

/// Publishes a refresh; a failed one keeps the last documents, marked with the error.
fn refresh_now(
    watch: &mut Watch,
    owners: metrics::Top,
    sinks: Sinks<'_>,
    overflow: &mut OverflowWatch,
    tx: &watch::Sender<Arc<Published>>,
) {
    let next = match publish(watch, owners, sinks, overflow) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("refresh failed: {e:#}");
            let last = tx.borrow().clone();
            Published {
                json: last.json.clone(),
                metrics: last.metrics.clone(),
                metrics_classic: last.metrics_classic.clone(),
                at: last.at,
                hook: last.hook.clone(),
                error: Some(format!("{e:#}")),
                sink_error: last.sink_error.clone(),
                history_error: last.history_error.clone(),
                overflow: last.overflow.clone(),
            }
        }
    };
    tx.send_replace(Arc::new(next));
}

/// Where a refresh goes besides the HTTP documents (none for a refresh a request asked
/// for: the files keep their own pace).
#[derive(Default)]
struct Sinks<'a> {
    ndjson: Option<&'a mut Ndjson>,
    history: Option<&'a mut Recorder>,
}

fn publish(
    watch: &mut Watch,
    owners: metrics::Top,
    sinks: Sinks<'_>,
    overflow: &mut OverflowWatch,
) -> anyhow::Result<Published> {
    let snap = watch.snapshot()?;
    let overflow = overflow.note(&snap.probe);
    let mut json = Vec::new();
    output::json(&mut json, &snap)?;
    let sink_error = sinks.ndjson.and_then(|out| out.append(&snap));
    let history_error = sinks.history.and_then(|h| h.offer(&json));
    let metrics = metrics::render(&snap, owners).context("cannot encode the metrics")?;
    Ok(Published {
        json: Bytes::from(json),
        metrics_classic: Bytes::from(metrics::classic(&metrics)),
        metrics: Bytes::from(metrics),
        at: Instant::now(),
        hook: snap.probe.hook.map_or("-".to_owned(), |h| h.to_string()),
        error: None,
        sink_error,
        history_error,
        overflow,
    })
}

/// The published documents, and how to ask for fresher ones.
type Documents = (
    watch::Receiver<Arc<Published>>,
    tokio::sync::mpsc::Sender<()>,
);

async fn serve(
    listener: TcpListener,
    published: Documents,
    interval: Duration,
    web: Option<(PathBuf, WebConfig)>,
) {
    let gate = Gate::new(MAX_CONNECTIONS);
    let verdicts = Arc::new(Verdicts::default());
    let mut web = web.map(|(path, w)| WebState {
        started: w.protection(),
        path,
        current: Ok(Arc::new(w)),
        said: None,
        logged: None,
        quiet: 0,
    });
    // Bumped at each change of the web configuration: open connections close, so a
    // revoked password or a broken file takes effect on kept-alive connections too.
    let (generation, _) = watch::channel(0u64);
    // When the last warning about displaced connections was logged, and the count then.
    let mut said: (Option<Instant>, u64) = (None, 0);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of descriptors, say: do not spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(state) = &mut web
            && state.refresh()
        {
            generation.send_modify(|g| *g += 1);
        }
        let config = match &web {
            None => None,
            Some(WebState { current: Ok(w), .. }) => Some(w.clone()),
            Some(_) => continue,
        };
        // `None`: every place is taken by a request being answered; this one closes.
        let admitted = gate.admit(peer.ip(), Instant::now());
        let displaced = gate.displaced();
        if displaced > said.1
            && said
                .0
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                "HTTP: {} idle connections closed so far to make room for new ones ({} at \
                 most; a flood of idle or slow connections?)",
                displaced,
                gate.capacity()
            );
            said = (Some(Instant::now()), displaced);
        }
        let Some(mut admitted) = admitted else {
            continue;
        };
        let published = published.clone();
        let verdicts = verdicts.clone();
        let mut changed = generation.subscribe();
        tokio::spawn(async move {
            let busy = admitted.busy.clone();
            let work = async move {
                let tls = config.as_ref().and_then(|c| c.tls.clone());
                match tls {
                    None => {
                        connection(stream, peer, published, interval, config, verdicts, busy).await
                    }
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let allowed = config.as_ref().is_none_or(|c| {
                            c.client_allowed(stream.get_ref().1.peer_certificates())
                        });
                        if allowed {
                            connection(stream, peer, published, interval, config, verdicts, busy)
                                .await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, work) => {}
                _ = &mut admitted.displaced => {}
                _ = changed.changed() => {}
            }
        });
    }
}

/// The web configuration in force, and how to notice it changed.
struct WebState {
    path: PathBuf,
    /// What the daemon started with: a file read later may not drop any of it.
    started: Protection,
    /// `Err` while the file does not load (every connection is closed: a typo must not
    /// reopen what the file locked), with when it was last tried and what the file was then.
    current: Result<Arc<WebConfig>, (Instant, FileStamp)>,
    /// The last error logged, so a broken file is logged once per distinct reason.
    said: Option<String>,
    /// Log lines left (a burst of 10, one more each second) and when that was counted, and
    /// how many changes went unlogged since: a file flapping between good and bad does not
    /// flood the log.
    logged: Option<(f64, Instant)>,
    quiet: u64,
}

impl WebState {
    /// Reads the file again when it or a file it names changed; while it is broken, when it
    /// changed and at most a second after the last try whatever changed (a renewed key may
    /// be what mends it). Returns whether what is in force changed.
    fn refresh(&mut self) -> bool {
        let due = match &self.current {
            Ok(w) => w.changed(),
            Err((tried, was)) => {
                tried.elapsed() >= Duration::from_secs(1) || FileStamp::of(&self.path) != *was
            }
        };
        if !due {
            // A change that went unlogged while the file flapped: say what is in force.
            let in_force = self.current.as_ref().ok().map(|w| w.protection());
            if self.quiet > 0
                && let Some(protection) = in_force
                && self.may_log()
            {
                let note = self.unlogged();
                tracing::warn!(
                    "--web-config-file {}: in force ({protection}){note}",
                    self.path.display()
                );
            }
            return false;
        }
        let loaded = WebConfig::load(&self.path).and_then(|w| {
            let lost = self.started.dropped_by(&w.protection());
            if lost.is_empty() {
                Ok(w)
            } else {
                Err(anyhow::anyhow!(
                    "it no longer has {} the daemon started with (a file being rewritten, or \
                     protection removed: to change what protects it, restart zkconn)",
                    lost.join(" and ")
                ))
            }
        });
        let was_broken = self.current.is_err();
        match loaded {
            Ok(w) => {
                if self.may_log() {
                    let note = self.unlogged();
                    tracing::warn!(
                        "--web-config-file {}: read again ({}){note}",
                        self.path.display(),
                        w.protection(),
                    );
                }
                self.current = Ok(Arc::new(w));
                self.said = None;
                true
            }
            Err(e) => {
                let why = format!("{e:#}");
                // Not logged now: retried each second while broken, so logged soon.
                if self.said.as_deref() != Some(why.as_str()) && self.may_log() {
                    let note = self.unlogged();
                    tracing::error!(
                        "--web-config-file {}: {why}; refusing every connection until it is \
                         mended{note}",
                        self.path.display(),
                    );
                    self.said = Some(why);
                }
                self.current = Err((Instant::now(), FileStamp::of(&self.path)));
                !was_broken
            }
        }
    }

    /// Whether a change may be logged now; if not, it is counted for the next line.
    fn may_log(&mut self) -> bool {
        const BURST: f64 = 10.0;
        let (left, at) = self.logged.unwrap_or((BURST, Instant::now()));
        let left = (left + at.elapsed().as_secs_f64()).min(BURST);
        let ok = left >= 1.0;
        self.logged = Some((if ok { left - 1.0 } else { left }, Instant::now()));
        if !ok {
            self.quiet += 1;
        }
        ok
    }

    /// ", after N changes not logged", once.
    fn unlogged(&mut self) -> String {
        let n = std::mem::take(&mut self.quiet);
        if n == 0 {
            String::new()
        } else {
            format!(" (after {n} changes not logged: the file changes often)")
        }
    }
}

/// The published documents, refreshed first when a request for them finds them older than
/// [`FRESH`] (the refresh loop's `--interval` only paces NDJSON lines and idle work).
async fn fresh(req: &Request<Incoming>, (published, want): Documents) -> Arc<Published> {
    let mut rx = published;
    let current = rx.borrow_and_update().clone();
    let documents = matches!(req.uri().path(), "/v1/snapshot" | "/metrics");
    if !documents || current.at.elapsed() < FRESH {
        return current;
    }
    // Full: a refresh is already asked for.
    let _ = want.try_send(());
    match tokio::time::timeout(FRESH_WAIT, rx.changed()).await {
        Ok(Ok(())) => rx.borrow_and_update().clone(),
        _ => current,
    }
}

/// One HTTP/1.1 connection, plain or inside TLS.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    published: Documents,
    interval: Duration,
    web: Option<Arc<WebConfig>>,
    verdicts: Arc<Verdicts>,
    busy: Arc<AtomicBool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let published = published.clone();
        let web = web.clone();
        let verdicts = verdicts.clone();
        let busy = busy.clone();
        async move {
            // A request waiting for its credentials to be checked is not yet busy: a flood of
            // guesses stays displaceable.
            let verdict = match &web {
                Some(w) if w.authenticates() && !w.excluded(req.uri().path()) => {
                    let given = req
                        .headers()
                        .get(header::AUTHORIZATION)
                        .map(|v| v.as_bytes());
                    verdicts.check(w, peer.ip(), given).await
                }
                _ => Verdict::Allowed,
            };
            // Busy until hyper has written the whole answer and drops its body.
            busy.store(true, Ordering::Relaxed);
            let mut answer = match verdict {
                Verdict::Allowed => {
                    let current = fresh(&req, published).await;
                    respond(&req, &current, interval)
                }
                Verdict::Denied => {
                    let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic"),
                    );
                    r
                }
                Verdict::Busy => {
                    let mut r = text(
                        StatusCode::TOO_MANY_REQUESTS,
                        "credentials from this address are being checked; try again\n",
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    r
                }
            };
            for (name, value) in web.iter().flat_map(|w| &w.headers) {
                answer.headers_mut().insert(name.clone(), value.clone());
            }
            Ok::<_, Infallible>(answer.map(|b| Answer { body: b, busy }))
        }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A response body that marks its connection idle again once hyper has sent it.
struct Answer {
    body: Full<Bytes>,
    busy: Arc<AtomicBool>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Relaxed);
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn respond(req: &Request<Incoming>, p: &Published, interval: Duration) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "read only: GET or HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if has_body {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "requests take no body\n");
    }
    match req.uri().path() {
        "/v1/snapshot" => body(StatusCode::OK, "application/json", p.json.clone()),
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let mut r = if metrics::wants_openmetrics(accept) {
                body(StatusCode::OK, metrics::OPENMETRICS, p.metrics.clone())
            } else {
                body(StatusCode::OK, metrics::CLASSIC, p.metrics_classic.clone())
            };
            r.headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("accept"));
            r
        }
        "/healthz" => {
            let (status, reason) = health(p, interval);
            text(status, &format!("{reason}\n"))
        }
        "/" => text(
            StatusCode::OK,
            "zkconn daemon: /v1/snapshot (JSON), /metrics (Prometheus), /healthz\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /v1/snapshot or /healthz\n",
        ),
    }
}

/// 200 while the probes are attached and the refresh loop reads them on time; 503 with the
/// reason otherwise.
fn health(p: &Published, interval: Duration) -> (StatusCode, String) {
    let age = p.at.elapsed();
    let allowed = interval * 3 + Duration::from_secs(2);
    if let Some(e) = &p.error {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: the last refresh failed: {e}"),
        );
    }
    if let Some(why) = &p.overflow {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}"));
    }
    if let Some(e) = &p.sink_error {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: --ndjson {e} (/metrics and /v1/snapshot are current)"),
        );
    }
    if let Some(e) = &p.history_error {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: --history {e} (/metrics and /v1/snapshot are current)"),
        );
    }
    if age > allowed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: no refresh for {:.0} s (expected every {:.0} s)",
                age.as_secs_f64(),
                interval.as_secs_f64()
            ),
        );
    }
    (
        StatusCode::OK,
        format!(
            "ok: probes attached ({}), last refresh {:.1} s ago",
            p.hook,
            age.as_secs_f64()
        ),
    )
}

fn text(status: StatusCode, s: &str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(s.to_owned()),
    )
}

fn body(status: StatusCode, content_type: &'static str, b: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(b));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Addresses that are not loopback are only used when given explicitly; this names them.
pub fn describe_listen(addr: SocketAddr) -> &'static str {
    if addr.ip().is_loopback() {
        "loopback only"
    } else {
        "reachable from other hosts"
    }
}
