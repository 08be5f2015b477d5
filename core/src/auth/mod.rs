//! Authentication and vhost authorisation, behind one async trait so that every protocol and
//! every backend (the internal database, plugins such as LDAP) goes through the same check.
//!
//! # Layout
//! - `internal`: the broker's own user database, with RabbitMQ's password hashes.
//! - `chain`: several backends tried in order, as RabbitMQ's `auth_backends`.
//! - `access`: resource permissions (configure, write, read) and a session's cache of them.

mod access;
mod chain;
mod internal;

use std::net::SocketAddr;

use async_trait::async_trait;

pub use access::{permission_name, refused, Access, Permission, ResourceKind};
pub use chain::AuthChain;
pub use internal::{hash_password, InternalUsers, Permissions, User, PASSWORD_HASHING};

use crate::error::Result;
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
    /// Which backend of an [`AuthChain`] authenticated this user (its position in the chain),
    /// so that the same backend answers authorisation questions, as in RabbitMQ. 0 outside a
    /// chain.
    pub backend: usize,
    /// Where the user logged in from; backends may grant access by address.
    pub peer: SocketAddr,
}

/// Checks credentials and vhost access.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Principal>;

    /// Whether `principal` may open `vhost`.
    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> Result<()>;

    /// Whether `principal` may do `permission` to a queue or exchange of `vhost` (the default
    /// exchange is named `amq.default` here). Backends without resource permissions allow
    /// everything in a vhost they let the user open.
    async fn authorize_resource(
        &self,
        _principal: &Principal,
        _vhost: &VhostName,
        _kind: ResourceKind,
        _name: &str,
        _permission: Permission,
    ) -> Result<()> {
        Ok(())
    }
}
