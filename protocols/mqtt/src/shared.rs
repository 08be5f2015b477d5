//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 4.8.2, which Mosquitto also accepts
//! from 3.1.1 clients): the members of a group consume one queue, bound to `amq.topic` with the
//! filter, so each message goes to one of them. The queue is transient and goes with its last
//! member. Retained messages are not sent on a shared subscription (4.8.2). Joining needs the
//! configure, write and read permissions on the group's queue (`mqtt-shared-{group}/{filter}`),
//! checked when it is joined.

use std::sync::Arc;

use mqttbytes::QoS;
use warren_core::auth::Access;
use warren_core::name::{ConnectionId, ConsumerId, ConsumerTag, ExchangeName, QueueName};
use warren_core::queue::{AckMode, Consumer, Credit, Durability, Exclusivity, QueueOptions};
use warren_core::value::Table;
use warren_core::vhost::Declare;
use warren_core::Queue;

use crate::inbound::TOPIC_EXCHANGE;
use crate::session::Session;
use crate::translate;

/// One shared subscription of a session.
#[derive(Debug)]
pub(crate) struct SharedSubscription {
    pub(crate) queue: Arc<Queue>,
    pub(crate) consumer: Arc<Consumer>,
    pub(crate) qos: QoS,
}

/// `$share/{group}/{filter}` as (group, filter); `None` for an ordinary filter. A malformed one
/// (empty group or filter, a wildcard in the group) is `Some` with an empty filter, so the
/// caller refuses it.
pub(crate) fn parse(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
    if group.is_empty() || group.contains(['+', '#']) || !mqttbytes::valid_filter(filter) {
        return Some((group, ""));
    }
    Some((group, filter))
}

/// What every group queue's name starts with.
pub(crate) const QUEUE_PREFIX: &str = "mqtt-shared-";

/// Whether a user may join a shared subscription: configure, write and read on the group's
/// queue, and read on `amq.topic`, as for the session's own queue.
pub(crate) async fn permitted(access: &Access, path: &str) -> bool {
    use warren_core::auth::{Permission, ResourceKind};
    let Some((group, filter)) = parse(path).filter(|(_, filter)| !filter.is_empty()) else { return false };
    let queue = queue_name(group, filter);
    access
        .check_all(&[
            (ResourceKind::Queue, queue.as_str(), Permission::Configure),
            (ResourceKind::Queue, queue.as_str(), Permission::Write),
            (ResourceKind::Queue, queue.as_str(), Permission::Read),
            (ResourceKind::Exchange, TOPIC_EXCHANGE, Permission::Read),
        ])
        .await
        .is_ok()
}

/// The group's queue: one per vhost, group and filter. A group has no `/`, so the first `/`
/// separates it from the filter and no two subscriptions share a name.
fn queue_name(group: &str, filter: &str) -> QueueName {
    QueueName::from(format!("{QUEUE_PREFIX}{group}/{filter}"))
}

impl Session {
    /// Joins a shared subscription (again, with a new QoS, if already a member).
    pub(crate) fn subscribe_shared(
        &mut self,
        path: &str,
        group: &str,
        filter: &str,
        qos: QoS,
    ) -> Result<(), warren_core::Error> {
        if let Some(existing) = self.shared.get_mut(path) {
            existing.qos = qos;
            return Ok(());
        }
        let connection = ConnectionId(self.connection);
        let options = QueueOptions {
            durability: Durability::Transient,
            exclusive_owner: None,
            auto_delete: true,
            arguments: Table::new(),
        };
        let queue = self.vhost.declare_queue(&queue_name(group, filter), options, Declare::Create, connection)?.queue;
        self.vhost.bind_queue(
            queue.name(),
            &ExchangeName::new(TOPIC_EXCHANGE),
            translate::binding_key(filter),
            Table::new(),
            connection,
        )?;
        let consumer = Arc::new(Consumer {
            id: ConsumerId(self.connection),
            tag: ConsumerTag::from(format!("mqtt-shared-{}", self.client_id)),
            ack_mode: AckMode::Manual,
            exclusivity: Exclusivity::Shared,
            priority: 0,
            inbox: self.inbox.clone(),
            prefetch: Credit::new(0),
            shared: Some(self.window()),
        });
        queue.add_consumer(consumer.clone())?;
        self.shared.insert(path.to_owned(), SharedSubscription { queue, consumer, qos });
        Ok(())
    }

    /// Leaves a shared subscription; the group's queue goes with its last member.
    pub(crate) fn unsubscribe_shared(&mut self, path: &str) {
        if let Some(shared) = self.shared.remove(path) {
            if shared.queue.remove_consumer(shared.consumer.id, &self.inbox) {
                self.vhost.remove_queue(&shared.queue);
            }
        }
    }

    /// Stops consuming every shared queue, before unacknowledged deliveries go back.
    pub(crate) fn detach_shared(&mut self) {
        for shared in self.shared.values() {
            shared.queue.detach_consumer(shared.consumer.id, &self.inbox);
        }
    }

    /// After the deliveries went back: empty groups' queues go, the others serve their members.
    pub(crate) fn release_shared(&mut self) {
        for (_, shared) in std::mem::take(&mut self.shared) {
            if shared.queue.consumer_count() == 0 {
                self.vhost.remove_queue(&shared.queue);
            } else {
                shared.queue.dispatch();
            }
        }
    }

    /// The shared subscription a delivery came through, if any, as its `$share/...` filter
    /// and QoS.
    pub(crate) fn shared_through(&self, queue: &Queue) -> Option<(&str, QoS)> {
        self.shared
            .iter()
            .find(|(_, shared)| std::ptr::eq(Arc::as_ptr(&shared.queue), queue))
            .map(|(path, shared)| (path.as_str(), shared.qos))
    }
}
