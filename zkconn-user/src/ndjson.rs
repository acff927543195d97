//! `--ndjson`: the daemon's snapshots appended to a file (or stdout), one per line, rotated
//! by size and reopened on SIGHUP.
//!
//! Owns: the file, its size and rotation, and saying when appending fails and when it
//! works again. Must not: build documents (it is handed snapshots). It logs as the daemon
//! (`zkconn::daemon`), the target its journal lines have always had.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The log target of these lines: the daemon's.
const LOG: &str = "zkconn::daemon";

/// `--ndjson PATH|-`: one snapshot per line, appended. A file is rotated once it would
/// grow past `--ndjson-max-mib` (PATH becomes PATH.1, replacing the one before), so it
/// never takes more than twice that.
pub struct Ndjson {
    out: Box<dyn std::io::Write + Send>,
    what: String,
    /// The file, when it is one (not stdout), with its size and the rotation size.
    file: Option<(PathBuf, u64, u64)>,
    /// Whether the last append failed (logged when it starts and when it ends).
    failing: bool,
}

impl Ndjson {
    pub fn open(path: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        if path.as_os_str() == "-" {
            return Ok(Self {
                out: Box::new(std::io::stdout()),
                what: "stdout".into(),
                file: None,
                failing: false,
            });
        }
        // A symlink is followed once: rotation renames the file it names, not the link.
        let path = &std::fs::canonicalize(path)
            .or_else(|_| {
                // A link to a file not made yet.
                std::fs::read_link(path).map(|to| match path.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                })
            })
            .unwrap_or_else(|_| path.to_owned());
        let (out, size) = Self::append_to(path).with_context(|| {
            format!("--ndjson {}: cannot open it for appending", path.display())
        })?;
        Ok(Self {
            out,
            what: path.display().to_string(),
            file: Some((path.to_owned(), size, max_bytes)),
            failing: false,
        })
    }

    fn append_to(path: &Path) -> std::io::Result<(Box<dyn std::io::Write + Send>, u64)> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok((Box::new(std::io::BufWriter::new(file)), size))
    }

    /// Opens PATH again (SIGHUP: logrotate renamed it and expects a new file). A failure is
    /// logged; the next append tries again.
    pub fn reopen(&mut self) {
        let Some((path, size, _)) = &mut self.file else {
            return;
        };
        match Self::append_to(path) {
            Ok((out, new_size)) => {
                let _ = self.out.flush();
                self.out = out;
                *size = new_size;
                tracing::warn!(
                    target: LOG,
                    "SIGHUP: --ndjson {} reopened", path.display());
            }
            Err(e) => tracing::error!(
                target: LOG,
                "SIGHUP: --ndjson {}: cannot reopen it ({e}); appending to the file open before",
                path.display()
            ),
        }
    }

    /// Before writing `len` more bytes: PATH to PATH.1 and a new PATH when it would pass
    /// the rotation size.
    fn rotate_for(&mut self, len: u64) -> std::io::Result<()> {
        let Some((path, size, max)) = &mut self.file else {
            return Ok(());
        };
        if *size == 0 || *size + len <= *max {
            return Ok(());
        }
        self.out.flush()?;
        let mut old = path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&*path, &old).map_err(|e| {
            std::io::Error::new(e.kind(), format!("rotating it to {}: {e}", old.display()))
        })?;
        let (out, new_size) = Self::append_to(path)?;
        self.out = out;
        *size = new_size;
        Ok(())
    }

    /// Appends `snap` as one line; returns why it could not. A failure is logged when it
    /// starts and when it ends, not at every refresh.
    pub fn append(&mut self, snap: &crate::model::Snapshot) -> Option<String> {
        let result = serde_json::to_string(snap)
            .map_err(std::io::Error::from)
            .and_then(|line| {
                let len = line.len() as u64 + 1;
                self.rotate_for(len)?;
                // After a failed append the file may end in part of a line: end it, so the
                // next snapshot is a line of its own (the torn one stays unparseable).
                if self.failing {
                    writeln!(self.out)?;
                }
                writeln!(self.out, "{line}")?;
                if let Some((_, size, _)) = &mut self.file {
                    *size += len;
                }
                Ok(())
            })
            .and_then(|()| self.out.flush());
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(target: LOG, "--ndjson {}: appending again", self.what);
                    self.failing = false;
                }
                None
            }
            Err(e) => {
                let why = format!("cannot append to {}: {e}", self.what);
                if !self.failing {
                    tracing::error!(
                        target: LOG,
                        "--ndjson {why}; /metrics and /v1/snapshot stay current, /healthz says \
                         so until it works again"
                    );
                    self.failing = true;
                }
                Some(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ndjson;

    /// The file is rotated before it passes its size: PATH.1 holds the lines before, PATH
    /// the ones after, every line whole, and the two never hold more than twice the size.
    #[test]
    fn ndjson_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zkconn.ndjson");
        let snap = crate::model::Snapshot::for_test(crate::model::Rows::default());
        let line = serde_json::to_string(&snap).unwrap().len() as u64 + 1;
        let mut out = Ndjson::open(&path, line * 3).unwrap();
        for _ in 0..8 {
            assert_eq!(out.append(&snap), None);
        }
        let lines = |p: &std::path::Path| {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(
                text.lines()
                    .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            );
            text.lines().count()
        };
        let rotated = dir.path().join("zkconn.ndjson.1");
        // 8 lines, 3 per file: the current file holds 2, the rotated one 3 (the first 3
        // were replaced by the next rotation).
        assert_eq!((lines(&path), lines(&rotated)), (2, 3));
        let total =
            std::fs::metadata(&path).unwrap().len() + std::fs::metadata(&rotated).unwrap().len();
        assert!(total <= 2 * line * 3);
    }

    /// A symlinked path: the file it names is rotated, the link stays a link to it.
    #[test]
    fn a_symlinked_ndjson_rotates_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.ndjson");
        let link = dir.path().join("link.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let snap = crate::model::Snapshot::for_test(crate::model::Rows::default());
        let line = serde_json::to_string(&snap).unwrap().len() as u64 + 1;
        let mut out = Ndjson::open(&link, line * 2).unwrap();
        for _ in 0..5 {
            assert_eq!(out.append(&snap), None);
        }
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(dir.path().join("real.ndjson.1").exists());
        assert!(!dir.path().join("link.ndjson.1").exists());
    }
}
