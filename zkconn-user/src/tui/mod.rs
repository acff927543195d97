//! `zkconn top`: the live view. One `tokio::select!` loop: kernel events, a sample each
//! second, a refresh each `--interval`, keys and signals; state is updated, then drawn.
//!
//! Owns: the terminal (raw mode and the alternate screen, restored on quit, error, panic,
//! SIGINT and SIGTERM) and where logs go while it is drawn (a buffer whose latest line
//! the footer shows). Must not: draw from anywhere but the loop, or block in drawing.

pub mod app;
pub mod render;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    io::{IsTerminal as _, Write},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event};
use tokio::signal::unix::{SignalKind, signal};

use crate::collector::{self, Collector};

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

/// Runs the live view until `q`, Ctrl-C, SIGINT or SIGTERM.
pub async fn run(
    mut collector: Collector,
    interval: Duration,
    logs: LogBuffer,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    // Installs a panic hook that restores the terminal before the panic is printed.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = async {
        let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Event>(64);
        // crossterm's reader blocks; it lives on its own thread and ends with the process.
        std::thread::spawn(move || {
            while let Ok(ev) = event::read() {
                if keys_tx.blocking_send(ev).is_err() {
                    break;
                }
            }
        });
        let mut app = app::App::default();
        // A refresh that fails (a kernel map that cannot be read) is shown in the header
        // over the last good screen; only the first one, with nothing to show, ends `top`.
        let refresh = |collector: &mut Collector, app: &mut app::App| -> anyhow::Result<()> {
            match collector.snapshot() {
                Ok(snap) => {
                    app.update(snap, collector.connections());
                    app.error = None;
                }
                Err(e) if app.snapshot.is_some() => {
                    tracing::error!("refresh failed: {e:#}");
                    app.error = Some(format!("{e:#}"));
                }
                Err(e) => return Err(e),
            }
            app.last_log = logs.last();
            Ok(())
        };
        refresh(&mut collector, &mut app)?;
        let mut refresh_tick = collector::ticker(interval).await;
        let mut sample_tick = collector::ticker(Duration::from_secs(1)).await;
        loop {
            terminal
                .draw(|frame| render::render(frame, &app))
                .context("cannot draw on the terminal")?;
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                Some(ev) = keys.recv() => {
                    if let Event::Key(key) = ev {
                        app.on_key(key);
                        if app.quit {
                            break;
                        }
                    }
                    // A resize only needs the redraw at the top of the loop.
                }
                _ = refresh_tick.tick() => refresh(&mut collector, &mut app)?,
                _ = sample_tick.tick(), if interval > Duration::from_secs(1) => {
                    if let Err(e) = collector.sample() {
                        app.error = Some(format!("{e:#}"));
                    }
                }
                res = collector.next_events() => res?,
            }
        }
        anyhow::Ok(())
    }
    .await;
    ratatui::try_restore().context("cannot restore the terminal")?;
    // What was logged while the screen was drawn (alarm transitions) stays readable.
    for line in logs.drain() {
        eprintln!("{line}");
    }
    result
}
