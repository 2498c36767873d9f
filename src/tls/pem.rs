//! CA certificates from PEM: one reader for every file of them harbor-pilot takes
//! (`--client-ca-file`, `health.caFile`, `verify.caFile`), so each says the same thing
//! about a bad file and none silently drops a bad block.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Why a file of CA certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// It could not be read.
    #[error("cannot be read")]
    Read(#[source] std::io::Error),
    /// A PEM block is damaged.
    #[error("is not PEM")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// It holds no `CERTIFICATE` block.
    #[error("holds no PEM certificate")]
    Empty,
}

/// Every certificate in `pem`; at least one, and no damaged block.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PemError::Pem)?;
    if certificates.is_empty() {
        return Err(PemError::Empty);
    }
    Ok(certificates)
}

/// [`certificates`] of the file at `path`.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates(&std::fs::read(path).map_err(PemError::Read)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_without_certificates_or_with_a_damaged_block() {
        assert!(matches!(certificates(b"no pem here"), Err(PemError::Empty)));
        let damaged = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certificates(damaged), Err(PemError::Pem(_))));
        assert!(matches!(
            read_certificates(Path::new("does/not/exist.pem")),
            Err(PemError::Read(_))
        ));
    }
}
