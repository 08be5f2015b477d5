//! Which permissions each frame needs, as RabbitMQ's STOMP plugin checks them: a pure mapping,
//! so the session can await every check before the frame runs.
//!
//! A SEND needs write on the exchange it goes through (`amq.default` for queues, `amq.topic` for
//! topics), and configure on a `/queue/` it declares. A SUBSCRIBE needs read on the queue it
//! reads, or on the exchange a subscription queue is bound to, and configure on a `/queue/` it
//! declares. A durable topic subscription's queue is named by the client (or derived from the
//! subscription id), so it needs configure, write and read like any named queue; a transient
//! one's private queue is server-named and not checked.

use warren_core::auth::{Permission, ResourceKind};

use crate::codec::Frame;
use crate::destination::Destination;

/// A permission a frame needs.
pub type Check = (ResourceKind, String, Permission);

const TOPIC_EXCHANGE: &str = "amq.topic";

/// The checks `frame` needs; none for a frame whose destination does not parse (the frame's
/// own handler reports that).
pub fn required(frame: &Frame) -> Vec<Check> {
    use Permission::{Configure, Read, Write};
    use ResourceKind::{Exchange, Queue};
    let Ok(destination) = Destination::of(frame) else { return Vec::new() };
    match (frame.command.as_str(), destination) {
        ("SEND", Destination::Queue(name)) => vec![(Queue, name, Configure), (Exchange, String::new(), Write)],
        ("SEND", Destination::AmqQueue(_) | Destination::TempQueue(_) | Destination::ReplyQueue(_)) => {
            vec![(Exchange, String::new(), Write)]
        }
        ("SEND", Destination::Topic(_)) => vec![(Exchange, TOPIC_EXCHANGE.into(), Write)],
        ("SEND", Destination::Exchange { exchange, .. }) => vec![(Exchange, exchange, Write)],
        ("SUBSCRIBE", Destination::Queue(name)) => vec![(Queue, name.clone(), Configure), (Queue, name, Read)],
        ("SUBSCRIBE", Destination::AmqQueue(name)) => vec![(Queue, name, Read)],
        ("SUBSCRIBE", destination @ (Destination::Topic(_) | Destination::Exchange { .. })) => {
            let exchange = match &destination {
                Destination::Exchange { exchange, .. } => exchange.clone(),
                _ => TOPIC_EXCHANGE.into(),
            };
            let mut checks = vec![(Exchange, exchange, Read)];
            let durable = frame.header("durable").or(frame.header("persistent")) == Some("true");
            if durable {
                let id = frame.header("id").or(frame.header("destination")).unwrap_or_default();
                let queue = crate::messaging::durable_queue_name(frame.header("x-queue-name"), &destination, id);
                let queue = queue.as_str().to_owned();
                checks.extend([(Queue, queue.clone(), Configure), (Queue, queue.clone(), Write), (Queue, queue, Read)]);
            }
            checks
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_and_subscriptions_map_to_rabbitmqs_permissions() {
        let send = Frame::new("SEND").with("destination", "/queue/orders");
        assert_eq!(
            required(&send),
            vec![
                (ResourceKind::Queue, "orders".into(), Permission::Configure),
                (ResourceKind::Exchange, String::new(), Permission::Write)
            ]
        );
        let subscribe = Frame::new("SUBSCRIBE").with("destination", "/topic/a.b");
        assert_eq!(required(&subscribe), vec![(ResourceKind::Exchange, "amq.topic".into(), Permission::Read)]);
        assert!(required(&Frame::new("ACK").with("id", "1")).is_empty());
    }
}
