//! Processes a test starts: held by [`Reaped`], killed by pid and reaped when dropped, so
//! nothing a test starts outlives it.

use std::{
    ops::{Deref, DerefMut},
    process::Child,
};

/// A child process a test started: SIGKILLed and reaped when dropped, unless it was reaped
/// already (its pid may then belong to another process, which is left alone).
#[derive(Debug)]
pub struct Reaped(Child);

impl Reaped {
    pub fn new(child: Child) -> Self {
        Self(child)
    }
}

impl Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // `try_wait` remembers a status once read: a child already waited for is not
        // signalled again.
        if matches!(self.0.try_wait(), Ok(None)) {
            kill_and_reap(&mut self.0);
        }
    }
}

/// SIGKILL, then wait for it, so nothing a test started outlives it.
pub fn kill_and_reap(child: &mut Child) {
    kill(child, libc::SIGKILL);
    let _ = child.wait();
}

/// Sends `signal` to a child this process started and has not reaped.
pub fn kill(child: &mut Child, signal: i32) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, signal) };
    }
}
