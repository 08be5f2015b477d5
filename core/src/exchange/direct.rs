//! The direct exchange: a message goes to the queues bound with exactly its routing key.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Binding, Destination};
use crate::message::Message;

#[derive(Debug, Default)]
pub(super) struct DirectRouter {
    by_key: HashMap<Arc<str>, Vec<Destination>>,
}

impl DirectRouter {
    pub(super) fn route(&self, message: &Message, found: &mut dyn FnMut(&Destination)) {
        if let Some(queues) = self.by_key.get(message.routing_key.as_str()) {
            queues.iter().for_each(found);
        }
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.by_key.entry(Arc::from(binding.key.as_str())).or_default().push(binding.destination.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        let key = binding.key.as_str();
        if let Some(queues) = self.by_key.get_mut(key) {
            if let Some(index) = queues.iter().position(|queue| *queue == binding.destination) {
                queues.swap_remove(index);
            }
            if queues.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}
