//! A real HTTPS client for the server tests: rustls trusting a test CA, hyper over it,
//! HTTP/1.1 or HTTP/2 chosen by ALPN, and the peer certificate at hand.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

/// Which HTTP version to offer (and require) in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// A root store holding the PEM certificates in `ca_pem`.
pub fn roots(ca_pem: &[u8]) -> RootCertStore {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    roots
}

/// The answer to one request.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "reply is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    proto: Proto,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// One open connection.
pub struct Connection {
    sender: Sender,
    /// The leaf certificate the server presented.
    pub peer_leaf: CertificateDer<'static>,
}

pub type ReqBody = http_body_util::Either<Full<Bytes>, ChannelBody>;

impl Client {
    /// A client trusting the PEM certificates in `ca_pem`.
    pub fn new(ca_pem: &[u8], proto: Proto) -> Self {
        Self::with_roots(roots(ca_pem), proto)
    }

    pub fn with_roots(roots: RootCertStore, proto: Proto) -> Self {
        Self::with_identity(roots, proto, None)
    }

    /// A client that presents `identity` (certificate chain PEM, key PEM) when asked.
    pub fn with_identity(
        roots: RootCertStore,
        proto: Proto,
        identity: Option<(&str, &str)>,
    ) -> Self {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject as _;
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("client certificate PEM"),
                    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("client key PEM"),
                )
                .expect("client identity"),
        };
        // A resumed session shows the certificate of the first handshake; the tests want
        // to see what the server presents now.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![match proto {
            Proto::H1 => b"http/1.1".to_vec(),
            Proto::H2 => b"h2".to_vec(),
        }];
        Self {
            config: Arc::new(config),
            proto,
        }
    }

    /// The TLS stream alone (verifying the name `localhost`), for tests that speak
    /// HTTP by hand.
    pub async fn connect_tls(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(Arc::clone(&self.config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
    }

    /// Opens a TLS connection to `addr` (verifying the name `localhost`).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<Connection> {
        let tls = self.connect_tls(addr).await?;
        let (_, session) = tls.get_ref();
        let negotiated = session.alpn_protocol().map(<[u8]>::to_vec);
        let expected = match self.proto {
            Proto::H1 => b"http/1.1".to_vec(),
            Proto::H2 => b"h2".to_vec(),
        };
        assert_eq!(negotiated, Some(expected), "ALPN not negotiated");
        let peer_leaf = session.peer_certificates().expect("peer certificates")[0]
            .clone()
            .into_owned();
        let io = TokioIo::new(tls);
        let sender = match self.proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Proto::H2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Connection { sender, peer_leaf })
    }

    /// One request on a new connection.
    pub async fn post(
        &self,
        addr: SocketAddr,
        path: &str,
        body: Vec<u8>,
    ) -> std::io::Result<Reply> {
        self.connect(addr).await?.post(path, body).await
    }
}

impl Connection {
    /// Another handle on the same HTTP/2 connection, for concurrent streams.
    pub fn h2_stream(&self) -> Connection {
        match &self.sender {
            Sender::H2(sender) => Connection {
                sender: Sender::H2(sender.clone()),
                peer_leaf: self.peer_leaf.clone(),
            },
            Sender::H1(_) => panic!("HTTP/1.1 has one request at a time per connection"),
        }
    }

    /// Whether the server has closed the connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(sender) => sender.is_closed(),
            Sender::H2(sender) => sender.is_closed(),
        }
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> std::io::Result<Reply> {
        self.send(
            "POST",
            path,
            http_body_util::Either::Left(Full::new(Bytes::from(body))),
        )
        .await
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: ReqBody,
    ) -> std::io::Result<Reply> {
        self.send_with(method, path, &[("content-type", "application/json")], body)
            .await
    }

    pub async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> std::io::Result<Reply> {
        let mut request = Request::builder().method(method).uri(match &self.sender {
            Sender::H1(_) => path.to_owned(),
            Sender::H2(_) => format!("https://localhost{path}"),
        });
        if matches!(self.sender, Sender::H1(_)) {
            request = request.header("host", "localhost");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).expect("request");
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await.map_err(std::io::Error::other)?;
                sender.send_request(request).await
            }
            Sender::H2(sender) => {
                sender.ready().await.map_err(std::io::Error::other)?;
                sender.send_request(request).await
            }
        }
        .map_err(std::io::Error::other)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(Reply {
            status,
            content_type,
            headers,
            body,
        })
    }
}

/// A request body fed from a channel, to keep a request in flight on purpose.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new() -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(16);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
