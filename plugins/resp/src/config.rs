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
    /// as Redis's `client-output-buffer-limit pubsub`.
    pub pending_replies_max: usize,
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
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(json).map_err(|error| format!("bad config: {error}"))?;
        if config.connections_max == 0 || config.pending_replies_max == 0 || config.bulk_bytes_max == 0 {
            return Err("connections_max, bulk_bytes_max and pending_replies_max must be above 0".into());
        }
        Ok(config)
    }
}
