//! Logging: `tracing` to standard error, as JSON lines or text. `RUST_LOG` overrides
//! the default level (`info`); `debug` adds each image's decision. No level logs a
//! request body or header: see [`harbor_pilot_core::redact`]. Lines reach stderr
//! through a writer thread ([`buffer`]), never from a request.

pub mod buffer;
mod clock;
mod json_line;

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::util::SubscriberInitExt as _;

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
    let (writer, guard) = match LogBuffer::start(std::io::stderr()) {
        Ok((buffer, guard)) => (Stderr::Buffered(buffer), Some(guard)),
        Err(error) => {
            eprintln!("harbor-pilot: logging without a writer thread: {error}");
            (Stderr::Direct, None)
        }
    };
    let _ = FORMAT.set(format);
    if let Err(error) = subscriber(format, writer).try_init() {
        eprintln!("harbor-pilot: logging already initialised: {error}");
    }
    guard
}

/// The format [`init`] was given, for the warm-ups' subscriber.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The subscriber of [`init`], writing to `writer`. One type whatever the writer, so
/// that the warm-ups' subscriber (writing nowhere) runs the machine code of the real one.
fn subscriber(format: LogFormat, writer: Stderr) -> Dispatch {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => Dispatch::new(builder.finish()),
        LogFormat::Json => Dispatch::new(
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(json_line::JsonLines::new(clock::UtcMicros))
                .finish(),
        ),
    }
}

/// A subscriber like the real one (its format, its level) whose lines go nowhere: the
/// warm-ups' admissions are made up and must not be logged, but formatting their lines
/// runs the formatting code before the first real admission does. (Dropping every
/// event instead left the first real admission's log line to run ~10 cache lines of
/// code for the first time, by callgrind.) Without [`init`] (tests) events are dropped.
pub fn discarding() -> Dispatch {
    match FORMAT.get() {
        Some(format) => subscriber(*format, Stderr::Discard),
        None => Dispatch::new(tracing::subscriber::NoSubscriber::default()),
    }
}

/// Runs `f` with every line of this thread's events discarded ([`discarding`]), then
/// recomputes tracing's callsite interest. tracing caches each callsite's interest over
/// every subscriber alive when it registers: had the two subscribers disagreed (this
/// one used to drop everything) a callsite first reached here got "sometimes", and
/// every later event of it, enabled or not, went back to the filter (for a rewriting
/// admission's INFO line ~120 instructions and ~13 instruction-cache misses; hyper's and
/// h2's disabled trace events too, by callgrind). Once this subscriber is gone the
/// recomputed interest is the real subscriber's alone.
pub fn without_logging<T>(f: impl FnOnce() -> T) -> T {
    let result = tracing::dispatcher::with_default(&discarding(), f);
    tracing::callsite::rebuild_interest_cache();
    result
}

/// Where log lines go: the writer thread's buffer, or (when no thread could be
/// started) straight to stderr; nowhere for the warm-ups ([`discarding`]).
#[derive(Debug, Clone)]
enum Stderr {
    Buffered(LogBuffer),
    Direct,
    Discard,
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Buffered(buffer) => buffer.write(buf),
            Self::Direct => std::io::stderr().write(buf),
            Self::Discard => Ok(buf.len()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Buffered(buffer) => buffer.write_all(buf),
            Self::Direct => std::io::stderr().write_all(buf),
            Self::Discard => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Buffered(buffer) => buffer.flush(),
            Self::Direct => std::io::stderr().flush(),
            Self::Discard => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
