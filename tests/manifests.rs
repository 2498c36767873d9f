//! The deployment manifests, rendered the way users apply them (kustomize), validated
//! against the official Kubernetes schemas (`kubernetes-validate --strict`), and held to
//! the invariants that keep harbor-pilot safe, so that a later edit cannot silently
//! break them. The alert rules go through `promtool check rules` and `promtool test
//! rules`; the ConfigMap's configuration through `harbor-pilot check-config`.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use common::manifests::VARIANTS;
use common::tools;
use serde_json::{Value, json};

/// Kinds that come from CRDs (cert-manager, the Prometheus Operator): no official
/// schema, checked by the tests below instead.
const CRD_KINDS: [&str; 4] = ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"];

struct Workspace {
    _dir: tempfile::TempDir,
    rendered: HashMap<&'static str, Vec<Value>>,
    static_certs: PathBuf,
}

/// A copy of `manifests/` with certificates generated for the static-certs overlay and
/// the overlays that add each component (`common::manifests`), each variant rendered once.
fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let manifests = common::manifests::prepare(dir.path());
        let static_certs = manifests.join("overlays/static-certs/generated");
        let rendered = VARIANTS
            .into_iter()
            .map(|variant| (variant, common::manifests::render(&manifests, variant)))
            .collect();
        Workspace {
            _dir: dir,
            rendered,
            static_certs,
        }
    })
}

fn docs(variant: &str) -> &'static [Value] {
    &workspace().rendered[variant]
}

fn all_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all_of(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn every_variant_renders_the_objects_it_promises() {
    let kinds = |variant| -> BTreeSet<&str> {
        docs(variant)
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect()
    };
    let base = [
        "ConfigMap",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds("base"), base.into_iter().collect());
    assert!(kinds("cert-manager").is_superset(&["Certificate", "Issuer"].into_iter().collect()));
    assert!(kinds("static-certs").contains("Secret"));
    assert!(
        kinds("with-monitoring")
            .is_superset(&["ServiceMonitor", "PrometheusRule"].into_iter().collect())
    );
    for variant in VARIANTS
        .into_iter()
        .filter(|v| !["with-fallback", "with-prewarm"].contains(v))
    {
        // The webhook never calls the API: no RBAC at all.
        for rbac in ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"] {
            assert!(!kinds(variant).contains(rbac), "{variant} has a {rbac}");
        }
    }
    // Only the fallback component adds API access, and only this.
    assert!(
        kinds("with-fallback")
            .is_superset(&["ClusterRole", "ClusterRoleBinding"].into_iter().collect())
    );
    let role = one(docs("with-fallback"), "ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    let binding = one(docs("with-fallback"), "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "harbor-pilot", "namespace": "harbor-pilot"}])
    );
    let pod = &one(docs("with-fallback"), "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["containers"][0]["env"][0]["name"], "POD_NAME");
}

#[test]
fn the_prewarm_component_runs_read_only_on_the_same_image_and_config() {
    let docs = docs("with-prewarm");
    let role = all_of(docs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "harbor-pilot-prewarm")
        .unwrap();
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["get", "list"]}])
    );
    let cronjob = one(docs, "CronJob");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let deployment = one(docs, "Deployment");
    let webhook = &deployment["spec"]["template"]["spec"]["containers"][0];
    // The same image as the webhook (the component pins it too: no drift).
    assert_eq!(container["image"], webhook["image"]);
    assert_eq!(
        strings(&container["args"]),
        [
            "prewarm",
            "--config=/etc/harbor-pilot/config",
            "--from-cluster",
            "--layers",
            "--list=/etc/harbor-pilot/prewarm/images.txt"
        ]
    );
    // The same (content-hashed) ConfigMap as the webhook.
    let config_map = |spec: &Value| -> String {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        config_map(pod),
        config_map(&deployment["spec"]["template"]["spec"])
    );
    assert_eq!(pod["serviceAccountName"], "harbor-pilot-prewarm");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    // The list it reads is valid input.
    let list = all_of(docs, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("harbor-pilot-prewarm")
        })
        .unwrap()["data"]["images.txt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        list.lines().any(|l| l == "registry.k8s.io/pause:3.10"),
        "{list}"
    );
}

