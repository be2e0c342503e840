//! The comparison of one run, kept compact: per address, what the mailbox row says (name
//! hash, template hash, authsource, active) and what the LDAP listing asks for (a plan and the
//! display name). Rows arrive streamed from the database and entries page by page from LDAP;
//! neither side is ever held as full structs.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::report::Outcome;
use crate::mailcow::{MailboxDigest, RESOURCE_KINDS, UnreadableMailbox};
use crate::planner::MailboxState;

/// Strings many rows share (template hashes, authsources), stored once.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }
}

/// A mailbox row as the sync compares it: the name as a hash (an unchanged name is the common
/// case; a changed one is confirmed on the locked row), interned template hash and authsource.
pub(super) struct Stored {
    name_hash: u64,
    hash: Option<u32>,
    authsource: Option<u32>,
    resource: bool,
    active: bool,
}

/// The hash the index keeps of a mailbox name (the same for the same text within a run).
pub(super) fn name_hash(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// What the listing asks for one address.
pub(super) enum Listed<'c> {
    /// Not in the listing (so far).
    Absent,
    /// In one entry: create or re-apply `template` (the plan's), with the entry's display
    /// name; or nothing to write, with what to count (and log) after the listing.
    Create {
        template: &'c str,
        name: Option<Box<str>>,
    },
    Reapply {
        template: &'c str,
        name: Option<Box<str>>,
    },
    Settled(Outcome),
    /// In several entries: left out (the number, and one DN for the log line).
    Ambiguous(u32, Box<str>),
}

pub(super) struct Slot<'c> {
    /// `Err`: the row cannot be read (why).
    pub(super) stored: Option<Result<Stored, Box<str>>>,
    pub(super) listed: Listed<'c>,
}

#[derive(Default)]
pub(super) struct Index<'c> {
    slots: HashMap<Box<str>, Slot<'c>>,
    strings: Interner,
}

impl<'c> Index<'c> {
    /// Adds a mailbox row (keyed by its lower-case address, as mailcow's collation compares).
    pub(super) fn add_row(&mut self, row: Result<MailboxDigest, UnreadableMailbox>) {
        let (address, stored) = match row {
            Ok(d) => {
                let stored = Stored {
                    name_hash: name_hash(&d.name),
                    hash: d.attribute_hash.as_deref().map(|h| self.strings.id(h)),
                    authsource: d.authsource.as_deref().map(|a| self.strings.id(a)),
                    resource: RESOURCE_KINDS.contains(&d.kind.as_str()),
                    active: d.active != 0,
                };
                (d.username, Ok(stored))
            }
            Err(bad) => (bad.username, Err(bad.error.to_string().into())),
        };
        let slot = Slot {
            stored: Some(stored),
            listed: Listed::Absent,
        };
        self.slots.insert(address.to_lowercase().into(), slot);
    }

    /// Records a listed address: `plan` decides from the row what the entry asks for. The
    /// second time an address is listed it turns [`Listed::Ambiguous`] instead.
    pub(super) fn list(&mut self, address: &str, dn: &str, plan: impl FnOnce(Row) -> Listed<'c>) {
        if !self.slots.contains_key(address) {
            let slot = Slot {
                stored: None,
                listed: Listed::Absent,
            };
            self.slots.insert(address.into(), slot);
        }
        let Some(slot) = self.slots.get_mut(address) else {
            return;
        };
        slot.listed = match &mut slot.listed {
            Listed::Absent => plan(row(&self.strings, &slot.stored)),
            Listed::Ambiguous(n, _) => {
                *n += 1;
                return;
            }
            _ => Listed::Ambiguous(2, dn.into()),
        };
    }

    /// The row of a slot, as the planner and the deactivation look at it.
    pub(super) fn row<'a>(&'a self, slot: &'a Slot) -> Row<'a> {
        row(&self.strings, &slot.stored)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Slot<'c>)> {
        self.slots.iter().map(|(a, s)| (&**a, s))
    }
}

/// A mailbox row as the planner sees it.
pub(super) enum Row<'a> {
    Missing,
    /// The row cannot be read: why.
    Unreadable(&'a str),
    Stored {
        state: MailboxState<'a>,
        name_hash: u64,
        hash: Option<&'a str>,
        /// `active` is not 0.
        active: bool,
    },
}

fn row<'a>(strings: &'a Interner, stored: &'a Option<Result<Stored, Box<str>>>) -> Row<'a> {
    match stored {
        None => Row::Missing,
        Some(Err(why)) => Row::Unreadable(why),
        Some(Ok(s)) => Row::Stored {
            state: MailboxState::Existing {
                authsource: s.authsource.map(|id| strings.get(id)),
                resource: s.resource,
            },
            name_hash: s.name_hash,
            hash: s.hash.map(|id| strings.get(id)),
            active: s.active,
        },
    }
}
