//! Dead-lettering: the message a queue republishes to its dead-letter exchange, with the
//! `x-death` history RabbitMQ writes, and the rule that breaks dead-letter cycles.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::Message;
use crate::name::{ExchangeName, QueueName};
use crate::topic::RoutingKey;
use crate::value::{Table, Value};

/// Why a message died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// It was dropped or refused by a length limit.
    MaxLength,
}

impl DeathReason {
    pub fn name(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLength => "maxlen",
        }
    }
}

/// Where a dead message goes.
pub(crate) struct DeadLetterTarget<'a> {
    pub queue: &'a QueueName,
    pub exchange: &'a ExchangeName,
    pub routing_key: Option<&'a RoutingKey>,
}

/// Builds the message to republish: same body and properties, minus the per-message TTL (kept
/// as `original-expiration` so it cannot expire again at once), with this death recorded first
/// in `x-death`. A death for the same queue and reason increments that entry's count and moves
/// it to the front. `x-first-death-*` headers are set once.
pub(crate) fn republish(message: &Message, reason: DeathReason, target: &DeadLetterTarget<'_>) -> Message {
    let mut properties = message.properties.clone();
    let original_expiration = properties.expiration.take();
    let mut headers = properties.headers.take().unwrap_or_default();
    let mut deaths = match headers.get("x-death") {
        Some(Value::Array(deaths)) => deaths.clone(),
        _ => Vec::new(),
    };
    let existing = deaths.iter().position(|death| death_is(death, target.queue, reason));
    let entry = match existing {
        Some(index) => {
            let mut entry = deaths.remove(index);
            if let Value::Table(table) = &mut entry {
                let count = table.get("count").and_then(Value::as_i64).unwrap_or(0);
                table.insert("count", Value::I64(count.saturating_add(1)));
            }
            entry
        }
        None => Value::Table(new_death(message, reason, target.queue, original_expiration)),
    };
    deaths.insert(0, entry);
    headers.insert("x-death", Value::Array(deaths));
    for (header, value) in [
        ("x-first-death-reason", reason.name()),
        ("x-first-death-queue", target.queue.as_str()),
        ("x-first-death-exchange", message.exchange.as_str()),
    ] {
        if headers.get(header).is_none() {
            headers.insert(header, Value::string(value));
        }
    }
    properties.headers = Some(headers);
    Message {
        exchange: target.exchange.clone(),
        routing_key: target.routing_key.cloned().unwrap_or_else(|| message.routing_key.clone()),
        properties,
        body: message.body.clone(),
        journal: None,
    }
}

fn new_death(message: &Message, reason: DeathReason, queue: &QueueName, original_expiration: Option<String>) -> Table {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let mut death = Table::new();
    death.insert("count", Value::I64(1));
    death.insert("reason", Value::string(reason.name()));
    death.insert("queue", Value::string(queue.as_str()));
    death.insert("time", Value::Timestamp(now));
    death.insert("exchange", Value::string(message.exchange.as_str()));
    let key = Value::LongString(Bytes::copy_from_slice(message.routing_key.as_str().as_bytes()));
    death.insert("routing-keys", Value::Array(vec![key]));
    if let Some(expiration) = original_expiration {
        death.insert("original-expiration", Value::string(&expiration));
    }
    death
}

fn death_is(death: &Value, queue: &QueueName, reason: DeathReason) -> bool {
    let Value::Table(table) = death else {
        return false;
    };
    table.get("queue").and_then(Value::as_str) == Some(queue.as_str())
        && table.get("reason").and_then(Value::as_str) == Some(reason.name())
}

/// RabbitMQ's cycle rule: a dead message is dropped rather than delivered to `queue` if it
/// already died in `queue` and no death since then (that one included) was a rejection. A
/// rejection means a consumer saw the message, so the loop is progressing under its control.
pub(crate) fn is_cycle(message: &Message, queue: &QueueName) -> bool {
    let Some(Value::Array(deaths)) = message.properties.headers.as_ref().and_then(|headers| headers.get("x-death"))
    else {
        return false;
    };
    let died_here = |death: &Value| match death {
        Value::Table(table) => table.get("queue").and_then(Value::as_str) == Some(queue.as_str()),
        _ => false,
    };
    let rejected = |death: &Value| match death {
        Value::Table(table) => table.get("reason").and_then(Value::as_str) == Some(DeathReason::Rejected.name()),
        _ => false,
    };
    match deaths.iter().position(died_here) {
        Some(index) => !deaths[..=index].iter().any(rejected),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::Properties;

    fn message() -> Message {
        Message {
            exchange: ExchangeName::new("orders"),
            routing_key: RoutingKey::new("order.created"),
            properties: Properties { expiration: Some("100".into()), ..Default::default() },
            body: Bytes::from_static(b"body"),
            journal: None,
        }
    }

    fn death_field<'a>(message: &'a Message, index: usize, field: &str) -> &'a Value {
        let Some(Value::Array(deaths)) = message.properties.headers.as_ref().and_then(|h| h.get("x-death")) else {
            panic!("no x-death")
        };
        let Value::Table(table) = &deaths[index] else { panic!("death is not a table") };
        table.get(field).expect("field present")
    }

    #[test]
    fn first_death_records_everything() {
        let queue = QueueName::new("work");
        let exchange = ExchangeName::new("dlx");
        let target = DeadLetterTarget { queue: &queue, exchange: &exchange, routing_key: None };
        let dead = republish(&message(), DeathReason::Expired, &target);
        assert_eq!(dead.exchange, exchange);
        assert_eq!(dead.routing_key, RoutingKey::new("order.created"));
        assert_eq!(dead.properties.expiration, None);
        assert_eq!(death_field(&dead, 0, "count"), &Value::I64(1));
        assert_eq!(death_field(&dead, 0, "reason").as_str(), Some("expired"));
        assert_eq!(death_field(&dead, 0, "queue").as_str(), Some("work"));
        assert_eq!(death_field(&dead, 0, "exchange").as_str(), Some("orders"));
        assert_eq!(death_field(&dead, 0, "original-expiration").as_str(), Some("100"));
        let headers = dead.properties.headers.as_ref().expect("headers");
        assert_eq!(headers.get("x-first-death-reason").and_then(Value::as_str), Some("expired"));
    }

    #[test]
    fn repeated_death_increments_and_cycles_are_detected() {
        let work = QueueName::new("work");
        let retry = QueueName::new("retry");
        let exchange = ExchangeName::new("dlx");
        let to_retry = DeadLetterTarget { queue: &work, exchange: &exchange, routing_key: None };
        let once = republish(&message(), DeathReason::Expired, &to_retry);
        assert!(is_cycle(&once, &work), "expired twice in the same queue without a rejection");
        assert!(!is_cycle(&once, &retry));
        let back = DeadLetterTarget { queue: &retry, exchange: &exchange, routing_key: None };
        let twice = republish(&once, DeathReason::Expired, &back);
        let thrice = republish(&twice, DeathReason::Rejected, &to_retry);
        assert_eq!(death_field(&thrice, 0, "reason").as_str(), Some("rejected"));
        assert!(!is_cycle(&thrice, &work), "a rejection in the loop means it is consumer-driven");
        let again = republish(&thrice, DeathReason::Rejected, &to_retry);
        assert_eq!(death_field(&again, 0, "count"), &Value::I64(2));
    }
}