#[test]
fn built_in_objects_validate_against_the_official_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut validated = 0;
    for variant in VARIANTS {
        let built_in: Vec<&Value> = docs(variant)
            .iter()
            .filter(|d| !CRD_KINDS.contains(&d["kind"].as_str().unwrap()))
            .collect();
        validated += built_in.len();
        tools::validate_objects(variant, &built_in, dir.path());
    }
    assert!(validated >= 20, "only {validated} objects validated");
}

#[test]
fn the_webhook_configuration_keeps_its_safety_settings() {
    for variant in VARIANTS {
        let docs = docs(variant);
        let configuration = one(docs, "MutatingWebhookConfiguration");
        let webhooks = configuration["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "{variant}");
        let hook = &webhooks[0];
        assert_eq!(
            strings(&hook["admissionReviewVersions"]),
            ["v1"],
            "{variant}"
        );
        assert_eq!(hook["sideEffects"], "None", "{variant}");
        assert_eq!(
            hook["failurePolicy"], "Ignore",
            "{variant}: a down webhook must not block pods"
        );
        let timeout = hook["timeoutSeconds"].as_u64().unwrap();
        assert!(
            (1..=5).contains(&timeout),
            "{variant}: timeoutSeconds {timeout}"
        );
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded", "{variant}");
        assert_eq!(hook["matchPolicy"], "Equivalent", "{variant}");

        let rules = hook["rules"].as_array().unwrap();
        let covers = |resource: &str, operation: &str| {
            rules.iter().any(|r| {
                strings(&r["resources"]).contains(&resource)
                    && strings(&r["operations"]).contains(&operation)
                    && strings(&r["apiGroups"]) == [""]
            })
        };
        assert!(
            covers("pods", "CREATE") && covers("pods", "UPDATE"),
            "{variant}"
        );
        assert!(covers("pods/ephemeralcontainers", "UPDATE"), "{variant}");
        for rule in rules {
            for resource in strings(&rule["resources"]) {
                assert!(
                    ["pods", "pods/ephemeralcontainers"].contains(&resource),
                    "{variant}: {resource}"
                );
            }
        }

        // Opt-in by namespace label, never the webhook's own namespace.
        let deployment = one(docs, "Deployment");
        let own_namespace = deployment["metadata"]["namespace"].as_str().unwrap();
        let expressions = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert!(
            expressions
                .iter()
                .any(|e| e["key"] == "harbor-pilot.io/rewrite"
                    && e["operator"] == "In"
                    && strings(&e["values"]) == ["enabled"]),
            "{variant}: no opt-in selector"
        );
        assert!(
            expressions
                .iter()
                .any(|e| e["key"] == "kubernetes.io/metadata.name"
                    && e["operator"] == "NotIn"
                    && strings(&e["values"]).contains(&own_namespace)),
            "{variant}: own namespace {own_namespace} not excluded"
        );
        assert!(
            hook["namespaceSelector"].get("matchLabels").is_none(),
            "{variant}"
        );
        let namespace = one(docs, "Namespace");
        assert_eq!(namespace["metadata"]["name"], own_namespace);
        assert!(
            namespace["metadata"]["labels"]
                .get("harbor-pilot.io/rewrite")
                .is_none(),
            "{variant}: the webhook's namespace opted in"
        );
        // Pods labelled disabled are never sent.
        let object = &hook["objectSelector"]["matchExpressions"][0];
        assert_eq!(object["key"], "harbor-pilot.io/rewrite");
        assert_eq!(object["operator"], "NotIn");
        assert_eq!(strings(&object["values"]), ["disabled"]);

        // It calls the Service that fronts the Deployment's webhook port.
        let service_ref = &hook["clientConfig"]["service"];
        let service = one(docs, "Service");
        assert_eq!(
            service_ref["name"], service["metadata"]["name"],
            "{variant}"
        );
        assert_eq!(
            service_ref["namespace"], service["metadata"]["namespace"],
            "{variant}"
        );
        assert_eq!(service_ref["path"], "/mutate", "{variant}");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == service_ref["port"])
            .unwrap_or_else(|| panic!("{variant}: no Service port {}", service_ref["port"]));
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let container_port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"])
            .unwrap();
        assert_eq!(container_port["containerPort"], 8443, "{variant}");
        let selector = service["spec"]["selector"].as_object().unwrap();
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert!(
            selector.iter().all(|(k, v)| &labels[k] == v),
            "{variant}: Service selects no webhook pod"
        );
    }
}

