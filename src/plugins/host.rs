//! What the broker offers plugins through `HostApi`: logging, and for protocol plugins a C-ABI
//! copy of the command set (open a session, publish, declare a queue, subscribe, get).
//!
//! Plugin threads are not ours: each call runs on the calling thread, entering our runtime with
//! `Handle::block_on` for the async parts. A call from one of our own runtime threads (a
//! plugin calling back from inside a delivery) is refused instead, since blocking there could
//! stall the broker.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warren_core::auth::{Access, Credentials, Permission, ResourceKind};
use warren_core::journal::{self};
use warren_core::message::Message;
use warren_core::name::{ConnectionId, ConsumerId, ConsumerTag, ExchangeName, QueueName, UserName, VhostName};
use warren_core::properties::Properties;
use warren_core::queue::{AckMode, Consumer, Credit, Durability, Exclusivity, Inbox, InboxItem, Queue, QueueOptions};
use warren_core::topic::{BindingKey, RoutingKey};
use warren_core::value::Table;
use warren_core::vhost::{Declare, Vhost};
use warren_core::Broker;
use warren_plugin_api as api;

/// How long a persistent publish waits for the disk before it is reported as failed.
const SYNC_WAIT_MAX: Duration = Duration::from_secs(30);

/// Deliveries taken from a subscription's inbox per pass.
const DRAIN_BATCH: usize = 64;

/// The most queues one `get` waits on (each gets a consumer while it waits).
const GET_QUEUES_MAX: usize = 1024;

/// The longest `get` wait, whatever the plugin asks: a plugin polls in slices so that it can
/// notice its client leaving.
const GET_WAIT_MAX: Duration = Duration::from_secs(3600);

/// The broker as plugins see it. Made before plugins load (their `init` gets its API); the
/// broker itself is attached once it exists.
pub struct PluginHost {
    broker: OnceLock<Arc<Broker>>,
    connections: OnceLock<Arc<Semaphore>>,
    runtime: tokio::runtime::Handle,
    sessions: Mutex<HashMap<u64, Arc<HostSession>>>,
    next_id: AtomicU64,
}

/// One logged-in client of a protocol plugin.
struct HostSession {
    vhost: Arc<Vhost>,
    /// The user's resource permissions, checked by every call below as the other protocols do.
    access: Arc<Access>,
    connection: ConnectionId,
    /// `None` once the session is closed, so that a subscribe racing the close ends at once
    /// instead of outliving it.
    subscriptions: Mutex<Option<HashMap<u64, HostSubscription>>>,
    /// Its place under the broker's connection limit.
    _permit: OwnedSemaphorePermit,
}

struct HostSubscription {
    queue: Arc<Queue>,
    consumer: Arc<Consumer>,
    inbox: Arc<Inbox>,
    /// The task handing deliveries to the plugin; it owns the sink.
    pump: tokio::task::AbortHandle,
}

/// A plugin's delivery sink, as passed in a call.
#[derive(Clone, Copy)]
struct RawSink {
    context: *mut c_void,
    deliver: unsafe extern "C" fn(*mut c_void, *const api::DeliveryRef),
    release: unsafe extern "C" fn(*mut c_void),
}

/// A sink the broker owns (a subscription's): released once, when dropped. Made only once a
/// subscription can no longer fail, because a refused subscription leaves the sink with the
/// plugin.
struct Sink(RawSink);

// SAFETY: the ABI requires sinks to be callable from any broker thread.
unsafe impl Send for Sink {}

impl RawSink {
    fn deliver(&self, subscription: u64, queue: &Queue, message: &Message) {
        let exchange = message.exchange.to_string();
        let routing_key = message.routing_key.to_string();
        let delivery = api::DeliveryRef {
            size: std::mem::size_of::<api::DeliveryRef>() as u32,
            subscription,
            exchange: api::StrRef::new(&exchange),
            routing_key: api::StrRef::new(&routing_key),
            body: api::ByteRef::new(&message.body),
            queue: api::StrRef::new(queue.name().as_str()),
        };
        // SAFETY: the plugin's sink, with a delivery that lives for the call.
        unsafe { (self.deliver)(self.context, &delivery) }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // SAFETY: the plugin's release function, called once, after the last delivery.
        unsafe { (self.0.release)(self.0.context) }
    }
}

