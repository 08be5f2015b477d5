//! Server configuration: embedded defaults, an optional TOML file, and flags that override both.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Command-line flags. Each overrides the config file's value.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about = "Warren: a multi-protocol message broker")]
pub struct Flags {
    /// A TOML config file; without one, embedded defaults apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The address every listener binds.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Where the broker keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A tracing filter such as `info` or `warren_amqp=debug`.
    #[arg(long)]
    pub log_level: Option<String>,
    /// The AMQP port; 0 picks a free one (logged at start).
    #[arg(long)]
    pub amqp_port: Option<u16>,
    /// The MQTT port; 0 picks a free one (logged at start).
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    /// The STOMP port; 0 picks a free one (logged at start).
    #[arg(long)]
    pub stomp_port: Option<u16>,
    /// The HTTP port (WebSocket STOMP at /ws and MQTT at /mqtt); 0 picks a free one.
    #[arg(long)]
    pub http_port: Option<u16>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do instead of running the broker.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Loads the configured plugins and checks auth_backends as startup does, lists the
    /// plugins, and exits; no listener starts.
    Plugins,
}

/// The whole configuration, as the file spells it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: IpAddr,
    pub data_dir: PathBuf,
    pub log_level: String,
    /// The most client connections at once, across protocols.
    pub connections_max: usize,
    /// The HTTP port: WebSocket transports, the management API and metrics.
    pub http_port: u16,
    /// A connection whose client takes no bytes for this long (it stopped reading) is closed.
    pub write_timeout_ms: u64,
    /// Ready message bytes a queue holds before its publishers are paused (and told with
    /// connection.blocked).
    pub queue_ready_bytes_max: usize,
    pub amqp: AmqpSection,
    pub mqtt: MqttSection,
    pub stomp: StompSection,
    pub storage: StorageSection,
    /// Operator policies, applied at start.
    pub policies: Vec<PolicySection>,
    /// Authentication backends, tried in order as RabbitMQ's `auth_backends`: `internal` (the
    /// broker's own users) and the names of loaded auth plugins.
    pub auth_backends: Vec<String>,
    pub plugins: PluginsSection,
}

/// `[plugins]`: which plugin libraries to load, and each one's own section
/// (`[plugins.<name>]`), handed to the plugin as JSON.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PluginsSection {
    /// Where plugin libraries are; nothing is loaded from elsewhere. Default: the directory of
    /// the `warren` executable.
    pub directory: Option<PathBuf>,
    /// Plugin names, loaded in this order at startup.
    pub load: Vec<String>,
    /// `[plugins.<name>]` tables.
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, toml::Value>,
}

impl PluginsSection {
    /// The loader's view: the directory resolved, and each section as JSON text.
    pub fn to_plugins_config(&self) -> Result<crate::plugins::PluginsConfig, ConfigError> {
        let directory = match &self.directory {
            Some(directory) => directory.clone(),
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let mut sections = std::collections::BTreeMap::new();
        for (name, section) in &self.sections {
            if !self.load.contains(name) {
                return Err(ConfigError::PluginSection { name: name.clone(), reason: "not in plugins.load".into() });
            }
            if !section.is_table() {
                return Err(ConfigError::PluginSection { name: name.clone(), reason: "must be a table".into() });
            }
            let json = serde_json::to_string(section)
                .map_err(|error| ConfigError::PluginSection { name: name.clone(), reason: error.to_string() })?;
            sections.insert(name.clone(), json);
        }
        Ok(crate::plugins::PluginsConfig { directory, load: self.load.clone(), sections })
    }
}

/// The message store, under `<data_dir>/messages`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// A segment file is closed and a new one started at this size.
    pub segment_bytes: u64,
    /// Confirm persistent messages before they are fsync'd. Faster, but a crash or power
    /// loss can lose messages confirmed in the last moments. Off by default.
    pub confirm_before_sync: bool,
    /// Bodies of persistent messages a durable queue keeps in memory; beyond this the newest
    /// stay on disk only and are read back when consumers reach them. 0 keeps everything.
    pub queue_memory_bytes: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            segment_bytes: warren_store::SEGMENT_BYTES_DEFAULT,
            confirm_before_sync: false,
            queue_memory_bytes: warren_core::limits::QUEUE_MEMORY_BYTES_MAX,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    pub port: u16,
    /// Let clients without credentials in, as `guest`. Off by default.
    pub allow_anonymous: bool,
    /// The largest packet accepted, in bytes.
    pub packet_bytes_max: usize,
    /// Unacknowledged QoS 1 deliveries per session.
    pub prefetch: u32,
    /// Seconds a persistent session is kept without its client.
    pub session_expiry_seconds: u64,
}

