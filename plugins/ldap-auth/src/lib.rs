//! An LDAP auth backend for Warren, modelled on RabbitMQ's `rabbitmq_auth_backend_ldap`.
//!
//! A login finds the user's DN (from `user_dn_pattern`, or by a search), then checks the
//! password with a simple bind as that DN. Vhost access, resource access and management tags
//! come from queries over group membership (see `query`). Connections are pooled, answers are
//! cached for `cache_ttl_ms`, and every LDAP exchange is bounded by `timeout_ms`: a server that
//! is down means a denial and a logged error, never a hung login.
//!
//! ```toml
//! auth_backends = ["internal", "ldap-auth"]
//! [plugins]
//! load = ["ldap-auth"]
//! [plugins.ldap-auth]
//! servers = ["ldap://127.0.0.1:3890"]
//! user_dn_pattern = "uid=${username},ou=people,dc=warren,dc=test"
//! other_bind = { dn = "cn=admin,dc=warren,dc=test", password = "admin-pass" }
//! vhost_access_query = { in_group = "cn=vhost-${vhost},ou=groups,dc=warren,dc=test" }
//! tag_queries = { administrator = { in_group = "cn=admins,ou=groups,dc=warren,dc=test" } }
//! ```
//!
//! # Layout
//! - `config`: the config section.
//! - `query`: RabbitMQ's query language (constant, in_group, equals, match, any, all, not).
//! - `pool`: pooled, time-bounded connections.
//! - `cache`: answers kept for a TTL.

mod cache;
mod config;
mod pool;
mod query;

use std::sync::Arc;
use std::time::Duration;

use warren_plugin_api::{
    export_plugin, Access, AuthBackend, Denial, Host, Level, Login, Plugin, Resource, ResourceKind, VhostAccess,
};

use cache::Cache;
use config::Config;
use pool::{Fault, Pool, Session};
use query::{evaluate, fill, Directory, Query};

/// An authorisation question, as the cache keys it: structured, so that no two questions can
/// collide whatever their names hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Question {
    Vhost { vhost: String, ip: String },
    Resource { permission: &'static str, resource: &'static str, vhost: String, name: String },
}

pub struct LdapAuth {
    config: Arc<Config>,
    pool: Pool,
    host: Host,
    /// (username, password) → tags, or the refusal.
    logins: Cache<(String, String), Result<Vec<String>, String>>,
    /// (username, question) → answer, for vhost and resource access.
    decisions: Cache<(String, Question), bool>,
    /// username → DN, found at login, so later questions need no lookup.
    user_dns: Cache<String, String>,
}

impl Plugin for LdapAuth {
    const NAME: &'static str = "ldap-auth";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn init(config_json: &str, host: Host) -> Result<Self, String> {
        let config = Arc::new(Config::parse(config_json)?);
        let pool = Pool::new(config.clone())?;
        let ttl = Duration::from_millis(config.cache_ttl_ms);
        host.log(
            Level::Info,
            &format!(
                "LDAP servers {:?}, timeout {} ms, cache TTL {} ms",
                config.servers, config.timeout_ms, config.cache_ttl_ms
            ),
        );
        Ok(LdapAuth {
            // The DN cache outlives the answer cache: DNs rarely change, and a question after
            // login should not need a search (unless caching is off altogether).
            user_dns: Cache::new(if ttl.is_zero() { ttl } else { ttl.max(Duration::from_secs(300)) }),
            logins: Cache::new(ttl),
            decisions: Cache::new(ttl),
            config,
            pool,
            host,
        })
    }
}

impl LdapAuth {
    /// The user's DN: from the pattern, from the login that found it, or by a search.
    fn user_dn(&self, session: &mut Session, username: &str) -> Result<Option<String>, Fault> {
        if let Some(pattern) = &self.config.user_dn_pattern {
            return Ok(Some(fill(pattern, &[("username", username)], query::dn_escape)));
        }
        if let Some(dn) = self.user_dns.get(&username.to_owned()) {
            return Ok(Some(dn));
        }
        let (Some(attribute), Some(base)) = (&self.config.dn_lookup_attribute, &self.config.dn_lookup_base) else {
            return Ok(None);
        };
        session.bind_service()?;
        let dn = session.lookup_dn(base, attribute, username)?;
        if let Some(dn) = &dn {
            self.user_dns.put(username.to_owned(), dn.clone());
        }
        Ok(dn)
    }

    fn failed(&self, what: &str, fault: Fault) -> Denial {
        self.host.log(Level::Error, &format!("{what}: {}", fault.0));
        Denial::Failed(fault.0)
    }

