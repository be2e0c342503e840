//! Process plumbing shared by the throwaway servers: one scratch directory per test process,
//! a long-lived spawner thread (so `PR_SET_PDEATHSIG` only fires when the whole test process
//! goes away), and an `atexit` hook that stops every server and removes the scratch directory.
//!
//! Servers live in `static`s and are never dropped, so cleanup cannot rely on `Drop`. libtest
//! leaves `main` via `exit()` on success and on failure, so the `atexit` hook runs in both cases.
//! If the test process is killed (SIGKILL, Ctrl-C), PDEATHSIG still stops the servers, and the
//! next test process removes scratch directories whose owning pid is gone.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const SCRATCH_PREFIX: &str = "mla-test.";

struct Registry {
    pids: Vec<libc::pid_t>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-process scratch directory (`/tmp/mla-test.<pid>.XXXXXX`, mode 0755). Removed at exit.
pub fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        remove_stale_scratch_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{SCRATCH_PREFIX}{}.", std::process::id()))
            .tempdir_in("/tmp")
            .expect("create scratch dir")
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        registry().dirs.push(dir.clone());
        install_atexit();
        dir
    })
}

/// A per-process directory on tmpfs (`/dev/shm/mla-test.<pid>.XXXXXX`) when /dev/shm has at least
/// 1 GiB free (and MLA_TEST_NO_TMPFS is unset), else the scratch directory. fsync is free on tmpfs, which makes MariaDB DDL (the
/// per-test schema load) several times faster than on a disk. Removed at exit.
pub fn fast_scratch() -> &'static Path {
    static FAST: OnceLock<PathBuf> = OnceLock::new();
    FAST.get_or_init(|| {
        let base = Path::new("/dev/shm");
        // MLA_TEST_NO_TMPFS=1 forces the disk (to measure, or when /dev/shm misbehaves)
        let wanted = std::env::var_os("MLA_TEST_NO_TMPFS").is_none();
        if wanted && free_bytes(base).is_some_and(|b| b >= 1 << 30) {
            if let Ok(dir) = scratch_dir_in(base) {
                return dir;
            }
        }
        scratch().to_path_buf()
    })
}

/// A new per-process directory `<base>/mla-test.<pid>.XXXXXX` (mode 0755), removed at exit;
/// directories of that name under `base` left by dead test processes are removed first.
pub fn scratch_dir_in(base: &Path) -> io::Result<PathBuf> {
    scratch(); // installs the atexit hook and cleans the stale dirs of /tmp and /dev/shm
    if base != Path::new("/tmp") && base != Path::new("/dev/shm") {
        remove_stale_in(std::fs::read_dir(base)?);
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SCRATCH_PREFIX}{}.", std::process::id()))
        .tempdir_in(base)?
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    registry().dirs.push(dir.clone());
    Ok(dir)
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: c is a valid NUL-terminated path, st is a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A fresh sub-directory of the scratch directory (mode 0755).
pub fn scratch_subdir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Removes `/tmp/mla-test.<pid>.*` left behind by test processes that no longer exist
/// (killed before their atexit hook ran).
fn remove_stale_scratch_dirs() {
    for base in ["/tmp", "/dev/shm"] {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        remove_stale_in(rd);
    }
}

fn remove_stale_in(rd: std::fs::ReadDir) {
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(SCRATCH_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Whether `pid` exists and is not a zombie (a killed test process can stay a zombie for a while
/// when PID 1 reaps slowly).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — the state follows the last ')'
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn install_atexit() {
    extern "C" fn on_exit() {
        stop_all();
    }
    // SAFETY: registering a plain extern "C" function.
    let rc = unsafe { libc::atexit(on_exit) };
    assert_eq!(rc, 0, "atexit failed");
}

/// SIGTERM every registered server, wait for it (SIGKILL after 5 s), remove the scratch dirs.
fn stop_all() {
    // try_lock: never block process exit on a lock held by a test thread that is still running.
    let mut reg = match REGISTRY.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for &pid in &reg.pids {
        // SAFETY: plain syscalls on pids we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    for &pid in &reg.pids {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut status = 0;
            // SAFETY: see above.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                break; // reaped (or not our child any more)
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    reg.pids.clear();
    for d in reg.dirs.drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("server-spawner".into())
            .spawn(move || {
                // Lives as long as the process: PR_SET_PDEATHSIG fires when the *thread* that
                // forked the child exits, so servers must not be forked from test threads.
                for job in rx {
                    job();
                }
            })
            .expect("spawn server-spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns a long-lived server from the dedicated spawner thread with PR_SET_PDEATHSIG=SIGTERM and
/// registers it for the atexit cleanup.
pub fn spawn_server(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: prctl/getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .expect("spawner thread gone");
    let child = rx.recv().expect("spawner thread gone")?;
    registry().pids.push(child.id() as libc::pid_t);
    Ok(child)
}

/// Stops a server spawned with [`spawn_server`] (SIGTERM + wait) and unregisters it.
pub fn stop_server(child: &mut Child) {
    end_server(child, libc::SIGTERM);
}

/// Ends a server spawned with [`spawn_server`] with `signal`, waits for it and unregisters it.
pub fn end_server(child: &mut Child, signal: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: our own unreaped child.
    unsafe { libc::kill(pid, signal) };
    let _ = child.wait();
    registry().pids.retain(|&p| p != pid);
}

/// Runs a helper command to completion; panics with its output on failure.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// 16 random bytes as hex (per-instance secrets, unique names).
pub fn random_hex() -> String {
    let mut b = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    std::io::Read::read_exact(&mut f, &mut b).expect("read /dev/urandom");
    hex::encode(b)
}

/// A free TCP port on 127.0.0.1 (bound, then released: may be lost to a race; callers verify).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
