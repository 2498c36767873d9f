//! The command line: subcommands, flags and their `HARBOR_PILOT_*` environment twins.
//! The `///` comments are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{Settings, TlsSource};
use crate::server::ConnectionLimits;
use crate::telemetry::LogFormat;
use crate::tls::CertPaths;
use harbor_pilot_core::units::{parse_duration, parse_size};

/// Sends Kubernetes image pulls through Harbor proxy-cache projects.
///
/// The subcommands other than `serve` run the webhook's own decision code on your
/// input, so you can see what it will do before a pod ever reaches it.
#[derive(Debug, Parser)]
#[command(name = "harbor-pilot", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook (HTTPS, POST /mutate) and the admin port (HTTP: /livez, /readyz,
    /// /metrics) until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Print what each image becomes, one line per image (the input when unchanged).
    Rewrite(RewriteArgs),
    /// Answer one AdmissionReview (JSON) exactly as the webhook would.
    Review(ReviewArgs),
    /// Preview the rewrite across Kubernetes manifests, e.g. `helm template` output.
    Scan(ScanArgs),
    /// Validate a configuration file and summarise it.
    CheckConfig(CheckConfigArgs),
    /// Make a CA and a serving certificate for the webhook's Service, with the Secret
    /// and caBundle manifests the static-certs overlay applies.
    Certs(CertsArgs),
    /// Print (or write) the same proxies as node-level registry mirrors.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Pull images through Harbor ahead of time, so its proxy cache has them when an
    /// upstream is down or rate-limited.
    Prewarm(PrewarmArgs),
}

/// `harbor-pilot prewarm`
#[derive(Debug, Args)]
pub struct PrewarmArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Also pull every blob (config and layers), not only the manifests: what makes
    /// Harbor store the whole image.
    #[arg(long)]
    pub layers: bool,
    /// Platforms to pull from a multi-platform image (repeatable).
    #[arg(long = "platform", value_name = "OS/ARCH", default_values_t = [String::from("linux/amd64"), String::from("linux/arm64")])]
    pub platforms: Vec<String>,
    /// Images pulled at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Also the images of the Pods in namespaces labelled harbor-pilot.io/rewrite=enabled
    /// (reads namespaces and pods; in-cluster, --kubeconfig or KUBECONFIG).
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig for --from-cluster.
    #[arg(long, env = "HARBOR_PILOT_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With --from-cluster, only these namespaces (repeatable; each must still be
    /// opted in): warm what one team is about to deploy.
    #[arg(long = "namespace", value_name = "NAME", requires = "from_cluster")]
    pub namespaces: Vec<String>,
    /// Files with one image per line (blank lines and `#` comments skipped), such as the
    /// prewarm component's ConfigMap (repeatable).
    #[arg(long = "list", value_name = "FILE")]
    pub lists: Vec<PathBuf>,
    /// CA certificates (PEM) for Harbor's pull host, besides the public roots; by default
    /// the configuration's verify.caFile.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Images, Kubernetes YAML files (their images, as `scan` finds them), or `-` (YAML
    /// on standard input). A source that names an existing file is a file.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
}

/// `harbor-pilot certs`
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, ca.key, tls.crt, tls.key, secret.yaml and
    /// webhook-ca-bundle.yaml into (created if missing; files are replaced). When it
    /// already holds ca.crt and ca.key, that CA signs the new certificate and the
    /// caBundle stays the same: renew by running the same command again.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The webhook's Service.
    #[arg(long, default_value = "harbor-pilot")]
    pub service: String,
    /// The webhook's namespace.
    #[arg(long, default_value = "harbor-pilot")]
    pub namespace: String,
    /// The TLS Secret the Deployment mounts.
    #[arg(long, default_value = "harbor-pilot-tls")]
    pub secret_name: String,
    /// More DNS names or IP addresses for the certificate, for a webhook the API server
    /// reaches by `clientConfig.url` (repeatable).
    #[arg(long = "extra-name", value_name = "NAME")]
    pub extra_names: Vec<String>,
    /// Validity of the serving certificate, in days (never past the CA's).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Validity of a new CA, in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub ca_days: u32,
    /// Make a new CA even when --out holds one. The caBundle then trusts the new and
    /// the previous CA, so the webhook keeps working while the new certificate reaches
    /// the pods; run certs again without it later to drop the old CA.
    #[arg(long)]
    pub new_ca: bool,
}

