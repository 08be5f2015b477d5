//! The broker's own user database, as RabbitMQ's internal backend.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;

use super::{Authenticator, Credentials, Permission, Principal, ResourceKind};
use crate::error::{Error, Result};
use crate::name::{UserName, VhostName};

/// What a user may do in one vhost, as RabbitMQ's `set_permissions`: regular expressions over
/// resource names. Opening the vhost needs an entry; the patterns are stored and reported, and
/// checked per resource once resource-level authorisation exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Permissions {
    /// Everything: `.*` for all three.
    pub fn all() -> Permissions {
        Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() }
    }
}

/// A user of the internal database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: UserName,
    /// RabbitMQ's `rabbit_password_hashing_sha256` form: base64 of a 4-byte salt followed by
    /// SHA-256(salt ‖ password). Empty: no password login.
    pub password_hash: String,
    pub tags: Vec<String>,
    pub permissions: HashMap<VhostName, Permissions>,
}

impl User {
    /// As RabbitMQ's default `loopback_users`: `guest` may log in only from loopback.
    fn loopback_only(&self) -> bool {
        self.name.as_str() == "guest"
    }
}

/// The hashing algorithm name RabbitMQ uses for `password_hash` values of this form.
pub const PASSWORD_HASHING: &str = "rabbit_password_hashing_sha256";

/// Hashes a password with a fresh random salt, as RabbitMQ does.
pub fn hash_password(password: &str) -> String {
    use base64::Engine;
    let mut salt = [0u8; 4];
    if getrandom::getrandom(&mut salt).is_err() {
        // No system randomness: a time-derived salt still varies per call.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        salt = nanos.to_le_bytes();
    }
    let mut stored = salt.to_vec();
    stored.extend_from_slice(&salted_digest(&salt, password));
    base64::engine::general_purpose::STANDARD.encode(stored)
}

