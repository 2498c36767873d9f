//! The configuration on disk: read it, let the core parse and check it
//! ([`harbor_pilot_core::config`]), and check the files it names (`health.caFile`).
//! Validated once, at start-up or by `check-config`; every error names the file.
//!
//! `--config` is a file, or a directory whose `*.yaml` files (sorted by name, hidden
//! ones skipped) each hold some top-level sections: a mounted ConfigMap with one key
//! per section, so a kustomize component can add a section (`fallback`) as a key.

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

/// Reads and validates the configuration at `path` (a file or a directory).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let read = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |source| LoadError::Invalid {
        path: path.to_owned(),
        source,
    };
    let documents = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|file| {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                !name.starts_with('.')
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && file.is_file()
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(read(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the directory holds no *.yaml file",
            )));
        }
        let mut documents = Vec::with_capacity(files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
                path: file.clone(),
                source,
            })?;
            let name = file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            documents.push((name, text));
        }
        documents
    } else {
        vec![(String::new(), std::fs::read_to_string(path).map_err(read)?)]
    };
    let config = Config::from_documents(&documents).map_err(invalid)?;
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

    #[test]
    fn load_reads_a_directory_of_sections() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "harbor: h.example.com\nproxies: {docker.io: p}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("fallback.yaml"), "fallback: {after: 1m}\n").unwrap();
        // What a ConfigMap volume also holds: hidden entries, and other files.
        std::fs::create_dir(dir.path().join("..2026_12_01")).unwrap();
        std::fs::write(dir.path().join("README.txt"), "not config").unwrap();
        let config = load(dir.path()).unwrap();
        assert_eq!(
            config.fallback.map(|f| f.after),
            Some(std::time::Duration::from_secs(60))
        );
    }
}
