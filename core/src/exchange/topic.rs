//! The topic exchange: binding keys with `*` and `#` wildcards, matched by the word trie.

use std::sync::Arc;

use super::{Binding, QueueRef};
use crate::message::Message;
use crate::queue::Queue;
use crate::topic::TopicTrie;

/// Routing keys longer than this many words are matched by splitting on the heap; shorter ones
/// use the stack buffer. Real topic keys rarely pass a dozen words.
const WORDS_INLINE: usize = 16;

#[derive(Debug, Default)]
pub(super) struct TopicRouter {
    trie: TopicTrie<QueueRef>,
}

impl TopicRouter {
    pub(super) fn route(&self, message: &Message, out: &mut Vec<Arc<Queue>>) {
        let mut push = |queue: &QueueRef| out.push(queue.0.clone());
        let words = message.routing_key.words();
        let mut inline: [&str; WORDS_INLINE] = [""; WORDS_INLINE];
        let mut count = 0;
        for word in words.clone() {
            if count == WORDS_INLINE {
                let all: Vec<&str> = words.collect();
                self.trie.for_each_match(&all, &mut push);
                return;
            }
            inline[count] = word;
            count += 1;
        }
        self.trie.for_each_match(&inline[..count], &mut push);
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.trie
            .insert(binding.key.segments(), binding.queue.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        self.trie.remove(binding.key.segments(), &binding.queue);
    }
}
