//! `harbor-pilot prewarm`: pull the images a cluster needs through Harbor ahead of time,
//! so Harbor's proxy cache has them when an upstream is down or rate-limited.
//!
//! For every image the rules rewrite (or that is already on Harbor): the manifest through
//! Harbor; for a multi-platform index also the manifests of the requested platforms; with
//! `--layers` every blob (config and layers), read to the end and dropped. Images come
//! from the command line, Kubernetes YAML (found as `scan` finds them) and, with
//! `--from-cluster`, the Pods of the opted-in namespaces.
//!
//! Progress goes to stderr: on a terminal one live line per image being pulled (bytes,
//! time), otherwise one plain line per image when it is done. Then a table on stdout.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use harbor_pilot_core::config::Config;
use harbor_pilot_core::patch::{ORIGINAL_IMAGES_ANNOTATION, REWRITE_LABEL};
use harbor_pilot_core::reference::ImageRef;
use harbor_pilot_core::rules::{Decision, Keep};
use harbor_pilot_core::scan;
use harbor_pilot_core::table::{align_columns, human_bytes, short_digest};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use serde::Deserialize;

use crate::cli::PrewarmArgs;
use crate::registry::{RegistryClient, RegistryError};

/// Why prewarming could not start (an image that fails is a row of the report).
#[derive(Debug, thiserror::Error)]
pub enum PrewarmError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    /// A source file could not be read or scanned.
    #[error("{source_name}")]
    Source {
        /// The file (`-` for stdin).
        source_name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry client could not be set up.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cluster could not be asked for its images.
    #[error("cannot list the images of the opted-in namespaces")]
    Cluster(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A `--platform` that is not `os/arch[/variant]`.
    #[error("--platform {0:?} is not os/arch or os/arch/variant")]
    Platform(String),
}

/// One image's result.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The image as pulled through Harbor.
    pub image: String,
    /// The digest Harbor answered for it.
    pub digest: Option<String>,
    /// Blobs pulled (with `--layers`) or found (without).
    pub blobs: usize,
    /// Bytes pulled.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
    /// `ok`, or what failed.
    pub result: Result<(), String>,
}

/// Runs `prewarm`; the rows of the report, one per image. Exit status is the caller's.
pub async fn prewarm(
    args: &PrewarmArgs,
    stdin: &mut dyn std::io::Read,
) -> Result<Vec<Pulled>, PrewarmError> {
    let config = crate::config::load(&args.config.config)?;
    let platforms: Vec<Platform> = args
        .platforms
        .iter()
        .map(|p| Platform::parse(p).ok_or_else(|| PrewarmError::Platform(p.clone())))
        .collect::<Result<_, _>>()?;
    let mut images = BTreeSet::new();
    for source in &args.sources {
        images.extend(images_of(source, &config, stdin)?);
    }
    for list in &args.lists {
        let text = std::fs::read_to_string(list).map_err(|e| PrewarmError::Source {
            source_name: list.display().to_string(),
            source: Box::new(e),
        })?;
        images.extend(
            text.lines()
                .map(|line| line.split('#').next().unwrap_or_default().trim())
                .filter(|line| !line.is_empty())
                .filter_map(|image| through_harbor(image, &config)),
        );
    }
    if args.from_cluster {
        images.extend(cluster_images(&config, args.kubeconfig.as_deref(), &args.namespaces).await?);
    }
    let ca_file = args
        .ca_file
        .clone()
        .or_else(|| config.verify.as_ref().and_then(|v| v.ca_file.clone()));
    let client = RegistryClient::new(ca_file.as_deref())?;
    let progress = Progress::new(std::io::stderr().is_terminal(), images.len());
    let jobs = images.into_iter().map(|image| {
        let client = client.clone();
        let platforms = platforms.clone();
        let progress = progress.clone();
        async move { pull(&client, &image, &platforms, args.layers, &progress).await }
    });
    let ticker = progress.spawn_ticker();
    let rows: Vec<Pulled> = futures::stream::iter(jobs)
        .buffer_unordered(usize::from(args.concurrency))
        .collect()
        .await;
    ticker.abort();
    progress.clear();
    Ok(rows)
}

/// The images of one source that go through Harbor: rewritten by the rules, or already
/// on the Harbor host.
fn images_of(
    source: &str,
    config: &Config,
    stdin: &mut dyn std::io::Read,
) -> Result<Vec<String>, PrewarmError> {
    let read_error = |e: Box<dyn std::error::Error + Send + Sync>| PrewarmError::Source {
        source_name: source.to_owned(),
        source: e,
    };
    let yaml = if source == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .map_err(|e| read_error(Box::new(e)))?;
        Some(text)
    } else if std::path::Path::new(source).is_file() {
        Some(std::fs::read_to_string(source).map_err(|e| read_error(Box::new(e)))?)
    } else {
        None
    };
    let Some(yaml) = yaml else {
        return Ok(through_harbor(source, config).into_iter().collect());
    };
    let rows = scan::scan_manifests(&yaml, &config.rules).map_err(|e| read_error(Box::new(e)))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.rewritten.or_else(|| through_harbor(&row.image, config)))
        .collect())
}

