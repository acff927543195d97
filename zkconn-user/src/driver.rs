//! The driver: one loop for every mode. It joins the [`Source`] and the [`Engine`] into a
//! [`Watch`] and runs one `tokio::select!` over signals, kernel events, a history sample
//! each second, the mode's own cadence and the mode's own input. `snapshot`, `check`,
//! `top` and `daemon` are [`Sink`]s of its snapshots.
//!
//! Owns: the order of things (read, tick, carry out the engine's orders at once) and the
//! loop. Must not: format anything, or know what a mode does with a snapshot.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    Setup,
    cli::ProbeArgs,
    engine::{self, Engine},
    model::{ConnectionRow, Snapshot},
    source::Source,
};

/// How often the history is sampled, whatever a mode's cadence.
pub const SAMPLE: Duration = Duration::from_secs(1);

/// The source and the engine.
pub struct Watch {
    source: Source,
    engine: Engine,
}

impl Watch {
    /// Attaches and seeds (see [`Source::start`]), takes the first reading (the baseline
    /// every trend starts from), then drops the capabilities attaching needed.
    /// Servers whose limit nobody gave are asked first, before anything attaches, so
    /// those questions are not counted.
    pub fn start(setup: Setup, probe: &ProbeArgs) -> anyhow::Result<Self> {
        let limits = &setup.limits;
        let source = Source::start(setup.targets, probe, || limits.ask_now())?;
        let hierarchy = source.host_hierarchy();
        tracing::info!("cgroup rows by {hierarchy}");
        let engine = Engine::new(engine::Config {
            limits: setup.limits,
            rules: setup.rules,
            thresholds: setup.judgement.thresholds,
            window_secs: setup.judgement.limits_window.as_secs_f64(),
            retain_secs: probe.retain_exited.as_secs_f64(),
            hierarchy,
            targets: source.targets().names(),
        });
        let mut this = Self { source, engine };
        this.sample()?;
        this.source.drop_capabilities()?;
        Ok(this)
    }

    /// Reads, and turns the reading into a snapshot; the history records it. What the
    /// engine retired leaves the kernel's tables before the snapshot is handed out: a
    /// table sized for the rows shown (`--max-processes`) never also holds the rows just
    /// retired.
    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let start = std::time::Instant::now();
        let reading = self.source.read()?;
        let read = start.elapsed();
        let (snapshot, orders) = self.engine.tick(reading);
        let ticked = start.elapsed();
        self.source.obey(orders)?;
        tracing::trace!(
            "sample: read {:.1} ms, engine {:.1} ms, orders {:.1} ms",
            read.as_secs_f64() * 1e3,
            (ticked - read).as_secs_f64() * 1e3,
            (start.elapsed() - ticked).as_secs_f64() * 1e3
        );
        Ok(snapshot)
    }

    /// One point of every owner's history (and alarm transitions logged), no document.
    pub fn sample(&mut self) -> anyhow::Result<()> {
        self.snapshot().map(drop)
    }

    /// The live connections as of the last snapshot or sample.
    pub fn connections(&self) -> Vec<ConnectionRow> {
        self.engine.connections()
    }

    /// Keeps asking, in the background, the servers that did not say their limit (for
    /// the modes that run on: their questions are counted as zkconn's own connections).
    pub fn keep_asking_limits(&self) {
        self.engine.limits().keep_asking(false);
    }

    /// Waits for kernel events and handles them (never ready for the poll hook).
    pub async fn next_events(&mut self) -> anyhow::Result<()> {
        self.source.next_events().await
    }

    /// New limits and rules (SIGHUP). Rules apply to owners first seen from now on. Targets
    /// cannot change while attached: a difference is returned as a sentence to log.
    pub fn reconfigure(&mut self, mut setup: Setup) -> String {
        setup.limits.adopt(self.engine.limits());
        setup.limits.keep_asking(true);
        self.engine.reconfigure(setup.limits, setup.rules);
        let watched = self.source.targets().names();
        if setup.targets.names() == watched {
            String::new()
        } else {
            format!(
                "; the targets changed ({} now, {} watched): restart zkconn to watch them",
                setup.targets.names().join(", "),
                watched.join(", ")
            )
        }
    }
}

/// SIGINT and SIGTERM, handled from before a mode says it is ready.
pub struct Stop {
    sigint: Signal,
    sigterm: Signal,
}

impl Stop {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            sigterm: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
        }
    }
}

/// Whether the loop goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A mode: what it does with snapshots, at which cadence, and its own input.
pub trait Sink {
    /// Its own input besides signals and the kernel: keys, requests, a deadline.
    type Input;

    /// How often it takes a snapshot of its own accord; `None`: never (its input may ask).
    fn every(&self) -> Option<Duration>;

    /// Waits for its next input; pending for ever when it has none.
    fn input(&mut self) -> impl Future<Output = Self::Input>;

    /// Handles one input.
    fn on_input(&mut self, input: Self::Input, watch: &mut Watch) -> anyhow::Result<Flow>;

    /// Its cadence came round: takes (or tries) a snapshot of `watch`.
    fn refresh(&mut self, _watch: &mut Watch) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// A history sample failed: ends the loop unless the sink can show it and go on.
    fn sample_failed(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        Err(e)
    }

    /// Before each wait (`top` draws here).
    fn settle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A tick every `period`, the first one after `period` (not at once); ticks missed while
/// busy are skipped, not bunched.
pub async fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t.tick().await;
    t
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs `sink` until a signal, or until it says stop. History is sampled each second
/// unless the sink's own cadence is that fast (each of its snapshots samples too).
pub async fn run<S: Sink>(watch: &mut Watch, stop: &mut Stop, sink: &mut S) -> anyhow::Result<()> {
    let every = sink.every();
    let mut refresh = match every {
        Some(period) => Some(ticker(period).await),
        None => None,
    };
    let sample_too = every.is_none_or(|p| p > SAMPLE);
    let mut sample = ticker(SAMPLE).await;
    loop {
        sink.settle()?;
        let flow = tokio::select! {
            () = stop.recv() => Flow::Stop,
            input = sink.input() => sink.on_input(input, watch)?,
            () = tick(&mut refresh) => sink.refresh(watch)?,
            _ = sample.tick(), if sample_too => {
                if let Err(e) = watch.sample() {
                    sink.sample_failed(e)?;
                }
                Flow::Continue
            }
            res = watch.next_events() => {
                res?;
                Flow::Continue
            }
        };
        if flow == Flow::Stop {
            return Ok(());
        }
    }
}

/// `snapshot` and `check`: observe for a while, sampling each second, then stop.
pub struct Observe {
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Observe {
    pub fn for_(duration: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(duration)),
        }
    }
}

impl Sink for Observe {
    type Input = ();

    fn every(&self) -> Option<Duration> {
        None
    }

    fn input(&mut self) -> impl Future<Output = ()> {
        self.deadline.as_mut()
    }

    fn on_input(&mut self, (): (), _watch: &mut Watch) -> anyhow::Result<Flow> {
        Ok(Flow::Stop)
    }
}
