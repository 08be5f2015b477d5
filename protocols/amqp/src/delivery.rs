//! Turning inbox items into basic.deliver (or basic.cancel) frames.

use tokio::time::Instant;
use warren_core::queue::{AckMode, InboxItem};
use warren_core::Delivery;

use crate::channel::Unacked;
use crate::codec::methods::basic;
use crate::codec::{self, Method};
use crate::connection::Connection;

/// Deliveries taken from the inbox per drain, and the output size at which draining stops until
/// the writer has taken what is there.
const DRAIN_BATCH: usize = 256;
const DRAIN_OUTPUT_BYTES_MAX: usize = 1024 * 1024;

impl Connection {
    /// Encodes deliveries from the inbox until it is empty or the output is large enough.
    pub(crate) fn drain_inbox(&mut self) {
        let mut items = Vec::with_capacity(DRAIN_BATCH);
        let now = Instant::now();
        while self.out.len() < DRAIN_OUTPUT_BYTES_MAX {
            items.clear();
            if self.inbox.drain_into(&mut items, DRAIN_BATCH) == 0 {
                break;
            }
            for item in items.drain(..) {
                match item {
                    InboxItem::Delivery(delivery) => self.deliver(delivery, now),
                    InboxItem::Cancelled(consumer) => self.consumer_cancelled(consumer),
                }
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery, now: Instant) {
        let Some((channel_id, tag)) = self.consumers.get(&delivery.consumer.id).cloned() else {
            // The consumer was cancelled while this was in flight: give it back.
            return requeue_orphan(delivery);
        };
        let channel = self.channels.get_mut(&channel_id).expect("consumers belong to live channels");
        if !channel.consumers.contains_key(&tag) {
            return requeue_orphan(delivery);
        }
        let consumer = delivery.consumer.clone();
        let delivery_tag = channel.next_delivery_tag();
        let method = Method::BasicDeliver(basic::Deliver {
            consumer_tag: tag.to_string(),
            delivery_tag,
            redelivered: delivery.redelivered,
            exchange: delivery.message.exchange.to_string(),
            routing_key: delivery.message.routing_key.to_string(),
        });
        let message = &delivery.message;
        codec::encode_content(
            &mut self.out,
            channel_id,
            &method,
            &message.properties,
            &message.body,
            self.frame_bytes_max,
        );
        if consumer.ack_mode == AckMode::Auto {
            delivery.queue.acked([&delivery.message]);
        } else {
            channel.unacked.push_back(Unacked {
                delivery_tag,
                queue: delivery.queue,
                sequence: delivery.sequence,
                message: delivery.message,
                consumer: Some(consumer),
                delivered_at: now,
                expires_at: delivery.expires_at,
            });
        }
    }

    /// The broker cancelled a consumer (its queue was deleted): tell the client if it listens.
    fn consumer_cancelled(&mut self, consumer: warren_core::name::ConsumerId) {
        let Some((channel_id, tag)) = self.consumers.remove(&consumer) else {
            return;
        };
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel.consumers.remove(&tag);
        }
        if self.cancel_notify {
            let cancel = basic::Cancel { consumer_tag: tag.to_string(), nowait: true };
            self.send(channel_id, Method::BasicCancel(cancel));
        }
    }

    /// Requeues deliveries left in the inbox when the connection goes.
    pub(crate) fn requeue_inbox(&mut self) {
        self.inbox.return_undelivered();
    }
}

/// Gives a delivery that never reached its consumer back to its queue.
fn requeue_orphan(delivery: Delivery) {
    delivery.return_to_queue();
}
