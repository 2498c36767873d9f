//! A real Kubernetes control plane on loopback, the way controller-runtime's envtest
//! runs one: etcd and kube-apiserver (and, when asked, kube-controller-manager) built by
//! `scripts/cluster-tools` into `target/tools/bin`, on random ports, with certificates
//! generated here. No kubelet and no scheduler: Pods are stored and stay Pending, which
//! is all admission needs.
//!
//! Every process is killed by its PID when the [`Cluster`] is dropped, also when a test
//! panics. A test binary killed outright (SIGKILL) cannot clean up, so the PIDs are also
//! written to `target/tools/run/cluster.pids`, and the next start kills what a
//! previous run left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use tempfile::TempDir;

use super::certs::TestCa;
use super::process::{Proc, free_port, wait_listening};
use super::tools;

/// The admin's bearer token (static token file, group `system:masters`).
pub const ADMIN_TOKEN: &str = "harbor-pilot-e2e-admin-token";

const HOW: &str = "run scripts/cluster-tools (needs Go 1.26+)";

/// What to start besides etcd and the API server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// kube-controller-manager with the deployment, replicaset and job controllers:
    /// Deployments and Jobs then create their Pods through admission, as in a cluster.
    pub controller_manager: bool,
}

/// A running control plane.
pub struct Cluster {
    pub dir: TempDir,
    /// The CA of the API server's serving certificate.
    pub ca: TestCa,
    /// `https://127.0.0.1:<port>`
    pub url: String,
    /// A kubeconfig for the admin.
    pub kubeconfig: PathBuf,
    etcd: Proc,
    apiserver: Option<Proc>,
    apiserver_port: u16,
    etcd_port: u16,
    controller_manager: Option<Proc>,
    pids: PathBuf,
}

impl Cluster {
    /// Starts etcd and the API server and waits until `/readyz` answers ok.
    pub fn start(options: Options) -> Self {
        let etcd_bin = tools::require("etcd", HOW);
        let apiserver_bin = tools::require("kube-apiserver", HOW);
        tools::require("kubectl", HOW);
        let pids = reap_leftovers();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let ca = TestCa::new("kube-apiserver test CA");
        let serving = ca.leaf("kube-apiserver");
        let sa_key = KeyPair::generate().unwrap();
        for (name, contents) in [
            ("ca.crt", ca.pem.as_str()),
            ("apiserver.crt", serving.cert_pem.as_str()),
            ("apiserver.key", serving.key_pem.as_str()),
            ("sa.key", &sa_key.serialize_pem()),
            ("sa.pub", &sa_key.public_key_pem()),
            (
                "tokens.csv",
                &format!("{ADMIN_TOKEN},admin,admin,\"system:masters\"\n"),
            ),
            ("audit-policy.yaml", AUDIT_POLICY),
        ] {
            std::fs::write(root.join(name), contents).unwrap();
        }

        let (etcd, etcd_port) = start_etcd(&etcd_bin, &root);
        let mut cluster = Self {
            dir,
            ca,
            url: String::new(),
            kubeconfig: root.join("kubeconfig"),
            etcd,
            apiserver: None,
            apiserver_port: 0,
            etcd_port,
            controller_manager: None,
            pids,
        };
        cluster.start_apiserver_on(&apiserver_bin, None);
        if options.controller_manager {
            cluster.start_controller_manager();
        }
        cluster.record_pids();
        cluster
    }

