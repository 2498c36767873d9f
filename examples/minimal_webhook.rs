//! The load benchmark's ceiling: a do-nothing mutating webhook written directly on the
//! libraries harbor-pilot uses — tokio, rustls (tokio-rustls), hyper and hyper-util's
//! auto builder (HTTP/1.1 and HTTP/2 on one port), serde_json — and nothing of
//! harbor-pilot's own server layer. `TCP_NODELAY`; 1 MiB HTTP/2 stream windows. It
//! deserialises the whole body into a struct that keeps only `request.uid` (so every
//! byte of the JSON is still validated) and answers `allowed: true` without a patch.
//!
//! `minimal_webhook <ADDR> <CERT_FILE> <KEY_FILE>`: serves until killed.

// An example's broken setup should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Review {
    request: Uid,
}

#[derive(Deserialize)]
struct Uid {
    uid: String,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Allowed<'a>,
}

#[derive(serde::Serialize)]
struct Allowed<'a> {
    uid: &'a str,
    allowed: bool,
}

async fn mutate(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let Ok(body) = request.into_body().collect().await else {
        return Ok(reply(StatusCode::BAD_REQUEST, Vec::new()));
    };
    let Ok(review) = serde_json::from_slice::<Review>(&body.to_bytes()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, Vec::new()));
    };
    let answer = Answer {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: Allowed {
            uid: &review.request.uid,
            allowed: true,
        },
    };
    Ok(reply(StatusCode::OK, serde_json::to_vec(&answer).unwrap()))
}

#[tokio::main]
async fn main() {
    let usage = "usage: minimal_webhook <ADDR> <CERT_FILE> <KEY_FILE>";
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args.next().expect(usage).parse().expect("ADDR");
    let cert_file = args.next().expect(usage);
    let key_file = args.next().expect(usage);
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&key_file).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(1 << 20);
    let builder = Arc::new(builder);

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    eprintln!(
        "minimal webhook listening on {}",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        stream.set_nodelay(true).unwrap();
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(mutate);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
