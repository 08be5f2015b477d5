//! The ready list: messages waiting for a consumer, in delivery order. A plain queue has one
//! FIFO; a priority queue (`x-max-priority`) has one per level and delivers from the highest
//! non-empty level first, FIFO within a level.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use crate::message::Message;

/// A message waiting in a queue.
#[derive(Debug)]
pub(super) struct Ready {
    /// Its position in the queue, kept so a requeue puts it back in place.
    pub sequence: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// When it dies of old age, if it has a TTL.
    pub expires_at: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct ReadyList {
    /// Index 0 is the lowest priority; a plain queue has just that one.
    levels: Vec<VecDeque<Ready>>,
    len: usize,
}

impl ReadyList {
    /// A list with priority levels 0..=`max_priority`.
    pub fn new(max_priority: u8) -> ReadyList {
        ReadyList { levels: (0..=max_priority).map(|_| VecDeque::new()).collect(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The level a message belongs to: its `priority` property, capped at the queue's maximum.
    fn level_of(&self, message: &Message) -> usize {
        let top = self.levels.len() - 1;
        usize::from(message.properties.priority.unwrap_or(0)).min(top)
    }

    pub fn push_back(&mut self, ready: Ready) {
        let level = self.level_of(&ready.message);
        self.levels[level].push_back(ready);
        self.len += 1;
    }

    /// The next message to deliver.
    pub fn front(&self) -> Option<&Ready> {
        self.levels.iter().rev().find_map(VecDeque::front)
    }

    pub fn pop_front(&mut self) -> Option<Ready> {
        let ready = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(ready)
    }

    /// Puts messages back in their original places within their levels, in one merge pass per
    /// level, so a large requeue costs O(ready + requeued).
    pub fn requeue(&mut self, mut returning: Vec<Ready>) {
        returning.sort_unstable_by_key(|ready| ready.sequence);
        let mut per_level: Vec<Vec<Ready>> = self.levels.iter().map(|_| Vec::new()).collect();
        for ready in returning {
            let level = self.level_of(&ready.message);
            per_level[level].push(ready);
        }
        for (level, returning) in per_level.into_iter().enumerate() {
            if returning.is_empty() {
                continue;
            }
            self.len += returning.len();
            let waiting = std::mem::take(&mut self.levels[level]);
            self.levels[level] = merge_by_sequence(returning, waiting);
        }
    }
}

/// Merges two runs sorted by sequence into one.
fn merge_by_sequence(returning: Vec<Ready>, waiting: VecDeque<Ready>) -> VecDeque<Ready> {
    let mut merged = VecDeque::with_capacity(returning.len() + waiting.len());
    let mut returning = returning.into_iter().peekable();
    let mut waiting = waiting.into_iter().peekable();
    loop {
        let take_returning = match (returning.peek(), waiting.peek()) {
            (Some(a), Some(b)) => a.sequence < b.sequence,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return merged,
        };
        let next = if take_returning { returning.next() } else { waiting.next() };
        merged.push_back(next.expect("peeked"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::ExchangeName;
    use crate::properties::Properties;
    use crate::topic::RoutingKey;

    fn ready(sequence: u64, priority: Option<u8>) -> Ready {
        let message = Message {
            exchange: ExchangeName::new(""),
            routing_key: RoutingKey::new("q"),
            properties: Properties { priority, ..Default::default() },
            body: bytes::Bytes::new(),
            journal_id: None,
        };
        Ready { sequence, message: Arc::new(message), redelivered: false, expires_at: None }
    }

    #[test]
    fn higher_priorities_first_fifo_within_a_level() {
        let mut list = ReadyList::new(5);
        for (sequence, priority) in [(0, None), (1, Some(5)), (2, Some(1)), (3, Some(9)), (4, Some(1))] {
            list.push_back(ready(sequence, priority));
        }
        let order: Vec<u64> = std::iter::from_fn(|| list.pop_front().map(|ready| ready.sequence)).collect();
        // Priority 9 is capped at 5, so it follows 1 (also 5) in arrival order.
        assert_eq!(order, vec![1, 3, 2, 4, 0]);
    }

    #[test]
    fn requeue_restores_original_positions() {
        let mut list = ReadyList::new(0);
        for sequence in [1, 3, 5] {
            list.push_back(ready(sequence, None));
        }
        list.requeue(vec![ready(4, None), ready(0, None), ready(2, None)]);
        let order: Vec<u64> = std::iter::from_fn(|| list.pop_front().map(|ready| ready.sequence)).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert!(list.is_empty());
    }
}
