//! `zkconn top`: the live view, a sink of the driver's loop: a refresh each `--interval`,
//! keys as its input; state is updated, then drawn.
//!
//! Owns: the terminal (raw mode and the alternate screen, restored on quit, error, panic,
//! SIGINT and SIGTERM) and where logs go while it is drawn (a buffer whose latest line
//! the footer shows). Must not: draw from anywhere but the loop, or block in drawing.

pub mod app;
pub mod past;
pub mod render;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    io::{IsTerminal as _, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event},
};

use crate::driver::{self, Flow, Sink, Stop, Watch};

/// Log lines kept while the screen is drawn.
const LOG_LINES: usize = 100;

/// Where log records go while `top` owns the terminal.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<VecDeque<String>>>);

impl LogBuffer {
    pub fn last(&self) -> Option<String> {
        self.0.lock().ok().and_then(|l| l.back().cloned())
    }

    /// Everything kept, oldest first (printed after the terminal is restored).
    pub fn drain(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = self.0.lock() {
            for line in String::from_utf8_lossy(buf).lines() {
                if line.trim().is_empty() {
                    continue;
                }
                if lines.len() == LOG_LINES {
                    lines.pop_front();
                }
                lines.push_back(line.to_owned());
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails with a sentence when there is no terminal to draw on.
pub fn require_terminal() -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "zkconn top needs a terminal; for scripts and pipes use `zkconn snapshot --json` \
             (or `zkconn check` for monitoring)"
        );
    }
    Ok(())
}

/// The live view as a sink of the driver's loop.
struct Top {
    terminal: DefaultTerminal,
    app: app::App,
    keys: tokio::sync::mpsc::Receiver<Event>,
    interval: Duration,
    logs: LogBuffer,
    /// The latest log line and when it was first shown: the footer shows it for
    /// [`LOG_SHOWN`], then the key hints again (every line is printed on exit).
    latest_log: Option<(String, Instant)>,
}

/// How long the footer shows a new log line.
const LOG_SHOWN: Duration = Duration::from_secs(30);

impl Top {
    /// A refresh that fails (a kernel map that cannot be read) is shown in the header over
    /// the last good screen; only the first one, with nothing to show, ends `top`.
    fn show(&mut self, watch: &mut Watch) -> anyhow::Result<()> {
        match watch.snapshot() {
            Ok(snap) => {
                self.app.update(snap, watch.connections());
                self.app.error = None;
            }
            Err(e) if self.app.snapshot.is_some() => {
                tracing::error!("refresh failed: {e:#}");
                self.app.error = Some(format!("{e:#}"));
            }
            Err(e) => return Err(e),
        }
        // Frozen while paused, like the rest of the screen.
        if !self.app.paused {
            let last = self.logs.last();
            if last.is_some() && last != self.latest_log.as_ref().map(|(l, _)| l.clone()) {
                self.latest_log = last.map(|l| (l, Instant::now()));
            }
            self.app.last_log = self
                .latest_log
                .as_ref()
                .filter(|(_, since)| since.elapsed() < LOG_SHOWN)
                .map(|(l, _)| l.clone());
        }
        Ok(())
    }
}

impl Sink for Top {
    type Input = Event;

    fn every(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn input(&mut self) -> Event {
        match self.keys.recv().await {
            Some(ev) => ev,
            // The reader thread ended (stdin closed): no more keys.
            None => std::future::pending().await,
        }
    }

    fn on_input(&mut self, ev: Event, _watch: &mut Watch) -> anyhow::Result<Flow> {
        if let Event::Key(key) = ev {
            self.app.on_key(key);
            if self.app.quit {
                return Ok(Flow::Stop);
            }
        }
        // A resize only needs the redraw before the next wait.
        Ok(Flow::Continue)
    }

    fn refresh(&mut self, watch: &mut Watch) -> anyhow::Result<Flow> {
        self.show(watch)?;
        Ok(Flow::Continue)
    }

    fn sample_failed(&mut self, e: anyhow::Error) -> anyhow::Result<()> {
        self.app.error = Some(format!("{e:#}"));
        Ok(())
    }

    fn settle(&mut self) -> anyhow::Result<()> {
        let app = &self.app;
        self.terminal
            .draw(|frame| render::render(frame, app))
            .context("cannot draw on the terminal")?;
        // Sorting keys move among the columns just drawn.
        let width = self.terminal.size().map_or(0, |s| s.width);
        self.app.shown = render::fitting_columns(width.saturating_sub(2));
        Ok(())
    }
}

/// Runs the live view until `q`, Ctrl-C, SIGINT or SIGTERM.
pub async fn run(mut watch: Watch, interval: Duration, logs: LogBuffer) -> anyhow::Result<()> {
    let mut stop = Stop::install()?;
    // Installs a panic hook that restores the terminal before the panic is printed.
    let terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let (keys_tx, keys) = tokio::sync::mpsc::channel::<Event>(64);
    // crossterm's reader blocks; it lives on its own thread and ends with the process.
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if keys_tx.blocking_send(ev).is_err() {
                break;
            }
        }
    });
    let mut top = Top {
        terminal,
        app: app::App::default(),
        keys,
        interval,
        logs: logs.clone(),
        latest_log: None,
    };
    let result = match top.show(&mut watch) {
        Ok(()) => driver::run(&mut watch, &mut stop, &mut top).await,
        Err(e) => Err(e),
    };
    ratatui::try_restore().context("cannot restore the terminal")?;
    // What was logged while the screen was drawn (alarm transitions) stays readable.
    for line in logs.drain() {
        eprintln!("{line}");
    }
    result
}