    /// Evaluates an access query for a user. Queries that need no directory skip the pool.
    fn decide(
        &self,
        username: &str,
        question: Question,
        query: &Query,
        variables: &[(&'static str, &str)],
    ) -> Result<bool, Denial> {
        let key = (username.to_owned(), question);
        if let Some(answer) = self.decisions.get(&key) {
            return Ok(answer);
        }
        let answer = if query_needs_directory(query) {
            self.pool
                .with_session(|session| {
                    let user_dn = self
                        .user_dn(session, username)?
                        .ok_or_else(|| Fault(format!("no entry for user {username}")))?;
                    session.bind_service()?;
                    let mut variables = variables.to_vec();
                    variables.push(("user_dn", &user_dn));
                    evaluate(query, &variables, session).map_err(Fault)
                })
                .map_err(|fault| self.failed(&format!("access check for {username}"), fault))?
        } else {
            evaluate(query, variables, &mut NoDirectory).map_err(Denial::Failed)?
        };
        self.decisions.put(key, answer);
        Ok(answer)
    }
}

/// Whether a query asks the directory anything.
fn query_needs_directory(query: &Query) -> bool {
    match query {
        Query::InGroup(_) => true,
        Query::Equals(left, right) | Query::Match(left, right) => {
            left.contains("${user_dn}") || right.contains("${user_dn}")
        }
        Query::Any(queries) | Query::All(queries) => queries.iter().any(query_needs_directory),
        Query::Not(query) => query_needs_directory(query),
        Query::Constant(_) => false,
    }
}

/// For queries that need no directory.
struct NoDirectory;

impl Directory for NoDirectory {
    fn is_member(&mut self, _group_dn: &str, _user_dn: &str) -> Result<bool, String> {
        Err("no directory".into())
    }
}

/// The address without the port, as RabbitMQ's `${ip}`.
fn ip_of(peer_address: &str) -> &str {
    peer_address.rsplit_once(':').map_or(peer_address, |(ip, _)| ip.trim_start_matches('[').trim_end_matches(']'))
}

impl AuthBackend for LdapAuth {
    fn authenticate(&self, login: &Login) -> Result<Vec<String>, Denial> {
        // An LDAP simple bind with an empty password is an anonymous bind, which servers accept:
        // it must never count as knowing the password.
        if login.password.is_empty() {
            return Err(Denial::Refused("empty password".into()));
        }
        // The address is part of the question: tag queries may use `${ip}`.
        let key = (format!("{}@{}", login.username, ip_of(login.peer_address)), login.password.to_owned());
        if let Some(answer) = self.logins.get(&key) {
            return answer.map_err(Denial::Refused);
        }
        let outcome = self.pool.with_session(|session| {
            let Some(user_dn) = self.user_dn(session, login.username)? else {
                return Ok(Err(format!("no LDAP entry for user {}", login.username)));
            };
            if !session.bind(&user_dn, login.password)? {
                return Ok(Err(format!("invalid credentials for {user_dn}")));
            }
            self.user_dns.put(login.username.to_owned(), user_dn.clone());
            let mut tags = Vec::new();
            if !self.config.tag_queries.is_empty() {
                session.bind_service()?;
                let variables =
                    [("username", login.username), ("user_dn", user_dn.as_str()), ("ip", ip_of(login.peer_address))];
                for (tag, query) in &self.config.tag_queries {
                    if evaluate(query, &variables, session).map_err(Fault)? {
                        tags.push(tag.clone());
                    }
                }
            }
            Ok(Ok(tags))
        });
        let answer = outcome.map_err(|fault| self.failed(&format!("login of {}", login.username), fault))?;
        self.logins.put(key, answer.clone());
        answer.map_err(Denial::Refused)
    }

    fn authorize_vhost(&self, request: &VhostAccess) -> Result<(), Denial> {
        let variables = [("username", request.username), ("vhost", request.vhost), ("ip", ip_of(request.peer_address))];
        let question = Question::Vhost { vhost: request.vhost.to_owned(), ip: ip_of(request.peer_address).to_owned() };
        if self.decide(request.username, question, &self.config.vhost_access_query, &variables)? {
            Ok(())
        } else {
            Err(Denial::Refused(format!("{} may not open vhost {}", request.username, request.vhost)))
        }
    }

    fn authorize_resource(&self, request: &Resource) -> Result<(), Denial> {
        let resource = match request.kind {
            ResourceKind::Queue => "queue",
            ResourceKind::Exchange => "exchange",
        };
        let permission = match request.access {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        };
        let variables = [
            ("username", request.username),
            ("vhost", request.vhost),
            ("resource", resource),
            ("name", request.name),
            ("permission", permission),
        ];
        let question =
            Question::Resource { permission, resource, vhost: request.vhost.to_owned(), name: request.name.to_owned() };
        if self.decide(request.username, question, &self.config.resource_access_query, &variables)? {
            Ok(())
        } else {
            Err(Denial::Refused(format!("{} may not {permission} {resource} {}", request.username, request.name)))
        }
    }
}

export_plugin!(LdapAuth, auth);