    /// Stops the API server (etcd keeps the data).
    pub fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.kill();
        }
    }

    /// Starts the API server again on the same port and waits until it is ready.
    pub fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        let bin = tools::require("kube-apiserver", HOW);
        self.start_apiserver_on(&bin, Some(self.apiserver_port));
        self.record_pids();
    }

    fn start_apiserver_on(&mut self, bin: &Path, port: Option<u16>) {
        let root = self.dir.path().to_owned();
        for attempt in 0..5 {
            let port = port.unwrap_or_else(free_port);
            let log = root.join(format!("kube-apiserver-{attempt}.log"));
            let mut command = Command::new(bin);
            command.args(apiserver_args(&root, self.etcd_port, port));
            let mut process = Proc::spawn("kube-apiserver", &mut command, &log);
            if !wait_listening_for(&mut process, port, &log, Duration::from_secs(60)) {
                continue; // lost the port: try another
            }
            self.apiserver_port = port;
            self.url = format!("https://127.0.0.1:{port}");
            self.write_kubeconfig();
            self.apiserver = Some(process);
            self.wait_ready(&log);
            return;
        }
        panic!("kube-apiserver would not start; logs in {}", root.display());
    }

    fn write_kubeconfig(&self) {
        let ca = self.dir.path().join("ca.crt");
        std::fs::write(
            &self.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
                 users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
                 contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\n\
                 current-context: e2e\n",
                self.url,
                ca.display()
            ),
        )
        .unwrap();
    }

    /// Polls `/readyz` (every post-start hook done, etcd reachable) for up to 90 s.
    fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let output = self.kubectl(&["get", "--raw", "/readyz"]);
            if output.status.success() && output.stdout == b"ok" {
                return;
            }
            if self.apiserver.as_mut().is_none_or(Proc::exited) || Instant::now() > deadline {
                panic!(
                    "kube-apiserver did not become ready: {}\n--- log tail ---\n{}",
                    String::from_utf8_lossy(&output.stderr),
                    tail(log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn start_controller_manager(&mut self) {
        let bin = tools::require("kube-controller-manager", HOW);
        let root = self.dir.path().to_owned();
        let mut command = Command::new(bin);
        command.args([
            format!("--kubeconfig={}", self.kubeconfig.display()),
            // Only the controllers that turn workloads into Pods.
            "--controllers=deployment,replicaset,job".to_owned(),
            "--leader-elect=false".to_owned(),
            "--use-service-account-credentials=false".to_owned(),
            "--secure-port=0".to_owned(),
            "--concurrent-deployment-syncs=2".to_owned(),
            "--v=1".to_owned(),
        ]);
        self.controller_manager = Some(Proc::spawn(
            "kube-controller-manager",
            &mut command,
            &root.join("kube-controller-manager.log"),
        ));
    }

    /// Runs `kubectl` against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// Runs `kubectl` with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let kubectl = tools::require("kubectl", HOW);
        let mut child = Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", kubectl.display()));
        if let Some(input) = input {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// [`Cluster::kubectl`] that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// A `kube` client for the admin.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The API server's audit log (JSON lines), as written so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The API server's log so far (all starts).
    pub fn apiserver_log(&self) -> String {
        let mut out = String::new();
        for attempt in 0..5 {
            out.push_str(
                &std::fs::read_to_string(
                    self.dir
                        .path()
                        .join(format!("kube-apiserver-{attempt}.log")),
                )
                .unwrap_or_default(),
            );
        }
        out
    }

    fn record_pids(&self) {
        let mut pids = vec![self.etcd.pid()];
        pids.extend(self.apiserver.as_ref().map(Proc::pid));
        pids.extend(self.controller_manager.as_ref().map(Proc::pid));
        let text: Vec<String> = pids.iter().map(u32::to_string).collect();
        let _ = std::fs::write(&self.pids, text.join("\n"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Controllers first, then the API server, then its store.
        self.controller_manager = None;
        self.apiserver = None;
        self.etcd.kill();
        let _ = std::fs::remove_file(&self.pids);
        // CLUSTER_LOGS=DIR keeps the logs (API server, etcd, audit) for a look afterwards.
        if let Some(keep) = std::env::var_os("CLUSTER_LOGS") {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::copy(&path, keep.join(entry.file_name()));
                }
            }
        }
    }
}

/// The audit policy: request metadata for pods, which carries the annotations webhooks
/// return (`<webhook>/original-images` for `kubectl debug`).
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
rules:\n- level: Metadata\n  resources: [{group: \"\", resources: [\"pods\", \"pods/ephemeralcontainers\"]}]\n\
- level: None\n";

fn apiserver_args(root: &Path, etcd_port: u16, port: u16) -> Vec<String> {
    let file = |name: &str| root.join(name).display().to_string();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        // No kubernetes Service endpoints for a loopback address (envtest does the same).
        "--endpoint-reconciler-type=none".to_owned(),
        format!("--secure-port={port}"),
        format!("--tls-cert-file={}", file("apiserver.crt")),
        format!("--tls-private-key-file={}", file("apiserver.key")),
        format!("--client-ca-file={}", file("ca.crt")),
        format!("--cert-dir={}", file("apiserver-certs")),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        format!("--service-account-issuer=https://127.0.0.1:{port}"),
        format!("--service-account-key-file={}", file("sa.pub")),
        format!("--service-account-signing-key-file={}", file("sa.key")),
        "--authorization-mode=RBAC".to_owned(),
        format!("--token-auth-file={}", file("tokens.csv")),
        // No token Secrets or projected tokens without a controller to make them.
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        format!("--audit-policy-file={}", file("audit-policy.yaml")),
        format!("--audit-log-path={}", file("audit.log")),
        "--audit-log-mode=blocking".to_owned(),
        "--profiling=false".to_owned(),
        "--v=1".to_owned(),
    ]
}

fn start_etcd(bin: &Path, root: &Path) -> (Proc, u16) {
    for attempt in 0..5 {
        let (client, peer) = (free_port(), free_port());
        let log = root.join(format!("etcd-{attempt}.log"));
        let mut command = Command::new(bin);
        command.args([
            "--name=e2e".to_owned(),
            format!(
                "--data-dir={}",
                root.join(format!("etcd-{attempt}")).display()
            ),
            format!("--listen-client-urls=http://127.0.0.1:{client}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
            format!("--initial-cluster=e2e=http://127.0.0.1:{peer}"),
            // A test store: durability does not matter, speed on a shared disk does.
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ]);
        let mut process = Proc::spawn("etcd", &mut command, &log);
        if wait_listening(&mut process, client, &log) {
            return (process, client);
        }
    }
    panic!("etcd would not start; logs in {}", root.display());
}

fn wait_listening_for(process: &mut Proc, port: u16, log: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if process.exited() {
            return false;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "kube-apiserver did not listen on {port} within {limit:?}:\n{}",
        tail(log, 40)
    );
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Kills what a previous test run that was killed outright left running (its PIDs are in
/// the pid file, and only processes that are still one of our binaries are killed).
fn reap_leftovers() -> PathBuf {
    let dir = tools::tools_dir().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join(format!("cluster-{}.pids", std::process::id()));
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let is_pid_file = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cluster-") && n.ends_with(".pids"));
        if !is_pid_file {
            continue;
        }
        // A pid file whose owner still runs belongs to a concurrent test binary.
        let owner = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("cluster-")?.strip_suffix(".pids"))
            .and_then(|n| n.parse::<u32>().ok());
        if owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
            continue;
        }
        for pid in std::fs::read_to_string(&path).unwrap_or_default().lines() {
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let ours = ["etcd", "kube-apiserver", "kube-controller-manager"]
                .iter()
                .any(|name| exe.file_name().is_some_and(|f| f == *name));
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    pids
}
