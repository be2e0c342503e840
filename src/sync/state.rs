//! The sync's state directory: a lock file (one run at a time) and the time of the last
//! completed run (the interval between runs).
//!
//! The directory must be this user's and closed to others; every file in it is opened relative
//! to the directory's descriptor without following symlinks, and the time is written to a fresh
//! temporary file with an unpredictable name, then renamed: nothing planted in the directory
//! (or swapped for it after the check) is ever written through.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, flock, openat, renameat, unlinkat};
use rustix::io::Errno;

use crate::file_trust;

/// The lock file; held (flock) for the whole run.
pub const LOCK_FILE: &str = "sync.lock";
/// The start time (Unix seconds) of the last run that completed.
pub const LAST_RUN_FILE: &str = "sync.last";
/// Temporary files for [`LAST_RUN_FILE`] are named this plus a random suffix; only a run holding
/// the lock writes one, so under the lock any such file is a leftover of a crashed run.
const TEMP_PREFIX: &str = "sync.last.tmp";

/// Timers and cron start a run a little early or late; a run this much short of the interval
/// still counts as due, so that a timer with the same period never skips every other run.
pub const GRACE: Duration = Duration::from_secs(30);

pub struct StateDir {
    path: PathBuf,
    dir: File,
}

/// Held while a run goes on; dropping it (or the process ending) releases the lock.
pub struct RunLock {
    _file: OwnedFd,
}

/// What the file of the last run holds.
#[derive(Debug, PartialEq, Eq)]
pub enum LastRun {
    Never,
    At(SystemTime),
    /// Not a time; the next completed run overwrites it.
    Unreadable(String),
}

impl StateDir {
    /// The directory, created with mode 0700 when missing. An existing one must belong to the
    /// effective user and be closed to group and others.
    pub fn open(path: &Path) -> Result<StateDir, String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| format!("cannot create the state directory {}: {e}", path.display()))?;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .map_err(|e| format!("cannot open the state directory {}: {e}", path.display()))?;
        let meta = dir
            .metadata()
            .map_err(|e| format!("state directory {}: {e}", path.display()))?;
        file_trust::check_private_dir(path, &meta)
            .map_err(|e| format!("refusing the state directory: {e}"))?;
        Ok(StateDir {
            path: path.to_owned(),
            dir,
        })
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join(LOCK_FILE)
    }

    /// Opens `name` in the directory; a symlink is refused, never followed.
    fn open_in(&self, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    }

    fn open_error(&self, name: &str, e: Errno) -> String {
        let path = self.path.join(name);
        if e == Errno::LOOP {
            format!("{} is a symlink: refused (remove it)", path.display())
        } else {
            format!("cannot open {}: {e}", path.display())
        }
    }

    /// Takes the run lock without waiting: `None` when another run holds it.
    pub fn try_lock(&self) -> Result<Option<RunLock>, String> {
        let file = self
            .open_in(LOCK_FILE, OFlags::RDWR | OFlags::CREATE)
            .map_err(|e| self.open_error(LOCK_FILE, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(RunLock { _file: file })),
            Err(e) if e == Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(format!("cannot lock {}: {e}", self.lock_path().display())),
        }
    }

    /// The start of the last completed run. A file that cannot be opened (a symlink, no
    /// permission) is an error; one that does not hold a time is [`LastRun::Unreadable`].
    pub fn last_run(&self) -> Result<LastRun, String> {
        let fd = match self.open_in(LAST_RUN_FILE, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT => return Ok(LastRun::Never),
            Err(e) => return Err(self.open_error(LAST_RUN_FILE, e)),
        };
        let path = self.path.join(LAST_RUN_FILE);
        let mut text = String::new();
        File::from(fd)
            .take(64)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(match text.trim().parse::<u64>() {
            Ok(secs) => LastRun::At(UNIX_EPOCH + Duration::from_secs(secs)),
            Err(_) => LastRun::Unreadable(format!(
                "{} does not hold a time; it is rewritten by the next completed run",
                path.display()
            )),
        })
    }

    /// Records `started` as the start of the last completed run: written to a new temporary
    /// file, synced, then renamed (and the directory synced), so a crash never leaves a
    /// half-written time. Call it only
    /// while holding the lock (it removes temporary files crashed runs left behind).
    pub fn record(&self, started: SystemTime) -> Result<(), String> {
        let secs = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = self.path.join(LAST_RUN_FILE);
        let write_error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
        self.remove_leftover_temp_files().map_err(write_error)?;
        let (tmp, fd) = self.create_temp_file().map_err(write_error)?;
        let mut file = File::from(fd);
        let written = writeln!(file, "{secs}")
            .and_then(|()| file.sync_all())
            .and_then(|()| Ok(renameat(&self.dir, &tmp, &self.dir, LAST_RUN_FILE)?));
        if written.is_err() {
            let _ = unlinkat(&self.dir, &tmp, AtFlags::empty());
        }
        // the rename itself survives a crash once the directory is synced
        written
            .and_then(|()| self.dir.sync_all())
            .map_err(write_error)
    }

    /// A new file (`O_EXCL`, mode 0600) under an unpredictable name.
    fn create_temp_file(&self) -> std::io::Result<(String, OwnedFd)> {
        let mut last = Errno::EXIST;
        for _ in 0..8 {
            let mut random = [0u8; 8];
            rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
            let name = format!("{TEMP_PREFIX}.{}", hex::encode(random));
            match self.open_in(&name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL) {
                Ok(fd) => return Ok((name, fd)),
                Err(e) if e == Errno::EXIST => last = e,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }

    /// Temporary files of runs that crashed between creating and renaming them (and the fixed
    /// name older versions used). `unlinkat` removes a symlink itself, never its target.
    fn remove_leftover_temp_files(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str().filter(|n| n.starts_with(TEMP_PREFIX)) {
                match unlinkat(&self.dir, name, AtFlags::empty()) {
                    Ok(()) => {}
                    Err(e) if e == Errno::NOENT => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
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
    use std::fs;

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
        assert_eq!(state.last_run().unwrap(), LastRun::Never);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        state.record(t).unwrap();
        assert_eq!(state.last_run().unwrap(), LastRun::At(t));
        let held = state.try_lock().unwrap();
        assert!(held.is_some());
        // a second open file description conflicts, as another process would
        assert!(state.try_lock().unwrap().is_none());
        drop(held);
        assert!(state.try_lock().unwrap().is_some());
        fs::write(dir.path().join("a/b").join(LAST_RUN_FILE), "garbage").unwrap();
        assert!(matches!(state.last_run().unwrap(), LastRun::Unreadable(_)));
    }
}
