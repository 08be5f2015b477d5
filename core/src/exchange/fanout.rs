//! The fanout exchange: a message goes to every bound queue, whatever its key.

use std::sync::Arc;

use super::{Binding, QueueRef};
use crate::queue::Queue;

#[derive(Debug, Default)]
pub(super) struct FanoutRouter {
    queues: Vec<QueueRef>,
}

impl FanoutRouter {
    pub(super) fn route(&self, out: &mut Vec<Arc<Queue>>) {
        out.extend(self.queues.iter().map(|queue| queue.0.clone()));
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.queues.push(binding.queue.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        if let Some(index) = self.queues.iter().position(|queue| *queue == binding.queue) {
            self.queues.swap_remove(index);
        }
    }
}
