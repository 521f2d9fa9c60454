//! File layout of builder state and sockets.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::BuilderError;
use crate::platform::Platform;

/// Maximum unix socket path length the kernel accepts: `sun_path` is 108 bytes including the
/// terminating NUL (unix(7)).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Socket names are this many hex digits of a SHA-256 plus `.sock`.
const SOCKET_HASH_DIGITS: usize = 12;
const SOCKET_NAME_LEN: usize = SOCKET_HASH_DIGITS + ".sock".len();

/// Files of one builder. The state folder keeps everything except the socket, which lives in
/// a separate folder with a short path.
#[derive(Debug, Clone)]
pub(crate) struct BuilderPaths {
    pub state_dir: PathBuf,
    /// buildkitd's `--root`: its cache and metadata, kept across restarts.
    pub root_dir: PathBuf,
    pub config_file: PathBuf,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
    pub socket: PathBuf,
    /// buildkitd's OpenTelemetry trace socket. Its default, /run/buildkit/otel-grpc.sock, is
    /// one path for every buildkitd on the host, so two builders starting at once race to
    /// bind it and one fails with "address already in use" (seen with v0.32.2).
    pub trace_socket: PathBuf,
}

impl BuilderPaths {
    pub fn new(data_dir: &Path, socket_dir: &Path, workspace: &str, platform: Platform) -> Self {
        let state_dir = builders_dir(data_dir)
            .join(workspace)
            .join(platform.dir_name());
        BuilderPaths {
            root_dir: state_dir.join("root"),
            config_file: state_dir.join("buildkitd.toml"),
            log_file: state_dir.join("buildkitd.log"),
            pid_file: state_dir.join("buildkitd.pid"),
            socket: socket_dir.join(socket_name(workspace, platform)),
            trace_socket: socket_dir
                .join(socket_name(workspace, platform))
                .with_extension("otl"),
            state_dir,
        }
    }
}

pub(crate) fn builders_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("builders")
}

/// Rejects workspace names that could leave `builders/` or collide with another name.
pub(crate) fn validate_workspace(workspace: &str) -> Result<(), BuilderError> {
    let valid = !workspace.is_empty()
        && !workspace.contains('/')
        && !workspace.contains("..")
        && !workspace.contains('\0')
        && workspace != ".";
    if valid {
        Ok(())
    } else {
        Err(BuilderError::InvalidWorkspace(workspace.to_owned()))
    }
}

/// Returns the socket file name for a builder: a hash, so that names stay short whatever the
/// workspace name is.
fn socket_name(workspace: &str, platform: Platform) -> String {
    let mut hasher = Sha256::new();
    hasher.update(workspace.as_bytes());
    hasher.update([0]);
    hasher.update(platform.to_string().as_bytes());
    let digest = hex::encode(hasher.finalize());
    format!("{}.sock", &digest[..SOCKET_HASH_DIGITS])
}

/// Chooses the folder for builder sockets: `data_dir/run` when socket paths there fit in
/// [`MAX_SOCKET_PATH`], otherwise `/tmp/drydock-<hash of data_dir>`.
pub(crate) fn socket_dir(data_dir: &Path) -> PathBuf {
    let preferred = data_dir.join("run");
    // One byte for the separator between folder and file name.
    let socket_len = preferred.as_os_str().len() + 1 + SOCKET_NAME_LEN;
    if socket_len <= MAX_SOCKET_PATH {
        return preferred;
    }
    let digest = hex::encode(Sha256::digest(data_dir.as_os_str().as_encoded_bytes()));
    PathBuf::from(format!("/tmp/drydock-{}", &digest[..SOCKET_HASH_DIGITS]))
}