/// `harbor-pilot export`
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Print a Talos machine-config patch (machine.registries.mirrors).
    Talos(ExportTalosArgs),
    /// Write containerd hosts.toml files, one directory per upstream registry.
    Containerd(ExportContainerdArgs),
}

/// `harbor-pilot export talos`
#[derive(Debug, Args)]
pub struct ExportTalosArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// `harbor-pilot export containerd`
#[derive(Debug, Args)]
pub struct ExportContainerdArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// containerd's registry config_path (e.g. /etc/containerd/certs.d); gets
    /// UPSTREAM/hosts.toml for each upstream registry.
    #[arg(long, value_name = "OUT")]
    pub dir: PathBuf,
}

/// The configuration file flag shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML; see config/example.yaml), or a directory whose *.yaml
    /// files each hold some of its sections (a mounted ConfigMap).
    #[arg(long, env = "HARBOR_PILOT_CONFIG", value_name = "FILE|DIR")]
    pub config: PathBuf,
}

/// `harbor-pilot serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Address of the HTTPS webhook.
    #[arg(
        long,
        env = "HARBOR_PILOT_WEBHOOK_ADDR",
        default_value = "0.0.0.0:8443"
    )]
    pub webhook_addr: SocketAddr,
    /// Address of the plain-HTTP admin port.
    #[arg(long, env = "HARBOR_PILOT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// PEM certificate chain, leaf first. Without it (and --tls-key-file), a development
    /// certificate for localhost is generated into --dev-cert-dir.
    #[arg(
        long,
        env = "HARBOR_PILOT_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(
        long,
        env = "HARBOR_PILOT_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes.
    #[arg(long, env = "HARBOR_PILOT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Where the development CA and certificate are written (only without --tls-cert-file).
    #[arg(
        long,
        env = "HARBOR_PILOT_DEV_CERT_DIR",
        value_name = "DIR",
        default_value = "dev-certs"
    )]
    pub dev_cert_dir: PathBuf,
    /// Largest request body accepted (an AdmissionReview with a Pod and its oldObject can
    /// exceed 1.5 MiB); larger bodies get 413.
    #[arg(long, env = "HARBOR_PILOT_MAX_BODY_BYTES", default_value = "4MiB", value_parser = parse_size)]
    pub max_body_bytes: usize,
    /// Longest a client may take to send a request's body; slower ones get 408.
    #[arg(long, env = "HARBOR_PILOT_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// How long a connection may stay silent, or leave an answer unread, before it is
    /// closed. The API server reconnects as needed.
    #[arg(long, env = "HARBOR_PILOT_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Longest a TLS handshake may take.
    #[arg(long, env = "HARBOR_PILOT_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Longest a client may stay silent after the handshake, and an HTTP/1.1 client may
    /// take to send a request's headers.
    #[arg(long, env = "HARBOR_PILOT_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    #[arg(
        long,
        env = "HARBOR_PILOT_MAX_CONCURRENT_STREAMS",
        default_value_t = 128
    )]
    pub max_concurrent_streams: u32,
    /// Connections served at once; further ones wait in the kernel's accept queue
    /// until one closes.
    #[arg(
        long,
        env = "HARBOR_PILOT_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,
    /// PEM CA certificates that a client certificate must chain to. When set, only
    /// clients presenting such a certificate (the API server, configured through its
    /// AdmissionConfiguration) complete the TLS handshake.
    #[arg(long, env = "HARBOR_PILOT_CLIENT_CA_FILE", value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Kubeconfig for the fallback controller (only with a `fallback` section). Without
    /// it: `KUBECONFIG`, then the in-cluster service account.
    #[arg(long, env = "HARBOR_PILOT_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// On SIGTERM, how long to keep answering (while /readyz says not ready) before
    /// closing the port, so endpoints can drop this pod first.
    #[arg(long, env = "HARBOR_PILOT_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest in-flight requests may take to finish after the port closes.
    #[arg(long, env = "HARBOR_PILOT_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Log line format.
    #[arg(long, env = "HARBOR_PILOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The settings these flags describe.
    pub fn settings(&self) -> Settings {
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files(CertPaths {
                cert: cert.clone(),
                key: key.clone(),
            }),
            // clap makes each flag require the other.
            _ => TlsSource::Development {
                dir: self.dev_cert_dir.clone(),
            },
        };
        Settings {
            config: self.config.config.clone(),
            webhook_addr: self.webhook_addr,
            admin_addr: self.admin_addr,
            tls,
            tls_reload_interval: self.tls_reload_interval,
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: self.body_read_timeout,
            limits: ConnectionLimits {
                handshake_timeout: self.tls_handshake_timeout,
                header_read_timeout: self.header_read_timeout,
                max_concurrent_streams: self.max_concurrent_streams,
                max_connections: self.max_connections as usize,
                idle_timeout: self.idle_timeout,
            },
            client_ca_file: self.client_ca_file.clone(),
            kubeconfig: self.kubeconfig.clone(),
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
        }
    }
}

