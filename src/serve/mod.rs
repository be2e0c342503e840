//! `serve`: the login flow as a long-running HTTP service with pooled LDAP and database
//! connections, for the Lua script's `url` transport (no process per login).
//!
//! Threads: one accepts connections, one per client connection reads its requests and runs
//! them ([`wire`]); `serve.workers` bounds how many logins run at once (a pool of places, like
//! the connection pools). The main thread waits for signals: SIGHUP re-reads the
//! configuration (a broken one keeps the old), SIGTERM/SIGINT stop accepting, let the requests
//! in flight finish, and exit. With `ldap.from_mailcow`, one more thread reads mailcow's
//! settings again periodically ([`mailcow_settings`]).

pub mod connections;
mod http;
mod mailcow_settings;
mod metrics;
pub mod pool;
mod remembered;
mod unchanged;
mod wire;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use secrecy::SecretString;

use crate::config::{Config, IdpRows, ServeConfig};
use crate::log::{Logger, Severity};
use connections::Pools;
use mailcow_settings::{MailcowSettings, SettingsStatus};
use metrics::Metrics;
use wire::{ConnectionCount, Listener};

/// Client connections open at once; past this a new one is answered 503.
const MAX_CONNECTIONS: usize = 1024;

/// One configuration and what is built from it; a SIGHUP (or a change in mailcow's settings)
/// makes the next. Requests running keep the one they started with.
pub struct Generation {
    /// Leaked on purpose: pooled LDAP sessions borrow it for as long as they live, which is
    /// until the process ends or a reload retires them (one small config per reload).
    config: &'static Config,
    /// Shared with the next generation when only mailcow's mapping changed.
    pools: Arc<Pools>,
    token: SecretString,
    logger: Arc<Logger>,
    /// With `ldap.from_mailcow`: what `config` was completed from.
    mailcow: Option<MailcowSettings>,
}

/// What the workers share across generations.
pub struct Shared {
    metrics: Metrics,
    in_flight: AtomicUsize,
    stopping: AtomicBool,
    current: RwLock<Arc<Generation>>,
    /// How the last reading of mailcow's settings went.
    settings: SettingsStatus,
    /// One reload (SIGHUP or a reading of mailcow's settings) at a time, so that neither
    /// replaces a newer generation with one built from an older.
    reloading: Mutex<()>,
}

impl Shared {
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Generation {
    /// The configuration at `path`, with `ldap.from_mailcow` completed from mailcow's table
    /// (`last`: the rows the running generation has, kept if the table cannot be used).
    fn load(
        path: &Path,
        last: Option<&Arc<IdpRows>>,
        status: &SettingsStatus,
    ) -> Result<Generation, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let mut warnings = config.warnings.clone();
        let token_file =
            config.serve.token_file.as_deref().ok_or(
                "serve.token_file: missing (serve refuses to run without a shared secret)",
            )?;
        let token = crate::config::secret_file(token_file, "serve.token_file", &mut warnings)?;
        if secrecy::ExposeSecret::expose_secret(&token)
            .trim()
            .is_empty()
        {
            return Err(format!(
                "serve.token_file: {} is empty",
                token_file.display()
            ));
        }
        let logger = Arc::new(Logger::new(&config.log));
        for warning in &warnings {
            logger.log(Severity::Warning, warning);
        }
        let (config, mailcow) = mailcow_settings::settle(config, last, status, &logger);
        let config: &'static Config = Box::leak(Box::new(config));
        Ok(Generation {
            config,
            pools: Arc::new(Pools::new(config, logger.clone())),
            token,
            logger,
            mailcow,
        })
    }

    /// The rows of mailcow's table this generation's settings came from.
    fn mailcow_rows(&self) -> Option<&Arc<IdpRows>> {
        self.mailcow.as_ref().and_then(|m| m.rows.as_ref())
    }
}

/// How `serve` ended; `exit.rs` maps it to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeResult {
    /// SIGTERM or SIGINT, after the requests in flight ended.
    Stopped,
    /// The configuration or the listening socket failed.
    NotStarted,
}

pub fn run(config_path: &Path) -> ServeResult {
    let status = SettingsStatus::default();
    let generation = match Generation::load(config_path, None, &status) {
        Ok(g) => g,
        Err(e) => {
            Logger::fallback().log(Severity::Error, &format!("serve: not started: {e}"));
            return ServeResult::NotStarted;
        }
    };
    let settings = generation.config.serve.clone();
    let listener = match listen(&settings) {
        Ok(listener) => Arc::new(listener),
        Err(e) => {
            let line = format!("serve: cannot listen on {}: {e}", settings.listen);
            generation.logger.log(Severity::Error, &line);
            return ServeResult::NotStarted;
        }
    };
    // Blocked here, before any thread starts, so that every thread inherits the mask and only
    // the main thread's sigwait sees these signals.
    let signals = blocked_signals();
    generation.logger.log(
        Severity::Info,
        &format!(
            "serve: listening on {} with {} workers",
            settings.listen, settings.workers
        ),
    );
    let shared = Arc::new(Shared {
        metrics: Metrics::default(),
        in_flight: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        current: RwLock::new(Arc::new(generation)),
        settings: status,
        reloading: Mutex::new(()),
    });
    {
        let shared = shared.clone();
        std::thread::spawn(move || {
            loop {
                let every = shared.current().config.serve.mailcow_settings_refresh_s;
                std::thread::sleep(Duration::from_secs(every));
                reread_mailcow_settings(&shared);
            }
        });
    }
    let accepting = {
        let (listener, shared) = (listener.clone(), shared.clone());
        let timeout = Duration::from_millis(settings.client_timeout_ms);
        std::thread::spawn(move || accept(&listener, &shared, timeout))
    };
    // SIGHUP reloads; SIGTERM or SIGINT ends the loop.
    while wait_for(&signals) == libc::SIGHUP {
        reload(config_path, &shared, &settings);
    }
    shared.stopping.store(true, Ordering::SeqCst);
    listener.shut();
    let _ = accepting.join();
    shared.current().logger.log(
        Severity::Info,
        &format!(
            "serve: stopping; no new connections, {} requests in flight",
            shared.in_flight()
        ),
    );
    // Each request ends by its deadline.
    while shared.in_flight() > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(path) = socket_path(&settings.listen) {
        let _ = std::fs::remove_file(path);
    }
    shared
        .current()
        .logger
        .log(Severity::Info, "serve: stopped");
    ServeResult::Stopped
}

