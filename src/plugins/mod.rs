//! Plugin loading: shared libraries from the configured directory, checked against our ABI
//! before anything in them runs, and wrapped in ordinary async traits (the core's
//! `Authenticator`, our `ProtocolListener`) so that nothing past this module sees FFI.
//!
//! # Layout
//! - `auth`: auth plugins as `Authenticator`s, and the `auth_backends` chain.
//! - `protocol`: protocol plugins as `ProtocolListener`s.
//! - `host`: what the broker offers plugins (log, sessions, publish, subscribe, get).
//!
//! A plugin named `ldap-auth` is the file `libwarren_ldap_auth.so` (the platform's spelling) in
//! `plugins.directory`. Loading it:
//! 1. opens the library (nothing is looked up outside the directory);
//! 2. reads its `WARREN_PLUGIN_DESCRIPTOR` as data: magic, ABI version, struct sizes;
//! 3. calls `warren_plugin_entry` for the header, and checks the header's own sizes;
//! 4. calls `init` with the plugin's config section as JSON.
//!
//! Any failure stops startup with an error naming the plugin and the file. Libraries are never
//! unloaded: their code may still be running on another thread.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use warren_plugin_api as api;

mod auth;
mod host;
mod protocol;

pub use auth::authenticator;
pub use host::PluginHost;
pub use protocol::{protocol_listeners, ProtocolListener};

/// How long one plugin call may take before the broker answers "denied" without it. The
/// plugin's own timeouts (LDAP's, say) should be shorter; this is the backstop for a plugin
/// that hangs.
const PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Plugin calls running at once, per plugin. Each holds a blocking-pool thread, so a plugin that
/// hangs can hold at most this many; later calls wait (within the timeout) rather than piling up.
const PLUGIN_CALLS_MAX: usize = 64;

/// The longest message or tag kept from a plugin's reply, in bytes.
const REPLY_TEXT_BYTES_MAX: usize = 4096;

/// The most tags kept from one authentication.
const REPLY_TAGS_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '{name}': its name may hold only letters, digits, '-' and '_'")]
    BadName { name: String },
    #[error("plugin '{name}': {path} does not exist (plugins.directory is {directory})")]
    Missing { name: String, path: PathBuf, directory: PathBuf },
    #[error("plugin '{name}': cannot load {path}: {reason}")]
    Open { name: String, path: PathBuf, reason: String },
    #[error("plugin '{name}': {path} is not a Warren plugin (no symbol {symbol})")]
    MissingSymbol { name: String, path: PathBuf, symbol: String },
    #[error("plugin '{name}': {path} is not a Warren plugin (bad magic in its descriptor)")]
    BadMagic { name: String, path: PathBuf },
    #[error(
        "plugin '{name}': {path} was built for plugin ABI version {found}, but this broker speaks version {expected}; rebuild it against warren-plugin-api {expected}"
    )]
    AbiVersion { name: String, path: PathBuf, expected: u32, found: u32 },
    #[error("plugin '{name}': {path} has a {what} of {found} bytes, smaller than the {expected} this ABI needs")]
    Layout { name: String, path: PathBuf, what: &'static str, expected: usize, found: usize },
    #[error("plugin '{name}': init failed: {reason}")]
    Init { name: String, reason: String },
    #[error("plugin '{name}': init panicked: {reason}")]
    InitPanicked { name: String, reason: String },
    #[error("auth backend '{name}' is neither 'internal' nor a loaded plugin (plugins.load)")]
    UnknownBackend { name: String },
    #[error("auth backend '{name}' is a plugin without the auth capability")]
    NotAuth { name: String },
    #[error("plugin '{name}': start failed: {reason}")]
    Start { name: String, reason: String },
}

/// One loaded plugin. Lives for the rest of the process.
pub struct LoadedPlugin {
    /// The configured name (and file stem).
    pub name: String,
    /// The name the plugin gives itself.
    pub declared_name: String,
    pub version: String,
    pub path: PathBuf,
    pub abi_version: u32,
    header: &'static api::PluginHeader,
    /// The opaque instance `init` returned; passed to every call.
    pub(crate) instance: Instance,
    calls: Arc<Semaphore>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish()
    }
}

/// The plugin's instance pointer.
#[derive(Clone, Copy)]
pub(crate) struct Instance(pub(crate) *mut c_void);

