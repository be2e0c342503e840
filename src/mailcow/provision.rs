//! Creating a mailbox from a template, and re-applying a changed template.

use super::{Mailbox, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A policy refusal (no template, domain missing or full, quota, …): the login is rejected.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub enum Applied {
    Unchanged,
    Reapplied(Box<Mailbox>),
}

/// Creates the mailbox `username` from `template` (issue 3 fills this in).
pub fn create(
    _store: &mut Store,
    _username: &str,
    _display_name: Option<&str>,
    _template: &str,
) -> Result<Mailbox, ProvisionError> {
    Err(ProvisionError::Refused(
        "automatic provisioning is not available yet".into(),
    ))
}

/// Re-applies `template` to `mailbox` when it changed (issue 3 fills this in).
pub fn apply_template(
    _store: &mut Store,
    _mailbox: &Mailbox,
    _display_name: Option<&str>,
    _template: &str,
) -> Result<Applied, ProvisionError> {
    Ok(Applied::Unchanged)
}
