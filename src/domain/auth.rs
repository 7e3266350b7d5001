//! Who is calling, and what they may touch (SPEC section 3, tokens).
//!
//! An API key's token is `pdpl_<key id, 32 hex>_<secret, 64 hex>`. Only SHA-256 of the secret is
//! stored; a presented token is found by its key id and its secret's hash compared in constant
//! time. The bootstrap admin token from configuration is compared the same way.

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::TenantId;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything, including the admin API.
    Admin,
    /// Ingest and read for any tenant; no admin routes.
    Service,
    /// Ingest and read for this tenant only.
    Tenant(TenantId),
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Service => "service",
            Scope::Tenant(_) => "tenant",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub scope: Scope,
    /// `None` for the bootstrap admin token.
    pub key_id_opt: Option<Uuid>,
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The route needs the admin scope.
    AdminOnly,
    /// The tenant is outside the key's scope.
    OtherTenant,
    /// The route spans every tenant: admin or service keys only.
    PlatformOnly,
}

impl Principal {
    /// Admin or service scope: routes that span every tenant.
    pub fn require_platform(&self) -> Result<(), Denial> {
        match self.scope {
            Scope::Admin | Scope::Service => Ok(()),
            Scope::Tenant(_) => Err(Denial::PlatformOnly),
        }
    }

    pub fn require_admin(&self) -> Result<(), Denial> {
        match self.scope {
            Scope::Admin => Ok(()),
            _ => Err(Denial::AdminOnly),
        }
    }

    pub fn require_tenant(&self, tenant_id: TenantId) -> Result<(), Denial> {
        match self.scope {
            Scope::Admin | Scope::Service => Ok(()),
            Scope::Tenant(own) if own == tenant_id => Ok(()),
            Scope::Tenant(_) => Err(Denial::OtherTenant),
        }
    }

    /// Admin and service callers register tenants they name for the first time.
    pub fn registers_new_tenants(&self) -> bool {
        matches!(self.scope, Scope::Admin | Scope::Service)
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match self.key_id_opt {
            Some(key_id) => format!("key:{key_id}"),
            None => "bootstrap-admin".to_string(),
        }
    }
}

/// A presented token, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    pub key_id: Uuid,
    pub secret_hash: [u8; 32],
}

const TOKEN_PREFIX: &str = "pdpl_";

/// Parses `pdpl_<key id>_<secret>`; `None` for anything else.
pub fn parse_token(token: &str) -> Option<PresentedKey> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (key_id_text, secret) = rest.split_once('_')?;
    if key_id_text.len() != 32
        || secret.len() != 64
        || !secret.bytes().all(|byte| byte.is_ascii_hexdigit())
    {
        return None;
    }
    let key_id = Uuid::try_parse(key_id_text).ok()?;
    Some(PresentedKey {
        key_id,
        secret_hash: hash_secret(secret),
    })
}

/// A new key: its id, the token shown once, and the hash to store.
pub fn mint_key() -> (Uuid, String, [u8; 32]) {
    let key_id = Uuid::new_v4();
    let mut secret_bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret_bytes);
    let secret = hex(&secret_bytes);
    let token = format!("{TOKEN_PREFIX}{}_{secret}", key_id.simple());
    (key_id, token, hash_secret(&secret))
}

/// A random bootstrap admin token for an engine that runs on its embedded default.
pub fn generate_bootstrap_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("pdpl_admin_{}", hex(&bytes))
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests without an early exit, so timing reveals nothing of where they differ.
pub fn digests_equal(left: &[u8; 32], right: &[u8]) -> bool {
    if right.len() != left.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
    std::hint::black_box(difference) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_parses_back_to_its_key_and_hash() {
        let (key_id, token, hash) = mint_key();
        let presented = parse_token(&token).unwrap();
        assert_eq!(presented.key_id, key_id);
        assert!(digests_equal(&presented.secret_hash, &hash));
        let (_, other_token, _) = mint_key();
        assert!(!digests_equal(
            &parse_token(&other_token).unwrap().secret_hash,
            &hash
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in [
            "",
            "pdpl_",
            "pdpl_abc_def",
            "Bearer x",
            &format!("pdpl_{}_{}", "g".repeat(32), "a".repeat(64)),
        ] {
            assert!(parse_token(token).is_none(), "{token}");
        }
    }

    #[test]
    fn scopes_decide_what_a_caller_may_touch() {
        let tenant = TenantId(Uuid::new_v4());
        let other = TenantId(Uuid::new_v4());
        let tenant_key = Principal {
            scope: Scope::Tenant(tenant),
            key_id_opt: Some(Uuid::new_v4()),
        };
        assert_eq!(tenant_key.require_tenant(tenant), Ok(()));
        assert_eq!(tenant_key.require_tenant(other), Err(Denial::OtherTenant));
        assert_eq!(tenant_key.require_admin(), Err(Denial::AdminOnly));
        let service = Principal {
            scope: Scope::Service,
            key_id_opt: Some(Uuid::new_v4()),
        };
        assert_eq!(service.require_tenant(other), Ok(()));
        assert_eq!(service.require_admin(), Err(Denial::AdminOnly));
        assert!(service.registers_new_tenants() && !tenant_key.registers_new_tenants());
    }
}
