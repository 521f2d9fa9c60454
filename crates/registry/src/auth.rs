//! Authentication and permissions of registry requests.
//!
//! Clients follow the Docker token authentication flow
//! (<https://distribution.github.io/distribution/spec/auth/token/>): a 401 names the token
//! endpoint and the scope, the client trades its credentials there for a short-lived JWT,
//! and sends that JWT as a bearer token. A raw Drydock API token is accepted too, as a bearer
//! token or as the password of HTTP Basic auth, and reaches everything its principal may.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use drydock_identity::{AuthError, Principal};
use drydock_store::{now_unix, Db};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::reference::RepositoryName;

/// Issuer claim of registry tokens.
const ISSUER: &str = "drydock";

/// Lifetime of a registry token, unless the API token it came from expires sooner.
pub(crate) const TOKEN_LIFETIME_SECS: i64 = 15 * 60;

/// An operation on a repository that needs permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Pull,
    Push,
    /// Deleting manifests, tags and blob links. A `push` grant allows it too, because every
    /// principal that may push may delete.
    Delete,
}

impl Action {
    /// Returns whether an action granted in a token scope allows this action.
    fn granted_by(self, granted: &str) -> bool {
        match self {
            Action::Pull => matches!(granted, "pull" | "*"),
            Action::Push => matches!(granted, "push" | "*"),
            Action::Delete => matches!(granted, "delete" | "push" | "*"),
        }
    }
}

/// One entry of a token's `access` claim, as in the Docker token specification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl ResourceActions {
    /// Parses a scope `repository:NAME:ACTION[,ACTION...]`. Other resource types and
    /// malformed scopes yield `None`: they are ignored, never granted.
    pub fn parse_scope(scope: &str) -> Option<ResourceActions> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind != "repository" || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(ResourceActions {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }
}

/// The claims of a registry token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    /// The workspace the principal is confined to; absent for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workspace: Option<TokenWorkspace>,
    access: Vec<ResourceActions>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenWorkspace {
    id: i64,
    name: String,
}

/// An issued registry token.
pub(crate) struct IssuedToken {
    pub token: String,
    pub expires_in: i64,
    pub issued_at: i64,
}

/// Signs and verifies registry tokens, and words the `WWW-Authenticate` challenge.
pub(crate) struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    realm: String,
    service: String,
}

impl TokenAuthority {
    pub fn new(key: &[u8], realm: String, service: String) -> TokenAuthority {
        TokenAuthority {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            realm,
            service,
        }
    }

    /// Formats the challenge of a 401, with a scope when a repository is involved.
    pub fn challenge(&self, repository: Option<&RepositoryName>) -> String {
        match repository {
            Some(repository) => {
                self.challenge_with_scope(&format!("repository:{repository}:pull,push"))
            }
            None => format!(
                r#"Bearer realm="{}",service="{}""#,
                self.realm, self.service
            ),
        }
    }

    /// Formats the challenge of a 401 asking for `scope`, which may list several scopes
    /// separated by spaces, as the Docker token specification allows.
    fn challenge_with_scope(&self, scope: &str) -> String {
        format!(
            r#"Bearer realm="{}",service="{}",scope="{scope}""#,
            self.realm, self.service
        )
    }

    /// Issues a token for `principal` holding `access`, valid for [`TOKEN_LIFETIME_SECS`] or
    /// until `api_token_expires_at`, whichever comes first.
    pub fn issue(
        &self,
        principal: &Principal,
        access: Vec<ResourceActions>,
        api_token_expires_at: Option<i64>,
    ) -> Result<IssuedToken, ApiError> {
        let now = now_unix();
        let mut expires_at = now + TOKEN_LIFETIME_SECS;
        if let Some(api_expiry) = api_token_expires_at {
            expires_at = expires_at.min(api_expiry);
        }
        let (sub, workspace) = match principal {
            Principal::Operator => ("operator".to_owned(), None),
            Principal::Workspace {
                id, name, subject, ..
            } => (
                subject.clone(),
                Some(TokenWorkspace {
                    id: *id,
                    name: name.clone(),
                }),
            ),
        };
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub,
            aud: self.service.clone(),
            exp: expires_at,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            workspace,
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|error| ApiError::internal("sign the registry token", error))?;
        Ok(IssuedToken {
            token,
            expires_in: expires_at - now,
            issued_at: now,
        })
    }

    /// Verifies a registry token and returns the caller it stands for.
    fn verify(&self, token: &str, repository: Option<&RepositoryName>) -> Result<Caller, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[&self.service]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|error| {
                let reason = match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired",
                    _ => "invalid",
                };
                ApiError::unauthorized(
                    format!(
                        "registry token {reason}: fetch a new one from {}",
                        self.realm
                    ),
                    &self.challenge(repository),
                )
            })?
            .claims;
        let principal = match claims.workspace {
            None => Principal::Operator,
            Some(workspace) => Principal::Workspace {
                id: workspace.id,
                name: workspace.name,
                subject: claims.sub,
                // The registry token's expiry, which is no later than the API token's.
                expires_at: Some(claims.exp),
            },
        };
        Ok(Caller {
            principal,
            scopes: Some(claims.access),
        })
    }
}

