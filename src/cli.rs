//! Command line (clap derive). Parsing only; `main` turns it into work.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueHint};

use crate::config::DEFAULT_PATH;

/// Authenticate mailcow mailboxes against LDAP for Dovecot, and create them from mailcow
/// templates on first login.
#[derive(Debug, Parser)]
#[command(name = "mailcow-ldap-auth", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (YAML).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        value_hint = ValueHint::FilePath,
        env = "MAILCOW_LDAP_AUTH_CONFIG",
        default_value = DEFAULT_PATH
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer one Dovecot checkpassword request (what Dovecot runs; not for shells).
    ///
    /// Reads `user NUL password NUL` from fd 3. Exit codes: 0 via the reply program on success,
    /// 1 wrong password or refused, 111 temporary failure (LDAP, database, TLS, timeout,
    /// configuration), 2 misuse; in lookup mode (AUTHORIZED=1) 2 via the reply program when
    /// the mailbox exists, 3 when it does not.
    ///
    /// Dovecot passdb: `args = /usr/local/bin/mailcow-ldap-auth checkpassword --config
    /// /etc/mailcow-ldap-auth/config.yml` (Dovecot appends the reply program).
    #[command(verbatim_doc_comment)]
    Checkpassword {
        /// The reply program Dovecot appends (e.g. /usr/lib/dovecot/checkpassword-reply) and
        /// its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "REPLY_PROGRAM"
        )]
        reply_program: Vec<OsString>,
    },
    /// Answer one request of Dovecot's Lua passdb/userdb (what the shipped Lua script runs).
    ///
    /// `verify` reads the password from standard input up to its end; `lookup` needs none.
    /// The reply (a result word, then `key=value` lines) goes to `--reply-file` or standard
    /// output. Result words: OK, PASSWORD_MISMATCH, USER_UNKNOWN, USER_DISABLED, NEXT
    /// (mailbox not LDAP-backed), INTERNAL_FAILURE. Exit codes as checkpassword: 0 OK,
    /// 1 refused, 3 lookup found nothing, 111 temporary failure, 2 misuse.
    #[command(verbatim_doc_comment)]
    DovecotLua {
        #[command(subcommand)]
        mode: crate::dovecot_lua::Mode,
    },
    /// Answer logins over HTTP as a long-running service with pooled connections (for the Lua
    /// script's `url` transport).
    ///
    /// Listens on `serve.listen` (default 127.0.0.1:9077, or a Unix socket path); every request
    /// but GET /health needs `Authorization: Bearer <token>` (the content of
    /// `serve.token_file`, without which it does not start). POST /auth, GET /lookup?user=…,
    /// GET /health, GET /metrics. SIGHUP re-reads the configuration; SIGTERM answers the
    /// requests in flight, then exits 0. Exit 111 when it cannot start.
    #[command(verbatim_doc_comment)]
    Serve,
    /// Try a login from a shell, exactly as Dovecot's would run (provisioning included).
    ///
    /// The password is read from standard input (first line) or prompted for on a terminal;
    /// it is never taken from the command line.
    Login {
        /// Login name (the mailbox address).
        user: String,
        /// The Dovecot service to check access for (imap, pop3, sieve, smtp, …).
        #[arg(long, default_value = "imap")]
        service: String,
        /// Run the whole login (mailbox checks, app passwords, LDAP search and bind) and print
        /// each step and what provisioning would write (template, rows, limits), writing
        /// nothing: no mailbox, no side rows, no sasl_log, no Redis. Exit codes as without.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the configuration, every LDAP host, the base DN, the database and the templates.
    TestConnection {
        /// Also look this login up: its LDAP entry, the template it maps to, and whether a
        /// first login could create its mailbox (no bind as the user, nothing written).
        #[arg(long, value_name = "ADDRESS")]
        user: Option<String>,
        /// Print one JSON object instead of lines (for monitoring): "result" (ok, warn,
        /// fail), "checks" (name, status, detail, duration_ms each), "user" (with --user: the
        /// entry, its mapping and what the next login would do). Exit codes unchanged.
        #[arg(long)]
        json: bool,
    },
    /// Switch mailboxes between mailcow's own passwords and LDAP (mailbox.authsource).
    ///
    /// To `ldap`: the mailbox must exist, not be a resource, and its address must find exactly
    /// one LDAP entry (service bind and the login's user search; no password is involved).
    /// To `mailcow`: the mailbox must exist; LDAP is not contacted. Only mailbox.authsource
    /// changes: the mailcow password is kept, so switching back restores it. One line per
    /// address. Exit codes: 0 all switched or unchanged, 1 at least one refused, 111 LDAP,
    /// database or configuration fault (then nothing is written).
    #[command(verbatim_doc_comment)]
    Authsource {
        /// Where the passwords of these mailboxes are checked from now on.
        #[arg(value_enum)]
        target: crate::commands::authsource::Target,
        /// Mailbox addresses.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Print what would be switched or refused, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import LDAP users and re-apply changed templates (run by cron or a systemd timer).
    ///
    /// What it does is set by the config's `sync:` section: `import_users` creates mailboxes
    /// for LDAP users without one, `periodic_full_sync` re-applies changed mapped templates to
    /// LDAP-backed mailboxes, `deactivate_missing` deactivates LDAP-backed mailboxes missing
    /// from several complete listings in a row. A run earlier than `sync.interval_minutes`
    /// after the last completed one exits at once (0), as does a run while another holds the
    /// lock. On a terminal, a progress line shows on standard error.
    /// Exit codes: 0 run completed (per-user refusals are logged), 111 LDAP, database,
    /// state directory or configuration fault.
    #[command(verbatim_doc_comment)]
    Sync {
        /// Print what would be created or re-applied and write nothing (no database writes,
        /// no lock, no state; the interval is not checked).
        #[arg(long)]
        dry_run: bool,
        /// Run even if the last completed run is less than sync.interval_minutes ago.
        #[arg(long)]
        force: bool,
        /// Directory for the lock file and the time of the last completed run (created 0700).
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath, default_value = crate::sync::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Print the summary as one JSON object on standard output (dry-run lines go to
        /// standard error then).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script to standard output.
    ///
    /// The Debian package installs them; by hand, e.g.:
    ///   mailcow-ldap-auth completions bash > /etc/bash_completion.d/mailcow-ldap-auth
    ///   mailcow-ldap-auth completions zsh > /usr/local/share/zsh/site-functions/_mailcow-ldap-auth
    ///   mailcow-ldap-auth completions fish > /etc/fish/completions/mailcow-ldap-auth.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: crate::commands::completions::Shell,
    },
}
