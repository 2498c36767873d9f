//! `harbor-pilot export talos|containerd`: the output for the example configuration is
//! compared with hand-checked golden files in `fixtures/export/`, and parsed back as
//! YAML and TOML to check what Talos and containerd will read.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

const CONFIG: &str = "config/example.yaml";

use common::harbor_pilot_ok as harbor_pilot;

#[test]
fn talos_patch_matches_the_golden_file() {
    let patch = harbor_pilot(&["export", "talos", "--config", CONFIG]);
    assert_eq!(patch, common::read("tests/fixtures/export/talos.yaml"));

    let parsed: Value = yaml_serde::from_str(&patch).unwrap();
    let mirrors = parsed["machine"]["registries"]["mirrors"]
        .as_object()
        .unwrap();
    let mut upstreams: Vec<_> = mirrors.keys().map(String::as_str).collect();
    upstreams.sort_unstable();
    let mut expected: Vec<_> = common::EXAMPLE_PROXIES.iter().map(|(u, _)| *u).collect();
    expected.sort_unstable();
    assert_eq!(upstreams, expected);
    for (upstream, project) in common::EXAMPLE_PROXIES {
        let mirror = &mirrors[upstream];
        assert_eq!(
            mirror["endpoints"],
            serde_json::json!([format!("https://{}/v2/{project}", common::HARBOR)])
        );
        assert_eq!(mirror["overridePath"], true, "{upstream}");
        // Falling back to the upstream is Talos' default; it must not be switched off.
        assert!(mirror.get("skipFallback").is_none(), "{upstream}");
    }
}

#[test]
fn containerd_hosts_match_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let listing = harbor_pilot(&[
        "export",
        "containerd",
        "--config",
        CONFIG,
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(listing.lines().count(), common::EXAMPLE_PROXIES.len());
    for (upstream, project) in common::EXAMPLE_PROXIES {
        let written =
            std::fs::read_to_string(dir.path().join(upstream).join("hosts.toml")).unwrap();
        let golden = common::read(format!(
            "tests/fixtures/export/containerd/{upstream}/hosts.toml"
        ));
        assert_eq!(written, golden, "{upstream}");

        let parsed: toml::Table = written.parse().unwrap();
        let server = if upstream == "docker.io" {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{upstream}")
        };
        assert_eq!(
            parsed["server"].as_str(),
            Some(server.as_str()),
            "{upstream}"
        );
        let hosts = parsed["host"].as_table().unwrap();
        assert_eq!(hosts.len(), 1, "{upstream}");
        let harbor = &hosts[&format!("https://{}/v2/{project}", common::HARBOR)];
        let capabilities: Vec<_> = harbor["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(capabilities, ["pull", "resolve"]);
        assert_eq!(harbor["override_path"].as_bool(), Some(true));
    }
}

#[test]
fn a_bad_configuration_exports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "harbor: harbor\nproxies: {docker.io: p}\n").unwrap();
    let out = dir.path().join("out");
    let output = common::harbor_pilot(&[
        "export",
        "containerd",
        "--config",
        bad.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists(), "files written for an invalid configuration");
}
