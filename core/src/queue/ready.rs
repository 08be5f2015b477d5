//! The ready list: messages waiting for a consumer, in delivery order. A plain queue has one
//! FIFO; a priority queue (`x-max-priority`) has one per level and delivers from the highest
//! non-empty level first, FIFO within a level.
//!
//! An entry holds its message in memory, or only a reference to its publish record in the
//! journal (a paged entry), for queues whose backlog is larger than their memory share.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use crate::journal::JournalRef;
use crate::message::Message;

/// Where a ready message's content is.
#[derive(Debug)]
pub(super) enum Slot {
    Memory(Arc<Message>),
    /// On disk only; read back before delivery.
    Paged {
        reference: JournalRef,
        body_bytes: u32,
    },
}

impl Slot {
    pub fn body_bytes(&self) -> usize {
        match self {
            Slot::Memory(message) => message.body_bytes(),
            Slot::Paged { body_bytes, .. } => *body_bytes as usize,
        }
    }

    pub fn journal(&self) -> Option<JournalRef> {
        match self {
            Slot::Memory(message) => message.journal,
            Slot::Paged { reference, .. } => Some(*reference),
        }
    }

    pub fn is_paged(&self) -> bool {
        matches!(self, Slot::Paged { .. })
    }
}

/// A message waiting in a queue.
#[derive(Debug)]
pub(super) struct Ready {
    /// Its position in the queue, kept so a requeue puts it back in place.
    pub sequence: u64,
    pub slot: Slot,
    /// Its priority level in the list (0 in a plain queue).
    pub level: u8,
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

    /// The level a message of `priority` belongs to, capped at the queue's maximum.
    pub fn level_of(&self, priority: Option<u8>) -> u8 {
        let top = (self.levels.len() - 1) as u8;
        priority.unwrap_or(0).min(top)
    }

    pub fn push_back(&mut self, ready: Ready) {
        let level = usize::from(ready.level).min(self.levels.len() - 1);
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

    /// The next entries to deliver, at most `count`, in the level the head is in: for reading
    /// paged ones back in one go.
    pub fn head_run_mut(&mut self, count: usize) -> impl Iterator<Item = &mut Ready> {
        let level = self.levels.iter_mut().rev().find(|level| !level.is_empty());
        level.into_iter().flat_map(move |level| level.iter_mut().take(count))
    }

    /// Offers entries to `page`, newest first, level by level (lowest priority first, as it is
    /// delivered last); `page` returns false to stop altogether. A level is a resident tail,
    /// a paged middle and a resident head (read back for delivery, or requeued): the tail is
    /// offered from its newest end, then the head from its newest end, and the paged middle is
    /// never walked, so a pass costs the resident entries only.
    pub fn page_out(&mut self, mut page: impl FnMut(&mut Ready) -> bool) {
        for level in &mut self.levels {
            let mut tail = 0;
            for ready in level.iter_mut().rev() {
                if ready.slot.is_paged() {
                    break;
                }
                tail += 1;
                if !page(ready) {
                    return;
                }
            }
            if tail == level.len() {
                continue;
            }
            let head = level.iter().take_while(|ready| !ready.slot.is_paged()).count();
            for ready in level.iter_mut().take(head).rev() {
                if !page(ready) {
                    return;
                }
            }
        }
    }

    /// Puts messages back in their original places within their levels, in one merge pass per
    /// level, so a large requeue costs O(ready + requeued).
    pub fn requeue(&mut self, mut returning: Vec<Ready>) {
        returning.sort_unstable_by_key(|ready| ready.sequence);
        let mut per_level: Vec<Vec<Ready>> = self.levels.iter().map(|_| Vec::new()).collect();
        let top = self.levels.len() - 1;
        for ready in returning {
            per_level[usize::from(ready.level).min(top)].push(ready);
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

    fn ready(list: &ReadyList, sequence: u64, priority: Option<u8>) -> Ready {
        let message = Message {
            exchange: ExchangeName::new(""),
            routing_key: RoutingKey::new("q"),
            properties: Properties { priority, ..Default::default() },
            body: bytes::Bytes::new(),
            journal: None,
        };
        let level = list.level_of(priority);
        Ready { sequence, slot: Slot::Memory(Arc::new(message)), level, redelivered: false, expires_at: None }
    }

    #[test]
    fn higher_priorities_first_fifo_within_a_level() {
        let mut list = ReadyList::new(5);
        for (sequence, priority) in [(0, None), (1, Some(5)), (2, Some(1)), (3, Some(9)), (4, Some(1))] {
            let entry = ready(&list, sequence, priority);
            list.push_back(entry);
        }
        let order: Vec<u64> = std::iter::from_fn(|| list.pop_front().map(|ready| ready.sequence)).collect();
        // Priority 9 is capped at 5, so it follows 1 (also 5) in arrival order.
        assert_eq!(order, vec![1, 3, 2, 4, 0]);
    }

    #[test]
    fn requeue_restores_original_positions() {
        let mut list = ReadyList::new(0);
        for sequence in [1, 3, 5] {
            let entry = ready(&list, sequence, None);
            list.push_back(entry);
        }
        let returning = vec![ready(&list, 4, None), ready(&list, 0, None), ready(&list, 2, None)];
        list.requeue(returning);
        let order: Vec<u64> = std::iter::from_fn(|| list.pop_front().map(|ready| ready.sequence)).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
        assert!(list.is_empty());
    }
}
