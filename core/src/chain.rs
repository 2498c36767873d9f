//! An error and its causes on one line, `outer: inner: innermost`: what an HTTP 400
//! body, a log field and a command's last line say. (`anyhow`'s `{:#}` does the same in
//! `main`; the library crates do not use anyhow.)

use std::error::Error;

/// `error` followed by each of its sources, separated by `": "`.
pub fn one_line(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn joins_every_cause() {
        assert_eq!(one_line(&Outer(Inner)), "outer: inner");
        assert_eq!(one_line(&Inner), "inner");
    }
}
