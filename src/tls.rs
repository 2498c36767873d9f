//! The serving certificate: loading, hot reload, and development certificates.
//!
//! - [`load_pair`] reads a PEM chain (leaf first) and a key in PKCS#8, PKCS#1 or SEC1,
//!   and checks that the key belongs to the leaf. Startup calls it before binding, so a
//!   bad pair stops the process with a message naming the file.
//! - [`CertStore`] is the `ResolvesServerCert` every handshake asks; it holds the
//!   current pair behind a lock that is only written on a reload.
//! - [`spawn_reloader`] polls both files *by path* and compares bytes, which follows the
//!   kubelet's `..data` symlink swap of a Secret volume as well as an in-place write. A
//!   pair that does not load (half written, mismatched, garbage) is logged and counted,
//!   and the last good one stays in use.
//! - [`ensure_dev_certs`] makes a throwaway CA and a `localhost` certificate, for running
//!   the webhook on a laptop.
//!
//! The crypto provider (ring) is passed explicitly, never installed process-wide.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

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

/// CA certificates for verifying client certificates, checked.
#[derive(Debug, Clone)]
pub struct ClientCa {
    roots: Arc<rustls::RootCertStore>,
    path: PathBuf,
}

/// Reads `--client-ca-file`.
pub fn load_client_ca(path: &Path) -> Result<ClientCa, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
        roots.add(cert).map_err(|_| TlsError::ClientCa {
            path: path.to_owned(),
            source: None,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(ClientCa {
        roots: Arc::new(roots),
        path: path.to_owned(),
    })
}

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
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// The crypto provider used for every TLS configuration in this crate.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

/// Polls `paths` every `every` and swaps in a changed pair that loads; see the module
/// docs. `initial` is the pair the store started with.
pub fn spawn_reloader(
    store: Arc<CertStore>,
    paths: CertPaths,
    initial: &LoadedPair,
    every: Duration,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
) -> JoinHandle<()> {
    // The last bytes tried: a broken pair is reported once, not on every tick.
    let mut last = (initial.cert_pem.clone(), initial.key_pem.clone());
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (cert, key) = match (
                tokio::fs::read(&paths.cert).await,
                tokio::fs::read(&paths.key).await,
            ) {
                (Ok(cert), Ok(key)) => (cert, key),
                (Err(error), _) | (_, Err(error)) => {
                    // Mid-swap a file can be missing for an instant; the next tick retries.
                    tracing::debug!(%error, "serving certificate files not readable; keeping the current pair");
                    continue;
                }
            };
            if (&cert, &key) == (&last.0, &last.1) {
                continue;
            }
            last = (cert.clone(), key.clone());
            match parse_pair(cert, key, &paths, &provider) {
                Ok(pair) => {
                    store.replace(&pair);
                    metrics.observe_tls_reload(true);
                    metrics.set_cert_not_after(pair.not_after);
                    tracing::info!(not_after = pair.not_after, "serving certificate reloaded");
                }
                Err(error) => {
                    metrics.observe_tls_reload(false);
                    tracing::warn!(error = %error_chain(&error), "changed serving certificate does not load; keeping the current pair");
                }
            }
        }
    })
}

/// The files [`ensure_dev_certs`] writes.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// Serving certificate and key.
    pub paths: CertPaths,
    /// The CA that signed it: what a client must trust (`curl --cacert`).
    pub ca: PathBuf,
}

/// Development certificates in `dir`: a CA (`ca.crt`) and a serving pair (`tls.crt`,
/// `tls.key`) for `localhost`, `127.0.0.1` and `::1`, valid for 90 days. An existing set
/// is reused while it loads and has more than a day left, so a client keeps trusting
/// the same CA across restarts.
pub fn ensure_dev_certs(dir: &Path, provider: &CryptoProvider) -> Result<DevCerts, TlsError> {
    let certs = DevCerts {
        paths: CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        ca: dir.join("ca.crt"),
    };
    let now = time::OffsetDateTime::now_utc();
    let reusable = certs.ca.exists()
        && load_pair(&certs.paths, provider)
            .is_ok_and(|pair| pair.not_after > (now + time::Duration::days(1)).unix_timestamp());
    if reusable {
        return Ok(certs);
    }
    let dev_error = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::DevCert {
        dir: dir.to_owned(),
        source,
    };
    let (ca_pem, cert_pem, key_pem) = generate_dev_pems(now).map_err(|e| dev_error(Box::new(e)))?;
    std::fs::create_dir_all(dir).map_err(|e| dev_error(Box::new(e)))?;
    for (path, contents, mode) in [
        (&certs.ca, ca_pem, 0o644),
        (&certs.paths.cert, cert_pem, 0o644),
        (&certs.paths.key, key_pem, 0o600),
    ] {
        write_file(path, contents.as_bytes(), mode).map_err(|e| dev_error(Box::new(e)))?;
    }
    Ok(certs)
}

fn generate_dev_pems(now: time::OffsetDateTime) -> Result<(String, String, String), rcgen::Error> {
    let names = ["localhost", "127.0.0.1", "::1"].map(str::to_owned);
    let issued = issue_with_new_ca(
        &names,
        "harbor-pilot development CA",
        "harbor-pilot (development)",
        now,
        90,
    )?;
    Ok((issued.ca.cert_pem, issued.cert_pem, issued.key_pem))
}

/// A CA: its certificate and key, PEM.
#[derive(Debug, Clone)]
pub struct CaPair {
    /// The CA certificate: what clients trust.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A serving certificate and the CA that signed it, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CA.
    pub ca: CaPair,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's key (PKCS#8).
    pub key_pem: String,
    /// When the serving certificate expires (it never outlives its CA).
    pub not_after: time::OffsetDateTime,
}

impl Issued {
    /// The CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }
}

/// Makes a CA valid from an hour before `now` for `days` days.
pub fn new_ca(name: &str, now: time::OffsetDateTime, days: u32) -> Result<CaPair, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CaPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// When the first certificate in `pem` expires; `None` when it does not parse.
pub fn not_after(pem: &str) -> Option<time::OffsetDateTime> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    time::OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()
}

/// Issues an ECDSA P-256 serving certificate for `names` (DNS names or IP addresses),
/// signed by `ca`, valid from an hour before `now` for `days` days but never past the
/// CA's own expiry.
pub fn issue_with_ca(
    ca: &CaPair,
    names: &[String],
    leaf_name: &str,
    now: time::OffsetDateTime,
    days: u32,
) -> Result<Issued, rcgen::Error> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};

    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let ca_not_after = not_after(&ca.cert_pem).ok_or(rcgen::Error::CouldNotParseCertificate)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, leaf_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = (now + time::Duration::days(i64::from(days))).min(ca_not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        ca: ca.clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: params.not_after,
    })
}

/// Makes a CA and a serving certificate for `names`, both valid from an hour before
/// `now` for `days` days.
pub fn issue_with_new_ca(
    names: &[String],
    ca_name: &str,
    leaf_name: &str,
    now: time::OffsetDateTime,
    days: u32,
) -> Result<Issued, rcgen::Error> {
    let ca = new_ca(ca_name, now, days)?;
    issue_with_ca(&ca, names, leaf_name, now, days)
}

/// Writes `contents` to `path` with permissions `mode` (the file is replaced).
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)
}

/// `error: cause: cause…` on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

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
