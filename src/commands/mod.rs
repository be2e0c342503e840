//! The shell-facing subcommands.

pub mod authsource;
pub(crate) mod check_report;
pub mod completions;
pub(crate) mod login;
pub(crate) mod test_connection;

use std::path::Path;

use crate::config::Config;

/// Loads the configuration for an interactive command, printing problems to stderr.
fn load_config(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            Some(config)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}
