//! Children the daemon owns, and (when PID 1) the orphans it must reap.
//!
//! Exactly one owner waits on each child: tokio's `Child::wait` for the ones we spawn.
//! A blanket `waitpid(-1)` would steal their exit statuses, so every spawn goes through
//! `spawn_owned`, which records the pid while holding the registry lock; the PID-1 reaper
//! only reaps zombies that are not in the registry.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The pids of children some task of ours waits on.
#[derive(Debug, Default)]
pub struct OwnedChildren {
    pids: Mutex<HashSet<u32>>,
}

/// The process-wide registry.
pub fn owned() -> &'static OwnedChildren {
    static OWNED: OnceLock<OwnedChildren> = OnceLock::new();
    OWNED.get_or_init(OwnedChildren::default)
}

impl OwnedChildren {
    /// Spawns `command` and records its pid before any reaper can look at it.
    pub fn spawn(&self, command: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        let child = command.spawn()?;
        if let Some(pid) = child.id() {
            pids.insert(pid);
        }
        Ok(child)
    }

    /// Call after the owner's `wait` returned.
    pub fn release(&self, pid: u32) {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }

    pub fn contains(&self, pid: u32) -> bool {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).contains(&pid)
    }
}
