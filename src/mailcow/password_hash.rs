//! Password hashes as mailcow stores them (`{SCHEME}rest`), checked as mailcow's
//! `verify_hash()` does, for the schemes mailcow writes and accepts as pre-hashed imports.
//!
//! Every scheme is computed by a maintained crate (RustCrypto's argon2, sha-crypt, sha1, sha2;
//! bcrypt; pwhash for MD5-crypt); results are compared in constant time. A hash that cannot be
//! parsed, or of a scheme not listed here, matches no password: it is never an error, so a
//! broken row cannot turn a login into a fault or a crash.

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha_crypt::ShaCrypt;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Whether `password` matches the stored `hash`. The scheme name is case-insensitive, as in
/// mailcow; a value without a `{SCHEME}` prefix matches nothing.
pub fn verify(hash: &str, password: &str) -> bool {
    let Some((scheme, rest)) = split_scheme(hash) else {
        return false;
    };
    let password = password.as_bytes();
    match scheme.to_ascii_uppercase().as_str() {
        // PHP's password_verify(): the crypt(3) string decides the algorithm.
        "ARGON2I" | "ARGON2ID" | "BLF-CRYPT" | "MD5-CRYPT" | "SHA256-CRYPT" | "SHA512-CRYPT"
        | "CRYPT" => verify_crypt(rest, password),
        "CLEAR" | "CLEARTEXT" | "PLAIN" => password.ct_eq(rest.as_bytes()).into(),
        "SSHA" => verify_salted::<Sha1>(rest, password),
        "SSHA256" => verify_salted::<Sha256>(rest, password),
        "SSHA512" => verify_salted::<Sha512>(rest, password),
        _ => false,
    }
}

/// `{SCHEME}rest` with a non-empty scheme and rest (mailcow's `/^{(.+)}(.+)/`).
fn split_scheme(hash: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = hash.strip_prefix('{')?.split_once('}')?;
    (!scheme.is_empty() && !rest.is_empty()).then_some((scheme, rest))
}

/// A crypt(3) string in the Modular Crypt Format, as PHP's `password_verify()` reads it.
fn verify_crypt(hash: &str, password: &[u8]) -> bool {
    if hash.starts_with("$2") {
        // $2y$ (PHP, Dovecot), $2a$, $2b$; bcrypt uses the first 72 bytes, as PHP does.
        bcrypt::verify(password, hash).unwrap_or(false)
    } else if hash.starts_with("$argon2") {
        // The variant (argon2i, argon2id), version and cost come from the string.
        Argon2::default().verify_password(password, hash).is_ok()
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        ShaCrypt::default().verify_password(password, hash).is_ok()
    } else if hash.starts_with("$1$") {
        pwhash::md5_crypt::verify(password, hash)
    } else {
        false
    }
}

/// `base64(digest(password ‖ salt) ‖ salt)`: the salt is whatever follows the digest.
fn verify_salted<D: Digest>(encoded: &str, password: &[u8]) -> bool {
    let Ok(decoded) = BASE64.decode(encoded.trim_end()) else {
        return false;
    };
    let size = <D as Digest>::output_size();
    if decoded.len() <= size {
        return false;
    }
    let (expected, salt) = decoded.split_at(size);
    let mut digest = D::new();
    digest.update(password);
    digest.update(salt);
    digest.finalize().as_slice().ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes made by Dovecot's `doveadm pw` and PHP (see the fixture's `made_with`).
    #[test]
    fn every_vector_matches_its_password_only() {
        let text = include_str!("../../tests/fixtures/app_password_hashes.json");
        let fixture: serde_json::Value = serde_json::from_str(text).unwrap();
        let vectors = fixture["vectors"].as_array().unwrap();
        let mut schemes = std::collections::BTreeSet::new();
        for v in vectors {
            let (hash, password) = (v["hash"].as_str().unwrap(), v["password"].as_str().unwrap());
            schemes.insert(split_scheme(hash).unwrap().0.to_owned());
            assert!(verify(hash, password), "{hash} should match {password:?}");
            assert!(
                !verify(hash, &format!("{password}x")),
                "{hash}: longer password"
            );
            assert!(!verify(hash, "wrong"), "{hash}: wrong password");
            assert!(!verify(hash, ""), "{hash}: empty password");
        }
        for scheme in [
            "BLF-CRYPT",
            "SSHA",
            "SSHA256",
            "SSHA512",
            "SHA512-CRYPT",
            "ARGON2I",
            "ARGON2ID",
            "MD5-CRYPT",
            "PLAIN",
            "CLEARTEXT",
        ] {
            assert!(schemes.contains(scheme), "no vector for {scheme}");
        }
    }

    #[test]
    fn scheme_names_are_case_insensitive() {
        assert!(verify("{plain}secret", "secret"));
        assert!(verify("{Cleartext}secret", "secret"));
    }

    #[test]
    fn malformed_hashes_match_nothing() {
        for hash in [
            "",
            "secret",
            "{}secret",
            "{PLAIN}",
            "{NO-SUCH-SCHEME}secret",
            "{BLF-CRYPT}$2y$05$short",
            "{BLF-CRYPT}$2y$99$4Z5er30.4zgIqte4leufC.7H.gYtYw7gkqWpMEOs/5376yUb/Rs4e",
            "{BLF-CRYPT}not-a-crypt-string",
            "{ARGON2ID}$argon2id$v=19$m=1,t=1,p=1$c2FsdA$",
            "{ARGON2I}$argon2i$garbage",
            "{SHA512-CRYPT}$6$rounds=x$salt$hash",
            "{SHA512-CRYPT}$6$",
            "{MD5-CRYPT}$1$",
            "{MD5-CRYPT}$1$salt$!!!",
            "{SSHA256}!!!not base64!!!",
            "{SSHA256}c2hvcnQ=",
            "{SSHA}",
            "{CRYPT}abcdefghijklm",
        ] {
            assert!(!verify(hash, "secret"), "{hash:?}");
            assert!(!verify(hash, ""), "{hash:?}");
        }
    }
}
