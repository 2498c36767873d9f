//! The serving certificate and everything else TLS.
//!
//! - `pair`: [`load_pair`] reads a PEM chain (leaf first) and a key in PKCS#8, PKCS#1 or
//!   SEC1, and checks that the key belongs to the leaf; start-up calls it before binding,
//!   so a bad pair stops the process with a message naming the file. [`CertStore`] is
//!   the `ResolvesServerCert` every handshake asks.
//! - `reload`: [`spawn_reloader`] polls both files *by path* and compares bytes, which
//!   follows the kubelet's `..data` symlink swap of a Secret volume as well as an
//!   in-place write; a pair that does not load is logged and counted, and the last good
//!   one stays in use.
//! - `client_ca`: `--client-ca-file`, the CAs a client certificate must chain to.
//! - `issue`: certificates made here: [`ensure_dev_certs`] for a laptop, and the CA and
//!   serving certificate of `harbor-pilot certs`.
//! - `pem`: reading CA certificates from PEM, one way for every caller.
//! - `known_server`: [`KnownServer`], a client's check of a server certificate without
//!   a CA (any one, or exactly one).
//!
//! The crypto provider (ring) is passed explicitly, never installed process-wide.

mod client_ca;
mod issue;
mod known_server;
mod pair;
pub mod pem;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ServerConfig, version};

pub use client_ca::{ClientCa, load_client_ca};
pub use issue::{
    CaPair, DevCerts, Issued, ensure_dev_certs, issue_with_ca, issue_with_new_ca, new_ca,
    not_after, write_file,
};
pub use known_server::KnownServer;
pub use pair::{CertPaths, CertStore, LoadedPair, load_pair, parse_pair};
pub use reload::spawn_reloader;

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` block.
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM block could not be decoded.
    #[error("{}: invalid PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The key file holds no PKCS#8, PKCS#1 or SEC1 private key.
    #[error("{}: no private key found (PKCS#8, PKCS#1 and SEC1 PEM are read)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key does not belong to the certificate, or is of an unsupported type.
    #[error("{} and {} do not form a usable pair", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls found.
        #[source]
        source: rustls::Error,
    },
    /// The leaf certificate cannot be parsed as X.509.
    #[error("{}: the first certificate is not valid X.509", path.display())]
    X509 {
        /// The file.
        path: PathBuf,
    },
    /// A development certificate could not be made or written.
    #[error("cannot create development certificates in {}", dir.display())]
    DevCert {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The TLS configuration could not be built.
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
    /// The client CA file holds no usable CA certificate.
    #[error("{}: no usable CA certificate for verifying clients", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What rustls found, if it got that far.
        #[source]
        source: Option<rustls::server::VerifierBuilderError>,
    },
}

/// The crypto provider used for every TLS configuration in this crate.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2 only (rustls has no older versions and only AEAD suites), ALPN `h2`
/// then `http/1.1`, certificates from `store`.
pub fn server_config(
    store: Arc<CertStore>,
    provider: Arc<CryptoProvider>,
    client_ca: Option<ClientCa>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            // Mandatory once configured: a client without a certificate from this CA
            // fails the handshake and never reaches HTTP.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(ca.roots, provider)
                    .build()
                    .map_err(|source| TlsError::ClientCa {
                        path: ca.path,
                        source: Some(source),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
