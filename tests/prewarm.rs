//! `harbor-pilot prewarm` against real registries: a multi-platform image pushed into the
//! upstream docker-registry, prewarmed through the pull-through cache behind the Harbor
//! stand-in (token authentication included); then the upstream stops, and what was
//! prewarmed still pulls, byte for byte, while what was not does not.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::registry::{HarborStandIn, PROJECT};

fn config(standin: &HarborStandIn, dir: &Path) -> PathBuf {
    let ca = dir.join("harbor-ca.pem");
    std::fs::write(&ca, &standin.ca.pem).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "harbor: {}\nproxies:\n  docker.io: {PROJECT}\nverify:\n  caFile: {}\n",
            standin.harbor(),
            ca.display()
        ),
    )
    .unwrap();
    path
}

fn prewarm(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_harbor-pilot"))
        .arg("prewarm")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_prewarmed_still_pulls_when_the_upstream_is_down() {
    let mut standin = HarborStandIn::start_with_token_auth();
    let app = standin.push_index("library/app", "1.0").await;
    standin.push_image("library/other", "1.0").await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&standin, dir.path());

    let output = prewarm(&config, &["--layers", "app:1.0"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let harbor = standin.harbor();
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{harbor}/{PROJECT}/library/app:1.0")))
        .unwrap_or_else(|| panic!("no row for the image:\n{stdout}"));
    let bytes: usize = app
        .platforms
        .iter()
        .flat_map(|p| &p.blobs)
        .map(|(_, blob)| blob.len())
        .sum();
    let short = &app.digest[..7 + 12];
    assert!(row.contains(short), "{row}");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns[2], "4",
        "two platforms, a config and a layer each: {row}"
    );
    assert!(
        row.contains(&common_human(bytes)),
        "{row} (pushed {bytes} bytes)"
    );
    assert!(row.ends_with("ok"), "{row}");
    assert!(
        stdout.ends_with("1 images through Harbor: 1 ok, 0 failed\n"),
        "{stdout}"
    );
    // Not a terminal: one plain progress line per image.
    assert!(stderr.contains("prewarm [1/1]"), "{stderr}");

    // Every blob the prewarm pulled lands in the cache, in the cache's own time.
    for (digest, _) in app.platforms.iter().flat_map(|p| &p.blobs) {
        standin.wait_until_cached("library/app", digest).await;
    }
    standin.stop_upstream();
    // The index, each platform's manifest and every blob: from Harbor's cache, intact.
    let (status, body) = standin
        .get_through_harbor(&format!("library/app/manifests/{}", app.digest))
        .await;
    assert_eq!((status, body), (200, app.index.clone()));
    for platform in &app.platforms {
        let digest = sha256(&platform.manifest);
        let (status, body) = standin
            .get_through_harbor(&format!("library/app/manifests/{digest}"))
            .await;
        assert_eq!((status, body), (200, platform.manifest.clone()));
        for (digest, blob) in &platform.blobs {
            let (status, body) = standin
                .get_through_harbor(&format!("library/app/blobs/{digest}"))
                .await;
            assert_eq!(status, 200, "{digest}");
            assert!(
                body == *blob,
                "{digest}: {} bytes served, {} pushed",
                body.len(),
                blob.len()
            );
        }
    }
    // Not prewarmed: gone with the upstream.
    let (status, _) = standin
        .get_through_harbor("library/other/manifests/1.0")
        .await;
    assert_ne!(status, 200);

    // An image Harbor cannot get now: a FAILED row and exit status 1.
    let output = prewarm(&config, &["other:1.0"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED: HTTP 404"), "{stdout}");
    assert!(
        text(&output.stderr).contains("1 of 1 images did not pull through Harbor"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_come_from_manifests_and_platforms_can_be_chosen() {
    let standin = HarborStandIn::start_with_token_auth();
    standin.push_index("library/app", "2.0").await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&standin, dir.path());
    let manifest = dir.path().join("deploy.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      \
         containers:\n        - {name: app, image: app:2.0}\n        - {name: local, image: registry.internal:5000/x:1}\n",
    )
    .unwrap();
    // One platform only, manifests only (no --layers).
    let output = prewarm(
        &config,
        &["--platform", "linux/arm64", manifest.to_str().unwrap()],
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(columns[0].ends_with("/library/app:2.0"), "{stdout}");
    // One platform: its config and layer, found but not pulled.
    assert_eq!(&columns[2..5], ["2", "0", "B"], "{stdout}");
    // A platform the image is not built for.
    let output = prewarm(&config, &["--platform", "linux/s390x", "app:2.0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).contains("FAILED: the index holds none of the requested platforms"),
        "{}",
        text(&output.stdout)
    );
}

fn sha256(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The report's way of writing a size.
fn common_human(bytes: usize) -> String {
    harbor_pilot_core::table::human_bytes(bytes as u64)
}
