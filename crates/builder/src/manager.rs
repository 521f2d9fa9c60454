//! The builder manager: one buildkitd per (workspace, platform), started on first use and
//! stopped when idle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::builder::{Builder, BuilderState};
use crate::config::BuilderConfig;
use crate::error::BuilderError;
use crate::paths::{
    builders_dir, ensure_private_dir, socket_dir, validate_workspace, BuilderPaths,
};
use crate::platform::Platform;
use crate::process::{self, terminate, wait_until_gone, StopOutcome, STOP_GRACE};

/// Supervises the buildkitd processes of one data folder. Only one manager may use a data
/// folder at a time, because `new` stops every builder it finds there.
pub struct BuilderManager {
    config: BuilderConfig,
    socket_dir: PathBuf,
    builders: Mutex<HashMap<(String, Platform), Arc<Builder>>>,
    shutting_down: AtomicBool,
    shutdown_notify: Arc<Notify>,
}

/// A claim on a running builder. While any lease of a builder is alive the builder does not
/// count as idle. Dropping the lease releases it.
pub struct BuilderLease {
    builder: Arc<Builder>,
}

/// Snapshot of one builder for status pages and admin commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuilderStatus {
    /// Workspace the builder belongs to.
    pub workspace: String,
    /// Platform the builder runs.
    pub platform: Platform,
    /// Process id of buildkitd, while one runs.
    pub pid: Option<u32>,
    /// Life-cycle state.
    pub state: BuilderState,
    /// Leases currently held, one per client connection.
    pub connections: usize,
    /// When the builder last became idle, while it runs without connections.
    #[serde(serialize_with = "serialize_unix_secs")]
    pub idle_since: Option<SystemTime>,
    /// Unix socket that buildkitd serves on.
    pub socket: PathBuf,
}

impl BuilderManager {
    /// Stops builders left running by a previous server process (pid files), then returns.
    pub async fn new(config: BuilderConfig) -> Result<Arc<BuilderManager>, BuilderError> {
        config.validate()?;
        let mut config = config;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| BuilderError::io("create the data folder", &config.data_dir, e))?;
        // Absolute paths keep pid-file checks and socket paths independent of the working
        // folder.
        config.data_dir = std::fs::canonicalize(&config.data_dir)
            .map_err(|e| BuilderError::io("resolve the data folder", &config.data_dir, e))?;
        let socket_dir = socket_dir(&config.data_dir);
        ensure_private_dir(&builders_dir(&config.data_dir))?;
        ensure_private_dir(&socket_dir)?;

        stop_leftover_builders(&builders_dir(&config.data_dir)).await?;
        for socket in process::remove_sockets(&socket_dir) {
            tracing::debug!(socket = %socket.display(), "removed stale builder socket");
        }

        let manager = Arc::new(BuilderManager {
            config,
            socket_dir,
            builders: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            shutdown_notify: Arc::new(Notify::new()),
        });
        tokio::spawn(reap_idle_builders(
            Arc::downgrade(&manager),
            Arc::clone(&manager.shutdown_notify),
        ));
        Ok(manager)
    }

    /// Starts the builder for (workspace, platform) unless it runs, waits until its socket
    /// serves gRPC, and returns a lease. While any lease is alive the builder is not idle.
    pub async fn acquire(
        self: &Arc<Self>,
        workspace: &str,
        platform: Platform,
    ) -> Result<BuilderLease, BuilderError> {
        validate_workspace(workspace)?;
        self.check_running()?;
        let builder = self.builder(workspace, platform);

        let _lifecycle = builder.lifecycle.lock().await;
        self.check_running()?;
        if !builder.is_running() {
            builder.start(&self.config).await?;
        }
        builder.add_lease();
        Ok(BuilderLease {
            builder: Arc::clone(&builder),
        })
    }

    /// Returns a snapshot of every builder this manager has used, sorted by workspace and
    /// platform.
    pub fn status(&self) -> Vec<BuilderStatus> {
        let builders: Vec<Arc<Builder>> = self.lock_builders().values().cloned().collect();
        let mut statuses: Vec<BuilderStatus> = builders
            .iter()
            .map(|builder| {
                let inner = builder.lock_inner();
                BuilderStatus {
                    workspace: builder.workspace.clone(),
                    platform: builder.platform,
                    pid: inner.process.as_ref().map(|process| process.pid),
                    state: inner.state,
                    connections: inner.leases,
                    idle_since: inner.idle_since.map(|(_, wall)| wall),
                    socket: builder.paths.socket.clone(),
                }
            })
            .collect();
        statuses.sort_by(|a, b| (&a.workspace, a.platform).cmp(&(&b.workspace, b.platform)));
        statuses
    }

    /// Stops every builder (SIGTERM, then SIGKILL after a grace period). Later acquires fail
    /// with [`BuilderError::ShuttingDown`].
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown_notify.notify_waiters();
        let builders: Vec<Arc<Builder>> = self.lock_builders().values().cloned().collect();
        let mut stops = tokio::task::JoinSet::new();
        for builder in builders {
            stops.spawn(async move {
                let _lifecycle = builder.lifecycle.lock().await;
                stop_and_log(&builder, "shutdown").await;
            });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Returns the folder that contains the builders' unix sockets.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    fn check_running(&self) -> Result<(), BuilderError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err(BuilderError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn lock_builders(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, Platform), Arc<Builder>>> {
        // The map stays consistent even if a holder panicked, so poisoning is ignored.
        self.builders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn builder(&self, workspace: &str, platform: Platform) -> Arc<Builder> {
        let mut builders = self.lock_builders();
        let key = (workspace.to_owned(), platform);
        let builder = builders.entry(key).or_insert_with(|| {
            let paths =
                BuilderPaths::new(&self.config.data_dir, &self.socket_dir, workspace, platform);
            Arc::new(Builder::new(workspace.to_owned(), platform, paths))
        });
        Arc::clone(builder)
    }
}

