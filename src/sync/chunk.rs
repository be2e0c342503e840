//! The listing in chunks: entries are kept until [`CHUNK_SIZE`] have arrived, then the chunk is
//! compared with the mailbox rows of just its addresses (one query) and written, so that a
//! run's memory is bounded by a chunk, not by the directory.
//!
//! An address carried by several entries of one chunk is left out (all of them). The addresses
//! of earlier chunks are not kept here but in the database ([`Store::list_chunk`]): an entry
//! whose address an earlier chunk listed is left out too, while the earlier entry, written
//! already, stays as it was written; the order of a listing is stable, so the same entry wins
//! every run and nothing flip-flops.
//!
//! [`Store::list_chunk`]: crate::mailcow::Store::list_chunk

use std::collections::{HashMap, HashSet};

use crate::mailcow::{MailboxDigest, RESOURCE_KINDS, UnreadableMailbox};
use crate::planner::MailboxState;

/// Entries per chunk: two LDAP pages.
pub(super) const CHUNK_SIZE: usize = 1000;

/// One listed entry with a valid address, kept until its chunk is planned.
pub(super) struct Entry {
    /// Normalised as a login's (lower case).
    pub(super) address: String,
    pub(super) dn: String,
    pub(super) mapping_values: Vec<String>,
    pub(super) display_name: Option<String>,
}

/// The entries of one chunk.
#[derive(Default)]
pub(super) struct Chunk {
    /// Counts the chunks of a run (the database records which chunk listed an address).
    pub(super) number: u32,
    entries: Vec<Entry>,
}

impl Chunk {
    /// Adds an entry; whether the chunk is full.
    pub(super) fn push(&mut self, entry: Entry) -> bool {
        self.entries.push(entry);
        self.entries.len() >= CHUNK_SIZE
    }

    /// The entries, grouped by address (in address order; listing order within a group),
    /// leaving the chunk empty for the next number.
    pub(super) fn take(&mut self) -> Vec<Entry> {
        self.number += 1;
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| a.address.cmp(&b.address));
        entries
    }
}

/// The distinct addresses of entries grouped by [`Chunk::take`].
pub(super) fn addresses(entries: &[Entry]) -> Vec<&str> {
    entries
        .chunk_by(|a, b| a.address == b.address)
        .map(|group| group[0].address.as_str())
        .collect()
}

/// The mailbox rows of a chunk, by lower-case address (as mailcow's collation compares).
#[derive(Default)]
pub(super) struct Rows {
    rows: HashMap<String, Result<MailboxDigest, UnreadableMailbox>>,
    /// Addresses an earlier chunk listed already.
    pub(super) listed_before: HashSet<String>,
}

impl Rows {
    pub(super) fn add(&mut self, row: Result<MailboxDigest, UnreadableMailbox>) {
        let address = match &row {
            Ok(d) => d.username.to_lowercase(),
            Err(bad) => bad.username.to_lowercase(),
        };
        self.rows.insert(address, row);
    }

    /// The row of `address` as the planner sees it.
    pub(super) fn get(&self, address: &str) -> Row<'_> {
        match self.rows.get(address) {
            None => Row::Missing,
            Some(row) => Row::of(row),
        }
    }
}

/// A mailbox row as the planner and the deactivation see it.
pub(super) enum Row<'a> {
    Missing,
    /// The row cannot be read: why.
    Unreadable(String),
    Stored {
        state: MailboxState<'a>,
        name: &'a str,
        hash: Option<&'a str>,
        /// `active` is not 0.
        active: bool,
    },
}

impl<'a> Row<'a> {
    pub(super) fn of(row: &'a Result<MailboxDigest, UnreadableMailbox>) -> Row<'a> {
        match row {
            Err(bad) => Row::Unreadable(bad.error.to_string()),
            Ok(d) => Row::Stored {
                state: MailboxState::Existing {
                    authsource: d.authsource.as_deref(),
                    resource: RESOURCE_KINDS.contains(&d.kind.as_str()),
                },
                name: &d.name,
                hash: d.attribute_hash.as_deref(),
                active: d.active != 0,
            },
        }
    }
}
