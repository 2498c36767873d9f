//! [`UtcMicros`]: the log lines' timestamps, as tracing-subscriber's `SystemTime`
//! writes them, with the date and time of day formatted once a second.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `YYYY-MM-DDTHH:MM:SS`
const DATE_TIME_LEN: usize = 19;

/// RFC 3339 in UTC with microseconds (`2026-12-04T04:13:08.123456Z`), the text of
/// tracing-subscriber's `SystemTime` timer. That timer works out the calendar date and
/// formats seven numbers for every line, ~2.4k instructions of the one INFO line per
/// rewriting admission; here each thread keeps the text of the current second.
#[derive(Debug, Clone, Copy, Default)]
pub struct UtcMicros;

thread_local! {
    /// The second (since the epoch) last formatted on this thread, and its text.
    static SECOND: Cell<(u64, [u8; DATE_TIME_LEN])> = const { Cell::new((u64::MAX, [0; DATE_TIME_LEN])) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // A clock before 1970: tracing-subscriber's own text for it.
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let seconds = since_epoch.as_secs();
        let date_time = match SECOND.get() {
            (second, text) if second == seconds => text,
            _ => match date_time(seconds) {
                Some(text) => {
                    SECOND.set((seconds, text));
                    text
                }
                // Past year 9999, which tracing-subscriber writes as `+10000`.
                None => return tracing_subscriber::fmt::time::SystemTime.format_time(w),
            },
        };
        // Both are ASCII digits and separators.
        w.write_str(std::str::from_utf8(&date_time).map_err(|_| fmt::Error)?)?;
        let fraction = fraction(since_epoch.subsec_micros());
        w.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for `seconds` after the epoch, up to the end of year 9999.
fn date_time(seconds: u64) -> Option<[u8; DATE_TIME_LEN]> {
    let time = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    if time.year() > 9999 {
        return None;
    }
    let mut text = String::with_capacity(DATE_TIME_LEN);
    write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
    .ok()?;
    text.into_bytes().try_into().ok()
}

/// `.ffffffZ`: the last six decimal digits of `micros`.
fn fraction(micros: u32) -> [u8; 8] {
    let mut text = *b".000000Z";
    let mut rest = micros;
    for digit in text[1..7].iter_mut().rev() {
        // A remainder of ten is below 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let value = (rest % 10) as u8;
        *digit = b'0' + value;
        rest /= 10;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_of_day_are_written_as_rfc_3339() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (951_868_799, "2000-02-29T23:59:59"),
            (4_107_542_400, "2100-03-01T00:00:00"),
            (1_780_546_388, "2026-06-04T04:13:08"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(
                date_time(seconds).map(|t| String::from_utf8(t.to_vec()).unwrap()),
                Some(text.to_owned()),
                "{seconds}"
            );
        }
        assert_eq!(date_time(253_402_300_800), None, "year 10000");
        assert_eq!(date_time(u64::MAX), None);
    }

    #[test]
    fn fractions_have_six_digits() {
        for (micros, text) in [
            (0, ".000000Z"),
            (7, ".000007Z"),
            (123_456, ".123456Z"),
            (999_999, ".999999Z"),
        ] {
            assert_eq!(&fraction(micros), text.as_bytes());
        }
    }

    fn formatted(timer: &impl FormatTime) -> String {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    #[test]
    fn timestamps_read_as_tracing_subscribers_own() {
        // The two read the clock apart: compare when both fell in the same second
        // (a few tries are plenty), date and time of day whole, the fraction's shape.
        let mut compared = 0;
        for _ in 0..20 {
            let reference = formatted(&tracing_subscriber::fmt::time::SystemTime);
            let ours = formatted(&UtcMicros);
            let ours_again = formatted(&UtcMicros);
            assert_eq!(ours.len(), reference.len(), "{ours} / {reference}");
            assert_eq!(ours_again.len(), reference.len());
            if ours[..DATE_TIME_LEN] == reference[..DATE_TIME_LEN] {
                compared += 1;
            }
            for text in [&ours, &ours_again, &reference] {
                assert_eq!(&text[DATE_TIME_LEN..=DATE_TIME_LEN], ".");
                assert!(text.ends_with('Z'));
                assert!(
                    text[DATE_TIME_LEN + 1..text.len() - 1]
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                );
            }
        }
        assert!(compared > 0, "never in the same second as the reference");
    }
}
