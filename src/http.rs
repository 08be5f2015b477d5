//! The HTTP port: WebSocket transports for browsers, STOMP at `/ws` (as RabbitMQ's Web-STOMP)
//! and MQTT at `/mqtt` (mqtt.js's default path; RabbitMQ's Web-MQTT uses `/ws` on its own
//! port). `/metrics` serves Prometheus text. The management API will be served here too.
//!
//! Each WebSocket is bridged to the protocol's ordinary `serve` through a bounded in-memory
//! duplex pipe: one task moves WebSocket messages into the pipe and the pipe's output into
//! WebSocket messages (one STOMP frame per message), so the adapters see a byte stream, as over
//! TCP, and keep their own framing, limits and backpressure (a full pipe stops the pump reading
//! the WebSocket).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tracing::{debug, info};
use warren_core::Broker;

/// Bytes buffered in each direction of a WebSocket bridge.
const BRIDGE_BYTES: usize = 256 * 1024;
/// The largest WebSocket message accepted: the adapters' own frame bounds apply after it.
const WEBSOCKET_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long the second half of a bridge may run after the first ended.
const BRIDGE_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// The STOMP subprotocols Web-STOMP clients offer, preferred first.
const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// What the HTTP port serves.
#[derive(Clone)]
pub struct HttpState {
    pub broker: Arc<Broker>,
    /// The broker-wide connection limit, shared with the TCP listeners.
    pub connections: Arc<tokio::sync::Semaphore>,
    pub stomp: Arc<warren_stomp::StompState>,
    pub mqtt: Arc<warren_mqtt::MqttState>,
    pub store: Arc<warren_store::Store>,
    /// How long a WebSocket send may stall before the bridge gives up on the browser.
    pub write_timeout: std::time::Duration,
}

/// How the broker's output is framed into WebSocket messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// MQTT: binary messages.
    Binary,
    /// STOMP: one frame per message, as RabbitMQ's Web-STOMP sends them (some clients parse
    /// each message as one frame); text, or binary when the frame is not UTF-8 (a binary body).
    /// A heart-beat EOL is a message of its own.
    StompFrames,
}

/// Serves the HTTP port until shutdown.
pub async fn serve(listener: TcpListener, state: HttpState, management: Arc<crate::management::Management>) {
    let shutdown = state.broker.shutdown().clone();
    let app = Router::new()
        .route("/ws", get(stomp_websocket))
        .route("/mqtt", get(mqtt_websocket))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(crate::management::routes(management));
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(error) = served.await {
        tracing::error!(%error, "http server failed");
    }
    info!(protocol = "http", "listener stopped");
}