/// Credentials found on a request.
pub(crate) enum Credentials {
    None,
    /// A registry token (a JWT).
    RegistryToken(String),
    /// A Drydock API token.
    ApiToken(String),
}

impl Credentials {
    /// Reads `Authorization`: `Bearer <JWT or API token>` or `Basic` with the API token as
    /// the password (the user name is ignored).
    pub fn from_headers(headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Credentials::None;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            // A JWT has three dot-separated parts; API tokens contain no dots.
            if rest.split('.').count() == 3 {
                return Credentials::RegistryToken(rest.to_owned());
            }
            return Credentials::ApiToken(rest.to_owned());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            if let Some(password) = basic_password(rest) {
                return Credentials::ApiToken(password);
            }
        }
        Credentials::None
    }
}

/// Returns the password of an HTTP Basic credential, if it has a non-empty one.
pub(crate) fn basic_password(encoded: &str) -> Option<String> {
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Resolves an API token to its principal and the token's expiry. Unknown, expired and
/// missing tokens get a 401 carrying the [`AuthError`] message, which names the fix.
pub(crate) async fn principal_of_api_token(
    db: &Db,
    token: &str,
    challenge: &str,
) -> Result<(Principal, Option<i64>), ApiError> {
    let principal = match drydock_identity::authenticate(db, token).await {
        Ok(principal) => principal,
        Err(AuthError::Store(error)) => return Err(error.into()),
        Err(error) => return Err(ApiError::unauthorized(error.to_string(), challenge)),
    };
    let expires_at = db
        .lookup_token(token)
        .await?
        .and_then(|stored| stored.expires_at);
    Ok((principal, expires_at))
}

/// An authenticated caller of the registry API.
pub(crate) struct Caller {
    pub principal: Principal,
    /// The scopes of a registry token, or `None` for a raw API token, which may do
    /// everything its principal may.
    scopes: Option<Vec<ResourceActions>>,
}

impl Caller {
    /// Authenticates a request, or fails with a 401 carrying the challenge for `repository`.
    pub async fn authenticate(
        db: &Db,
        authority: &TokenAuthority,
        headers: &HeaderMap,
        repository: Option<&RepositoryName>,
    ) -> Result<Caller, ApiError> {
        let challenge = authority.challenge(repository);
        match Credentials::from_headers(headers) {
            Credentials::None => Err(ApiError::unauthorized(
                format!(
                    "authentication required: get a registry token from {} with a Drydock API \
                     token as the password, or send the API token itself",
                    authority.realm
                ),
                &challenge,
            )),
            Credentials::RegistryToken(token) => authority.verify(&token, repository),
            Credentials::ApiToken(token) => {
                let (principal, _) = principal_of_api_token(db, &token, &challenge).await?;
                Ok(Caller {
                    principal,
                    scopes: None,
                })
            }
        }
    }

    /// Returns the workspace of the caller, or "operator", for logs and messages.
    pub fn label(&self) -> &str {
        self.principal.workspace().unwrap_or("operator")
    }

    /// Returns whether the principal may ever act on `repository`.
    fn may_reach(&self, repository: &RepositoryName) -> bool {
        self.principal.can_access_workspace(repository.workspace())
    }

    /// Returns whether the caller's credentials include `action` on `repository`.
    fn holds(&self, repository: &RepositoryName, action: Action) -> bool {
        match &self.scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|scope| {
                scope.kind == "repository"
                    && scope.name == repository.as_str()
                    && scope
                        .actions
                        .iter()
                        .any(|granted| action.granted_by(granted))
            }),
        }
    }

    /// Returns whether the caller may read `from` to mount a blob from it into `target`.
    /// A registry token that lacks the pull scope for a repository its principal can reach
    /// gets a 401 whose challenge names the scopes of both repositories. The client then
    /// fetches a token that covers the mount and retries it.
    pub fn may_mount_from(
        &self,
        authority: &TokenAuthority,
        target: &RepositoryName,
        from: &RepositoryName,
    ) -> Result<bool, ApiError> {
        if !self.may_reach(from) {
            return Ok(false);
        }
        if self.holds(from, Action::Pull) {
            return Ok(true);
        }
        let scope = format!("repository:{target}:pull,push repository:{from}:pull");
        Err(ApiError::unauthorized(
            format!(
                "registry token lacks the pull scope for mount source {from:?}: fetch a token \
                 with scope {scope}"
            ),
            &authority.challenge_with_scope(&scope),
        ))
    }

    /// Checks that the caller may do `action` on `repository`: 403 `DENIED` when its
    /// principal never may, 401 with a challenge when its token lacks the scope.
    pub fn authorize(
        &self,
        authority: &TokenAuthority,
        repository: &RepositoryName,
        action: Action,
    ) -> Result<(), ApiError> {
        if !self.may_reach(repository) {
            let message = match self.principal.workspace() {
                Some(own) => format!(
                    "workspace {own:?} may not access repository \"{repository}\": a workspace \
                     token reaches only repositories under {own}/"
                ),
                None => format!("access to repository \"{repository}\" denied"),
            };
            return Err(ApiError::new(ErrorCode::Denied, message));
        }
        if !self.holds(repository, action) {
            return Err(ApiError::unauthorized(
                format!(
                    "registry token lacks the scope for repository \"{repository}\": fetch a \
                     token with scope repository:{repository}:pull,push"
                ),
                &authority.challenge(Some(repository)),
            ));
        }
        Ok(())
    }
}

