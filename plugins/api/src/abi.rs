//! The `#[repr(C)]` boundary. Field order is part of the ABI: append, never reorder.

use std::ffi::c_void;

/// Bumped only for incompatible changes. Appending a field to a struct that starts with `size`
/// is compatible and keeps the version.
pub const ABI_VERSION: u32 = 1;

/// Marks a Warren plugin library, so that a stray shared object is told apart from a plugin
/// built against another ABI.
pub const ABI_MAGIC: [u8; 8] = *b"WARRENPL";

/// The static [`AbiDescriptor`] every plugin exports (NUL-terminated for `dlsym`).
pub const DESCRIPTOR_SYMBOL: &[u8] = b"WARREN_PLUGIN_DESCRIPTOR\0";

/// `extern "C" fn() -> *const PluginHeader`, called once after the descriptor checks out.
pub const ENTRY_SYMBOL: &[u8] = b"warren_plugin_entry\0";

/// Status codes every entry point returns. A `u32`, not a Rust enum, so that an unknown value
/// from a newer or broken plugin is not undefined behaviour.
pub type Status = u32;
/// Success.
pub const STATUS_OK: Status = 0;
/// The request is refused: wrong password, no access.
pub const STATUS_DENIED: Status = 1;
/// The plugin could not decide: its server is down, a timeout, a configuration error.
pub const STATUS_FAILED: Status = 2;
/// The plugin panicked; the panic was caught at the boundary.
pub const STATUS_PANICKED: Status = 3;

/// `PluginHeader::capabilities` bits.
pub const CAPABILITY_AUTH: u32 = 1;

/// Read as data before any call: what the library was built against.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AbiDescriptor {
    pub magic: [u8; 8],
    pub abi_version: u32,
    /// `size_of::<AbiDescriptor>()` in the plugin's build.
    pub descriptor_size: u32,
    /// `size_of::<PluginHeader>()` in the plugin's build.
    pub header_size: u32,
    /// `size_of::<AuthVtable>()` in the plugin's build.
    pub auth_vtable_size: u32,
}

impl AbiDescriptor {
    /// The descriptor of this crate's build.
    pub const fn current() -> AbiDescriptor {
        AbiDescriptor {
            magic: ABI_MAGIC,
            abi_version: ABI_VERSION,
            descriptor_size: std::mem::size_of::<AbiDescriptor>() as u32,
            header_size: std::mem::size_of::<PluginHeader>() as u32,
            auth_vtable_size: std::mem::size_of::<AuthVtable>() as u32,
        }
    }
}

/// A borrowed UTF-8 string: valid only for the call it is passed to (or `'static` where a field
/// says so). Not NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl StrRef {
    pub const fn from_static(text: &'static str) -> StrRef {
        StrRef { ptr: text.as_ptr(), len: text.len() }
    }

    /// Borrows `text` for the length of a call.
    pub fn new(text: &str) -> StrRef {
        StrRef { ptr: text.as_ptr(), len: text.len() }
    }

    /// The string, or `None` if it is not UTF-8.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_str<'a>(self) -> Option<&'a str> {
        if self.len == 0 {
            return Some("");
        }
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: the caller promises `len` readable bytes at `ptr`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes).ok()
    }
}

/// The first thing a plugin hands over. Everything it points to is `'static`.
#[repr(C)]
pub struct PluginHeader {
    /// `size_of::<PluginHeader>()` in the plugin's build.
    pub size: u32,
    /// The plugin's own name, `'static`.
    pub name: StrRef,
    /// The plugin's version, `'static`.
    pub version: StrRef,
    /// `CAPABILITY_*` bits.
    pub capabilities: u32,
    /// Creates the plugin's one instance from its config section (JSON text). On success it
    /// stores an opaque instance pointer, passed back to every later call and never freed (plugins
    /// are never unloaded). On failure it calls `reply.set_message` with the reason.
    pub init: unsafe extern "C" fn(
        host: *const HostApi,
        config_json: StrRef,
        instance: *mut *mut c_void,
        reply: *const Reply,
    ) -> Status,
    /// Present when `capabilities` has `CAPABILITY_AUTH`; null otherwise.
    pub auth: *const AuthVtable,
}

