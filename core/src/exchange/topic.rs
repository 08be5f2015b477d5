//! The topic exchange: binding keys with `*` and `#` wildcards, matched by the word trie.

use super::{Binding, Destination};
use crate::message::Message;
use crate::topic::TopicTrie;

/// Routing keys longer than this many words are matched by splitting on the heap; shorter ones
/// use the stack buffer. Real topic keys rarely pass a dozen words.
const WORDS_INLINE: usize = 16;

#[derive(Debug, Default)]
pub(super) struct TopicRouter {
    trie: TopicTrie<Destination>,
}

impl TopicRouter {
    pub(super) fn route(&self, message: &Message, found: &mut dyn FnMut(&Destination)) {
        let words = message.routing_key.words();
        let mut inline: [&str; WORDS_INLINE] = [""; WORDS_INLINE];
        let mut count = 0;
        for word in words.clone() {
            if count == WORDS_INLINE {
                let all: Vec<&str> = words.collect();
                self.trie.for_each_match(&all, found);
                return;
            }
            inline[count] = word;
            count += 1;
        }
        self.trie.for_each_match(&inline[..count], found);
    }

    pub(super) fn bind(&mut self, binding: &Binding) {
        self.trie.insert(binding.key.segments(), binding.destination.clone());
    }

    pub(super) fn unbind(&mut self, binding: &Binding) {
        self.trie.remove(binding.key.segments(), &binding.destination);
    }
}
