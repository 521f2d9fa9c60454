//! One builder: the buildkitd process of a (workspace, platform) pair, its start and stop.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::config::{render_buildkitd_toml, BuilderConfig};
use crate::error::BuilderError;
use crate::paths::{ensure_private_dir, BuilderPaths};
use crate::platform::Platform;
use crate::process::{
    self, log_tail, probe_socket, spawn_buildkitd, terminate, wait_for_exit, ExitReceiver,
    StopOutcome, STOP_GRACE,
};

/// Life-cycle state of a builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuilderState {
    /// buildkitd was started and does not serve on its socket yet.
    Starting,
    /// buildkitd serves on its socket.
    Running,
    /// buildkitd was sent SIGTERM and has not exited yet.
    Stopping,
    /// Never started, stopped when idle, or stopped by shutdown.
    Stopped,
    /// buildkitd exited on its own; the next acquire starts it again.
    Exited,
}

/// The buildkitd process of one (workspace, platform) pair.
pub(crate) struct Builder {
    pub workspace: String,
    pub platform: Platform,
    pub paths: BuilderPaths,
    /// Serializes start and stop, so that concurrent acquires start one process.
    pub lifecycle: tokio::sync::Mutex<()>,
    pub inner: Mutex<BuilderInner>,
}

pub(crate) struct BuilderInner {
    pub state: BuilderState,
    pub process: Option<RunningProcess>,
    /// Leases currently held.
    pub leases: usize,
    /// When the last lease was dropped, or the builder started with none.
    pub idle_since: Option<(Instant, SystemTime)>,
}

#[derive(Clone)]
pub(crate) struct RunningProcess {
    pub pid: u32,
    pub exit: ExitReceiver,
}

impl Builder {
    pub fn new(workspace: String, platform: Platform, paths: BuilderPaths) -> Self {
        Builder {
            workspace,
            platform,
            paths,
            lifecycle: tokio::sync::Mutex::new(()),
            inner: Mutex::new(BuilderInner {
                state: BuilderState::Stopped,
                process: None,
                leases: 0,
                idle_since: None,
            }),
        }
    }

    pub fn lock_inner(&self) -> std::sync::MutexGuard<'_, BuilderInner> {
        // The guarded data stays consistent even if a holder panicked, so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells whether buildkitd runs and has served on its socket.
    pub fn is_running(&self) -> bool {
        let inner = self.lock_inner();
        inner.state == BuilderState::Running
            && inner
                .process
                .as_ref()
                .is_some_and(|process| process.exit.borrow().is_none())
    }

    pub fn add_lease(&self) {
        let mut inner = self.lock_inner();
        inner.leases += 1;
        inner.idle_since = None;
    }

    pub fn release_lease(&self) {
        let mut inner = self.lock_inner();
        inner.leases = inner.leases.saturating_sub(1);
        if inner.leases == 0 {
            inner.idle_since = Some((Instant::now(), SystemTime::now()));
        }
    }

    /// Tells whether the builder runs without leases and has done so for at least `timeout`.
    pub fn is_idle_for(&self, timeout: Duration) -> bool {
        let inner = self.lock_inner();
        inner.state == BuilderState::Running
            && inner.leases == 0
            && inner
                .idle_since
                .is_some_and(|(since, _)| since.elapsed() >= timeout)
    }

    /// Starts buildkitd and waits until it serves on its socket. The caller must lock `lifecycle`.
    pub async fn start(
        self: &std::sync::Arc<Self>,
        config: &BuilderConfig,
    ) -> Result<(), BuilderError> {
        self.lock_inner().state = BuilderState::Starting;
        let result = self.spawn_and_wait(config).await;
        if result.is_err() {
            let mut inner = self.lock_inner();
            if inner.state == BuilderState::Starting {
                inner.state = BuilderState::Exited;
            }
        }
        result
    }

