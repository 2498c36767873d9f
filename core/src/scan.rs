//! Previews the rewrite across Kubernetes manifests: for every pod template in a
//! multi-document YAML stream (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! ReplicationControllers, Jobs, CronJobs, PodTemplates, Lists, and any custom resource
//! with a `spec.template.spec` such as an Argo Rollout), what each image becomes and why.
//!
//! Each template goes through [`crate::patch::plan`] as a pod CREATE, the same code the
//! webhook runs. Pure: the caller reads the files.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::patch::{self, Scope};
use crate::pod::PodImages;
use crate::rules::CachedRules;
use crate::table::{self, align_columns};
use crate::verdict::Verdict;

/// One image of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// `metadata.namespace` of the workload, if written.
    pub namespace: Option<String>,
    /// `Kind/name` of the workload.
    pub workload: String,
    /// The container (`name`, `init/name`, `ephemeral/name`) or image volume
    /// (`volume/name`).
    pub container: String,
    /// The image as written.
    pub image: String,
    /// What it becomes; `None` when unchanged.
    pub rewritten: Option<String>,
    /// Why.
    pub reason: String,
}

/// Why a manifest stream could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A document is not valid YAML.
    #[error("document {document}: not valid YAML")]
    Yaml {
        /// 1-based position in the stream.
        document: usize,
        /// The parser's error.
        #[source]
        source: yaml_serde::Error,
    },
    /// A pod template whose image fields have the wrong shape.
    #[error("document {document}: {workload}: the pod template cannot be read")]
    Template {
        /// 1-based position in the stream.
        document: usize,
        /// `Kind/name`.
        workload: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Scans every document of a YAML stream.
pub fn scan_manifests(yaml: &str, rules: &CachedRules) -> Result<Vec<Row>, ScanError> {
    let mut rows = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(yaml).enumerate() {
        let document_number = index + 1;
        let value = Value::deserialize(document).map_err(|source| ScanError::Yaml {
            document: document_number,
            source,
        })?;
        for template in pod_templates(&value) {
            let pod: PodImages =
                serde_json::from_value(template.template.clone()).map_err(|source| {
                    ScanError::Template {
                        document: document_number,
                        workload: template.workload.clone(),
                        source,
                    }
                })?;
            let plan = patch::plan(&pod, Scope::Create, rules, &patch::all_served);
            rows.extend(plan.changes.iter().map(|change| Row {
                namespace: template.namespace.clone(),
                workload: template.workload.clone(),
                container: change.slot.to_string(),
                image: change.slot.image.to_owned(),
                rewritten: match &change.verdict {
                    Verdict::Rewrite(r) => Some(r.image.to_string()),
                    Verdict::Keep(_) => None,
                },
                reason: change.verdict.to_string(),
            }));
        }
    }
    Ok(rows)
}

struct Template<'v> {
    namespace: Option<String>,
    workload: String,
    template: &'v Value,
}

/// The pod templates in one document (a `List` can hold many).
fn pod_templates(doc: &Value) -> Vec<Template<'_>> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    if kind == "List" || kind.ends_with("List") && doc["items"].is_array() {
        return doc["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(pod_templates)
            .collect();
    }
    let template = match kind {
        "Pod" => Some(doc),
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]),
        "PodTemplate" => Some(&doc["template"]),
        _ => Some(&doc["spec"]["template"]).filter(|t| t["spec"].is_object()),
    };
    let Some(template) = template.filter(|t| t.is_object()) else {
        return Vec::new();
    };
    let metadata = &doc["metadata"];
    let name = metadata["name"]
        .as_str()
        .or_else(|| metadata["generateName"].as_str())
        .unwrap_or("(unnamed)");
    vec![Template {
        namespace: metadata["namespace"].as_str().map(str::to_owned),
        workload: format!("{kind}/{name}"),
        template,
    }]
}

/// Images longer than this are cut in the middle in the table (unless `wide`), so a
/// row fits a terminal; JSON output is never cut.
const NARROW_IMAGE: usize = 56;

/// Renders rows as aligned columns with a summary line, for a terminal: rewritten images
/// are shown without the Harbor host (`harbor`, named in the header once), the reason of
/// a rewrite is just `proxied` (the project is in the image), and unless `wide` long
/// images are cut in the middle (`quay.io/org…app:v1.2`), keeping registry and tag.
/// `wide` shows everything whole.
pub fn render_table(rows: &[Row], harbor: &str, wide: bool) -> String {
    let becomes_header = if wide {
        "BECOMES".to_owned()
    } else {
        format!("BECOMES ({harbor}/…)")
    };
    let headers: [&str; 6] = [
        "NAMESPACE",
        "WORKLOAD",
        "CONTAINER",
        "IMAGE",
        &becomes_header,
        "WHY",
    ];
    let on_harbor = format!("{harbor}/");
    let fit = |image: &str| shorten_middle(&short_digest(image), NARROW_IMAGE);
    let owned: Vec<[String; 2]> = rows
        .iter()
        .map(|r| match &r.rewritten {
            Some(new) if wide => [r.image.clone(), new.clone()],
            Some(new) => [
                fit(&r.image),
                fit(new.strip_prefix(&on_harbor).unwrap_or(new)),
            ],
            None => [fit(&r.image), "(unchanged)".to_owned()],
        })
        .collect();
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .zip(&owned)
        .map(|(r, [image, becomes])| {
            let why = if r.rewritten.is_some() && !wide {
                "proxied"
            } else {
                &r.reason
            };
            [
                r.namespace.as_deref().unwrap_or("-"),
                &r.workload,
                &r.container,
                image,
                becomes,
                why,
            ]
        })
        .collect();
    let mut out = align_columns(&[&[headers][..], &cells].concat());
    let rewritten = rows.iter().filter(|r| r.rewritten.is_some()).count();
    let mut workloads: Vec<_> = rows.iter().map(|r| (&r.namespace, &r.workload)).collect();
    workloads.dedup();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        out,
        "\n{} in {}: {} rewritten, {} unchanged",
        plural(rows.len(), "image", "images"),
        plural(workloads.len(), "workload", "workloads"),
        rewritten,
        rows.len() - rewritten
    );
    out
}

