//! Certificates made here: development certificates for a laptop, and the CA and
//! serving certificate `harbor-pilot certs` writes. ECDSA P-256 with rcgen.

use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::TlsError;
use super::pair::{CertPaths, load_pair};

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
