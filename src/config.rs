//! The configuration file on disk: read it, let the core parse and check it
//! ([`harbor_pilot_core::config`]), and check the files it names (`health.caFile`).
//! Validated once, at start-up or by `check-config`; every error names the file.

use std::path::{Path, PathBuf};

use harbor_pilot_core::config::{Config, ConfigError, Invalid};

use crate::tls::pem;

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("invalid config file {}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it: every problem found.
        #[source]
        source: ConfigError,
    },
}

impl LoadError {
    /// Every problem, one per entry, for printing one per line.
    pub fn problems(&self) -> Vec<String> {
        match self {
            LoadError::Read { source, .. } => vec![source.to_string()],
            LoadError::Invalid { source, .. } => source.problems(),
        }
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    };
    let config = Config::from_yaml(&text).map_err(invalid)?;
    let mut problems = Vec::new();
    if let Some(ca_file) = config.health.as_ref().and_then(|h| h.ca_file.as_ref()) {
        check_ca_file("health.caFile", ca_file, &mut problems);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(invalid(ConfigError::Invalid(problems)))
    }
}

/// A CA file named in the configuration must hold PEM certificates and nothing damaged.
fn check_ca_file(field: &str, path: &Path, problems: &mut Vec<Invalid>) {
    if let Err(error) = pem::read_certificates(path) {
        let reason = harbor_pilot_core::chain::one_line(&error);
        problems.push(Invalid::new(field, &path.display().to_string(), reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTH: &str = "harbor: h.example.com\nproxies: {docker.io: p}\nhealth:\n";

    #[test]
    fn load_reads_and_checks_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &config,
            format!("{HEALTH}  url: https://h/v2/\n  caFile: {}\n", ca.display()),
        )
        .unwrap();
        let message = harbor_pilot_core::chain::one_line(&load(&config).unwrap_err());
        assert!(
            message.contains("health.caFile") && message.contains("cannot be read"),
            "{message}"
        );
        std::fs::write(&ca, "no certificates here").unwrap();
        let message = harbor_pilot_core::chain::one_line(&load(&config).unwrap_err());
        assert!(message.contains("holds no PEM certificate"), "{message}");
        let dev =
            crate::tls::ensure_dev_certs(&dir.path().join("dev"), &crate::tls::provider()).unwrap();
        std::fs::copy(&dev.ca, &ca).unwrap();
        let health = load(&config).unwrap().health.unwrap();
        assert_eq!(health.ca_file.as_deref(), Some(ca.as_path()));
    }

    #[test]
    fn load_names_the_file() {
        let missing = Path::new("does/not/exist.yaml");
        let message = format!("{}", load(missing).unwrap_err());
        assert!(message.contains("does/not/exist.yaml"), "{message}");
    }
}