/// Grants the subset of the requested scopes that `principal` may hold. Known actions are
/// `pull`, `push`, `delete` and `*`; others are dropped.
pub(crate) fn grant_scopes(principal: &Principal, requested: &[String]) -> Vec<ResourceActions> {
    let mut granted: Vec<ResourceActions> = Vec::new();
    let scopes = requested
        .iter()
        .flat_map(|value| value.split(' '))
        .filter(|s| !s.is_empty());
    for scope in scopes {
        let Some(mut wanted) = ResourceActions::parse_scope(scope) else {
            continue;
        };
        let Ok(name) = RepositoryName::parse(&wanted.name) else {
            continue;
        };
        if !principal.can_access_workspace(name.workspace()) {
            continue;
        }
        wanted
            .actions
            .retain(|a| matches!(a.as_str(), "pull" | "push" | "delete" | "*"));
        if wanted.actions.is_empty() {
            continue;
        }
        match granted.iter_mut().find(|g| g.name == wanted.name) {
            Some(existing) => {
                for action in wanted.actions {
                    if !existing.actions.contains(&action) {
                        existing.actions.push(action);
                    }
                }
            }
            None => granted.push(wanted),
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(name: &str) -> Principal {
        Principal::Workspace {
            id: 1,
            name: name.to_owned(),
            subject: "ci".to_owned(),
            expires_at: None,
        }
    }

    #[test]
    fn scope_parsing_splits_from_both_ends() {
        let scope = ResourceActions::parse_scope("repository:acme/team/app:pull,push").unwrap();
        assert_eq!(scope.name, "acme/team/app");
        assert_eq!(scope.actions, vec!["pull", "push"]);
        assert!(ResourceActions::parse_scope("registry:catalog:*").is_none());
        assert!(ResourceActions::parse_scope("repository:acme/app").is_none());
    }

    #[test]
    fn grants_are_the_reachable_subset() {
        let requested = vec![
            "repository:acme/app:pull,push".to_owned(),
            "repository:other/app:pull".to_owned(),
            "repository:acme/base:pull repository:acme/app:delete".to_owned(),
            "repository:acme/x:fly".to_owned(),
        ];
        let granted = grant_scopes(&workspace("acme"), &requested);
        assert_eq!(granted.len(), 2, "{granted:?}");
        assert_eq!(granted[0].name, "acme/app");
        assert_eq!(granted[0].actions, vec!["pull", "push", "delete"]);
        assert_eq!(granted[1].name, "acme/base");
        assert_eq!(granted[1].actions, vec!["pull"]);

        let operator = grant_scopes(&Principal::Operator, &requested);
        assert!(operator.iter().any(|g| g.name == "other/app"));
    }

    #[test]
    fn token_round_trip_keeps_principal_and_scopes() {
        let authority = TokenAuthority::new(b"key", "http://r/auth/token".into(), "r:80".into());
        let access = vec![ResourceActions::parse_scope("repository:acme/app:pull").unwrap()];
        let issued = authority.issue(&workspace("acme"), access, None).unwrap();
        assert_eq!(issued.expires_in, TOKEN_LIFETIME_SECS);

        let caller = authority.verify(&issued.token, None).unwrap();
        assert_eq!(caller.principal.workspace(), Some("acme"));
        let app = RepositoryName::parse("acme/app").unwrap();
        assert!(caller.authorize(&authority, &app, Action::Pull).is_ok());
        let push = caller
            .authorize(&authority, &app, Action::Push)
            .unwrap_err();
        assert_eq!(push.code, ErrorCode::Unauthorized);
    }

    #[test]
    fn token_expires_with_its_api_token() {
        let authority = TokenAuthority::new(b"key", "realm".into(), "svc".into());
        let soon = now_unix() + 30;
        let issued = authority
            .issue(&Principal::Operator, Vec::new(), Some(soon))
            .unwrap();
        assert!(issued.expires_in <= 30, "{}", issued.expires_in);
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let ours = TokenAuthority::new(b"key", "realm".into(), "svc".into());
        let theirs = TokenAuthority::new(b"other", "realm".into(), "svc".into());
        let issued = theirs
            .issue(&Principal::Operator, Vec::new(), None)
            .unwrap();
        let error = ours.verify(&issued.token, None).err().expect("rejected");
        assert_eq!(error.code, ErrorCode::Unauthorized);
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        let encoded = STANDARD.encode("anyone:ddw_secret");
        assert_eq!(basic_password(&encoded).as_deref(), Some("ddw_secret"));
        assert_eq!(basic_password(&STANDARD.encode("user:")), None);
    }
}
