//! Connections to the LDAP servers: opened on demand, kept idle for reuse up to the pool size,
//! and dropped after any transport error. Every connect and operation is bounded by the
//! configured timeout, so a server that is down or hangs turns into a failure, never a hang.

use std::sync::{Arc, Mutex};

use ldap3::{LdapConn, LdapConnSettings, Scope};

use crate::config::Config;
use crate::query::Directory;

/// LDAP result codes the plugin tells apart (RFC 4511, appendix A).
const RC_SUCCESS: u32 = 0;
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_INVALID_CREDENTIALS: u32 = 49;

/// Why an LDAP exchange did not give an answer.
#[derive(Debug)]
pub struct Fault(pub String);

/// One open connection and whom it is bound as (`None`: not bound, or unknown).
struct Pooled {
    connection: LdapConn,
    bound_as: Option<String>,
}

pub struct Pool {
    config: Arc<Config>,
    settings: LdapConnSettings,
    idle: Mutex<Vec<Pooled>>,
}

impl Pool {
    pub fn new(config: Arc<Config>) -> Result<Pool, String> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(config.timeout()).set_starttls(config.use_starttls);
        if config.tls_verify == Some(false) {
            settings = settings.set_no_tls_verify(true);
        }
        if let Some(path) = &config.ca_certificate_file {
            settings = settings.set_config(Arc::new(tls_config(path)?));
        }
        Ok(Pool { config, settings, idle: Mutex::new(Vec::new()) })
    }

    /// Runs `work` on a connection: an idle one, or a new one to the first server that answers.
    /// The connection goes back to the pool unless the work hit a transport error.
    pub fn with_session<T>(&self, work: impl FnOnce(&mut Session) -> Result<T, Fault>) -> Result<T, Fault> {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let pooled = match idle {
            Some(pooled) => pooled,
            None => self.connect()?,
        };
        let mut session = Session { pooled, config: &self.config, broken: false };
        let result = work(&mut session);
        if !session.broken {
            let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if idle.len() < self.config.pool_size {
                idle.push(session.pooled);
            }
        }
        result
    }

    fn connect(&self) -> Result<Pooled, Fault> {
        let mut errors = Vec::new();
        for server in &self.config.servers {
            match LdapConn::with_settings(self.settings.clone(), server) {
                Ok(connection) => return Ok(Pooled { connection, bound_as: None }),
                Err(error) => errors.push(format!("{server}: {error}")),
            }
        }
        Err(Fault(format!("no LDAP server answered ({})", errors.join("; "))))
    }
}

/// A rustls configuration that trusts the CA certificates in a PEM file.
fn tls_config(path: &str) -> Result<rustls::ClientConfig, String> {
    let file = std::fs::File::open(path).map_err(|error| format!("ca_certificate_file {path}: {error}"))?;
    let certificates = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .map_err(|error| format!("ca_certificate_file {path}: {error}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(&rustls::Certificate(certificate)).map_err(|error| format!("ca_certificate_file {path}: {error}"))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_certificate_file {path} holds no certificate"));
    }
    Ok(rustls::ClientConfig::builder().with_safe_defaults().with_root_certificates(roots).with_no_client_auth())
}

/// A connection lent out for one request.
pub struct Session<'a> {
    pooled: Pooled,
    config: &'a Config,
    /// Set after a transport error: the connection is not returned to the pool.
    broken: bool,
}

impl Session<'_> {
    fn fault(&mut self, what: &str, error: ldap3::LdapError) -> Fault {
        self.broken = true;
        self.pooled.bound_as = None;
        Fault(format!("LDAP {what} failed: {error}"))
    }

    /// A simple bind. `Ok(false)` for invalid credentials.
    pub fn bind(&mut self, dn: &str, password: &str) -> Result<bool, Fault> {
        let timeout = self.config.timeout();
        let result = self.pooled.connection.with_timeout(timeout).simple_bind(dn, password);
        let result = result.map_err(|error| self.fault("bind", error))?;
        match result.rc {
            RC_SUCCESS => {
                self.pooled.bound_as = Some(dn.to_owned());
                Ok(true)
            }
            RC_INVALID_CREDENTIALS => {
                self.pooled.bound_as = None;
                Ok(false)
            }
            rc => {
                self.pooled.bound_as = None;
                Err(Fault(format!("LDAP bind as {dn} returned {rc}: {}", result.text)))
            }
        }
    }

    /// Binds as `other_bind`, or anonymously, unless already bound so.
    pub fn bind_service(&mut self) -> Result<(), Fault> {
        let (dn, password) = match &self.config.other_bind {
            Some(bind) => (bind.dn.clone(), bind.password.clone()),
            None => (String::new(), String::new()),
        };
        if self.pooled.bound_as.as_deref() == Some(dn.as_str()) {
            return Ok(());
        }
        if self.bind(&dn, &password)? {
            Ok(())
        } else {
            Err(Fault(format!("the broker's own bind as '{dn}' was refused (other_bind)")))
        }
    }

    /// The DN of the one entry under `base` whose `attribute` is `value`; `None` if there is
    /// none, a fault if there are several.
    pub fn lookup_dn(&mut self, base: &str, attribute: &str, value: &str) -> Result<Option<String>, Fault> {
        let filter = format!("({attribute}={})", ldap3::ldap_escape(value));
        let timeout = self.config.timeout();
        let result = self.pooled.connection.with_timeout(timeout).search(base, Scope::Subtree, &filter, vec!["1.1"]);
        let result = result.map_err(|error| self.fault("search", error))?;
        let (entries, _) = result.success().map_err(|error| Fault(format!("LDAP search under {base}: {error}")))?;
        match entries.len() {
            0 => Ok(None),
            1 => Ok(entries.into_iter().next().map(|entry| ldap3::SearchEntry::construct(entry).dn)),
            count => Err(Fault(format!("{count} entries under {base} match {filter}; expected one"))),
        }
    }
}

impl Directory for Session<'_> {
    fn is_member(&mut self, group_dn: &str, user_dn: &str) -> Result<bool, String> {
        let filter = format!("({}={})", self.config.group_attribute, ldap3::ldap_escape(user_dn));
        let timeout = self.config.timeout();
        let result = self.pooled.connection.with_timeout(timeout).search(group_dn, Scope::Base, &filter, vec!["1.1"]);
        let result = result.map_err(|error| self.fault("search", error).0)?;
        match result.1.rc {
            RC_SUCCESS => Ok(!result.0.is_empty()),
            RC_NO_SUCH_OBJECT => Ok(false),
            rc => Err(format!("LDAP search of {group_dn} returned {rc}: {}", result.1.text)),
        }
    }
}
