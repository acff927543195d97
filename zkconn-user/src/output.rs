//! Printing a snapshot: JSON, or readable tables. No I/O besides the writer it is given.

use std::io::{self, Write};

use crate::model::{Snapshot, Totals};

pub fn json(out: &mut impl Write, snapshot: &Snapshot) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, snapshot)?;
    writeln!(out)
}

fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn n(v: u64) -> String {
    v.to_string()
}

/// The five counter columns every roll-up table ends with.
const TOTALS: [&str; 5] = ["OPEN", "CLOSE_WAIT", "OPENED", "CLOSED", "FAILED"];

fn with_totals(mut cells: Vec<String>, t: &Totals) -> Vec<String> {
    cells.extend([t.open, t.close_wait, t.opened, t.closed, t.failed].map(n));
    cells
}

fn header<'a>(first: &[&'a str]) -> Vec<&'a str> {
    first.iter().copied().chain(TOTALS).collect()
}

pub fn text(out: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    let hook = s.probe.hook.map_or("-".to_owned(), |h| h.to_string());
    writeln!(
        out,
        "zkconn on {} at {} (hook {hook}, observed {:.1}s) lost {} overflow {} unreadable {}",
        s.host, s.time, s.observed_secs, s.probe.lost, s.probe.overflow, s.probe.unreadable
    )?;
    writeln!(out, "watching {}", s.targets.join(", "))?;
    writeln!(out)?;
    let r = &s.rows;
    if r.servers.is_empty() {
        writeln!(out, "No ZooKeeper connections.")?;
    } else {
        let rows: Vec<Vec<String>> = r
            .servers
            .iter()
            .map(|r| {
                vec![
                    r.server.clone(),
                    r.local_ip.clone(),
                    n(r.states.open),
                    n(r.states.connecting),
                    n(r.states.close_wait),
                    n(r.states.closing),
                ]
            })
            .collect();
        table(
            out,
            &[
                "SERVER",
                "LOCAL IP",
                "OPEN",
                "CONNECTING",
                "CLOSE_WAIT",
                "CLOSING",
            ],
            &rows,
        )?;
    }
    if !r.processes.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .processes
            .iter()
            .map(|p| {
                vec![
                    n(u64::from(p.pid)),
                    p.who.kind.to_string(),
                    p.who.label.clone(),
                    p.user
                        .clone()
                        .or_else(|| p.uid.map(|u| u.to_string()))
                        .unwrap_or_else(|| "-".into()),
                    if p.alive { "yes" } else { "no" }.to_owned(),
                    n(p.states.open),
                    n(p.states.close_wait),
                    n(p.opened),
                    n(p.closed),
                    n(p.failed),
                ]
            })
            .collect();
        table(
            out,
            &[
                "PID",
                "KIND",
                "OWNER",
                "USER",
                "ALIVE",
                "OPEN",
                "CLOSE_WAIT",
                "OPENED",
                "CLOSED",
                "FAILED",
            ],
            &rows,
        )?;
    }
    if !r.applications.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .applications
            .iter()
            .map(|a| {
                let cells = vec![a.application.clone(), n(a.containers.len() as u64)];
                with_totals(cells, &a.totals)
            })
            .collect();
        table(out, &header(&["YARN APPLICATION", "CONTAINERS"]), &rows)?;
    }
    if !r.services.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .services
            .iter()
            .map(|sv| {
                let kinds: Vec<&str> = sv.kinds.iter().map(|k| k.as_str()).collect();
                let cells = vec![sv.service.clone(), kinds.join(","), n(sv.pids.len() as u64)];
                with_totals(cells, &sv.totals)
            })
            .collect();
        table(out, &header(&["SERVICE", "KIND", "PROCESSES"]), &rows)?;
    }
    Ok(())
}