impl Default for MqttSection {
    fn default() -> Self {
        let defaults = warren_mqtt::MqttConfig::default();
        MqttSection {
            port: 1883,
            allow_anonymous: defaults.allow_anonymous,
            packet_bytes_max: defaults.packet_bytes_max,
            prefetch: defaults.prefetch,
            session_expiry_seconds: defaults.session_expiry.as_secs(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StompSection {
    pub port: u16,
    /// Let clients without a login in, as `guest`. Off by default.
    pub allow_anonymous: bool,
    /// The heart-beat interval offered both ways, in milliseconds.
    pub heartbeat_ms: u64,
}

impl Default for StompSection {
    fn default() -> Self {
        let defaults = warren_stomp::StompConfig::default();
        StompSection { port: 61613, allow_anonymous: defaults.allow_anonymous, heartbeat_ms: defaults.heartbeat_ms }
    }
}

/// One `[[policies]]` entry, as RabbitMQ's `set_policy` takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub name: String,
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// A regular expression matched against queue and exchange names.
    pub pattern: String,
    /// `queues`, `exchanges` or `all`.
    #[serde(default = "default_apply_to")]
    pub apply_to: String,
    #[serde(default)]
    pub priority: i32,
    /// Keys such as `message-ttl`, `max-length`, `dead-letter-exchange`.
    pub definition: toml::Table,
}

fn default_vhost() -> String {
    "/".into()
}

fn default_apply_to() -> String {
    "all".into()
}

impl PolicySection {
    /// The core policy, with TOML values turned into typed values.
    pub fn to_policy(&self) -> Result<warren_core::policy::Policy, ConfigError> {
        use warren_core::value::{Table, Value};
        let invalid = |reason: String| ConfigError::Policy { name: self.name.clone(), reason };
        let apply_to = warren_core::policy::ApplyTo::from_name(&self.apply_to)
            .ok_or_else(|| invalid(format!("apply_to must be queues, exchanges or all, not '{}'", self.apply_to)))?;
        let mut definition = Table::new();
        for (key, value) in &self.definition {
            let value = match value {
                toml::Value::Integer(number) => Value::I64(*number),
                toml::Value::String(text) => Value::string(text),
                toml::Value::Boolean(flag) => Value::Bool(*flag),
                other => return Err(invalid(format!("unsupported value for '{key}': {other}"))),
            };
            definition.insert(key.as_str(), value);
        }
        warren_core::policy::Policy::new(&self.name, &self.pattern, apply_to, self.priority, definition)
            .map_err(|error| invalid(error.to_string()))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSection {
    pub port: u16,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_seconds: u16,
    /// Milliseconds a delivery may stay unacknowledged before its channel is closed; 0 disables.
    pub consumer_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // All interfaces, as RabbitMQ listens by default; `guest` still logs in only over
            // loopback.
            bind: IpAddr::from([0, 0, 0, 0]),
            data_dir: PathBuf::from("warren-data"),
            log_level: "info".into(),
            connections_max: 65_536,
            http_port: 15672,
            write_timeout_ms: warren_net::WRITE_TIMEOUT_DEFAULT.as_millis() as u64,
            queue_ready_bytes_max: warren_core::limits::QUEUE_READY_BYTES_MAX,
            amqp: AmqpSection::default(),
            mqtt: MqttSection::default(),
            stomp: StompSection::default(),
            storage: StorageSection::default(),
            policies: Vec::new(),
            auth_backends: vec!["internal".into()],
            plugins: PluginsSection::default(),
        }
    }
}

impl Default for AmqpSection {
    fn default() -> Self {
        let defaults = warren_amqp::AmqpConfig::default();
        AmqpSection {
            port: 5672,
            frame_max: defaults.frame_bytes_max,
            channel_max: defaults.channel_max,
            heartbeat_seconds: defaults.heartbeat_seconds,
            consumer_timeout_ms: defaults.consumer_timeout.map_or(0, |timeout| timeout.as_millis() as u64),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("policy '{name}': {reason}")]
    Policy { name: String, reason: String },
    #[error("amqp.frame_max must be at least 4096, got {frame_max}")]
    FrameMaxTooSmall { frame_max: u32 },
    #[error("storage.segment_bytes must be at least 4096, got {segment_bytes}")]
    SegmentTooSmall { segment_bytes: u64 },
    #[error("[plugins.{name}]: {reason}")]
    PluginSection { name: String, reason: String },
    #[error("auth_backends is empty: name at least one backend, such as \"internal\"")]
    NoAuthBackends,
}

impl Config {
    /// Loads the file named by the flags (if any), then applies the flags.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(bind) = flags.bind {
            config.bind = bind;
        }
        if let Some(data_dir) = &flags.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(log_level) = &flags.log_level {
            config.log_level = log_level.clone();
        }
        if let Some(port) = flags.amqp_port {
            config.amqp.port = port;
        }
        if let Some(port) = flags.mqtt_port {
            config.mqtt.port = port;
        }
        if let Some(port) = flags.stomp_port {
            config.stomp.port = port;
        }
        if let Some(port) = flags.http_port {
            config.http_port = port;
        }
        if config.amqp.frame_max < 4096 {
            return Err(ConfigError::FrameMaxTooSmall { frame_max: config.amqp.frame_max });
        }
        if config.storage.segment_bytes < 4096 {
            return Err(ConfigError::SegmentTooSmall { segment_bytes: config.storage.segment_bytes });
        }
        if config.auth_backends.is_empty() {
            return Err(ConfigError::NoAuthBackends);
        }
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    pub fn stomp(&self) -> warren_stomp::StompConfig {
        warren_stomp::StompConfig {
            allow_anonymous: self.stomp.allow_anonymous,
            heartbeat_ms: self.stomp.heartbeat_ms,
            write_timeout: self.write_timeout(),
            ..Default::default()
        }
    }

    pub fn mqtt(&self) -> warren_mqtt::MqttConfig {
        warren_mqtt::MqttConfig {
            allow_anonymous: self.mqtt.allow_anonymous,
            packet_bytes_max: self.mqtt.packet_bytes_max,
            prefetch: self.mqtt.prefetch.max(1),
            // x-expires accepts at most 2^32-1 ms (about 49 days).
            session_expiry: std::time::Duration::from_secs(self.mqtt.session_expiry_seconds.clamp(1, 4_294_967)),
            write_timeout: self.write_timeout(),
            ..Default::default()
        }
    }

    pub fn amqp(&self) -> warren_amqp::AmqpConfig {
        warren_amqp::AmqpConfig {
            frame_bytes_max: self.amqp.frame_max,
            channel_max: self.amqp.channel_max,
            heartbeat_seconds: self.amqp.heartbeat_seconds,
            consumer_timeout: (self.amqp.consumer_timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(self.amqp.consumer_timeout_ms)),
            write_timeout: self.write_timeout(),
            ..Default::default()
        }
    }

    fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.write_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("warren-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("warren.toml");
        std::fs::write(&path, "data_dir = \"/tmp/x\"\n[amqp]\nport = 1234\nheartbeat_seconds = 5\n")
            .expect("write config");
        let flags = Flags::parse_from(["warren", "--config", path.to_str().expect("utf-8"), "--amqp-port", "0"]);
        let config = Config::load(&flags).expect("loads");
        assert_eq!(config.amqp.port, 0);
        assert_eq!(config.amqp.heartbeat_seconds, 5);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn policies_parse_and_are_checked() {
        let config: Config = toml::from_str(
            "[[policies]]\nname = \"ttl\"\npattern = \"^ttl\\\\.\"\napply_to = \"queues\"\npriority = 2\n\
             [policies.definition]\nmessage-ttl = 500\ndead-letter-exchange = \"dlx\"\n",
        )
        .expect("parses");
        let policy = config.policies[0].to_policy().expect("valid policy");
        assert_eq!(policy.pattern(), "^ttl\\.");
        assert_eq!(policy.priority, 2);
        let bad: Config =
            toml::from_str("[[policies]]\nname = \"x\"\npattern = \".*\"\n[policies.definition]\nmessage-ttl = -5\n")
                .expect("parses");
        assert!(bad.policies[0].to_policy().is_err());
    }

    #[test]
    fn plugin_sections_become_json() {
        let config: Config = toml::from_str(
            "auth_backends = [\"internal\", \"ldap-auth\"]\n[plugins]\ndirectory = \"/opt/p\"\n\
             load = [\"ldap-auth\"]\n[plugins.ldap-auth]\nurl = \"ldap://x\"\ntimeout_ms = 5\n",
        )
        .expect("parses");
        let plugins = config.plugins.to_plugins_config().expect("valid");
        assert_eq!(plugins.directory, PathBuf::from("/opt/p"));
        assert_eq!(plugins.sections["ldap-auth"], r#"{"timeout_ms":5,"url":"ldap://x"}"#);
        let stray: Config = toml::from_str("[plugins]\nload = []\n[plugins.other]\nx = 1\n").expect("parses");
        assert!(stray.plugins.to_plugins_config().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("colour = 1").is_err());
    }
}
