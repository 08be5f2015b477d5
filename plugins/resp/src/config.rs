//! The `[plugins.resp]` section.

use std::net::IpAddr;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: IpAddr,
    /// Redis's port; 0 picks a free one (logged at start).
    pub port: u16,
    /// The vhost clients use.
    pub vhost: String,
    /// `AUTH <password>` (one argument) logs in as this user, as Redis's `default` user.
    pub default_user: String,
    /// Clients without `AUTH` act as this user and password; none by default (every client
    /// must log in, as the broker's other protocols require).
    pub anonymous: Option<Login>,
    /// The most clients at once; each has a thread.
    pub connections_max: usize,
    /// The largest bulk string (a message body) accepted, in bytes.
    pub bulk_bytes_max: usize,
    /// Replies and pushed messages waiting for a slow subscriber before it is disconnected,
    /// as Redis's `client-output-buffer-limit pubsub`: at most this many...
    pub pending_replies_max: usize,
    /// ...and at most this many bytes.
    pub pending_bytes_max: usize,
    /// The largest command (all its arguments) a logged-in client may send, in bytes.
    pub query_bytes_max: usize,
    /// Channels and patterns one connection may subscribe to; each is a queue in the broker.
    pub subscriptions_max: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 6379,
            vhost: "/".into(),
            default_user: "guest".into(),
            anonymous: None,
            connections_max: 1024,
            // Redis allows 512 MB; a broker message that large is an accident.
            bulk_bytes_max: 16 * 1024 * 1024,
            pending_replies_max: 4096,
            // Redis's hard limit for pub/sub clients.
            pending_bytes_max: 32 * 1024 * 1024,
            query_bytes_max: 64 * 1024 * 1024,
            subscriptions_max: 1024,
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(json).map_err(|error| format!("bad config: {error}"))?;
        let sizes = [
            config.connections_max,
            config.bulk_bytes_max,
            config.pending_replies_max,
            config.pending_bytes_max,
            config.query_bytes_max,
            config.subscriptions_max,
        ];
        if sizes.contains(&0) {
            return Err("connections_max, bulk_bytes_max, pending_replies_max, pending_bytes_max, query_bytes_max and subscriptions_max must be above 0".into());
        }
        if config.query_bytes_max < config.bulk_bytes_max {
            return Err("query_bytes_max must be at least bulk_bytes_max".into());
        }
        Ok(config)
    }
}