/// Accepts connections until the listener is shut, each served on a thread of its own.
fn accept(listener: &Listener, shared: &Arc<Shared>, timeout: Duration) {
    let open = ConnectionCount::new(MAX_CONNECTIONS);
    loop {
        let stream = match listener.accept() {
            Ok(stream) => stream,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin, and go on.
                let line = format!("serve: accept failed: {e}");
                shared.current().logger.log(Severity::Error, &line);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(place) = open.enter() else {
            wire::turn_away(stream, timeout);
            continue;
        };
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _place = place;
            let handle = |request| {
                shared.in_flight.fetch_add(1, Ordering::SeqCst);
                let response = http::handle(request, &shared.current(), &shared);
                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                response
            };
            let malformed = |bad: &wire::Malformed, peer: &str| {
                http::malformed(&shared.current(), &shared, bad, peer)
            };
            let stopping = || shared.stopping.load(Ordering::SeqCst);
            wire::serve_connection(
                stream,
                timeout,
                http::MAX_BODY,
                &handle,
                &malformed,
                &stopping,
            );
        });
    }
}

fn reload(path: &Path, shared: &Shared, running: &ServeConfig) {
    let _alone = shared.reloading.lock().unwrap_or_else(|e| e.into_inner());
    let old = shared.current();
    match Generation::load(path, old.mailcow_rows(), &shared.settings) {
        Ok(new) => {
            let restart_only = [
                (new.config.serve.listen != running.listen, "serve.listen"),
                (new.config.serve.workers != running.workers, "serve.workers"),
                (
                    new.config.serve.client_timeout_ms != running.client_timeout_ms,
                    "serve.client_timeout_ms",
                ),
            ];
            for (_, key) in restart_only.iter().filter(|(changed, _)| *changed) {
                new.logger.log(
                    Severity::Warning,
                    &format!("serve: reload: {key} changed; it takes effect on a restart"),
                );
            }
            let logger = new.logger.clone();
            *shared.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
            logger.log(Severity::Info, "serve: configuration reloaded");
        }
        Err(e) => old.logger.log(
            Severity::Error,
            &format!("serve: reload failed, keeping the running configuration: {e}"),
        ),
    }
}

/// With `ldap.from_mailcow`: a new generation when mailcow's settings changed, on new pools
/// unless only the mapping changed. Requests running finish on the old one.
fn reread_mailcow_settings(shared: &Shared) {
    let _alone = shared.reloading.lock().unwrap_or_else(|e| e.into_inner());
    let old = shared.current();
    let Some(running) = &old.mailcow else {
        return;
    };
    let Some(changed) = mailcow_settings::reread(running, &shared.settings, &old.logger) else {
        return;
    };
    let config: &'static Config = Box::leak(Box::new(changed.config));
    let (pools, what) = if changed.same_connections {
        (
            old.pools.clone(),
            "the mapping changed; connection pools kept",
        )
    } else {
        (
            Arc::new(Pools::new(config, old.logger.clone())),
            "new connection pools",
        )
    };
    let new = Generation {
        config,
        pools,
        token: old.token.clone(),
        logger: old.logger.clone(),
        mailcow: Some(changed.settings),
    };
    *shared.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
    old.logger.log(
        Severity::Info,
        &format!("serve: mailcow's LDAP settings changed: {what}"),
    );
}

/// A `listen` value naming a Unix socket.
fn socket_path(listen: &str) -> Option<&Path> {
    listen.starts_with('/').then(|| Path::new(listen))
}

fn listen(settings: &ServeConfig) -> Result<Listener, String> {
    match socket_path(&settings.listen) {
        Some(path) => {
            // A socket left behind by a previous run; any other file stays.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path).map_err(|e| e.to_string())?;
            }
            let listener =
                std::os::unix::net::UnixListener::bind(path).map_err(|e| e.to_string())?;
            // Anyone on the machine may connect, as to the loopback port: the token is the
            // guard (the Dovecot auth-worker runs as another user).
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| e.to_string())?;
            Ok(Listener::Unix(listener))
        }
        None => std::net::TcpListener::bind(&settings.listen)
            .map(Listener::Tcp)
            .map_err(|e| e.to_string()),
    }
}

fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(signals: &libc::sigset_t) -> libc::c_int {
    let mut signal: libc::c_int = 0;
    // SAFETY: `signals` is an initialised set blocked in every thread.
    unsafe { libc::sigwait(signals, &mut signal) };
    signal
}
