//! Logging: `tracing` to standard error, as JSON lines or text. `RUST_LOG` overrides
//! the default level (`info`); `debug` adds each image's decision. No level logs a
//! request body or header: see [`harbor_pilot_core::redact`]. Lines reach stderr
//! through a writer thread ([`buffer`]), never from a request.

pub mod buffer;
mod clock;
mod json_line;

use std::io::IsTerminal as _;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

use buffer::{FlushGuard, LogBuffer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. Call once, from `main`, and keep the guard until
/// the end: dropping it writes the lines still buffered.
pub fn init(format: LogFormat) -> Option<FlushGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = match LogBuffer::start(std::io::stderr()) {
        Ok((buffer, guard)) => (Stderr::Buffered(buffer), Some(guard)),
        Err(error) => {
            eprintln!("harbor-pilot: logging without a writer thread: {error}");
            (Stderr::Direct, None)
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(json_line::JsonLines::new(clock::UtcMicros))
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("harbor-pilot: logging already initialised: {error}");
    }
    guard
}

/// Runs `f` with every event on this thread dropped (the warm-ups: their admissions
/// are made up and must not be logged), then recomputes tracing's callsite interest.
/// tracing caches each callsite's interest over every subscriber alive when it
/// registers: callsites first reached here got "always" from the real subscriber and
/// "never" from this one, which makes "sometimes", and every later event of theirs,
/// enabled or not, went back to the filter (for a rewriting admission's INFO line ~120
/// instructions and ~13 instruction-cache misses; hyper's and h2's disabled trace
/// events too, by callgrind). Once this subscriber is gone the recomputed interest is
/// the real subscriber's alone.
pub fn without_logging<T>(f: impl FnOnce() -> T) -> T {
    let result = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f);
    tracing::callsite::rebuild_interest_cache();
    result
}

/// Where log lines go: the writer thread's buffer, or (when no thread could be
/// started) straight to stderr.
#[derive(Debug, Clone)]
enum Stderr {
    Buffered(LogBuffer),
    Direct,
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Buffered(buffer) => buffer.write(buf),
            Self::Direct => std::io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Buffered(buffer) => buffer.write_all(buf),
            Self::Direct => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Buffered(buffer) => buffer.flush(),
            Self::Direct => std::io::stderr().flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
