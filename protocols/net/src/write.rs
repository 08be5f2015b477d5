//! Writes that cannot hang: a client that stops reading fills its socket's send buffer, and a
//! write to it would wait for ever, holding the connection's resources. Every writer task gives
//! up after a stall of `write_timeout` and closes the connection, as RabbitMQ's listeners do
//! (Ranch's `send_timeout` with `send_timeout_close`).

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The default: Ranch's `send_timeout`, which RabbitMQ's AMQP listener inherits.
pub const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Writes `bytes` whole, failing with `TimedOut` if the peer takes no bytes for `timeout`.
/// The clock restarts whenever the socket takes some, so a slow reader is not cut off, only a
/// stalled one.
pub async fn write_all_bounded<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match tokio::time::timeout(timeout, writer.write(bytes)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(written)) => bytes = &bytes[written..],
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer stopped reading")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_peer_times_out_and_a_reading_one_does_not() {
        // The other end stays open (held by `_theirs`) but never reads.
        let (mut ours, _theirs) = tokio::io::duplex(1024);
        let big = vec![7u8; 64 * 1024];
        // Nobody reads: the pipe's 1 KiB fills and the write stalls.
        let stalled = write_all_bounded(&mut ours, &big, Duration::from_millis(100)).await;
        assert_eq!(stalled.map_err(|error| error.kind()), Err(std::io::ErrorKind::TimedOut));
        // A peer that keeps reading, however slowly, gets everything.
        let (mut ours, mut theirs_reading) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0u8; 512];
            while received.len() < 64 * 1024 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let read = tokio::io::AsyncReadExt::read(&mut theirs_reading, &mut chunk).await.expect("read");
                received.extend_from_slice(&chunk[..read]);
            }
            received
        });
        write_all_bounded(&mut ours, &big, Duration::from_millis(100)).await.expect("written");
        assert_eq!(reader.await.expect("reader"), big);
    }
}
