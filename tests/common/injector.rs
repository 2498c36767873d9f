//! A second mutating webhook for the API server tests: a sidecar injector that adds a
//! container with a Docker Hub image to every Pod that has none named `sidecar`, the
//! way service meshes and log shippers do. It runs after harbor-pilot (its
//! configuration's name sorts later), so the API server must call harbor-pilot again
//! (`reinvocationPolicy: IfNeeded`) for the sidecar to be rewritten.
//!
//! A plain HTTPS server: rustls (ring), hyper over HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::certs::TestCa;

/// The container the injector adds.
pub const SIDECAR: &str = "sidecar";

/// A running injector; stops when dropped.
pub struct Injector {
    pub addr: SocketAddr,
    pub ca: TestCa,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Injector {
    /// Serves on 127.0.0.1 (a random port); injects `image`.
    pub async fn start(image: &str) -> Self {
        let ca = TestCa::new("sidecar injector CA");
        let leaf = ca.leaf("injector");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let image = image.to_owned();
        let counter = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let image = image.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        answer(request, image.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca,
            calls,
            task,
        }
    }

    /// `https://127.0.0.1:<port>/inject`
    pub fn url(&self) -> String {
        format!("https://{}/inject", self.addr)
    }

    /// How many reviews it has answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    image: String,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let uid = review["request"]["uid"].clone();
    let has_sidecar = review["request"]["object"]["spec"]["containers"]
        .as_array()
        .is_some_and(|containers| containers.iter().any(|c| c["name"] == SIDECAR));
    let mut response = json!({"uid": uid, "allowed": true});
    if !has_sidecar {
        let patch = json!([{"op": "add", "path": "/spec/containers/-",
                            "value": {"name": SIDECAR, "image": image}}]);
        response["patchType"] = json!("JSONPatch");
        response["patch"] =
            json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string().as_bytes()));
    }
    let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": response});
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(out.to_string())))
        .unwrap())
}
