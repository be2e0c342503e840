//! The login name → mailcow address normaliser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::mailcow::address::normalize;

fuzz_target!(|login: &str| {
    let result = normalize(login);
    // ASCII case never matters (to_lowercase of an ASCII letter does not depend on its case).
    assert_eq!(normalize(&login.to_ascii_uppercase()), result, "{login:?}");
    let Ok(address) = result else { return };
    let (local, domain) = (&address.local_part, &address.domain);
    assert_eq!(address.username, format!("{local}@{domain}"));
    assert!(address.username.len() <= 255, "{address:?}");
    assert!(!local.is_empty() && local.len() <= 64, "{address:?}");
    assert!(
        local
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'@' && !b.is_ascii_uppercase()),
        "{address:?}"
    );
    assert!(
        !local.starts_with('.') && !local.ends_with('.') && !local.contains(".."),
        "{address:?}"
    );
    // A DNS name in lower-case ASCII: labels of 1..=63 letters, digits and inner hyphens.
    assert!(domain.len() <= 253, "{address:?}");
    for label in domain.split('.') {
        assert!((1..=63).contains(&label.len()), "{address:?}");
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{address:?}"
        );
        assert!(
            !label.starts_with('-') && !label.ends_with('-'),
            "{address:?}"
        );
    }
    // Idempotent: a stored username normalises to itself.
    assert_eq!(normalize(&address.username), Ok(address.clone()));
});
