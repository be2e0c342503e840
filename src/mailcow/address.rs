//! A login name turned into the address mailcow stores (`mailbox.username`): trimmed,
//! lower-cased, split at the last `@`, the domain in its ASCII (IDNA/punycode) form.
//!
//! mailcow itself lower-cases and trims both halves, converts the domain with PHP's
//! `idn_to_ascii(…, INTL_IDNA_VARIANT_UTS46)` and then requires `FILTER_VALIDATE_EMAIL`, so a
//! name that fails here could not have been created by mailcow either — except a quoted local
//! part, which this program refuses on purpose (see [`valid_local_part`]).

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// The longest address `mailbox.username` (VARCHAR(255)) holds.
const MAX_ADDRESS: usize = 255;
/// RFC 5321's limit for the local part, which `FILTER_VALIDATE_EMAIL` enforces too.
const MAX_LOCAL_PART: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// `local_part@domain`, what `mailbox.username` holds.
    pub username: String,
    pub local_part: String,
    /// ASCII (punycode) form.
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("no '@' in the login name")]
    NoAt,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("the local part is not a valid mail address local part")]
    BadLocalPart,
    #[error("the domain is not a valid domain name")]
    BadDomain,
    #[error("the address is longer than {MAX_ADDRESS} characters")]
    TooLong,
}

/// Normalises a login name to mailcow's address form; an error for anything that is not a
/// mail address.
pub fn normalize(login: &str) -> Result<Address, AddressError> {
    let login = login.trim().to_lowercase();
    let (local_part, domain) = login.rsplit_once('@').ok_or(AddressError::NoAt)?;
    if local_part.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if !valid_local_part(local_part) {
        return Err(AddressError::BadLocalPart);
    }
    let domain = domain_to_ascii(domain)?;
    let username = format!("{local_part}@{domain}");
    if username.chars().count() > MAX_ADDRESS {
        return Err(AddressError::TooLong);
    }
    Ok(Address {
        username,
        local_part: local_part.to_owned(),
        domain,
    })
}

/// UTS #46 ToASCII with STD3 rules (letters, digits, hyphen: what `FILTER_VALIDATE_EMAIL`
/// accepts after mailcow's conversion), hyphen checks and DNS lengths.
fn domain_to_ascii(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() {
        return Err(AddressError::BadDomain);
    }
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::Check,
            DnsLength::Verify,
        )
        .map_err(|_| AddressError::BadDomain)?;
    if ascii.is_empty() {
        return Err(AddressError::BadDomain);
    }
    Ok(ascii.into_owned())
}

