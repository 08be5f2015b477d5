//! Routing keys and binding keys.
//!
//! A routing key is a sequence of words. The core keeps it as one string in its canonical form,
//! words joined by [`RoutingKey::SEPARATOR`], because that is how consumers of the dotted form see it
//! and how the direct exchange compares it; adapters whose separator differs (such as `/`)
//! convert at the edge. A binding key is a sequence of [`Segment`]s; adapters parse their own wildcard syntax
//! (`*`/`#`, `+`/`#`) into it, so the core never interprets wildcard characters.

use std::fmt;
use std::sync::Arc;

/// A message's routing key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutingKey(Arc<str>);

impl RoutingKey {
    /// The word separator of the canonical form.
    pub const SEPARATOR: char = '.';

    pub fn new(text: &str) -> RoutingKey {
        RoutingKey(Arc::from(text))
    }

    /// Builds a key from words, joining them with the separator.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> RoutingKey {
        let mut text = String::new();
        for (index, word) in words.into_iter().enumerate() {
            if index > 0 {
                text.push(Self::SEPARATOR);
            }
            text.push_str(word);
        }
        RoutingKey(Arc::from(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's words. The empty key has one empty word, as in RabbitMQ.
    pub fn words(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.split(Self::SEPARATOR)
    }
}

impl fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One segment of a binding key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this word.
    Literal(Box<str>),
    /// Matches exactly one word.
    Star,
    /// Matches zero or more words.
    Hash,
}

/// A binding key: the segments a topic exchange matches, and the text the direct exchange and
/// listings use.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BindingKey {
    /// The key as the binder gave it, in the canonical form.
    text: Arc<str>,
    segments: Arc<[Segment]>,
}

impl BindingKey {
    /// Builds a key from parsed segments; the text is rendered in the canonical form, with `*`
    /// and `#` for the wildcards.
    pub fn from_segments(segments: Vec<Segment>) -> BindingKey {
        let mut text = String::new();
        for (index, segment) in segments.iter().enumerate() {
            if index > 0 {
                text.push(RoutingKey::SEPARATOR);
            }
            match segment {
                Segment::Literal(word) => text.push_str(word),
                Segment::Star => text.push('*'),
                Segment::Hash => text.push('#'),
            }
        }
        BindingKey { text: Arc::from(text), segments: Arc::from(segments) }
    }

    /// Parses the canonical text form that `from_segments` renders: words separated by `.`,
    /// with `*` and `#` as the wildcards. Adapters whose clients write keys in this form parse
    /// with it; those with another syntax build segments themselves.
    pub fn parse(text: &str) -> BindingKey {
        let segments = text
            .split(RoutingKey::SEPARATOR)
            .map(|word| match word {
                "*" => Segment::Star,
                "#" => Segment::Hash,
                literal => Segment::Literal(literal.into()),
            })
            .collect();
        BindingKey::from_segments(segments)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl fmt::Debug for BindingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}
