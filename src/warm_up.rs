//! Admissions over HTTP/1.1 and HTTP/2, with each TLS 1.3 cipher suite, through the
//! whole server path, before the webhook port is marked ready.
//!
//! `webhook::warm_up` runs the review itself once at start, but the first real
//! admission still ran code the process had never run: the TLS handshake and record
//! layer, hyper's connection, the body read, the answer written back, each paying page
//! faults and cold caches on first use (measured: the first admission after start took
//! 0.43–0.68 ms, later ones 0.21–0.31 ms). Here a client of our own posts made-up
//! admissions to the real port itself, so its first caller meets code, tasks and
//! connection bookkeeping that have served before. A server of the warm-up's own,
//! running the same code on another loopback port, left the real port's own serving
//! cold: inside the server the first real admission took 1.20× its start's later ones
//! (paired medians over 20 starts), and 1.14× through the real port. That rest was the
//! first pod of a new shape at any time, not start-up: the reference grammar's
//! automaton was built lazily as images reached new states; it is now built whole
//! (`reference::grammar` in the core), and the first admission takes 0.97–1.01× its
//! start's later ones (four runs of `benches/load.sh`). Only when the real port asks
//! for client certificates, which our client has none of, does the warm-up fall back
//! to a port of its own ([`Server::OwnPort`]).
//!
//! Nothing of it is visible outside: the real port answers the warm-up's admissions
//! with a state of their own (`webhook::WarmUpPass`: metrics of their own, so no
//! admission is counted; a throwaway copy of the rules, so the decision memory stays
//! as it was; no health gate or `verify`, so nothing asks Harbor) and logs nothing of
//! them (their lines are formatted and thrown away, [`telemetry::without_logging`]);
//! the client runs on a thread of its own that logs nothing either. Only at debug
//! level do the warm-up's connections show, in rustls's and h2's own lines, followed
//! by one line saying whose they were.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, header};
use harbor_pilot_core::gate::HarborGate;
use harbor_pilot_core::rules::CachedRules;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use crate::metrics::Metrics;
use crate::server::{self, ConnectionLimits, Transport};
use crate::telemetry;
use crate::tls::{self, CertStore, KnownServer};
use crate::webhook::{self, WarmUpPass, WebhookState};

/// Longest the warm-up may hold up start-up; past it the port is marked ready anyway.
pub const BUDGET: Duration = Duration::from_secs(5);

/// What the warm-up needs from start-up.
#[derive(Debug)]
pub struct WarmUp {
    /// The certificate the real port serves (the warm-up's client pins it).
    pub store: Arc<CertStore>,
    /// The crypto provider of the real port.
    pub provider: Arc<CryptoProvider>,
    /// The rules; the warm-up reviews with a copy.
    pub rules: Arc<CachedRules>,
    /// The real port's limits.
    pub limits: ConnectionLimits,
    /// The real port's body limits.
    pub max_body_bytes: usize,
    /// The real port's body read timeout.
    pub body_read_timeout: Duration,
}

/// Where the warm-up's admissions are served.
#[derive(Debug)]
pub enum Server {
    /// The real port, at `addr`, serving with `pass` (from [`pass`]).
    RealPort {
        /// The address the port is bound to (an unspecified one is reached on loopback).
        addr: SocketAddr,
        /// The pass the port's server was given.
        pass: Arc<WarmUpPass>,
    },
    /// A loopback port of the warm-up's own, on the same server code: for a real port
    /// that asks for client certificates.
    OwnPort,
}

