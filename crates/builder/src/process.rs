//! Starting, probing and stopping buildkitd processes, and the files that track them.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::error::BuilderError;
use crate::paths::BuilderPaths;

/// Time buildkitd gets to exit after SIGTERM before it is sent SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// Time to wait for a process to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Time one readiness probe waits for the server's first HTTP/2 frame.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of the log file quoted in start errors.
const LOG_TAIL_LINES: usize = 20;

/// Starts buildkitd for one builder with its output appended to the builder's log file. The
/// previous log is kept as `buildkitd.log.1`.
pub(crate) fn spawn_buildkitd(program: &Path, paths: &BuilderPaths) -> Result<Child, BuilderError> {
    if paths.log_file.exists() {
        let previous = paths.log_file.with_extension("log.1");
        std::fs::rename(&paths.log_file, &previous)
            .map_err(|e| BuilderError::io("rotate the log file", &paths.log_file, e))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log_file)
        .map_err(|e| BuilderError::io("open the log file", &paths.log_file, e))?;
    let log_for_stderr = log
        .try_clone()
        .map_err(|e| BuilderError::io("open the log file", &paths.log_file, e))?;

    let mut address = std::ffi::OsString::from("unix://");
    address.push(paths.socket.as_os_str());
    Command::new(program)
        .arg("--config")
        .arg(&paths.config_file)
        .arg("--root")
        .arg(&paths.root_dir)
        .arg("--addr")
        .arg(address)
        .arg("--otel-socket-path")
        .arg(&paths.trace_socket)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        // Its own process group keeps a terminal's Ctrl-C away from buildkitd, so the server
        // decides when builders stop.
        .process_group(0)
        // A runtime that ends without `shutdown` still takes its builders down.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| BuilderError::Spawn {
            program: program.to_owned(),
            source,
        })
}

/// Checks that a gRPC server serves on `socket` by sending the HTTP/2 client preface and
/// reading the server's first frame, which must be SETTINGS (RFC 9113, section 3.4). A socket
/// that only accepts connections is not enough: buildkitd listens before it serves.
pub(crate) async fn probe_socket(socket: &Path) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, probe_http2(socket))
        .await
        .unwrap_or(false)
}

async fn probe_http2(socket: &Path) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame: length 0, type 0x4, flags 0, stream 0.
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    const FRAME_TYPE_SETTINGS: u8 = 0x4;

    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return false;
    };
    if stream.write_all(PREFACE).await.is_err() || stream.write_all(&EMPTY_SETTINGS).await.is_err()
    {
        return false;
    }
    let mut header = [0u8; 9];
    match stream.read_exact(&mut header).await {
        Ok(_) => header[3] == FRAME_TYPE_SETTINGS,
        Err(_) => false,
    }
}

/// Receives the exit status of a child process, as text, once it has exited.
pub(crate) type ExitReceiver = watch::Receiver<Option<String>>;

/// Waits up to `timeout` for the exit reported through `exit`. A dropped sender counts as an
/// exit, because the task that waits on the child only ends when the child has.
pub(crate) async fn wait_for_exit(exit: &ExitReceiver, timeout: Duration) -> bool {
    let mut exit = exit.clone();
    let exited = tokio::time::timeout(timeout, async {
        // An error means the sender is gone, which also counts as an exit.
        let _ = exit.wait_for(|status| status.is_some()).await;
    })
    .await;
    exited.is_ok()
}

/// Stops a process with SIGTERM, then SIGKILL after `grace`. `wait_exit(timeout)` returns true
/// once the process is gone. A process that is already gone counts as stopped.
pub(crate) async fn terminate<F, Fut>(
    pid: u32,
    grace: Duration,
    mut wait_exit: F,
) -> Result<StopOutcome, BuilderError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = bool>,
{
    if !send_signal(pid, Signal::SIGTERM)? || wait_exit(grace).await {
        return Ok(StopOutcome::Terminated);
    }
    if !send_signal(pid, Signal::SIGKILL)? || wait_exit(KILL_WAIT).await {
        return Ok(StopOutcome::Killed);
    }
    Ok(StopOutcome::StillRunning)
}

