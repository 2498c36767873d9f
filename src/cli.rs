//! The command line: subcommands, flags and their `HARBOR_PILOT_*` environment twins.
//! The `///` comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Print what each image becomes, one line per image (the input when unchanged).
    Rewrite(RewriteArgs),
    /// Answer one AdmissionReview (JSON) exactly as the webhook would.
    Review(ReviewArgs),
    /// Preview the rewrite across Kubernetes manifests, e.g. `helm template` output.
    Scan(ScanArgs),
    /// Validate a configuration file and summarise it.
    CheckConfig(CheckConfigArgs),
}

/// The configuration file flag shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (YAML); see config/example.yaml.
    #[arg(long, env = "HARBOR_PILOT_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
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
    fn config_is_required() {
        assert!(Cli::try_parse_from(["harbor-pilot", "check-config"]).is_err());
    }
}
