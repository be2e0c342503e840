//! mailcow-ldap-auth: authenticate mailcow mailboxes against LDAP for Dovecot and provision them
//! from mailcow mailbox templates.
//!
//! Layers (docs/design.md has the picture): `cli` → the front ends (`checkpassword`,
//! `dovecot_lua`, `serve`, `commands`, `sync`) → the one login flow in `login` and the one
//! provisioning decision in `planner` → `ldap` and the `mailcow` store → `config`. Every
//! command's result becomes an exit code in `exit`.

// Public: what main.rs, xtask/, fuzz/ and tests/provision.rs reach; the rest is the crate's own.
pub mod checkpassword;
pub mod cli;
pub mod commands;
pub mod config;
pub(crate) mod connections;
pub(crate) mod deadline;
pub mod dovecot_lua;
pub(crate) mod exit;
pub(crate) mod file_trust;
pub mod ldap;
pub(crate) mod log;
pub(crate) mod login;
pub mod mailcow;
pub(crate) mod mapping;
pub(crate) mod planner;
pub(crate) mod request;
pub(crate) mod serve;
pub mod sync;
pub(crate) mod userdb;

use cli::{Cli, Command};
use exit::ExitCode;

/// Runs the parsed command line; the returned code is the process exit status.
pub fn run(cli: Cli) -> std::process::ExitCode {
    let code: ExitCode = match cli.command {
        Command::Checkpassword { reply_program } => checkpassword::run(&cli.config, &reply_program),
        Command::DovecotLua { mode } => dovecot_lua::run(&cli.config, &mode),
        Command::Serve => serve::run(&cli.config).into(),
        Command::Login {
            user,
            service,
            dry_run,
        } => commands::login::run(&cli.config, &user, &service, dry_run),
        Command::TestConnection { user, json } => {
            let format = if json {
                commands::check_report::Format::Json
            } else {
                commands::check_report::Format::Text
            };
            commands::test_connection::run(&cli.config, user.as_deref(), format).into()
        }
        Command::Authsource {
            target,
            addresses,
            dry_run,
        } => commands::authsource::run(&cli.config, target, &addresses, dry_run).into(),
        Command::Sync {
            dry_run,
            force,
            state_dir,
            json,
        } => sync::run(
            &cli.config,
            &sync::Options {
                dry_run,
                force,
                state_dir,
                json,
            },
        )
        .into(),
        Command::Completions { shell } => commands::completions::run(shell),
    };
    code.into()
}
