//! The vendored mysql_common parses a server's version without regexes (vendor/README.md):
//! the results must be those of the two upstream patterns.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::packets::HandshakePacket;

type Version = Option<(u16, u16, u16)>;

/// What the driver makes of a server version: (server version, MariaDB version).
fn parsed(version: &str) -> (Version, Version) {
    let packet = HandshakePacket::new(
        10,
        version.as_bytes(),
        1,
        [0; 8],
        None::<&[u8]>,
        CapabilityFlags::empty(),
        0,
        StatusFlags::empty(),
        None::<&[u8]>,
    );
    (
        packet.server_version_parsed(),
        packet.maria_db_server_version_parsed(),
    )
}

#[test]
fn versions_parse_as_the_upstream_regexes_did() {
    let cases = [
        // (server version, ^(\d{1,2})\.(\d{1,2})\.(\d{1,3})(.*), ^(?:5.5.5-)?…-MariaDB)
        (
            "5.5.5-10.11.19-MariaDB-0+deb12u1",
            Some((5, 5, 5)),
            Some((10, 11, 19)),
        ),
        (
            "5.5.5-10.0.17-MariaDB-1~trusty-wsrep-log",
            Some((5, 5, 5)),
            Some((10, 0, 17)),
        ),
        ("10.6.4-MariaDB", Some((10, 6, 4)), Some((10, 6, 4))),
        ("11.4.2-MariaDB-ubu2404", Some((11, 4, 2)), Some((11, 4, 2))),
        ("5.6.4-m7-log", Some((5, 6, 4)), None),
        ("8.0.36", Some((8, 0, 36)), None),
        ("8.4.0-commercial", Some((8, 4, 0)), None),
        ("5.6.1234", Some((5, 6, 123)), None),
        ("10.3.1234-MariaDB", Some((10, 3, 123)), None),
        ("123.4.5", None, None),
        ("8.0", None, None),
        ("8..1", None, None),
        ("", None, None),
        ("MariaDB", None, None),
        ("5x5y5-10.5.9-MariaDB", None, Some((10, 5, 9))),
    ];
    for (version, server, mariadb) in cases {
        assert_eq!(parsed(version), (server, mariadb), "{version}");
    }
}
