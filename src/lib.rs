//! mailcow-ldap-auth: authenticate mailcow mailboxes against LDAP for Dovecot and provision them
//! from mailcow mailbox templates.
//!
//! Layers: [`cli`] → [`config`] (validated) → runtime objects ([`ldap`], [`mailcow`]); the login
//! flow in [`login`] is shared by every front end ([`checkpassword`], [`commands`]); [`sync`]
//! shares its mapping and provisioning code.

pub mod checkpassword;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod deadline;
pub mod dovecot_lua;
pub mod exit;
pub mod file_trust;
pub mod ldap;
pub mod log;
pub mod login;
pub mod mailcow;
pub mod mapping;
pub mod planner;
pub mod request;
pub mod serve;
pub mod sync;
pub mod userdb;

use cli::{Cli, Command};
use exit::ExitCode;

/// Runs the parsed command line; the returned code is the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Checkpassword { reply_program } => checkpassword::run(&cli.config, &reply_program),
        Command::DovecotLua { mode } => dovecot_lua::run(&cli.config, &mode),
        Command::Serve => serve::run(&cli.config),
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
            commands::test_connection::run(&cli.config, user.as_deref(), format)
        }
        Command::Authsource {
            target,
            addresses,
            dry_run,
        } => commands::authsource::run(&cli.config, target, &addresses, dry_run),
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
        ),
        Command::Completions { shell } => commands::completions::run(shell),
    }
}
