//! Certificate loading and rotation against the real server: a client sends requests
//! without pause while the files change, and must see no failure and, afterwards, the
//! new certificate.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::certs::{Leaf, TestCa, leaf_der};
use common::client::{Client, Proto};
use common::server::{self, admin_get};
use harbor_pilot::app::{Admin, TlsSource, Webhook};
use harbor_pilot::tls::CertPaths;

/// Requests sent without pause, alternating HTTP/2 and HTTP/1.1, each on a new
/// connection so every request shows the certificate served at that moment.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr, ca_pem: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clients = [
            Client::new(ca_pem.as_bytes(), Proto::H2),
            Client::new(ca_pem.as_bytes(), Proto::H1),
        ];
        let (file, body) = common::admission_fixtures().swap_remove(47);
        let task = {
            let (stop, sent, failures, seen) =
                (stop.clone(), sent.clone(), failures.clone(), seen.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let client = &clients[n % 2];
                    n += 1;
                    let result = async {
                        let mut conn = client.connect(addr).await?;
                        let reply = conn.post("/mutate", body.clone()).await?;
                        Ok::<_, std::io::Error>((conn.peer_leaf.to_vec(), reply))
                    }
                    .await;
                    match result {
                        Ok((leaf, reply)) if reply.status == 200 => {
                            if let Err(e) = common::verify_answer(&file, &body, &reply.json()) {
                                failures.lock().unwrap().push(e);
                            }
                            let mut seen = seen.lock().unwrap();
                            if seen.last() != Some(&leaf) {
                                seen.push(leaf);
                            }
                        }
                        Ok((_, reply)) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {}", reply.status)),
                        Err(error) => failures.lock().unwrap().push(error.to_string()),
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self {
            stop,
            sent,
            failures,
            seen,
            task,
        }
    }

    /// Waits (up to 20 s) until a request was served with `leaf`.
    async fn wait_for(&self, leaf: &Leaf) {
        let want = leaf_der(&leaf.cert_pem);
        for _ in 0..400 {
            if self.seen.lock().unwrap().contains(&want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let failures = self.failures.lock().unwrap();
        panic!(
            "the new certificate was never served; {} certificates seen, {} requests sent, {} failed, first failures: {:?}",
            self.seen.lock().unwrap().len(),
            self.sent.load(Ordering::Relaxed),
            failures.len(),
            failures.iter().take(3).collect::<Vec<_>>()
        );
    }

    /// Stops and returns (requests sent, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// The layout the kubelet gives a Secret volume: the files are symlinks through
/// `..data`, itself a symlink to a timestamped directory that is replaced atomically.
struct SecretVolume {
    dir: tempfile::TempDir,
    generation: usize,
}

impl SecretVolume {
    fn new(leaf: &Leaf) -> Self {
        let mut volume = Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        volume.project(leaf);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(
                Path::new("..data").join(name),
                volume.dir.path().join(name),
            )
            .unwrap();
        }
        volume
    }

    /// Writes `leaf` into a new timestamped directory and swaps `..data` to it.
    fn project(&mut self, leaf: &Leaf) {
        self.generation += 1;
        let root = self.dir.path();
        let generation = format!(
            "..2026_11_24_00_00_{:02}.{}",
            self.generation,
            std::process::id()
        );
        std::fs::create_dir(root.join(&generation)).unwrap();
        server::write_leaf(&root.join(&generation), leaf);
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&generation, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    }

    fn paths(&self) -> CertPaths {
        CertPaths {
            cert: self.dir.path().join("tls.crt"),
            key: self.dir.path().join("tls.key"),
        }
    }
}

async fn start_with(paths: CertPaths) -> (Admin, Webhook) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = server::settings(dir.path());
    settings.tls = TlsSource::Files(paths);
    let admin = Admin::start(settings.admin_addr, settings.limits, settings.drain_timeout)
        .await
        .unwrap();
    let webhook = Webhook::start(&settings, &admin).await.unwrap();
    (admin, webhook)
}

fn reloads(metrics: &str, result: &str) -> f64 {
    let series = format!("harbor_pilot_tls_reloads_total{{result=\"{result}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_symlink_swap_is_picked_up_without_a_failed_request() {
    let ca = TestCa::new("rotation CA");
    let first = ca.leaf("first");
    let mut volume = SecretVolume::new(&first);
    let (admin, webhook) = start_with(volume.paths()).await;
    let traffic = Traffic::start(webhook.addr(), &ca.pem);
    traffic.wait_for(&first).await;

    let second = ca.leaf("second");
    volume.project(&second);
    traffic.wait_for(&second).await;
    let third = ca.leaf("third");
    volume.project(&third);
    traffic.wait_for(&third).await;

    let (sent, failures) = traffic.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 10, "only {sent} requests");
    let (_, metrics) = admin_get(admin.addr(), "/metrics").await;
    assert_eq!(reloads(&metrics, "success"), 2.0);
    webhook.shutdown().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_write_is_picked_up_without_a_failed_request() {
    let ca = TestCa::new("rotation CA");
    let first = ca.leaf("first");
    let dir = tempfile::tempdir().unwrap();
    server::write_leaf(dir.path(), &first);
    let paths = CertPaths {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (admin, webhook) = start_with(paths).await;
    let traffic = Traffic::start(webhook.addr(), &ca.pem);
    traffic.wait_for(&first).await;

    for name in ["second", "third", "fourth"] {
        let next = ca.leaf(name);
        // Two separate writes: a reload may see the new certificate with the old key.
        std::fs::write(dir.path().join("tls.crt"), &next.cert_pem).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(dir.path().join("tls.key"), &next.key_pem).unwrap();
        traffic.wait_for(&next).await;
    }

    let (sent, failures) = traffic.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:?}",
        failures.len()
    );
    let (_, metrics) = admin_get(admin.addr(), "/metrics").await;
    assert_eq!(reloads(&metrics, "success"), 3.0);
    // The half-written pairs were refused, counted, and never served.
    assert!(reloads(&metrics, "error") >= 1.0);
    webhook.shutdown().await;
    admin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_keeps_the_last_good_certificate() {
    let ca = TestCa::new("garbage CA");
    let good = ca.leaf("good");
    let dir = tempfile::tempdir().unwrap();
    server::write_leaf(dir.path(), &good);
    let paths = CertPaths {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let (admin, webhook) = start_with(paths).await;

    std::fs::write(
        dir.path().join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    let mut errors = 0.0;
    for _ in 0..200 {
        errors = reloads(&admin_get(admin.addr(), "/metrics").await.1, "error");
        if errors >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(errors, 1.0, "the broken pair was not reported once");
    // Still the good one, and still answering.
    let client = Client::new(ca.pem.as_bytes(), Proto::H2);
    let mut conn = client.connect(webhook.addr()).await.unwrap();
    assert_eq!(conn.peer_leaf.to_vec(), leaf_der(&good.cert_pem));
    let (file, body) = common::admission_fixtures().swap_remove(3);
    let reply = conn.post("/mutate", body.clone()).await.unwrap();
    common::verify_answer(&file, &body, &reply.json()).unwrap();
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reloads(&admin_get(admin.addr(), "/metrics").await.1, "error"),
        1.0
    );
    webhook.shutdown().await;
    admin.stop().await;
}

/// Runs the openssl command-line tool; its absence is a clear failure.
fn openssl(args: &[&str], input_dir: &Path) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(input_dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "openssl not found ({e}): install Debian's `openssl` package (scripts/test does)"
            )
        });
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A leaf for a key made by openssl, written in `key_pem`'s encoding.
fn leaf_for_openssl_key(ca: &TestCa, dir: &Path, generate: &[&str], to_pkcs8: &[&str]) -> Leaf {
    let key_pem = String::from_utf8(openssl(generate, dir)).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let pkcs8 = String::from_utf8(openssl(to_pkcs8, dir)).unwrap();
    let key = rcgen::KeyPair::from_pem(&pkcs8).unwrap();
    let leaf = ca.sign_for(&key, "openssl key");
    Leaf {
        cert_pem: leaf,
        key_pem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_chains_and_pkcs8_pkcs1_and_sec1_keys() {
    let ca = TestCa::new("encodings CA");
    let work = tempfile::tempdir().unwrap();
    let pkcs1 = leaf_for_openssl_key(
        &ca,
        work.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "PEM",
        ],
        &["pkey", "-in", "key.pem", "-outform", "PEM"],
    );
    // `-traditional` writes PKCS#1 ("RSA PRIVATE KEY").
    let pkcs1 = Leaf {
        key_pem: {
            std::fs::write(work.path().join("key.pem"), &pkcs1.key_pem).unwrap();
            String::from_utf8(openssl(
                &["pkey", "-in", "key.pem", "-traditional"],
                work.path(),
            ))
            .unwrap()
        },
        ..pkcs1
    };
    assert!(
        pkcs1.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "{}",
        pkcs1.key_pem
    );
    let sec1 = leaf_for_openssl_key(
        &ca,
        work.path(),
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        &["pkcs8", "-topk8", "-nocrypt", "-in", "key.pem"],
    );
    assert!(
        sec1.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "{}",
        sec1.key_pem
    );
    let pkcs8 = ca.leaf("pkcs8");
    assert!(pkcs8.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let (intermediate, intermediate_pem) = ca.intermediate("intermediate CA");
    let chained = intermediate.leaf("chained");
    let chained = Leaf {
        cert_pem: format!("{}{}", chained.cert_pem, intermediate_pem),
        ..chained
    };

    for (name, leaf) in [
        ("PKCS#1", pkcs1),
        ("SEC1", sec1),
        ("PKCS#8", pkcs8),
        ("chain", chained),
    ] {
        let dir = tempfile::tempdir().unwrap();
        server::write_leaf(dir.path(), &leaf);
        let (admin, webhook) = start_with(CertPaths {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        })
        .await;
        // The client trusts only the root: the chain must be served whole.
        for proto in [Proto::H1, Proto::H2] {
            let client = Client::new(ca.pem.as_bytes(), proto);
            let conn = client
                .connect(webhook.addr())
                .await
                .unwrap_or_else(|e| panic!("{name} over {proto:?}: {e}"));
            assert_eq!(conn.peer_leaf.to_vec(), leaf_der(&leaf.cert_pem), "{name}");
        }
        webhook.shutdown().await;
        admin.stop().await;
    }
}
