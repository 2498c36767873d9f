//! The offline subcommands (`rewrite`, `review`, `scan`, `check-config`): read input,
//! run the same core the webhook runs, print. Streams are passed in so tests can hold
//! them; `main` passes the process's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::cli::{
    CertsArgs, CheckConfigArgs, ExportContainerdArgs, ExportTalosArgs, OutputFormat, ReviewArgs,
    RewriteArgs, ScanArgs,
};
use crate::config::{self, LoadError};
use harbor_pilot_core::admission::{self, Harbor, ReviewError};
use harbor_pilot_core::config::Config;
use harbor_pilot_core::redact;
use harbor_pilot_core::rules::Decision;
use harbor_pilot_core::scan::{self, ScanError};
use harbor_pilot_core::verdict::Verdict;

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// An input file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input to `review` is not an AdmissionReview.
    #[error("{}", path.display())]
    Review {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ReviewError,
    },
    /// A manifest given to `scan` cannot be scanned.
    #[error("{}", path.display())]
    Scan {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ScanError,
    },
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("cannot write output")]
    Write(#[from] std::io::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be made.
    #[error("cannot create certificates")]
    Certs(#[source] rcgen::Error),
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), CommandError> {
    crate::tls::write_file(path, contents.as_bytes(), mode).map_err(|source| {
        CommandError::WriteFile {
            path: path.to_owned(),
            source,
        }
    })
}

fn create_dir(path: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(path).map_err(|source| CommandError::WriteFile {
        path: path.to_owned(),
        source,
    })
}

/// `harbor-pilot certs`: a serving certificate for the Service, signed by the CA in the
/// output directory when there is one (a renewal that leaves the webhook's `caBundle`
/// as it is) or by a new CA, and the manifests for the static-certs overlay.
pub fn certs(args: &CertsArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let ca_cert_path = args.out.join("ca.crt");
    let ca_key_path = args.out.join("ca.key");
    let existing = match (read_optional(&ca_cert_path)?, read_optional(&ca_key_path)?) {
        (Some(cert_pem), Some(key_pem)) => Some(crate::tls::CaPair { cert_pem, key_pem }),
        // Half a CA (a ca.crt from an older version, which kept no key): a new CA,
        // bundled with the old one.
        _ => None,
    };
    let previous = read_optional(&ca_cert_path)?;
    let now = time::OffsetDateTime::now_utc();
    let ca = match &existing {
        Some(pair) if !args.new_ca => crate::certs::Ca::Existing(pair),
        _ => crate::certs::Ca::New {
            days: args.ca_days,
            // Keep trusting the previous CA while the new certificate reaches the pods.
            previous: previous
                .as_deref()
                .filter(|pem| crate::tls::not_after(pem).is_some_and(|t| t > now)),
        },
    };
    let request = crate::certs::Request {
        service: &args.service,
        namespace: &args.namespace,
        secret_name: &args.secret_name,
        extra_names: &args.extra_names,
        days: args.days,
    };
    let issued = crate::certs::issue(&request, ca, now).map_err(CommandError::Certs)?;
    create_dir(&args.out)?;
    let files = [
        ("ca.crt", issued.issued.ca_pem(), 0o644),
        ("ca.key", issued.issued.ca.key_pem.as_str(), 0o600),
        ("tls.crt", issued.issued.cert_pem.as_str(), 0o644),
        ("tls.key", issued.issued.key_pem.as_str(), 0o600),
        ("secret.yaml", issued.secret_yaml.as_str(), 0o600),
        (
            "webhook-ca-bundle.yaml",
            issued.ca_bundle_patch_yaml.as_str(),
            0o644,
        ),
    ];
    for (name, contents, mode) in files {
        let path = args.out.join(name);
        write_file(&path, contents, mode)?;
        writeln!(out, "wrote {}", path.display())?;
    }
    let date = |t: time::OffsetDateTime| t.date().to_string();
    let ca_until = crate::tls::not_after(issued.issued.ca_pem()).map_or_else(String::new, date);
    if issued.new_ca {
        writeln!(out, "made a new CA, valid until {ca_until}")?;
    } else {
        writeln!(
            out,
            "reused the CA in {}, valid until {ca_until}: the webhook's caBundle is unchanged",
            ca_cert_path.display()
        )?;
    }
    if issued.ca_bundle_pem != issued.issued.ca_pem() {
        writeln!(
            out,
            "the caBundle trusts the previous CA too, so pods still serving the old certificate \
             keep working; once they have reloaded (a minute or two), run certs again without \
             --new-ca and apply, to drop it"
        )?;
    }
    writeln!(
        out,
        "certificate for {}.{}.svc, valid until {}; keys are secret: do not commit them",
        args.service,
        args.namespace,
        date(issued.issued.not_after)
    )?;
    Ok(())
}

/// The file's text, `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CommandError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CommandError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `harbor-pilot export talos`: the patch on `out`.
pub fn export_talos(args: &ExportTalosArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let config = config::load(&args.config.config)?;
    out.write_all(harbor_pilot_core::export::talos_patch(config.rules.rule_set()).as_bytes())?;
    Ok(())
}

/// `harbor-pilot export containerd`: `<dir>/<upstream>/hosts.toml` files.
pub fn export_containerd(
    args: &ExportContainerdArgs,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let config = config::load(&args.config.config)?;
    for file in harbor_pilot_core::export::containerd_hosts(config.rules.rule_set()) {
        let dir = args.dir.join(&file.dir);
        create_dir(&dir)?;
        let path = dir.join("hosts.toml");
        write_file(&path, &file.contents, 0o644)?;
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

/// `harbor-pilot rewrite`: one line per image, the result, and with `--explain` a tab and
/// the reason.
pub fn rewrite(args: &RewriteArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let config = config::load(&args.config.config)?;
    for image in &args.images {
        let decision = config.rules.decide(image);
        // As the webhook's warnings do: credentials in an image are never printed.
        let result = match &decision {
            Decision::Rewrite(r) => redact::credentials(&r.image),
            Decision::Keep(_) => redact::credentials(image),
        };
        if args.explain {
            writeln!(out, "{result}\t{decision}")?;
        } else {
            writeln!(out, "{result}")?;
        }
    }
    Ok(())
}

/// `harbor-pilot review`: the AdmissionReview answer on `out`, byte for byte what the
/// webhook sends; with `--explain`, one line per image on `err`.
pub fn review(
    args: &ReviewArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CommandError> {
    let config = config::load(&args.config.config)?;
    let body = read_input(&args.input, stdin)?;
    let incoming = admission::parse_review(&body).map_err(|source| CommandError::Review {
        path: args.input.clone(),
        source,
    })?;
    let harbor = if args.harbor_unavailable {
        Harbor::Unavailable
    } else {
        Harbor::Available
    };
    let reviewed = admission::review(
        &incoming,
        &config.rules,
        harbor,
        &harbor_pilot_core::patch::all_served,
    );
    out.write_all(&admission::encode_review(&reviewed.response))?;
    writeln!(out)?;
    if args.explain {
        writeln!(err, "outcome: {}", reviewed.outcome.as_str())?;
        for change in &reviewed.changes {
            let result = match &change.verdict {
                Verdict::Rewrite(r) => &r.image,
                Verdict::Keep(_) => "(unchanged)",
            };
            writeln!(
                err,
                "{}\t{}\t{result}\t{}",
                change.slot,
                redact::credentials(change.slot.image),
                change.verdict
            )?;
        }
        if let Some(patch) = &reviewed.response.patch {
            // The answer carries it in base64; this is what it says.
            let patch: serde_json::Value =
                serde_json::from_slice(patch).map_err(std::io::Error::from)?;
            writeln!(err, "patch:")?;
            serde_json::to_writer_pretty(&mut *err, &patch).map_err(std::io::Error::from)?;
            writeln!(err)?;
        }
    }
    Ok(())
}

/// `harbor-pilot scan`: every image of every pod template in the manifests.
pub fn scan(
    args: &ScanArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), CommandError> {
    let config = config::load(&args.config.config)?;
    let mut rows = Vec::new();
    for path in &args.manifests {
        let bytes = read_input(path, stdin)?;
        let text = String::from_utf8(bytes).map_err(|e| CommandError::Read {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        rows.extend(
            scan::scan_manifests(&text, &config.rules).map_err(|source| CommandError::Scan {
                path: path.clone(),
                source,
            })?,
        );
    }
    match args.output {
        OutputFormat::Table => {
            out.write_all(scan::render_table(&rows, config.rules.harbor(), args.wide).as_bytes())?
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// `harbor-pilot check-config`: validates, then summarises what the rules do.
pub fn check_config(args: &CheckConfigArgs, out: &mut dyn Write) -> Result<(), CommandError> {
    let path = &args.config.config;
    let Config {
        rules,
        health,
        fallback,
        verify,
    } = config::load(path)?;
    writeln!(out, "{}: valid", path.display())?;
    writeln!(out, "harbor: {}", rules.harbor())?;
    let mut proxies: Vec<_> = rules.proxies().collect();
    proxies.sort_unstable();
    for (upstream, project) in proxies {
        writeln!(out, "  {upstream} -> {}/{project}", rules.harbor())?;
    }
    match health {
        None => writeln!(
            out,
            "health: none (always rewrites, even when Harbor is down)"
        )?,
        Some(h) => writeln!(
            out,
            "health: {:?} probe of {} every {:?} (timeout {:?}); down after {}, up after {}",
            h.kind,
            h.target.url,
            h.interval,
            h.timeout,
            count(h.failure_threshold, "failure", "failures"),
            count(h.success_threshold, "success", "successes"),
        )?,
    }
    match verify {
        None => writeln!(out, "verify: none (rewrites on the rules alone)")?,
        Some(v) => writeln!(
            out,
            "verify: each rewrite is checked against Harbor, waiting at most {:?} per \
             admission; answers kept {:?} (failures {:?})",
            v.budget, v.ttl, v.failure_ttl
        )?,
    }
    match fallback {
        None => writeln!(out, "fallback: none (the API server is never called)")?,
        Some(f) => writeln!(
            out,
            "fallback: containers stuck pulling from Harbor for {:?} go back to their original images",
            f.after
        )?,
    }
    Ok(())
}

/// `1 failure`, `2 failures`.
fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn read_input(path: &Path, stdin: &mut dyn Read) -> Result<Vec<u8>, CommandError> {
    let mut bytes = Vec::new();
    let result = if path == Path::new("-") {
        stdin.read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    result.map_err(|source| CommandError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes)
}