/// Why the warm-up did not complete. Never fatal: the first admission is then only slower.
#[derive(Debug, thiserror::Error)]
pub enum WarmUpError {
    /// Setting up the thread, runtime, listener or TLS configuration failed.
    #[error("cannot set up: {0}")]
    Setup(String),
    /// Talking to the warm-up server failed.
    #[error("{protocol}: {message}")]
    Exchange {
        /// `HTTP/1.1` or `HTTP/2`.
        protocol: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The warm-up server answered, but not with an allowed review.
    #[error("{protocol}: answered {status}, not an allowed review")]
    NotAllowed {
        /// `HTTP/1.1` or `HTTP/2`.
        protocol: &'static str,
        /// The HTTP status.
        status: StatusCode,
    },
    /// Not done within [`BUDGET`].
    #[error("not done within {BUDGET:?}")]
    TimedOut,
}

/// The pass for the real port's server: a random token, and the state the warm-up's
/// admissions are answered with.
pub fn pass(warm_up: &WarmUp) -> Result<Arc<WarmUpPass>, WarmUpError> {
    let mut random = [0_u8; 16];
    warm_up
        .provider
        .secure_random
        .fill(&mut random)
        .map_err(|_| WarmUpError::Setup("no random token".to_owned()))?;
    let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut token = HeaderValue::from_str(&hex)
        .map_err(|e| WarmUpError::Setup(format!("random token: {e}")))?;
    // Never entered into an HTTP/2 header table.
    token.set_sensitive(true);
    Ok(WarmUpPass::new(token, throwaway_state(warm_up)?))
}

/// What the warm-up's admissions are answered with: the real port's limits, with
/// metrics of its own, a copy of the rules, Harbor taken as available and no `verify`.
fn throwaway_state(warm_up: &WarmUp) -> Result<WebhookState, WarmUpError> {
    let mut metrics = Metrics::new().map_err(|e| WarmUpError::Setup(format!("metrics: {e}")))?;
    // As the real port's are: counting an image then finds its upstream's series.
    metrics.register_upstreams(warm_up.rules.proxies().map(|(upstream, _)| upstream));
    Ok(WebhookState {
        rules: Arc::new(CachedRules::clone(&warm_up.rules)),
        metrics,
        // Raised to the made-up review's size under a smaller --max-body-bytes: the
        // limit is a number the same code compares, not a path of its own.
        max_body_bytes: warm_up
            .max_body_bytes
            .max(webhook::made_up_review(&warm_up.rules).len()),
        body_read_timeout: warm_up.body_read_timeout,
        gate: HarborGate::always_open(),
        verifier: None,
        silent: true,
    })
}

/// Runs the warm-up's client on a thread of its own and waits for it, at most
/// [`BUDGET`]; whether every answer carried a patch (they do when the rules rewrite
/// their first upstream).
pub async fn run(warm_up: WarmUp, server: Server) -> Result<bool, WarmUpError> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("warm-up".to_owned())
        .spawn(move || {
            let result = telemetry::without_logging(|| on_this_thread(warm_up, server));
            let _ = done.send(result);
        })
        .map_err(|e| WarmUpError::Setup(format!("thread: {e}")))?;
    match tokio::time::timeout(BUDGET, finished).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(WarmUpError::Setup("the thread ended early".to_owned())),
        Err(_) => Err(WarmUpError::TimedOut),
    }
}

thread_local! {
    /// The warm-up runtime's worker thread logs nothing either ([`telemetry::discarding`]).
    static DISCARDING: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

/// A runtime of the real one's kind (multi-threaded, here with one worker) rather than a
/// current-thread one: tokio's task code is generic over the scheduler, and on a
/// current-thread runtime the own port's connection tasks were other machine code than
/// the real port's, which the first real admission then ran for the first time (~20
/// cache lines of it, by callgrind).
fn on_this_thread(warm_up: WarmUp, server: Server) -> Result<bool, WarmUpError> {
    let discarding = telemetry::discarding();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("warm-up-worker")
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&discarding);
            DISCARDING.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| DISCARDING.with(|slot| drop(slot.borrow_mut().take())))
        .enable_all()
        .build()
        .map_err(|e| WarmUpError::Setup(format!("runtime: {e}")))?;
    runtime.block_on(async move {
        match server {
            Server::RealPort { addr, pass } => {
                let clients = clients(&warm_up, Some(pass.token()))?;
                admit_all(&clients, on_loopback(addr)).await
            }
            Server::OwnPort => serve_and_admit(warm_up).await,
        }
    })
}

