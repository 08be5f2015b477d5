//! A minimal Warren auth plugin: copy this crate to start your own.
//!
//! It knows the users listed in its config section and lets each into the vhosts listed for it:
//!
//! ```toml
//! auth_backends = ["internal", "plugin-skeleton"]
//!
//! [plugins]
//! directory = "target/debug"
//! load = ["plugin-skeleton"]
//!
//! [plugins.plugin-skeleton.users.alice]
//! password = "secret"
//! vhosts = ["/"]
//! tags = ["monitoring"]
//! ```
//!
//! Everything a plugin needs is in `warren_plugin_api`: implement `Plugin` and `AuthBackend`,
//! then call `export_plugin!(YourType, auth)` once. The macro catches panics at every entry
//! point, so a bug here denies one login instead of taking the broker down.

use std::collections::HashMap;

use serde::Deserialize;
use warren_plugin_api::{export_plugin, AuthBackend, Denial, Host, Level, Login, Plugin, VhostAccess};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    users: HashMap<String, UserConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    password: String,
    #[serde(default)]
    vhosts: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

pub struct Skeleton {
    users: HashMap<String, UserConfig>,
}

impl Plugin for Skeleton {
    const NAME: &'static str = "plugin-skeleton";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn init(config_json: &str, host: Host) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config_json).map_err(|error| format!("bad config: {error}"))?;
        host.log(Level::Info, &format!("{} users configured", config.users.len()));
        Ok(Skeleton { users: config.users })
    }
}

impl AuthBackend for Skeleton {
    fn authenticate(&self, login: &Login) -> Result<Vec<String>, Denial> {
        match self.users.get(login.username) {
            Some(user) if user.password == login.password => Ok(user.tags.clone()),
            _ => Err(Denial::Refused(format!("no user {} with that password", login.username))),
        }
    }

    fn authorize_vhost(&self, request: &VhostAccess) -> Result<(), Denial> {
        let allowed =
            self.users.get(request.username).is_some_and(|user| user.vhosts.iter().any(|v| v == request.vhost));
        if allowed {
            Ok(())
        } else {
            Err(Denial::Refused(format!("{} may not open vhost {}", request.username, request.vhost)))
        }
    }
}

export_plugin!(Skeleton, auth);
