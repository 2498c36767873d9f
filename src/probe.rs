//! The Harbor health prober: a background task that asks Harbor every `interval`
//! whether it can serve pulls, feeds the answers through [`Hysteresis`], and publishes
//! the result on the [`HarborGate`] the admission path reads. Admissions never wait for
//! it.
//!
//! One probe opens a new connection (DNS, TCP, TLS, one HTTP/1.1 request), all within
//! `timeout`, so it tests what a pull needs. What counts as healthy depends on the URL:
//! `/api/v2.0/health` wants every required component `healthy` (Harbor answers 200 even
//! when a component is not, so the body decides); `/api/v2.0/ping` wants 200; the
//! registry's `/v2/` wants 200 or 401 (asking for a token is being up).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, ProbeResult, Transition};
use crate::tls::{KnownServer, pem};
use harbor_pilot_core::config::{HealthCheck, ProbeKind};
use harbor_pilot_core::gate::{Availability, HarborGate, Hysteresis};

/// Largest health answer read; Harbor's is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the prober cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    /// `health.caFile` cannot be read, or holds no certificate.
    #[error("health.caFile: {}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: pem::PemError,
    },
    /// A certificate of `health.caFile` is not usable as a trust anchor.
    #[error("health.caFile: a certificate cannot be used as a trust anchor")]
    CaCertificate(#[source] rustls::Error),
    /// The TLS client could not be built.
    #[error("cannot build the TLS client for the Harbor health check")]
    Tls(#[source] rustls::Error),
}

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The host name did not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// No address accepted the connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake with {host} failed")]
    Tls {
        /// The host.
        host: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request failed")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An answer with a status that does not mean up.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// `/api/v2.0/health` that is not Harbor's JSON.
    #[error("the health answer is not Harbor's health JSON")]
    HealthJson(#[source] serde_json::Error),
    /// A required component is not healthy.
    #[error("component {name} is {status}")]
    Unhealthy {
        /// The component.
        name: String,
        /// Its reported status, or `not reported`.
        status: String,
    },
}

/// Probes one Harbor endpoint.
#[derive(Debug, Clone)]
pub struct Prober {
    check: HealthCheck,
    tls: Option<Arc<ClientConfig>>,
}

impl Prober {
    /// Builds the TLS client (public roots plus `health.caFile`, or no verification).
    pub fn new(check: HealthCheck) -> Result<Self, ProbeSetupError> {
        let tls = if check.target.tls {
            Some(client_config(&check)?)
        } else {
            None
        };
        Ok(Self { check, tls })
    }

    /// The check this prober runs.
    pub fn check(&self) -> &HealthCheck {
        &self.check
    }

    /// One probe, bounded by the timeout.
    pub async fn probe(&self) -> Result<(), ProbeFailure> {
        let timeout = self.check.timeout;
        tokio::time::timeout(timeout, self.exchange())
            .await
            .unwrap_or(Err(ProbeFailure::Timeout(timeout)))
    }

    async fn exchange(&self) -> Result<(), ProbeFailure> {
        let target = &self.check.target;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|source| ProbeFailure::Resolve {
                host: target.host.clone(),
                source,
            })?
            .collect();
        let tcp = connect(&addrs, &target.host).await?;
        let (status, body) = match &self.tls {
            Some(config) => {
                let name =
                    ServerName::try_from(target.host.clone()).map_err(|e| ProbeFailure::Tls {
                        host: target.host.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                    })?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ProbeFailure::Tls {
                        host: target.host.clone(),
                        source,
                    })?;
                get(stream, &self.check).await?
            }
            None => get(tcp, &self.check).await?,
        };
        judge(self.check.kind, &self.check.components, status, &body)
    }
}

async fn connect(addrs: &[SocketAddr], host: &str) -> Result<TcpStream, ProbeFailure> {
    let mut last = ProbeFailure::Resolve {
        host: host.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
    };
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => {
                last = ProbeFailure::Connect {
                    addr: *addr,
                    source,
                }
            }
        }
    }
    Err(last)
}

