//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 4.8.2, which Mosquitto also accepts
//! from 3.1.1 clients): the members of a group consume one queue, bound to `amq.topic` with the
//! filter, so each message goes to one of them. Retained messages are not sent on a shared
//! subscription (4.8.2). Joining needs the configure, write and read permissions on the group's
//! queue (`mqtt-shared-{group}/{filter}`), checked when it is joined.
//!
//! A shared subscription is part of each member's session (4.8.2), so the group's queue lives
//! as long as some session holds the subscription, connected or not: while every member of a
//! group of persistent sessions is away, its messages wait in the queue for the first to come
//! back. The members are counted by client id in `MqttState::groups`, and the queue goes with
//! the last (an UNSUBSCRIBE, a clean session's end, a session's expiry or a clean start that
//! replaces it). The queue is durable when the session that creates it is persistent, so what
//! waits survives a restart; a group created by a clean session keeps a transient queue (its
//! publishes wait for no disk) until it is gone, or until a restart, after which a durable one
//! is made for its persistent members (`MqttState::settle_groups`).

use std::sync::Arc;

use mqttbytes::QoS;
use warren_core::auth::Access;
use warren_core::name::{ConnectionId, ConsumerId, ConsumerTag, ExchangeName, QueueName};
use warren_core::queue::{AckMode, Consumer, Credit, Durability, Exclusivity, QueueOptions};
use warren_core::value::Table;
use warren_core::vhost::Declare;
use warren_core::vhost::Vhost;
use warren_core::Queue;

use crate::inbound::TOPIC_EXCHANGE;
use crate::session::Session;
use crate::state::MqttState;
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

/// The queue of the group a `$share/...` filter names.
fn queue_of(path: &str) -> Option<QueueName> {
    parse(path).filter(|(_, filter)| !filter.is_empty()).map(|(group, filter)| queue_name(group, filter))
}