/// `image` with its digest cut to 12 hex digits (`@sha256:e3b0c44298fc…`), as `git`
/// shortens hashes: in a table the tag says more.
fn short_digest(image: &str) -> String {
    match image.rsplit_once('@') {
        Some((name, digest)) => format!("{name}@{}", table::short_digest(digest)),
        None => image.to_owned(),
    }
}

/// `s` cut to `max` characters by replacing its middle with `…`.
fn shorten_middle(s: &str, max: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_owned();
    }
    let keep = max - 1;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules() -> CachedRules {
        Config::from_yaml(
            "harbor: harbor.example.com\nproxies: {docker.io: hub, quay.io: quay}\nexclude: [docker.io/library/ubuntu]\n",
        )
        .unwrap()
        .rules
    }

    const MANIFESTS: &str = r#"
# a comment-only document, as helm template emits
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      initContainers: [{name: setup, image: busybox:1.36}]
      containers: [{name: app, image: nginx:1.25}, {name: tools, image: ubuntu:22.04}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: job, image: quay.io/org/job@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      name: pinned
      labels: {harbor-pilot.io/rewrite: disabled}
    spec:
      containers: [{name: c, image: nginx}]
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: canary}
spec:
  template:
    spec:
      containers: [{name: c, image: gcr.io/x/y:1}]
"#;

    #[test]
    fn previews_every_pod_template() {
        let rows = scan_manifests(MANIFESTS, &rules()).unwrap();
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.workload.as_str(),
                    r.container.as_str(),
                    r.rewritten.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "Deployment/web",
                    "init/setup",
                    Some("harbor.example.com/hub/library/busybox:1.36")
                ),
                (
                    "Deployment/web",
                    "app",
                    Some("harbor.example.com/hub/library/nginx:1.25")
                ),
                ("Deployment/web", "tools", None),
                (
                    "CronJob/nightly",
                    "job",
                    Some(
                        "harbor.example.com/quay/org/job@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                    )
                ),
                ("Pod/pinned", "c", None),
                ("Rollout/canary", "c", None),
            ]
        );
        assert_eq!(
            rows[2].reason,
            "matches exclude pattern docker.io/library/ubuntu"
        );
        assert_eq!(
            rows[4].reason,
            "pod labelled harbor-pilot.io/rewrite: disabled"
        );
        assert_eq!(rows[5].reason, "registry gcr.io has no proxy project");
        assert_eq!(rows[0].namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn renders_an_aligned_table_with_a_summary() {
        let rows = scan_manifests(MANIFESTS, &rules()).unwrap();
        let table = render_table(&rows, "harbor.example.com", false);
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  WORKLOAD"), "{}", lines[0]);
        let column = lines[0].find("CONTAINER").unwrap();
        assert_eq!(&lines[1][column..column + 10], "init/setup");
        assert!(
            table.ends_with("6 images in 4 workloads: 3 rewritten, 3 unchanged\n"),
            "{table}"
        );
    }

    #[test]
    fn cuts_long_images_in_the_middle_unless_wide() {
        let image = format!("quay.io/org/{}/app:v1.2.3", "x".repeat(100));
        let yaml = format!(
            "kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: c, image: \"{image}\"}}]}}\n"
        );
        let rows = scan_manifests(&yaml, &rules()).unwrap();
        let narrow = render_table(&rows, "harbor.example.com", false);
        assert!(narrow.lines().all(|l| !l.contains(&image)), "{narrow}");
        assert!(narrow.contains("quay.io/org/xxxxxxxxxx"), "{narrow}");
        assert!(narrow.contains("…xxxx"), "{narrow}");
        assert!(narrow.contains("xxxx/app:v1.2.3 "), "{narrow}");
        assert!(
            narrow.contains("BECOMES (harbor.example.com/…)"),
            "{narrow}"
        );
        assert!(narrow.contains(" quay/org/xxx"), "{narrow}");
        let wide = render_table(&rows, "harbor.example.com", true);
        assert!(wide.contains(&image), "{wide}");
        assert!(wide.contains(&format!("harbor.example.com/quay/org/{}", "x".repeat(100))));
        assert_eq!(shorten_middle("abcdef", 5), "ab…ef");
        assert_eq!(shorten_middle("abcde", 5), "abcde");
    }

    #[test]
    fn names_the_document_that_is_not_yaml() {
        let error = scan_manifests("kind: Pod\n---\nkind: [\n", &rules()).unwrap_err();
        assert!(
            error.to_string().starts_with("document 2: not valid YAML"),
            "{error}"
        );
    }

    #[test]
    fn names_the_workload_whose_template_is_malformed() {
        let yaml = "kind: Pod\nmetadata: {name: p}\nspec: {containers: {name: c}}\n";
        let error = scan_manifests(yaml, &rules()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "document 1: Pod/p: the pod template cannot be read"
        );
    }
}