#[test]
fn the_deployment_is_available_and_locked_down() {
    for variant in VARIANTS {
        let deployment = one(docs(variant), "Deployment");
        let spec = &deployment["spec"];
        assert!(spec["replicas"].as_u64().unwrap() >= 2, "{variant}");
        assert_eq!(
            spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
            "{variant}"
        );
        let pod = &spec["template"]["spec"];
        let spreads_over_nodes = pod["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["topologyKey"] == "kubernetes.io/hostname")
            })
            || pod["affinity"]["podAntiAffinity"].is_object();
        assert!(spreads_over_nodes, "{variant}: replicas may share a node");
        assert!(
            pod["priorityClassName"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{variant}"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{variant}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{variant}"
        );
        // No API token, except where the fallback controller needs one.
        assert_eq!(
            pod["automountServiceAccountToken"],
            variant == "with-fallback",
            "{variant}"
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"]["harbor-pilot.io/rewrite"],
            "disabled"
        );

        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{variant}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{variant}");
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{variant}"
        );
        assert!(security["capabilities"].get("add").is_none(), "{variant}");
        let resources = &container["resources"];
        assert!(
            resources["requests"]["cpu"].is_string() && resources["requests"]["memory"].is_string()
        );
        assert!(resources["limits"]["memory"].is_string(), "{variant}");

        // Probes on the admin port, never the TLS port.
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/livez")] {
            assert_eq!(container[probe]["httpGet"]["path"], path, "{variant}");
            assert_eq!(container[probe]["httpGet"]["port"], "admin", "{variant}");
        }
        let admin = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap();
        assert_eq!(admin["containerPort"], 8080);

        // The certificate comes from a Secret volume (reloadable), the config from the
        // generated ConfigMap; the flags point into those mounts.
        let args = strings(&container["args"]);
        assert_eq!(args[0], "serve");
        let flag = |name: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("--{name}=")))
                .unwrap_or_else(|| panic!("{variant}: no --{name}"))
        };
        let volumes = pod["volumes"].as_array().unwrap();
        let mount_of = |file: &str| {
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| {
                    let mount = m["mountPath"].as_str().unwrap();
                    file == mount || file.starts_with(&format!("{mount}/"))
                })
                .unwrap_or_else(|| panic!("{variant}: {file} is on no mount"))
        };
        let tls_mount = mount_of(flag("tls-cert-file"));
        assert!(
            tls_mount.get("subPath").is_none(),
            "{variant}: a subPath mount never sees a renewal"
        );
        assert_eq!(mount_of(flag("tls-key-file"))["name"], tls_mount["name"]);
        let tls_volume = volumes
            .iter()
            .find(|v| v["name"] == tls_mount["name"])
            .unwrap();
        let secret_name = tls_volume["secret"]["secretName"].as_str().unwrap();
        assert_eq!(secret_name, "harbor-pilot-tls");
        let config_volume = volumes
            .iter()
            .find(|v| v["name"] == mount_of(flag("config"))["name"])
            .unwrap();
        let config_map = config_volume["configMap"]["name"].as_str().unwrap();
        assert!(
            all_of(docs(variant), "ConfigMap")
                .iter()
                .any(|c| c["metadata"]["name"] == config_map),
            "{variant}: the mounted ConfigMap {config_map} is not rendered"
        );
        assert!(
            config_map.starts_with("harbor-pilot-config-"),
            "{variant}: no content hash in {config_map}"
        );
    }
}

