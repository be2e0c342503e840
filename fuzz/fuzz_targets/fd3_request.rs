//! The request Dovecot writes to fd 3 (`user\0password\0timestamp\0`, at most 512 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailcow_ldap_auth::checkpassword::input::{Credentials, InputError, MAX_REQUEST};

fuzz_target!(|request: &[u8]| {
    let nuls = request.iter().filter(|b| **b == 0).count();
    match Credentials::parse(request.to_vec()) {
        Ok(credentials) => {
            let (user, password) = (credentials.user(), credentials.password());
            assert!(request.len() <= MAX_REQUEST);
            assert!(!user.contains(&0) && !password.contains(&0));
            // `user NUL password NUL` is exactly the start of the request.
            let mut expected = user.to_vec();
            expected.push(0);
            expected.extend_from_slice(password);
            expected.push(0);
            assert!(expected.len() <= MAX_REQUEST);
            assert_eq!(&request[..expected.len()], expected.as_slice());
        }
        Err(InputError::TooLong) => assert!(request.len() > MAX_REQUEST),
        Err(InputError::Malformed) => assert!(request.len() <= MAX_REQUEST && nuls < 2),
        Err(other) => panic!("parsing a buffer cannot fail with {other:?}"),
    }
});
