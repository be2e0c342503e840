//! The rustls client configuration: the system's CA bundle plus `ldap.ca_file` (only
//! `ca_file` with `ldap.ca_only`), or no verification at all when `ldap.ignore_ssl_errors` is set.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::LdapConfig;

pub fn client_config(config: &LdapConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if config.ignore_ssl_errors {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
        ));
    }
    let mut roots = RootCertStore::empty();
    if !config.ca_only {
        add_system_roots(&mut roots);
    }
    if let Some(path) = &config.ca_file {
        let added = add_pem_file(&mut roots, path)
            .map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
        if added == 0 {
            return Err(format!(
                "ldap.ca_file {}: no certificate found",
                path.display()
            ));
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// The system roots from the CA bundle file OpenSSL would use (honouring `SSL_CERT_FILE`).
/// Reading only the bundle costs ~0.5 ms; rustls-native-certs also parses every file of the
/// hashed certificate directory, the same roots again, for ~2 ms more on every login.
fn add_system_roots(roots: &mut RootCertStore) {
    let bundle = openssl_probe::probe().cert_file;
    // Unreadable system certificates are skipped; the connection then fails verification.
    if let Some(added) = bundle.and_then(|file| add_pem_file(roots, &file).ok()) {
        if added > 0 {
            return;
        }
    }
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, String> {
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        added += 1;
    }
    Ok(added)
}

/// `ldap.ignore_ssl_errors`: any certificate is accepted, but the handshake signatures are
/// still checked, so the session is encrypted to whoever holds that certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