// SAFETY: the ABI requires a plugin instance to be usable from any thread at once (the export
// macro requires `Send + Sync` of the plugin type), and it is never freed.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl LoadedPlugin {
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut capabilities = Vec::new();
        if self.auth_vtable().is_some() {
            capabilities.push("auth");
        }
        if self.protocol_vtable().is_some() {
            capabilities.push("protocol");
        }
        capabilities
    }

    pub(crate) fn protocol_vtable(&self) -> Option<&'static api::ProtocolVtable> {
        if self.header.capabilities & api::CAPABILITY_PROTOCOL == 0 {
            return None;
        }
        // SAFETY: checked at load time: non-null and at least as large as our ProtocolVtable.
        unsafe { self.header.protocol.as_ref() }
    }

    pub(crate) fn auth_vtable(&self) -> Option<&'static api::AuthVtable> {
        if self.header.capabilities & api::CAPABILITY_AUTH == 0 {
            return None;
        }
        // SAFETY: checked at load time: non-null and at least as large as our AuthVtable.
        unsafe { self.header.auth.as_ref() }
    }
}

/// The plugins section of the config.
#[derive(Clone, Debug, Default)]
pub struct PluginsConfig {
    pub directory: PathBuf,
    /// Plugin names, loaded in this order.
    pub load: Vec<String>,
    /// Each plugin's own section, as JSON text.
    pub sections: BTreeMap<String, String>,
}

/// Loads every configured plugin, in order; the first failure stops.
pub fn load_all(config: &PluginsConfig, host: &'static PluginHost) -> Result<Vec<Arc<LoadedPlugin>>, PluginError> {
    let mut loaded = Vec::new();
    for name in &config.load {
        let section = config.sections.get(name).map_or("{}", String::as_str);
        let plugin = load(&config.directory, name, section, host)?;
        if plugin.declared_name != plugin.name {
            tracing::warn!(plugin = %plugin.name, declared = %plugin.declared_name, "the plugin calls itself by another name");
        }
        tracing::info!(
            plugin = %plugin.name,
            version = %plugin.version,
            path = %plugin.path.display(),
            capabilities = ?plugin.capabilities(),
            "plugin loaded"
        );
        loaded.push(Arc::new(plugin));
    }
    Ok(loaded)
}

/// The file a plugin name stands for: `ldap-auth` is `libwarren_ldap_auth.so` on Linux.
pub fn plugin_path(directory: &Path, name: &str) -> Result<PathBuf, PluginError> {
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(PluginError::BadName { name: name.to_owned() });
    }
    Ok(directory.join(libloading::library_filename(format!("warren_{}", name.replace('-', "_")))))
}

fn load(
    directory: &Path,
    name: &str,
    config_json: &str,
    host: &'static PluginHost,
) -> Result<LoadedPlugin, PluginError> {
    let path = plugin_path(directory, name)?;
    if !path.is_file() {
        return Err(PluginError::Missing { name: name.into(), path, directory: directory.into() });
    }
    // SAFETY: loading a library runs its initialisers. The operator put it in the plugin
    // directory and named it in the config; that is the trust decision, as for any plugin system.
    let library = unsafe { libloading::Library::new(&path) }.map_err(|error| PluginError::Open {
        name: name.into(),
        path: path.clone(),
        reason: error.to_string(),
    })?;
    // Never unloaded: the plugin's threads and callbacks may outlive any handle we hold.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    let missing = |symbol: &[u8]| PluginError::MissingSymbol {
        name: name.into(),
        path: path.clone(),
        symbol: String::from_utf8_lossy(&symbol[..symbol.len() - 1]).into_owned(),
    };

    // SAFETY: the symbol is a static `AbiDescriptor` in any Warren plugin; it is only read, and
    // only after its leading fields say it is one of ours.
    let descriptor: libloading::Symbol<*const api::AbiDescriptor> =
        unsafe { library.get(api::DESCRIPTOR_SYMBOL) }.map_err(|_| missing(api::DESCRIPTOR_SYMBOL))?;
    // SAFETY: as above; the pointer is to a static in the library, which is never unloaded.
    let descriptor = unsafe { descriptor.as_ref() }.ok_or_else(|| missing(api::DESCRIPTOR_SYMBOL))?;
    check_descriptor(name, &path, descriptor)?;

    // SAFETY: the descriptor says this library speaks our ABI, in which this symbol has exactly
    // this signature.
    let entry: libloading::Symbol<extern "C" fn() -> *const api::PluginHeader> =
        unsafe { library.get(api::ENTRY_SYMBOL) }.map_err(|_| missing(api::ENTRY_SYMBOL))?;
    // SAFETY: the header is a static in the library, never unloaded.
    let header: &'static api::PluginHeader = unsafe { entry().as_ref() }
        .ok_or_else(|| PluginError::Init { name: name.into(), reason: "no header".into() })?;
    check_header(name, &path, header)?;

    // SAFETY: name and version are 'static strings in the library (checked by `as_str`).
    let declared_name = unsafe { header.name.as_str() }.unwrap_or("?").to_owned();
    // SAFETY: as above.
    let version = unsafe { header.version.as_str() }.unwrap_or("?").to_owned();
    let instance = init(name, header, config_json, host)?;
    Ok(LoadedPlugin {
        name: name.into(),
        declared_name,
        version,
        path,
        abi_version: descriptor.abi_version,
        header,
        instance,
        calls: Arc::new(Semaphore::new(PLUGIN_CALLS_MAX)),
    })
}