/// Result of [`terminate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopOutcome {
    /// Exited after SIGTERM, or was already gone.
    Terminated,
    /// Needed SIGKILL.
    Killed,
    /// Still there after SIGKILL, such as a process stuck in uninterruptible sleep.
    StillRunning,
}

/// Sends `signal`, returning false when the process no longer exists.
fn send_signal(pid: u32, signal: Signal) -> Result<bool, BuilderError> {
    let raw = i32::try_from(pid).map_err(|_| BuilderError::Signal {
        pid,
        signal: signal.as_str(),
        source: nix::Error::EINVAL,
    })?;
    match kill(Pid::from_raw(raw), signal) {
        Ok(()) => Ok(true),
        Err(nix::Error::ESRCH) => Ok(false),
        Err(source) => Err(BuilderError::Signal {
            pid,
            signal: signal.as_str(),
            source,
        }),
    }
}

/// Reads the argument list of a running process from /proc/PID/cmdline. Zombies and
/// processes that are gone return `None`.
pub(crate) fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if bytes.is_empty() {
        return None;
    }
    let args = bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(args)
}

/// Tells whether `args` is a buildkitd command line with `--root root`, so that a pid from a
/// pid file is only signalled while it still belongs to that builder.
pub(crate) fn is_buildkitd_for_root(args: &[String], root: &Path) -> bool {
    let Some(program) = args.first() else {
        return false;
    };
    if Path::new(program).file_name() != Some("buildkitd".as_ref()) {
        return false;
    }
    let root = root.to_string_lossy();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        if arg == "--root" {
            return rest.next().is_some_and(|value| *value == root);
        }
        if let Some(value) = arg.strip_prefix("--root=") {
            return value == root;
        }
    }
    false
}

