//! The Helm chart (`charts/harbor-pilot`), with the helm that `scripts/cluster-tools`
//! builds: `helm lint --strict` and `helm template` on every values file in the chart's
//! `ci/`, the rendered objects against the official schemas, the same safety settings
//! as the kustomize manifests, a schema that refuses typos, no drift from
//! `manifests/base`, and `helm install` / `upgrade` / `uninstall` against the real API
//! server with the webhook on loopback.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::cluster::{Cluster, Options};
use common::pilot::{ClusterEnv, Pilot};
use common::tools;
use serde_json::{Value, json};

const RELEASE: &str = "harbor-pilot";
const NAMESPACE: &str = "harbor-pilot";
/// Kinds from CRDs (cert-manager, the Prometheus Operator): no official schema.
const CRD_KINDS: [&str; 4] = ["Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"];

fn chart() -> PathBuf {
    common::project_root().join("charts/harbor-pilot")
}

/// The chart's values files for CI (`ci/*-values.yaml`), by name.
fn values_files() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.strip_suffix("-values.yaml")?;
            Some((name.to_owned(), path.clone()))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 6, "too few values files: {files:?}");
    files
}

/// helm, with its caches and config in `home` (never the user's).
fn helm(home: &Path) -> Command {
    let mut command = Command::new(tools::require(
        "helm",
        "run scripts/cluster-tools helm (needs Go 1.26+)",
    ));
    for (var, dir) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        command.env(var, home.join(dir));
    }
    command.env_remove("KUBECONFIG");
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `helm template` with `args` (values files, --set), one value per document.
fn template(args: &[&str]) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let mut command = helm(home.path());
    command
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .args(args);
    documents(&String::from_utf8(run(command).stdout).unwrap())
}

fn documents(text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

fn rendered_variants() -> Vec<(String, Vec<Value>)> {
    values_files()
        .into_iter()
        .map(|(name, file)| {
            let docs = template(&["-f", file.to_str().unwrap()]);
            (name, docs)
        })
        .collect()
}

#[test]
fn helm_lint_strict_passes_for_every_values_file() {
    let home = tempfile::tempdir().unwrap();
    for (name, file) in values_files() {
        let mut command = helm(home.path());
        command
            .args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(chart())
            .arg("-f")
            .arg(&file);
        let output = run(command);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(report.contains("0 chart(s) failed"), "{name}:\n{report}");
        assert!(!report.contains("[WARNING]"), "{name}:\n{report}");
    }
}

#[test]
fn each_values_file_renders_what_it_turns_on() {
    for (name, docs) in rendered_variants() {
        let kinds = kinds(&docs);
        let has = |kind: &str| kinds.iter().any(|k| k == kind);
        for kind in [
            "ConfigMap",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ] {
            assert!(has(kind), "{name}: no {kind} in {kinds:?}");
        }
        let monitoring = name == "monitoring" || name == "everything";
        assert_eq!(has("ServiceMonitor"), monitoring, "{name}: {kinds:?}");
        assert_eq!(has("PrometheusRule"), monitoring, "{name}: {kinds:?}");
        let prewarm = name == "fallback" || name == "everything";
        assert_eq!(has("CronJob"), prewarm, "{name}: {kinds:?}");
        assert_eq!(has("ClusterRole"), prewarm, "{name}: {kinds:?}");
        assert_eq!(
            has("Certificate"),
            name == "cert-manager",
            "{name}: {kinds:?}"
        );
        // The chart's own Secret only when it makes the certificate.
        let generates = !matches!(name.as_str(), "cert-manager" | "secret");
        assert_eq!(has("Secret"), generates, "{name}: {kinds:?}");
    }
}

#[test]
fn rendered_objects_validate_against_the_official_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let mut validated = 0;
    for (name, docs) in rendered_variants() {
        let built_in: Vec<&Value> = docs
            .iter()
            .filter(|d| !CRD_KINDS.contains(&d["kind"].as_str().unwrap()))
            .collect();
        validated += built_in.len();
        tools::validate_objects(&name, &built_in, dir.path());
    }
    assert!(validated >= 40, "only {validated} objects validated");
}