/// Prometheus text exposition of the broker's counters.
async fn metrics(State(state): State<HttpState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let stats = state.store.stats();
    let mut text = String::new();
    for (name, help, value) in [
        ("warren_store_syncs_total", "fsyncs (fdatasync) of message store segments", stats.syncs.load(Relaxed)),
        (
            "warren_store_synced_publishes_total",
            "persistent messages covered by completed fsyncs",
            stats.synced_publishes.load(Relaxed),
        ),
        (
            "warren_store_segments_deleted_total",
            "message store segments deleted once nothing in them was live",
            stats.segments_deleted.load(Relaxed),
        ),
    ] {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn stomp_websocket(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
) -> Response {
    let upgrade = upgrade.protocols(STOMP_SUBPROTOCOLS).max_message_size(WEBSOCKET_MESSAGE_BYTES_MAX);
    upgrade.on_upgrade(move |socket| async move {
        let stomp = state.stomp.clone();
        start(&state, socket, Framing::StompFrames, move |pipe| warren_stomp::serve(pipe, peer, stomp));
    })
}

async fn mqtt_websocket(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
) -> Response {
    let upgrade = upgrade.protocols(["mqtt", "mqttv3.1"]).max_message_size(WEBSOCKET_MESSAGE_BYTES_MAX);
    upgrade.on_upgrade(move |socket| async move {
        let mqtt = state.mqtt.clone();
        start(&state, socket, Framing::Binary, move |pipe| warren_mqtt::serve(pipe, peer, mqtt));
    })
}

/// Starts a WebSocket session: the bridge and the protocol's session, both under the shutdown
/// tracker and holding a permit of the broker-wide connection limit, as TCP connections do.
fn start<F, Fut>(state: &HttpState, socket: WebSocket, framing: Framing, serve: F)
where
    F: FnOnce(DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!(protocol = "websocket", "connection limit reached; refusing");
        return;
    };
    let (ours, theirs) = tokio::io::duplex(BRIDGE_BYTES);
    let shutdown = state.broker.shutdown();
    shutdown.spawn(pump(socket, theirs, framing, state.write_timeout));
    let session = serve(ours);
    shutdown.spawn(async move {
        session.await;
        drop(permit);
    });
}

/// Moves bytes between a WebSocket and the adapter's end of the pipe until either side ends.
async fn pump(socket: WebSocket, pipe: DuplexStream, framing: Framing, write_timeout: std::time::Duration) {
    let (mut sender, mut receiver) = socket.split();
    // A browser that stops reading: the send gives up after `write_timeout`, like a TCP write.
    let stalled = || axum::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "the browser stopped reading"));
    let (mut from_broker, mut to_broker) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = receiver.next().await {
            let written = match message {
                Message::Binary(bytes) => to_broker.write_all(&bytes).await,
                Message::Text(text) => to_broker.write_all(text.as_bytes()).await,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = to_broker.shutdown().await;
    };
    let outbound = async {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut pending = BytesMut::new();
        loop {
            let read = match from_broker.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let sent = match framing {
                Framing::Binary => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buffer[..read]));
                    tokio::time::timeout(write_timeout, sender.send(message)).await.unwrap_or_else(|_| Err(stalled()))
                }
                Framing::StompFrames => {
                    pending.extend_from_slice(&buffer[..read]);
                    let mut sent = Ok(());
                    while let Some(message) = next_stomp_message(&mut pending) {
                        sent = tokio::time::timeout(write_timeout, sender.send(message))
                            .await
                            .unwrap_or_else(|_| Err(stalled()));
                        if sent.is_err() {
                            break;
                        }
                    }
                    sent
                }
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = sender.close().await;
    };
    // When one half ends the other gets a bounded grace to finish: when the browser goes, the
    // broker sees end of stream and closes its side, so the outbound half still sends the last
    // frames (a RECEIPT or an ERROR); when the broker closes first, the WebSocket is closed. A
    // peer that vanished without closing cannot hold the task beyond the grace.
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => { let _ = tokio::time::timeout(BRIDGE_CLOSE_GRACE, outbound).await; }
        _ = &mut outbound => { let _ = tokio::time::timeout(BRIDGE_CLOSE_GRACE, inbound).await; }
    }
    debug!("websocket bridge closed");
}

/// Takes the next complete STOMP frame or heart-beat from the front of `pending` as one
/// WebSocket message. The adapter bounds what it writes, so `pending` holds at most one frame.
fn next_stomp_message(pending: &mut BytesMut) -> Option<Message> {
    if pending.first() == Some(&b'\n') {
        pending.advance(1);
        return Some(Message::Text("\n".into()));
    }
    let frame = pending.split_to(warren_stomp::codec::encoded_frame_len(pending)?).freeze();
    Some(match std::str::from_utf8(&frame) {
        Ok(text) => Message::Text(text.into()),
        Err(_) => Message::Binary(frame),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stomp_output_is_cut_into_one_frame_per_message() {
        let mut stream =
            BytesMut::from(&b"\nRECEIPT\nreceipt-id:1\n\n\0MESSAGE\ncontent-length:3\n\na\0\xff\0MESS"[..]);
        let messages: Vec<Message> = std::iter::from_fn(|| next_stomp_message(&mut stream)).collect();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0], Message::Text("\n".into()));
        assert_eq!(messages[1], Message::Text("RECEIPT\nreceipt-id:1\n\n\0".into()));
        assert_eq!(messages[2], Message::Binary(Bytes::from_static(b"MESSAGE\ncontent-length:3\n\na\0\xff\0")));
        assert_eq!(&stream[..], b"MESS");
    }
}
