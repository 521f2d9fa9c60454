//! Target platforms a builder can run.

use std::fmt;
use std::str::FromStr;

/// A build platform in OCI `os/architecture` form. Drydock runs one builder per platform, and
/// linux/arm64 runs on amd64 hosts under QEMU user emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    arch: Arch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Arch {
    Amd64,
    Arm64,
}

impl Platform {
    /// linux/amd64.
    pub const LINUX_AMD64: Platform = Platform { arch: Arch::Amd64 };
    /// linux/arm64.
    pub const LINUX_ARM64: Platform = Platform { arch: Arch::Arm64 };

    /// Every platform that builders support, in the order error messages list them.
    pub const SUPPORTED: [Platform; 2] = [Platform::LINUX_AMD64, Platform::LINUX_ARM64];

    /// Returns the operating system, always `linux`.
    pub fn os(&self) -> &'static str {
        "linux"
    }

    /// Returns the OCI architecture name (`amd64`, `arm64`).
    pub fn architecture(&self) -> &'static str {
        match self.arch {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Returns the `os-arch` form used in folder names, such as `linux-arm64`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.os(), self.architecture())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os(), self.architecture())
    }
}

/// Error for a platform string that names no supported platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported platform {value:?}: expected one of linux/amd64, linux/arm64")]
pub struct ParsePlatformError {
    /// The rejected input.
    pub value: String,
}

impl FromStr for Platform {
    type Err = ParsePlatformError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Platform::SUPPORTED
            .into_iter()
            .find(|platform| platform.to_string() == value)
            .ok_or_else(|| ParsePlatformError {
                value: value.to_owned(),
            })
    }
}

impl serde::Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_platforms_round_trip() {
        for text in ["linux/amd64", "linux/arm64"] {
            let platform: Platform = text.parse().unwrap();
            assert_eq!(platform.to_string(), text);
        }
    }

    #[test]
    fn dir_name_uses_a_dash() {
        assert_eq!(Platform::LINUX_ARM64.dir_name(), "linux-arm64");
    }

    #[test]
    fn unsupported_platform_error_names_value_and_choices() {
        for text in [
            "linux/riscv64",
            "windows/amd64",
            "linux/arm64/v8",
            "",
            "LINUX/AMD64",
        ] {
            let error = text.parse::<Platform>().unwrap_err();
            assert_eq!(error.value, text);
            let message = error.to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains("linux/amd64, linux/arm64"), "{message}");
        }
    }

    #[test]
    fn platform_serializes_as_string() {
        let json = serde_json::to_string(&Platform::LINUX_AMD64).unwrap();
        assert_eq!(json, "\"linux/amd64\"");
        let parsed: Platform = serde_json::from_str("\"linux/arm64\"").unwrap();
        assert_eq!(parsed, Platform::LINUX_ARM64);
        assert!(serde_json::from_str::<Platform>("\"linux/s390x\"").is_err());
    }
}
