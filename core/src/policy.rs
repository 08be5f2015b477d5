//! Policies: operator-set argument defaults, matched to queues and exchanges by a name pattern.
//!
//! As in RabbitMQ, at most one policy applies to an entity: the highest-priority one whose
//! pattern (a regular expression, searched anywhere in the name) matches and whose `apply_to`
//! covers it. Setting or clearing a policy re-applies policies to every existing entity of the
//! vhost, so nothing needs to be redeclared.

use regex::Regex;

use crate::error::{Error, Result};
use crate::name::QueueName;
use crate::queue::QueueArguments;
use crate::value::{Table, Value};

/// Which entities a policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn from_name(name: &str) -> Option<ApplyTo> {
        match name {
            "queues" => Some(ApplyTo::Queues),
            "exchanges" => Some(ApplyTo::Exchanges),
            "all" => Some(ApplyTo::All),
            _ => None,
        }
    }
}

/// A policy's definition keys and the queue argument each one sets.
const QUEUE_KEYS: [(&str, &str); 8] = [
    ("message-ttl", "x-message-ttl"),
    ("expires", "x-expires"),
    ("max-length", "x-max-length"),
    ("max-length-bytes", "x-max-length-bytes"),
    ("overflow", "x-overflow"),
    ("dead-letter-exchange", "x-dead-letter-exchange"),
    ("dead-letter-routing-key", "x-dead-letter-routing-key"),
    ("queue-mode", "x-queue-mode"),
];

/// The definition key that applies to exchanges.
pub const ALTERNATE_EXCHANGE: &str = "alternate-exchange";

#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pattern: Regex,
    pub apply_to: ApplyTo,
    pub priority: i32,
    pub definition: Table,
    /// The definition as queue arguments (`x-` names), checked when the policy is set.
    queue_arguments: Table,
}

impl Policy {
    /// Builds a policy, checking its pattern and every definition key and value.
    pub fn new(name: &str, pattern: &str, apply_to: ApplyTo, priority: i32, definition: Table) -> Result<Policy> {
        let invalid = |reason: String| Error::InvalidPolicy { policy: name.to_owned(), reason };
        let pattern = Regex::new(pattern).map_err(|error| invalid(format!("pattern: {error}")))?;
        if definition.is_empty() {
            return Err(invalid("empty definition".into()));
        }
        let mut queue_arguments = Table::new();
        for (key, value) in definition.iter() {
            match QUEUE_KEYS.iter().find(|(policy_key, _)| *policy_key == key) {
                Some((_, argument)) => queue_arguments.insert(*argument, value.clone()),
                None if key == ALTERNATE_EXCHANGE && value.as_str().is_some() => {}
                None => return Err(invalid(format!("unknown or invalid definition key '{key}'"))),
            }
        }
        QueueArguments::parse(&QueueName::new(name), &queue_arguments).map_err(|error| invalid(error.to_string()))?;
        Ok(Policy { name: name.to_owned(), pattern, apply_to, priority, definition, queue_arguments })
    }

    pub fn pattern(&self) -> &str {
        self.pattern.as_str()
    }

    fn matches(&self, name: &str, kind: ApplyTo) -> bool {
        (self.apply_to == ApplyTo::All || self.apply_to == kind) && self.pattern.is_match(name)
    }

    /// The alternate exchange this policy sets, if any.
    pub fn alternate_exchange(&self) -> Option<&str> {
        self.definition.get(ALTERNATE_EXCHANGE).and_then(Value::as_str)
    }
}

/// The policy that applies to an entity: the highest priority among the matching ones (the
/// first set wins a tie).
pub fn select<'a>(policies: &'a [Policy], name: &str, kind: ApplyTo) -> Option<&'a Policy> {
    policies.iter().filter(|policy| policy.matches(name, kind)).fold(None, |best: Option<&Policy>, policy| match best {
        Some(best) if best.priority >= policy.priority => Some(best),
        _ => Some(policy),
    })
}

