//! Errors returned by builder supervision.

use std::path::PathBuf;
use std::time::Duration;

use crate::platform::Platform;

/// Error from [`crate::BuilderManager`].
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The workspace name cannot be used as a folder name.
    #[error(
        "invalid workspace name {0:?}: it must be non-empty and contain no '/', '..' or NUL byte"
    )]
    InvalidWorkspace(String),

    /// A setting in [`crate::BuilderConfig`] is unusable.
    #[error("invalid builder configuration: {0}")]
    InvalidConfig(String),

    /// A file or folder operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// The attempted operation, such as "create the state folder".
        action: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// buildkitd could not be executed at all.
    #[error(
        "failed to run {program}: {source}; install buildkitd with scripts/setup.sh or set \
         the buildkitd path with `drydock server --buildkitd PATH`"
    )]
    Spawn {
        /// The executable that was run.
        program: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// buildkitd exited before it served on its socket.
    #[error(
        "buildkitd for workspace {workspace:?} ({platform}) exited during start with {status}; \
         last lines of {}:\n{log_tail}", log_file.display()
    )]
    ExitedDuringStart {
        /// Workspace of the builder.
        workspace: String,
        /// Platform of the builder.
        platform: Platform,
        /// Exit status as the operating system reports it.
        status: String,
        /// Log file with buildkitd's output.
        log_file: PathBuf,
        /// Last lines of the log file.
        log_tail: String,
    },

    /// buildkitd did not serve on its socket within the start timeout.
    #[error(
        "timed out after {timeout:?} waiting for buildkitd for workspace {workspace:?} \
         ({platform}) to serve on {}; it was stopped. Last lines of {}:\n{log_tail}",
        socket.display(), log_file.display()
    )]
    StartTimedOut {
        /// Workspace of the builder.
        workspace: String,
        /// Platform of the builder.
        platform: Platform,
        /// The start timeout that passed.
        timeout: Duration,
        /// The socket that never served.
        socket: PathBuf,
        /// Log file with buildkitd's output.
        log_file: PathBuf,
        /// Last lines of the log file.
        log_tail: String,
    },

    /// A signal could not be sent to a buildkitd process.
    #[error("failed to send {signal} to buildkitd process {pid}: {source}")]
    Signal {
        /// Process id of the buildkitd.
        pid: u32,
        /// Signal name, such as SIGTERM.
        signal: &'static str,
        /// The underlying error.
        source: nix::Error,
    },

    /// The manager is shutting down and starts no more builders.
    #[error("the builder manager is shutting down; no new builders are started")]
    ShuttingDown,
}

impl BuilderError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        BuilderError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
