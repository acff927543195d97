//! Printing a snapshot: JSON, or readable tables. No I/O besides the writer it is given.

use std::io::{self, Write};

use crate::model::Snapshot;

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

pub fn text(out: &mut impl Write, s: &Snapshot) -> io::Result<()> {
    let hook = s.probe.hook.map_or("-".to_owned(), |h| h.to_string());
    writeln!(
        out,
        "zkconn on {} at {} (hook {hook}, observed {:.1}s) lost {} overflow {} unreadable {}",
        s.host, s.time, s.observed_secs, s.probe.lost, s.probe.overflow, s.probe.unreadable
    )?;
    writeln!(out, "watching {}", s.targets.join(", "))?;
    writeln!(out)?;
    if s.servers.is_empty() {
        writeln!(out, "No ZooKeeper connections.")?;
    } else {
        let rows: Vec<Vec<String>> = s
            .servers
            .iter()
            .map(|r| {
                vec![
                    r.server.clone(),
                    r.local_ip.clone(),
                    r.states.open.to_string(),
                    r.states.connecting.to_string(),
                    r.states.close_wait.to_string(),
                    r.states.closing.to_string(),
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
    if !s.processes.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = s
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.pid.to_string(),
                    p.comm.clone(),
                    if p.alive { "yes" } else { "no" }.to_owned(),
                    p.states.open.to_string(),
                    p.states.close_wait.to_string(),
                    p.opened.to_string(),
                    p.closed.to_string(),
                    p.failed.to_string(),
                    p.seeded.to_string(),
                    p.cgroup.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            out,
            &[
                "PID",
                "COMM",
                "ALIVE",
                "OPEN",
                "CLOSE_WAIT",
                "OPENED",
                "CLOSED",
                "FAILED",
                "SEEDED",
                "CGROUP",
            ],
            &rows,
        )?;
    }
    Ok(())
}
