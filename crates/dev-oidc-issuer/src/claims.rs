//! Token claims shaped like those of Buildkite's OIDC tokens.

use serde::Serialize;

/// The claims of one token. Field names and the `sub` layout follow Buildkite's tokens.
#[derive(Clone, Debug, Serialize)]
pub struct BuildkiteClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub organization_slug: String,
    pub pipeline_slug: String,
    pub build_number: u64,
    pub build_branch: String,
    pub build_tag: Option<String>,
    pub build_commit: String,
    pub step_key: String,
    pub job_id: String,
    pub agent_id: String,
    pub build_source: String,
    pub runner_environment: String,
    /// Optional claims that a token request names in `claims`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<String>,
}

/// Names of every claim the issuer can put in a token, for the discovery document.
pub const CLAIMS_SUPPORTED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "organization_slug",
    "pipeline_slug",
    "build_number",
    "build_branch",
    "build_tag",
    "build_commit",
    "step_key",
    "job_id",
    "agent_id",
    "build_source",
    "runner_environment",
    "organization_id",
    "pipeline_id",
];

/// The build a token describes.
#[derive(Clone, Debug)]
pub struct Build {
    pub organization: String,
    pub pipeline: String,
    pub branch: String,
    pub commit: String,
    pub step: String,
    pub number: u64,
    pub job_id: String,
}

/// When a token is issued and for how long it is valid, in seconds relative to now.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub now: i64,
    pub lifetime_secs: i64,
    pub not_before_offset_secs: i64,
    pub issued_at_offset_secs: i64,
}

/// Formats Buildkite's compound subject:
/// `organization:ORG:pipeline:PIPELINE:ref:refs/heads/BRANCH:commit:SHA:step:KEY`.
pub fn buildkite_subject(build: &Build) -> String {
    format!(
        "organization:{}:pipeline:{}:ref:refs/heads/{}:commit:{}:step:{}",
        build.organization, build.pipeline, build.branch, build.commit, build.step
    )
}

/// Builds the claims of a token for `build` from `issuer` to `audience`.
pub fn build_claims(
    issuer: &str,
    audience: &str,
    build: &Build,
    validity: Validity,
    agent_id: &str,
) -> BuildkiteClaims {
    BuildkiteClaims {
        iss: issuer.to_owned(),
        sub: buildkite_subject(build),
        aud: audience.to_owned(),
        iat: validity.now.saturating_add(validity.issued_at_offset_secs),
        nbf: validity.now.saturating_add(validity.not_before_offset_secs),
        exp: validity.now.saturating_add(validity.lifetime_secs),
        organization_slug: build.organization.clone(),
        pipeline_slug: build.pipeline.clone(),
        build_number: build.number,
        build_branch: build.branch.clone(),
        build_tag: None,
        build_commit: build.commit.clone(),
        step_key: build.step.clone(),
        job_id: build.job_id.clone(),
        agent_id: agent_id.to_owned(),
        build_source: "webhook".to_owned(),
        runner_environment: "self-hosted".to_owned(),
        organization_id: None,
        pipeline_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> Build {
        Build {
            organization: "acme".into(),
            pipeline: "app".into(),
            branch: "main".into(),
            commit: "abc123".into(),
            step: "build".into(),
            number: 7,
            job_id: "job".into(),
        }
    }

    #[test]
    fn subject_has_buildkite_layout() {
        assert_eq!(
            buildkite_subject(&build()),
            "organization:acme:pipeline:app:ref:refs/heads/main:commit:abc123:step:build"
        );
    }

    #[test]
    fn times_are_offsets_from_now() {
        let validity = Validity {
            now: 1000,
            lifetime_secs: -60,
            not_before_offset_secs: 30,
            issued_at_offset_secs: -5,
        };
        let claims = build_claims("http://127.0.0.1:1", "drydock", &build(), validity, "agent");
        assert_eq!(claims.exp, 940);
        assert_eq!(claims.nbf, 1030);
        assert_eq!(claims.iat, 995);
    }

    #[test]
    fn every_serialized_claim_is_listed_as_supported() {
        let mut claims = build_claims(
            "i",
            "a",
            &build(),
            Validity {
                now: 0,
                lifetime_secs: 1,
                not_before_offset_secs: 0,
                issued_at_offset_secs: 0,
            },
            "agent",
        );
        claims.organization_id = Some("o".into());
        claims.pipeline_id = Some("p".into());
        let value = serde_json::to_value(&claims).unwrap();
        let names: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), CLAIMS_SUPPORTED.len());
        for name in names {
            assert!(
                CLAIMS_SUPPORTED.contains(&name.as_str()),
                "{name} is not listed"
            );
        }
    }
}
