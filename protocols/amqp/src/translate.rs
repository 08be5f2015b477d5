//! Pure functions between AMQP's forms and the core's.

use warren_core::name::ConnectionId;
use warren_core::queue::{Durability, QueueOptions};
use warren_core::topic::BindingKey;
use warren_core::value::Table;

use crate::error::{code, Close};

/// Parses an AMQP binding key: words separated by `.`, with `*` for one word and `#` for any
/// number (the core's canonical form).
pub fn binding_key(text: &str) -> BindingKey {
    BindingKey::parse(text)
}

pub fn durability(durable: bool) -> Durability {
    if durable {
        Durability::Durable
    } else {
        Durability::Transient
    }
}

/// A consumer's `x-priority` argument: any integer; 0 if absent.
pub fn consumer_priority(arguments: &Table) -> Result<i32, Close> {
    match arguments.get("x-priority") {
        None => Ok(0),
        Some(value) => value
            .as_i64()
            .and_then(|priority| i32::try_from(priority).ok())
            .ok_or_else(|| Close::channel(code::PRECONDITION_FAILED, "invalid arg 'x-priority': must be an integer")),
    }
}

/// Queue options from queue.declare's flags.
pub fn queue_options(
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: Table,
    connection: ConnectionId,
) -> QueueOptions {
    QueueOptions {
        durability: durability(durable),
        exclusive_owner: exclusive.then_some(connection),
        auto_delete,
        arguments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::topic::Segment;

    #[test]
    fn binding_keys_keep_their_text() {
        for text in ["", "a", "a.b", "*.b.#", "#", "a..b"] {
            assert_eq!(binding_key(text).as_str(), text);
        }
        assert_eq!(binding_key("a.*.#").segments(), &[Segment::Literal("a".into()), Segment::Star, Segment::Hash]);
    }
}
