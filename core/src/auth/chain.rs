//! Several backends tried in order, as RabbitMQ's `auth_backends.1 = internal`,
//! `auth_backends.2 = ldap`: the first backend that accepts the password authenticates the user,
//! and that same backend answers every later authorisation question for the session.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Authenticator, Credentials, Permission, Principal, ResourceKind};
use crate::error::{Error, Result};
use crate::name::VhostName;

/// An ordered list of named backends.
#[derive(Debug)]
pub struct AuthChain {
    backends: Vec<(String, Arc<dyn Authenticator>)>,
}

impl AuthChain {
    /// A chain of `(name, backend)` pairs, tried in order. It must not be empty.
    pub fn new(backends: Vec<(String, Arc<dyn Authenticator>)>) -> AuthChain {
        assert!(!backends.is_empty(), "an auth chain needs at least one backend");
        AuthChain { backends }
    }

    /// The backends' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.iter().map(|(name, _)| name.as_str())
    }
}

#[async_trait]
impl Authenticator for AuthChain {
    /// Tries each backend in turn. A refusal or a failure moves on to the next, as in RabbitMQ.
    /// If every backend refuses, the answer is the most specific refusal (such as
    /// loopback-only), else a plain login refusal.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Principal> {
        let mut refusal = Error::LoginRefused { user: credentials.username.clone() };
        for (index, (name, backend)) in self.backends.iter().enumerate() {
            match backend.authenticate(credentials).await {
                Ok(mut principal) => {
                    principal.backend = index;
                    tracing::debug!(user = %credentials.username, backend = %name, "authenticated");
                    return Ok(principal);
                }
                Err(error @ Error::LoginRefused { .. }) => {
                    tracing::debug!(user = %credentials.username, backend = %name, %error, "refused");
                }
                Err(error) => {
                    tracing::debug!(user = %credentials.username, backend = %name, %error, "refused");
                    refusal = error;
                }
            }
        }
        Err(refusal)
    }

    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()> {
        match self.backends.get(principal.backend) {
            Some((_, backend)) => backend.authorize_vhost(principal, vhost).await,
            None => Err(Error::VhostAccessRefused { vhost: vhost.clone(), user: principal.user.clone() }),
        }
    }

    async fn authorize_resource(
        &self,
        principal: &Principal,
        vhost: &VhostName,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> Result<()> {
        match self.backends.get(principal.backend) {
            Some((_, backend)) => backend.authorize_resource(principal, vhost, kind, name, permission).await,
            None => Err(super::access::refused(principal.user.clone(), vhost.clone(), kind, name, permission)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::InternalUsers;
    use crate::name::UserName;

    /// A backend that knows one user and one vhost.
    #[derive(Debug)]
    struct OneUser(&'static str, &'static str);

    #[async_trait]
    impl Authenticator for OneUser {
        async fn authenticate(&self, credentials: &Credentials) -> Result<Principal> {
            if credentials.username.as_str() == self.0 && credentials.password == self.0 {
                Ok(Principal { user: credentials.username.clone(), tags: vec![], backend: 0, peer: credentials.peer })
            } else {
                Err(Error::LoginRefused { user: credentials.username.clone() })
            }
        }

        async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()> {
            if vhost.as_str() == self.1 {
                Ok(())
            } else {
                Err(Error::VhostAccessRefused { vhost: vhost.clone(), user: principal.user.clone() })
            }
        }
    }

    fn login(user: &str, password: &str, peer: &str) -> Credentials {
        Credentials { username: UserName::new(user), password: password.into(), peer: peer.parse().expect("address") }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn the_backend_that_authenticates_also_authorises() {
        let chain = AuthChain::new(vec![
            ("internal".into(), Arc::new(InternalUsers::with_default_guest())),
            ("other".into(), Arc::new(OneUser("bob", "bobs"))),
        ]);
        let guest = block_on(chain.authenticate(&login("guest", "guest", "127.0.0.1:1"))).expect("guest");
        assert_eq!(guest.backend, 0);
        assert!(block_on(chain.authorize_vhost(&guest, &VhostName::new("/"))).is_ok());
        assert!(block_on(chain.authorize_vhost(&guest, &VhostName::new("bobs"))).is_err());

        let bob = block_on(chain.authenticate(&login("bob", "bob", "127.0.0.1:1"))).expect("bob");
        assert_eq!(bob.backend, 1);
        assert!(block_on(chain.authorize_vhost(&bob, &VhostName::new("bobs"))).is_ok());
        assert!(block_on(chain.authorize_vhost(&bob, &VhostName::new("/"))).is_err());
    }

    #[test]
    fn every_backend_refusing_gives_the_most_specific_refusal() {
        let chain = AuthChain::new(vec![
            ("internal".into(), Arc::new(InternalUsers::with_default_guest())),
            ("other".into(), Arc::new(OneUser("bob", "bobs"))),
        ]);
        let wrong = block_on(chain.authenticate(&login("bob", "nope", "127.0.0.1:1")));
        assert_eq!(wrong, Err(Error::LoginRefused { user: UserName::new("bob") }));
        let remote = block_on(chain.authenticate(&login("guest", "guest", "10.0.0.1:1")));
        assert_eq!(remote, Err(Error::LoopbackOnly { user: UserName::new("guest") }));
    }
}
