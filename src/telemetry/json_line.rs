//! [`JsonLines`]: the JSON log line, written straight into the line buffer.
//!
//! tracing-subscriber's JSON formatter serialises every field through serde_json over
//! an `io::Write`-to-`fmt::Write` adaptor that checks each piece is UTF-8 again; the
//! one INFO line per rewriting admission cost ~16k instructions, about 5 % of the whole
//! request. This writes the same line — same members, same order, same escaping — for
//! the events that carry no span and do not come from the `log` crate, and hands every
//! other event to tracing-subscriber's formatter, so the output never differs (a test
//! holds the two to the same bytes).

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter: `{"timestamp":…,"level":…,<fields>,"target":…}` per line.
#[derive(Debug)]
pub struct JsonLines<T> {
    timer: T,
    /// tracing-subscriber's own, as configured before: for events in a span (`span`
    /// is then written too) and events from the `log` crate (normalised metadata).
    reference: Format<Json, T>,
}

impl<T: FormatTime + Clone> JsonLines<T> {
    /// Lines stamped by `timer`.
    pub fn new(timer: T) -> Self {
        let reference = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_timer(timer.clone());
        Self { timer, reference }
    }
}

impl<S, T> FormatEvent<S, JsonFields> for JsonLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span || metadata.fields().field("log.target").is_some() {
            return self.reference.format_event(ctx, writer, event);
        }
        // The line is put together in a String of this thread, with calls the compiler
        // can inline, and handed to the writer in one piece. Written piece by piece
        // through the writer (a `dyn fmt::Write`, ~80 calls), the INFO line of a
        // rewriting admission cost ~310 ns, now ~230 (a million lines in a loop). A
        // line formatted while another is (a field's `Debug` that logs: the global
        // subscriber does not stop it) gets a String of its own.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                let result = self
                    .write_line(&mut line, event)
                    .and_then(|()| writer.write_str(&line));
                if line.capacity() > MAX_KEPT_LINE {
                    *line = String::new();
                }
                result
            }
            Err(_) => {
                let mut line = String::new();
                self.write_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

/// A line buffer that grew past this (a long warning) is not kept for the next line.
const MAX_KEPT_LINE: usize = 16 * 1024;

thread_local! {
    /// Where this thread puts its lines together.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<T: FormatTime> JsonLines<T> {
    fn write_line(&self, line: &mut String, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        line.push_str("{\"timestamp\":\"");
        self.timer.format_time(&mut Writer::new(line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(metadata.level().as_str());
        line.push('"');
        let mut fields = Fields {
            line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str(",\"target\":");
        write_string(line, metadata.target());
        line.push_str("}\n");
        Ok(())
    }
}

/// Writes each field as `,"name":value`, the way tracing-serde's map visitor does.
struct Fields<'a> {
    line: &'a mut String,
    result: fmt::Result,
}

impl Fields<'_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.line.push(',');
            write_string(self.line, field.name());
            self.line.push(':');
            self.result = value(self.line);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| {
            w.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's float formatting (and `null` for NaN and infinities).
        let text = serde_json::to_string(&value).map_err(|_| fmt::Error);
        self.member(field, |w| {
            w.push_str(&text?);
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| {
            write_string(w, value);
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.push('"');
            write!(Escaping(w), "{value:?}")?;
            w.push('"');
            Ok(())
        });
    }
}

/// `text` as a JSON string, escaped as serde_json escapes.
fn write_string(line: &mut String, text: &str) {
    line.push('"');
    Escaping(line).push_escaped(text);
    line.push('"');
}

/// Escapes what passes through as serde_json does inside a string: `"`, `\` and the
/// control characters, with the short forms where JSON has them.
struct Escaping<'a>(&'a mut String);

impl Escaping<'_> {
    fn push_escaped(&mut self, text: &str) {
        // Most values (uids, names, messages) need no escape: one check the compiler
        // vectorises, one copy.
        let special = text.bytes().fold(false, |special, byte| {
            special | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
        });
        if !special {
            self.0.push_str(text);
            return;
        }
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.push_str(&text[plain..at]);
            if escape.is_empty() {
                // Writing to a String cannot fail.
                let _ = write!(self.0, "\\u{byte:04x}");
            } else {
                self.0.push_str(escape);
            }
            plain = at + 1;
        }
        self.0.push_str(&text[plain..]);
    }
}

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_escaped(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone)]
    struct FixedTime;

    impl FormatTime for FixedTime {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-01T08:00:00.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("it broke: \"{0}\"")]
    struct Broke(&'static str);

    /// A field whose `Debug` logs while its line is formatted.
    struct Logs;

    impl fmt::Debug for Logs {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            tracing::info!(inner = "yes", "logged while formatting");
            f.write_str("logs")
        }
    }

    /// Every kind of field, escapes, spans entered and not, levels.
    fn events() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} del \u{7f} é 🚀";
        tracing::info!(
            uid = "u-1",
            namespace = "ns",
            rewritten = 3_u64,
            "images rewritten"
        );
        tracing::warn!(
            flag = true,
            negative = -5_i64,
            big = u128::MAX,
            ratio = 0.1_f64,
            nan = f64::NAN,
            whole = 2.0_f64,
            text,
            debug = ?vec![text, "b"],
            display = %text,
            error = &Broke("x") as &(dyn std::error::Error + 'static),
            "a {} message with {:?}", "formatted", text
        );
        tracing::error!(only = "fields");
        tracing::info!(field = ?Logs, "outer");
        tracing::info!(target: "custom::target", "message \u{1b}[31m only");
        let span = tracing::info_span!("admission", uid = "u-2", dry_run = false);
        let _entered = span.enter();
        tracing::info!(rewritten = 1_u64, "in a span");
        let debug_span = tracing::debug_span!("hidden", x = 1);
        let _inner = debug_span.enter();
        tracing::info!("in a disabled span inside an enabled one");
    }

    fn capture(ours: bool) -> String {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(tracing::Level::INFO);
        if ours {
            let subscriber = builder
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines::new(FixedTime))
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        } else {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_timer(FixedTime)
                .finish();
            tracing::subscriber::with_default(subscriber, events);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_what_tracing_subscribers_json_formatter_writes() {
        let (ours, reference) = (capture(true), capture(false));
        // A subscriber set for a scope drops the event logged while formatting; the
        // outer line is whole.
        assert_eq!(ours.lines().count(), 7, "{ours}");
        assert!(ours.contains(r#""message":"outer","field":"logs""#));
        for (ours, reference) in ours.lines().zip(reference.lines()) {
            assert_eq!(ours, reference);
            serde_json::from_str::<serde_json::Value>(ours).unwrap();
        }
        assert_eq!(ours, reference);
    }
}