#[test]
fn the_webhook_configuration_keeps_its_safety_settings() {
    for (name, docs) in rendered_variants() {
        let configuration = one(&docs, "MutatingWebhookConfiguration");
        let webhooks = configuration["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "{name}");
        let webhook = &webhooks[0];
        assert_eq!(webhook["failurePolicy"], "Ignore", "{name}");
        assert!(webhook["timeoutSeconds"].as_u64().unwrap() <= 5, "{name}");
        assert_eq!(webhook["sideEffects"], "None", "{name}");
        assert_eq!(webhook["reinvocationPolicy"], "IfNeeded", "{name}");
        assert_eq!(webhook["matchPolicy"], "Equivalent", "{name}");
        assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]), "{name}");
        let expressions = webhook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        assert!(
            expressions.contains(
                &json!({"key": "harbor-pilot.io/rewrite", "operator": "In", "values": ["enabled"]})
            ),
            "{name}: {expressions:?}"
        );
        // Never its own namespace (it would wait on itself to start) nor kube-system.
        assert!(
            expressions.contains(
                &json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                         "values": [NAMESPACE, "kube-system"]})
            ),
            "{name}: {expressions:?}"
        );
        assert_eq!(
            webhook["objectSelector"]["matchExpressions"],
            json!([{"key": "harbor-pilot.io/rewrite", "operator": "NotIn", "values": ["disabled"]}]),
            "{name}"
        );
        let client = &webhook["clientConfig"];
        assert_eq!(client["service"]["path"], "/mutate", "{name}");
        let annotations = &configuration["metadata"]["annotations"];
        if name == "cert-manager" {
            assert_eq!(
                annotations["cert-manager.io/inject-ca-from"],
                format!("{NAMESPACE}/{RELEASE}-tls"),
                "{name}"
            );
            let certificate = named(&docs, "Certificate", &format!("{RELEASE}-tls"));
            assert_eq!(
                certificate["spec"]["dnsNames"],
                json!([
                    format!("{RELEASE}.{NAMESPACE}.svc"),
                    format!("{RELEASE}.{NAMESPACE}.svc.cluster.local")
                ])
            );
        } else {
            let bundle = base64::engine::general_purpose::STANDARD
                .decode(client["caBundle"].as_str().unwrap())
                .unwrap();
            assert!(
                String::from_utf8(bundle)
                    .unwrap()
                    .contains("BEGIN CERTIFICATE"),
                "{name}"
            );
        }
        // The Pods: restricted security, and never rewritten by themselves.
        let deployment = one(&docs, "Deployment");
        let pod = &deployment["spec"]["template"];
        assert_eq!(
            pod["metadata"]["labels"]["harbor-pilot.io/rewrite"],
            "disabled"
        );
        assert!(
            pod["metadata"]["annotations"]["checksum/config"].is_string(),
            "{name}"
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert_eq!(
            one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
            1,
            "{name}"
        );
    }
}

#[test]
fn a_generated_certificate_names_the_service_and_the_webhook_url_host() {
    let docs = template(&["--set", "webhook.url=https://127.0.0.1:8443/mutate"]);
    let secret = one(&docs, "Secret");
    let decode = |key: &str| secret_data(secret, key);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), decode("ca.crt")).unwrap();
    std::fs::write(dir.path().join("tls.crt"), decode("tls.crt")).unwrap();
    let output = run({
        let mut c = Command::new("openssl");
        c.args(["verify", "-CAfile"])
            .arg(dir.path().join("ca.crt"))
            .arg(dir.path().join("tls.crt"));
        c
    });
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
    let text = String::from_utf8(
        run({
            let mut c = Command::new("openssl");
            c.args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
                .arg(dir.path().join("tls.crt"));
            c
        })
        .stdout,
    )
    .unwrap();
    for name in [
        format!("DNS:{RELEASE}.{NAMESPACE}.svc"),
        format!("DNS:{RELEASE}.{NAMESPACE}.svc.cluster.local"),
        "IP Address:127.0.0.1".to_owned(),
    ] {
        assert!(text.contains(&name), "{name} not in {text}");
    }
    // The webhook configuration trusts exactly that CA and calls the URL.
    let webhook = &one(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(
        webhook["clientConfig"]["caBundle"],
        secret["data"]["ca.crt"]
    );
    assert_eq!(
        webhook["clientConfig"]["url"],
        "https://127.0.0.1:8443/mutate"
    );
    assert!(webhook["clientConfig"]["service"].is_null());
}

