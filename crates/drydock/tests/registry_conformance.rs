//! Runs the OCI distribution-spec conformance suite against a real `drydock server`, with a
//! workspace token, covering its pull, push, content discovery and content management tests.
//!
//! `scripts/setup.sh` builds the suite's test binary, `oci-conformance.test`, from the version
//! pinned in `tools/go-test/conformance/go.mod`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::Harness;

/// The suite's test binary, looked up on `PATH` (setup.sh installs it in /usr/local/bin).
const SUITE_BINARY: &str = "oci-conformance.test";

/// Results the suite reports as `Skip` for Drydock, because it leaves out an optional
/// feature. "Blob anonymous mount" is a mount without `from`, and the spec lets a registry
/// respond to it with a new upload session (202) instead of a mount.
const EXPECTED_SKIPS: &[&str] = &["Blob anonymous mount"];

/// Results turned off by the settings below: tag parameters on a manifest push by digest,
/// which only the spec's development version has, and sparse manifests, which refer to
/// content that was never pushed. The spec lets a registry reject those, and Drydock does.
const EXPECTED_DISABLED: &[&str] = &[
    "Manifest put with tag params",
    "Sparse Manifests",
    "Tag Param",
    "Tag Param sha512",
];

/// Results that must be present and `Pass`, so that a suite which silently ran fewer tests
/// cannot pass: one from each of the four workflows (pull, push, discovery, management).
const REQUIRED_PASSES: &[&str] = &[
    "Blob get",
    "Manifest get by tag",
    "Blob chunked",
    "Blob streaming",
    "Blob mount",
    "Manifest put by digest",
    "Tag listing",
    "Referrers",
    "Tag delete",
    "Manifest delete",
    "Blob delete",
    "Blob upload cancel",
];

#[test]
fn registry_passes_oci_conformance_suite() {
    let harness = Harness::start();
    harness.create_workspace("acme");
    let token = harness.workspace_token("acme");
    // The suite writes results.yaml, junit.xml and report.html here. A failed test keeps the
    // harness folder, so the reports stay for a look.
    let work_dir = harness.dir.path().join("conformance");
    let results_dir = work_dir.join("results");
    std::fs::create_dir_all(&work_dir).unwrap();

    let mut command = Command::new(SUITE_BINARY);
    // The suite also reads inherited OCI_* variables and an oci-conformance.yaml in its
    // working folder, so only the settings below may apply.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OCI_") {
            command.env_remove(name);
        }
    }
    // The pinned suite still reads the older names (OCI_ROOT_URL, OCI_NAMESPACE,
    // OCI_TEST_PUSH and so on) but warns that they are deprecated. It ignores
    // OCI_DELETE_MANIFEST_BEFORE_BLOBS, because it always deletes tags, then manifests, then
    // blobs.
    command
        .current_dir(&work_dir)
        .args(["-test.timeout", "10m"])
        .env("OCI_VERSION", "1.1")
        .env("OCI_REGISTRY", &harness.registry)
        .env("OCI_TLS", "disabled")
        .env("OCI_REPO1", "acme/conformance")
        .env("OCI_REPO2", "acme/other")
        .env("OCI_USERNAME", "conformance")
        .env("OCI_PASSWORD", &token)
        .env("OCI_RESULTS_DIR", &results_dir)
        .env("OCI_LOG", "warn")
        // Pull and push.
        .env("OCI_API_PULL", "true")
        .env("OCI_API_PUSH", "true")
        // Content discovery.
        .env("OCI_API_TAGS_LIST", "true")
        .env("OCI_API_REFERRER", "true")
        // Content management.
        .env("OCI_API_TAGS_DELETE", "true")
        .env("OCI_API_MANIFESTS_DELETE", "true")
        .env("OCI_API_BLOBS_DELETE", "true")
        // Optional in spec 1.1, and Drydock has them.
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .env("OCI_API_BLOBS_DIGEST_HEADER", "true")
        .env("OCI_API_MANIFESTS_DIGEST_HEADER", "true")
        // See EXPECTED_DISABLED.
        .env("OCI_API_MANIFESTS_TAG_PARAM", "false")
        .env("OCI_DATA_SPARSE", "false");
    let output = command.output().unwrap_or_else(|error| {
        panic!("failed to run {SUITE_BINARY}: {error}; run scripts/setup.sh to build it")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = || {
        format!(
            "{}\n--- stderr ---\n{}\n--- reports in {} ---",
            failure_summary(&stdout),
            stderr.trim(),
            results_dir.display()
        )
    };

    assert!(
        output.status.success(),
        "the conformance suite failed ({}):\n{}",
        output.status,
        report()
    );
    // The suite exits 0 without running anything when its settings do not load.
    let results = read_results(&results_dir.join("results.yaml"))
        .unwrap_or_else(|error| panic!("{error}\n{}", report()));

    let mut unexpected = Vec::new();
    for (name, status) in &results {
        let expected = if EXPECTED_SKIPS.contains(&name.as_str()) {
            "Skip"
        } else if EXPECTED_DISABLED.contains(&name.as_str()) {
            "Disabled"
        } else {
            "Pass"
        };
        if status != expected {
            unexpected.push(format!("{name}: {status} (expected {expected})"));
        }
    }
    assert!(
        unexpected.is_empty(),
        "unexpected conformance results:\n  {}\n{}",
        unexpected.join("\n  "),
        report()
    );
    for name in REQUIRED_PASSES {
        assert_eq!(
            results.get(*name).map(String::as_str),
            Some("Pass"),
            "conformance result {name:?} is missing or not Pass:\n{}",
            report()
        );
    }
}

/// Reads the API and data results from the suite's results.yaml, whose `apis` and `data`
/// maps hold one `NAME: STATUS` line each.
fn read_results(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let mut results = BTreeMap::new();
    let mut in_results = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_results = line == "apis:" || line == "data:";
            continue;
        }
        if !in_results {
            continue;
        }
        let (name, status) = line
            .trim()
            .rsplit_once(": ")
            .ok_or_else(|| format!("unexpected line {line:?} in {}", path.display()))?;
        results.insert(name.trim_matches('"').to_owned(), status.to_owned());
    }
    if results.is_empty() {
        return Err(format!("{} lists no results", path.display()));
    }
    Ok(results)
}

/// Picks the failed tests with their errors, and the totals, from the suite's output. The
/// output starts with a tree of `NAME: STATUS` lines, each test's errors on `- ` lines below.
fn failure_summary(stdout: &str) -> String {
    const MAX_LINES: usize = 200;
    let totals_start = stdout.find("OCI Conformance Result:");
    let tree = &stdout[..totals_start.unwrap_or(stdout.len())];
    let mut failed = Vec::new();
    let mut in_failed_test = false;
    for line in tree.lines() {
        if line.trim_start().starts_with("- ") {
            if in_failed_test {
                failed.push(line);
            }
            continue;
        }
        in_failed_test = line.ends_with(": FAIL") || line.ends_with(": Error");
        if in_failed_test {
            failed.push(line);
        }
    }
    failed.truncate(MAX_LINES);
    let totals = totals_start
        .map(|start| &stdout[start..])
        .unwrap_or("(the suite printed no result)");
    format!(
        "--- failed tests ---\n{}\n--- totals ---\n{}",
        failed.join("\n"),
        totals.trim()
    )
}