#[test]
fn a_disruption_budget_keeps_a_webhook_pod_up() {
    for variant in VARIANTS {
        let docs = docs(variant);
        let pdb = one(docs, "PodDisruptionBudget");
        let replicas = one(docs, "Deployment")["spec"]["replicas"]
            .as_u64()
            .unwrap();
        let min_available = pdb["spec"]["minAvailable"].as_u64().unwrap();
        assert!(
            min_available >= 1 && min_available < replicas,
            "{variant}: minAvailable {min_available}"
        );
        let labels = &one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
        let selector = pdb["spec"]["selector"]["matchLabels"].as_object().unwrap();
        assert!(
            selector.iter().all(|(k, v)| &labels[k] == v),
            "{variant}: PDB selects nothing"
        );
    }
}

#[test]
fn the_configmap_holds_a_config_the_cli_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let config_map = all_of(docs(variant), "ConfigMap")
            .into_iter()
            .find(|c| {
                c["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("harbor-pilot-config")
            })
            .unwrap();
        // As the pod mounts it: a directory with one file per key.
        let mounted = dir.path().join(variant);
        std::fs::create_dir_all(&mounted).unwrap();
        for (key, value) in config_map["data"].as_object().unwrap() {
            std::fs::write(mounted.join(key), value.as_str().unwrap()).unwrap();
        }
        let summary =
            common::harbor_pilot_ok(&["check-config", "--config", mounted.to_str().unwrap()]);
        assert!(
            summary.contains("health: Health probe"),
            "{variant}: no fail-open health check:\n{summary}"
        );
        let has_fallback = !summary.contains("fallback: none");
        assert_eq!(
            has_fallback,
            variant == "with-fallback",
            "{variant}:\n{summary}"
        );
    }
    // The file in the repository is the one the ConfigMap carries.
    let base = all_of(docs("base"), "ConfigMap")[0]["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(base, common::read("manifests/base/config.yaml"));
}

#[test]
fn cert_manager_issues_the_mounted_certificate_and_injects_its_ca() {
    let docs = docs("cert-manager");
    let configuration = one(docs, "MutatingWebhookConfiguration");
    let inject = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        .as_str()
        .unwrap();
    let (namespace, name) = inject.split_once('/').unwrap();
    let certificate = all_of(docs, "Certificate")
        .into_iter()
        .find(|c| c["metadata"]["name"] == name && c["metadata"]["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no Certificate {inject}"));
    assert_eq!(certificate["spec"]["secretName"], "harbor-pilot-tls");
    let names = strings(&certificate["spec"]["dnsNames"]);
    assert!(
        names.contains(&"harbor-pilot.harbor-pilot.svc"),
        "{names:?}"
    );
    assert!(strings(&certificate["spec"]["usages"]).contains(&"server auth"));
    // Its issuer exists, and that issuer's CA certificate is issued by another that exists.
    let issuers = all_of(docs, "Issuer");
    let issuer = issuers
        .iter()
        .find(|i| i["metadata"]["name"] == certificate["spec"]["issuerRef"]["name"])
        .unwrap();
    let ca_secret = issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca = all_of(docs, "Certificate")
        .into_iter()
        .find(|c| c["spec"]["secretName"] == ca_secret)
        .unwrap();
    assert_eq!(ca["spec"]["isCA"], true);
    assert!(
        issuers
            .iter()
            .any(|i| i["metadata"]["name"] == ca["spec"]["issuerRef"]["name"])
    );
}

#[test]
fn static_certs_ship_a_certificate_the_ca_bundle_trusts() {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _};
    let docs = docs("static-certs");
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let hook = &one(docs, "MutatingWebhookConfiguration")["webhooks"][0];
    let bundle = decode(hook["clientConfig"]["caBundle"].as_str().unwrap());
    let secret = one(docs, "Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["name"], "harbor-pilot-tls");
    assert_eq!(secret["metadata"]["namespace"], "harbor-pilot");
    let leaf = CertificateDer::from_pem_slice(&decode(secret["data"]["tls.crt"].as_str().unwrap()))
        .unwrap();
    // The API server checks the Service name against the caBundle, as this does.
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&bundle) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.into(),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let name = ServerName::try_from("harbor-pilot.harbor-pilot.svc").unwrap();
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .expect("the Secret's certificate verifies against the caBundle for the Service name");
    // Keys stay out of git.
    let ignore = common::read("manifests/overlays/static-certs/.gitignore");
    assert!(ignore.lines().any(|l| l.trim() == "generated/"), "{ignore}");
    assert!(workspace().static_certs.join("tls.key").exists());
}

