//! Protocol plugins as `ProtocolListener`s: started once the broker is ready, stopped at
//! shutdown. The plugin runs its own listener and threads; only these two calls go one way, and
//! the `HostApi` calls the other.

use std::sync::Arc;

use async_trait::async_trait;
use warren_plugin_api as api;

use super::{call, CallResult, LoadedPlugin, PluginError, ReplyBuffer};

/// An extra protocol front-end, whatever implements it.
#[async_trait]
pub trait ProtocolListener: Send + Sync {
    fn name(&self) -> &str;

    /// Starts accepting clients; an error stops the broker's startup.
    async fn start(&self) -> Result<(), PluginError>;

    /// Stops accepting and closes connections.
    async fn stop(&self);
}

/// A protocol plugin behind `ProtocolListener`.
pub struct PluginProtocol {
    plugin: Arc<LoadedPlugin>,
}

/// Every loaded plugin with the protocol capability.
pub fn protocol_listeners(plugins: &[Arc<LoadedPlugin>]) -> Vec<Box<dyn ProtocolListener>> {
    plugins
        .iter()
        .filter(|plugin| plugin.protocol_vtable().is_some())
        .map(|plugin| Box::new(PluginProtocol { plugin: plugin.clone() }) as Box<dyn ProtocolListener>)
        .collect()
}

#[async_trait]
impl ProtocolListener for PluginProtocol {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    async fn start(&self) -> Result<(), PluginError> {
        let name = self.plugin.name.clone();
        let result = call(&self.plugin, |plugin| {
            let vtable = plugin.protocol_vtable().expect("listed only with a protocol vtable");
            let mut reply = ReplyBuffer::default();
            // SAFETY: the vtable was checked at load; the reply lives for the call.
            let status = unsafe { (vtable.start)(plugin.instance.0, &reply.raw()) };
            CallResult { status, reply }
        })
        .await;
        match result {
            Some(CallResult { status: api::STATUS_OK, .. }) => Ok(()),
            Some(mut result) => Err(PluginError::Start { name, reason: result.reply.take_message() }),
            None => Err(PluginError::Start { name, reason: "start did not return in time".into() }),
        }
    }

    async fn stop(&self) {
        call(&self.plugin, |plugin| {
            let vtable = plugin.protocol_vtable().expect("listed only with a protocol vtable");
            // SAFETY: as in `start`.
            unsafe { (vtable.stop)(plugin.instance.0) };
            CallResult { status: api::STATUS_OK, reply: ReplyBuffer::default() }
        })
        .await;
    }
}
