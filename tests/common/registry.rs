//! A Harbor stand-in made of real parts (see TEST-INFRA notes): an upstream
//! `docker-registry` with TLS playing docker.io, a second one as pull-through cache, and
//! nginx in front with TLS, Harbor's project prefix (`/v2/docker-hub-proxy/…`) and
//! Harbor's `/api/v2.0/ping` and `/api/v2.0/health`. Every process is killed by its PID
//! when the stand-in is dropped, also when a test fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;

use super::certs::TestCa;
use super::client::{Client, Proto};
use super::process::{Proc, start_with_retry, wait_listening};

pub const PROJECT: &str = "docker-hub-proxy";
const ACCEPT_MANIFESTS: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The stand-in. `harbor()` is its `host:port`.
pub struct HarborStandIn {
    pub dir: TempDir,
    pub ca: TestCa,
    upstream_port: u16,
    proxy_port: u16,
    pub harbor_port: u16,
    upstream: Option<Proc>,
    _proxy: Proc,
    nginx: Option<Proc>,
    hang: Option<(HangProbe, std::thread::JoinHandle<()>)>,
    /// With token authentication: the token server (Harbor's core).
    pub token: Option<super::token::TokenServer>,
}

impl HarborStandIn {
    /// Starts the upstream, the proxy and nginx, with Harbor reporting every component
    /// healthy.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// [`HarborStandIn::start`], with the proxy asking for registry tokens (`auth:
    /// token`) as Harbor does: a `401` with a Bearer challenge whose realm is
    /// `https://<harbor>/service/token`, served by a [`super::token::TokenServer`].
    pub fn start_with_token_auth() -> Self {
        Self::start_with(true)
    }