impl MqttState {
    /// `client_id`'s session no longer holds the shared subscriptions `paths`: a group's queue
    /// goes with its last member.
    pub(crate) fn leave_groups<'a>(&self, vhost: &Vhost, client_id: &str, paths: impl IntoIterator<Item = &'a str>) {
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        for path in paths {
            let key = (vhost.name().clone(), path.to_owned());
            let Some(members) = groups.get_mut(&key) else { continue };
            members.remove(client_id);
            if !members.is_empty() {
                continue;
            }
            groups.remove(&key);
            if let Some(queue) = queue_of(path).and_then(|name| vhost.queue(&name, ConnectionId(0)).ok()) {
                vhost.remove_queue(&queue);
            }
        }
    }

    /// Matches the group queues restored at start to the restored sessions that hold them:
    /// a queue no session holds any more goes (its members' sessions were clean, or ended while
    /// the broker was down), and a group whose queue was transient gets a durable one, so its
    /// messages wait for its members from now on.
    pub(crate) fn settle_groups(&self) {
        let groups = self.groups.lock().expect("groups lock poisoned");
        for (vhost_name, path) in groups.keys() {
            let (Some(vhost), Some((group, filter))) =
                (self.broker.vhost(vhost_name), parse(path).filter(|(_, filter)| !filter.is_empty()))
            else {
                continue;
            };
            if vhost.queue(&queue_name(group, filter), ConnectionId(0)).is_ok() {
                continue;
            }
            let options = QueueOptions {
                durability: Durability::Durable,
                exclusive_owner: None,
                auto_delete: false,
                arguments: Table::new(),
            };
            let made = vhost
                .declare_queue(&queue_name(group, filter), options, Declare::Create, ConnectionId(0))
                .and_then(|declared| {
                    let key = translate::binding_key(filter);
                    vhost.bind_queue(
                        declared.queue.name(),
                        &ExchangeName::new(TOPIC_EXCHANGE),
                        key,
                        Table::new(),
                        ConnectionId(0),
                    )
                });
            if let Err(error) = made {
                tracing::warn!(vhost = %vhost_name, path, %error, "shared subscription's queue not made again");
            }
        }
        if self.sessions_unread.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("some mqtt session state was not read back; shared subscriptions' queues are all kept");
            return;
        }
        for vhost_name in self.broker.vhost_names() {
            let Some(vhost) = self.broker.vhost(&vhost_name) else { continue };
            let held: std::collections::HashSet<QueueName> = groups
                .keys()
                .filter(|(vhost, _)| *vhost == vhost_name)
                .filter_map(|(_, path)| queue_of(path))
                .collect();
            for queue in vhost.queues_named_with(QUEUE_PREFIX) {
                if !held.contains(queue.name()) {
                    tracing::info!(vhost = %vhost_name, queue = %queue.name(), "shared subscription without members removed");
                    vhost.remove_queue(&queue);
                }
            }
        }
    }
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
        let window = self.window();
        let state = self.state.clone();
        // Under the members' lock, so the queue cannot go between being found and being joined.
        let mut groups = state.groups.lock().expect("groups lock poisoned");
        let name = queue_name(group, filter);
        let (queue, created) = match self.vhost.queue(&name, connection) {
            // Whatever its durability: a group has one queue.
            Ok(queue) => (queue, false),
            Err(_) => {
                let durability = if self.ends_with_connection { Durability::Transient } else { Durability::Durable };
                let options =
                    QueueOptions { durability, exclusive_owner: None, auto_delete: false, arguments: Table::new() };
                (self.vhost.declare_queue(&name, options, Declare::Create, connection)?.queue, true)
            }
        };
        let consumer = Arc::new(Consumer {
            id: ConsumerId(self.connection),
            tag: ConsumerTag::from(format!("mqtt-shared-{}", self.client_id)),
            ack_mode: AckMode::Manual,
            exclusivity: Exclusivity::Shared,
            priority: 0,
            inbox: self.inbox.clone(),
            prefetch: Credit::new(0),
            shared: Some(window),
        });
        let key = (self.vhost.name().clone(), path.to_owned());
        let exchange = ExchangeName::new(TOPIC_EXCHANGE);
        let binding_key = translate::binding_key(filter);
        // Bound once, by the group's first member: a durable queue's binding rewrites the
        // definitions file.
        let bound = queue.bindings().iter().any(|binding| binding.exchange == exchange && binding.key == binding_key);
        let joined = if bound {
            Ok(())
        } else {
            self.vhost.bind_queue(queue.name(), &exchange, binding_key.clone(), Table::new(), connection)
        }
        .and_then(|()| queue.add_consumer(consumer.clone()));
        if let Err(error) = joined {
            // Not a member (an AMQP client may hold the queue exclusively, say): a queue made
            // for this join goes again, and a binding it made is taken back.
            if created && !groups.contains_key(&key) {
                self.vhost.remove_queue(&queue);
            } else if !bound {
                let _ = self.vhost.unbind_queue(queue.name(), &exchange, binding_key, Table::new(), connection);
            }
            return Err(error);
        }
        groups.entry(key).or_default().insert(self.client_id.clone());
        drop(groups);
        self.shared.insert(path.to_owned(), SharedSubscription { queue, consumer, qos });
        Ok(())
    }

    /// Leaves a shared subscription; the group's queue goes with its last member.
    pub(crate) fn unsubscribe_shared(&mut self, path: &str) {
        if let Some(shared) = self.shared.remove(path) {
            shared.queue.remove_consumer(shared.consumer.id, &self.inbox);
            self.state.leave_groups(&self.vhost, &self.client_id, [path]);
        }
    }

    /// Stops consuming every shared queue, before unacknowledged deliveries go back.
    pub(crate) fn detach_shared(&mut self) {
        for shared in self.shared.values() {
            shared.queue.detach_consumer(shared.consumer.id, &self.inbox);
        }
    }

    /// After the deliveries went back: a session that ends with its connection leaves its
    /// groups (a persistent one stays a member, to rejoin), and the queues serve the members
    /// still connected.
    pub(crate) fn release_shared(&mut self) {
        let shared = std::mem::take(&mut self.shared);
        if self.ends_with_connection {
            self.state.leave_groups(&self.vhost, &self.client_id, shared.keys().map(String::as_str));
        }
        for shared in shared.values().filter(|shared| shared.queue.consumer_count() > 0) {
            shared.queue.dispatch();
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