/// Every `harbor_pilot_*` metric family harbor-pilot exports.
fn exported_families() -> BTreeSet<String> {
    let mut metrics = harbor_pilot::metrics::Metrics::new().unwrap();
    // As the server does once the configuration is loaded.
    metrics.register_upstreams(["docker.io"]);
    let (text, _) = metrics.encode().unwrap();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("harbor_pilot_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        found.insert(family.to_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn alerts_and_dashboard_use_only_metrics_harbor_pilot_exports() {
    let exported = exported_families();
    let rules =
        yaml_serde::to_string(&one(docs("with-monitoring"), "PrometheusRule")["spec"]).unwrap();
    let dashboard = common::read("manifests/components/monitoring/dashboard.json");
    for (what, text) in [
        ("alert rules", rules.as_str()),
        ("dashboard", dashboard.as_str()),
    ] {
        let referenced = referenced_metrics(text);
        assert!(
            referenced.len() >= 5,
            "{what} reference only {referenced:?}"
        );
        let unknown: Vec<_> = referenced.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} use metrics harbor-pilot does not export: {unknown:?}"
        );
    }
}

#[test]
fn the_dashboard_shows_what_operators_look_for() {
    let dashboard: Value = serde_json::from_str(&common::read(
        "manifests/components/monitoring/dashboard.json",
    ))
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let expressions = |title: &str| -> Vec<String> {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(expressions("Rewrites per upstream")[0].contains("by (upstream)"));
    assert!(expressions("Fail-open rate")[0].contains("harbor_pilot_fail_open_admissions_total"));
    let latency = expressions("Admission latency");
    assert!(
        latency
            .iter()
            .any(|e| e.starts_with("histogram_quantile(0.99")),
        "{latency:?}"
    );
    assert!(
        latency
            .iter()
            .any(|e| e.starts_with("histogram_quantile(0.5")),
        "{latency:?}"
    );
    assert!(expressions("Harbor up")[0].contains("harbor_pilot_harbor_up"));
    // The dashboard ConfigMap is picked up by Grafana's sidecar.
    let config_map = all_of(docs("with-monitoring"), "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "harbor-pilot-dashboard")
        .unwrap();
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value =
        serde_json::from_str(config_map["data"]["harbor-pilot.json"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, dashboard);
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port() {
    let docs = docs("with-monitoring");
    let monitor = one(docs, "ServiceMonitor");
    let service = one(docs, "Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(
        selector
            .iter()
            .all(|(k, v)| &service["metadata"]["labels"][k] == v),
        "selects no Service"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap();
    let deployment = one(docs, "Deployment");
    let admin = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .unwrap();
    assert_eq!(
        admin["containerPort"], 8080,
        "the ServiceMonitor does not reach the admin port"
    );
}

#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    let promtool = tools::require("promtool", "install Debian's prometheus package");
    let dir = tempfile::tempdir().unwrap();
    let rule = one(docs("with-monitoring"), "PrometheusRule");
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    let check = Command::new(&promtool)
        .args(["check", "rules", "rules.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The literal annotations of each alert, as promtool expects them back.
    let annotations = |alert: &str| {
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"))["annotations"]
            .clone()
    };
    let firing = |annotations: Value| json!([{"exp_labels": {"severity": "warning"}, "exp_annotations": annotations}]);
    let expiring = json!({
        "summary": "harbor-pilot's serving certificate expires within 14 days",
        "description": "The certificate expires in 9d 22h 50m 0s. When it does, the API server cannot call the webhook and admits pods unchanged. Renew it (cert-manager should have; `harbor-pilot certs` for static certs).",
    });
    let failing_open = json!({
        "summary": "Pods have been admitted without Harbor for 15 minutes",
        "description": "10 pods in the last 10 minutes kept their upstream images because Harbor was unavailable.",
    });
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": "harbor_pilot_harbor_up{pod=\"a\"}", "values": "1 1 0x30"},
                    {"series": "harbor_pilot_build_info{version=\"0.1.0\"}", "values": "1x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "HarborPilotHarborDown", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "HarborPilotHarborDown",
                     "exp_alerts": firing(annotations("HarborPilotHarborDown"))},
                    {"eval_time": "20m", "alertname": "HarborPilotAbsent", "exp_alerts": []},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": "harbor_pilot_fail_open_admissions_total{pod=\"a\"}", "values": "0+1x60"},
                    {"series": "harbor_pilot_tls_cert_not_after_timestamp_seconds{pod=\"a\"}", "values": "864000x100"},
                    {"series": "harbor_pilot_tls_cert_not_after_timestamp_seconds{pod=\"b\"}", "values": "900000000x100"},
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "HarborPilotFailingOpen",
                     "exp_alerts": firing(failing_open)},
                    {"eval_time": "70m", "alertname": "HarborPilotCertificateExpiringSoon",
                     "exp_alerts": firing(expiring)},
                    {"eval_time": "20m", "alertname": "HarborPilotAbsent",
                     "exp_alerts": firing(annotations("HarborPilotAbsent"))},
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": "harbor_pilot_tls_cert_not_after_timestamp_seconds{pod=\"a\"}", "values": "2000000x100"},
                    {"series": "harbor_pilot_fail_open_admissions_total{pod=\"a\"}", "values": "5x60"},
                ],
                "alert_rule_test": [
                    {"eval_time": "70m", "alertname": "HarborPilotCertificateExpiringSoon", "exp_alerts": []},
                    {"eval_time": "30m", "alertname": "HarborPilotFailingOpen", "exp_alerts": []},
                ],
            },
        ],
    });
    std::fs::write(
        dir.path().join("tests.yaml"),
        yaml_serde::to_string(&tests).unwrap(),
    )
    .unwrap();
    let run = Command::new(&promtool)
        .args(["test", "rules", "tests.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_dockerfile_builds_a_non_root_distroless_image_without_a_shell() {
    let dockerfile = common::read("Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].ends_with(" AS build"), "{}", stages[0]);
    assert!(
        stages[1].starts_with("FROM gcr.io/distroless/"),
        "{}",
        stages[1]
    );
    let final_stage = &instructions[instructions.iter().position(|l| *l == stages[1]).unwrap()..];
    let user = final_stage
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("no USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("USER is numeric, as runAsNonRoot needs");
    assert_ne!(uid, 0);
    // Exec form: no shell needed (distroless has none).
    for directive in ["ENTRYPOINT ", "CMD "] {
        let line = final_stage
            .iter()
            .find(|l| l.starts_with(directive))
            .unwrap();
        assert!(line[directive.len()..].starts_with('['), "{line}");
    }
    assert!(
        !final_stage.iter().any(|l| l.starts_with("RUN ")),
        "the final stage has no shell to RUN with"
    );
    // The image ships the build Cargo.toml's `production` profile makes (whole-program
    // optimised; README "Performance"), from where that build puts it.
    assert!(
        common::read("Cargo.toml").contains("[profile.production]"),
        "no production profile in Cargo.toml"
    );
    assert!(
        dockerfile.contains("cargo build --profile production --locked --bin harbor-pilot"),
        "the image is not built with the production profile"
    );
    let shipped = final_stage
        .iter()
        .find(|l| l.starts_with("COPY --from=build "))
        .expect("the final stage copies the binary from the build stage");
    assert!(
        shipped.contains("/src/target/production/harbor-pilot "),
        "{shipped}"
    );
    // Everything the build copies exists.
    for line in instructions
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                common::project_root().join(source).exists(),
                "COPY {source}: missing"
            );
        }
    }
    // The manifests run the image as the user it declares.
    let deployment = one(docs("base"), "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        u64::from(uid)
    );
}
