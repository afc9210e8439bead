//! Which servers the client trusts over HTTPS: the system's certificate authorities
//! (Debian's bundle), plus the certificates of the PEM file `VT_CA_CERT` names (a private
//! CA, or a server's self-signed certificate). One configuration for the API, the registry
//! and exec's WebSocket.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The environment variable naming an extra PEM file of trusted certificates.
pub const CA_ENV: &str = "VT_CA_CERT";

/// Where Debian (and most distributions) keep the system's trusted certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The client's TLS configuration, or why `VT_CA_CERT` could not be used (then every
/// request fails with that reason, rather than trusting less than asked for).
pub fn config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(|| build(std::env::var_os(CA_ENV).as_deref().map(Path::new))).clone()
}

fn build(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(certs) = CertificateDer::pem_file_iter(SYSTEM_BUNDLE) {
        // A bundle entry rustls cannot use is skipped, as every TLS client does.
        roots.add_parsable_certificates(certs.flatten());
    }
    if let Some(path) = extra {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{CA_ENV}={shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{CA_ENV}={shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{CA_ENV}={shown}: no `-----BEGIN CERTIFICATE-----` block in it"));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("{CA_ENV}={shown}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A reqwest client builder that trusts what [`config`] trusts, and the reason to refuse
/// every request when that configuration could not be made.
pub(crate) fn http_builder() -> (reqwest::ClientBuilder, Option<String>) {
    let builder = reqwest::Client::builder();
    match config() {
        Ok(c) => (builder.use_preconfigured_tls((*c).clone()), None),
        Err(e) => (builder, Some(e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = std::env::temp_dir().join(format!("vt-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = super::build(Some(&empty)).unwrap_err();
        assert!(e.contains("VT_CA_CERT=") && e.contains("empty.pem") && e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = super::build(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        assert!(super::build(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
