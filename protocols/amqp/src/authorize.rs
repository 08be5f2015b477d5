//! Which permissions each channel method needs, as RabbitMQ's channel checks them: a pure
//! mapping, so the connection can ask (and await) every check before the method runs.

use warren_core::auth::{Permission, ResourceKind};
use warren_core::name::QueueName;
use warren_core::vhost::REPLY_TO;

use crate::codec::Method;

/// What every server-generated queue name starts with (`Vhost::generate_queue_name`).
const GENERATED_QUEUE_PREFIX: &str = "amq.gen-";

/// A permission a method needs.
pub type Check = (ResourceKind, String, Permission);

/// The checks `method` needs. `last_queue` stands in for an empty queue name (the channel's last
/// declared queue). A server-named queue is checked as `amq.gen-`, the prefix every generated
/// name has (RabbitMQ checks the whole generated name, so a pattern such as `^amq\.gen-` grants
/// both). An alternate or dead-letter exchange named in the arguments needs write on it and read
/// on what is declared, as in RabbitMQ: otherwise it would be a way to publish where the user
/// may not.
pub fn required(method: &Method, last_queue: Option<&QueueName>) -> Vec<Check> {
    use Permission::{Configure, Read, Write};
    use ResourceKind::{Exchange, Queue};
    let queue = |name: &str| -> String {
        if name.is_empty() {
            last_queue.map_or_else(String::new, |queue| queue.as_str().to_owned())
        } else {
            name.to_owned()
        }
    };
    match method {
        Method::ExchangeDeclare(declare) if !declare.passive => {
            let mut checks = vec![(Exchange, declare.exchange.clone(), Configure)];
            if let Some(alternate) = declare.arguments.get("alternate-exchange").and_then(|value| value.as_str()) {
                checks.push((Exchange, declare.exchange.clone(), Read));
                checks.push((Exchange, alternate.to_owned(), Write));
            }
            checks
        }
        Method::ExchangeDelete(delete) => vec![(Exchange, delete.exchange.clone(), Configure)],
        Method::ExchangeBind(bind) => {
            vec![(Exchange, bind.destination.clone(), Write), (Exchange, bind.source.clone(), Read)]
        }
        Method::ExchangeUnbind(unbind) => {
            vec![(Exchange, unbind.destination.clone(), Write), (Exchange, unbind.source.clone(), Read)]
        }
        Method::QueueDeclare(declare) if !declare.passive => {
            let name = if declare.queue.is_empty() { GENERATED_QUEUE_PREFIX.to_owned() } else { declare.queue.clone() };
            let mut checks = vec![(Queue, name.clone(), Configure)];
            if let Some(dead_letter) = declare.arguments.get("x-dead-letter-exchange").and_then(|value| value.as_str())
            {
                checks.push((Queue, name, Read));
                checks.push((Exchange, dead_letter.to_owned(), Write));
            }
            checks
        }
        Method::QueueDelete(delete) => vec![(Queue, queue(&delete.queue), Configure)],
        Method::QueuePurge(purge) => vec![(Queue, queue(&purge.queue), Read)],
        Method::QueueBind(bind) => vec![(Queue, queue(&bind.queue), Write), (Exchange, bind.exchange.clone(), Read)],
        Method::QueueUnbind(unbind) => {
            vec![(Queue, queue(&unbind.queue), Write), (Exchange, unbind.exchange.clone(), Read)]
        }
        // Direct reply-to's pseudo-queue is every consumer's own, as in RabbitMQ.
        Method::BasicConsume(consume) if consume.queue == REPLY_TO => Vec::new(),
        Method::BasicConsume(consume) => vec![(Queue, queue(&consume.queue), Read)],
        Method::BasicGet(get) => vec![(Queue, queue(&get.queue), Read)],
        Method::BasicPublish(publish) => vec![(Exchange, publish.exchange.clone(), Write)],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::methods::{basic, queue};

    #[test]
    fn bindings_need_write_on_the_queue_and_read_on_the_exchange() {
        let bind = Method::QueueBind(queue::Bind {
            queue: String::new(),
            exchange: "logs".into(),
            routing_key: "#".into(),
            ..Default::default()
        });
        let last = QueueName::new("mine");
        assert_eq!(
            required(&bind, Some(&last)),
            vec![
                (ResourceKind::Queue, "mine".into(), Permission::Write),
                (ResourceKind::Exchange, "logs".into(), Permission::Read)
            ]
        );
        let publish = Method::BasicPublish(basic::Publish { exchange: String::new(), ..Default::default() });
        assert_eq!(required(&publish, None), vec![(ResourceKind::Exchange, String::new(), Permission::Write)]);
    }
}
