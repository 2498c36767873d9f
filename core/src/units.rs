//! Durations and sizes as people write them: `500ms`, `10s`, `2m`, `1h`; `4MiB`,
//! `512KiB`, `1048576`. Used by the command line and the configuration file.

use std::time::Duration;

/// Splits `"10s"` into `(10, "s")`; the number must come first.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    Some((digits.parse().ok()?, unit))
}

/// Parses `500ms`, `10s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 500ms, 10s, 2m or 1h"))?;
    let seconds = |factor: u64| {
        value
            .checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is out of range"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => Err(format!("{text:?} needs a unit: ms, s, m or h")),
    }
}

/// Parses a byte count: `1048576`, `512KiB`, `4MiB` (also `Ki`, `Mi`, `Gi`, `GiB`).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a size like 4MiB or 1048576"))?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use KiB, MiB or GiB)"
            ));
        }
    };
    value
        .checked_mul(factor)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("500ms", Ok(Duration::from_millis(500)))]
    #[case("10s", Ok(Duration::from_secs(10)))]
    #[case("2m", Ok(Duration::from_secs(120)))]
    #[case("10", Err(()))]
    #[case("s", Err(()))]
    #[case("1.5s", Err(()))]
    fn parses_durations(#[case] text: &str, #[case] expected: Result<Duration, ()>) {
        assert_eq!(parse_duration(text).map_err(|_| ()), expected);
    }

    #[rstest::rstest]
    #[case("1048576", Ok(1 << 20))]
    #[case("4MiB", Ok(4 << 20))]
    #[case("512Ki", Ok(512 << 10))]
    #[case("0", Err(()))]
    #[case("4MB", Err(()))]
    #[case("99999999999999999999GiB", Err(()))]
    fn parses_sizes(#[case] text: &str, #[case] expected: Result<usize, ()>) {
        assert_eq!(parse_size(text).map_err(|_| ()), expected);
    }
}
