//! The start-up check of the S3 bucket: one signed `HeadBucket` request, whose status
//! distinguishes a missing bucket from rejected credentials and an unreachable endpoint.

use std::error::Error as _;
use std::time::Duration;

use http::StatusCode;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::HttpRequestBody;

use super::config::S3Config;
use crate::error::RegistryError;

/// Limit for the whole check, connecting included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `HEAD ENDPOINT/BUCKET`, signed with AWS Signature Version 4. See
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html>.
pub(super) async fn check(config: &S3Config) -> Result<(), RegistryError> {
    let endpoint = config.endpoint_base();
    let failure = |reason: String, fix: &str| RegistryError::S3Bucket {
        bucket: config.bucket.clone(),
        endpoint: endpoint.clone(),
        reason,
        fix: fix.to_owned(),
    };
    let url = format!("{endpoint}/{}", config.bucket);
    let mut request = http::Request::builder()
        .method(http::Method::HEAD)
        .uri(&url)
        .body(HttpRequestBody::empty())
        .map_err(|error| failure(error.to_string(), "check --s3-endpoint and --s3-bucket"))?;
    let credential = AwsCredential {
        key_id: config.credentials.access_key_id.clone(),
        secret_key: config.credentials.secret_access_key.clone(),
        token: config.credentials.session_token.clone(),
    };
    AwsAuthorizer::new(&credential, "s3", &config.region).authorize(&mut request, None);

    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CHECK_TIMEOUT)
        .build()
        .map_err(|error| failure(error_chain(&error), "check the TLS setup of this machine"))?;
    let response = client
        .head(&url)
        .headers(request.headers().clone())
        .send()
        .await
        .map_err(|error| {
            failure(
                format!("the endpoint did not respond: {}", error_chain(&error)),
                "check --s3-endpoint and that the S3 service is running and reachable from \
                 this machine",
            )
        })?;

    let status = response.status();
    match status {
        status if status.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(failure(
            "the bucket does not exist".into(),
            "create the bucket, or name an existing one with --s3-bucket",
        )),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(failure(
            format!("access was denied (HTTP {status})"),
            "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that the key may list \
             and write the bucket",
        )),
        StatusCode::MOVED_PERMANENTLY => {
            let region = response
                .headers()
                .get("x-amz-bucket-region")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("unknown");
            Err(failure(
                format!("the bucket is in region {region}, not {}", config.region),
                "set --s3-region to the bucket's region",
            ))
        }
        StatusCode::BAD_REQUEST => Err(failure(
            format!("the request was rejected (HTTP {status})"),
            "check that --s3-region names the region the endpoint expects",
        )),
        status => Err(failure(
            format!("the endpoint returned HTTP {status}"),
            "check --s3-endpoint and the S3 service's log",
        )),
    }
}

/// Formats an error with its sources, because reqwest's own message omits the cause, such
/// as "connection refused".
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
