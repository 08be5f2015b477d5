//! Queue arguments (`x-message-ttl`, `x-max-length`, dead-lettering, ...), parsed and checked
//! once at declare time so the hot path reads plain fields.

use std::time::Duration;

use crate::error::{EntityKind, Error, Result};
use crate::name::{ExchangeName, QueueName};
use crate::topic::RoutingKey;
use crate::value::{Table, Value};

/// What a queue does when a publish would take it past its length limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages to make room.
    #[default]
    DropHead,
    /// Refuse the new message; the publisher's confirm becomes a nack.
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDeadLetter,
}

/// The arguments a queue acts on. Unknown arguments stay in the declared table and are
/// otherwise ignored, as RabbitMQ does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueArguments {
    /// `x-message-ttl`: how long a message may wait in this queue.
    pub message_ttl: Option<Duration>,
    /// `x-expires`: how long the queue may go unused before it is deleted.
    pub expires: Option<Duration>,
    /// `x-max-length`: the most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: the most ready body bytes.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// Whether `x-overflow` was given (a policy may set it otherwise).
    pub overflow_set: bool,
    /// `x-dead-letter-exchange`: where dead messages are republished.
    pub dead_letter_exchange: Option<ExchangeName>,
    /// `x-dead-letter-routing-key`: the key they are republished with (else their own).
    pub dead_letter_routing_key: Option<RoutingKey>,
    /// `x-max-priority`: the highest message priority the queue orders by (at most 255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`: only one consumer at a time receives messages.
    pub single_active_consumer: bool,
}

impl QueueArguments {
    /// Parses and checks a declare's arguments.
    pub fn parse(queue: &QueueName, table: &Table) -> Result<QueueArguments> {
        let invalid = |argument: &str, reason: &'static str| Error::InvalidArgument {
            kind: EntityKind::Queue,
            name: queue.to_string(),
            argument: argument.to_owned(),
            reason,
        };
        let mut arguments = QueueArguments::default();
        for (name, value) in table.iter() {
            match name {
                "x-message-ttl" => {
                    let ms = non_negative(value, u64::from(u32::MAX))
                        .ok_or_else(|| invalid(name, "must be 0..2^32-1 milliseconds"))?;
                    arguments.message_ttl = Some(Duration::from_millis(ms));
                }
                "x-expires" => {
                    let ms = non_negative(value, u64::from(u32::MAX))
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| invalid(name, "must be 1..2^32-1 milliseconds"))?;
                    arguments.expires = Some(Duration::from_millis(ms));
                }
                "x-max-length" => {
                    arguments.max_length = Some(
                        non_negative(value, u64::MAX).ok_or_else(|| invalid(name, "must be a non-negative integer"))?,
                    );
                }
                "x-max-length-bytes" => {
                    arguments.max_length_bytes = Some(
                        non_negative(value, u64::MAX).ok_or_else(|| invalid(name, "must be a non-negative integer"))?,
                    );
                }
                "x-overflow" => {
                    arguments.overflow_set = true;
                    arguments.overflow = match value.as_str() {
                        Some("drop-head") => Overflow::DropHead,
                        Some("reject-publish") => Overflow::RejectPublish,
                        Some("reject-publish-dlx") => Overflow::RejectPublishDeadLetter,
                        _ => return Err(invalid(name, "must be drop-head, reject-publish or reject-publish-dlx")),
                    };
                }
                "x-dead-letter-exchange" => {
                    let exchange = value.as_str().ok_or_else(|| invalid(name, "must be a string"))?;
                    arguments.dead_letter_exchange = Some(ExchangeName::new(exchange));
                }
                "x-dead-letter-routing-key" => {
                    let key = value.as_str().ok_or_else(|| invalid(name, "must be a string"))?;
                    arguments.dead_letter_routing_key = Some(RoutingKey::new(key));
                }
                "x-single-active-consumer" => {
                    let Value::Bool(single) = value else { return Err(invalid(name, "must be a boolean")) };
                    arguments.single_active_consumer = *single;
                }
                "x-max-priority" => {
                    // 0 is accepted and means no priorities, as in RabbitMQ.
                    let max = non_negative(value, u64::from(u8::MAX)).ok_or_else(|| invalid(name, "must be 0..255"))?;
                    arguments.max_priority =
                        Some(u8::try_from(max).expect("checked at most 255")).filter(|max| *max > 0);
                }
                // Lazy mode is accepted for compatibility; every queue already keeps only what
                // it must in memory.
                "x-queue-mode" if !matches!(value.as_str(), Some("default" | "lazy")) => {
                    return Err(invalid(name, "must be default or lazy"));
                }
                _ => {}
            }
        }
        if arguments.dead_letter_routing_key.is_some() && arguments.dead_letter_exchange.is_none() {
            return Err(invalid("x-dead-letter-routing-key", "requires x-dead-letter-exchange"));
        }
        Ok(arguments)
    }

    /// Whether the queue needs its timer (message expiry or idle expiry).
    pub fn needs_timer(&self) -> bool {
        self.message_ttl.is_some() || self.expires.is_some()
    }
}

/// An integer argument in `0..=max`, whatever its wire width.
fn non_negative(value: &Value, max: u64) -> Option<u64> {
    let number = value.as_i64()?;
    u64::try_from(number).ok().filter(|number| *number <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: Vec<(&str, Value)>) -> Result<QueueArguments> {
        let table = Table(entries.into_iter().map(|(name, value)| (name.to_owned(), value)).collect());
        QueueArguments::parse(&QueueName::new("q"), &table)
    }

    #[test]
    fn parses_the_arguments_it_knows() {
        let arguments = parse(vec![
            ("x-message-ttl", Value::I32(500)),
            ("x-expires", Value::I64(1000)),
            ("x-max-length", Value::U8(3)),
            ("x-overflow", Value::string("reject-publish-dlx")),
            ("x-dead-letter-exchange", Value::string("dlx")),
            ("x-dead-letter-routing-key", Value::string("dead")),
            ("x-unknown", Value::Bool(true)),
        ])
        .expect("valid");
        assert_eq!(arguments.message_ttl, Some(Duration::from_millis(500)));
        assert_eq!(arguments.expires, Some(Duration::from_millis(1000)));
        assert_eq!(arguments.max_length, Some(3));
        assert_eq!(arguments.overflow, Overflow::RejectPublishDeadLetter);
        assert_eq!(arguments.dead_letter_exchange, Some(ExchangeName::new("dlx")));
    }

    #[test]
    fn refuses_invalid_values() {
        assert!(parse(vec![("x-message-ttl", Value::I32(-1))]).is_err());
        assert!(parse(vec![("x-message-ttl", Value::string("10"))]).is_err());
        assert!(parse(vec![("x-expires", Value::I32(0))]).is_err());
        assert!(parse(vec![("x-overflow", Value::string("explode"))]).is_err());
        assert!(parse(vec![("x-dead-letter-routing-key", Value::string("k"))]).is_err());
        assert!(parse(vec![("x-queue-mode", Value::string("eager"))]).is_err());
    }
}
