use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a connection served with errors stays open for the client's further calls.
const ERROR_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// gRPC status codes the proxy returns when it fails a call itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    Unavailable = 14,
    Unauthenticated = 16,
    PermissionDenied = 7,
    InvalidArgument = 3,
    FailedPrecondition = 9,
}

/// Serves an HTTP/2 (h2c) connection from a gRPC client by failing every call with `code`
/// and `message`, so the client shows the reason (for example "token expired ... run the
/// exchange again") instead of a bare EOF.
pub async fn serve_grpc_error<S>(io: S, code: GrpcCode, message: String)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let encoded = percent_encode_grpc_message(&message);
    let service = service_fn(move |_request: Request<Incoming>| {
        let encoded = encoded.clone();
        async move {
            // A "trailers-only" response: the status travels in the headers of an empty reply.
            let response = Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-status", (code as i32).to_string())
                .header("grpc-message", encoded)
                .body(Empty::<Bytes>::new())
                .expect("static response parts are valid");
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(ERROR_CONNECTION_LIFETIME, connection).await;
}

/// Percent-encodes a `grpc-message` value as the gRPC HTTP/2 protocol requires: bytes outside
/// printable ASCII, and `%` itself.
fn percent_encode_grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_encoding_escapes_percent_and_non_ascii() {
        assert_eq!(percent_encode_grpc_message("50% done"), "50%25 done");
        assert_eq!(percent_encode_grpc_message("a\nb"), "a%0Ab");
        assert_eq!(percent_encode_grpc_message("é"), "%C3%A9");
    }
}
