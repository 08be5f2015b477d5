//! A word trie for topic matching. Literal words hash into children; `*` and `#` have one child
//! each. Matching walks every branch a word can take, so its cost grows with the number of
//! wildcards along the way, not with the number of bindings.
//!
//! `#` can take any number of words, so a naive walk of a key like `#.a.#.a.#` is exponential in
//! the number of `#`s. Two things bound it: consecutive `#`s are collapsed into one (they match
//! the same words), and once a `#` is expanded every (node, word position) pair is visited at
//! most once, which makes a match O(nodes × words) and reports each binding once.

use std::collections::{HashMap, HashSet};

use super::words::Segment;

/// Maps binding keys to values of `T` (a destination), many values per key.
#[derive(Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    literals: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    /// The values bound with a key that ends at this node.
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { literals: HashMap::new(), star: None, hash: None, values: Vec::new() }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.literals.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn child_mut(&mut self, segment: &Segment) -> &mut Node<T> {
        match segment {
            Segment::Literal(word) => self.literals.entry(word.clone()).or_default(),
            Segment::Star => self.star.get_or_insert_with(Box::default),
            Segment::Hash => self.hash.get_or_insert_with(Box::default),
        }
    }
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie { root: Node::default(), len: 0 }
    }
}

impl<T: PartialEq> TopicTrie<T> {
    pub fn new() -> TopicTrie<T> {
        TopicTrie::default()
    }

    /// The number of (key, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `key`; returns false when that exact pair was already there.
    pub fn insert(&mut self, key: &[Segment], value: T) -> bool {
        let key = collapse_hashes(key);
        let mut node = &mut self.root;
        for segment in key {
            node = node.child_mut(segment);
        }
        if node.values.contains(&value) {
            return false;
        }
        node.values.push(value);
        self.len += 1;
        true
    }

