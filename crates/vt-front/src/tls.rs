//! An origin's certificate: TLS terminated by the front from a certificate chain and a key
//! in PEM files (`vt server --tls-cert/--tls-key`, `--workspace-tls-cert/--workspace-tls-key`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS server configuration for one origin (HTTP/1.1 only).
#[derive(Clone)]
pub struct Tls(Arc<rustls::ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain in {path}: {reason}; give a PEM file with `-----BEGIN CERTIFICATE-----` blocks")]
    Certificate { path: PathBuf, reason: String },
    #[error("cannot read the private key in {path}: {reason}; give a PEM file with one PKCS#8, PKCS#1 or SEC1 key")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate in {cert} and the key in {key} do not go together: {reason}")]
    Mismatch { cert: PathBuf, key: PathBuf, reason: String },
}

impl Tls {
    /// The certificate chain in `cert` (leaf first) and its key in `key`, both PEM.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let certificate = |reason: String| TlsError::Certificate { path: cert.to_owned(), reason };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| certificate(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(certificate("no certificate in it".into()));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError::Key { path: key.to_owned(), reason: e.to_string() })?;
        Tls::new(chain, private).map_err(|reason| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason,
        })
    }

    /// A configuration from a chain and its key, already parsed.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(Arc::new(config)))
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.clone())
    }
}