/// The reference to pull through Harbor for `image`, if there is one.
fn through_harbor(image: &str, config: &Config) -> Option<String> {
    match config.rules.decide(image) {
        Decision::Rewrite(rewrite) => Some(rewrite.image.to_string()),
        Decision::Keep(Keep::AlreadyOnHarbor) => Some(image.to_owned()),
        Decision::Keep(_) => None,
    }
}

/// The images of the Pods in the opted-in namespaces (and the originals they record);
/// only those of `only` when it names any.
async fn cluster_images(
    config: &Config,
    kubeconfig: Option<&std::path::Path>,
    only: &[String],
) -> Result<Vec<String>, PrewarmError> {
    let cluster = |e: Box<dyn std::error::Error + Send + Sync>| PrewarmError::Cluster(e);
    let client = crate::fallback::client(kubeconfig)
        .await
        .map_err(|e| cluster(Box::new(e)))?;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{REWRITE_LABEL}=enabled")))
        .await
        .map_err(|e| cluster(Box::new(e)))?;
    let mut images = Vec::new();
    for namespace in namespaces.items {
        let Some(name) = namespace.metadata.name else {
            continue;
        };
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let pods = Api::<Pod>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(|e| cluster(Box::new(e)))?;
        for pod in pods.items {
            let recorded: HashMap<String, String> = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ORIGINAL_IMAGES_ANNOTATION))
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            let spec = pod.spec.unwrap_or_default();
            let running = spec
                .init_containers
                .unwrap_or_default()
                .into_iter()
                .chain(spec.containers)
                .filter_map(|c| c.image);
            for image in running.chain(recorded.into_values()) {
                images.extend(through_harbor(&image, config));
            }
        }
    }
    Ok(images)
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('/');
        let (os, architecture) = (parts.next()?, parts.next()?);
        let variant = parts.next().map(str::to_owned);
        (!os.is_empty() && !architecture.is_empty() && parts.next().is_none()).then(|| Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant,
        })
    }

    fn matches(&self, p: &IndexPlatform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Debug, Deserialize)]
struct IndexPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Pulls one image through Harbor.
async fn pull(
    client: &RegistryClient,
    image: &str,
    platforms: &[Platform],
    layers: bool,
    progress: &Progress,
) -> Pulled {
    let started = Instant::now();
    let id = progress.start(image);
    let mut row = Pulled {
        image: image.to_owned(),
        digest: None,
        blobs: 0,
        bytes: 0,
        took: Duration::ZERO,
        result: Ok(()),
    };
    row.result = pull_into(client, image, platforms, layers, progress, id, &mut row).await;
    row.took = started.elapsed();
    progress.finish(id, &row);
    row
}

async fn pull_into(
    client: &RegistryClient,
    image: &str,
    platforms: &[Platform],
    layers: bool,
    progress: &Progress,
    id: usize,
    row: &mut Pulled,
) -> Result<(), String> {
    let reference = ImageRef::parse(image).map_err(|e| e.to_string())?;
    let (host, repository) = (reference.domain(), reference.path());
    let wanted = reference.digest().or(reference.tag()).unwrap_or("latest");
    let fail = |e: RegistryError| harbor_pilot_core::chain::one_line(&e);
    let top = client
        .get_manifest(host, repository, wanted)
        .await
        .map_err(fail)?;
    row.digest = top.digest.clone();
    let parsed: ManifestJson = serde_json::from_slice(&top.body).map_err(|e| e.to_string())?;
    let is_index = INDEX_TYPES.contains(&top.media_type.as_str())
        || parsed
            .media_type
            .as_deref()
            .is_some_and(|t| INDEX_TYPES.contains(&t));
    let mut manifests = Vec::new();
    if is_index {
        for platform in platforms {
            let Some(entry) = parsed
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
            else {
                continue; // the image is not built for it
            };
            let child = client
                .get_manifest(host, repository, &entry.digest)
                .await
                .map_err(fail)?;
            manifests.push(
                serde_json::from_slice::<ManifestJson>(&child.body).map_err(|e| e.to_string())?,
            );
        }
        if manifests.is_empty() {
            return Err("the index holds none of the requested platforms".to_owned());
        }
    } else {
        manifests.push(parsed);
    }
    let blobs: BTreeSet<String> = manifests
        .iter()
        .flat_map(|m| m.config.iter().chain(&m.layers))
        .map(|d| d.digest.clone())
        .collect();
    row.blobs = blobs.len();
    if layers {
        for digest in &blobs {
            let before = row.bytes;
            let got = client
                .get_blob(host, repository, digest, |n| progress.bytes(id, before + n))
                .await
                .map_err(fail)?;
            row.bytes = before + got;
        }
    }
    Ok(())
}

/// Progress on stderr: live lines on a terminal, one line per finished image otherwise.
#[derive(Clone)]
struct Progress {
    live: bool,
    total: usize,
    state: Arc<Mutex<ProgressState>>,
}