// SAFETY: a header is immutable and everything it points to is 'static and immutable.
unsafe impl Sync for PluginHeader {}

/// What the broker offers a plugin. `'static`: a plugin may keep the pointer.
#[repr(C)]
pub struct HostApi {
    /// `size_of::<HostApi>()` in the broker's build.
    pub size: u32,
    /// The broker's `ABI_VERSION`.
    pub abi_version: u32,
    /// Logs through the broker's tracing, attributed to the plugin. `level` is a [`crate::Level`]
    /// value; the message is borrowed for the call.
    pub log: unsafe extern "C" fn(context: *const c_void, level: u32, message: StrRef),
    /// Passed back to `log`: which plugin is logging.
    pub context: *const c_void,
}

// SAFETY: the host API is immutable after creation and its functions are thread-safe.
unsafe impl Sync for HostApi {}
// SAFETY: as above; the context points to an immutable, 'static value.
unsafe impl Send for HostApi {}

/// A reply channel the caller owns, for strings a call produces. The callee calls these during
/// the call only; the caller copies what it is given.
#[repr(C)]
pub struct Reply {
    /// `size_of::<Reply>()` in the caller's build.
    pub size: u32,
    pub context: *mut c_void,
    /// Why a call failed or was denied (shown in the broker's log, never to a client).
    pub set_message: unsafe extern "C" fn(context: *mut c_void, message: StrRef),
    /// A management tag of an authenticated user, such as `administrator`.
    pub add_tag: unsafe extern "C" fn(context: *mut c_void, tag: StrRef),
}

/// A login attempt.
#[repr(C)]
pub struct AuthRequest {
    /// `size_of::<AuthRequest>()` in the broker's build.
    pub size: u32,
    pub username: StrRef,
    pub password: StrRef,
    /// The client's address as `ip:port`.
    pub peer_address: StrRef,
}

/// May this user open this vhost?
#[repr(C)]
pub struct VhostRequest {
    pub size: u32,
    pub username: StrRef,
    pub vhost: StrRef,
    pub peer_address: StrRef,
}

/// `ResourceRequest::kind` values.
pub const RESOURCE_QUEUE: u32 = 1;
pub const RESOURCE_EXCHANGE: u32 = 2;

/// `ResourceRequest::permission` values, as RabbitMQ's three permissions.
pub const PERMISSION_CONFIGURE: u32 = 1;
pub const PERMISSION_WRITE: u32 = 2;
pub const PERMISSION_READ: u32 = 3;

/// May this user do this to this queue or exchange?
#[repr(C)]
pub struct ResourceRequest {
    pub size: u32,
    pub username: StrRef,
    pub vhost: StrRef,
    /// `RESOURCE_*`.
    pub kind: u32,
    pub name: StrRef,
    /// `PERMISSION_*`.
    pub permission: u32,
}

/// An authentication backend. Calls may come from many threads at once, and each may block
/// (the broker runs them off its async workers); a plugin bounds its own waits.
#[repr(C)]
pub struct AuthVtable {
    /// `size_of::<AuthVtable>()` in the plugin's build.
    pub size: u32,
    /// `STATUS_OK` with the user's tags added through `reply`, `STATUS_DENIED`, or
    /// `STATUS_FAILED` when the backend could not decide.
    pub authenticate:
        unsafe extern "C" fn(instance: *mut c_void, request: *const AuthRequest, reply: *const Reply) -> Status,
    pub authorize_vhost:
        unsafe extern "C" fn(instance: *mut c_void, request: *const VhostRequest, reply: *const Reply) -> Status,
    pub authorize_resource:
        unsafe extern "C" fn(instance: *mut c_void, request: *const ResourceRequest, reply: *const Reply) -> Status,
}