async fn get<IO>(io: IO, check: &HealthCheck) -> Result<(StatusCode, Bytes), ProbeFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| ProbeFailure::Http(Box::new(e));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    let connection = tokio::spawn(connection);
    let target = &check.target;
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = hyper::Request::get(target.path_and_query.as_str())
        .header(hyper::header::HOST, host)
        .header(
            hyper::header::USER_AGENT,
            concat!("harbor-pilot/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::ACCEPT, "application/json, */*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeFailure::Http(Box::new(e)))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(ProbeFailure::Http)?
        .to_bytes();
    connection.abort();
    Ok((status, body))
}

#[derive(Deserialize)]
struct HealthAnswer {
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    name: String,
    status: String,
}

/// Whether an answer means Harbor can serve pulls. Pure.
pub fn judge(
    kind: ProbeKind,
    required: &[String],
    status: StatusCode,
    body: &[u8],
) -> Result<(), ProbeFailure> {
    match kind {
        ProbeKind::Ping if status == StatusCode::OK => Ok(()),
        ProbeKind::Registry if matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED) => {
            Ok(())
        }
        ProbeKind::Health if status == StatusCode::OK => {
            let answer: HealthAnswer =
                serde_json::from_slice(body).map_err(ProbeFailure::HealthJson)?;
            for name in required {
                let reported = answer.components.iter().find(|c| &c.name == name);
                match reported {
                    Some(c) if c.status == "healthy" => {}
                    other => {
                        return Err(ProbeFailure::Unhealthy {
                            name: name.clone(),
                            status: other
                                .map_or_else(|| "not reported".to_owned(), |c| c.status.clone()),
                        });
                    }
                }
            }
            Ok(())
        }
        _ => Err(ProbeFailure::Status(status.as_u16())),
    }
}

fn client_config(check: &HealthCheck) -> Result<Arc<ClientConfig>, ProbeSetupError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(ProbeSetupError::Tls)?;
    let mut config = if check.insecure_skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KnownServer::any(&provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &check.ca_file {
            let certificates =
                pem::read_certificates(path).map_err(|source| ProbeSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?;
            for cert in certificates {
                roots.add(cert).map_err(ProbeSetupError::CaCertificate)?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Probes every `interval` until aborted, publishing availability on `gate`. Logs
/// only when the availability changes; each failure is logged at debug.
pub fn spawn(prober: Prober, gate: HarborGate, metrics: Metrics) -> JoinHandle<()> {
    let check = prober.check().clone();
    tokio::spawn(async move {
        let mut hysteresis = Hysteresis::new(check.failure_threshold, check.success_threshold);
        metrics.set_harbor_up(false);
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            let result = prober.probe().await;
            let outcome = if result.is_ok() {
                ProbeResult::Success
            } else {
                ProbeResult::Failure
            };
            metrics.observe_harbor_probe(outcome, started.elapsed());
            if let Err(error) = &result {
                tracing::debug!(url = %check.target.url, error = %harbor_pilot_core::chain::one_line(error), "Harbor probe failed");
            }
            let Some(state) = hysteresis.observe(result.is_ok()) else {
                continue;
            };
            gate.set(state);
            metrics.set_harbor_up(state == Availability::Up);
            metrics.observe_harbor_transition(if state == Availability::Up {
                Transition::Up
            } else {
                Transition::Down
            });
            match (state, &result) {
                (Availability::Up, _) => {
                    tracing::info!(url = %check.target.url, "Harbor is available; rewriting images")
                }
                (_, Err(error)) => tracing::warn!(
                    url = %check.target.url,
                    failures = check.failure_threshold,
                    error = %harbor_pilot_core::chain::one_line(error),
                    "Harbor is unavailable; images stay on their upstream registries (fail open)"
                ),
                (_, Ok(())) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required() -> Vec<String> {
        harbor_pilot_core::config::DEFAULT_COMPONENTS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn health(statuses: &[(&str, &str)]) -> Vec<u8> {
        let components: Vec<_> = statuses
            .iter()
            .map(|(n, s)| serde_json::json!({"name": n, "status": s}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"status": "whatever", "components": components}))
            .unwrap()
    }

    const ALL: [&str; 7] = [
        "core",
        "database",
        "jobservice",
        "portal",
        "redis",
        "registry",
        "registryctl",
    ];

    fn with(unhealthy: &str) -> Vec<u8> {
        let statuses: Vec<_> = ALL
            .iter()
            .map(|n| {
                (
                    *n,
                    if *n == unhealthy {
                        "unhealthy"
                    } else {
                        "healthy"
                    },
                )
            })
            .collect();
        health(&statuses)
    }

    #[test]
    fn health_needs_the_pull_path_components() {
        assert!(
            judge(
                ProbeKind::Health,
                &required(),
                StatusCode::OK,
                &with("none")
            )
            .is_ok()
        );
        for harmless in ["jobservice", "portal", "registryctl", "trivy"] {
            assert!(
                judge(
                    ProbeKind::Health,
                    &required(),
                    StatusCode::OK,
                    &with(harmless)
                )
                .is_ok(),
                "{harmless}"
            );
        }
        for vital in ["core", "registry", "database", "redis"] {
            let error =
                judge(ProbeKind::Health, &required(), StatusCode::OK, &with(vital)).unwrap_err();
            assert_eq!(error.to_string(), format!("component {vital} is unhealthy"));
        }
    }

    #[test]
    fn health_needs_each_required_component_reported() {
        let body = health(&[("core", "healthy")]);
        let error = judge(ProbeKind::Health, &required(), StatusCode::OK, &body).unwrap_err();
        assert_eq!(error.to_string(), "component registry is not reported");
    }

    #[test]
    fn health_rejects_other_statuses_and_bodies() {
        assert!(matches!(
            judge(
                ProbeKind::Health,
                &required(),
                StatusCode::SERVICE_UNAVAILABLE,
                b""
            ),
            Err(ProbeFailure::Status(503))
        ));
        assert!(matches!(
            judge(ProbeKind::Health, &required(), StatusCode::OK, b"<html>"),
            Err(ProbeFailure::HealthJson(_))
        ));
    }

    #[test]
    fn ping_and_registry_read_the_status() {
        assert!(judge(ProbeKind::Ping, &[], StatusCode::OK, b"Pong").is_ok());
        assert!(judge(ProbeKind::Ping, &[], StatusCode::BAD_GATEWAY, b"").is_err());
        assert!(judge(ProbeKind::Registry, &[], StatusCode::OK, b"{}").is_ok());
        assert!(judge(ProbeKind::Registry, &[], StatusCode::UNAUTHORIZED, b"").is_ok());
        assert!(judge(ProbeKind::Registry, &[], StatusCode::NOT_FOUND, b"").is_err());
    }
}