/// `addr`, or loopback of its family when it is the unspecified address.
fn on_loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One client per TLS 1.3 cipher suite, pinning the served certificate.
fn clients(warm_up: &WarmUp, token: Option<&HeaderValue>) -> Result<Vec<Client>, WarmUpError> {
    let pinned = warm_up
        .store
        .current()
        .cert
        .first()
        .cloned()
        .ok_or_else(|| WarmUpError::Setup("no certificate".to_owned()))?;
    let review = Bytes::from(webhook::made_up_review(&warm_up.rules));
    one_per_tls13_suite(&warm_up.provider)
        .into_iter()
        .map(|provider| {
            Client::new(
                pinned.clone(),
                &Arc::new(provider),
                review.clone(),
                token.cloned(),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WarmUpError::Setup(format!("client TLS: {e}")))
}

/// Each client admits over HTTP/1.1, then HTTP/2; whether every answer was patched.
async fn admit_all(clients: &[Client], addr: SocketAddr) -> Result<bool, WarmUpError> {
    let mut patched = !clients.is_empty();
    for client in clients {
        patched &= client.admit(addr, Protocol::Http1).await?;
        patched &= client.admit(addr, Protocol::Http2).await?;
    }
    Ok(patched)
}

async fn serve_and_admit(warm_up: WarmUp) -> Result<bool, WarmUpError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| WarmUpError::Setup(format!("{what}: {e}"));
    // Without client authentication even when the real port requires it: our client has
    // no certificate from the API server's CA. The rest of the handshake is the same.
    let server_config = tls::server_config(
        Arc::clone(&warm_up.store),
        Arc::clone(&warm_up.provider),
        None,
    )
    .map_err(|e| setup("TLS", &e))?;
    let listener = server::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| setup("listener", &e))?;
    let addr = listener.local_addr().map_err(|e| setup("listener", &e))?;
    let state = throwaway_state(&warm_up)?;
    let metrics = state.metrics.clone();
    let clients = clients(&warm_up, None)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = webhook::spawn_server(
        listener,
        Transport::Tls(server_config, metrics),
        state,
        warm_up.limits,
        stopped,
        Duration::ZERO,
        None,
    );
    let result = admit_all(&clients, addr).await;
    let _ = stop.send(());
    let _ = serving.await;
    result
}

