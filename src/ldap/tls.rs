//! The rustls client configuration: system roots plus `ldap.ca_file`, or no verification at all
//! when `ldap.ignore_ssl_errors` is set.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::LdapConfig;

/// `None` when certificates are not checked: ldap3 then builds its own accept-everything
/// configuration for `set_no_tls_verify` (a configuration handed in would bypass that).
pub fn client_config(config: &LdapConfig) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    if config.ignore_ssl_errors {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped; the connection then fails verification.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "ldap.ca_file {}: no certificate found",
                path.display()
            ));
        }
    }
    Ok(Some(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    )))
}
