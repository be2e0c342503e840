//! The search filter builder: whatever the login, the filter ldap3 puts on the wire is the
//! admin's filter AND one equality assertion per spelling whose value is exactly that spelling:
//! never a wildcard, a presence test or an extra clause.
#![no_main]

use arbitrary::Arbitrary;
use ldap3::asn1::{ASNTag, PL, StructureTag, TagClass};
use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::ldap::filter::{user_filter, validate_admin_filter};

/// Attribute names a validated configuration may hold (`ldap.username_field`).
const FIELDS: [&str; 4] = [
    "mail",
    "userPrincipalName",
    "uid",
    "0.9.2342.19200300.100.1.3",
];

/// RFC 4511 Filter CHOICE tags.
const AND: u64 = 0;
const OR: u64 = 1;
const EQUALITY_MATCH: u64 = 3;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    admin_filter: Option<&'a str>,
    field: u8,
    /// Spellings of one login (the code passes one or two).
    logins: Vec<&'a str>,
}

fn parse(filter: &str) -> StructureTag {
    ldap3::parse_filter(filter)
        .unwrap_or_else(|()| panic!("{filter:?} does not parse"))
        .into_structure()
}

fn children(tag: &StructureTag, id: u64) -> &[StructureTag] {
    match tag {
        StructureTag {
            class: TagClass::Context,
            id: got,
            payload: PL::C(inner),
        } if *got == id => inner,
        _ => panic!("expected filter choice {id}, got {tag:?}"),
    }
}

fn primitive(tag: &StructureTag) -> &[u8] {
    match &tag.payload {
        PL::P(bytes) => bytes,
        PL::C(_) => panic!("expected a primitive, got {tag:?}"),
    }
}

/// `tag` is `(field=login)`: an equality match whose value decodes to exactly `login`.
fn assert_equality(tag: &StructureTag, field: &str, login: &str) {
    let [attribute, value] = children(tag, EQUALITY_MATCH) else {
        panic!("an equality match has two parts: {tag:?}");
    };
    assert_eq!(primitive(attribute), field.as_bytes());
    assert_eq!(primitive(value), login.as_bytes(), "value of {tag:?}");
}

fuzz_target!(|input: Input| {
    let admin_filter = input
        .admin_filter
        .filter(|f| validate_admin_filter(f).is_ok());
    if input.logins.is_empty() || input.logins.len() > 4 {
        return;
    }
    let field = FIELDS[usize::from(input.field) % FIELDS.len()];
    let filter = user_filter(admin_filter, field, &input.logins);
    let mut tag = parse(&filter);
    if let Some(admin) = admin_filter {
        let [admin_part, login_part] = children(&tag, AND) else {
            panic!("{filter:?}: expected (&<admin filter><login filter>)");
        };
        assert_eq!(
            *admin_part,
            parse(admin),
            "{filter:?}: the admin filter changed"
        );
        tag = login_part.clone();
    }
    match input.logins.as_slice() {
        [login] => assert_equality(&tag, field, login),
        logins => {
            let alternatives = children(&tag, OR);
            assert_eq!(alternatives.len(), logins.len(), "{filter:?}");
            for (alternative, login) in alternatives.iter().zip(logins) {
                assert_equality(alternative, field, login);
            }
        }
    }
});
