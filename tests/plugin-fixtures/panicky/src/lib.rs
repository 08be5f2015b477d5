//! A plugin that panics where its config says: `{"panic_in": "init"}` panics in init,
//! `{"panic_in": "authenticate"}` in every login. Otherwise it lets in `panicky`/`panicky` to
//! every vhost.

use warren_plugin_api::{export_plugin, AuthBackend, Denial, Host, Login, Plugin, VhostAccess};

pub struct Panicky {
    panic_in_authenticate: bool,
}

/// The value of `panic_in` in a JSON config. A fixture, so a substring check is enough.
fn panics_in(config_json: &str, place: &str) -> bool {
    config_json.replace(' ', "").contains(&format!("\"panic_in\":\"{place}\""))
}

impl Plugin for Panicky {
    const NAME: &'static str = "test-panicky";
    const VERSION: &'static str = "0.0.1";

    fn init(config_json: &str, _host: Host) -> Result<Self, String> {
        if panics_in(config_json, "init") {
            panic!("told to panic in init");
        }
        Ok(Panicky { panic_in_authenticate: panics_in(config_json, "authenticate") })
    }
}

impl AuthBackend for Panicky {
    fn authenticate(&self, login: &Login) -> Result<Vec<String>, Denial> {
        if self.panic_in_authenticate {
            panic!("told to panic in authenticate");
        }
        if login.username == "panicky" && login.password == "panicky" {
            Ok(Vec::new())
        } else {
            Err(Denial::Refused("unknown user".into()))
        }
    }

    fn authorize_vhost(&self, _request: &VhostAccess) -> Result<(), Denial> {
        Ok(())
    }
}

export_plugin!(Panicky, auth);
