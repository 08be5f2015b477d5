//! Subcommands that print for an operator and exit, instead of running the broker. The one
//! place in the server that writes to stdout.

use std::process::ExitCode;

use crate::config::Config;
use crate::plugins;

/// `warren plugins`: loads the configured plugins and checks `auth_backends` as startup does,
/// then lists them. Each plugin's init runs; no listener starts.
pub fn list_plugins(config: &Config) -> ExitCode {
    let loaded = config.plugins.to_plugins_config().map_err(|error| error.to_string()).and_then(|plugins| {
        // Loading runs each plugin's init, which may log through the host; nothing starts.
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| error.to_string())?;
        let host = plugins::PluginHost::new(runtime.handle().clone());
        let loaded = plugins::load_all(&plugins, host).map_err(|error| error.to_string())?;
        let internal = std::sync::Arc::new(warren_core::auth::InternalUsers::with_default_guest());
        plugins::authenticator(&config.auth_backends, internal, &loaded).map_err(|error| error.to_string())?;
        Ok(loaded)
    });
    match loaded {
        Ok(loaded) if loaded.is_empty() => {
            println!("no plugins configured (plugins.load is empty)");
            ExitCode::SUCCESS
        }
        Ok(loaded) => {
            println!("{:<20} {:<10} {:<4} {:<12} FILE", "NAME", "VERSION", "ABI", "CAPABILITIES");
            for plugin in loaded {
                println!(
                    "{:<20} {:<10} {:<4} {:<12} {}",
                    plugin.name,
                    plugin.version,
                    plugin.abi_version,
                    plugin.capabilities().join(","),
                    plugin.path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("warren: {error}");
            ExitCode::FAILURE
        }
    }
}