    async fn spawn_and_wait(
        self: &std::sync::Arc<Self>,
        config: &BuilderConfig,
    ) -> Result<(), BuilderError> {
        let paths = &self.paths;
        ensure_private_dir(&paths.state_dir)?;
        let toml = render_buildkitd_toml(self.platform, &config.registries);
        std::fs::write(&paths.config_file, toml).map_err(|e| {
            BuilderError::io("write the buildkitd configuration", &paths.config_file, e)
        })?;
        match std::fs::remove_file(&paths.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BuilderError::io(
                    "remove the stale socket",
                    &paths.socket,
                    e,
                ))
            }
        }

        let child = spawn_buildkitd(&config.buildkitd, paths)?;
        let Some(pid) = child.id() else {
            return Err(self.exited_during_start("exited before its pid was read".into()));
        };
        process::write_pid_file(&paths.pid_file, pid)?;
        let exit = self.watch_exit(child, pid);
        self.lock_inner().process = Some(RunningProcess {
            pid,
            exit: exit.clone(),
        });

        let deadline = tokio::time::Instant::now() + config.start_timeout;
        loop {
            if let Some(status) = exit.borrow().clone() {
                return Err(self.exited_during_start(status));
            }
            if probe_socket(&paths.socket).await {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop("start timed out").await?;
                return Err(BuilderError::StartTimedOut {
                    workspace: self.workspace.clone(),
                    platform: self.platform,
                    timeout: config.start_timeout,
                    socket: paths.socket.clone(),
                    log_file: paths.log_file.clone(),
                    log_tail: log_tail(&paths.log_file),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        {
            let mut inner = self.lock_inner();
            inner.state = BuilderState::Running;
            if inner.leases == 0 {
                inner.idle_since = Some((Instant::now(), SystemTime::now()));
            }
        }
        tracing::info!(
            workspace = %self.workspace,
            platform = %self.platform,
            pid,
            socket = %paths.socket.display(),
            "started buildkitd"
        );
        Ok(())
    }

    fn exited_during_start(&self, status: String) -> BuilderError {
        BuilderError::ExitedDuringStart {
            workspace: self.workspace.clone(),
            platform: self.platform,
            status,
            log_file: self.paths.log_file.clone(),
            log_tail: log_tail(&self.paths.log_file),
        }
    }

    /// Spawns the task that owns the child: it reaps it, removes its pid file and reports the
    /// exit status.
    fn watch_exit(
        self: &std::sync::Arc<Self>,
        mut child: tokio::process::Child,
        pid: u32,
    ) -> ExitReceiver {
        let (sender, receiver) = watch::channel(None);
        let builder = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status ({e})"),
            };
            // The pid file goes before the exit is reported, so a restart that follows the
            // report cannot have its new pid file removed here.
            process::remove_pid_file_of(&builder.paths.pid_file, pid);
            let unexpected = {
                let mut inner = builder.lock_inner();
                let current = inner.process.as_ref().is_some_and(|p| p.pid == pid);
                let was_running = inner.state == BuilderState::Running;
                if current && matches!(inner.state, BuilderState::Running | BuilderState::Starting)
                {
                    inner.state = BuilderState::Exited;
                }
                current && was_running
            };
            if unexpected {
                tracing::warn!(
                    workspace = %builder.workspace,
                    platform = %builder.platform,
                    pid,
                    %status,
                    log_file = %builder.paths.log_file.display(),
                    "buildkitd exited unexpectedly; the next acquire starts it again"
                );
            }
            let _ = sender.send(Some(status));
        });
        receiver
    }

    /// Stops buildkitd with SIGTERM, then SIGKILL after a grace period. The caller must lock
    /// `lifecycle`. A builder that does not run is only marked stopped.
    pub async fn stop(&self, reason: &str) -> Result<(), BuilderError> {
        let process = {
            let mut inner = self.lock_inner();
            let Some(process) = inner.process.clone() else {
                inner.state = BuilderState::Stopped;
                return Ok(());
            };
            inner.state = BuilderState::Stopping;
            process
        };

        let outcome = terminate(process.pid, STOP_GRACE, |timeout| {
            let exit = process.exit.clone();
            async move { wait_for_exit(&exit, timeout).await }
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                self.lock_inner().state = BuilderState::Running;
                return Err(e);
            }
        };

        if outcome == StopOutcome::StillRunning {
            tracing::warn!(
                workspace = %self.workspace,
                platform = %self.platform,
                pid = process.pid,
                "buildkitd is still running after SIGKILL; its state folder stays locked"
            );
        }
        {
            let mut inner = self.lock_inner();
            inner.state = BuilderState::Stopped;
            inner.process = None;
            inner.idle_since = None;
        }
        let _ = std::fs::remove_file(&self.paths.socket);
        tracing::info!(
            workspace = %self.workspace,
            platform = %self.platform,
            pid = process.pid,
            reason,
            killed = outcome != StopOutcome::Terminated,
            "stopped buildkitd"
        );
        Ok(())
    }
}
