//! The tunnel that carries BuildKit's gRPC connections from a client's local proxy to the
//! server, which splices each one onto the workspace's builder socket.
//!
//! A tunnel is one HTTP/1.1 request upgraded to a raw byte stream (`Upgrade: drydock-buildkit`),
//! authenticated with the workspace token in `Authorization: Bearer`. After the `101` response
//! neither side parses what flows through: BuildKit's own session (build context, secrets,
//! registry credentials) passes unchanged, so credentials are never stored on builders.

mod dial;
mod grpc_error;
mod tls;

use tokio::io::{AsyncRead, AsyncWrite};

pub use dial::{dial, DialError, Endpoint, Tunnel};
pub use grpc_error::{serve_grpc_error, GrpcCode};
pub use tls::{client_tls_config, TlsError};

/// Path of the tunnel endpoint on the server.
pub const TUNNEL_PATH: &str = "/v1/tunnel/buildkit";

/// Value of the `Upgrade` header that requests a tunnel.
pub const UPGRADE_PROTOCOL: &str = "drydock-buildkit";

/// Byte counts moved by [`splice`], from the tunnel to the builder and back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    pub to_builder: u64,
    pub from_builder: u64,
}

/// Copies bytes both ways between a tunnel and a builder connection until both sides close.
pub async fn splice<A, B>(mut tunnel: A, mut builder: B) -> std::io::Result<SpliceStats>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (to_builder, from_builder) =
        tokio::io::copy_bidirectional(&mut tunnel, &mut builder).await?;
    Ok(SpliceStats {
        to_builder,
        from_builder,
    })
}
