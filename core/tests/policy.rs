//! Policies applied through the core API: to queues declared before and after the policy is
//! set, without redeclaring, and removed again when the policy is cleared.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warren_core::auth::InternalUsers;
use warren_core::name::{ConnectionId, ExchangeName, QueueName, VhostName};
use warren_core::policy::{ApplyTo, Policy};
use warren_core::properties::Properties;
use warren_core::queue::{Durability, QueueOptions};
use warren_core::shutdown::Shutdown;
use warren_core::topic::RoutingKey;
use warren_core::value::{Table, Value};
use warren_core::vhost::Declare;
use warren_core::{Broker, BrokerConfig, Message, Vhost};

fn vhost() -> Arc<Vhost> {
    let broker = Broker::new(BrokerConfig::default(), Arc::new(InternalUsers::with_default_guest()), Shutdown::new());
    broker.vhost(&VhostName::new("/")).expect("default vhost")
}

fn declare(vhost: &Vhost, name: &str) -> Arc<warren_core::Queue> {
    let options = QueueOptions {
        durability: Durability::Transient,
        exclusive_owner: None,
        auto_delete: false,
        arguments: Table::new(),
    };
    vhost.declare_queue(&QueueName::new(name), options, Declare::Create, ConnectionId(1)).expect("declared").queue
}

fn message(key: &str) -> Arc<Message> {
    Arc::new(Message {
        exchange: ExchangeName::new(""),
        routing_key: RoutingKey::new(key),
        properties: Properties::default(),
        body: Bytes::from_static(b"body"),
        journal: None,
    })
}

fn policy(name: &str, pattern: &str, entries: Vec<(&str, Value)>) -> Policy {
    let definition = Table(entries.into_iter().map(|(key, value)| (key.to_owned(), value)).collect());
    Policy::new(name, pattern, ApplyTo::Queues, 0, definition).expect("valid policy")
}

#[tokio::test]
async fn a_policy_applies_to_existing_queues_without_redeclaring() {
    let vhost = vhost();
    let limited = declare(&vhost, "limited.orders");
    let other = declare(&vhost, "other");
    for _ in 0..5 {
        limited.enqueue(message("limited.orders"));
        other.enqueue(message("other"));
    }
    vhost.set_policy(policy("cap", "^limited\\.", vec![("max-length", Value::I64(2))]));
    assert_eq!(limited.arguments().max_length, Some(2));
    assert_eq!(limited.message_count(), 2, "the lower limit drops the excess at once");
    assert_eq!(other.message_count(), 5, "the pattern does not match 'other'");

    let later = declare(&vhost, "limited.later");
    assert_eq!(later.arguments().max_length, Some(2), "queues declared later get it too");

    assert!(vhost.clear_policy("cap"));
    assert_eq!(limited.arguments().max_length, None);
}

#[tokio::test]
async fn a_policy_ttl_expires_messages() {
    let vhost = vhost();
    vhost.set_policy(policy("ttl", "^ttl$", vec![("message-ttl", Value::I64(20))]));
    let queue = declare(&vhost, "ttl");
    queue.enqueue(message("ttl"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.message_count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the policy's TTL never expired the message");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