/// `harbor-pilot rewrite`
#[derive(Debug, Args)]
pub struct RewriteArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Add a tab and the reason for each answer.
    #[arg(long)]
    pub explain: bool,
    /// Image references as they appear in `image:` fields.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `harbor-pilot review`
#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Also print the decision for each image to standard error.
    #[arg(long)]
    pub explain: bool,
    /// Answer as if the health check found Harbor down (the fail-open answer).
    #[arg(long)]
    pub harbor_unavailable: bool,
    /// AdmissionReview JSON file; `-` reads standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    pub input: PathBuf,
}

/// `harbor-pilot scan`
#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Show long images whole in the table (they are cut in the middle to fit a
    /// terminal otherwise; JSON is never cut).
    #[arg(long)]
    pub wide: bool,
    /// Multi-document YAML files; `-` reads standard input.
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
}

/// `harbor-pilot check-config`
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// How `scan` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// A JSON array of rows for scripts.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rewrite_takes_images_and_explain() {
        let cli = Cli::try_parse_from([
            "harbor-pilot",
            "rewrite",
            "--config",
            "c.yaml",
            "--explain",
            "nginx",
            "quay.io/a/b",
        ])
        .unwrap();
        let Command::Rewrite(args) = cli.command else {
            panic!("not rewrite")
        };
        assert!(args.explain);
        assert_eq!(args.images, ["nginx", "quay.io/a/b"]);
        assert_eq!(args.config.config, PathBuf::from("c.yaml"));
    }

    #[test]
    fn review_reads_stdin_by_default() {
        let cli = Cli::try_parse_from(["harbor-pilot", "review", "--config", "c.yaml"]).unwrap();
        let Command::Review(args) = cli.command else {
            panic!("not review")
        };
        assert_eq!(args.input, PathBuf::from("-"));
    }

    #[test]
    fn serve_defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["harbor-pilot", "serve", "--config", "c.yaml"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let settings = args.settings();
        assert_eq!(settings.webhook_addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(settings.admin_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(settings.max_body_bytes, 4 << 20);
        assert_eq!(
            settings.tls,
            TlsSource::Development {
                dir: "dev-certs".into()
            }
        );
    }

    #[test]
    fn cert_and_key_come_together() {
        let only_cert = [
            "harbor-pilot",
            "serve",
            "--config",
            "c",
            "--tls-cert-file",
            "tls.crt",
        ];
        assert!(Cli::try_parse_from(only_cert).is_err());
        let both = [
            "harbor-pilot",
            "serve",
            "--config",
            "c",
            "--tls-cert-file",
            "a",
            "--tls-key-file",
            "b",
        ];
        let Command::Serve(args) = Cli::try_parse_from(both).unwrap().command else {
            panic!()
        };
        assert_eq!(
            args.settings().tls,
            TlsSource::Files(CertPaths {
                cert: "a".into(),
                key: "b".into()
            })
        );
    }

    #[test]
    fn config_is_required() {
        assert!(Cli::try_parse_from(["harbor-pilot", "check-config"]).is_err());
    }
}
