//! MQTT topics ⇄ the core's routing and binding keys, following RabbitMQ's MQTT plugin.
//!
//! MQTT separates levels with `/`, the core with `.`. As RabbitMQ does, the two characters are
//! swapped both ways: `a/b` is routing key `a.b`, and a level containing a dot, `v1.2/x`, becomes
//! `v1/2.x` (two words). The swap is its own inverse, so a message published over MQTT reaches
//! MQTT subscribers with its topic unchanged, and AMQP peers see the dotted form they expect.

use warren_core::topic::{BindingKey, RoutingKey, Segment};

/// Swaps `/` and `.`.
fn swap_separators(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '/' => '.',
            '.' => '/',
            other => other,
        })
        .collect()
}

/// The routing key of a topic.
pub fn routing_key(topic: &str) -> RoutingKey {
    RoutingKey::new(&swap_separators(topic))
}

/// The topic of a routing key.
pub fn topic(routing_key: &RoutingKey) -> String {
    swap_separators(routing_key.as_str())
}

/// The binding key of a topic filter: `+` is one word, `#` the rest.
pub fn binding_key(filter: &str) -> BindingKey {
    let segments = filter
        .split('/')
        .map(|level| match level {
            "+" => Segment::Star,
            "#" => Segment::Hash,
            literal => Segment::Literal(literal.replace('.', "/").into()),
        })
        .collect();
    BindingKey::from_segments(segments)
}

/// The topic filter a binding key was made from (the reverse of `binding_key`).
pub fn filter_of(key: &BindingKey) -> String {
    let levels: Vec<String> = key
        .segments()
        .iter()
        .map(|segment| match segment {
            Segment::Star => "+".to_owned(),
            Segment::Hash => "#".to_owned(),
            Segment::Literal(word) => word.replace('/', "."),
        })
        .collect();
    levels.join("/")
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 section 4.7): `+` takes one level, a final `#`
/// the rest, the parent included (`a/#` matches `a`), and topics starting with `$` are not
/// matched by filters starting with a wildcard. Ours rather than mqttbytes': its `matches`
/// slices the topic's first byte and panics on a multi-byte first character.
pub fn topic_matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match (level, topic_levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (literal, Some(actual)) if literal == actual => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_keys_swap_separators() {
        assert_eq!(routing_key("sensors/kitchen/temp").as_str(), "sensors.kitchen.temp");
        assert_eq!(topic(&RoutingKey::new("sensors.kitchen.temp")), "sensors/kitchen/temp");
        assert_eq!(routing_key("v1.2/x").as_str(), "v1/2.x");
        assert_eq!(topic(&routing_key("v1.2/x")), "v1.2/x");
    }

    #[test]
    fn topics_match_filters_as_mqtt_defines() {
        for (topic, filter, expected) in [
            ("a/b", "a/b", true),
            ("a/b", "a/+", true),
            ("a", "a/#", true),
            ("a/b/c", "a/#", true),
            ("a/b/c", "a/+", false),
            ("a//c", "a/+/c", true),
            ("$SYS/x", "#", false),
            ("$SYS/x", "$SYS/#", true),
            ("é/x", "#", true),
            ("ü/x", "ü/+", true),
            ("b", "a/#", false),
        ] {
            assert_eq!(topic_matches(topic, filter), expected, "{topic} against {filter}");
        }
    }

    #[test]
    fn filters_come_back_from_stored_binding_keys() {
        // As a persistent session's subscriptions are read back after a restart: the binding
        // key's stored text is parsed again, then turned back into a filter.
        for filter in ["a/b", "a/+/c", "a/#", "#", "+", "v1.2/x", "a//b", "/a", "a/"] {
            let stored = BindingKey::parse(binding_key(filter).as_str());
            assert_eq!(filter_of(&stored), filter, "{filter}");
        }
    }

    #[test]
    fn filters_become_binding_keys() {
        assert_eq!(binding_key("sensors/+/temp").as_str(), "sensors.*.temp");
        assert_eq!(binding_key("sensors/#").as_str(), "sensors.#");
        assert_eq!(binding_key("#").segments(), &[Segment::Hash]);
    }
}
