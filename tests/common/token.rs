//! A registry token server, as Harbor's core is one (`/service/token`): it hands out an
//! anonymous pull token for the scope asked, a JWT signed (ES256) with a key whose
//! certificate the registry trusts (`auth.token.rootcertbundle`), carried in the `x5c`
//! header. Like Harbor, it maps a project-prefixed repository (`docker-hub-proxy/
//! library/nginx`) to the name the registry behind the project sees (`library/nginx`).
//!
//! Plain HTTP on 127.0.0.1; nginx in front serves it over TLS at `/service/token`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, KeyPair};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

pub const SERVICE: &str = "harbor-registry";
pub const ISSUER: &str = "harbor-token-issuer";

/// A running token server; stops when dropped.
pub struct TokenServer {
    pub addr: SocketAddr,
    /// The signing key's certificate, PEM: the registry's `rootcertbundle`.
    pub cert_pem: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    rng: ring::rand::SystemRandom,
}

impl TokenServer {
    /// Starts on a free port, in its own thread with its own runtime (the stand-in is
    /// built from synchronous tests too).
    pub fn start() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "harbor token signing");
        let cert = params.self_signed(&key).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .unwrap(),
            cert_der: cert.der().to_vec(),
            rng,
        });
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let (ready, addr) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
        let task = handle.spawn(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let signer = Arc::clone(&signer);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::Relaxed);
                            let body = signer.answer(request.uri().query().unwrap_or_default());
                            async move {
                                Ok::<_, hyper::Error>(
                                    Response::builder()
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self {
            addr: addr.recv().unwrap(),
            cert_pem: cert.pem(),
            requests,
            task,
        }
    }

    /// Tokens handed out so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Signer {
    /// The token for `scope=repository:<project>/<path>:pull` in `query`.
    fn answer(&self, query: &str) -> String {
        let scope = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("scope="))
            .map(percent_decode)
            .unwrap_or_default();
        let mut access = Vec::new();
        if let Some(rest) = scope.strip_prefix("repository:")
            && let Some((name, actions)) = rest.rsplit_once(':')
        {
            // Harbor's project is the first component; the registry behind it sees
            // the rest.
            let inner = name.split_once('/').map_or(name, |(_, inner)| inner);
            access.push(json!({"type": "repository", "name": inner,
                               "actions": actions.split(',').collect::<Vec<_>>()}));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = json!({"typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = json!({"iss": ISSUER, "sub": "", "aud": SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scope.len()), "access": access});
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).unwrap();
        let token = format!("{signing_input}.{}", b64(signature.as_ref()));
        json!({"token": token, "access_token": token, "expires_in": 300}).to_string()
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