/// The provider once per TLS 1.3 cipher suite, that suite first (the server follows the
/// client's order) and every other after it, as clients offer them. Each suite is code
/// of its own (key schedule, record encryption) that the first real admission would
/// otherwise run first: the API server's (Go's) first choice is AES-128-GCM, rustls's
/// AES-256-GCM (measured by callgrind: the first real admission ran 6 cache lines of
/// AES-128 code never run before, and more of reading a hello offering other suites).
fn one_per_tls13_suite(provider: &CryptoProvider) -> Vec<CryptoProvider> {
    let suites = &provider.cipher_suites;
    suites
        .iter()
        .filter(|suite| suite.tls13().is_some())
        .map(|first| CryptoProvider {
            cipher_suites: std::iter::once(*first)
                .chain(
                    suites
                        .iter()
                        .filter(|s| s.suite() != first.suite())
                        .copied(),
                )
                .collect(),
            ..provider.clone()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// The warm-up's client: TLS to the served certificate and nothing else.
struct Client {
    /// Without ALPN; each connection sets the protocol it speaks.
    tls: ClientConfig,
    review: Bytes,
    /// The pass's token, through the real port.
    token: Option<HeaderValue>,
}

impl Client {
    fn new(
        certificate: CertificateDer<'static>,
        provider: &Arc<CryptoProvider>,
        review: Bytes,
        token: Option<HeaderValue>,
    ) -> Result<Self, rustls::Error> {
        let tls = ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(KnownServer::exactly(certificate, provider)))
            .with_no_client_auth();
        Ok(Self { tls, review, token })
    }

    /// Posts the made-up review the way the API server does; whether the allowed answer
    /// carried a patch.
    async fn admit(&self, addr: SocketAddr, protocol: Protocol) -> Result<bool, WarmUpError> {
        let failed = |message: String| WarmUpError::Exchange {
            protocol: protocol.name(),
            message,
        };
        let mut config = self.tls.clone();
        config.alpn_protocols = vec![match protocol {
            Protocol::Http1 => b"http/1.1".to_vec(),
            Protocol::Http2 => b"h2".to_vec(),
        }];
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("harbor-pilot.warm-up")
            .map_err(|e| failed(format!("server name: {e}")))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS: {e}")))?;
        let mut request = Request::post(format!(
            "https://{addr}{}?timeout=10s",
            webhook::MUTATE_PATH
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(webhook::WARM_UP_HEADER, token.clone());
        }
        let request = request
            .body(Full::new(self.review.clone()))
            .map_err(|e| failed(format!("request: {e}")))?;
        let io = TokioIo::new(tls);
        let response = match protocol {
            Protocol::Http1 => {
                let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| failed(format!("handshake: {e}")))?;
                tokio::spawn(connection);
                sender.send_request(request).await
            }
            Protocol::Http2 => {
                let (mut sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(|e| failed(format!("handshake: {e}")))?;
                tokio::spawn(connection);
                sender.send_request(request).await
            }
        }
        .map_err(|e| failed(format!("request: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(format!("answer: {e}")))?
            .to_bytes();
        let review = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        if status == StatusCode::OK && review["response"]["allowed"] == true {
            Ok(review["response"]["patch"].is_string())
        } else {
            Err(WarmUpError::NotAllowed {
                protocol: protocol.name(),
                status,
            })
        }
    }
}

/// Runs on each of the runtime's threads before it takes work: what a thread builds for
/// itself on first use, built here rather than during the first admission it serves.
/// - The reference grammar, compiled, and each way through the reference parse
///   ([`ImageRef::warm_up`]).
/// - The allocator's memory for the thread: mimalloc gives each thread pages of its
///   own, one per size class, faulted in as allocations first reach them. Eight blocks
///   of each size class up to 8 KiB (mimalloc has four per doubling) and six of 16 KiB,
///   allocated, written and freed here, leave those pages with the thread for its first
///   requests (~0.7 MiB per thread): the first admission's page faults went from 7-9 to
///   1-3 and its time from 1.22x a later admission's to 1.04x (medians of six starts).
/// - The thread's stack: the review's deepest frames reached pages never touched before
///   (the rest of the first admission's faults). A worker's stack reaches 80 KiB under
///   any mix of requests (HTTP/1.1 and HTTP/2, 3 and 50 containers, a bad body); with
///   64 KiB touched here it was 72 KiB before the first admission and that admission
///   faulted in the last two pages. 96 KiB are touched now.
///
/// [`ImageRef::warm_up`]: harbor_pilot_core::reference::ImageRef::warm_up
pub fn runtime_thread_started() {
    harbor_pilot_core::reference::ImageRef::warm_up();
    let mut blocks: Vec<Vec<u8>> = (0..6).map(|_| vec![1_u8; 16 * 1024]).collect();
    let mut size = 8;
    while size <= 8 * 1024 {
        for class in [size, size * 5 / 4, size * 3 / 2, size * 7 / 4] {
            blocks.extend((0..8).map(|_| vec![1_u8; class]));
        }
        size *= 2;
    }
    std::hint::black_box(&blocks);
    touch_stack();
}

#[inline(never)]
fn touch_stack() {
    let mut frame = [1_u8; 96 * 1024];
    std::hint::black_box(&mut frame);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{LoadedPair, load_pair};

    fn pair(dir: &std::path::Path) -> LoadedPair {
        let dev = tls::ensure_dev_certs(dir, &tls::provider()).unwrap();
        load_pair(&dev.paths, &tls::provider()).unwrap()
    }

    fn warm_up(pair: &LoadedPair, config: &str) -> WarmUp {
        let config = harbor_pilot_core::config::Config::from_yaml(config).unwrap();
        WarmUp {
            store: Arc::new(CertStore::new(pair)),
            provider: tls::provider(),
            rules: Arc::new(config.rules),
            limits: ConnectionLimits::default(),
            max_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_protocols_come_back_patched_and_the_rules_memory_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let pair = pair(dir.path());
        let warm_up = warm_up(
            &pair,
            "harbor: harbor.example.com\nproxies:\n  ghcr.io: ghcr-proxy\n",
        );
        let rules = Arc::clone(&warm_up.rules);
        assert!(
            run(warm_up, Server::OwnPort).await.unwrap(),
            "answered without a patch"
        );
        assert!(
            format!("{rules:?}").contains("remembered: 0"),
            "the warm-up reviewed with a copy: {rules:?}"
        );
    }

    /// The real port as `app` serves it: the rules and metrics of the process, the pass.
    async fn real_port(
        warm_up: &WarmUp,
        pass: Option<Arc<WarmUpPass>>,
    ) -> (SocketAddr, Metrics, oneshot::Sender<()>) {
        let mut metrics = Metrics::new().unwrap();
        metrics.register_upstreams(warm_up.rules.proxies().map(|(upstream, _)| upstream));
        let state = WebhookState {
            rules: Arc::clone(&warm_up.rules),
            metrics: metrics.clone(),
            max_body_bytes: warm_up.max_body_bytes,
            body_read_timeout: warm_up.body_read_timeout,
            gate: HarborGate::always_open(),
            verifier: None,
            silent: false,
        };
        let config = tls::server_config(Arc::clone(&warm_up.store), tls::provider(), None).unwrap();
        let listener = server::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        webhook::spawn_server(
            listener,
            Transport::Tls(config, metrics.clone()),
            state,
            warm_up.limits,
            stopped,
            Duration::ZERO,
            pass,
        );
        (addr, metrics, stop)
    }

    /// How many admissions `metrics` counted.
    fn admissions(metrics: &Metrics) -> String {
        let (text, _) = metrics.encode().unwrap();
        String::from_utf8(text)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("harbor_pilot_admission_duration_seconds_count "))
            .unwrap()
            .to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn through_the_real_port_the_warm_up_is_answered_but_neither_counted_nor_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let pair = pair(dir.path());
        let config = "harbor: harbor.example.com\nproxies:\n  ghcr.io: ghcr-proxy\n";
        let (warm_up, other) = (warm_up(&pair, config), warm_up(&pair, config));
        let rules = Arc::clone(&warm_up.rules);
        let pass = pass(&warm_up).unwrap();
        // Bound to 0.0.0.0: the warm-up reaches it on loopback.
        let (addr, real, _stop) = real_port(&warm_up, Some(Arc::clone(&pass))).await;
        let server = Server::RealPort {
            addr,
            pass: Arc::clone(&pass),
        };
        assert!(
            run(warm_up, server).await.unwrap(),
            "answered without a patch"
        );
        let suites = one_per_tls13_suite(&tls::provider()).len();
        let throwaway = pass.state().unwrap();
        assert_eq!(admissions(&throwaway.metrics), (2 * suites).to_string());
        assert_eq!(admissions(&real), "0", "the warm-up was counted");
        assert!(format!("{rules:?}").contains("remembered: 0"), "{rules:?}");

        // Another token, or the right one once the pass is closed: a real admission.
        let addr = on_loopback(addr);
        let wrong = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
        let client = clients(&other, Some(&wrong)).unwrap().remove(0);
        assert!(client.admit(addr, Protocol::Http2).await.unwrap());
        assert_eq!(admissions(&real), "1");
        pass.close();
        let client = clients(&other, Some(pass.token())).unwrap().remove(0);
        assert!(client.admit(addr, Protocol::Http1).await.unwrap());
        assert_eq!(admissions(&real), "2");
        assert_eq!(admissions(&throwaway.metrics), (2 * suites).to_string());
        assert!(!format!("{rules:?}").contains("remembered: 0"), "{rules:?}");
        // Closed, the pass no longer holds its state: freed with the last holder.
        assert!(pass.state().is_none());
        let freed = Arc::downgrade(&throwaway);
        drop(throwaway);
        assert!(
            freed.upgrade().is_none(),
            "the closed pass's state is still held"
        );
    }

    #[test]
    fn each_process_has_a_token_of_its_own_never_indexed_by_http2() {
        let dir = tempfile::tempdir().unwrap();
        let pair = pair(dir.path());
        let warm_up = warm_up(
            &pair,
            "harbor: harbor.example.com\nproxies: {ghcr.io: ghcr-proxy}\n",
        );
        let (first, second) = (pass(&warm_up).unwrap(), pass(&warm_up).unwrap());
        for token in [first.token(), second.token()] {
            assert_eq!(token.len(), 32, "{token:?}");
            assert!(token.is_sensitive());
        }
        assert_ne!(first.token(), second.token());
    }

    #[test]
    fn an_unspecified_address_is_reached_on_loopback_of_its_family() {
        let reached = |addr: &str| on_loopback(addr.parse().unwrap()).to_string();
        assert_eq!(reached("0.0.0.0:8443"), "127.0.0.1:8443");
        assert_eq!(reached("[::]:8443"), "[::1]:8443");
        assert_eq!(reached("10.1.2.3:8443"), "10.1.2.3:8443");
        assert_eq!(reached("127.0.0.1:9443"), "127.0.0.1:9443");
    }

    #[test]
    fn each_tls13_suite_is_offered_first_once_with_every_other_suite_after_it() {
        let provider = tls::provider();
        let all: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        let tls13: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .map(|s| s.suite())
            .collect();
        assert!(tls13.len() >= 2, "{tls13:?}");
        let offers = one_per_tls13_suite(&provider);
        let firsts: Vec<_> = offers.iter().map(|p| p.cipher_suites[0].suite()).collect();
        assert_eq!(firsts, tls13);
        for offer in &offers {
            let mut offered: Vec<_> = offer.cipher_suites.iter().map(|s| s.suite()).collect();
            offered.sort_by_key(|s| u16::from(*s));
            let mut expected = all.clone();
            expected.sort_by_key(|s| u16::from(*s));
            assert_eq!(offered, expected, "every suite offered once");
        }
    }

    #[test]
    fn the_made_up_pod_is_read_whole_and_spans_more_than_one_tls_record() {
        use harbor_pilot_core::admission::{self, Harbor, Outcome};
        use harbor_pilot_core::verdict::Verdict;
        let config = harbor_pilot_core::config::Config::from_yaml(
            "harbor: harbor.example.com\nproxies:\n  ghcr.io: ghcr-proxy\n",
        )
        .unwrap();
        let body = webhook::made_up_review(&config.rules);
        // 16 KiB is the largest TLS record: a body past it arrives in several.
        assert!(body.len() > 16 * 1024, "{} bytes", body.len());
        let incoming = admission::parse_review(&body).unwrap();
        assert_eq!(incoming.object_error, None);
        let reviewed = admission::review(
            &incoming,
            &config.rules,
            Harbor::Available,
            &harbor_pilot_core::patch::all_served,
        );
        assert_eq!(reviewed.outcome, Outcome::Rewritten);
        let rewritten: Vec<&str> = reviewed
            .changes
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Rewrite(_)))
            .map(|c| c.slot.image)
            .collect();
        let digest = "0123456789abcdef".repeat(4);
        assert_eq!(
            rewritten,
            [
                "ghcr.io/warm-up/init:1".to_owned(),
                "ghcr.io/warm-up/app:1".to_owned(),
                format!("ghcr.io/warm-up/sidecar:1@sha256:{digest}"),
            ],
            "every container but the unproxied pause, init container first"
        );
        assert_eq!(reviewed.changes.len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_limit_below_the_made_up_review_does_not_fail_the_warm_up() {
        let dir = tempfile::tempdir().unwrap();
        let pair = pair(dir.path());
        let mut warm_up = warm_up(
            &pair,
            "harbor: harbor.example.com\nproxies:\n  ghcr.io: ghcr-proxy\n",
        );
        warm_up.max_body_bytes = 1024;
        assert!(
            run(warm_up, Server::OwnPort).await.unwrap(),
            "answered without a patch"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_excluded_image_is_answered_allowed_unpatched() {
        let dir = tempfile::tempdir().unwrap();
        let pair = pair(dir.path());
        let warm_up = warm_up(
            &pair,
            "harbor: harbor.example.com\nproxies: {ghcr.io: ghcr-proxy}\nexclude: ['ghcr.io/**']\n",
        );
        assert!(
            !run(warm_up, Server::OwnPort).await.unwrap(),
            "answered with a patch"
        );
    }
}