/// A failed host call: its status and message.
struct Refusal(api::Status, String);

fn refused(message: impl std::fmt::Display) -> Refusal {
    Refusal(api::STATUS_DENIED, message.to_string())
}

fn failed(message: impl std::fmt::Display) -> Refusal {
    Refusal(api::STATUS_FAILED, message.to_string())
}

impl PluginHost {
    /// Made on the runtime the broker runs on.
    pub fn new(runtime: tokio::runtime::Handle) -> &'static PluginHost {
        Box::leak(Box::new(PluginHost {
            broker: OnceLock::new(),
            connections: OnceLock::new(),
            runtime,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Attaches the broker, once it exists; sessions are refused before.
    pub fn attach(&self, broker: Arc<Broker>, connections: Arc<Semaphore>) {
        let _ = self.broker.set(broker);
        let _ = self.connections.set(connections);
    }

    /// The host API handed to one plugin: `context` names the plugin for the log.
    pub(super) fn api_for(&'static self, name: &str) -> &'static api::HostApi {
        let name: &'static String = Box::leak(Box::new(name.to_owned()));
        Box::leak(Box::new(api::HostApi {
            size: std::mem::size_of::<api::HostApi>() as u32,
            abi_version: api::ABI_VERSION,
            log: super::host_log,
            context: (name as *const String).cast(),
            broker: (self as *const PluginHost).cast(),
            open_session,
            close_session,
            publish,
            declare_queue,
            subscribe,
            unsubscribe,
            get,
        }))
    }

    fn session(&self, id: u64) -> Result<Arc<HostSession>, Refusal> {
        let sessions = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sessions.get(&id).cloned().ok_or_else(|| failed(format!("no session {id}")))
    }

    /// Runs async broker work on the calling (plugin) thread.
    fn block_on<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, Refusal> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(failed("called from a broker thread (inside a delivery callback?): not allowed"));
        }
        Ok(self.runtime.block_on(work))
    }

    /// A resource permission of the session's user.
    fn check(
        &self,
        session: &HostSession,
        kind: ResourceKind,
        name: &str,
        permission: Permission,
    ) -> Result<(), Refusal> {
        self.block_on(session.access.check(kind, name, permission))?.map_err(refused)
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn open(&self, request: &api::SessionRequest) -> Result<u64, Refusal> {
        let broker = self.broker.get().ok_or_else(|| failed("the broker is not started yet"))?.clone();
        let connections = self.connections.get().ok_or_else(|| failed("the broker is not started yet"))?;
        let permit = connections.clone().try_acquire_owned().map_err(|_| refused("connection limit reached"))?;
        // SAFETY: the request's strings are borrowed for this call.
        let (username, password, vhost, peer) = unsafe {
            (
                request.username.as_str(),
                request.password.as_str(),
                request.vhost.as_str(),
                request.peer_address.as_str(),
            )
        };
        let (Some(username), Some(password), Some(vhost), Some(peer)) = (username, password, vhost, peer) else {
            return Err(failed("a session field is not UTF-8"));
        };
        let peer = peer.parse().map_err(|_| failed(format!("peer address '{peer}' is not ip:port")))?;
        let credentials = Credentials { username: UserName::new(username), password: password.to_owned(), peer };
        let vhost_name = VhostName::new(vhost);
        let opened = self.block_on(async {
            let principal = broker.authenticate(&credentials).await?;
            let vhost = broker.open_vhost(&principal, &vhost_name).await?;
            Ok::<_, warren_core::Error>((vhost, broker.access(&principal, &vhost_name)))
        })?;
        let (vhost, access) = opened.map_err(refused)?;
        let id = self.next_id();
        let connection = broker.next_connection_id();
        let session =
            HostSession { vhost, access, connection, subscriptions: Mutex::new(Some(HashMap::new())), _permit: permit };
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, Arc::new(session));
        Ok(id)
    }

    fn close(&self, id: u64) {
        let session = self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
        if let Some(session) = session {
            let subscriptions = session
                .subscriptions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take()
                .unwrap_or_default();
            for subscription in subscriptions.into_values() {
                session.end(subscription);
            }
        }
    }

    fn publish(&self, session: u64, request: &api::PublishRequest) -> Result<u32, Refusal> {
        let session = self.session(session)?;
        // SAFETY: the request's fields are borrowed for this call.
        let (exchange, routing_key, body) =
            unsafe { (request.exchange.as_str(), request.routing_key.as_str(), request.body.as_bytes()) };
        let (Some(exchange), Some(routing_key)) = (exchange, routing_key) else {
            return Err(failed("exchange or routing key is not UTF-8"));
        };
        self.check(&session, ResourceKind::Exchange, exchange, Permission::Write)?;
        let exchange = session.vhost.exchange(&ExchangeName::new(exchange)).map_err(refused)?;
        let properties =
            Properties { delivery_mode: Some(if request.persistent == 1 { 2 } else { 1 }), ..Properties::default() };
        let message = Message {
            exchange: exchange.name().clone(),
            routing_key: RoutingKey::new(routing_key),
            properties,
            body: Bytes::copy_from_slice(body),
            journal: None,
        };
        let mut queues = Vec::new();
        session.vhost.route(&exchange, &message, &mut queues).map_err(refused)?;
        let published = session.vhost.enqueue(message, &queues);
        if published.rejected {
            return Err(failed("a queue refused the message (length limit, or the store cannot write)"));
        }
        let broker = self.broker.get().expect("sessions exist only once the broker is attached");
        self.block_on(async {
            if let Some(lsn) = published.lsn {
                wait_synced(broker, lsn).await?;
            }
            // A queue over its memory bound pauses this publisher, as for the other protocols.
            for queue in &queues {
                if queue.is_full() {
                    queue.wait_for_room().await;
                }
            }
            Ok(())
        })??;
        Ok(u32::try_from(queues.len()).unwrap_or(u32::MAX))
    }

    fn declare(&self, session: u64, name: api::StrRef, durable: bool) -> Result<u32, Refusal> {
        let session = self.session(session)?;
        // SAFETY: borrowed for this call.
        let name = unsafe { name.as_str() }.ok_or_else(|| failed("queue name is not UTF-8"))?;
        if name.is_empty() {
            return Err(refused("a queue needs a name"));
        }
        self.check(&session, ResourceKind::Queue, name, Permission::Configure)?;
        let options = QueueOptions {
            durability: if durable { Durability::Durable } else { Durability::Transient },
            exclusive_owner: None,
            auto_delete: false,
            arguments: Table::new(),
        };
        let declared = session
            .vhost
            .declare_queue(&QueueName::new(name), options, Declare::Create, session.connection)
            .map_err(refused)?;
        Ok(u32::try_from(declared.message_count).unwrap_or(u32::MAX))
    }

    fn subscribe(
        &self,
        session_id: u64,
        exchange: api::StrRef,
        key: api::StrRef,
        sink: RawSink,
    ) -> Result<u64, Refusal> {
        let session = self.session(session_id)?;
        // SAFETY: borrowed for this call.
        let (exchange, key) = unsafe { (exchange.as_str(), key.as_str()) };
        let (Some(exchange), Some(key)) = (exchange, key) else {
            return Err(failed("exchange or binding key is not UTF-8"));
        };
        self.check(&session, ResourceKind::Exchange, exchange, Permission::Read)?;
        let options = QueueOptions {
            durability: Durability::Transient,
            exclusive_owner: Some(session.connection),
            auto_delete: true,
            arguments: Table::new(),
        };
        let queue = session
            .vhost
            .declare_queue(&QueueName::new(""), options, Declare::Create, session.connection)
            .map_err(refused)?
            .queue;
        let bound = session.vhost.bind_queue(
            queue.name(),
            &ExchangeName::new(exchange),
            BindingKey::parse(key),
            Table::new(),
            session.connection,
        );
        if let Err(error) = bound {
            session.vhost.remove_queue(&queue);
            return Err(refused(error));
        }
        let id = self.next_id();
        let inbox = Inbox::new(warren_core::limits::INBOX_CAPACITY);
        let consumer = Arc::new(Consumer {
            id: ConsumerId(id),
            tag: ConsumerTag::from(format!("plugin-subscription-{id}")),
            ack_mode: AckMode::Auto,
            exclusivity: Exclusivity::Shared,
            priority: 0,
            inbox: inbox.clone(),
            prefetch: Credit::new(0),
            shared: None,
        });
        if let Err(error) = queue.add_consumer(consumer.clone()) {
            session.vhost.remove_queue(&queue);
            return Err(refused(error));
        }
        // Deliveries that arrived meanwhile wait in the inbox, which stays marked ready.
        let broker = self.broker.get().expect("sessions exist only once the broker is attached");
        let shutdown = broker.shutdown().clone();
        let pump = broker.shutdown().spawn_abortable_on(pump(inbox.clone(), Sink(sink), id, shutdown), &self.runtime);
        let subscription = HostSubscription { queue, consumer, inbox, pump };
        let mut subscriptions = session.subscriptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match subscriptions.as_mut() {
            Some(subscriptions) => {
                subscriptions.insert(id, subscription);
            }
            None => {
                // The session closed meanwhile: the subscription ends now. Its sink is the
                // pump's already (released when the pump goes), so this is not an error the
                // plugin would answer by releasing the sink itself.
                drop(subscriptions);
                session.end(subscription);
            }
        }
        Ok(id)
    }

    fn unsubscribe(&self, session: u64, subscription: u64) -> Result<(), Refusal> {
        let session = self.session(session)?;
        let found = session
            .subscriptions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_mut()
            .and_then(|subscriptions| subscriptions.remove(&subscription));
        if let Some(found) = found {
            session.end(found);
        }
        Ok(())
    }

    fn get(&self, session: u64, names: &[api::StrRef], timeout: Duration, sink: RawSink) -> Result<bool, Refusal> {
        let session = self.session(session)?;
        let mut queues = Vec::with_capacity(names.len());
        for name in names {
            // SAFETY: borrowed for this call.
            let name = unsafe { name.as_str() }.ok_or_else(|| failed("queue name is not UTF-8"))?;
            self.check(&session, ResourceKind::Queue, name, Permission::Read)?;
            queues.push(session.vhost.queue(&QueueName::new(name), session.connection).map_err(refused)?);
        }
        let first_id = self.next_id.fetch_add(queues.len() as u64, Ordering::Relaxed);
        let taken = self.block_on(take_first(queues, timeout.min(GET_WAIT_MAX), first_id))?;
        match taken {
            Some((queue, message)) => {
                sink.deliver(0, &queue, &message);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl HostSession {
    /// Ends a subscription: its consumer goes, undelivered messages return, its queue goes.
    fn end(&self, subscription: HostSubscription) {
        subscription.queue.remove_consumer(subscription.consumer.id, &subscription.inbox);
        subscription.inbox.return_undelivered();
        self.vhost.remove_queue(&subscription.queue);
        subscription.pump.abort();
    }
}

/// Hands a subscription's deliveries to its sink until the subscription ends.
async fn pump(inbox: Arc<Inbox>, sink: Sink, subscription: u64, shutdown: warren_core::shutdown::Shutdown) {
    let mut items = Vec::with_capacity(DRAIN_BATCH);
    loop {
        tokio::select! {
            _ = inbox.ready() => {}
            // Spawned through the broker's tracker: shutdown waits for it, so it must end then.
            _ = shutdown.cancelled() => return,
        }
        while inbox.drain_into(&mut items, DRAIN_BATCH) > 0 {
            for item in items.drain(..) {
                match item {
                    InboxItem::Delivery(delivery) => {
                        sink.0.deliver(subscription, &delivery.queue, &delivery.message);
                        delivery.queue.acked([&delivery.message]);
                    }
                    InboxItem::Cancelled(_) => return,
                }
            }
        }
    }
}

/// Takes one message from the first of `queues` to have one, waiting up to `timeout`: each
/// queue gets a consumer sharing one inbox with room for a single delivery, so at most one
/// message is taken; anything else is returned in place.
async fn take_first(queues: Vec<Arc<Queue>>, timeout: Duration, first_id: u64) -> Option<(Arc<Queue>, Arc<Message>)> {
    for queue in &queues {
        if let Some(got) = queue.get() {
            queue.acked([&got.message]);
            return Some((queue.clone(), got.message));
        }
    }
    if timeout.is_zero() {
        return None;
    }
    let inbox = Inbox::new(1);
    let mut consumers = Vec::with_capacity(queues.len());
    for (offset, queue) in queues.iter().enumerate() {
        let id = first_id + offset as u64;
        let consumer = Arc::new(Consumer {
            id: ConsumerId(id),
            tag: ConsumerTag::from(format!("plugin-get-{id}")),
            ack_mode: AckMode::Auto,
            exclusivity: Exclusivity::Shared,
            priority: 0,
            inbox: inbox.clone(),
            prefetch: Credit::new(0),
            shared: None,
        });
        if queue.add_consumer(consumer.clone()).is_ok() {
            consumers.push((queue.clone(), consumer));
        }
    }
    let waited = tokio::time::timeout(timeout, async {
        let mut items = Vec::with_capacity(1);
        loop {
            inbox.ready().await;
            inbox.drain_into(&mut items, 1);
            if let Some(InboxItem::Delivery(delivery)) = items.pop() {
                return delivery;
            }
        }
    })
    .await;
    for (queue, consumer) in &consumers {
        queue.remove_consumer(consumer.id, &inbox);
    }
    inbox.return_undelivered();
    let delivery = waited.ok()?;
    delivery.queue.acked([&delivery.message]);
    Some((delivery.queue, delivery.message))
}

/// Waits until the journal has synced past `lsn`.
async fn wait_synced(broker: &Broker, lsn: journal::Lsn) -> Result<(), Refusal> {
    let Some(journal) = broker.journal() else { return Ok(()) };
    let mut sync = journal.sync_state();
    let wait = async {
        loop {
            if let Some(outcome) = sync.borrow_and_update().outcome(lsn) {
                return outcome;
            }
            if sync.changed().await.is_err() {
                return false;
            }
        }
    };
    match tokio::time::timeout(SYNC_WAIT_MAX, wait).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed("the message store could not write the message")),
        Err(_) => Err(failed("the message store did not sync in time")),
    }
}

// -- The C functions in HostApi. Each one must not panic: it is called from plugin frames. -----

/// Runs a host call, catching any panic, and reports a refusal through the reply.
fn answer(reply: *const api::Reply, call: impl FnOnce() -> Result<(), Refusal>) -> api::Status {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
        .unwrap_or_else(|_| Err(failed("the broker failed handling this call")));
    match outcome {
        Ok(()) => api::STATUS_OK,
        Err(Refusal(status, message)) => {
            // SAFETY: the plugin's reply, valid for the call (or null); one smaller than ours
            // (an older plugin's) is not used.
            let reply =
                unsafe { reply.as_ref() }.filter(|reply| reply.size as usize >= std::mem::size_of::<api::Reply>());
            if let Some(reply) = reply {
                // SAFETY: as above; the message is borrowed for the callback.
                unsafe { (reply.set_message)(reply.context, api::StrRef::new(&message)) };
            }
            status
        }
    }
}

/// Refuses a struct from a plugin that is smaller than the broker's build of it (an older
/// plugin's): its missing fields must not be read.
fn sized(found: u32, expected: usize, what: &str) -> Result<(), Refusal> {
    if (found as usize) < expected {
        return Err(failed(format!("{what} of {found} bytes from an older plugin; the broker needs {expected}")));
    }
    Ok(())
}

/// # Safety
/// `broker` is the `PluginHost` from `api_for`.
unsafe fn host<'a>(broker: *const c_void) -> &'a PluginHost {
    // SAFETY: `api_for` put a leaked, 'static PluginHost here.
    unsafe { &*broker.cast::<PluginHost>() }
}

unsafe extern "C" fn open_session(
    broker: *const c_void,
    request: *const api::SessionRequest,
    session: *mut u64,
    reply: *const api::Reply,
) -> api::Status {
    answer(reply, || {
        // SAFETY: the plugin passes a request and an out pointer valid for the call.
        let (Some(request), false) = (unsafe { request.as_ref() }, session.is_null()) else {
            return Err(failed("null argument"));
        };
        sized(request.size, std::mem::size_of::<api::SessionRequest>(), "a session request")?;
        // SAFETY: as above.
        let id = unsafe { host(broker) }.open(request)?;
        // SAFETY: checked non-null.
        unsafe { *session = id };
        Ok(())
    })
}

unsafe extern "C" fn close_session(broker: *const c_void, session: u64) {
    // SAFETY: as in `open_session`.
    answer(std::ptr::null(), || {
        unsafe { host(broker) }.close(session);
        Ok(())
    });
}

unsafe extern "C" fn publish(
    broker: *const c_void,
    session: u64,
    request: *const api::PublishRequest,
    routed: *mut u32,
    reply: *const api::Reply,
) -> api::Status {
    answer(reply, || {
        // SAFETY: as in `open_session`.
        let Some(request) = (unsafe { request.as_ref() }) else { return Err(failed("null argument")) };
        sized(request.size, std::mem::size_of::<api::PublishRequest>(), "a publish request")?;
        // SAFETY: as in `open_session`.
        let count = unsafe { host(broker) }.publish(session, request)?;
        if !routed.is_null() {
            // SAFETY: checked non-null; the plugin's out pointer.
            unsafe { *routed = count };
        }
        Ok(())
    })
}

unsafe extern "C" fn declare_queue(
    broker: *const c_void,
    session: u64,
    name: api::StrRef,
    durable: u32,
    message_count: *mut u32,
    reply: *const api::Reply,
) -> api::Status {
    answer(reply, || {
        // SAFETY: as in `open_session`.
        let count = unsafe { host(broker) }.declare(session, name, durable == 1)?;
        if !message_count.is_null() {
            // SAFETY: checked non-null; the plugin's out pointer.
            unsafe { *message_count = count };
        }
        Ok(())
    })
}

unsafe extern "C" fn subscribe(
    broker: *const c_void,
    session: u64,
    exchange: api::StrRef,
    binding_key: api::StrRef,
    sink: *const api::DeliverySink,
    subscription: *mut u64,
    reply: *const api::Reply,
) -> api::Status {
    answer(reply, || {
        // SAFETY: as in `open_session`.
        let (Some(sink), false) = (unsafe { sink.as_ref() }, subscription.is_null()) else {
            return Err(failed("null argument"));
        };
        sized(sink.size, std::mem::size_of::<api::DeliverySink>(), "a delivery sink")?;
        let raw = RawSink { context: sink.context, deliver: sink.deliver, release: sink.release };
        // SAFETY: as in `open_session`.
        match unsafe { host(broker) }.subscribe(session, exchange, binding_key, raw) {
            Ok(id) => {
                // SAFETY: checked non-null.
                unsafe { *subscription = id };
                Ok(())
            }
            Err(refusal) => Err(refusal),
        }
    })
}

unsafe extern "C" fn unsubscribe(broker: *const c_void, session: u64, subscription: u64) -> api::Status {
    // SAFETY: as in `open_session`.
    answer(std::ptr::null(), || unsafe { host(broker) }.unsubscribe(session, subscription))
}

unsafe extern "C" fn get(
    broker: *const c_void,
    session: u64,
    queues: *const api::StrRef,
    queue_count: usize,
    timeout_ms: u64,
    sink: *const api::DeliverySink,
    reply: *const api::Reply,
) -> api::Status {
    let mut empty = false;
    let status = answer(reply, || {
        // SAFETY: as in `open_session`.
        let Some(sink) = (unsafe { sink.as_ref() }) else { return Err(failed("null argument")) };
        sized(sink.size, std::mem::size_of::<api::DeliverySink>(), "a delivery sink")?;
        if queues.is_null() || queue_count == 0 || queue_count > GET_QUEUES_MAX {
            return Err(failed(format!("get needs 1 to {GET_QUEUES_MAX} queues")));
        }
        // SAFETY: the plugin passes `queue_count` names, valid for the call.
        let names = unsafe { std::slice::from_raw_parts(queues, queue_count) };
        // Borrowed for the call only: `get` never releases it.
        let raw = RawSink { context: sink.context, deliver: sink.deliver, release: sink.release };
        // SAFETY: as in `open_session`.
        let took = unsafe { host(broker) }.get(session, names, Duration::from_millis(timeout_ms), raw)?;
        empty = !took;
        Ok(())
    });
    if status == api::STATUS_OK && empty {
        api::STATUS_EMPTY
    } else {
        status
    }
}
