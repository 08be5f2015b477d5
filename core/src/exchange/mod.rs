//! Exchanges: named routers from a message to the queues (and exchanges) bound to them.
//!
//! Each exchange type is a router with its own binding index; the exchange wraps it in a
//! read-write lock. Routing takes the read lock for the length of one lookup and never awaits,
//! so publishers on different connections route in parallel. Binding changes take the write
//! lock and edit the index in place: copying the whole index on every bind (copy-on-write)
//! would make a burst of N subscriptions cost O(N²).
//!
//! # Layout
//! - `direct`: exact routing-key match.
//! - `fanout`: every binding.
//! - `topic`: the word trie.
//! - `headers`: matching on message headers with `x-match`.

mod direct;
mod fanout;
mod headers;
mod topic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{EntityKind, Error, Result};
use crate::message::Message;
use crate::name::ExchangeName;
use crate::queue::{BindingRecord, Durability, Queue};
use crate::topic::BindingKey;
use crate::value::{Table, Value};

/// The exchange types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// The type's name as clients declare it.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    pub fn from_name(name: &str) -> Option<ExchangeKind> {
        match name {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }
}

/// Where a binding leads: a queue, or another exchange (an exchange-to-exchange binding).
/// Compared by identity.
#[derive(Clone, Debug)]
pub enum Destination {
    Queue(Arc<Queue>),
    Exchange(Arc<Exchange>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One binding, as listed and compared.
#[derive(Clone, Debug)]
pub struct Binding {
    pub destination: Destination,
    pub key: BindingKey,
    pub arguments: Table,
}

impl Binding {
    fn same(&self, other: &Binding) -> bool {
        self.destination == other.destination && self.key == other.key && self.arguments.same_entries(&other.arguments)
    }
}

/// How an exchange was declared; compared on redeclare.
#[derive(Clone, Debug)]
pub struct ExchangeOptions {
    pub kind: ExchangeKind,
    pub durability: Durability,
    /// Deleted when its last binding (as a source) goes, once it has had one.
    pub auto_delete: bool,
    /// Internal exchanges accept no direct publishes, only exchange-to-exchange traffic.
    pub internal: bool,
    pub arguments: Table,
}

impl ExchangeOptions {
    /// The `alternate-exchange` argument: where messages this exchange cannot route go.
    pub fn alternate_exchange(&self) -> Option<ExchangeName> {
        self.arguments.get("alternate-exchange").and_then(Value::as_str).map(ExchangeName::new)
    }
}

#[derive(Debug)]
enum Router {
    Direct(direct::DirectRouter),
    Fanout(fanout::FanoutRouter),
    Topic(topic::TopicRouter),
    Headers(headers::HeadersRouter),
}

#[derive(Debug)]
struct Bindings {
    all: Vec<Binding>,
    router: Router,
    had_binding: bool,
}

#[derive(Debug)]
pub struct Exchange {
    name: ExchangeName,
    options: ExchangeOptions,
    bindings: RwLock<Bindings>,
    /// Bindings that lead to this exchange from others, removed when it is deleted.
    sources: Mutex<Vec<BindingRecord>>,
    /// The alternate exchange set by a policy, used when the arguments name none.
    policy_alternate: Mutex<Option<ExchangeName>>,
    deleted: AtomicBool,
}

impl Exchange {
    pub(crate) fn new(name: ExchangeName, options: ExchangeOptions) -> Arc<Exchange> {
        let router = match options.kind {
            ExchangeKind::Direct => Router::Direct(Default::default()),
            ExchangeKind::Fanout => Router::Fanout(Default::default()),
            ExchangeKind::Topic => Router::Topic(Default::default()),
            ExchangeKind::Headers => Router::Headers(Default::default()),
        };
        let bindings = Bindings { all: Vec::new(), router, had_binding: false };
        Arc::new(Exchange {
            name,
            options,
            bindings: RwLock::new(bindings),
            sources: Mutex::new(Vec::new()),
            policy_alternate: Mutex::new(None),
            deleted: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &ExchangeName {
        &self.name
    }

    pub fn options(&self) -> &ExchangeOptions {
        &self.options
    }

    /// Where messages this exchange cannot route go: its `alternate-exchange` argument, else
    /// its policy's.
    pub fn alternate_exchange(&self) -> Option<ExchangeName> {
        self.options
            .alternate_exchange()
            .or_else(|| self.policy_alternate.lock().expect("exchange policy lock poisoned").clone())
    }

    pub(crate) fn set_policy_alternate(&self, alternate: Option<ExchangeName>) {
        *self.policy_alternate.lock().expect("exchange policy lock poisoned") = alternate;
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Calls `found` for each destination `message` routes to (possibly more than once).
    pub fn route(&self, message: &Message, found: &mut dyn FnMut(&Destination)) {
        let bindings = self.bindings.read().expect("exchange lock poisoned");
        match &bindings.router {
            Router::Direct(router) => router.route(message, found),
            Router::Fanout(router) => router.route(found),
            Router::Topic(router) => router.route(message, found),
            Router::Headers(router) => router.route(message, found),
        }
    }

    /// Checks a new binding's arguments: a headers exchange needs a valid `x-match`.
    pub(crate) fn check_binding(&self, arguments: &Table) -> Result<()> {
        let Some(mode) = arguments.get("x-match") else { return Ok(()) };
        let valid = matches!(mode.as_str(), Some("all" | "any" | "all-with-x" | "any-with-x"));
        if self.options.kind == ExchangeKind::Headers && !valid {
            return Err(Error::InvalidArgument {
                kind: EntityKind::Exchange,
                name: self.name.to_string(),
                argument: "x-match".into(),
                reason: "expected all, any, all-with-x, or any-with-x",
            });
        }
        Ok(())
    }

    /// Adds a binding; returns false if an identical one existed.
    pub(crate) fn bind(&self, binding: Binding) -> bool {
        let mut bindings = self.bindings.write().expect("exchange lock poisoned");
        if bindings.all.iter().any(|existing| existing.same(&binding)) {
            return false;
        }
        match &mut bindings.router {
            Router::Direct(router) => router.bind(&binding),
            Router::Fanout(router) => router.bind(&binding),
            Router::Topic(router) => router.bind(&binding),
            Router::Headers(router) => router.bind(&binding),
        }
        bindings.all.push(binding);
        bindings.had_binding = true;
        true
    }

    /// Removes a binding; returns false if there was none like it.
    pub(crate) fn unbind(&self, binding: &Binding) -> bool {
        let mut bindings = self.bindings.write().expect("exchange lock poisoned");
        let Some(index) = bindings.all.iter().position(|existing| existing.same(binding)) else {
            return false;
        };
        let removed = bindings.all.swap_remove(index);
        match &mut bindings.router {
            Router::Direct(router) => router.unbind(&removed),
            Router::Fanout(router) => router.unbind(&removed),
            Router::Topic(router) => router.unbind(&removed),
            Router::Headers(router) => router.unbind(&removed),
        }
        true
    }

    /// A copy of the bindings from this exchange.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().expect("exchange lock poisoned").all.clone()
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.read().expect("exchange lock poisoned").all.len()
    }

    /// Whether an auto-delete exchange has lost its last binding.
    pub(crate) fn should_auto_delete(&self) -> bool {
        let bindings = self.bindings.read().expect("exchange lock poisoned");
        self.options.auto_delete && bindings.had_binding && bindings.all.is_empty()
    }

    /// Takes every binding out, for deletion.
    pub(crate) fn take_bindings(&self) -> Vec<Binding> {
        let mut bindings = self.bindings.write().expect("exchange lock poisoned");
        let all = std::mem::take(&mut bindings.all);
        for binding in &all {
            match &mut bindings.router {
                Router::Direct(router) => router.unbind(binding),
                Router::Fanout(router) => router.unbind(binding),
                Router::Topic(router) => router.unbind(binding),
                Router::Headers(router) => router.unbind(binding),
            }
        }
        all
    }

    pub(crate) fn add_source(&self, record: BindingRecord) {
        self.sources.lock().expect("exchange sources lock poisoned").push(record);
    }

    pub(crate) fn remove_source(&self, exchange: &ExchangeName, key: &BindingKey, arguments: &Table) {
        let mut sources = self.sources.lock().expect("exchange sources lock poisoned");
        if let Some(index) = sources.iter().position(|record| {
            record.exchange == *exchange && record.key == *key && record.arguments.same_entries(arguments)
        }) {
            sources.swap_remove(index);
        }
    }

    /// Marks the exchange deleted and returns the bindings that lead to it.
    pub(crate) fn mark_deleted(&self) -> Vec<BindingRecord> {
        self.deleted.store(true, Ordering::Release);
        std::mem::take(&mut *self.sources.lock().expect("exchange sources lock poisoned"))
    }
}
