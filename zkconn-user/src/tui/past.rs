//! `zkconn top --history DIR --at TIME`: the live view's screen on the samples of the
//! history store, no probe attached. `[` and `]` step to the sample before and after, `t`
//! goes to a time; the header says which sample is shown and that it is not live.
//!
//! Owns: moving through the store's catalog and handing each sample to the view as a
//! snapshot. Must not: write to the store.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use ratatui::crossterm::event::{self, Event};

use super::{
    LogBuffer,
    app::{App, Past, SPARK_POINTS, Travel},
    render,
};
use crate::{
    archive::{Catalog, Reader, local_clock, now_ms, parse_time_with},
    driver::Stop,
    model::Snapshot,
};

/// Shows sample `index` of `catalog`, the samples before it feeding the sparklines; the
/// view's own state (grouping, sort, filter, selection) stays. A sentence when it cannot
/// be read.
fn show(catalog: &Catalog, index: usize, app: &mut App) -> Result<(), String> {
    let snap = |i: usize| {
        catalog.doc(i).and_then(|doc| {
            Snapshot::from_document(doc).map_err(|e| {
                format!(
                    "the sample of {}: {e:#}",
                    crate::archive::rfc3339(catalog.time(i).unwrap_or(0))
                )
            })
        })
    };
    let target = snap(index)?;
    app.forget_trends();
    app.paused = false;
    for i in index.saturating_sub(SPARK_POINTS - 1)..index {
        // A sample before it that does not read only shortens its sparklines.
        if let Ok(before) = snap(i) {
            app.update(before, Vec::new());
        }
    }
    app.update(target, Vec::new());
    if let Some(past) = &mut app.past {
        past.index = index;
        past.at_ms = catalog.time(index).unwrap_or(past.at_ms);
        past.count = catalog.len();
        past.note = None;
    }
    Ok(())
}

/// Where `travel` leads from `index` (before samples that do not read are skipped), and
/// which way to skip them; or why it leads nowhere.
fn destination(catalog: &Catalog, index: usize, travel: &Travel) -> Result<(usize, i64), String> {
    match travel {
        Travel::Step(by) => {
            let to = index as i64 + by;
            if to < 0 {
                Err("this is the first sample the store holds".to_owned())
            } else if to as usize >= catalog.len() {
                Err("this is the last sample the store holds".to_owned())
            } else {
                Ok((to as usize, by.signum()))
            }
        }
        Travel::To(text) => {
            let at = parse_time_with(text, now_ms(), &local_clock)?;
            catalog.find(at).map(|i| (i, -1))
        }
    }
}

/// Shows the sample at `index`, or the nearest one that reads going `way` (-1 earlier, +1
/// later); the ones skipped are named in the footer.
fn show_nearest(catalog: &Catalog, index: usize, way: i64, app: &mut App) -> Result<(), String> {
    let mut skipped = Vec::new();
    let mut at = index as i64;
    while (0..catalog.len() as i64).contains(&at) {
        match show(catalog, at as usize, app) {
            Ok(()) => {
                if let (Some(past), Some(first)) = (app.past.as_mut(), skipped.first()) {
                    past.note = Some(if skipped.len() == 1 {
                        format!("skipped {first}")
                    } else {
                        format!(
                            "skipped {} samples that do not read; the first: {first}",
                            skipped.len()
                        )
                    });
                }
                return Ok(());
            }
            Err(why) => skipped.push(why),
        }
        at += way;
    }
    Err(format!(
        "no sample reads that way ({} skipped); the first: {}",
        skipped.len(),
        skipped.first().map_or("-", String::as_str)
    ))
}

/// The store at `dir`, read, and the sample standing for `at` in it: refused with a
/// sentence (the range the store holds) before any screen is taken.
pub struct Opened {
    store: String,
    at_ms: i64,
    catalog: Catalog,
    index: usize,
}

pub fn open(dir: &Path, at: &str) -> anyhow::Result<Opened> {
    let reader = Reader::open(dir)?;
    let at_ms = parse_time_with(at, now_ms(), &local_clock).map_err(|e| anyhow!("--at {e}"))?;
    let catalog = reader.catalog()?;
    let index = catalog.find(at_ms).map_err(|e| anyhow!("{e}"))?;
    Ok(Opened {
        store: dir.display().to_string(),
        at_ms,
        catalog,
        index,
    })
}

/// Runs the view on `opened` until `q`, Ctrl-C, SIGINT or SIGTERM.
pub async fn run(opened: Opened, logs: LogBuffer) -> anyhow::Result<()> {
    let Opened {
        store,
        at_ms,
        catalog,
        index,
    } = opened;
    let mut app = App::default();
    app.past = Some(Past {
        store,
        at_ms,
        count: catalog.len(),
        ..Past::default()
    });
    show_nearest(&catalog, index, -1, &mut app).map_err(|e| anyhow!("--at: {e}"))?;
    let mut stop = Stop::install()?;
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Event>(64);
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if keys_tx.blocking_send(ev).is_err() {
                break;
            }
        }
    });
    let result = loop {
        if let Err(e) = terminal.draw(|frame| render::render(frame, &app)) {
            break Err(anyhow!("cannot draw on the terminal: {e}"));
        }
        let width = terminal.size().map_or(0, |s| s.width);
        app.shown = render::fitting_columns(width.saturating_sub(2));
        let ev = tokio::select! {
            ev = keys.recv() => ev,
            () = stop.recv() => break Ok(()),
        };
        let Some(ev) = ev else {
            break Ok(());
        };
        if let Event::Key(key) = ev {
            app.on_key(key);
        }
        if app.quit {
            break Ok(());
        }
        let request = app.past.as_mut().and_then(|p| p.request.take());
        if let Some(travel) = request {
            let at = app.past.as_ref().map_or(index, |p| p.index);
            let moved = destination(&catalog, at, &travel)
                .and_then(|(to, way)| show_nearest(&catalog, to, way, &mut app));
            if let (Err(why), Some(past)) = (moved, app.past.as_mut()) {
                past.note = Some(why);
            }
        }
    };
    ratatui::try_restore().context("cannot restore the terminal")?;
    for line in logs.drain() {
        eprintln!("{line}");
    }
    result
}
