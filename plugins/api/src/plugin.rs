//! The safe side: what a plugin author implements. [`crate::export_plugin!`] turns these into the
//! C entry points.

use crate::abi::{HostApi, StrRef};

/// A plugin library's one type. The broker creates one instance at startup and never drops it.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The name operators use in the config, such as `ldap-auth`.
    const NAME: &'static str;
    const VERSION: &'static str;

    /// Builds the instance from the plugin's config section, given as JSON text (`{}` when the
    /// config has no section for it). An `Err` stops the broker's startup with that message.
    fn init(config_json: &str, host: Host) -> Result<Self, String>;
}

/// Why a request was not granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The answer is no: wrong password, unknown user, no access.
    Refused(String),
    /// No answer could be had: the backend is down, timed out or misconfigured. The broker
    /// treats it as a refusal for this request and logs it as an error.
    Failed(String),
}

/// A login attempt, borrowed for one call.
#[derive(Debug)]
pub struct Login<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// `ip:port` of the client.
    pub peer_address: &'a str,
}

/// A request to open a vhost.
#[derive(Debug)]
pub struct VhostAccess<'a> {
    pub username: &'a str,
    pub vhost: &'a str,
    pub peer_address: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Queue,
    Exchange,
}

/// RabbitMQ's three permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// A request to use a queue or exchange.
#[derive(Debug)]
pub struct Resource<'a> {
    pub username: &'a str,
    pub vhost: &'a str,
    pub kind: ResourceKind,
    pub name: &'a str,
    pub access: Access,
}

/// An authentication and authorisation backend. Calls come from many threads at once and may
/// block; bound every wait (a server that is down must turn into `Denial::Failed`, not a hang).
pub trait AuthBackend: Plugin {
    /// Checks a password. `Ok` carries the user's management tags.
    fn authenticate(&self, login: &Login) -> Result<Vec<String>, Denial>;

    /// Whether a user this backend authenticated may open a vhost.
    fn authorize_vhost(&self, request: &VhostAccess) -> Result<(), Denial>;

    /// Whether a user may use a queue or exchange. Everything is allowed unless overridden.
    fn authorize_resource(&self, _request: &Resource) -> Result<(), Denial> {
        Ok(())
    }
}

/// Log levels for [`Host::log`], as `u32` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// The broker, as a plugin sees it. Cheap to copy and valid for the life of the process.
#[derive(Clone, Copy)]
pub struct Host {
    api: &'static HostApi,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Host").field("abi_version", &self.api.abi_version).finish()
    }
}

impl Host {
    /// # Safety
    /// `api` must be the broker's `'static` host API.
    pub unsafe fn from_raw(api: *const HostApi) -> Option<Host> {
        // SAFETY: the broker's host API lives as long as the process, as the caller promises.
        unsafe { api.as_ref() }.map(|api| Host { api })
    }

    /// The broker's ABI version.
    pub fn abi_version(&self) -> u32 {
        self.api.abi_version
    }

    /// Logs through the broker's log, attributed to this plugin.
    pub fn log(&self, level: Level, message: &str) {
        // SAFETY: the function and context come from the broker's host API; the message is
        // borrowed for the call only.
        unsafe { (self.api.log)(self.api.context, level as u32, StrRef::new(message)) }
    }
}
