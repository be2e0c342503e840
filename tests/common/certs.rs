//! Test PKI, made once per test process with the openssl CLI (EC P-256 keys, ~40 ms each):
//! a CA, a server certificate signed by it (SAN IP:127.0.0.1 and DNS:localhost), and a second,
//! unrelated CA for "wrong CA" tests.

use super::process::{run_ok, scratch_subdir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Certs {
    /// CA that signed the server certificate.
    pub ca: PathBuf,
    /// Server certificate (CN=localhost, SAN DNS:localhost, IP:127.0.0.1).
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    /// A CA that has nothing to do with the server certificate.
    pub other_ca: PathBuf,
}

pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| make_certs(&scratch_subdir("certs")))
}

fn make_ca(dir: &Path, name: &str, cn: &str) -> PathBuf {
    let crt = dir.join(format!("{name}.crt"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "3650", "-subj"])
            .arg(format!("/CN={cn}"))
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&crt)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
    );
    crt
}

fn make_certs(dir: &Path) -> Certs {
    let ca = make_ca(dir, "ca", "mailcow-ldap-auth Test CA");
    let other_ca = make_ca(dir, "other-ca", "mailcow-ldap-auth Unrelated CA");
    let server_key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let ext = dir.join("server.ext");
    let server_crt = dir.join("server.crt");
    run_ok(
        Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-subj", "/CN=localhost", "-keyout"])
            .arg(&server_key)
            .arg("-out")
            .arg(&csr),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write server.ext");
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .args(["-CAcreateserial", "-days", "3650", "-sha256", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&server_crt),
    );
    Certs {
        ca,
        server_crt,
        server_key,
        other_ca,
    }
}
