//! The bound on an HTTP/1.1 request's head, kept apart from hyper's read buffer.
//!
//! Served through hyper-util's auto builder, hyper bounds an HTTP/1.1 head only by its
//! read buffer (`max_buf_size`), and the same buffer caps every read of the body: a
//! 64 KiB buffer, which bounded heads to 64 KiB, read a 50-container review in two
//! pieces, at a cost in throughput measured on such bodies. So the buffer keeps hyper's
//! size and this wrapper answers a head larger than the bound with 431, as hyper did,
//! before the service sees it. HTTP/2 header blocks are bounded by h2 itself
//! (`max_header_list_size`).
//!
//! hyper 1.12's `http1::Builder::max_header_size` is this bound inside hyper, but the
//! auto builder (hyper-util 0.1.21, which serves both protocols on one port) does not
//! pass it on; once it does, this wrapper can go.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use futures::future::{Either, Ready, ready};

/// `service`, with an HTTP/1.x request whose head holds more than `max_bytes` answered
/// 431 (and the connection closed) instead.
#[derive(Debug, Clone)]
pub(super) struct HeadBound<S> {
    service: S,
    max_bytes: usize,
    /// For the log line: whose request was refused.
    peer: SocketAddr,
}

impl<S> HeadBound<S> {
    pub(super) fn new(service: S, max_bytes: usize, peer: SocketAddr) -> Self {
        Self {
            service,
            max_bytes,
            peer,
        }
    }
}

impl<S, B> hyper::service::Service<Request<B>> for HeadBound<S>
where
    S: hyper::service::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn call(&self, request: Request<B>) -> Self::Future {
        if request.version() <= Version::HTTP_11 {
            let bytes = head_bytes(&request);
            if bytes > self.max_bytes {
                tracing::debug!(peer = %self.peer, bytes, limit = self.max_bytes,
                    "request head too large; answered 431 and closing");
                return Either::Left(ready(Ok(head_too_large())));
            }
        }
        Either::Right(self.service.call(request))
    }
}

/// The size of a request's head as it arrives: the request line, each header line and
/// the blank line. Counted from what hyper parsed (whitespace it trimmed is not counted;
/// the read buffer bounds that), so it costs a walk over a handful of headers.
fn head_bytes<B>(request: &Request<B>) -> usize {
    const CRLF: usize = 2;
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + " HTTP/1.1".len() + CRLF;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + CRLF)
        .sum();
    request_line + headers + CRLF
}

/// hyper's own answer to an oversized head: 431, no body, and the connection closed
/// (the rest of the request is not read).
fn head_too_large() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pad: usize) -> Request<()> {
        Request::post("/mutate?timeout=10s")
            .header("host", "127.0.0.1:8443")
            .header("x-pad", "a".repeat(pad))
            .body(())
            .unwrap()
    }

    #[test]
    fn head_bytes_counts_the_head_as_sent() {
        let sent = "POST /mutate?timeout=10s HTTP/1.1\r\n\
                    host: 127.0.0.1:8443\r\n\
                    x-pad: aaa\r\n\
                    \r\n";
        assert_eq!(head_bytes(&request(3)), sent.len());
        assert_eq!(head_bytes(&request(1003)), sent.len() + 1000);
    }

    #[test]
    fn head_bytes_counts_an_absolute_target() {
        let request = Request::get("http://example.com/x").body(()).unwrap();
        assert_eq!(
            head_bytes(&request),
            "GET http://example.com/x HTTP/1.1\r\n\r\n".len()
        );
    }

    /// Through the wrapper with a service that answers 200: the status that comes back.
    async fn status_through_bound(request: Request<()>) -> StatusCode {
        use hyper::service::Service as _;
        let ok = hyper::service::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let bound = HeadBound::new(ok, 1024, "127.0.0.1:1".parse().unwrap());
        bound
            .call(request.map(|()| Body::empty()))
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn only_http1_heads_over_the_bound_are_refused() {
        assert_eq!(status_through_bound(request(900)).await, StatusCode::OK);
        assert_eq!(
            status_through_bound(request(1100)).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let mut http10 = request(1100);
        *http10.version_mut() = Version::HTTP_10;
        assert_eq!(
            status_through_bound(http10).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        // HTTP/2 header blocks are h2's to bound (max_header_list_size).
        let mut http2 = request(1100);
        *http2.version_mut() = Version::HTTP_2;
        assert_eq!(status_through_bound(http2).await, StatusCode::OK);
    }

    #[test]
    fn oversized_heads_get_431_and_close_the_connection() {
        let response = head_too_large();
        assert_eq!(response.status(), 431);
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }
}