fn salted_digest(salt: &[u8], password: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

/// Whether `password` matches a stored hash.
fn verify_password(hash: &str, password: &str) -> bool {
    use base64::Engine;
    let Ok(stored) = base64::engine::general_purpose::STANDARD.decode(hash) else { return false };
    if stored.len() != 4 + 32 {
        return false;
    }
    let (salt, digest) = stored.split_at(4);
    constant_time_eq(digest, &salted_digest(salt, password))
}

/// The broker's own user database. It changes at run time (the management API), so it sits
/// behind a lock; logins take the read side.
#[derive(Debug, Default)]
pub struct InternalUsers {
    users: RwLock<HashMap<UserName, User>>,
    /// Permission patterns compiled once: every connection asks, and most share a few patterns.
    patterns: std::sync::Mutex<HashMap<String, Option<regex::Regex>>>,
}

/// Compiled permission patterns kept; beyond this they are forgotten and compiled again.
const PATTERNS_MAX: usize = 1024;

impl InternalUsers {
    /// The database RabbitMQ starts with: `guest`/`guest`, administrator with every permission
    /// on `/`, loopback only.
    pub fn with_default_guest() -> InternalUsers {
        let users = InternalUsers::default();
        let permissions = HashMap::from([(VhostName::new("/"), Permissions::all())]);
        users.put(User {
            name: UserName::new("guest"),
            password_hash: hash_password("guest"),
            tags: vec!["administrator".into()],
            permissions,
        });
        users
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<UserName, User>> {
        self.users.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<UserName, User>> {
        self.users.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or replaces a user (its permissions are kept when it is replaced).
    pub fn put(&self, mut user: User) {
        let mut users = self.write();
        if let Some(existing) = users.get(&user.name) {
            if user.permissions.is_empty() {
                user.permissions = existing.permissions.clone();
            }
        }
        users.insert(user.name.clone(), user);
    }

    pub fn delete(&self, name: &UserName) -> bool {
        self.write().remove(name).is_some()
    }

    pub fn get(&self, name: &UserName) -> Option<User> {
        self.read().get(name).cloned()
    }

    /// Every user, sorted by name.
    pub fn list(&self) -> Vec<User> {
        let mut users: Vec<User> = self.read().values().cloned().collect();
        users.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        users
    }

    /// Sets a user's permissions in a vhost; false if there is no such user.
    pub fn set_permissions(&self, user: &UserName, vhost: &VhostName, permissions: Permissions) -> bool {
        match self.write().get_mut(user) {
            Some(user) => {
                user.permissions.insert(vhost.clone(), permissions);
                true
            }
            None => false,
        }
    }

    pub fn clear_permissions(&self, user: &UserName, vhost: &VhostName) -> bool {
        self.write().get_mut(user).is_some_and(|user| user.permissions.remove(vhost).is_some())
    }

    /// Forgets every permission in a deleted vhost.
    pub fn remove_vhost(&self, vhost: &VhostName) {
        for user in self.write().values_mut() {
            user.permissions.remove(vhost);
        }
    }

    /// Whether `name` matches a permission pattern (an invalid pattern matches nothing).
    fn matches(&self, pattern: &str, name: &str) -> bool {
        let mut patterns = self.patterns.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !patterns.contains_key(pattern) {
            if patterns.len() >= PATTERNS_MAX {
                patterns.clear();
            }
            patterns.insert(pattern.to_owned(), regex::Regex::new(pattern).ok());
        }
        patterns.get(pattern).and_then(Option::as_ref).is_some_and(|regex| regex.is_match(name))
    }

    /// Replaces the whole database (restoring stored definitions).
    pub fn replace_all(&self, users: Vec<User>) {
        *self.write() = users.into_iter().map(|user| (user.name.clone(), user)).collect();
    }
}

/// Compares without an early exit, so response time does not reveal how much of a password
/// matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl Authenticator for InternalUsers {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Principal> {
        let refused = || Error::LoginRefused { user: credentials.username.clone() };
        let users = self.read();
        let user = users.get(&credentials.username).ok_or_else(refused)?;
        if !verify_password(&user.password_hash, &credentials.password) {
            return Err(refused());
        }
        if user.loopback_only() && !credentials.peer.ip().is_loopback() {
            return Err(Error::LoopbackOnly { user: user.name.clone() });
        }
        Ok(Principal { user: user.name.clone(), tags: user.tags.clone(), backend: 0, peer: credentials.peer })
    }

    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()> {
        let allowed = self.read().get(&principal.user).is_some_and(|user| user.permissions.contains_key(vhost));
        if allowed {
            Ok(())
        } else {
            Err(Error::VhostAccessRefused { vhost: vhost.clone(), user: principal.user.clone() })
        }
    }

    /// The user's pattern for the permission must match the name, as RabbitMQ's regular
    /// expressions do (unanchored); an empty pattern grants nothing.
    async fn authorize_resource(
        &self,
        principal: &Principal,
        vhost: &VhostName,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> Result<()> {
        let pattern =
            self.read().get(&principal.user).and_then(|user| user.permissions.get(vhost)).map(
                |granted| match permission {
                    Permission::Configure => granted.configure.clone(),
                    Permission::Write => granted.write.clone(),
                    Permission::Read => granted.read.clone(),
                },
            );
        let allowed = pattern.filter(|pattern| !pattern.is_empty()).is_some_and(|pattern| self.matches(&pattern, name));
        if allowed {
            Ok(())
        } else {
            Err(super::access::refused(principal.user.clone(), vhost.clone(), kind, name, permission))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(user: &str, password: &str, peer: &str) -> Credentials {
        Credentials {
            username: UserName::new(user),
            password: password.into(),
            peer: peer.parse().expect("valid socket address"),
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn guest_logs_in_from_loopback_only() {
        let users = InternalUsers::with_default_guest();
        assert!(block_on(users.authenticate(&credentials("guest", "guest", "127.0.0.1:1000"))).is_ok());
        assert!(block_on(users.authenticate(&credentials("guest", "guest", "[::1]:1000"))).is_ok());
        let remote = block_on(users.authenticate(&credentials("guest", "guest", "10.1.2.3:1000")));
        assert_eq!(remote, Err(Error::LoopbackOnly { user: UserName::new("guest") }));
    }

    #[test]
    fn wrong_password_and_unknown_user_are_refused_alike() {
        let users = InternalUsers::with_default_guest();
        let wrong = block_on(users.authenticate(&credentials("guest", "nope", "127.0.0.1:1")));
        assert_eq!(wrong, Err(Error::LoginRefused { user: UserName::new("guest") }));
        let unknown = block_on(users.authenticate(&credentials("alice", "guest", "127.0.0.1:1")));
        assert_eq!(unknown, Err(Error::LoginRefused { user: UserName::new("alice") }));
    }

    #[test]
    fn resource_permissions_are_unanchored_regexes_and_empty_grants_nothing() {
        let users = InternalUsers::with_default_guest();
        let vhost = VhostName::new("/");
        let permissions = Permissions { configure: "^bob-".into(), write: String::new(), read: "amq\\.default".into() };
        users.put(User {
            name: UserName::new("bob"),
            password_hash: hash_password("x"),
            tags: vec![],
            permissions: HashMap::from([(vhost.clone(), permissions)]),
        });
        let bob = Principal {
            user: UserName::new("bob"),
            tags: vec![],
            backend: 0,
            peer: "127.0.0.1:1".parse().expect("address"),
        };
        let check = |kind, name, permission| block_on(users.authorize_resource(&bob, &vhost, kind, name, permission));
        assert!(check(ResourceKind::Queue, "bob-1", Permission::Configure).is_ok());
        assert!(check(ResourceKind::Queue, "alice-1", Permission::Configure).is_err());
        assert!(check(ResourceKind::Queue, "bob-1", Permission::Write).is_err(), "an empty pattern grants nothing");
        assert!(check(ResourceKind::Exchange, "amq.default", Permission::Read).is_ok());
        let other_vhost = block_on(users.authorize_resource(
            &bob,
            &VhostName::new("x"),
            ResourceKind::Queue,
            "bob-1",
            Permission::Configure,
        ));
        assert!(other_vhost.is_err(), "no permissions in a vhost: nothing");
    }

    #[test]
    fn password_hashes_are_rabbitmqs() {
        // The example in RabbitMQ's documentation on password hashing: "test12".
        assert!(verify_password("kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", "test12"));
        assert!(!verify_password("kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", "test13"));
        let (first, second) = (hash_password("secret"), hash_password("secret"));
        assert_ne!(first, second, "a fresh salt each time");
        assert!(verify_password(&first, "secret") && verify_password(&second, "secret"));
        assert!(!verify_password("not base64!", "secret"));
    }

    #[test]
    fn vhost_access_follows_the_user_list() {
        let users = InternalUsers::with_default_guest();
        let guest = Principal {
            user: UserName::new("guest"),
            tags: vec![],
            backend: 0,
            peer: "127.0.0.1:1".parse().expect("address"),
        };
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("/"))).is_ok());
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("other"))).is_err());
        assert!(users.set_permissions(&UserName::new("guest"), &VhostName::new("other"), Permissions::all()));
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("other"))).is_ok());
        users.remove_vhost(&VhostName::new("other"));
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("other"))).is_err());
    }
}
