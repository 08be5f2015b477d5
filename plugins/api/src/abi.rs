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
/// Nothing to take: a `get` whose timeout passed with every queue empty.
pub const STATUS_EMPTY: Status = 4;

/// `PluginHeader::capabilities` bits.
pub const CAPABILITY_AUTH: u32 = 1;
pub const CAPABILITY_PROTOCOL: u32 = 2;

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
    /// `size_of::<ProtocolVtable>()` in the plugin's build.
    pub protocol_vtable_size: u32,
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
            protocol_vtable_size: std::mem::size_of::<ProtocolVtable>() as u32,
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
    /// Present when `capabilities` has `CAPABILITY_PROTOCOL`; null otherwise.
    pub protocol: *const ProtocolVtable,
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
    /// Passed back to every broker function below.
    pub broker: *const c_void,
    /// Logs in (through the broker's auth backends) and opens a vhost, as a client connection
    /// of the plugin's protocol would. Stores a session handle for the calls below. Counts
    /// against the broker's connection limit until `close_session`.
    pub open_session: unsafe extern "C" fn(
        broker: *const c_void,
        request: *const SessionRequest,
        session: *mut u64,
        reply: *const Reply,
    ) -> Status,
    /// Ends a session: its subscriptions end and their private queues go.
    pub close_session: unsafe extern "C" fn(broker: *const c_void, session: u64),
    /// Routes a message through an exchange. A persistent message that reaches a durable
    /// queue returns only once it is on disk. `routed` receives the number of queues reached.
    pub publish: unsafe extern "C" fn(
        broker: *const c_void,
        session: u64,
        request: *const PublishRequest,
        routed: *mut u32,
        reply: *const Reply,
    ) -> Status,
    /// Declares a queue (`durable` 1 or 0) if it does not exist; `message_count` receives its
    /// ready messages.
    pub declare_queue: unsafe extern "C" fn(
        broker: *const c_void,
        session: u64,
        name: StrRef,
        durable: u32,
        message_count: *mut u32,
        reply: *const Reply,
    ) -> Status,
    /// Binds a private queue to `exchange` with an AMQP binding key (`*` one word, `#` any)
    /// and delivers what reaches it to `sink`, from a broker thread, until `unsubscribe` or
    /// `close_session` (a delivery already on its way may still arrive just after they return);
    /// after the last delivery the broker calls `sink.release`, once. Stores a subscription
    /// handle. On failure the broker keeps nothing and the plugin still owns the sink.
    pub subscribe: unsafe extern "C" fn(
        broker: *const c_void,
        session: u64,
        exchange: StrRef,
        binding_key: StrRef,
        sink: *const DeliverySink,
        subscription: *mut u64,
        reply: *const Reply,
    ) -> Status,
    pub unsubscribe: unsafe extern "C" fn(broker: *const c_void, session: u64, subscription: u64) -> Status,
    /// Takes one message from the first of `queues` that has one, waiting up to `timeout_ms`
    /// (0: do not wait). The message is handed to `sink.deliver` during the call and counts as
    /// acknowledged; `sink.release` is not called. `STATUS_EMPTY` if nothing came.
    pub get: unsafe extern "C" fn(
        broker: *const c_void,
        session: u64,
        queues: *const StrRef,
        queue_count: usize,
        timeout_ms: u64,
        sink: *const DeliverySink,
        reply: *const Reply,
    ) -> Status,
}

// SAFETY: the host API is immutable after creation and its functions are thread-safe.
unsafe impl Sync for HostApi {}
// SAFETY: as above; the context points to an immutable, 'static value.
unsafe impl Send for HostApi {}

/// Borrowed bytes (a message body): valid only for the call it is passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ByteRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl ByteRef {
    pub fn new(bytes: &[u8]) -> ByteRef {
        ByteRef { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller promises `len` readable bytes at `ptr`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A protocol plugin's client logging in.
#[repr(C)]
pub struct SessionRequest {
    pub size: u32,
    pub username: StrRef,
    pub password: StrRef,
    pub vhost: StrRef,
    /// `ip:port` of the plugin's client.
    pub peer_address: StrRef,
}

/// A message to route.
#[repr(C)]
pub struct PublishRequest {
    pub size: u32,
    pub exchange: StrRef,
    /// Dot-separated words, as AMQP spells routing keys.
    pub routing_key: StrRef,
    pub body: ByteRef,
    /// 1: persistent (journaled in durable queues, and the call waits for the disk).
    pub persistent: u32,
}

/// A message handed to a plugin, borrowed for the `deliver` call.
#[repr(C)]
pub struct DeliveryRef {
    pub size: u32,
    /// The subscription it came through; 0 for `get`.
    pub subscription: u64,
    pub exchange: StrRef,
    pub routing_key: StrRef,
    pub body: ByteRef,
    /// The queue it was taken from.
    pub queue: StrRef,
}

/// Where the broker hands deliveries. `deliver` runs on a broker thread and must not block:
/// copy what it needs and return.
#[repr(C)]
pub struct DeliverySink {
    pub size: u32,
    pub context: *mut c_void,
    pub deliver: unsafe extern "C" fn(context: *mut c_void, delivery: *const DeliveryRef),
    /// Called once when a subscription ends; the plugin may free `context` then.
    pub release: unsafe extern "C" fn(context: *mut c_void),
}

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

/// An extra protocol front-end: the plugin runs its own listener and threads, and talks to the
/// broker only through [`HostApi`].
#[repr(C)]
pub struct ProtocolVtable {
    /// `size_of::<ProtocolVtable>()` in the plugin's build.
    pub size: u32,
    /// Starts listening, once the broker is ready. A failure (a port in use, say) stops the
    /// broker's startup with the reply's message.
    pub start: unsafe extern "C" fn(instance: *mut c_void, reply: *const Reply) -> Status,
    /// Stops accepting and closes client connections, at broker shutdown. Best effort.
    pub stop: unsafe extern "C" fn(instance: *mut c_void),
}
