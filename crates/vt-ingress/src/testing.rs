//! Helpers shared by tests and the bench binary (not part of the data plane).

use std::sync::Arc;

/// Drive a rustls client (ring provider) far enough to produce its first
/// flight, the TLS record(s) carrying a ClientHello for `host`.
pub fn rustls_client_hello(host: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("valid server name");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .expect("write to a Vec cannot fail");
    }
    out
}
