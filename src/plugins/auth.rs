//! Auth plugins as the core's `Authenticator`, and the chain `auth_backends` names.

use std::sync::Arc;

use async_trait::async_trait;
use warren_core::auth::{Authenticator, Credentials, Permission, Principal, ResourceKind};
use warren_core::error::{Error as CoreError, Result as CoreResult};
use warren_core::name::VhostName;
use warren_plugin_api as api;

use super::{call, CallResult, LoadedPlugin, PluginError, ReplyBuffer};

/// A plugin's auth vtable as the core's `Authenticator`.
#[derive(Debug)]
pub struct PluginAuthenticator {
    plugin: Arc<LoadedPlugin>,
}

impl PluginAuthenticator {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<PluginAuthenticator, PluginError> {
        if plugin.auth_vtable().is_none() {
            return Err(PluginError::NotAuth { name: plugin.name.clone() });
        }
        Ok(PluginAuthenticator { plugin })
    }

    /// Logs a refusal the way its status calls for: a denial at debug, a failure or a panic as
    /// an error (the backend is broken, not the client).
    fn log_refusal(&self, what: &str, user: &str, result: &mut CallResult) {
        let reason = result.reply.take_message();
        match result.status {
            api::STATUS_DENIED => tracing::debug!(plugin = %self.plugin.name, user, %reason, "{what} denied"),
            api::STATUS_PANICKED => {
                tracing::error!(plugin = %self.plugin.name, user, %reason, "{what}: plugin panicked")
            }
            status => tracing::error!(plugin = %self.plugin.name, user, status, %reason, "{what}: plugin failed"),
        }
    }
}

#[async_trait]
impl Authenticator for PluginAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> CoreResult<Principal> {
        let username = credentials.username.as_str().to_owned();
        let password = credentials.password.clone();
        let peer_address = credentials.peer.to_string();
        let refused = || CoreError::LoginRefused { user: credentials.username.clone() };
        let result = call(&self.plugin, move |plugin| {
            let vtable = plugin.auth_vtable().expect("checked in PluginAuthenticator::new");
            let request = api::AuthRequest {
                size: std::mem::size_of::<api::AuthRequest>() as u32,
                username: api::StrRef::new(&username),
                password: api::StrRef::new(&password),
                peer_address: api::StrRef::new(&peer_address),
            };
            let mut reply = ReplyBuffer::default();
            // SAFETY: the vtable was checked at load; the request, reply and strings live for
            // the call.
            let status = unsafe { (vtable.authenticate)(plugin.instance.0, &request, &reply.raw()) };
            CallResult { status, reply }
        })
        .await
        .ok_or_else(refused)?;
        let mut result = result;
        if result.status != api::STATUS_OK {
            self.log_refusal("login", credentials.username.as_str(), &mut result);
            return Err(refused());
        }
        Ok(Principal {
            user: credentials.username.clone(),
            tags: result.reply.tags,
            backend: 0,
            peer: credentials.peer,
        })
    }

    async fn authorize_vhost(&self, principal: &Principal, vhost: &VhostName) -> CoreResult<()> {
        let username = principal.user.as_str().to_owned();
        let vhost_text = vhost.as_str().to_owned();
        let peer_address = principal.peer.to_string();
        let refused = || CoreError::VhostAccessRefused { vhost: vhost.clone(), user: principal.user.clone() };
        let mut result = call(&self.plugin, move |plugin| {
            let vtable = plugin.auth_vtable().expect("checked in PluginAuthenticator::new");
            let request = api::VhostRequest {
                size: std::mem::size_of::<api::VhostRequest>() as u32,
                username: api::StrRef::new(&username),
                vhost: api::StrRef::new(&vhost_text),
                peer_address: api::StrRef::new(&peer_address),
            };
            let mut reply = ReplyBuffer::default();
            // SAFETY: as in `authenticate`.
            let status = unsafe { (vtable.authorize_vhost)(plugin.instance.0, &request, &reply.raw()) };
            CallResult { status, reply }
        })
        .await
        .ok_or_else(refused)?;
        if result.status != api::STATUS_OK {
            self.log_refusal("vhost access", principal.user.as_str(), &mut result);
            return Err(refused());
        }
        Ok(())
    }

    async fn authorize_resource(
        &self,
        principal: &Principal,
        vhost: &VhostName,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> CoreResult<()> {
        let username = principal.user.as_str().to_owned();
        let vhost_text = vhost.as_str().to_owned();
        let name_text = name.to_owned();
        let refused = || warren_core::auth::refused(principal.user.clone(), vhost.clone(), kind, name, permission);
        let mut result = call(&self.plugin, move |plugin| {
            let vtable = plugin.auth_vtable().expect("checked in PluginAuthenticator::new");
            let request = api::ResourceRequest {
                size: std::mem::size_of::<api::ResourceRequest>() as u32,
                username: api::StrRef::new(&username),
                vhost: api::StrRef::new(&vhost_text),
                kind: match kind {
                    ResourceKind::Queue => api::RESOURCE_QUEUE,
                    ResourceKind::Exchange => api::RESOURCE_EXCHANGE,
                },
                name: api::StrRef::new(&name_text),
                permission: match permission {
                    Permission::Configure => api::PERMISSION_CONFIGURE,
                    Permission::Write => api::PERMISSION_WRITE,
                    Permission::Read => api::PERMISSION_READ,
                },
            };
            let mut reply = ReplyBuffer::default();
            // SAFETY: as in `authenticate`.
            let status = unsafe { (vtable.authorize_resource)(plugin.instance.0, &request, &reply.raw()) };
            CallResult { status, reply }
        })
        .await
        .ok_or_else(|| CoreError::AuthBackendFailed {
            backend: self.plugin.name.clone(),
            reason: "the call did not complete".into(),
        })?;
        match result.status {
            api::STATUS_OK => Ok(()),
            api::STATUS_DENIED => {
                self.log_refusal("resource access", principal.user.as_str(), &mut result);
                Err(refused())
            }
            _ => {
                self.log_refusal("resource access", principal.user.as_str(), &mut result);
                Err(CoreError::AuthBackendFailed { backend: self.plugin.name.clone(), reason: "no answer".into() })
            }
        }
    }
}

/// Builds the authenticator `auth_backends` names: one backend alone, or a chain.
pub fn authenticator(
    backends: &[String],
    internal: Arc<dyn Authenticator>,
    plugins: &[Arc<LoadedPlugin>],
) -> Result<Arc<dyn Authenticator>, PluginError> {
    let mut chain: Vec<(String, Arc<dyn Authenticator>)> = Vec::new();
    for name in backends {
        let backend: Arc<dyn Authenticator> = if name == "internal" {
            internal.clone()
        } else {
            let plugin = plugins
                .iter()
                .find(|plugin| &plugin.name == name)
                .ok_or_else(|| PluginError::UnknownBackend { name: name.clone() })?;
            Arc::new(PluginAuthenticator::new(plugin.clone())?)
        };
        chain.push((name.clone(), backend));
    }
    if chain.is_empty() {
        return Ok(internal);
    }
    Ok(Arc::new(warren_core::auth::AuthChain::new(chain)))
}
