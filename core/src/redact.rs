//! Keeps values that may be secret out of log lines and error messages.
//!
//! A Pod carries secrets in places the webhook never reads (env values, args,
//! `last-applied-configuration`), and nothing logs the body. What can still reach a log
//! or an answer is text the webhook builds from the input: serde's messages quote the
//! offending value (`invalid type: string "hunter2", expected a map`), and an image
//! written as a URL can hold credentials (`user:token@registry/app`). These functions
//! replace such values with `***` and keep everything that explains the problem.
//!
//! Pure: string functions only.

use std::borrow::Cow;

const HIDDEN: &str = "***";

/// `message` (a serde or serde_json error) with every quoted input value replaced:
/// `string "…"`, `` unknown variant `…` `` and `` character `…` ``. Field names, the
/// expectation and the position stay.
pub(crate) fn serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = [
            ("string \"", '"'),
            ("unknown variant `", '`'),
            ("character `", '`'),
        ]
        .into_iter()
        .filter_map(|(open, close)| rest.find(open).map(|at| (at, open, close)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, open, close)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + open.len()]);
        let value = &rest[at + open.len()..];
        let end = closing(value, close).unwrap_or(value.len());
        out.push_str(HIDDEN);
        rest = &value[end..];
    }
}

/// Where the value opened before `value` ends: the first `close` not escaped by a
/// backslash (serde writes strings with Rust's debug escapes).
fn closing(value: &str, close: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == close => return Some(i),
            _ => {}
        }
    }
    None
}

/// An image or URL with anything that looks like credentials hidden: the part before
/// an `@` that is followed by a `/` (`user:token@registry/app`, `https://u:p@host/x`).
/// A digest (`app@sha256:…`) has no `/` after its `@` and is kept.
pub fn credentials(image: &str) -> Cow<'_, str> {
    match image.rfind('@') {
        Some(at) if image[at + 1..].contains('/') => {
            let scheme = image.find("://").map_or(0, |i| i + 3).min(at);
            Cow::Owned(format!("{}{HIDDEN}{}", &image[..scheme], &image[at..]))
        }
        _ => Cow::Borrowed(image),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(
        "invalid type: string \"hunter2\", expected a map at line 1 column 40",
        "invalid type: string \"***\", expected a map at line 1 column 40"
    )]
    #[case(
        r#"invalid value: string "a \"quoted\" secret", expected x"#,
        r#"invalid value: string "***", expected x"#
    )]
    #[case(
        "unknown variant `s3cret`, expected one of `CREATE`, `UPDATE`",
        "unknown variant `***`, expected one of `CREATE`, `UPDATE`"
    )]
    #[case(
        "invalid type: character `x`, expected a string; then string \"two\"",
        "invalid type: character `***`, expected a string; then string \"***\""
    )]
    #[case(
        "invalid type: integer `5`, expected a string at line 1 column 3",
        "invalid type: integer `5`, expected a string at line 1 column 3"
    )]
    #[case("missing field `uid`", "missing field `uid`")]
    #[case("invalid type: string \"unterminated", "invalid type: string \"***")]
    #[case("string \"é\" and string \"\"", "string \"***\" and string \"***\"")]
    fn hides_quoted_values_in_serde_messages(#[case] message: &str, #[case] expected: &str) {
        assert_eq!(serde_message(message), expected);
    }

    #[rstest]
    #[case("nginx:alpine", "nginx:alpine")]
    #[case("nginx@sha256:abc", "nginx@sha256:abc")]
    #[case("ghcr.io/a/b:1@sha256:abc", "ghcr.io/a/b:1@sha256:abc")]
    #[case("user:token@registry.example.com/app", "***@registry.example.com/app")]
    #[case(
        "https://user:pw@registry.example.com/app",
        "https://***@registry.example.com/app"
    )]
    #[case("a@b@host/x", "***@host/x")]
    fn hides_credentials_in_images(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(credentials(input), expected);
    }
}
