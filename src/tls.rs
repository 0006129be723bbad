//! HTTPS for the public listener: rustls with ALPN `h2` and `http/1.1`, and a certificate
//! that can be replaced while serving (SIGHUP) without dropping connections.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub(crate) struct TlsError {
    pub path: String,
    pub reason: String,
}

/// Reads a PEM certificate chain and private key into a signing-ready pair.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let err = |p: &Path, reason: String| TlsError {
        path: p.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err(key, format!("cannot read the private key: {e}")))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| err(key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| err(key, format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The current certificate; swapped atomically on reload.
#[derive(Debug)]
pub(crate) struct Resolver(ArcSwap<CertifiedKey>);

impl Resolver {
    pub(crate) fn new(key: CertifiedKey) -> Arc<Resolver> {
        Arc::new(Resolver(ArcSwap::from_pointee(key)))
    }

    pub(crate) fn replace(&self, key: CertifiedKey) {
        self.0.store(Arc::new(key));
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// An acceptor offering `h2` and `http/1.1` with certificates from `resolver`.
pub(crate) fn acceptor(resolver: Arc<Resolver>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}
