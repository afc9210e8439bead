//! Authentication: a bearer token's secret to a [`Caller`].
//!
//! A token is `vt_<64 hex>`: 32 random bytes. Only its sha256 is stored (the
//! store's `tokens` table, with the role and what it is bound to); the secret
//! exists in the answer that created it and, for the tokens `vt server` makes
//! for itself, in files of its data directory (mode 0600). Nothing logs a
//! token: events, views and errors carry its id and name only.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use vt_events::{Event, TokenCreated, TokenRevoked, TokenRole};
use vt_ids::{Hostname, Name, NodeId, OrgId, TokenId};
use vt_store::{Store, StoreError, TokenRecord, TokenRevocation};

use crate::authz::{Caller, OrgRole};

/// Length of `vt_` + 64 hex digits.
const SECRET_LEN: usize = 67;

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("vt_{}", hex::encode(bytes)))
}

/// Why a presented token was refused. Each says what to do; none repeats the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing `Authorization: Bearer <token>`; the admin token is in <data-dir>/admin-token")]
    Missing,
    #[error("the token is not valid; check it, or create one with `vt token create`")]
    Invalid,
    #[error("the token `{name}` ({id}) expired at {}; create a new one with `vt token create`", rfc3339(.at))]
    Expired { id: TokenId, name: String, at: DateTime<Utc> },
    #[error("the token `{name}` ({id}) was revoked at {}; create a new one with `vt token create`", rfc3339(.at))]
    Revoked { id: TokenId, name: String, at: DateTime<Utc> },
    #[error(
        "the enrollment token {id} was used (or revoked) at {}: enrollment tokens are single-use; \
         create a new one with `vt node enroll-token create`",
        rfc3339(.at)
    )]
    EnrollUsed { id: TokenId, at: DateTime<Utc> },
    #[error("the enrollment token {id} expired at {}; create a new one with `vt node enroll-token create`", rfc3339(.at))]
    EnrollExpired { id: TokenId, at: DateTime<Utc> },
    #[error(
        "the token `{name}` ({id}) has the `{role}` role but is bound to no {what} (made before roles were bound); \
         create a new one with `vt token create`"
    )]
    Unbound { id: TokenId, name: String, role: TokenRole, what: &'static str },
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The caller a presented secret stands for, at `now`.
pub async fn authenticate(
    store: &dyn Store,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<Result<Caller, AuthError>, StoreError> {
    if !secret.starts_with("vt_") || secret.len() != SECRET_LEN {
        return Ok(Err(AuthError::Invalid));
    }
    let Some(rec) = store.token_by_hash(&hash(secret)).await? else { return Ok(Err(AuthError::Invalid)) };
    Ok(caller_of(&rec, now))
}

/// What a stored token record allows at `now`.
pub fn caller_of(rec: &TokenRecord, now: DateTime<Utc>) -> Result<Caller, AuthError> {
    let (id, name) = (rec.token_id, rec.name.clone());
    if rec.role == TokenRole::Enroll {
        if let Some(at) = rec.revoked_at {
            return Err(AuthError::EnrollUsed { id, at });
        }
        if let Some(at) = rec.expires_at.filter(|at| *at <= now) {
            return Err(AuthError::EnrollExpired { id, at });
        }
    }
    if let Some(at) = rec.revoked_at {
        return Err(AuthError::Revoked { id, name, at });
    }
    if let Some(at) = rec.expires_at.filter(|at| *at <= now) {
        return Err(AuthError::Expired { id, name, at });
    }
    let unbound = |what| AuthError::Unbound { id, name: rec.name.clone(), role: rec.role, what };
    match (rec.role, OrgRole::of(rec.role)) {
        (TokenRole::Admin, _) => Ok(Caller::Admin { token: id }),
        (TokenRole::Node, _) => rec.node_id.map(|node| Caller::Node { token: id, node }).ok_or_else(|| unbound("node")),
        (TokenRole::Enroll, _) => Ok(Caller::Enroll { token: id }),
        (_, Some(role)) => rec.org_id.map(|org| Caller::Member { token: id, org, role }).ok_or_else(|| unbound("org")),
        (_, None) => Err(AuthError::Invalid),
    }
}

/// What a new token is: its name, role and binding.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub name: Name,
    pub role: TokenRole,
    /// The org of an org role.
    pub org: Option<OrgId>,
    /// The node of a `node` token: its id (new when the node is not registered yet) and name.
    pub node: Option<(NodeId, Hostname)>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The labels of the node an `enroll` token enrolls.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A token made but not stored yet: append `record` with `event` in one
/// transaction, and hand `secret` out once.
pub struct Issued {
    pub secret: String,
    pub record: TokenRecord,
    pub event: Event,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("token", &self.record.token_id).field("secret", &"<redacted>").finish()
    }
}

pub fn issue(spec: TokenSpec, now: DateTime<Utc>) -> Result<Issued, getrandom::Error> {
    let secret = new_secret()?;
    let token_id = TokenId::new();
    let record = TokenRecord {
        token_id,
        hash: hash(&secret),
        name: spec.name.to_string(),
        role: spec.role,
        org_id: spec.org,
        node_id: spec.node.as_ref().map(|(id, _)| *id),
        expires_at: spec.expires_at,
        created_at: now,
        revoked_at: None,
    };
    let event = Event::TokenCreated(TokenCreated {
        labels: spec.labels,
        token_id,
        name: spec.name.into_string(),
        role: spec.role,
        org_id: spec.org,
        node_id: spec.node.as_ref().map(|(id, _)| *id),
        node_name: spec.node.map(|(_, name)| name.into_string()),
        expires_at: spec.expires_at,
    });
    Ok(Issued { secret, record, event })
}

/// The revocation of a token at `at`: its event and the record's update, to append together.
/// The event and the record of revoking `token` of role `role`; revoking an
/// admin token is refused by the store if it would leave none active.
pub fn revoke(token: TokenId, role: TokenRole, org: Option<OrgId>, at: DateTime<Utc>) -> (Event, TokenRevocation) {
    let revocation = TokenRevocation { token_id: token, at, keep_an_admin: role == TokenRole::Admin };
    (Event::TokenRevoked(TokenRevoked { token_id: token, org_id: org }), revocation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(role: TokenRole) -> TokenRecord {
        TokenRecord {
            token_id: TokenId::new(),
            hash: "h".into(),
            name: "t".into(),
            role,
            org_id: None,
            node_id: None,
            expires_at: None,
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn records_become_callers() {
        let now = Utc::now();
        assert!(matches!(caller_of(&record(TokenRole::Admin), now), Ok(Caller::Admin { .. })));
        let org = OrgId::new();
        let rec = TokenRecord { org_id: Some(org), ..record(TokenRole::Deployer) };
        assert!(matches!(caller_of(&rec, now), Ok(Caller::Member { org: o, role: OrgRole::Deployer, .. }) if o == org));
        let node = NodeId::new();
        let rec = TokenRecord { node_id: Some(node), ..record(TokenRole::Node) };
        assert!(matches!(caller_of(&rec, now), Ok(Caller::Node { node: n, .. }) if n == node));
        // Tokens from before roles were bound are refused with a way out.
        let err = caller_of(&record(TokenRole::Node), now).unwrap_err();
        assert!(err.to_string().contains("bound to no node"), "{err}");
        assert!(matches!(caller_of(&record(TokenRole::Viewer), now), Err(AuthError::Unbound { what: "org", .. })));
    }

    #[test]
    fn expired_and_revoked_tokens_say_so() {
        let now = Utc::now();
        let rec = TokenRecord { expires_at: Some(now), ..record(TokenRole::Admin) };
        assert!(matches!(caller_of(&rec, now), Err(AuthError::Expired { .. })));
        let rec = TokenRecord { expires_at: Some(now + chrono::Duration::seconds(1)), ..rec };
        assert!(caller_of(&rec, now).is_ok());
        let rec = TokenRecord { revoked_at: Some(now), ..rec };
        let err = caller_of(&rec, now).unwrap_err().to_string();
        assert!(err.contains("was revoked at") && err.contains("`t`"), "{err}");
    }

    #[test]
    fn enrollment_tokens_are_single_use_and_short_lived() {
        let now = Utc::now();
        assert!(matches!(caller_of(&record(TokenRole::Enroll), now), Ok(Caller::Enroll { .. })));
        let used = TokenRecord { revoked_at: Some(now), ..record(TokenRole::Enroll) };
        let err = caller_of(&used, now).unwrap_err();
        assert!(matches!(err, AuthError::EnrollUsed { .. }) && err.to_string().contains("single-use"), "{err}");
        let expired = TokenRecord { expires_at: Some(now), ..record(TokenRole::Enroll) };
        let err = caller_of(&expired, now).unwrap_err();
        assert!(err.to_string().contains("vt node enroll-token create"), "{err}");
    }

    #[test]
    fn issued_secrets_are_never_printed() {
        let spec = TokenSpec {
            name: Name::parse("ci").unwrap(),
            role: TokenRole::Admin,
            org: None,
            node: None,
            expires_at: None,
            labels: Default::default(),
        };
        let issued = issue(spec, Utc::now()).unwrap();
        assert_eq!(issued.secret.len(), SECRET_LEN);
        assert_eq!(issued.record.hash, hash(&issued.secret));
        for text in [format!("{issued:?}"), format!("{:?}", issued.event), format!("{:?}", issued.record)] {
            assert!(!text.contains(&issued.secret[3..]), "{text}");
        }
    }
}
