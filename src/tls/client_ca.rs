//! `--client-ca-file`: the CA certificates a client certificate must chain to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::TlsError;
use super::pem::{PemError, read_certificates};

/// CA certificates for verifying client certificates, checked.
#[derive(Debug, Clone)]
pub struct ClientCa {
    pub(super) roots: Arc<rustls::RootCertStore>,
    pub(super) path: PathBuf,
}

/// Reads `--client-ca-file`.
pub fn load_client_ca(path: &Path) -> Result<ClientCa, TlsError> {
    let certificates = read_certificates(path).map_err(|error| match error {
        PemError::Read(source) => TlsError::ReadFile {
            path: path.to_owned(),
            source,
        },
        PemError::Pem(source) => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
        PemError::Empty => TlsError::ClientCa {
            path: path.to_owned(),
            source: None,
        },
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates {
        roots.add(cert).map_err(|_| TlsError::ClientCa {
            path: path.to_owned(),
            source: None,
        })?;
    }
    Ok(ClientCa {
        roots: Arc::new(roots),
        path: path.to_owned(),
    })
}
