//! A client for the registry API (distribution v2) of Harbor's pull host: what `verify`
//! and `prewarm` need, as a container runtime asks it.
//!
//! - [`RegistryClient::head_manifest`]: `HEAD /v2/<repository>/manifests/<reference>`
//!   with the `Accept` headers for OCI index and manifest and Docker manifest list and
//!   v2 (without them a registry may convert the manifest, and its digest changes).
//! - [`RegistryClient::get_manifest`] and [`RegistryClient::get_blob`] for prewarming.
//! - The registry token flow (module `token`): a `401` with `WWW-Authenticate: Bearer
//!   realm=…,service=…` is answered with an anonymous token for
//!   `repository:<repository>:pull` from the realm, cached until it expires, and the
//!   request is sent again.
//!
//! HTTPS over rustls (ring), with the public roots and an optional CA file; HTTP/1.1 and
//! HTTP/2; connections pooled per host.

mod token;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::pem;

/// Every manifest type a runtime accepts, in the order containerd lists them.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Longest one request may take (connect, TLS, answer headers), token requests included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest manifest read.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The CA file for the pull host does not load.
    #[error("verify.caFile {}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: pem::PemError,
    },
    /// A certificate of the CA file is not usable as a trust anchor.
    #[error("verify.caFile: a certificate cannot be used as a trust anchor")]
    CaCertificate(#[source] rustls::Error),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request did not get an answer (DNS, connect, TLS, HTTP).
    #[error("request failed")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The registry answered with this status.
    #[error("HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`), when its body said.
        code: Option<String>,
    },
    /// The token server did not hand out a token.
    #[error("no token from {realm}")]
    Token {
        /// The realm asked.
        realm: String,
        /// Why.
        #[source]
        source: Box<RegistryError>,
    },
    /// A manifest that is not JSON of the expected shape.
    #[error("the manifest does not read")]
    Manifest(#[source] serde_json::Error),
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `Content-Type`.
    pub media_type: String,
    /// `Docker-Content-Digest`, when the registry sent it.
    pub digest: Option<String>,
    /// The bytes.
    pub body: Bytes,
}

/// Talks to registries over HTTPS, with tokens cached.
#[derive(Clone)]
pub struct RegistryClient {
    http: Client<Https, Empty<Bytes>>,
    tokens: Arc<token::Tokens>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryClient")
    }
}

impl RegistryClient {
    /// A client trusting the public (Mozilla) roots and the certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, RegistryError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            let certificates =
                pem::read_certificates(path).map_err(|source| RegistryError::CaFile {
                    path: path.to_owned(),
                    source,
                })?;
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(RegistryError::CaCertificate)?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(RegistryError::CaCertificate)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            http,
            tokens: Arc::new(token::Tokens::default()),
        })
    }

    /// `HEAD` of a manifest: `Ok(digest)` for a 2xx answer.
    pub async fn head_manifest(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = format!("https://{host}/v2/{repository}/manifests/{reference}");
        let response = self.send(Method::HEAD, &url, repository, true).await?;
        Ok(digest_header(&response))
    }

    /// `GET` of a manifest, whole.
    pub async fn get_manifest(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, RegistryError> {
        let url = format!("https://{host}/v2/{repository}/manifests/{reference}");
        let response = self.send(Method::GET, &url, repository, true).await?;
        let media_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let digest = digest_header(&response);
        let body = http_body_util::Limited::new(response.into_body(), MAX_MANIFEST_BYTES)
            .collect()
            .await
            .map_err(RegistryError::Transport)?
            .to_bytes();
        Ok(Manifest {
            media_type,
            digest,
            body,
        })
    }

    /// `GET` of a blob, read to the end and dropped (the point is that Harbor's cache
    /// stores it); `progress` is told the bytes as they come. The number of bytes.
    pub async fn get_blob(
        &self,
        host: &str,
        repository: &str,
        digest: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, RegistryError> {
        let url = format!("https://{host}/v2/{repository}/blobs/{digest}");
        let mut response = self.send(Method::GET, &url, repository, false).await?;
        // A registry with object storage answers with a redirect to it; the blob is in
        // Harbor's store then. Followed once, without the registry's token.
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let target = if location.starts_with('/') {
                format!("https://{host}{location}")
            } else {
                location.to_owned()
            };
            response = self.request(Method::GET, &target, false, None).await?;
            if !response.status().is_success() {
                return Err(status_error(response.status(), response).await);
            }
        }
        let mut body = response.into_body();
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| RegistryError::Transport(Box::new(e)))?;
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                progress(total);
            }
        }
        Ok(total)
    }

    /// Sends a request, answering a Bearer challenge with a token once.
    async fn send(
        &self,
        method: Method,
        url: &str,
        repository: &str,
        manifest: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let scope = format!("repository:{repository}:pull");
        let mut bearer = self.tokens.cached(url, &scope);
        for attempt in 0..2 {
            let response = self
                .request(method.clone(), url, manifest, bearer.as_deref())
                .await?;
            let status = response.status();
            if status.is_success() || (!manifest && status.is_redirection()) {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(token::Challenge::parse);
                if let Some(challenge) = challenge {
                    bearer = Some(self.token(url, &challenge, &scope).await?);
                    continue;
                }
            }
            return Err(status_error(status, response).await);
        }
        Err(RegistryError::Status {
            status: StatusCode::UNAUTHORIZED.as_u16(),
            code: None,
        })
    }

    async fn token(
        &self,
        url: &str,
        challenge: &token::Challenge,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let realm = challenge.token_url(scope);
        let fetched = async {
            let response = self.request(Method::GET, &realm, false, None).await?;
            if !response.status().is_success() {
                return Err(status_error(response.status(), response).await);
            }
            let body = http_body_util::Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(RegistryError::Transport)?
                .to_bytes();
            serde_json::from_slice::<token::Answer>(&body).map_err(RegistryError::Manifest)
        }
        .await
        .map_err(|source| RegistryError::Token {
            realm: challenge.realm.clone(),
            source: Box::new(source),
        })?;
        Ok(self.tokens.store(url, scope, fetched))
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        manifest: bool,
        bearer: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let mut request = Request::builder().method(method).uri(url);
        if manifest {
            request = request.header(ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
        }
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| RegistryError::Transport(Box::new(e)))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(RegistryError::Transport(Box::new(error))),
            Err(_) => Err(RegistryError::Timeout(REQUEST_TIMEOUT)),
        }
    }
}

fn digest_header(response: &hyper::Response<hyper::body::Incoming>) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The status, and the registry's error code from the body when it gave one.
async fn status_error(
    status: StatusCode,
    response: hyper::Response<hyper::body::Incoming>,
) -> RegistryError {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorCode>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorCode {
        code: String,
    }
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let code = serde_json::from_slice::<Errors>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| e.code);
    RegistryError::Status {
        status: status.as_u16(),
        code,
    }
}
