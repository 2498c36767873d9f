//! harbor-pilot under a real API server: its serving files laid out as a kubelet Secret
//! volume ([`Pilot`]), and a control plane with the webhook registered from
//! `manifests/base` ([`ClusterEnv`]), with the helpers the API server tests share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::certs::TestCa;
use super::cluster::Cluster;
use super::process::Serve;

/// The namespace whose dry-run Pods tell which webhook is in effect.
pub const PROBE_NS: &str = "probe";

/// A `harbor-pilot serve` whose certificate files are laid out as a kubelet Secret
/// volume (`tls.crt -> ..data/tls.crt`, `..data -> ..<version>`), so that installing a
/// new pair is one atomic rename, as when the kubelet updates a mounted Secret.
pub struct Pilot {
    pub serve: Serve,
    /// What a `caBundle` for it holds.
    pub ca_pem: String,
    certs: tempfile::TempDir,
    pub url: String,
    version: usize,
}

impl Pilot {
    /// A series from its `/metrics` (0 when absent: counters with labels appear only once
    /// counted).
    pub async fn metric(&mut self, series: &str) -> f64 {
        let admin = self
            .serve
            .addr("admin port listening (/livez, /readyz, /metrics)");
        super::server::metric(admin, series).await.unwrap_or(0.0)
    }

    /// With a certificate from a CA of its own.
    pub fn start(config: &Path, extra: &[&str]) -> Self {
        let ca = TestCa::new("harbor-pilot e2e CA");
        let leaf = ca.leaf("harbor-pilot e2e");
        Self::start_with(config, (&leaf.cert_pem, &leaf.key_pem), &ca.pem, extra)
    }

