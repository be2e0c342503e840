//! The sync's state directory: a lock file (one run at a time) and the time of the last
//! completed run (the interval between runs).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};

/// The lock file; held (flock) for the whole run.
pub const LOCK_FILE: &str = "sync.lock";
/// The start time (Unix seconds) of the last run that completed.
pub const LAST_RUN_FILE: &str = "sync.last";

/// Timers and cron start a run a little early or late; a run this much short of the interval
/// still counts as due, so that a timer with the same period never skips every other run.
pub const GRACE: Duration = Duration::from_secs(30);

pub struct StateDir {
    dir: PathBuf,
}

/// Held while a run goes on; dropping it (or the process ending) releases the lock.
pub struct RunLock {
    _file: File,
}

impl StateDir {
    /// The directory, created with mode 0700 when missing (an existing one is left as it is).
    pub fn open(dir: &Path) -> Result<StateDir, String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Takes the run lock without waiting: `None` when another run holds it.
    pub fn try_lock(&self) -> Result<Option<RunLock>, String> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }

    /// The start of the last completed run; `None` when there was none (or the file is not a
    /// time, which the next completed run overwrites).
    pub fn last_run(&self) -> Result<Option<SystemTime>, String> {
        let path = self.dir.join(LAST_RUN_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        match text.trim().parse::<u64>() {
            Ok(secs) => Ok(Some(UNIX_EPOCH + Duration::from_secs(secs))),
            Err(_) => Err(format!(
                "{} does not hold a time; it is rewritten by the next completed run",
                path.display()
            )),
        }
    }

    /// Records `started` as the start of the last completed run (written to a temporary file,
    /// then renamed, so a crash never leaves a half-written time).
    pub fn record(&self, started: SystemTime) -> Result<(), String> {
        let secs = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self.dir.join(LAST_RUN_FILE);
        let tmp = self.dir.join(format!("{LAST_RUN_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{secs}")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Whether a run is due at `now`: `interval` (less [`GRACE`]) has passed since the start of
/// the last completed run. A last run in the future (the clock went back) makes it due.
pub fn due(last: SystemTime, now: SystemTime, interval: Duration) -> bool {
    match now.duration_since(last) {
        Ok(elapsed) => elapsed + GRACE >= interval,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_the_interval_less_the_grace() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let fifteen = Duration::from_secs(15 * 60);
        assert!(!due(t0, t0, fifteen));
        assert!(!due(t0, t0 + Duration::from_secs(14 * 60), fifteen));
        assert!(due(t0, t0 + fifteen - GRACE, fifteen));
        assert!(due(t0, t0 + fifteen, fifteen));
        assert!(due(t0, t0 - Duration::from_secs(5), fifteen));
        assert!(due(t0, t0, Duration::ZERO));
    }

    #[test]
    fn state_round_trip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("a/b")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(state.last_run().unwrap(), None);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        state.record(t).unwrap();
        assert_eq!(state.last_run().unwrap(), Some(t));
        let held = state.try_lock().unwrap();
        assert!(held.is_some());
        // a second open file description conflicts, as another process would
        assert!(state.try_lock().unwrap().is_none());
        drop(held);
        assert!(state.try_lock().unwrap().is_some());
        fs::write(dir.path().join("a/b").join(LAST_RUN_FILE), "garbage").unwrap();
        assert!(state.last_run().is_err());
    }
}
