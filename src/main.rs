//! The `warren` server: loads configuration, starts the core and each protocol's listener, and
//! shuts down politely on SIGTERM or SIGINT.

mod cli;
mod config;
mod definitions;
mod http;
mod listener;
mod management;
mod plugins;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::Semaphore;
use tracing::{error, info};
use warren_core::auth::InternalUsers;
use warren_core::journal::Journal;
use warren_core::name::{QueueName, VhostName};
use warren_core::shutdown::Shutdown;
use warren_core::{Broker, BrokerConfig};
use warren_store::{Recovery, Store, StoreConfig};

use config::{Command, Config, Flags};

/// How long shutdown waits for connections to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("warren: {error}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&config.log_level);
    if let Some(Command::Plugins) = flags.command {
        return cli::list_plugins(&config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "broker failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn run(config: Config) -> std::io::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    info!(data_dir = %config.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "starting warren");
    let shutdown = Shutdown::new();
    let users = Arc::new(InternalUsers::with_default_guest());
    let plugins_config = config.plugins.to_plugins_config().map_err(std::io::Error::other)?;
    let plugin_host = plugins::PluginHost::new(tokio::runtime::Handle::current());
    let loaded_plugins = plugins::load_all(&plugins_config, plugin_host).map_err(std::io::Error::other)?;
    let authenticator =
        plugins::authenticator(&config.auth_backends, users.clone(), &loaded_plugins).map_err(std::io::Error::other)?;
    info!(auth_backends = ?config.auth_backends, "authentication");
    let broker_config = BrokerConfig {
        queue_ready_bytes_max: config.queue_ready_bytes_max,
        queue_memory_bytes_max: config.storage.queue_memory_bytes,
        ..BrokerConfig::default()
    };
    let broker = Broker::new(broker_config, authenticator, shutdown.clone());
    let management = management::Management::new(broker.clone(), users);
    let (store, store_recovery) = open_store(&config, &broker)?;
    let definitions_complete = restore_definitions(&config, &broker, &management)?;
    let retained = recover_messages(&broker, &store, store_recovery, definitions_complete).await;
    let connections = Arc::new(Semaphore::new(config.connections_max));

    let amqp_config = Arc::new(config.amqp());
    let amqp = listener::bind("amqp", SocketAddr::new(config.bind, config.amqp.port)).await?;
    let amqp_broker = broker.clone();
    tokio::spawn(listener::accept_loop("amqp", amqp, broker.clone(), connections.clone(), move |stream, peer| {
        warren_amqp::serve(stream, peer, amqp_broker.clone(), amqp_config.clone())
    }));

    let mqtt_state = warren_mqtt::MqttState::new(broker.clone(), config.mqtt());
    for ((vhost, pseudo_queue), found) in retained {
        mqtt_state.restore(&vhost, &pseudo_queue, found);
    }
    mqtt_state.start_restored();
    let websocket_mqtt = mqtt_state.clone();
    let mqtt = listener::bind("mqtt", SocketAddr::new(config.bind, config.mqtt.port)).await?;
    let mqtt_connections = connections.clone();
    tokio::spawn(listener::accept_loop("mqtt", mqtt, broker.clone(), mqtt_connections, move |stream, peer| {
        warren_mqtt::serve(stream, peer, mqtt_state.clone())
    }));

    let stomp_state = warren_stomp::StompState::new(broker.clone(), config.stomp());
    let websocket_stomp = stomp_state.clone();
    let stomp = listener::bind("stomp", SocketAddr::new(config.bind, config.stomp.port)).await?;
    tokio::spawn(listener::accept_loop("stomp", stomp, broker.clone(), connections.clone(), move |stream, peer| {
        warren_stomp::serve(stream, peer, stomp_state.clone())
    }));

    let http = listener::bind("http", SocketAddr::new(config.bind, config.http_port)).await?;
    let http_state = http::HttpState {
        broker: broker.clone(),
        connections: connections.clone(),
        stomp: websocket_stomp,
        mqtt: websocket_mqtt,
        store: store.clone(),
        write_timeout: Duration::from_millis(config.write_timeout_ms.max(1)),
    };
    tokio::spawn(http::serve(http, http_state, management.clone()));

    plugin_host.attach(broker.clone(), connections.clone());
    let protocol_plugins = plugins::protocol_listeners(&loaded_plugins);
    for listener in &protocol_plugins {
        listener.start().await.map_err(std::io::Error::other)?;
        info!(plugin = listener.name(), "protocol plugin started");
    }

    wait_for_signal().await?;
    info!("shutting down");
    for listener in &protocol_plugins {
        listener.stop().await;
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, shutdown.shut_down()).await.is_err() {
        error!("connections did not close within the grace period");
    }
    store.close();
    info!("stopped");
    Ok(())
}

/// Opens the message store and makes it the broker's journal.
fn open_store(config: &Config, broker: &Broker) -> std::io::Result<(Arc<Store>, Recovery)> {
    let store_config = StoreConfig {
        dir: config.data_dir.join("messages"),
        segment_bytes: config.storage.segment_bytes,
        confirm_before_sync: config.storage.confirm_before_sync,
    };
    if store_config.confirm_before_sync {
        tracing::warn!("storage.confirm_before_sync is on: confirmed messages can be lost in a crash");
    }
    let (store, recovery) = Store::open(store_config).map_err(std::io::Error::other)?;
    broker.set_journal(store.clone());
    Ok((store, recovery))
}

/// What recovery found for MQTT's pseudo-queues (retained messages, session state), by (vhost,
/// pseudo-queue).
type RetainedFound = Vec<((VhostName, QueueName), Vec<warren_core::queue::Recovered>)>;

/// Puts the messages read back from the store into their queues, and returns the retained
/// MQTT messages (journaled under pseudo-queues) for the MQTT adapter. Messages of queues that
/// no longer exist are removed from the store, so a queue declared later under the same name
/// does not inherit them (unless some definition failed to restore: then the queue may exist
/// after all, and its messages are kept on disk). Returns once those removals are synced.
async fn recover_messages(broker: &Broker, store: &Store, recovery: Recovery, remove_orphans: bool) -> RetainedFound {
    let report = recovery.report;
    let mut orphans = 0usize;
    let mut retained = Vec::new();
    for ((vhost_name, queue_name), messages) in recovery.queues {
        if warren_mqtt::MqttState::is_pseudo_queue(&queue_name) {
            retained.push(((vhost_name, queue_name), messages));
            continue;
        }
        let queue = broker
            .vhost(&vhost_name)
            .and_then(|vhost| vhost.queue(&queue_name, warren_core::name::ConnectionId(0)).ok())
            .filter(|queue| queue.is_journaled());
        match queue {
            Some(queue) => queue.restore(messages),
            None if !remove_orphans => {
                tracing::warn!(vhost = %vhost_name, queue = %queue_name, messages = messages.len(),
                    "stored messages of a queue that was not restored are kept on disk");
            }
            None => {
                orphans += messages.len();
                for recovered in messages {
                    store.removed(&vhost_name, &queue_name, recovered.reference.id);
                }
            }
        }
    }
    if orphans > 0 {
        tracing::warn!(orphans, "stored messages of queues that no longer exist were dropped");
        store.sync().await;
    }
    info!(
        segments = report.segments,
        records = report.records,
        messages = report.live,
        cut = report.cut.len(),
        retained = retained.len(),
        "messages recovered"
    );
    retained
}

/// Recreates the stored definitions (vhosts, exchanges, queues, bindings, then the config
/// file's policies, then users and runtime policies, which override a config policy of the
/// same name), then stores them again after every change. Returns whether every stored
/// exchange, queue and binding was recreated.
fn restore_definitions(
    config: &Config,
    broker: &Arc<Broker>,
    management: &Arc<management::Management>,
) -> std::io::Result<bool> {
    let file = definitions::path(&config.data_dir);
    let invalid = |error: definitions::DefinitionsError| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
    let mut complete = true;
    let stored = definitions::load(&file).map_err(invalid)?;
    if let Some(stored) = &stored {
        for failure in broker.restore(stored) {
            error!(%failure, "a stored definition could not be restored");
            complete = false;
        }
    }
    apply_policies(config, broker)?;
    if let Some(stored) = &stored {
        for failure in management.restore(stored) {
            error!(%failure, "a stored policy could not be restored");
        }
        info!(
            vhosts = stored.vhosts.len(),
            users = stored.users.as_ref().map_or(0, Vec::len),
            policies = stored.policies.len(),
            exchanges = stored.exchanges.len(),
            queues = stored.queues.len(),
            bindings = stored.bindings.len(),
            "definitions restored"
        );
    }
    let weak = Arc::downgrade(management);
    let writer = definitions::GroupWriter::default();
    broker.on_definitions_changed(move || {
        let Some(management) = weak.upgrade() else { return };
        let save = || {
            writer.changed(|| {
                if let Err(error) = definitions::save(&file, &management.snapshot()) {
                    error!(%error, "cannot store definitions");
                }
            })
        };
        // The change returns once it is on disk; on a runtime worker, other tasks move to
        // other threads meanwhile.
        match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(save),
            _ => save(),
        }
    });
    Ok(complete)
}

/// Sets the config file's policies on their vhosts.
fn apply_policies(config: &Config, broker: &Broker) -> std::io::Result<()> {
    for section in &config.policies {
        let policy =
            section.to_policy().map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
        let vhost = broker.vhost(&warren_core::name::VhostName::new(&section.vhost)).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("policy '{}': vhost '{}' does not exist", section.name, section.vhost),
            )
        })?;
        info!(policy = %section.name, pattern = %section.pattern, vhost = %section.vhost, "policy set");
        vhost.set_policy(policy);
    }
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => info!(signal = "SIGTERM", "signal received"),
        _ = interrupt.recv() => info!(signal = "SIGINT", "signal received"),
    }
    Ok(())
}
