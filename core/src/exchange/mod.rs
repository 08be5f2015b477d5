//! Exchanges: named routers from a message to the queues bound to them.
//!
//! Each exchange type is a [`Router`] variant with its own binding index; the exchange wraps it
//! in a read-write lock. Routing takes the read lock for the length of one lookup and never
//! awaits, so publishers on different connections route in parallel. Binding changes take the
//! write lock and edit the index in place: copying the whole index on every bind (copy-on-write)
//! would make a burst of N subscriptions cost O(N²).
//!
//! # Layout
//! - `direct`: exact routing-key match, used by the default exchange's peers.
//! - `fanout`: every bound queue.
//! - `topic`: the word trie.
//! - `headers`: matching on message headers with `x-match`.

mod direct;
mod fanout;
mod headers;
mod topic;

use std::sync::{Arc, RwLock};

use crate::message::Message;
use crate::name::ExchangeName;
use crate::queue::{Durability, Queue};
use crate::topic::BindingKey;
use crate::value::Table;

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

/// A queue as a binding destination, compared by identity.
#[derive(Clone, Debug)]
pub struct QueueRef(pub Arc<Queue>);

impl PartialEq for QueueRef {
    fn eq(&self, other: &QueueRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One binding, as listed and compared.
#[derive(Clone, Debug)]
pub struct Binding {
    pub queue: QueueRef,
    pub key: BindingKey,
    pub arguments: Table,
}

impl Binding {
    fn same(&self, other: &Binding) -> bool {
        self.queue == other.queue
            && self.key == other.key
            && self.arguments.same_entries(&other.arguments)
    }
}

/// How an exchange was declared; compared on redeclare.
#[derive(Clone, Debug)]
pub struct ExchangeOptions {
    pub kind: ExchangeKind,
    pub durability: Durability,
    pub auto_delete: bool,
    /// Internal exchanges accept no direct publishes.
    pub internal: bool,
    pub arguments: Table,
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
}

#[derive(Debug)]
pub struct Exchange {
    name: ExchangeName,
    options: ExchangeOptions,
    bindings: RwLock<Bindings>,
}

impl Exchange {
    pub(crate) fn new(name: ExchangeName, options: ExchangeOptions) -> Arc<Exchange> {
        let router = match options.kind {
            ExchangeKind::Direct => Router::Direct(Default::default()),
            ExchangeKind::Fanout => Router::Fanout(Default::default()),
            ExchangeKind::Topic => Router::Topic(Default::default()),
            ExchangeKind::Headers => Router::Headers(Default::default()),
        };
        Arc::new(Exchange {
            name,
            options,
            bindings: RwLock::new(Bindings {
                all: Vec::new(),
                router,
            }),
        })
    }

    pub fn name(&self) -> &ExchangeName {
        &self.name
    }

    pub fn options(&self) -> &ExchangeOptions {
        &self.options
    }

    /// Adds the queues `message` routes to onto `out` (possibly with duplicates).
    pub fn route(&self, message: &Message, out: &mut Vec<Arc<Queue>>) {
        let bindings = self.bindings.read().expect("exchange lock poisoned");
        match &bindings.router {
            Router::Direct(router) => router.route(message, out),
            Router::Fanout(router) => router.route(out),
            Router::Topic(router) => router.route(message, out),
            Router::Headers(router) => router.route(message, out),
        }
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
        true
    }

    /// Removes a binding; returns false if there was none like it.
    pub(crate) fn unbind(&self, binding: &Binding) -> bool {
        let mut bindings = self.bindings.write().expect("exchange lock poisoned");
        let Some(index) = bindings
            .all
            .iter()
            .position(|existing| existing.same(binding))
        else {
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

    pub fn binding_count(&self) -> usize {
        self.bindings
            .read()
            .expect("exchange lock poisoned")
            .all
            .len()
    }
}