    fn start_with(token_auth: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("harbor stand-in CA");
        let leaf = ca.leaf("harbor");
        for (name, contents) in [
            ("ca.crt", &ca.pem),
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
        ] {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        for sub in ["upstream", "proxy", "www", "nginx"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let root = dir.path().to_owned();
        // nginx's port is needed in the proxy's token realm, before nginx starts.
        let harbor_port = super::process::free_port();
        let token = token_auth.then(super::token::TokenServer::start);
        let auth = match &token {
            Some(token) => {
                std::fs::write(root.join("token.crt"), &token.cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: https://127.0.0.1:{harbor_port}/service/token\n    \
                     service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    super::token::SERVICE,
                    super::token::ISSUER,
                    root.join("token.crt").display()
                )
            }
            None => String::new(),
        };
        let (upstream, upstream_port) = start_with_retry("docker-registry", |port| {
            let config = root.join("upstream.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
                     http:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {}, key: {}}}\n",
                    root.join("upstream").display(),
                    root.join("tls.crt").display(),
                    root.join("tls.key").display()
                ),
            )
            .unwrap();
            let mut command = Command::new("docker-registry");
            command.arg("serve").arg(&config);
            (command, root.join("upstream.log"))
        });
        let (proxy, proxy_port) = start_with_retry("docker-registry", |port| {
            let config = root.join("proxy.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\n\
                     http: {{addr: 127.0.0.1:{port}}}\nproxy: {{remoteurl: \"https://127.0.0.1:{upstream_port}\"}}\n{auth}",
                    root.join("proxy").display()
                ),
            )
            .unwrap();
            let mut command = Command::new("docker-registry");
            // Go reads the trust store for the proxy's upstream from here.
            command
                .arg("serve")
                .arg(&config)
                .env("SSL_CERT_FILE", root.join("ca.crt"));
            (command, root.join("proxy.log"))
        });
        let mut standin = Self {
            dir,
            ca,
            upstream_port,
            proxy_port,
            harbor_port,
            upstream: Some(upstream),
            _proxy: proxy,
            nginx: None,
            hang: None,
            token,
        };
        standin.set_health(Some(&healthy_except(&[])));
        let (mut command, log) = standin.nginx_command(harbor_port);
        let mut nginx = Proc::spawn("nginx", &mut command, &log);
        assert!(
            wait_listening(&mut nginx, harbor_port, &log),
            "nginx did not start on {harbor_port}"
        );
        standin.nginx = Some(nginx);
        standin
    }

    fn nginx_command(&self, port: u16) -> (Command, PathBuf) {
        let root = self.dir.path();
        let config = root.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                r#"daemon off;
master_process off;
pid {root}/nginx/nginx.pid;
error_log {root}/nginx/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {root}/nginx/access.log;
  client_body_temp_path {root}/nginx/body;
  proxy_temp_path {root}/nginx/proxy;
  fastcgi_temp_path {root}/nginx/fastcgi;
  uwsgi_temp_path {root}/nginx/uwsgi;
  scgi_temp_path {root}/nginx/scgi;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {root}/tls.crt;
    ssl_certificate_key {root}/tls.key;
    location = /api/v2.0/ping {{ default_type text/plain; return 200 "Pong"; }}
    location = /api/v2.0/health {{ default_type application/json; root {root}/www; try_files /health.json =503; }}
    location = /service/token {{ {token} }}
    location ~ ^/v2/{PROJECT}/(.*)$ {{ proxy_pass http://127.0.0.1:{proxy}/v2/$1$is_args$args; }}
    location /v2/ {{ proxy_pass http://127.0.0.1:{proxy}; }}
  }}
}}
"#,
                root = root.display(),
                proxy = self.proxy_port,
                token = match &self.token {
                    Some(token) => format!("proxy_pass http://{}/token$is_args$args;", token.addr),
                    None => "return 404;".to_owned(),
                },
            ),
        )
        .unwrap();
        let mut command = Command::new("nginx");
        command
            .arg("-c")
            .arg(&config)
            .arg("-p")
            .arg(root.join("nginx"));
        (command, root.join("nginx/stderr.log"))
    }

    /// `host:port` of the stand-in, as pods would write it.
    pub fn harbor(&self) -> String {
        format!("127.0.0.1:{}", self.harbor_port)
    }

    /// The URL of one of Harbor's endpoints.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.harbor())
    }

    /// Writes `/api/v2.0/health`'s answer; `None` makes it answer 503.
    pub fn set_health(&self, json: Option<&str>) {
        let path = self.dir.path().join("www/health.json");
        match json {
            // Written aside and renamed, so nginx never serves half a file.
            Some(json) => {
                let tmp = self.dir.path().join("www/.health.json");
                std::fs::write(&tmp, json).unwrap();
                std::fs::rename(tmp, path).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Stops the upstream registry ("docker.io" is down): what the cache holds is all
    /// Harbor can serve.
    pub fn stop_upstream(&mut self) {
        self.upstream = None;
    }

    /// Waits, at most 30 s, until the pull-through cache holds blob `digest` of
    /// `repository` (as the cache names it: `library/app`). docker-registry's proxy
    /// stores a blob it serves in a goroutine of its own, which fetches the blob from
    /// the upstream a second time, so a client's pull can end before the cache holds
    /// what was pulled (Harbor, too, caches after serving); on a loaded machine the
    /// upstream was once stopped in between. A blob never pulled is never cached: this
    /// fails then, naming it.
    pub async fn wait_until_cached(&self, repository: &str, digest: &str) {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        // The repository's link to the blob is written after the blob itself: once it
        // exists, the cache serves the blob without the upstream.
        let link = self
            .dir
            .path()
            .join("proxy/docker/registry/v2/repositories")
            .join(repository)
            .join("_layers/sha256")
            .join(hex)
            .join("link");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !link.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the cache did not store {repository}@{digest} within 30 s (no {})",
                link.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills nginx: Harbor is down, connections are refused.
    pub fn stop(&mut self) {
        self.nginx = None;
    }

    /// Starts nginx again on the same port.
    pub fn restart(&mut self) {
        self.stop_hanging();
        let (mut command, log) = self.nginx_command(self.harbor_port);
        let mut nginx = Proc::spawn("nginx", &mut command, &log);
        assert!(
            wait_listening(&mut nginx, self.harbor_port, &log),
            "nginx did not come back"
        );
        self.nginx = Some(nginx);
    }

    /// Replaces nginx by a listener on the same port that accepts connections and never
    /// answers. Returns a counter of connections accepted and a flag that is true while
    /// the first one is still open.
    pub fn hang(&mut self) -> HangProbe {
        self.stop();
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.harbor_port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = HangProbe::default();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(true).unwrap();
                        held.push(stream);
                        shared
                            .accepted
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                // A held connection that reads EOF was closed by the prober.
                let open = held.iter().filter(|s| {
                    let mut buf = [0u8; 1];
                    !matches!(std::io::Read::read(&mut &**s, &mut buf), Ok(0))
                });
                shared
                    .open
                    .store(open.count(), std::sync::atomic::Ordering::Relaxed);
            }
            // Dropping the listener and the held connections frees the port.
        });
        self.hang = Some((state.clone(), thread));
        state
    }

    fn stop_hanging(&mut self) {
        if let Some((state, thread)) = self.hang.take() {
            state.stop();
            let _ = thread.join();
        }
    }

    /// Pushes a small real image (one uncompressed tar layer holding one file) to the
    /// upstream as `repository:tag`; returns the manifest digest.
    pub async fn push_image(&self, repository: &str, tag: &str) -> String {
        let pushed = self
            .push_platform_image(repository, "amd64", b"pulled through harbor-pilot\n")
            .await;
        self.push_manifest(
            repository,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &pushed.manifest,
        )
        .await
    }

    /// Pushes a multi-platform image (an OCI index of a linux/amd64 and a linux/arm64
    /// image, each a config and a layer of its own) as `repository:tag`.
    pub async fn push_index(&self, repository: &str, tag: &str) -> PushedIndex {
        let mut platforms = Vec::new();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let contents = format!("{arch} build of {repository}:{tag}\n").repeat(2000);
            let image = self
                .push_platform_image(repository, arch, contents.as_bytes())
                .await;
            let digest = self
                .push_manifest(
                    repository,
                    &sha256(&image.manifest),
                    "application/vnd.oci.image.manifest.v1+json",
                    &image.manifest,
                )
                .await;
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": image.manifest.len(),
                "platform": {"os": "linux", "architecture": arch},
            }));
            platforms.push(image);
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap();
        let digest = self
            .push_manifest(
                repository,
                tag,
                "application/vnd.oci.image.index.v1+json",
                &index,
            )
            .await;
        PushedIndex {
            digest,
            index,
            platforms,
        }
    }

    /// Pushes a config and a one-file layer for `arch`; the manifest is not pushed.
    async fn push_platform_image(
        &self,
        repository: &str,
        arch: &str,
        contents: &[u8],
    ) -> PushedImage {
        let layer = tar_with_one_file("hello.txt", contents);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }))
        .unwrap();
        for blob in [&layer, &config] {
            self.push_blob(repository, blob).await;
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
        }))
        .unwrap();
        PushedImage {
            manifest,
            blobs: vec![(sha256(&config), config), (sha256(&layer), layer)],
        }
    }

    async fn push_blob(&self, repository: &str, blob: &[u8]) {
        let client = Client::new(self.ca.pem.as_bytes(), Proto::H1);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.upstream_port).parse().unwrap();
        let mut conn = client.connect(addr).await.unwrap();
        let started = conn
            .send_with(
                "POST",
                &format!("/v2/{repository}/blobs/uploads/"),
                &[],
                empty(),
            )
            .await
            .unwrap();
        assert_eq!(started.status, 202, "blob upload: {:?}", started.body);
        let location = started.headers["location"].to_str().unwrap().to_owned();
        let location =
            location.trim_start_matches(&format!("https://127.0.0.1:{}", self.upstream_port));
        let separator = if location.contains('?') { '&' } else { '?' };
        let mut conn = client.connect(addr).await.unwrap();
        let put = conn
            .send_with(
                "PUT",
                &format!("{location}{separator}digest={}", sha256(blob)),
                &[("content-type", "application/octet-stream")],
                full(blob.to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(put.status, 201, "blob put: {:?}", put.body);
    }

    /// Pushes a manifest as `reference`; its digest.
    async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        manifest: &[u8],
    ) -> String {
        let client = Client::new(self.ca.pem.as_bytes(), Proto::H1);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.upstream_port).parse().unwrap();
        let mut conn = client.connect(addr).await.unwrap();
        let put = conn
            .send_with(
                "PUT",
                &format!("/v2/{repository}/manifests/{reference}"),
                &[("content-type", media_type)],
                full(manifest.to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(put.status, 201, "manifest put: {:?}", put.body);
        let digest = sha256(manifest);
        assert_eq!(
            put.headers["docker-content-digest"].to_str().unwrap(),
            digest
        );
        digest
    }

    /// `GET /v2/<PROJECT>/<path>` through the stand-in as a runtime does it (with a
    /// token when it asks for one, fetched by the test itself); status and body.
    pub async fn get_through_harbor(&self, path: &str) -> (u16, Vec<u8>) {
        let client = Client::new(self.ca.pem.as_bytes(), Proto::H1);
        let addr: SocketAddr = self.harbor().parse().unwrap();
        let url = format!("/v2/{PROJECT}/{path}");
        let mut conn = client.connect(addr).await.unwrap();
        let reply = conn
            .send_with("GET", &url, &[("accept", ACCEPT_MANIFESTS)], empty())
            .await
            .unwrap();
        if reply.status != 401 {
            return (reply.status.as_u16(), reply.body.to_vec());
        }
        let token_server = self.token.as_ref().expect("a 401 without token auth");
        let repository = path.split("/manifests/").next().unwrap();
        let repository = repository.split("/blobs/").next().unwrap();
        let scope = format!("repository:{PROJECT}/{repository}:pull");
        let (_, token_client) = super::server::http_get(
            token_server.addr,
            &format!(
                "/token?service={}&scope={}",
                super::token::SERVICE,
                scope.replace(':', "%3A").replace('/', "%2F")
            ),
        )
        .await;
        let token: serde_json::Value = serde_json::from_slice(&token_client).unwrap();
        let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
        let mut conn = client.connect(addr).await.unwrap();
        let reply = conn
            .send_with(
                "GET",
                &url,
                &[
                    ("accept", ACCEPT_MANIFESTS),
                    ("authorization", bearer.as_str()),
                ],
                empty(),
            )
            .await
            .unwrap();
        (reply.status.as_u16(), reply.body.to_vec())
    }

    /// `HEAD /v2/<path>/manifests/<tag or digest>` on the stand-in, with the Accept
    /// header a container runtime sends; returns the status and `Docker-Content-Digest`.
    pub async fn head_manifest(&self, path: &str, reference: &str) -> (u16, Option<String>) {
        let client = Client::new(self.ca.pem.as_bytes(), Proto::H2);
        let addr: SocketAddr = self.harbor().parse().unwrap();
        let mut conn = client.connect(addr).await.unwrap();
        let reply = conn
            .send_with(
                "HEAD",
                &format!("/v2/{path}/manifests/{reference}"),
                &[("accept", ACCEPT_MANIFESTS)],
                empty(),
            )
            .await
            .unwrap();
        let digest = reply
            .headers
            .get("docker-content-digest")
            .map(|v| v.to_str().unwrap().to_owned());
        (reply.status.as_u16(), digest)
    }

    /// How many `/api/v2.0/health` requests nginx has logged.
    pub fn health_requests(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("nginx/access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("/api/v2.0/health"))
            .count()
    }
}

impl Drop for HarborStandIn {
    fn drop(&mut self) {
        self.stop_hanging();
    }
}

/// A platform image as pushed: its manifest and blobs (digest, bytes).
pub struct PushedImage {
    pub manifest: Vec<u8>,
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// A multi-platform image as pushed.
pub struct PushedIndex {
    pub digest: String,
    pub index: Vec<u8>,
    pub platforms: Vec<PushedImage>,
}

/// Observes the listener that plays a hanging Harbor.
#[derive(Clone, Default)]
pub struct HangProbe {
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HangProbe {
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A `/api/v2.0/health` answer with every Harbor component healthy except `unhealthy`
/// (which may name components Harbor does not list, like `trivy`, to add them).
pub fn healthy_except(unhealthy: &[&str]) -> String {
    let mut names = vec![
        "core",
        "database",
        "jobservice",
        "portal",
        "redis",
        "registry",
        "registryctl",
    ];
    for extra in unhealthy {
        if !names.contains(extra) {
            names.push(extra);
        }
    }
    let components: Vec<_> = names
        .iter()
        .map(|name| {
            if unhealthy.contains(name) {
                serde_json::json!({"name": name, "status": "unhealthy", "error": "test says so"})
            } else {
                serde_json::json!({"name": name, "status": "healthy"})
            }
        })
        .collect();
    let overall = if unhealthy.is_empty() {
        "healthy"
    } else {
        "unhealthy"
    };
    serde_json::json!({"status": overall, "components": components}).to_string()
}

fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A POSIX tar archive with one regular file.
fn tar_with_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: usize| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], contents.len());
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let checksum: usize = header.iter().map(|b| usize::from(*b)).sum();
    let text = format!("{checksum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    let mut archive = header.to_vec();
    archive.extend_from_slice(contents);
    archive.resize(archive.len().div_ceil(512) * 512, 0);
    archive.extend_from_slice(&[0u8; 1024]);
    archive
}

fn empty() -> super::client::ReqBody {
    http_body_util::Either::Left(http_body_util::Full::new(Bytes::new()))
}

fn full(data: Vec<u8>) -> super::client::ReqBody {
    http_body_util::Either::Left(http_body_util::Full::new(Bytes::from(data)))
}