    /// Removes `value` from `key`, pruning nodes left empty; returns whether it was there.
    pub fn remove(&mut self, key: &[Segment], value: &T) -> bool {
        let key: Vec<&Segment> = collapse_hashes(key).collect();
        let removed = remove_from(&mut self.root, &key, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `found` for each value bound under a key that matches `words`: once per binding,
    /// so a value bound under several matching keys is reported once per key; callers
    /// deduplicate.
    pub fn for_each_match<F>(&self, words: &[&str], found: &mut F)
    where
        F: FnMut(&T) + ?Sized,
    {
        let mut visited = None;
        match_node(&self.root, words, 0, found, &mut visited);
    }
}

/// The key with runs of `#` collapsed to one.
fn collapse_hashes(key: &[Segment]) -> impl Iterator<Item = &Segment> {
    key.iter()
        .enumerate()
        .filter(|(index, segment)| !(**segment == Segment::Hash && *index > 0 && key[index - 1] == Segment::Hash))
        .map(|(_, segment)| segment)
}

fn remove_from<T: PartialEq>(node: &mut Node<T>, key: &[&Segment], value: &T) -> bool {
    let Some((first, rest)) = key.split_first() else {
        let before = node.values.len();
        node.values.retain(|existing| existing != value);
        return node.values.len() != before;
    };
    let removed = match *first {
        Segment::Literal(word) => {
            let Some(child) = node.literals.get_mut(word) else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                node.literals.remove(word);
            }
            removed
        }
        Segment::Star => remove_from_boxed(&mut node.star, rest, value),
        Segment::Hash => remove_from_boxed(&mut node.hash, rest, value),
    };
    removed
}

fn remove_from_boxed<T: PartialEq>(slot: &mut Option<Box<Node<T>>>, key: &[&Segment], value: &T) -> bool {
    let Some(child) = slot.as_mut() else {
        return false;
    };
    let removed = remove_from(child, key, value);
    if child.is_empty() {
        *slot = None;
    }
    removed
}

/// (node address, word position) pairs already matched, recorded once a `#` has been expanded.
type Visited = Option<HashSet<(usize, usize)>>;

fn match_node<T, F: FnMut(&T) + ?Sized>(
    node: &Node<T>,
    words: &[&str],
    at: usize,
    found: &mut F,
    visited: &mut Visited,
) {
    if let Some(seen) = visited {
        if !seen.insert((node as *const Node<T> as usize, at)) {
            return;
        }
    }
    if let Some(hash) = &node.hash {
        // `#` takes zero or more words: try every split point.
        visited.get_or_insert_with(HashSet::new);
        for skip in at..=words.len() {
            match_node(hash, words, skip, found, visited);
        }
    }
    let Some(word) = words.get(at) else {
        node.values.iter().for_each(&mut *found);
        return;
    };
    if let Some(child) = node.literals.get(*word) {
        match_node(child, words, at + 1, found, visited);
    }
    if let Some(star) = &node.star {
        match_node(star, words, at + 1, found, visited);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle: a direct recursive reading of the matching rules.
    fn naive_matches(key: &[Segment], words: &[&str]) -> bool {
        match key.split_first() {
            None => words.is_empty(),
            Some((Segment::Hash, rest)) => (0..=words.len()).any(|skip| naive_matches(rest, &words[skip..])),
            Some((Segment::Star, rest)) => !words.is_empty() && naive_matches(rest, &words[1..]),
            Some((Segment::Literal(word), rest)) => words.first() == Some(&&**word) && naive_matches(rest, &words[1..]),
        }
    }

    /// xorshift64*: a tiny seeded PRNG so a failure can be replayed from its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const WORDS: [&str; 4] = ["a", "b", "c", ""];

    fn random_key(rng: &mut Rng) -> Vec<Segment> {
        (0..rng.below(5))
            .map(|_| match rng.below(6) {
                0 => Segment::Star,
                1 => Segment::Hash,
                n => Segment::Literal(WORDS[(n as usize - 2) % WORDS.len()].into()),
            })
            .collect()
    }

    fn random_words(rng: &mut Rng) -> Vec<&'static str> {
        (0..rng.below(6)).map(|_| WORDS[rng.below(WORDS.len() as u64) as usize]).collect()
    }

    #[test]
    fn trie_agrees_with_naive_matcher() {
        let seed = std::env::var("WARREN_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(0x5EED_u64 ^ std::process::id() as u64)
            | 1;
        let mut rng = Rng(seed);
        for round in 0..200 {
            let mut trie = TopicTrie::new();
            let mut keys: Vec<(Vec<Segment>, usize)> = Vec::new();
            for value in 0..rng.below(30) as usize {
                let key = random_key(&mut rng);
                trie.insert(&key, value);
                keys.push((key, value));
            }
            // Remove some, to exercise pruning.
            for _ in 0..rng.below(10) {
                if keys.is_empty() {
                    break;
                }
                let index = rng.below(keys.len() as u64) as usize;
                let (key, value) = keys.swap_remove(index);
                assert!(trie.remove(&key, &value), "seed {seed} round {round}: remove failed");
            }
            for _ in 0..50 {
                let words = random_words(&mut rng);
                let mut got = Vec::new();
                trie.for_each_match(&words, &mut |value: &usize| got.push(*value));
                got.sort_unstable();
                got.dedup();
                let mut want: Vec<usize> =
                    keys.iter().filter(|(key, _)| naive_matches(key, &words)).map(|(_, value)| *value).collect();
                want.sort_unstable();
                assert_eq!(got, want, "seed {seed} round {round} words {words:?} keys {keys:?}");
            }
        }
    }

    #[test]
    fn many_hashes_match_in_polynomial_time() {
        // `#.a.#.a. ... .#` against 120 `a`s: exponential without memoisation.
        let mut key = Vec::new();
        for _ in 0..60 {
            key.push(Segment::Hash);
            key.push(Segment::Literal("a".into()));
        }
        key.push(Segment::Hash);
        let mut trie = TopicTrie::new();
        trie.insert(&key, 1);
        let words = vec!["a"; 120];
        let started = std::time::Instant::now();
        let mut hits = 0;
        trie.for_each_match(&words, &mut |_| hits += 1);
        assert_eq!(hits, 1, "one binding, reported once");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn consecutive_hashes_are_one() {
        let mut trie = TopicTrie::new();
        trie.insert(&[Segment::Hash, Segment::Hash, Segment::Literal("b".into())], 1);
        let mut hits = 0;
        trie.for_each_match(&["b"], &mut |_| hits += 1);
        assert_eq!(hits, 1);
        assert!(trie.remove(&[Segment::Hash, Segment::Hash, Segment::Literal("b".into())], &1));
        assert!(trie.is_empty());
    }

    #[test]
    fn hash_matches_zero_words() {
        let mut trie = TopicTrie::new();
        trie.insert(&[Segment::Literal("a".into()), Segment::Hash], 1);
        let mut hits = 0;
        trie.for_each_match(&["a"], &mut |_| hits += 1);
        assert_eq!(hits, 1);
    }
}
