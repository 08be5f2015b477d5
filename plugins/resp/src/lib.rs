//! A Redis front-end for Warren: enough of RESP2 and RESP3 that `redis-cli` and redis-py work
//! unmodified,
//! over the broker's plugin ABI only (no tokio object crosses it; this plugin runs plain threads).
//!
//! - `PUBLISH`, `SUBSCRIBE`, `PSUBSCRIBE` (and the unsubscribes) ride `amq.topic`: a channel is a
//!   routing key, so a Redis subscriber to `sensors.kitchen` sees an MQTT publish to
//!   `sensors/kitchen` and an AMQP publish with that key. `PSUBSCRIBE` patterns are AMQP topic
//!   patterns (`*` one word, `#` any number of words), not Redis globs.
//! - `LPUSH`/`RPUSH` append to a durable queue named by the key, as persistent messages: the
//!   reply comes once they are on disk. `BLPOP`/`BRPOP`/`LPOP`/`RPOP` take from the queue's
//!   head, so a list is a FIFO queue whichever side is named. `LLEN` counts ready messages.
//! - `AUTH`, `HELLO` (protocols 2 and 3), `PING`, `ECHO`, `QUIT`, `RESET`, `SELECT 0`, `COMMAND`,
//!   `CLIENT SETNAME/SETINFO/ID`;
//!   anything else is an unknown command, as Redis words it.
//!
//! ```toml
//! [plugins]
//! load = ["resp"]
//! [plugins.resp]
//! port = 6379
//! ```
//!
//! # Layout
//! - `codec`: RESP parsing and reply encoding, RESP2 and RESP3 (sans-IO).
//! - `connection`: one client: its thread, its writer, its commands.
//! - `outbox`: what waits to be written to a client, bounded; a subscription's stages.
//! - `config`: the config section.

mod codec;
mod config;
mod connection;
mod outbox;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use warren_plugin_api::{export_plugin, Host, Level, Plugin, Protocol};

pub use config::Config;

/// What every connection thread shares.
pub struct Shared {
    pub host: Host,
    pub config: Config,
    /// Connections open now, for the limit.
    pub open: AtomicUsize,
    pub stopping: AtomicBool,
    /// Every open client socket, so that `stop` can close them.
    pub streams: Mutex<Vec<(u64, Arc<TcpStream>)>>,
}

pub struct Resp {
    shared: Arc<Shared>,
    /// Where the listener is bound, once started.
    bound: Mutex<Option<SocketAddr>>,
}

impl Plugin for Resp {
    const NAME: &'static str = "resp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn init(config_json: &str, host: Host) -> Result<Self, String> {
        let config = Config::parse(config_json)?;
        let shared = Arc::new(Shared {
            host,
            config,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        Ok(Resp { shared, bound: Mutex::new(None) })
    }
}

impl Protocol for Resp {
    fn start(&self) -> Result<(), String> {
        let address = SocketAddr::new(self.shared.config.bind, self.shared.config.port);
        let listener = TcpListener::bind(address).map_err(|error| format!("cannot listen on {address}: {error}"))?;
        let local = listener.local_addr().map_err(|error| error.to_string())?;
        *self.bound.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(local);
        // The same words as the broker's own listeners, so that tools (and tests) find the port.
        self.shared.host.log(Level::Info, &format!("listening protocol=resp addr={local}"));
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("resp-accept".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(|error| format!("cannot start the accept thread: {error}"))?;
        Ok(())
    }

    fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own; it sees `stopping` and ends.
        if let Some(address) = *self.bound.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            let _ = TcpStream::connect(address);
        }
        for (_, stream) in self.shared.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors, say: back off instead of spinning.
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        next_id += 1;
        let id = next_id;
        let shared = shared.clone();
        let spawned =
            std::thread::Builder::new().name(format!("resp-{id}")).spawn(move || connection::serve(stream, id, shared));
        if let Err(error) = spawned {
            // The stream went with the closure and is closed; the client sees a reset.
            let message = format!("cannot start a connection thread: {error}");
            listener_log(&message);
        }
    }
}

/// For the rare failure with no host at hand; the host logs everything else.
fn listener_log(message: &str) {
    eprintln!("warren resp plugin: {message}");
}

export_plugin!(Resp, protocol);