/// Waits up to `timeout` for `pid` to stop being a buildkitd with `root`, polling /proc.
pub(crate) async fn wait_until_gone(pid: u32, root: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let running = read_cmdline(pid).is_some_and(|args| is_buildkitd_for_root(&args, root));
        if !running {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn write_pid_file(path: &Path, pid: u32) -> Result<(), BuilderError> {
    std::fs::write(path, format!("{pid}\n"))
        .map_err(|e| BuilderError::io("write the pid file", path, e))
}

/// Reads a pid file, returning `None` when it is missing or does not contain a pid.
pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Removes the pid file if it still names `pid`, so that a newer process's file stays.
pub(crate) fn remove_pid_file_of(path: &Path, pid: u32) {
    if read_pid_file(path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// Returns the last lines of a log file, or a note when it cannot be read.
pub(crate) fn log_tail(path: &Path) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(e) => format!("(failed to read {}: {e})", path.display()),
    }
}

/// Removes every `*.sock` file in `dir`. Used on start-up, when no builder of this data folder
/// runs any more.
pub(crate) fn remove_sockets(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension() == Some("sock".as_ref()) && std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn buildkitd_with_matching_root_is_recognised() {
        let root = Path::new("/data/builders/a/linux-amd64/root");
        let line = args(&[
            "/usr/local/bin/buildkitd",
            "--config",
            "/data/builders/a/linux-amd64/buildkitd.toml",
            "--root",
            "/data/builders/a/linux-amd64/root",
            "--addr",
            "unix:///data/run/0123456789ab.sock",
        ]);
        assert!(is_buildkitd_for_root(&line, root));
        let equals_form = args(&["buildkitd", "--root=/data/builders/a/linux-amd64/root"]);
        assert!(is_buildkitd_for_root(&equals_form, root));
    }

    #[test]
    fn other_processes_are_not_buildkitd_for_root() {
        let root = Path::new("/data/builders/a/linux-amd64/root");
        let cases = [
            args(&[]),
            args(&[
                "/usr/bin/sleep",
                "--root",
                "/data/builders/a/linux-amd64/root",
            ]),
            args(&["buildkitd", "--root", "/data/builders/b/linux-amd64/root"]),
            args(&["buildkitd", "--root"]),
            args(&["buildkitd"]),
            args(&["not-buildkitd", "--root=/data/builders/a/linux-amd64/root"]),
        ];
        for line in cases {
            assert!(!is_buildkitd_for_root(&line, root), "{line:?}");
        }
    }

    #[test]
    fn own_cmdline_is_readable() {
        let args = read_cmdline(std::process::id()).unwrap();
        assert!(!args.is_empty());
        assert!(read_cmdline(u32::MAX).is_none());
    }

    #[test]
    fn pid_file_removal_checks_the_pid() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("buildkitd.pid");
        assert_eq!(read_pid_file(&path), None);
        write_pid_file(&path, 4242).unwrap();
        assert_eq!(read_pid_file(&path), Some(4242));

        remove_pid_file_of(&path, 1);
        assert!(path.exists());
        remove_pid_file_of(&path, 4242);
        assert!(!path.exists());

        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_pid_file(&path), None);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("buildkitd.log");
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.starts_with("line 31"), "{tail}");
        assert!(tail.ends_with("line 50"), "{tail}");

        let missing = log_tail(&temp.path().join("missing.log"));
        assert!(missing.contains("failed to read"), "{missing}");
    }

    #[test]
    fn remove_sockets_leaves_other_files() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::write(temp.path().join("a.sock"), "").unwrap();
        std::fs::write(temp.path().join("keep.txt"), "").unwrap();
        let removed = remove_sockets(temp.path());
        assert_eq!(removed, vec![temp.path().join("a.sock")]);
        assert!(temp.path().join("keep.txt").exists());
    }

    #[tokio::test]
    async fn probe_fails_without_a_server() {
        let temp = tempfile::tempdir().unwrap();
        assert!(!probe_socket(&temp.path().join("none.sock")).await);

        // A listener that accepts but never speaks HTTP/2 is not ready either.
        let path = temp.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accept = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(stream);
        });
        assert!(!probe_socket(&path).await);
        accept.abort();
    }

    #[tokio::test]
    async fn probe_accepts_a_settings_frame() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("h2.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream
                .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            let mut preface = [0u8; 24];
            stream.read_exact(&mut preface).await.unwrap();
        });
        assert!(probe_socket(&path).await);
        server.await.unwrap();
    }

    /// Spawns `command` and reports its exit through an [`ExitReceiver`].
    fn spawn_watched(command: &mut Command) -> (u32, ExitReceiver) {
        let mut child = command.spawn().unwrap();
        let pid = child.id().unwrap();
        let (sender, receiver) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await.unwrap();
            let _ = sender.send(Some(status.to_string()));
        });
        (pid, receiver)
    }

    #[tokio::test]
    async fn terminate_stops_a_child_with_sigterm() {
        let (pid, exit) = spawn_watched(Command::new("sleep").arg("60"));
        let outcome = terminate(pid, Duration::from_secs(5), |timeout| {
            let exit = exit.clone();
            async move { wait_for_exit(&exit, timeout).await }
        })
        .await
        .unwrap();
        assert_eq!(outcome, StopOutcome::Terminated);
        assert!(exit.borrow().as_deref().unwrap().contains("SIGTERM"));
    }

    #[tokio::test]
    async fn terminate_kills_a_child_that_ignores_sigterm() {
        // An ignored signal stays ignored across exec, so `sleep` ignores SIGTERM too.
        let temp = tempfile::tempdir().unwrap();
        let ready = temp.path().join("ready");
        let script = format!("trap '' TERM; touch {}; exec sleep 60", ready.display());
        let (pid, exit) = spawn_watched(Command::new("sh").args(["-c", &script]));
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let outcome = terminate(pid, Duration::from_millis(300), |timeout| {
            let exit = exit.clone();
            async move { wait_for_exit(&exit, timeout).await }
        })
        .await
        .unwrap();
        assert_eq!(outcome, StopOutcome::Killed);
        assert!(exit.borrow().as_deref().unwrap().contains("SIGKILL"));
    }

    #[tokio::test]
    async fn terminate_accepts_a_process_that_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id().unwrap();
        child.wait().await.unwrap();
        let outcome = terminate(pid, Duration::from_millis(100), |_| async { false })
            .await
            .unwrap();
        assert_eq!(outcome, StopOutcome::Terminated);
    }
}