fn check_descriptor(name: &str, path: &Path, descriptor: &api::AbiDescriptor) -> Result<(), PluginError> {
    if descriptor.magic != api::ABI_MAGIC {
        return Err(PluginError::BadMagic { name: name.into(), path: path.into() });
    }
    if descriptor.abi_version != api::ABI_VERSION {
        return Err(PluginError::AbiVersion {
            name: name.into(),
            path: path.into(),
            expected: api::ABI_VERSION,
            found: descriptor.abi_version,
        });
    }
    let layout = |what, expected, found| check_size(name, path, what, expected, found);
    layout("descriptor", std::mem::size_of::<api::AbiDescriptor>(), descriptor.descriptor_size)?;
    layout("plugin header", std::mem::size_of::<api::PluginHeader>(), descriptor.header_size)?;
    layout("auth vtable", std::mem::size_of::<api::AuthVtable>(), descriptor.auth_vtable_size)?;
    layout("protocol vtable", std::mem::size_of::<api::ProtocolVtable>(), descriptor.protocol_vtable_size)
}

/// A struct of the plugin's must be at least as large as the broker's build of it.
fn check_size(name: &str, path: &Path, what: &'static str, expected: usize, found: u32) -> Result<(), PluginError> {
    if (found as usize) < expected {
        return Err(PluginError::Layout {
            name: name.into(),
            path: path.into(),
            what,
            expected,
            found: found as usize,
        });
    }
    Ok(())
}

fn check_header(name: &str, path: &Path, header: &api::PluginHeader) -> Result<(), PluginError> {
    let layout = |what, expected, found| check_size(name, path, what, expected, found);
    layout("plugin header", std::mem::size_of::<api::PluginHeader>(), header.size)?;
    if header.capabilities & api::CAPABILITY_AUTH != 0 {
        // SAFETY: a non-null vtable pointer in a header is a static in the library.
        match unsafe { header.auth.as_ref() } {
            Some(vtable) => layout("auth vtable", std::mem::size_of::<api::AuthVtable>(), vtable.size)?,
            None => layout("auth vtable", std::mem::size_of::<api::AuthVtable>(), 0)?,
        }
    }
    if header.capabilities & api::CAPABILITY_PROTOCOL != 0 {
        // SAFETY: as above.
        match unsafe { header.protocol.as_ref() } {
            Some(vtable) => layout("protocol vtable", std::mem::size_of::<api::ProtocolVtable>(), vtable.size)?,
            None => layout("protocol vtable", std::mem::size_of::<api::ProtocolVtable>(), 0)?,
        }
    }
    Ok(())
}

/// Calls the plugin's `init` on this thread.
fn init(
    name: &str,
    header: &'static api::PluginHeader,
    config_json: &str,
    host: &'static PluginHost,
) -> Result<Instance, PluginError> {
    let host = host.api_for(name);
    let mut reply = ReplyBuffer::default();
    let mut instance: *mut c_void = std::ptr::null_mut();
    // SAFETY: `init` has the ABI's signature (checked by version and size); every pointer passed
    // lives for the call, the host API forever.
    let status = unsafe { (header.init)(host, api::StrRef::new(config_json), &mut instance, &reply.raw()) };
    match status {
        api::STATUS_OK if !instance.is_null() => Ok(Instance(instance)),
        api::STATUS_OK => Err(PluginError::Init { name: name.into(), reason: "init returned no instance".into() }),
        api::STATUS_PANICKED => Err(PluginError::InitPanicked { name: name.into(), reason: reply.take_message() }),
        _ => Err(PluginError::Init { name: name.into(), reason: reply.take_message() }),
    }
}

