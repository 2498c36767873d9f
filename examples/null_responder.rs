//! The load benchmark's do-nothing answer on harbor-pilot's own server layer (rustls,
//! hyper, axum, `server::serve`): POST /mutate reads the whole review, takes its uid,
//! and allows it without a patch. Against `minimal_webhook` (the same answer straight on
//! the libraries) it shows what the server layer costs; against `harbor-pilot serve`,
//! what the review costs.
//!
//! `null_responder <ADDR> <CERT_DIR>`: serves the development certificate in CERT_DIR
//! (made if missing) until SIGTERM/SIGINT.

// An example's broken setup should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::post;
use harbor_pilot::metrics::Metrics;
use harbor_pilot::server::{self, ConnectionLimits};
use harbor_pilot::{shutdown, tls};
use serde::Deserialize;

#[derive(Deserialize)]
struct Review {
    request: Uid,
}

#[derive(Deserialize)]
struct Uid {
    uid: String,
}

async fn mutate(request: Request) -> axum::response::Response {
    let Ok(body) = axum::body::to_bytes(request.into_body(), 4 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let Ok(review) = serde_json::from_slice::<Review>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let answer = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review.request.uid, "allowed": true},
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&answer).unwrap(),
    )
        .into_response()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .expect("usage: null_responder <ADDR> <CERT_DIR>")
        .parse()
        .expect("ADDR");
    let dir = std::path::PathBuf::from(
        args.next()
            .expect("usage: null_responder <ADDR> <CERT_DIR>"),
    );
    let provider = tls::provider();
    let certs = tls::ensure_dev_certs(&dir, &provider).unwrap();
    let pair = tls::load_pair(&certs.paths, &provider).unwrap();
    let config = tls::server_config(Arc::new(tls::CertStore::new(&pair)), provider, None).unwrap();
    let listener = server::bind(addr).await.unwrap();
    eprintln!(
        "null responder listening on {}",
        listener.local_addr().unwrap()
    );
    let router = Router::new().route("/mutate", post(mutate));
    server::serve(
        listener,
        server::Transport::Tls(config, Metrics::new().unwrap()),
        server::router_service(router),
        ConnectionLimits::default(),
        async {
            shutdown::signal().await;
        },
        Duration::from_secs(5),
    )
    .await;
}