#[derive(Default)]
struct ProgressState {
    next_id: usize,
    done: usize,
    /// The images being pulled: id, image, bytes, started.
    active: Vec<(usize, String, u64, Instant)>,
    /// Lines drawn last time (live mode), to move the cursor back over.
    drawn: usize,
}

impl Progress {
    fn new(live: bool, total: usize) -> Self {
        Self {
            live,
            total,
            state: Arc::new(Mutex::new(ProgressState::default())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(&self, image: &str) -> usize {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.active.push((id, image.to_owned(), 0, Instant::now()));
        id
    }

    fn bytes(&self, id: usize, bytes: u64) {
        if let Some(entry) = self.lock().active.iter_mut().find(|e| e.0 == id) {
            entry.2 = bytes;
        }
    }

    fn finish(&self, id: usize, row: &Pulled) {
        let mut state = self.lock();
        state.active.retain(|e| e.0 != id);
        state.done += 1;
        let line = format!(
            "prewarm [{}/{}] {}: {} ({} blobs, {}, {:.1}s)",
            state.done,
            self.total,
            row.image,
            row.result
                .as_ref()
                .map_or_else(|e| format!("FAILED: {e}"), |()| "ok".to_owned()),
            row.blobs,
            human_bytes(row.bytes),
            row.took.as_secs_f64()
        );
        let mut stderr = std::io::stderr().lock();
        if self.live {
            erase(&mut stderr, state.drawn);
            state.drawn = 0;
        }
        let _ = writeln!(stderr, "{line}");
    }

    /// Redraws the live lines every 200 ms (terminal only).
    fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let progress = self.clone();
        tokio::spawn(async move {
            if !progress.live {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                progress.draw();
            }
        })
    }

    fn draw(&self) {
        let mut state = self.lock();
        let mut stderr = std::io::stderr().lock();
        erase(&mut stderr, state.drawn);
        for (_, image, bytes, started) in &state.active {
            let _ = writeln!(
                stderr,
                "  pulling {image}  {}  {:.1}s",
                human_bytes(*bytes),
                started.elapsed().as_secs_f64()
            );
        }
        state.drawn = state.active.len();
    }

    fn clear(&self) {
        if self.live {
            let mut state = self.lock();
            erase(&mut std::io::stderr().lock(), state.drawn);
            state.drawn = 0;
        }
    }
}

/// Moves the cursor up over `lines` drawn lines and clears them.
fn erase(out: &mut impl std::io::Write, lines: usize) {
    for _ in 0..lines {
        let _ = write!(out, "\x1b[1A\x1b[2K");
    }
}

/// The report: IMAGE, DIGEST, BLOBS, BYTES, TIME, RESULT, aligned.
pub fn render_report(rows: &[Pulled]) -> String {
    let mut rows: Vec<&Pulled> = rows.iter().collect();
    rows.sort_by(|a, b| a.image.cmp(&b.image));
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.image.clone(),
                r.digest
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), short_digest),
                r.blobs.to_string(),
                human_bytes(r.bytes),
                format!("{:.1}s", r.took.as_secs_f64()),
                r.result
                    .as_ref()
                    .map_or_else(|e| format!("FAILED: {e}"), |()| "ok".to_owned()),
            ]
        })
        .collect();
    let headers = ["IMAGE", "DIGEST", "BLOBS", "BYTES", "TIME", "RESULT"].map(str::to_owned);
    let mut out = align_columns(&[&[headers][..], &cells].concat());
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    out.push_str(&format!(
        "\n{} images through Harbor: {} ok, {failed} failed\n",
        rows.len(),
        rows.len() - failed
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_platforms() {
        assert_eq!(
            Platform::parse("linux/arm/v7"),
            Some(Platform {
                os: "linux".into(),
                architecture: "arm".into(),
                variant: Some("v7".into())
            })
        );
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux/amd64/v1/x").is_none());
    }

    #[test]
    fn the_report_lists_each_image_and_counts_failures() {
        let rows = [
            Pulled {
                image: "h/p/b:1".into(),
                digest: Some(format!("sha256:{}", "a".repeat(64))),
                blobs: 3,
                bytes: 2_621_440,
                took: Duration::from_millis(1500),
                result: Ok(()),
            },
            Pulled {
                image: "h/p/a:1".into(),
                digest: None,
                blobs: 0,
                bytes: 0,
                took: Duration::from_millis(100),
                result: Err("HTTP 404 (MANIFEST_UNKNOWN)".into()),
            },
        ];
        assert_eq!(
            render_report(&rows),
            "IMAGE    DIGEST                BLOBS  BYTES    TIME  RESULT\n\
             h/p/a:1  -                     0      0 B      0.1s  FAILED: HTTP 404 (MANIFEST_UNKNOWN)\n\
             h/p/b:1  sha256:aaaaaaaaaaaa…  3      2.5 MiB  1.5s  ok\n\
             \n\
             2 images through Harbor: 1 ok, 1 failed\n"
        );
    }
}
