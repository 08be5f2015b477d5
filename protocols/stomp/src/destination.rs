//! STOMP destinations, as RabbitMQ's STOMP plugin defines them.
//!
//! | destination | SEND goes to | SUBSCRIBE reads |
//! |---|---|---|
//! | `/queue/q` | the default exchange, key `q` (queue `q` declared durable on demand) | queue `q` |
//! | `/amq/queue/q` | the default exchange, key `q` (the queue must exist) | existing queue `q` |
//! | `/topic/k` | `amq.topic`, key `k` | a private queue bound to `amq.topic` with `k` |
//! | `/exchange/x/k` | exchange `x`, key `k` | a private queue bound to `x` with `k` |
//! | `/temp-queue/t` | (as a reply-to) a private queue of the session | that queue |
//! | `/reply-queue/q` | the default exchange, key `q` (what a temp-queue reply-to becomes) | - |

use crate::codec::Frame;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Queue(String),
    AmqQueue(String),
    Topic(String),
    Exchange {
        exchange: String,
        key: String,
    },
    TempQueue(String),
    /// Where replies to a `/temp-queue/` reply-to go: an existing queue, never declared.
    ReplyQueue(String),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("'{destination}' is not a valid destination")]
pub struct InvalidDestination {
    pub destination: String,
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination, InvalidDestination> {
        let invalid = || InvalidDestination { destination: text.to_owned() };
        let non_empty = |name: &str| if name.is_empty() { Err(invalid()) } else { Ok(name.to_owned()) };
        if let Some(name) = text.strip_prefix("/queue/") {
            return non_empty(name).map(Destination::Queue);
        }
        if let Some(name) = text.strip_prefix("/amq/queue/") {
            return non_empty(name).map(Destination::AmqQueue);
        }
        if let Some(key) = text.strip_prefix("/topic/") {
            return non_empty(key).map(Destination::Topic);
        }
        if let Some(name) = text.strip_prefix("/temp-queue/") {
            return non_empty(name).map(Destination::TempQueue);
        }
        if let Some(name) = text.strip_prefix("/reply-queue/") {
            return non_empty(name).map(Destination::ReplyQueue);
        }
        if let Some(rest) = text.strip_prefix("/exchange/") {
            let (exchange, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(Destination::Exchange { exchange: non_empty(exchange)?, key: key.to_owned() });
        }
        Err(invalid())
    }

    /// The destination from a frame's `destination` header.
    pub fn of(frame: &Frame) -> Result<Destination, InvalidDestination> {
        Destination::parse(frame.header("destination").unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_destinations() {
        assert_eq!(Destination::parse("/queue/orders"), Ok(Destination::Queue("orders".into())));
        assert_eq!(Destination::parse("/amq/queue/x"), Ok(Destination::AmqQueue("x".into())));
        assert_eq!(Destination::parse("/topic/a.b"), Ok(Destination::Topic("a.b".into())));
        assert_eq!(
            Destination::parse("/exchange/logs/error.disk"),
            Ok(Destination::Exchange { exchange: "logs".into(), key: "error.disk".into() })
        );
        assert_eq!(
            Destination::parse("/exchange/fan"),
            Ok(Destination::Exchange { exchange: "fan".into(), key: String::new() })
        );
        assert_eq!(Destination::parse("/temp-queue/replies"), Ok(Destination::TempQueue("replies".into())));
        for bad in ["", "queue/x", "/queue/", "/topic/", "/exchange/", "/nowhere/x"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }
}