/// Plugins log through our tracing. Must not panic: it is called from plugin frames.
pub(crate) unsafe extern "C" fn host_log(context: *const c_void, level: u32, message: api::StrRef) {
    // SAFETY: the context is the leaked name from `host_api`.
    let plugin = unsafe { context.cast::<String>().as_ref() }.map_or("?", String::as_str);
    // SAFETY: the message is borrowed for this call.
    let message = unsafe { message.as_str() }.unwrap_or("(not UTF-8)");
    let message = truncate(message);
    match level {
        1 => tracing::error!(plugin, "{message}"),
        2 => tracing::warn!(plugin, "{message}"),
        3 => tracing::info!(plugin, "{message}"),
        _ => tracing::debug!(plugin, "{message}"),
    }
}

fn truncate(text: &str) -> &str {
    if text.len() <= REPLY_TEXT_BYTES_MAX {
        return text;
    }
    let mut end = REPLY_TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Collects what a plugin replies through the `Reply` callbacks, bounded.
#[derive(Default)]
pub(crate) struct ReplyBuffer {
    message: Option<String>,
    pub(crate) tags: Vec<String>,
}

impl ReplyBuffer {
    /// The C view of this buffer; valid while `self` is neither moved nor dropped.
    pub(crate) fn raw(&mut self) -> api::Reply {
        api::Reply {
            size: std::mem::size_of::<api::Reply>() as u32,
            context: (self as *mut ReplyBuffer).cast(),
            set_message: reply_set_message,
            add_tag: reply_add_tag,
        }
    }

    pub(crate) fn take_message(&mut self) -> String {
        self.message.take().unwrap_or_else(|| "no reason given".into())
    }
}

unsafe extern "C" fn reply_set_message(context: *mut c_void, message: api::StrRef) {
    // SAFETY: the context is the `ReplyBuffer` of the call in progress.
    let Some(buffer) = (unsafe { context.cast::<ReplyBuffer>().as_mut() }) else { return };
    // SAFETY: borrowed for this call.
    let message = unsafe { message.as_str() }.unwrap_or("(not UTF-8)");
    buffer.message = Some(truncate(message).to_owned());
}

unsafe extern "C" fn reply_add_tag(context: *mut c_void, tag: api::StrRef) {
    // SAFETY: the context is the `ReplyBuffer` of the call in progress.
    let Some(buffer) = (unsafe { context.cast::<ReplyBuffer>().as_mut() }) else { return };
    // SAFETY: borrowed for this call.
    if let Some(tag) = unsafe { tag.as_str() } {
        if buffer.tags.len() < REPLY_TAGS_MAX && tag.len() <= 255 {
            buffer.tags.push(tag.to_owned());
        }
    }
}

/// The outcome of one plugin call, copied out of the plugin.
pub(crate) struct CallResult {
    pub(crate) status: api::Status,
    pub(crate) reply: ReplyBuffer,
}

/// Runs a blocking plugin call on the blocking pool, bounded in number and time. `None` if it
/// timed out or could not run.
async fn call(
    plugin: &Arc<LoadedPlugin>,
    body: impl FnOnce(&LoadedPlugin) -> CallResult + Send + 'static,
) -> Option<CallResult> {
    let deadline = tokio::time::Instant::now() + PLUGIN_CALL_TIMEOUT;
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, plugin.calls.clone().acquire_owned()).await else {
        tracing::error!(plugin = %plugin.name, calls = PLUGIN_CALLS_MAX, "plugin busy: every call slot is taken");
        return None;
    };
    let owned = plugin.clone();
    // The slot goes with the call and is freed only when the call returns, even after we stop
    // waiting for it: a plugin that hangs holds at most PLUGIN_CALLS_MAX threads.
    let task = tokio::task::spawn_blocking(move || {
        let result = body(&owned);
        drop(permit);
        result
    });
    let result = tokio::time::timeout_at(deadline, task).await;
    match result {
        Ok(Ok(result)) => Some(result),
        Ok(Err(error)) => {
            tracing::error!(plugin = %plugin.name, %error, "plugin call failed");
            None
        }
        Err(_) => {
            tracing::error!(plugin = %plugin.name, timeout_ms = PLUGIN_CALL_TIMEOUT.as_millis() as u64, "plugin call timed out");
            None
        }
    }
}