/// Creates a folder that only the current user can enter, or checks an existing one. An
/// existing folder must be a real folder (not a symlink) owned by this user with mode 0700,
/// because a folder in /tmp may have been made by someone else to catch the sockets.
pub(crate) fn ensure_private_dir(path: &Path) -> Result<(), BuilderError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| BuilderError::io("create the folder", parent, e))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BuilderError::io("create the private folder", path, e)),
    }

    let metadata = std::fs::symlink_metadata(path)
        .map_err(|e| BuilderError::io("inspect the private folder", path, e))?;
    let uid = nix::unistd::getuid().as_raw();
    if !metadata.is_dir() || metadata.uid() != uid {
        return Err(BuilderError::InvalidConfig(format!(
            "{} must be a folder owned by uid {uid}; remove it and retry",
            path.display()
        )));
    }
    if metadata.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| BuilderError::io("restrict the permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_names_with_path_parts_are_rejected() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "a..b",
            "..hidden",
            "nul\0byte",
        ] {
            assert!(validate_workspace(name).is_err(), "{name:?}");
        }
        for name in ["team-a", "a.b", "ws_1", "Team.Prod-2"] {
            assert!(validate_workspace(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn builder_paths_follow_the_state_layout() {
        let paths = BuilderPaths::new(
            Path::new("/var/lib/drydock"),
            Path::new("/var/lib/drydock/run"),
            "team-a",
            Platform::LINUX_ARM64,
        );
        let state = Path::new("/var/lib/drydock/builders/team-a/linux-arm64");
        assert_eq!(paths.state_dir, state);
        assert_eq!(paths.root_dir, state.join("root"));
        assert_eq!(paths.config_file, state.join("buildkitd.toml"));
        assert_eq!(paths.log_file, state.join("buildkitd.log"));
        assert_eq!(paths.pid_file, state.join("buildkitd.pid"));
        assert_eq!(
            paths.socket.parent().unwrap(),
            Path::new("/var/lib/drydock/run")
        );
    }

    #[test]
    fn socket_names_are_short_and_distinct() {
        let dir = Path::new("/run");
        let names = [
            BuilderPaths::new(dir, dir, "a", Platform::LINUX_AMD64).socket,
            BuilderPaths::new(dir, dir, "a", Platform::LINUX_ARM64).socket,
            BuilderPaths::new(dir, dir, "b", Platform::LINUX_AMD64).socket,
        ];
        for name in &names {
            let file = name.file_name().unwrap().to_str().unwrap();
            assert_eq!(file.len(), SOCKET_NAME_LEN, "{file}");
            assert!(file.ends_with(".sock"));
        }
        assert_ne!(names[0], names[1]);
        assert_ne!(names[0], names[2]);
        let long_workspace = "w".repeat(200);
        let long = BuilderPaths::new(dir, dir, &long_workspace, Platform::LINUX_AMD64);
        assert_eq!(
            long.socket.as_os_str().len(),
            "/run/".len() + SOCKET_NAME_LEN
        );
    }

    #[test]
    fn short_data_dir_keeps_sockets_inside_it() {
        let data_dir = Path::new("/var/lib/drydock");
        assert_eq!(socket_dir(data_dir), data_dir.join("run"));
    }

    #[test]
    fn long_data_dir_falls_back_to_tmp() {
        let data_dir = PathBuf::from(format!("/srv/{}", "d".repeat(100)));
        let dir = socket_dir(&data_dir);
        assert!(dir.starts_with("/tmp"), "{}", dir.display());
        let socket = BuilderPaths::new(&data_dir, &dir, "ws", Platform::LINUX_AMD64).socket;
        assert!(socket.as_os_str().len() <= MAX_SOCKET_PATH);

        let other = PathBuf::from(format!("/srv/{}", "e".repeat(100)));
        assert_ne!(socket_dir(&other), dir);
    }

    #[test]
    fn data_dir_at_the_limit_still_uses_run() {
        // "/" + name + "/run" + "/" + socket name is exactly the limit.
        let name_len = MAX_SOCKET_PATH - "/".len() - "/run/".len() - SOCKET_NAME_LEN;
        let data_dir = PathBuf::from(format!("/{}", "x".repeat(name_len)));
        assert_eq!(socket_dir(&data_dir), data_dir.join("run"));

        let one_longer = PathBuf::from(format!("/{}", "x".repeat(name_len + 1)));
        assert!(socket_dir(&one_longer).starts_with("/tmp"));
    }

    #[test]
    fn private_dir_is_created_with_mode_0700() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("run");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn private_dir_with_open_permissions_is_tightened() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn private_dir_rejects_a_symlink() {
        let temp = tempfile::tempdir().unwrap();
        let target = temp.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = temp.path().join("run");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = ensure_private_dir(&link).unwrap_err();
        assert!(error.to_string().contains("remove it and retry"), "{error}");
    }
}
