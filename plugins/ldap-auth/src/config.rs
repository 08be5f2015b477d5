//! The plugin's config section, as RabbitMQ's `auth_ldap.*` keys spell it where they can.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::query::Query;

/// `[plugins.ldap-auth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server URLs (`ldap://host:port` or `ldaps://host:port`), tried in order.
    pub servers: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS.
    #[serde(default)]
    pub use_starttls: bool,
    /// A PEM file of CA certificates to trust for LDAPS and StartTLS; without one, the system's.
    #[serde(default)]
    pub ca_certificate_file: Option<String>,
    /// `false` skips certificate verification (test set-ups only); verification is on unless
    /// this says otherwise.
    #[serde(default)]
    pub tls_verify: Option<bool>,
    /// The user's DN from the name they log in with, such as
    /// `uid=${username},ou=people,dc=example,dc=com`. Either this or `dn_lookup_*`.
    #[serde(default)]
    pub user_dn_pattern: Option<String>,
    /// Find the user's DN by searching `dn_lookup_base` for `(<dn_lookup_attribute>=<username>)`.
    #[serde(default)]
    pub dn_lookup_attribute: Option<String>,
    #[serde(default)]
    pub dn_lookup_base: Option<String>,
    /// Who the broker binds as for DN lookups and queries; anonymous when absent. (RabbitMQ's
    /// `other_bind`; its `as_user` is not supported, because authorisation questions arrive
    /// after the password is gone.)
    #[serde(default)]
    pub other_bind: Option<BindConfig>,
    /// Who may open which vhost. Default: everyone who authenticates.
    #[serde(default = "Query::allow")]
    pub vhost_access_query: Query,
    /// Who may configure, write or read which queue or exchange. Default: everything.
    #[serde(default = "Query::allow")]
    pub resource_access_query: Query,
    /// Management tags from queries, such as `administrator = { in_group = "cn=admins,..." }`.
    #[serde(default)]
    pub tag_queries: BTreeMap<String, Query>,
    /// The attribute of a group entry that lists its members' DNs.
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    /// Connecting, and each LDAP operation, gives up after this long.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Idle connections kept open for reuse.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long an answer is reused without asking the server again; 0 disables the cache.
    #[serde(default = "default_cache_ttl_ms")]
    pub cache_ttl_ms: u64,
}

/// A DN and password to bind with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindConfig {
    pub dn: String,
    pub password: String,
}

fn default_group_attribute() -> String {
    "member".into()
}

/// RabbitMQ's `auth_ldap.timeout` is infinite by default; a login that hangs for ever is worse
/// than one refused, so ours is 5 s.
fn default_timeout_ms() -> u64 {
    5_000
}

/// RabbitMQ's LDAP pool holds 64 connections; a broker's logins come in bursts, not floods.
fn default_pool_size() -> usize {
    16
}

/// As `rabbitmq_auth_backend_cache`'s default TTL.
fn default_cache_ttl_ms() -> u64 {
    15_000
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(json).map_err(|error| format!("bad config: {error}"))?;
        if config.servers.is_empty() {
            return Err("servers is empty: give at least one ldap:// or ldaps:// URL".into());
        }
        for server in &config.servers {
            if !server.starts_with("ldap://") && !server.starts_with("ldaps://") {
                return Err(format!("server '{server}' is not an ldap:// or ldaps:// URL"));
            }
        }
        match (&config.user_dn_pattern, &config.dn_lookup_attribute, &config.dn_lookup_base) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => {
                return Err("set either user_dn_pattern, or both dn_lookup_attribute and dn_lookup_base".into());
            }
        }
        if config.timeout_ms == 0 {
            return Err("timeout_ms must be above 0".into());
        }
        Ok(config)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