impl BuilderLease {
    /// Returns the unix socket that the builder's buildkitd serves gRPC on.
    pub fn socket_path(&self) -> &Path {
        &self.builder.paths.socket
    }

    /// Returns the workspace of the builder.
    pub fn workspace(&self) -> &str {
        &self.builder.workspace
    }

    /// Returns the platform of the builder.
    pub fn platform(&self) -> Platform {
        self.builder.platform
    }
}

impl Drop for BuilderLease {
    fn drop(&mut self) {
        self.builder.release_lease();
    }
}

impl std::fmt::Debug for BuilderLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuilderLease")
            .field("workspace", &self.builder.workspace)
            .field("platform", &self.builder.platform)
            .field("socket", &self.builder.paths.socket)
            .finish()
    }
}

/// Stops a builder and logs a failure, for callers that have no one to return it to.
async fn stop_and_log(builder: &Builder, reason: &str) {
    if let Err(error) = builder.stop(reason).await {
        tracing::error!(
            workspace = %builder.workspace,
            platform = %builder.platform,
            reason,
            %error,
            "failed to stop buildkitd"
        );
    }
}

/// Stops builders that are idle past the idle timeout, until the manager is dropped or shuts
/// down.
async fn reap_idle_builders(manager: Weak<BuilderManager>, shutdown: Arc<Notify>) {
    loop {
        let (tick, idle_builders) = {
            let Some(manager) = manager.upgrade() else {
                return;
            };
            if manager.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let timeout = manager.config.idle_timeout;
            let idle: Vec<Arc<Builder>> = manager
                .lock_builders()
                .values()
                .filter(|builder| builder.is_idle_for(timeout))
                .cloned()
                .collect();
            for builder in &idle {
                tokio::spawn(stop_if_still_idle(Arc::clone(builder), timeout));
            }
            let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
            (tick, idle.len())
        };
        if idle_builders > 0 {
            tracing::debug!(count = idle_builders, "stopping idle builders");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.notified() => return,
        }
    }
}

async fn stop_if_still_idle(builder: Arc<Builder>, timeout: Duration) {
    let _lifecycle = builder.lifecycle.lock().await;
    // An acquire may have taken a lease while this task waited for the lock.
    if builder.is_idle_for(timeout) {
        stop_and_log(&builder, "idle").await;
    }
}

/// Stops every buildkitd that a pid file under `builders/<workspace>/<os>-<arch>/` names and
/// that still runs with that builder's root, then removes the pid files.
async fn stop_leftover_builders(builders_dir: &Path) -> Result<(), BuilderError> {
    for state_dir in builder_state_dirs(builders_dir) {
        let pid_file = state_dir.join("buildkitd.pid");
        let Some(pid) = process::read_pid_file(&pid_file) else {
            let _ = std::fs::remove_file(&pid_file);
            continue;
        };
        let root = state_dir.join("root");
        let is_leftover = process::read_cmdline(pid)
            .is_some_and(|args| process::is_buildkitd_for_root(&args, &root));
        if is_leftover {
            let outcome = terminate(pid, STOP_GRACE, |timeout| {
                let root = root.clone();
                async move { wait_until_gone(pid, &root, timeout).await }
            })
            .await?;
            if outcome == StopOutcome::StillRunning {
                tracing::warn!(pid, state_dir = %state_dir.display(), "leftover buildkitd is still running after SIGKILL");
            } else {
                tracing::info!(
                    pid,
                    state_dir = %state_dir.display(),
                    killed = outcome == StopOutcome::Killed,
                    "stopped leftover buildkitd from a previous server process"
                );
            }
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    Ok(())
}

/// Lists `builders/<workspace>/<os>-<arch>/` folders.
fn builder_state_dirs(builders_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Ok(workspaces) = std::fs::read_dir(builders_dir) else {
        return dirs;
    };
    for workspace in workspaces.flatten() {
        let Ok(platforms) = std::fs::read_dir(workspace.path()) else {
            continue;
        };
        for platform in platforms.flatten() {
            if platform.file_type().is_ok_and(|kind| kind.is_dir()) {
                dirs.push(platform.path());
            }
        }
    }
    dirs
}

/// Writes a time as whole seconds since the Unix epoch, the form the rest of the API uses.
fn serialize_unix_secs<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let secs = time
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    match secs {
        Some(secs) => serializer.serialize_some(&secs),
        None => serializer.serialize_none(),
    }
}
