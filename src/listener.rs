//! Accept loops: one per protocol port, each connection on its own task under the shutdown
//! tracker, with a broker-wide bound on connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info, warn};
use warren_core::Broker;

/// Binds a listener and logs the chosen address (port 0 picks a free one).
pub async fn bind(protocol: &'static str, address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    info!(protocol = %protocol, addr = %local, "listening");
    Ok(listener)
}

/// Accepts connections until shutdown, handing each to `serve`.
pub async fn accept_loop<F, Fut>(
    protocol: &'static str,
    listener: TcpListener,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = broker.shutdown().clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: back off briefly rather than spin.
                warn!(protocol = %protocol, %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(protocol = %protocol, %peer, "connection limit reached; refusing");
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            warn!(protocol = %protocol, %peer, %error, "cannot set TCP_NODELAY");
        }
        let connection = serve(stream, peer);
        shutdown.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    info!(protocol = %protocol, "listener stopped");
}
