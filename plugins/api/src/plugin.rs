//! The safe side: what a plugin author implements. [`crate::export_plugin!`] turns these into the
//! C entry points.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::abi::*;

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

/// An extra protocol front-end. `start` runs once the broker is ready; the plugin starts its own
/// listener and threads and returns. It reaches the broker through [`Host::open_session`].
pub trait Protocol: Plugin {
    fn start(&self) -> Result<(), String>;

    /// Stops accepting and closes connections, at broker shutdown.
    fn stop(&self) {}
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

    /// Refuses a broker whose host API is smaller than this plugin's build of it (an older
    /// broker, without functions appended since).
    pub fn check_size(&self) -> Result<(), String> {
        let expected = std::mem::size_of::<HostApi>();
        if (self.api.size as usize) < expected {
            return Err(format!(
                "the broker's host API has {} bytes, this plugin was built for {expected}: upgrade the broker",
                self.api.size
            ));
        }
        Ok(())
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

/// A client of a protocol plugin logging in.
#[derive(Debug)]
pub struct SessionLogin<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub vhost: &'a str,
    /// `ip:port` of the client.
    pub peer_address: &'a str,
}

/// A message handed to a subscription callback, borrowed for the call.
#[derive(Debug)]
pub struct Message<'a> {
    pub subscription: u64,
    pub exchange: &'a str,
    /// Dot-separated words (`a/b` published over MQTT reads `a.b`).
    pub routing_key: &'a str,
    pub body: &'a [u8],
    /// The queue it was taken from (a subscription's private queue, or the named one).
    pub queue: &'a str,
}

/// A message taken with [`Session::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// The queue it was taken from.
    pub queue: String,
}

/// A logged-in client of a protocol plugin. Closed on drop.
#[derive(Debug)]
pub struct Session {
    host: Host,
    id: u64,
}

/// Collects a host call's message, for its error.
#[derive(Default)]
struct Collected {
    message: Option<String>,
}

unsafe extern "C" fn collect_message(context: *mut c_void, message: StrRef) {
    // SAFETY: the context is the `Collected` of the call in progress; the message is borrowed.
    if let (Some(collected), Some(message)) = unsafe { (context.cast::<Collected>().as_mut(), message.as_str()) } {
        collected.message = Some(message.to_owned());
    }
}

unsafe extern "C" fn ignore_tag(_context: *mut c_void, _tag: StrRef) {}

/// Calls a host function with a reply buffer, turning its status into a `Result`.
fn with_reply(call: impl FnOnce(*const Reply) -> Status) -> Result<Status, Denial> {
    let mut collected = Collected::default();
    let reply = Reply {
        size: std::mem::size_of::<Reply>() as u32,
        context: (&mut collected as *mut Collected).cast(),
        set_message: collect_message,
        add_tag: ignore_tag,
    };
    let status = call(&reply);
    let message = || collected.message.clone().unwrap_or_else(|| format!("status {status}"));
    match status {
        STATUS_OK | STATUS_EMPTY => Ok(status),
        STATUS_DENIED => Err(Denial::Refused(message())),
        _ => Err(Denial::Failed(message())),
    }
}

type Callback = Box<dyn Fn(Message<'_>) + Send + Sync>;

unsafe extern "C" fn deliver_to_callback(context: *mut c_void, delivery: *const DeliveryRef) {
    // A panic must not unwind into the broker: the delivery is dropped instead.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the context is the boxed callback `subscribe` made; the delivery is borrowed.
        let (Some(callback), Some(delivery)) =
            (unsafe { context.cast::<Callback>().as_ref() }, unsafe { delivery.as_ref() })
        else {
            return;
        };
        // A delivery smaller than this plugin's build of it comes from an older broker.
        if (delivery.size as usize) < std::mem::size_of::<DeliveryRef>() {
            return;
        }
        // SAFETY: the delivery's fields are borrowed for this call.
        let message = unsafe {
            Message {
                subscription: delivery.subscription,
                exchange: delivery.exchange.as_str().unwrap_or(""),
                routing_key: delivery.routing_key.as_str().unwrap_or(""),
                body: delivery.body.as_bytes(),
                queue: delivery.queue.as_str().unwrap_or(""),
            }
        };
        callback(message);
    }));
}

unsafe extern "C" fn release_callback(context: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !context.is_null() {
            // SAFETY: made by `Box::into_raw` in `subscribe`; the broker releases it once.
            drop(unsafe { Box::from_raw(context.cast::<Callback>()) });
        }
    }));
}

unsafe extern "C" fn take_into_slot(context: *mut c_void, delivery: *const DeliveryRef) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the context is the `Option<OwnedMessage>` on `get`'s stack; the delivery is
        // borrowed for this call.
        let (Some(slot), Some(delivery)) =
            (unsafe { context.cast::<Option<OwnedMessage>>().as_mut() }, unsafe { delivery.as_ref() })
        else {
            return;
        };
        if (delivery.size as usize) < std::mem::size_of::<DeliveryRef>() {
            return;
        }
        // SAFETY: as above.
        *slot = Some(unsafe {
            OwnedMessage {
                exchange: delivery.exchange.as_str().unwrap_or("").to_owned(),
                routing_key: delivery.routing_key.as_str().unwrap_or("").to_owned(),
                body: delivery.body.as_bytes().to_vec(),
                queue: delivery.queue.as_str().unwrap_or("").to_owned(),
            }
        });
    }));
}

