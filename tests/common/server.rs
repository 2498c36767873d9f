//! Starts the real webhook and admin servers in-process on 127.0.0.1, port 0, with a
//! test CA, and cleans up after.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use harbor_pilot::app::{Admin, Settings, TlsSource, Webhook};
use harbor_pilot::server::ConnectionLimits;
use harbor_pilot::tls::CertPaths;
use tempfile::TempDir;

use super::certs::{Leaf, TestCa};
use super::client::{Client, Proto};

pub struct TestServer {
    pub admin: Option<Admin>,
    pub webhook: Option<Webhook>,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub ca: TestCa,
    pub dir: TempDir,
    pub settings: Settings,
}

/// Settings for a test server whose certificate files live in `dir`.
pub fn settings(dir: &std::path::Path) -> Settings {
    Settings {
        config: super::example_config_path(),
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        tls: TlsSource::Files(CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }),
        tls_reload_interval: Duration::from_millis(100),
        max_body_bytes: 4 << 20,
        body_read_timeout: Duration::from_secs(10),
        limits: ConnectionLimits::default(),
        drain_timeout: Duration::from_secs(10),
        shutdown_delay: Duration::ZERO,
        client_ca_file: None,
        kubeconfig: None,
    }
}

pub fn write_leaf(dir: &std::path::Path, leaf: &Leaf) {
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
}

/// A running server with a fresh CA and certificate; `adjust` may change the settings.
pub async fn start(adjust: impl FnOnce(&mut Settings)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("harbor-pilot test CA");
    write_leaf(dir.path(), &ca.leaf("first"));
    let mut settings = settings(dir.path());
    adjust(&mut settings);
    let admin = Admin::start(settings.admin_addr, settings.limits, settings.drain_timeout)
        .await
        .unwrap();
    let webhook = Webhook::start(&settings, &admin).await.unwrap();
    TestServer {
        webhook_addr: webhook.addr(),
        admin_addr: admin.addr(),
        admin: Some(admin),
        webhook: Some(webhook),
        ca,
        dir,
        settings,
    }
}

impl TestServer {
    pub fn client(&self, proto: Proto) -> Client {
        Client::new(self.ca.pem.as_bytes(), proto)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub async fn stop(mut self) {
        if let Some(webhook) = self.webhook.take() {
            webhook.shutdown().await;
        }
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
    }
}

/// GET on the plain-HTTP admin port: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = http_get(addr, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A plain-HTTP/1.1 GET of `path` on `addr`: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt as _, Empty};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

/// The value of `series` (name and labels, as exposed) on the admin port's `/metrics`;
/// `None` when it is not exposed.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = admin_get(admin, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
