//! The request Dovecot writes to fd 3: `user\0password\0timestamp\0`.

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;

use zeroize::Zeroizing;

/// Dovecot's `CHECKPASSWORD_MAX_REQUEST_LEN`.
pub const MAX_REQUEST: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("fd 3 is not open for reading: run me from Dovecot's checkpassword passdb/userdb")]
    NoFd3,
    #[error("cannot read fd 3: {0}")]
    Read(String),
    #[error("request on fd 3 is longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("request on fd 3 lacks the NUL terminators of user and password")]
    Malformed,
}

/// The login name and password; the buffer holding the password is wiped on drop.
pub struct Credentials {
    buffer: Zeroizing<Vec<u8>>,
    user_end: usize,
    password_end: usize,
}

impl Credentials {
    pub fn parse(buffer: Vec<u8>) -> Result<Credentials, InputError> {
        let buffer = Zeroizing::new(buffer);
        if buffer.len() > MAX_REQUEST {
            return Err(InputError::TooLong);
        }
        let mut nuls = buffer
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == 0)
            .map(|(i, _)| i);
        let (Some(user_end), Some(password_end)) = (nuls.next(), nuls.next()) else {
            return Err(InputError::Malformed);
        };
        Ok(Credentials {
            buffer,
            user_end,
            password_end,
        })
    }

    /// Bytes as sent; a name that is not UTF-8 matches no mailbox and no LDAP entry.
    pub fn user(&self) -> &[u8] {
        &self.buffer[..self.user_end]
    }

    pub fn password(&self) -> &[u8] {
        &self.buffer[self.user_end + 1..self.password_end]
    }
}

/// Takes fd 3 over, or [`InputError::NoFd3`] when it is not open. Call it before anything
/// that could open a file: a new file would get number 3 if it were free.
pub(crate) fn take_fd3() -> Result<File, InputError> {
    // SAFETY: F_GETFD only asks whether the descriptor exists.
    if unsafe { libc::fcntl(3, libc::F_GETFD) } == -1 {
        return Err(InputError::NoFd3);
    }
    // SAFETY: fd 3 is open, ours by the checkpassword convention, and nothing else in this
    // process uses it; the File owns it from here and closes it when dropped.
    Ok(unsafe { File::from_raw_fd(3) })
}

/// Reads the whole request from fd 3 (as taken by [`take_fd3`]) and closes it. Blocks until
/// the writer closes its end: the caller bounds that with its deadline.
pub(crate) fn read_request(mut fd3: File) -> Result<Credentials, InputError> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_REQUEST + 1));
    let result = (&mut fd3)
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut buffer);
    match result {
        // open, but not for reading
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Err(InputError::NoFd3),
        Err(e) => Err(InputError::Read(e.to_string())),
        Ok(_) => Credentials::parse(std::mem::take(&mut *buffer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_user_and_password() {
        let c = Credentials::parse(b"alice@example.org\0s3cret\0\0".to_vec()).unwrap();
        assert_eq!(c.user(), b"alice@example.org");
        assert_eq!(c.password(), b"s3cret");
    }

    #[test]
    fn timestamp_is_optional_but_two_nuls_are_not() {
        assert!(Credentials::parse(b"u\0p\0".to_vec()).is_ok());
        assert_eq!(
            Credentials::parse(b"u\0p".to_vec()).err(),
            Some(InputError::Malformed)
        );
        assert_eq!(
            Credentials::parse(b"up".to_vec()).err(),
            Some(InputError::Malformed)
        );
        assert_eq!(
            Credentials::parse(Vec::new()).err(),
            Some(InputError::Malformed)
        );
    }

    #[test]
    fn empty_password_is_parsed_as_empty() {
        let c = Credentials::parse(b"u\0\0\0".to_vec()).unwrap();
        assert_eq!(c.password(), b"");
    }

    #[test]
    fn limit_is_512_bytes() {
        let mut exact = vec![b'a'; MAX_REQUEST - 3];
        exact.extend_from_slice(b"\0\0\0");
        assert!(Credentials::parse(exact).is_ok());
        let mut long = vec![b'a'; MAX_REQUEST - 2];
        long.extend_from_slice(b"\0\0\0");
        assert_eq!(Credentials::parse(long).err(), Some(InputError::TooLong));
    }
}
