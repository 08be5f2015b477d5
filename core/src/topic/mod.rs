//! Topic routing: routing keys as words, binding keys as segments, and the trie that matches
//! one against the other.

mod trie;
mod words;

pub use trie::TopicTrie;
pub use words::{BindingKey, RoutingKey, Segment};
