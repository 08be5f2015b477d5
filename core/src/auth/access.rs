//! Resource permissions, as RabbitMQ's configure/write/read: what a session may do to which
//! queue or exchange. A session asks through its `Access`, which remembers answers for the
//! session's life (as RabbitMQ caches permission checks per channel), so the publish path pays
//! for a backend's answer once per exchange, not per message.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use super::{Authenticator, Principal};
use crate::error::{Error, Result};
use crate::name::{UserName, VhostName};

/// Answers remembered per session; when full, they are forgotten and asked again.
const ACCESS_CACHE_ENTRIES_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Queue,
    Exchange,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ResourceKind::Queue => "queue",
            ResourceKind::Exchange => "exchange",
        })
    }
}

/// RabbitMQ's three permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Declare and delete.
    Configure,
    /// Publish to an exchange; bind a queue (or exchange) as a destination.
    Write,
    /// Consume from or get from a queue; bind from an exchange.
    Read,
}

impl fmt::Display for Permission {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Permission::Configure => "configure",
            Permission::Write => "write",
            Permission::Read => "read",
        })
    }
}

/// The name permissions are checked against: the default exchange is `amq.default`, as in
/// RabbitMQ, so a pattern can grant or withhold it.
pub fn permission_name(kind: ResourceKind, name: &str) -> &str {
    if kind == ResourceKind::Exchange && name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// The refusal of one permission, in RabbitMQ's words.
pub fn refused(user: UserName, vhost: VhostName, kind: ResourceKind, name: &str, permission: Permission) -> Error {
    Error::AccessRefused { kind, name: name.to_owned(), vhost, user, permission }
}

/// One session's view of its permissions in one vhost.
pub struct Access {
    authenticator: Arc<dyn Authenticator>,
    principal: Principal,
    vhost: VhostName,
    /// Answers by kind and permission, then by name: looked up by `&str`, so the publish path
    /// allocates nothing.
    answers: Mutex<HashMap<(ResourceKind, Permission), HashMap<String, bool>>>,
}

impl fmt::Debug for Access {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Access").field("user", &self.principal.user).field("vhost", &self.vhost).finish()
    }
}

impl Access {
    pub fn new(authenticator: Arc<dyn Authenticator>, principal: Principal, vhost: VhostName) -> Access {
        Access { authenticator, principal, vhost, answers: Mutex::new(HashMap::new()) }
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the session may do `permission` to the named queue or exchange.
    pub async fn check(&self, kind: ResourceKind, name: &str, permission: Permission) -> Result<()> {
        let name = permission_name(kind, name);
        let known = self
            .answers
            .lock()
            .expect("access cache lock poisoned")
            .get(&(kind, permission))
            .and_then(|answers| answers.get(name))
            .copied();
        let allowed = match known {
            Some(allowed) => allowed,
            None => {
                let answer =
                    self.authenticator.authorize_resource(&self.principal, &self.vhost, kind, name, permission).await;
                let allowed = answer.is_ok();
                // A backend that could not decide is asked again next time: a passing outage
                // must not deny a resource for the rest of the session.
                let decided = !matches!(answer, Err(Error::AuthBackendFailed { .. }));
                if decided {
                    let mut answers = self.answers.lock().expect("access cache lock poisoned");
                    if answers.values().map(HashMap::len).sum::<usize>() >= ACCESS_CACHE_ENTRIES_MAX {
                        answers.clear();
                    }
                    answers.entry((kind, permission)).or_default().insert(name.to_owned(), allowed);
                }
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(refused(self.principal.user.clone(), self.vhost.clone(), kind, name, permission))
        }
    }

    /// Checks several at once, in order; the first refusal is the answer.
    pub async fn check_all(&self, checks: &[(ResourceKind, &str, Permission)]) -> Result<()> {
        for (kind, name, permission) in checks {
            self.check(*kind, name, *permission).await?;
        }
        Ok(())
    }
}
