//! [`KnownServer`]: the client-side check for the two connections of ours that do not
//! use the web PKI.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts a server's certificate without a chain to a CA: any certificate
/// (`health.insecureSkipTlsVerify`), or exactly one (the warm-up, talking to the
/// certificate the webhook itself serves). Either way the handshake's signatures are
/// checked, so the peer at least holds the certificate's key.
#[derive(Debug)]
pub struct KnownServer {
    exactly: Option<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl KnownServer {
    /// Any certificate.
    pub fn any(provider: &CryptoProvider) -> Self {
        Self {
            exactly: None,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// `certificate` and no other.
    pub fn exactly(certificate: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self {
            exactly: Some(certificate),
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for KnownServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.exactly {
            Some(expected) if expected.as_ref() != end_entity.as_ref() => Err(
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ensure_dev_certs, load_pair, provider};

    fn served(dir: &std::path::Path) -> CertificateDer<'static> {
        let dev = ensure_dev_certs(dir, &provider()).unwrap();
        load_pair(&dev.paths, &provider()).unwrap().certified.cert[0].clone()
    }

    fn check(verifier: &KnownServer, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("harbor-pilot.warm-up").unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn exactly_accepts_that_certificate_and_no_other() {
        let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (served, stranger) = (served(one.path()), served(other.path()));
        let verifier = KnownServer::exactly(served.clone(), &provider());
        assert!(check(&verifier, &served).is_ok());
        assert!(matches!(
            check(&verifier, &stranger),
            Err(rustls::Error::InvalidCertificate(_))
        ));
        assert!(check(&KnownServer::any(&provider()), &stranger).is_ok());
    }
}
