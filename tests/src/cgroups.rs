//! Real cgroup v2 (and v1) groups for a test, removed when dropped; fresh YARN ids.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

/// A cgroup (v2, or one v1 hierarchy), removed on drop with every directory created for
/// it (after its processes are gone).
pub struct Cgroup {
    /// The group's directory.
    pub path: PathBuf,
    /// Its path inside the hierarchy, as `/proc/PID/cgroup` shows it.
    pub rel: String,
    created: Vec<PathBuf>,
}

impl Cgroup {
    /// `/zkconn-test-<pid>-<name>` in the cgroup v2 hierarchy.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        Self::v2(&format!("/zkconn-test-{}-{name}", std::process::id()))
    }

    /// `rel` (nested directories allowed) in the cgroup v2 hierarchy.
    pub fn v2(rel: &str) -> anyhow::Result<Self> {
        let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|m| Path::new(m).join("cgroup.procs").exists() && is_cgroup2(m))
            .ok_or_else(|| anyhow!("no cgroup2 mount"))?;
        Self::at(Path::new(mount), rel)
    }

    /// `rel` in the cgroup v1 hierarchy of `controller` (`cpu`, `memory`, ...).
    pub fn v1(controller: &str, rel: &str) -> anyhow::Result<Self> {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        if !mount.join("tasks").exists() {
            bail!("no cgroup v1 hierarchy at {}", mount.display());
        }
        Self::at(&mount, rel)
    }

    fn at(mount: &Path, rel: &str) -> anyhow::Result<Self> {
        let mut created = Vec::new();
        let mut dir = mount.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                created.push(dir.clone());
            }
        }
        Ok(Cgroup {
            path: dir,
            rel: rel.to_owned(),
            created,
        })
    }

    /// Removes the group now (as YARN does when a container ends); `drop` then has nothing
    /// left to do.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        while let Some(dir) = self.created.pop() {
            remove_cgroup_dir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
        }
        Ok(())
    }
}

pub(crate) fn remove_cgroup_dir(dir: &Path) -> std::io::Result<()> {
    // A process that just exited may still be leaving the group.
    let mut last = Ok(());
    for _ in 0..50 {
        last = std::fs::remove_dir(dir);
        if last.is_ok() {
            return last;
        }
        thread::sleep(Duration::from_millis(100));
    }
    last
}

pub(crate) fn is_cgroup2(mount: &str) -> bool {
    Path::new(mount).join("cgroup.controllers").exists()
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        while let Some(dir) = self.created.pop() {
            let _ = remove_cgroup_dir(&dir);
        }
    }
}

/// A YARN cluster timestamp no other test (or test run) uses, for fresh application ids.
pub fn fresh_cluster_ts() -> u64 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
    1_700_000_000_000 + u64::from(std::process::id()) * 1000 + n
}
