//! Identifier newtypes. Names are cheap to clone (`Arc<str>`) because they travel with every
//! message and delivery.

use std::fmt;
use std::sync::Arc;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(text: &str) -> $name {
                $name(Arc::from(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name::new(text)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name(Arc::from(text))
            }
        }
    };
}

name_type!(
    /// A virtual host's name, such as `/`.
    VhostName
);
name_type!(
    /// An exchange's name; the empty name is the default exchange.
    ExchangeName
);
name_type!(
    /// A queue's name.
    QueueName
);
name_type!(
    /// A consumer's tag, unique within its session's channel.
    ConsumerTag
);
name_type!(
    /// A user's name.
    UserName
);

/// Identifies one client connection for the lifetime of the broker: exclusive queues belong to
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// An adapter's token for one of its consumers. The core hands it back on every delivery so the
/// adapter can find the consumer's channel or subscription without a lookup by tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerId(pub u64);