/// The local part rule: an unquoted dot-atom of ASCII `atext` (RFC 5322: letters, digits and
/// ``!#$%&'*+-/=?^_`{|}~``), dots neither leading, trailing nor doubled, at most 64
/// characters. This is the dot-atom half of PHP's `FILTER_VALIDATE_EMAIL` (without the Unicode
/// flag), which mailcow checks addresses with. Its quoted-string half (`"a b"@…`, with spaces,
/// backslashes and quotes inside) is refused: Dovecot, Postfix and mailcow's own tools do not
/// handle quoted local parts alike. So a backslash, a double quote, a space or a non-ASCII
/// letter never reaches the database in an address; a `'`, `#`, `/`, `*`, `%` or `_` does, and
/// the store binds it like any other value.
fn valid_local_part(local: &str) -> bool {
    const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
    local.chars().count() <= MAX_LOCAL_PART
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| {
                    // ASCII only, as PHP's FILTER_VALIDATE_EMAIL (without the Unicode flag)
                    // that mailcow checks addresses with.
                    c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(login: &str) -> (String, String, String) {
        let a = normalize(login).unwrap_or_else(|e| panic!("{login:?}: {e}"));
        (a.username, a.local_part, a.domain)
    }

    #[test]
    fn trims_and_lower_cases() {
        assert_eq!(
            ok("  Bob.Example@Example.ORG \t"),
            (
                "bob.example@example.org".into(),
                "bob.example".into(),
                "example.org".into()
            )
        );
        assert_eq!(ok("a+tag@example.org").0, "a+tag@example.org");
        assert_eq!(ok("o'neil@example.org").0, "o'neil@example.org");
    }

    #[test]
    fn converts_idn_domains_to_punycode() {
        assert_eq!(
            ok("Bob@Bücher.Example"),
            (
                "bob@xn--bcher-kva.example".into(),
                "bob".into(),
                "xn--bcher-kva.example".into()
            )
        );
        // already ASCII: unchanged, so a stored username normalises to itself
        assert_eq!(
            ok("bob@xn--bcher-kva.example").0,
            "bob@xn--bcher-kva.example"
        );
        assert_eq!(ok("x@ÉCOLE.example").0, "x@xn--cole-9oa.example");
        assert_eq!(ok("x@例え.テスト").0, "x@xn--r8jz45g.xn--zckzah");
        // UTS #46 mapping: full-width letters and the ideographic full stop
        assert_eq!(ok("x@ｅｘａｍｐｌｅ。org").0, "x@example.org");
    }

    #[test]
    fn local_parts_are_ascii_dot_atoms() {
        const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
        for c in (0u8..=0x7f).map(char::from) {
            let login = format!("a{c}b@example.org");
            let allowed = c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c) || c == '.';
            assert_eq!(normalize(&login).is_ok(), allowed, "{login:?}");
        }
        for refused in [
            "a\\b@example.org",
            "\"a b\"@example.org",
            "\"a\\\"b\"@example.org",
            "jos\u{e9}@example.org",
            "\u{0430}lice@example.org",
        ] {
            assert_eq!(
                normalize(refused),
                Err(AddressError::BadLocalPart),
                "{refused:?}"
            );
        }
        assert_eq!(
            ok("q'#/*%_'x@example.org").1,
            "q'#/*%_'x",
            "kept exactly, for the store to bind"
        );
    }

    #[test]
    fn splits_at_the_last_at() {
        // the last '@' separates the domain; an '@' left in the local part is not a dot-atom
        assert_eq!(
            normalize("a@b@example.org"),
            Err(AddressError::BadLocalPart)
        );
        assert_eq!(
            normalize("bob@example.org@"),
            Err(AddressError::BadLocalPart)
        );
        assert_eq!(
            normalize("bob@@example.org"),
            Err(AddressError::BadLocalPart)
        );
    }

    #[test]
    fn refuses_malformed_names() {
        for (login, err) in [
            ("", AddressError::NoAt),
            ("   ", AddressError::NoAt),
            ("bob", AddressError::NoAt),
            ("bob.example.org", AddressError::NoAt),
            ("@example.org", AddressError::EmptyLocalPart),
            (" @example.org", AddressError::EmptyLocalPart),
            ("bob@", AddressError::BadDomain),
            ("bob@ ", AddressError::BadDomain),
            ("bob@exa mple.org", AddressError::BadDomain),
            ("bob@example..org", AddressError::BadDomain),
            ("bob@example.org.", AddressError::BadDomain),
            ("bob@-example.org", AddressError::BadDomain),
            ("bob@exa_mple.org", AddressError::BadDomain),
            ("bob@[127.0.0.1]", AddressError::BadDomain),
            ("bob@xn--zz.example", AddressError::BadDomain),
            ("b ob@example.org", AddressError::BadLocalPart),
            ("b\0ob@example.org", AddressError::BadLocalPart),
            ("b\tob@example.org", AddressError::BadLocalPart),
            (".bob@example.org", AddressError::BadLocalPart),
            ("bob.@example.org", AddressError::BadLocalPart),
            ("b..ob@example.org", AddressError::BadLocalPart),
            ("b,ob@example.org", AddressError::BadLocalPart),
            ("\"bob\"@example.org", AddressError::BadLocalPart),
            ("b(o)b@example.org", AddressError::BadLocalPart),
        ] {
            assert_eq!(normalize(login), Err(err), "{login:?}");
        }
        let long_label = "a".repeat(64);
        assert_eq!(
            normalize(&format!("bob@{long_label}.org")),
            Err(AddressError::BadDomain)
        );
        let long_local = "a".repeat(65);
        assert_eq!(
            normalize(&format!("{long_local}@example.org")),
            Err(AddressError::BadLocalPart)
        );
        assert!(normalize(&format!("{}@example.org", "a".repeat(64))).is_ok());
    }
}
