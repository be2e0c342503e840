//! `completions`: shell completion scripts generated from the clap definitions, so they
//! never fall behind the command line.

use std::io::Write;

use clap::{CommandFactory, ValueEnum};

use crate::cli::Cli;
use crate::exit::ExitCode;

/// The shells a completion script is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    /// Where the Debian package (and `cargo xtask docs`) puts this shell's script, by the
    /// conventions of bash-completion, zsh and fish.
    pub fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "mailcow-ldap-auth",
            Shell::Zsh => "_mailcow-ldap-auth",
            Shell::Fish => "mailcow-ldap-auth.fish",
        }
    }
}

/// Writes the completion script for `shell`.
pub fn write(shell: Shell, out: &mut dyn Write) {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(generator, &mut command, name, out);
}

pub(crate) fn run(shell: Shell) -> ExitCode {
    write(shell, &mut std::io::stdout().lock());
    ExitCode::Ok
}