unsafe extern "C" fn release_nothing(_context: *mut c_void) {}

impl Host {
    /// Logs a client in and opens a vhost. Blocks; call it from the plugin's own threads, never
    /// from a delivery callback.
    pub fn open_session(&self, login: &SessionLogin) -> Result<Session, Denial> {
        let request = SessionRequest {
            size: std::mem::size_of::<SessionRequest>() as u32,
            username: StrRef::new(login.username),
            password: StrRef::new(login.password),
            vhost: StrRef::new(login.vhost),
            peer_address: StrRef::new(login.peer_address),
        };
        let mut id = 0u64;
        // SAFETY: the broker's function, with pointers that live for the call.
        with_reply(|reply| unsafe { (self.api.open_session)(self.api.broker, &request, &mut id, reply) })?;
        Ok(Session { host: *self, id })
    }
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Routes a message; returns how many queues it reached. A persistent message that reaches
    /// a durable queue returns only once it is on disk.
    pub fn publish(&self, exchange: &str, routing_key: &str, body: &[u8], persistent: bool) -> Result<u32, Denial> {
        let request = PublishRequest {
            size: std::mem::size_of::<PublishRequest>() as u32,
            exchange: StrRef::new(exchange),
            routing_key: StrRef::new(routing_key),
            body: ByteRef::new(body),
            persistent: u32::from(persistent),
        };
        let mut routed = 0u32;
        let api = self.host.api;
        // SAFETY: as in `open_session`.
        with_reply(|reply| unsafe { (api.publish)(api.broker, self.id, &request, &mut routed, reply) })?;
        Ok(routed)
    }

    /// Declares a queue if it does not exist; returns its ready message count.
    pub fn declare_queue(&self, name: &str, durable: bool) -> Result<u32, Denial> {
        let mut count = 0u32;
        let api = self.host.api;
        // SAFETY: as in `open_session`.
        with_reply(|reply| unsafe {
            (api.declare_queue)(api.broker, self.id, StrRef::new(name), u32::from(durable), &mut count, reply)
        })?;
        Ok(count)
    }

    /// Subscribes a callback to what `exchange` routes with `binding_key`. The callback runs on
    /// a broker thread: it must not block, and must not call the host.
    pub fn subscribe(
        &self,
        exchange: &str,
        binding_key: &str,
        callback: impl Fn(Message<'_>) + Send + Sync + 'static,
    ) -> Result<u64, Denial> {
        let callback: Box<Callback> = Box::new(Box::new(callback));
        let context = Box::into_raw(callback).cast::<c_void>();
        let sink = DeliverySink {
            size: std::mem::size_of::<DeliverySink>() as u32,
            context,
            deliver: deliver_to_callback,
            release: release_callback,
        };
        let mut subscription = 0u64;
        let api = self.host.api;
        // SAFETY: as in `open_session`; on success the broker owns `context` until it releases it.
        let result = with_reply(|reply| unsafe {
            (api.subscribe)(
                api.broker,
                self.id,
                StrRef::new(exchange),
                StrRef::new(binding_key),
                &sink,
                &mut subscription,
                reply,
            )
        });
        if result.is_err() {
            // SAFETY: the broker refused the subscription and kept nothing.
            unsafe { release_callback(context) };
        }
        result.map(|_| subscription)
    }

    pub fn unsubscribe(&self, subscription: u64) {
        let api = self.host.api;
        // SAFETY: the broker's function; an unknown handle is ignored.
        unsafe { (api.unsubscribe)(api.broker, self.id, subscription) };
    }

    /// Takes a message from the first of `queues` that has one, waiting up to `timeout`.
    pub fn get(&self, queues: &[&str], timeout: Duration) -> Result<Option<OwnedMessage>, Denial> {
        let names: Vec<StrRef> = queues.iter().map(|name| StrRef::new(name)).collect();
        let mut slot: Option<OwnedMessage> = None;
        let sink = DeliverySink {
            size: std::mem::size_of::<DeliverySink>() as u32,
            context: (&mut slot as *mut Option<OwnedMessage>).cast(),
            deliver: take_into_slot,
            release: release_nothing,
        };
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let api = self.host.api;
        // SAFETY: as in `open_session`; the sink is used only during the call.
        let status = with_reply(|reply| unsafe {
            (api.get)(api.broker, self.id, names.as_ptr(), names.len(), timeout_ms, &sink, reply)
        })?;
        Ok(if status == STATUS_EMPTY { None } else { slot })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let api = self.host.api;
        // SAFETY: the broker's function; the session is not used again.
        unsafe { (api.close_session)(api.broker, self.id) };
    }
}
