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
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec cannot fail");
    }
    out
}

#[cfg(feature = "test-support")]
mod tls {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// The crypto provider every test uses (ring).
    pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A real TLS server on 127.0.0.1 with a fresh self-signed certificate for
    /// `host`: it sends `name\n` after the handshake, then echoes. Returns its
    /// address and the certificate to trust.
    pub async fn tls_backend(name: &'static str, host: &str) -> (SocketAddr, CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("self-signed certificate");
        let cert = ck.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring provider supports the default versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.into())
            .expect("certificate and key match");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else { return };
                    if tls.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, cert)
    }

    /// A TLS client that trusts exactly `roots`.
    pub fn connector(roots: &[CertificateDer<'static>]) -> TlsConnector {
        let mut store = rustls::RootCertStore::empty();
        for c in roots {
            store.add(c.clone()).expect("a valid root certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring provider supports the default versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// One `\n`-terminated line; end of stream before the newline is an error.
    pub async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if r.read(&mut b).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("eof before newline, got {line:?}"),
                ));
            }
            if b[0] == b'\n' {
                return String::from_utf8(line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
            line.push(b[0]);
        }
    }
}

#[cfg(feature = "test-support")]
pub use tls::{connector, provider, read_line, tls_backend};
