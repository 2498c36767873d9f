//! The serving pair: read, checked, and served to every handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Where the serving certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A certificate pair ready to serve, and the bytes it came from.
#[derive(Debug, Clone)]
pub struct LoadedPair {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's notAfter, as Unix seconds.
    pub not_after: i64,
    pub(super) cert_pem: Vec<u8>,
    pub(super) key_pem: Vec<u8>,
}

/// Reads and checks the pair at `paths`.
pub fn load_pair(paths: &CertPaths, provider: &CryptoProvider) -> Result<LoadedPair, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::ReadFile {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&paths.cert)?;
    let key_pem = read(&paths.key)?;
    parse_pair(cert_pem, key_pem, paths, provider)
}

/// Builds a pair from PEM bytes; `paths` only name the files in errors.
pub fn parse_pair(
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    paths: &CertPaths,
    provider: &CryptoProvider,
) -> Result<LoadedPair, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: paths.cert.clone(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: paths.cert.clone(),
        });
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| TlsError::X509 {
            path: paths.cert.clone(),
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: paths.key.clone(),
        },
        source => TlsError::Pem {
            path: paths.key.clone(),
            source,
        },
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Pair {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })?;
    Ok(LoadedPair {
        certified: Arc::new(certified),
        not_after,
        cert_pem,
        key_pem,
    })
}

/// The certificate every handshake gets; swapped in place by the reloader.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store serving `pair`.
    pub fn new(pair: &LoadedPair) -> Self {
        Self {
            current: RwLock::new(Arc::clone(&pair.certified)),
        }
    }

    /// Serves `pair` from the next handshake on.
    pub fn replace(&self, pair: &LoadedPair) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::clone(&pair.certified);
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A panic while holding the lock cannot leave a half-written Arc behind.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ensure_dev_certs, provider};

    fn paths(dir: &Path) -> CertPaths {
        CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    #[test]
    fn dev_certs_load_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider();
        let first = ensure_dev_certs(dir.path(), &provider).unwrap();
        let pair = load_pair(&first.paths, &provider).unwrap();
        assert!(pair.not_after > time::OffsetDateTime::now_utc().unix_timestamp());
        let ca_before = std::fs::read(&first.ca).unwrap();
        ensure_dev_certs(dir.path(), &provider).unwrap();
        assert_eq!(
            std::fs::read(&first.ca).unwrap(),
            ca_before,
            "CA regenerated"
        );
    }

    #[test]
    fn reports_a_missing_certificate_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_pair(&paths(dir.path()), &provider()).unwrap_err();
        assert!(error.to_string().starts_with("cannot read "), "{error}");
        assert!(error.to_string().ends_with("tls.crt"), "{error}");
    }

    #[test]
    fn reports_garbage_and_mismatched_keys() {
        let dir = tempfile::tempdir().unwrap();
        let provider = provider();
        let a = ensure_dev_certs(&dir.path().join("a"), &provider).unwrap();
        let b = ensure_dev_certs(&dir.path().join("b"), &provider).unwrap();
        let cert = std::fs::read(&a.paths.cert).unwrap();
        let other_key = std::fs::read(&b.paths.key).unwrap();
        let p = paths(dir.path());
        let mismatch = parse_pair(cert.clone(), other_key, &p, &provider).unwrap_err();
        assert!(matches!(mismatch, TlsError::Pair { .. }), "{mismatch}");
        let no_cert = parse_pair(b"garbage".to_vec(), vec![], &p, &provider).unwrap_err();
        assert!(
            matches!(no_cert, TlsError::NoCertificate { .. }),
            "{no_cert}"
        );
        let no_key = parse_pair(cert, b"nothing here".to_vec(), &p, &provider).unwrap_err();
        assert!(matches!(no_key, TlsError::NoPrivateKey { .. }), "{no_key}");
    }
}