/// A queue's effective arguments: its own, with the policy's filling the gaps. Where both set
/// a limit (TTL, expiry, lengths) the lower one applies, as RabbitMQ does; otherwise the
/// queue's own argument wins.
pub fn effective_queue_arguments(declared: &QueueArguments, policy: Option<&Policy>) -> QueueArguments {
    let Some(policy) = policy else { return declared.clone() };
    let from_policy = QueueArguments::parse(&QueueName::new(&policy.name), &policy.queue_arguments)
        .expect("policy arguments were checked when it was set");
    let lower = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let lower_duration = |a: Option<std::time::Duration>, b: Option<std::time::Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    QueueArguments {
        message_ttl: lower_duration(declared.message_ttl, from_policy.message_ttl),
        expires: lower_duration(declared.expires, from_policy.expires),
        max_length: lower(declared.max_length, from_policy.max_length),
        max_length_bytes: lower(declared.max_length_bytes, from_policy.max_length_bytes),
        overflow: if declared.overflow_set { declared.overflow } else { from_policy.overflow },
        overflow_set: declared.overflow_set || from_policy.overflow_set,
        dead_letter_exchange: declared.dead_letter_exchange.clone().or(from_policy.dead_letter_exchange),
        dead_letter_routing_key: declared.dead_letter_routing_key.clone().or(from_policy.dead_letter_routing_key),
        max_priority: declared.max_priority,
        single_active_consumer: declared.single_active_consumer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(entries: Vec<(&str, Value)>) -> Table {
        Table(entries.into_iter().map(|(key, value)| (key.to_owned(), value)).collect())
    }

    #[test]
    fn highest_priority_match_wins() {
        let ttl = definition(vec![("message-ttl", Value::I64(1000))]);
        let low = Policy::new("low", "^orders", ApplyTo::Queues, 1, ttl.clone()).expect("valid");
        let high = Policy::new("high", "^orders\\.eu", ApplyTo::All, 5, ttl.clone()).expect("valid");
        let exchanges = Policy::new("ex", ".*", ApplyTo::Exchanges, 9, ttl).expect("valid");
        let policies = vec![low, high, exchanges];
        assert_eq!(select(&policies, "orders.eu.1", ApplyTo::Queues).map(|p| p.name.as_str()), Some("high"));
        assert_eq!(select(&policies, "orders.us", ApplyTo::Queues).map(|p| p.name.as_str()), Some("low"));
        assert_eq!(select(&policies, "billing", ApplyTo::Queues).map(|p| p.name.as_str()), None);
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(Policy::new("p", "(", ApplyTo::All, 0, definition(vec![("message-ttl", Value::I64(1))])).is_err());
        assert!(Policy::new("p", ".*", ApplyTo::All, 0, definition(vec![("message-ttl", Value::I64(-1))])).is_err());
        assert!(Policy::new("p", ".*", ApplyTo::All, 0, definition(vec![("colour", Value::I64(1))])).is_err());
        assert!(Policy::new("p", ".*", ApplyTo::All, 0, Table::new()).is_err());
    }

    #[test]
    fn limits_take_the_lower_value_and_arguments_win_otherwise() {
        let policy = Policy::new(
            "p",
            ".*",
            ApplyTo::Queues,
            0,
            definition(vec![
                ("max-length", Value::I64(5)),
                ("dead-letter-exchange", Value::string("policy-dlx")),
                ("message-ttl", Value::I64(100)),
            ]),
        )
        .expect("valid");
        let declared =
            QueueArguments { max_length: Some(10), dead_letter_exchange: Some("own-dlx".into()), ..Default::default() };
        let effective = effective_queue_arguments(&declared, Some(&policy));
        assert_eq!(effective.max_length, Some(5));
        assert_eq!(effective.dead_letter_exchange, Some("own-dlx".into()));
        assert_eq!(effective.message_ttl, Some(std::time::Duration::from_millis(100)));
    }
}
