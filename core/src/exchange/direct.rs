//! The direct exchange: a message goes to the queues bound with exactly its routing key.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Binding, QueueRef};
use crate::message::Message;
use crate::queue::Queue;

#[derive(Debug, Default)]
pub(super) struct DirectRouter {
    by_key: HashMap<Arc<str>, Vec<QueueRef>>,
}

impl DirectRouter {
    pub(super) fn route(&self, message: &Message, out: &mut Vec<Arc<Queue>>) {
        if let Some(queues) = self.by_key.get(message.routing_key.as_str()) {
            out.extend(queues.iter().map(|queue| queue.0.clone()));
        }
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.by_key
            .entry(Arc::from(binding.key.as_str()))
            .or_default()
            .push(binding.queue.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        let key = binding.key.as_str();
        if let Some(queues) = self.by_key.get_mut(key) {
            if let Some(index) = queues.iter().position(|queue| *queue == binding.queue) {
                queues.swap_remove(index);
            }
            if queues.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}
