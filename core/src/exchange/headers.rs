//! The headers exchange: a message goes to queues whose binding arguments match its headers,
//! all of them (`x-match: all`, the default) or any one (`x-match: any`). Arguments whose name
//! starts with `x-` take no part in matching, unless the mode is `all-with-x` or `any-with-x`.
//! A binding argument of type void matches any header of that name.

use super::{Binding, Destination};
use crate::message::Message;
use crate::value::{Table, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

#[derive(Debug)]
struct HeadersBinding {
    destination: Destination,
    mode: MatchMode,
    /// The binding's own arguments, less the `x-` ones.
    required: Table,
    arguments: Table,
}

#[derive(Debug, Default)]
pub(super) struct HeadersRouter {
    bindings: Vec<HeadersBinding>,
}

impl HeadersRouter {
    pub(super) fn route(&self, message: &Message, found: &mut dyn FnMut(&Destination)) {
        let empty = Table::new();
        let headers = message.properties.headers.as_ref().unwrap_or(&empty);
        for binding in &self.bindings {
            if matches(binding, headers) {
                found(&binding.destination);
            }
        }
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        let mode = match binding.arguments.get("x-match").and_then(Value::as_str) {
            Some("any") => MatchMode::Any,
            Some("all-with-x") => MatchMode::AllWithX,
            Some("any-with-x") => MatchMode::AnyWithX,
            _ => MatchMode::All,
        };
        let with_x = matches!(mode, MatchMode::AllWithX | MatchMode::AnyWithX);
        let required = Table(
            binding
                .arguments
                .iter()
                .filter(|(name, _)| *name != "x-match" && (with_x || !name.starts_with("x-")))
                .map(|(name, value)| (name.to_owned(), value.clone()))
                .collect(),
        );
        self.bindings.push(HeadersBinding {
            destination: binding.destination.clone(),
            mode,
            required,
            arguments: binding.arguments.clone(),
        });
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        if let Some(index) = self.bindings.iter().position(|existing| {
            existing.destination == binding.destination && existing.arguments.same_entries(&binding.arguments)
        }) {
            self.bindings.swap_remove(index);
        }
    }
}

fn matches(binding: &HeadersBinding, headers: &Table) -> bool {
    let pair_matches = |(name, wanted): (&str, &Value)| match headers.get(name) {
        Some(_) if *wanted == Value::Void => true,
        Some(actual) => wanted.matches(actual),
        None => false,
    };
    match binding.mode {
        MatchMode::All | MatchMode::AllWithX => binding.required.iter().all(pair_matches),
        MatchMode::Any | MatchMode::AnyWithX => binding.required.iter().any(pair_matches),
    }
}
