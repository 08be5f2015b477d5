//! Authentication and vhost authorisation, behind one async trait so that every protocol (and
//! later, plugin backends such as LDAP) goes through the same check.

use std::collections::HashMap;
use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::{UserName, VhostName};

/// What a client presented to log in.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: UserName,
    pub password: String,
    /// The client's address; some users may log in only from loopback.
    pub peer: SocketAddr,
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: UserName,
    /// Management tags such as `administrator`.
    pub tags: Vec<String>,
}

/// Checks credentials and vhost access.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Principal>;

    /// Whether `principal` may open `vhost`.
    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()>;
}

/// A user of the internal database.
#[derive(Clone, Debug)]
pub struct User {
    pub name: UserName,
    pub password: String,
    pub tags: Vec<String>,
    /// The vhosts the user may open.
    pub vhosts: Vec<VhostName>,
    /// Whether the user may log in only from a loopback address, as RabbitMQ's `guest` does.
    pub loopback_only: bool,
}

/// The broker's own user database.
#[derive(Debug, Default)]
pub struct InternalUsers {
    users: HashMap<UserName, User>,
}

impl InternalUsers {
    /// The database RabbitMQ starts with: `guest`/`guest`, administrator of `/`, loopback only.
    pub fn with_default_guest() -> InternalUsers {
        let mut users = InternalUsers::default();
        users.add(User {
            name: UserName::new("guest"),
            password: "guest".into(),
            tags: vec!["administrator".into()],
            vhosts: vec![VhostName::new("/")],
            loopback_only: true,
        });
        users
    }

    pub fn add(&mut self, user: User) {
        self.users.insert(user.name.clone(), user);
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
        let user = self.users.get(&credentials.username).ok_or_else(refused)?;
        if !constant_time_eq(user.password.as_bytes(), credentials.password.as_bytes()) {
            return Err(refused());
        }
        if user.loopback_only && !credentials.peer.ip().is_loopback() {
            return Err(Error::LoopbackOnly { user: user.name.clone() });
        }
        Ok(Principal { user: user.name.clone(), tags: user.tags.clone() })
    }

    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()> {
        let allowed = self.users.get(&principal.user).is_some_and(|user| user.vhosts.contains(vhost));
        if allowed {
            Ok(())
        } else {
            Err(Error::VhostAccessRefused { vhost: vhost.clone(), user: principal.user.clone() })
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
    fn vhost_access_follows_the_user_list() {
        let users = InternalUsers::with_default_guest();
        let guest = Principal { user: UserName::new("guest"), tags: vec![] };
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("/"))).is_ok());
        assert!(block_on(users.authorize_vhost(&guest, &VhostName::new("other"))).is_err());
    }
}