#[test]
fn the_schema_refuses_wrong_types_unknown_keys_and_unsafe_settings() {
    let home = tempfile::tempdir().unwrap();
    for (values, names) in [
        ("replicas: two\n", "replicas"),
        ("replica: 2\n", "replica"),
        (
            "config:\n  harbor: h.example.com\n  proxies: {docker.io: hub}\n  helth: {}\n",
            "helth",
        ),
        (
            "config:\n  harbor: h.example.com\n  proxies: {docker.io: Hub_Proxy}\n",
            "proxies",
        ),
        (
            "config:\n  harbor: h.example.com\n  proxies: {docker.io: hub}\n  health: {url: https://h/, interval: soon}\n",
            "interval",
        ),
        ("webhook:\n  timeoutSeconds: 10\n", "timeoutSeconds"),
        ("webhook:\n  url: http://127.0.0.1:8443/mutate\n", "url"),
        ("certificates:\n  mode: selfsigned\n", "mode"),
        (
            "monitoring:\n  serviceMonitor:\n    enable: true\n",
            "enable",
        ),
        ("image:\n  digest: latest\n", "digest"),
    ] {
        let file = home.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        let output = helm(home.path())
            .args(["template", RELEASE])
            .arg(chart())
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted:\n{values}");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(names),
            "{values}: {stderr}"
        );
    }
    // And what only the templates can check: they fail with what to set.
    for (args, message) in [
        (
            &["--set", "certificates.mode=secret"][..],
            "certificates.secretName",
        ),
        (
            &[
                "--set",
                "certificates.mode=secret",
                "--set",
                "certificates.secretName=s",
            ][..],
            "certificates.caBundle",
        ),
        (&["--set", "fallback.enabled=true"][..], "config.fallback"),
    ] {
        let output = helm(home.path())
            .args(["template", RELEASE])
            .arg(chart())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted {args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// The chart and `manifests/base` render the same webhook, Pod security, probes, args
/// and configuration: two ways to install, one set of facts.
#[test]
fn the_chart_does_not_drift_from_the_kustomize_base() {
    let base = documents(&tools::render(
        &common::project_root().join("manifests/base"),
    ));
    let chart = template(&[]);

    // The webhook: everything but where the CA comes from.
    let strip = |configuration: &Value| {
        let mut webhook = configuration["webhooks"][0].clone();
        webhook["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
        webhook
    };
    let chart_webhook = strip(one(&chart, "MutatingWebhookConfiguration"));
    let base_webhook = strip(one(&base, "MutatingWebhookConfiguration"));
    assert_eq!(
        chart_webhook,
        base_webhook,
        "{:#?}",
        common::json_diff(&chart_webhook, &base_webhook)
    );

    // The Deployment: the fields that make it safe and the way it runs.
    let chart_deployment = one(&chart, "Deployment");
    let base_deployment = one(&base, "Deployment");
    for pointer in [
        "/spec/replicas",
        "/spec/strategy",
        "/spec/template/spec/securityContext",
        "/spec/template/spec/automountServiceAccountToken",
        "/spec/template/spec/priorityClassName",
        "/spec/template/spec/terminationGracePeriodSeconds",
        "/spec/template/spec/containers/0/args",
        "/spec/template/spec/containers/0/ports",
        "/spec/template/spec/containers/0/readinessProbe",
        "/spec/template/spec/containers/0/livenessProbe",
        "/spec/template/spec/containers/0/resources",
        "/spec/template/spec/containers/0/securityContext",
        "/spec/template/spec/containers/0/volumeMounts",
        "/spec/template/metadata/labels/harbor-pilot.io~1rewrite",
    ] {
        let (c, b) = (
            chart_deployment.pointer(pointer),
            base_deployment.pointer(pointer),
        );
        assert!(b.is_some(), "the base has no {pointer}");
        assert_eq!(c, b, "{pointer} differs");
    }
    assert_eq!(
        chart_deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        base_deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "the chart's appVersion and the base's image tag"
    );
    // The Service: the same ports.
    assert_eq!(
        one(&chart, "Service")["spec"]["ports"],
        one(&base, "Service")["spec"]["ports"]
    );

    // The configuration: the same file, and the same summary from check-config.
    let config = |docs: &[Value]| {
        docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (chart_config, base_config) = (config(&chart), config(&base));
    let parsed = |text: &str| -> Value { yaml_serde::from_str(text).unwrap() };
    assert_eq!(parsed(&chart_config), parsed(&base_config));
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let summary =
            common::harbor_pilot_ok(&["check-config", "--config", path.to_str().unwrap()]);
        // The first line names the file.
        summary.split_once('\n').unwrap().1.to_owned()
    };
    assert_eq!(
        check("chart.yaml", &chart_config),
        check("base.yaml", &base_config)
    );
}

/// The monitoring objects are the component's files, not copies.
#[test]
fn monitoring_comes_from_the_monitoring_components_files() {
    let docs = template(&[
        "-f",
        chart().join("ci/monitoring-values.yaml").to_str().unwrap(),
    ]);
    let component = |file: &str| -> Value {
        yaml_serde::from_str(&common::read(format!(
            "manifests/components/monitoring/{file}"
        )))
        .unwrap()
    };
    assert_eq!(
        one(&docs, "PrometheusRule")["spec"],
        component("prometheusrule.yaml")["spec"]
    );
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"],
        component("servicemonitor.yaml")["spec"]["endpoints"]
    );
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    // It selects the chart's Service, on a port the Service has.
    let service = one(&docs, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port),
        "no Service port {port}"
    );
    let dashboard = named(&docs, "ConfigMap", &format!("{RELEASE}-dashboard"));
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(&common::read(
        "manifests/components/monitoring/dashboard.json",
    ))
    .unwrap();
    let rendered: Value =
        serde_json::from_str(dashboard["data"]["harbor-pilot.json"].as_str().unwrap()).unwrap();
    assert_eq!(rendered, shipped);
}

/// `helm install` into the real API server, the webhook on loopback with the chart's
/// own certificate: every object accepted, a Pod in an opted-in namespace rewritten;
/// `helm upgrade` keeps the CA; `helm uninstall` removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_in_a_real_api_server() {
    let cluster = Cluster::start(Options::default());
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = cluster.kubeconfig.clone();
    let env = ClusterEnv::new(cluster).await;

    // The webhook outside the cluster, as in development: its URL is known before the
    // chart makes the certificate it will serve.
    let mut pilot = Pilot::start(&common::example_config_path(), &[]);
    let values = home.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "webhook:\n  url: {}\nconfig:\n  health: null\n  fallback:\n    after: 30s\n\
             fallback:\n  enabled: true\nprewarm:\n  enabled: true\n",
            pilot.url
        ),
    )
    .unwrap();
    let helm_cluster = |args: &[&str]| {
        let mut command = helm(home.path());
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", NAMESPACE]);
        command
    };
    let mut install = helm_cluster(&["install", RELEASE]);
    install
        .arg(chart())
        .args(["--create-namespace", "--wait=false", "-f"])
        .arg(&values);
    run(install);

    // What the chart generated is what the webhook now serves.
    let secret: Value = get_json(
        &env,
        &["secret", "-n", NAMESPACE, &format!("{RELEASE}-tls")],
    );
    let decode = |key: &str| secret_data(&secret, key);
    pilot.install(&decode("tls.crt"), &decode("tls.key"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while pilot.reloads() == 0 {
        assert!(
            Instant::now() < deadline,
            "the chart's certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every object the chart made is in the cluster.
    let manifest =
        String::from_utf8(run(helm_cluster(&["get", "manifest", RELEASE])).stdout).unwrap();
    let installed = documents(&manifest);
    assert!(installed.len() >= 12, "{}", kinds(&installed).join(", "));
    for object in &installed {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind, name];
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        env.cluster.kubectl_ok(&args);
    }

    // A Pod in an opted-in namespace comes back rewritten: the API server called the
    // webhook with the chart's caBundle.
    let proxied = |image: &str| image == "harbor.example.com/docker-hub-proxy/library/nginx:alpine";
    env.wait_for_probe("the chart's webhook to rewrite", proxied)
        .await;

    // An upgrade with other values keeps the generated CA (running Pods keep trusting
    // it), and the webhook keeps working.
    let ca_before = secret["data"]["ca.crt"].clone();
    let mut upgrade = helm_cluster(&["upgrade", RELEASE]);
    upgrade
        .arg(chart())
        .args(["--wait=false", "-f"])
        .arg(&values)
        .args(["--set", "replicas=3", "--set", "extraLabels.team=platform"]);
    run(upgrade);
    let after: Value = get_json(
        &env,
        &["secret", "-n", NAMESPACE, &format!("{RELEASE}-tls")],
    );
    assert_eq!(
        after["data"], secret["data"],
        "the upgrade changed the certificate"
    );
    let configuration: Value = get_json(&env, &["mutatingwebhookconfiguration", RELEASE]);
    assert_eq!(
        configuration["webhooks"][0]["clientConfig"]["caBundle"],
        ca_before
    );
    assert_eq!(configuration["metadata"]["labels"]["team"], "platform");
    let deployment: Value = get_json(&env, &["deployment", "-n", NAMESPACE, RELEASE]);
    assert_eq!(deployment["spec"]["replicas"], 3);
    env.wait_for_probe("the upgraded webhook to rewrite", proxied)
        .await;

    // Uninstall removes everything, the webhook configuration included: Pods are
    // admitted unchanged again.
    run(helm_cluster(&["uninstall", RELEASE, "--wait"]));
    for object in &installed {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        assert_eq!(
            env.cluster.kubectl_ok(&args).trim(),
            "",
            "{kind} {name} is left"
        );
    }
    env.wait_for_probe("Pods admitted unchanged after uninstall", |image| {
        image == "nginx:alpine"
    })
    .await;
}

/// A key of a Secret's `data`, decoded.
fn secret_data(secret: &Value, key: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// `kubectl get <args> -o json`.
fn get_json(env: &ClusterEnv, args: &[&str]) -> Value {
    let args = [&["get"][..], args, &["-o", "json"]].concat();
    serde_json::from_str(&env.cluster.kubectl_ok(&args)).unwrap()
}