    /// With the pair `(cert, key)`, which `ca_pem` verifies.
    pub fn start_with(config: &Path, pair: (&str, &str), ca_pem: &str, extra: &[&str]) -> Self {
        let certs = tempfile::tempdir().unwrap();
        Self::write_version(certs.path(), 0, pair);
        let cert = certs.path().join("tls.crt");
        let key = certs.path().join("tls.key");
        let mut args = vec![
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-reload-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let mut serve = Serve::start_with_config(config, &args);
        let addr = serve.addr("webhook listening");
        Self {
            serve,
            ca_pem: ca_pem.to_owned(),
            certs,
            url: format!("https://{addr}/mutate"),
            version: 0,
        }
    }

    fn write_version(dir: &Path, version: usize, (cert, key): (&str, &str)) {
        let versioned = dir.join(format!("..v{version}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("tls.crt"), cert).unwrap();
        std::fs::write(versioned.join("tls.key"), key).unwrap();
        let tmp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            let link = dir.join(name);
            if !link.exists() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
    }

    /// Installs a new pair, as the kubelet does when the Secret changes.
    pub fn install(&mut self, cert: &str, key: &str) {
        self.version += 1;
        Self::write_version(self.certs.path(), self.version, (cert, key));
    }

    /// How many reloads it has logged.
    pub fn reloads(&mut self) -> usize {
        self.serve
            .drain_logs()
            .iter()
            .filter(|l| l["message"] == "serving certificate reloaded")
            .count()
    }
}

/// A control plane, a kube client, and the webhook configuration rendered from
/// `manifests/base`, registered with only `clientConfig` replaced.
pub struct ClusterEnv {
    pub cluster: Cluster,
    pub client: kube::Client,
    /// The webhook configuration as rendered from manifests/base.
    pub rendered: Value,
    /// Where the registered configuration points now ("" when not registered).
    pub pointed_at: String,
}

impl ClusterEnv {
    /// Wraps `cluster`; creates the probe namespace (opted in).
    pub async fn new(cluster: Cluster) -> Self {
        let client = cluster.client().await;
        let env = Self {
            cluster,
            client,
            rendered: rendered_webhook_configuration(),
            pointed_at: String::new(),
        };
        env.namespace(PROBE_NS, &[("harbor-pilot.io/rewrite", "enabled")])
            .await;
        env
    }

    /// The rendered configuration with `clientConfig` replaced: `url` and `caBundle`.
    pub fn configuration(&self, url: &str, ca_pem: &str) -> MutatingWebhookConfiguration {
        let mut value = self.rendered.clone();
        for webhook in value["webhooks"].as_array_mut().unwrap() {
            webhook["clientConfig"] = json!({
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            });
        }
        serde_json::from_value(value).unwrap()
    }

    /// Points the registered configuration at another server (the API server picks the
    /// change up through its informer, within a second or so).
    pub async fn point_webhook_at(&mut self, url: &str, ca_pem: &str) {
        let api = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        let mut wanted = self.configuration(url, ca_pem);
        match api.get_opt("harbor-pilot").await.unwrap() {
            Some(current) => {
                wanted.metadata.resource_version = current.metadata.resource_version;
                api.replace("harbor-pilot", &PostParams::default(), &wanted)
                    .await
                    .unwrap();
            }
            None => {
                api.create(&PostParams::default(), &wanted).await.unwrap();
            }
        }
        self.pointed_at = url.to_owned();
    }

    /// Dry-runs a Pod with `nginx:alpine` in the probe namespace until `done(image)`
    /// holds for the image the API server returns (up to 60 s).
    pub async fn wait_for_probe(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let pod = self
                .pods(PROBE_NS)
                .create(&dry_run(), &pod("probe", &[("c", "nginx:alpine")], &[]))
                .await
                .unwrap();
            last = images(&pod).remove("c").unwrap();
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("waited 60 s for {what}; the probe Pod still has {last:?}");
    }

    pub fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates namespace `name` with `labels` (idempotent).
    pub async fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels}
        }))
        .unwrap();
        let api = Api::<Namespace>::all(self.client.clone());
        if api.get_opt(name).await.unwrap().is_none() {
            api.create(&PostParams::default(), &namespace)
                .await
                .unwrap();
        }
    }

    pub async fn create(&self, namespace: &str, pod: &Pod) -> Pod {
        self.pods(namespace)
            .create(&PostParams::default(), pod)
            .await
            .unwrap()
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Pod {
        self.pods(namespace).get(name).await.unwrap()
    }
}

pub fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// A Pod named `name` with `containers` and `init` as `(name, image)`.
pub fn pod(name: &str, containers: &[(&str, &str)], init: &[(&str, &str)]) -> Pod {
    let list = |items: &[(&str, &str)]| -> Vec<Value> {
        items
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect()
    };
    let mut spec = json!({"containers": list(containers)});
    if !init.is_empty() {
        spec["initContainers"] = json!(list(init));
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// `{container name: image}` over init, regular and ephemeral containers.
pub fn images(pod: &Pod) -> BTreeMap<String, String> {
    let spec = pod.spec.as_ref().unwrap();
    let mut out = BTreeMap::new();
    for c in spec.init_containers.iter().flatten() {
        out.insert(c.name.clone(), c.image.clone().unwrap_or_default());
    }
    for c in &spec.containers {
        out.insert(c.name.clone(), c.image.clone().unwrap_or_default());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        out.insert(c.name.clone(), c.image.clone().unwrap_or_default());
    }
    out
}

/// The `harbor-pilot.io/original-images` annotation, parsed.
pub fn originals(pod: &Pod) -> Option<BTreeMap<String, String>> {
    let value = pod.metadata.annotations.as_ref()?.get(super::ANNOTATION)?;
    Some(serde_json::from_str(value).unwrap())
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The MutatingWebhookConfiguration of `manifests/base`, as kustomize renders it.
pub fn rendered_webhook_configuration() -> Value {
    let text = super::tools::render(&super::project_root().join("manifests/base"));
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "MutatingWebhookConfiguration")
        .expect("manifests/base renders a MutatingWebhookConfiguration")
}
