//! The running process. Start-up order: the admin port (so probes get an answer, "not
//! ready"), then the configuration and the certificate (a bad one stops the process
//! before anything listens on the webhook port), then the webhook port, then "ready".
//! Shutdown reverses it: "not ready", an optional delay while endpoints update, no new
//! connections, in-flight requests finish within the drain time, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{self, Readiness};
use crate::config::{self, LoadError};
use crate::fallback::{self, Fallback};
use crate::metrics::Metrics;
use crate::probe::{self, ProbeSetupError, Prober};
use crate::server::{self, ConnectionLimits, ServeError, Transport};
use crate::tls::{self, CertPaths, CertStore, TlsError};
use crate::verify::Verifier;
use crate::warm_up::{self, WarmUp};
use crate::webhook::{self, WebhookState};
use harbor_pilot_core::gate::HarborGate;

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Files, reloaded when they change.
    Files(CertPaths),
    /// A development CA and certificate generated into (or reused from) this directory.
    Development {
        /// The directory.
        dir: PathBuf,
    },
}

/// Everything `serve` needs, validated by the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration file.
    pub config: PathBuf,
    /// The webhook's HTTPS address.
    pub webhook_addr: SocketAddr,
    /// The admin port's plain HTTP address.
    pub admin_addr: SocketAddr,
    /// The serving certificate.
    pub tls: TlsSource,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive.
    pub body_read_timeout: Duration,
    /// Handshake and header deadlines, HTTP/2 stream cap.
    pub limits: ConnectionLimits,
    /// Longest in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// How long to keep serving, not ready, before closing the port.
    pub shutdown_delay: Duration,
    /// CA certificates that client certificates must chain to; `None` accepts any
    /// client.
    pub client_ca_file: Option<PathBuf>,
    /// Kubeconfig for the fallback controller; `None`: `KUBECONFIG` or in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The certificate is missing or invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A port could not be bound.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The metrics could not be registered.
    #[error("cannot register metrics")]
    Metrics(#[from] prometheus::Error),
    /// The Harbor health check could not be set up.
    #[error(transparent)]
    Probe(#[from] ProbeSetupError),
    /// The registry client for `verify` could not be set up.
    #[error("cannot set up verify")]
    Verify(#[from] crate::registry::RegistryError),
}

/// The running admin port.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `addr` and serves `/livez`, `/readyz` (not ready yet) and `/metrics`, with
    /// the same connection cap, deadlines and drain as the webhook port.
    pub async fn start(
        addr: SocketAddr,
        limits: ConnectionLimits,
        drain: Duration,
    ) -> Result<Self, StartError> {
        let metrics = Metrics::new()?;
        let readiness = Readiness::default();
        let listener = server::bind(addr).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = admin::router(readiness.clone(), metrics.clone());
        let task = tokio::spawn(server::serve(
            listener,
            Transport::Plain,
            server::router_service(router),
            limits,
            async {
                let _ = stopped.await;
            },
            drain,
        ));
        tracing::info!(%addr, "admin port listening (/livez, /readyz, /metrics)");
        Ok(Self {
            addr,
            readiness,
            metrics,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The running webhook port.
#[derive(Debug)]
pub struct Webhook {
    addr: SocketAddr,
    dev_ca: Option<PathBuf>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    reloader: JoinHandle<()>,
    prober: Option<JoinHandle<()>>,
    controller: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Loads the configuration and the certificate, binds the webhook port, serves it,
    /// and marks the admin port ready.
    pub async fn start(settings: &Settings, admin: &Admin) -> Result<Self, StartError> {
        let config = config::load(&settings.config)?;
        let provider = tls::provider();
        let (paths, dev_ca) = match &settings.tls {
            TlsSource::Files(paths) => (paths.clone(), None),
            TlsSource::Development { dir } => {
                let dev = tls::ensure_dev_certs(dir, &provider)?;
                tracing::warn!(
                    ca = %dev.ca.display(),
                    cert = %dev.paths.cert.display(),
                    "no --tls-cert-file: serving a self-signed DEVELOPMENT certificate for localhost; \
                     clients must trust the CA file (curl --cacert); never use this in a cluster"
                );
                (dev.paths, Some(dev.ca))
            }
        };
        let pair = tls::load_pair(&paths, &provider)?;
        let mut metrics = admin.metrics().clone();
        metrics.set_cert_not_after(pair.not_after);
        metrics.register_upstreams(config.rules.proxies().map(|(upstream, _)| upstream));
        let store = Arc::new(CertStore::new(&pair));
        // The warm-up serves and pins the same certificate.
        let (warm_up_store, warm_up_provider) = (Arc::clone(&store), Arc::clone(&provider));
        let client_ca = settings
            .client_ca_file
            .as_deref()
            .map(tls::load_client_ca)
            .transpose()?;
        let tls_config = tls::server_config(Arc::clone(&store), Arc::clone(&provider), client_ca)?;
        let reloader = tls::spawn_reloader(
            store,
            paths,
            &pair,
            settings.tls_reload_interval,
            provider,
            metrics.clone(),
        );

        let (gate, prober) = match &config.health {
            None => {
                tracing::warn!(
                    "no health section: images are rewritten even while Harbor is down \
                     (pods then fail to pull); configure health to fail open instead"
                );
                (HarborGate::always_open(), None)
            }
            Some(check) => {
                let prober = Prober::new(check.clone())?;
                tracing::info!(
                    url = %check.target.url,
                    kind = ?check.kind,
                    interval = ?check.interval,
                    "Harbor health check on; images stay upstream until the first successful probe"
                );
                let gate = HarborGate::probed();
                let task = probe::spawn(prober, gate.clone(), metrics.clone());
                (gate, Some(task))
            }
        };

        let listener = server::bind(settings.webhook_addr).await?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: settings.webhook_addr,
            source,
        })?;
        webhook::warm_up(&config.rules);
        let rules = Arc::new(config.rules);
        let controller = config.fallback.map(|fallback| {
            fallback::spawn(Fallback {
                rules: Arc::clone(&rules),
                gate: gate.clone(),
                after: fallback.after,
                metrics: metrics.clone(),
                kubeconfig: settings.kubeconfig.clone(),
            })
        });
        let verifier = config
            .verify
            .map(|settings| Verifier::new(settings, metrics.clone()))
            .transpose()?;
        let state = WebhookState {
            verifier,
            rules: Arc::clone(&rules),
            metrics: metrics.clone(),
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
            gate,
            silent: false,
        };
        let warm_up = WarmUp {
            store: warm_up_store,
            provider: warm_up_provider,
            rules: Arc::clone(&rules),
            limits: settings.limits,
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
        };
        // The warm-up's admissions go through the real port (see warm_up), unless it
        // asks for client certificates, which our client has none of, or the pass could
        // not be made: the own port needs no token, and reports what else it cannot
        // build (the throwaway metrics).
        let pass = settings
            .client_ca_file
            .is_none()
            .then(|| warm_up::pass(&warm_up).ok())
            .flatten();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = webhook::spawn_server(
            listener,
            Transport::Tls(tls_config, metrics),
            state,
            settings.limits,
            stopped,
            settings.drain_timeout,
            pass.clone(),
        );
        let server = match &pass {
            Some(pass) => warm_up::Server::RealPort {
                addr,
                pass: Arc::clone(pass),
            },
            None => warm_up::Server::OwnPort,
        };
        let warmed = warm_up::run(warm_up, server).await;
        if let Some(pass) = &pass {
            pass.close();
        }
        match warmed {
            // At debug level the connections' own lines (rustls, h2) show; this says whose.
            Ok(_) => tracing::debug!(
                through_webhook_port = pass.is_some(),
                "warm-up admissions done (made up: not counted, their decisions not logged)"
            ),
            Err(error) => tracing::warn!(
                %error,
                "warm-up admission failed; the first admission may be slower"
            ),
        }
        admin.readiness().set(true);
        tracing::info!(%addr, path = webhook::MUTATE_PATH, "webhook listening");
        Ok(Self {
            addr,
            dev_ca,
            stop,
            task,
            reloader,
            prober,
            controller,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The development CA file, when serving a development certificate.
    pub fn dev_ca(&self) -> Option<&PathBuf> {
        self.dev_ca.as_ref()
    }

    /// Stops accepting, waits for in-flight requests (bounded by the drain time).
    pub async fn shutdown(self) {
        self.reloader.abort();
        for task in [&self.prober, &self.controller].into_iter().flatten() {
            task.abort();
        }
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Runs until `shutdown` completes, then shuts down in order.
pub async fn run<F>(settings: Settings, shutdown: F) -> Result<(), StartError>
where
    F: Future<Output = &'static str>,
{
    let admin = Admin::start(settings.admin_addr, settings.limits, settings.drain_timeout).await?;
    let webhook = match Webhook::start(&settings, &admin).await {
        Ok(webhook) => webhook,
        Err(error) => {
            admin.stop().await;
            return Err(error);
        }
    };
    let signal = shutdown.await;
    admin.readiness().set(false);
    tracing::info!(signal, delay = ?settings.shutdown_delay, drain = ?settings.drain_timeout, "shutting down: not ready");
    if !settings.shutdown_delay.is_zero() {
        tokio::time::sleep(settings.shutdown_delay).await;
    }
    webhook.shutdown().await;
    admin.stop().await;
    tracing::info!("stopped");
    Ok(())
}
