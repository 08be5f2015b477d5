//! The fanout exchange: a message goes to every bound queue, whatever its key.

use super::{Binding, Destination};

#[derive(Debug, Default)]
pub(super) struct FanoutRouter {
    queues: Vec<Destination>,
}

impl FanoutRouter {
    pub(super) fn route(&self, found: &mut dyn FnMut(&Destination)) {
        self.queues.iter().for_each(found);
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.queues.push(binding.destination.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        if let Some(index) = self.queues.iter().position(|queue| *queue == binding.destination) {
            self.queues.swap_remove(index);
        }
    }
}
