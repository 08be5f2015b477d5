//! Bounds that keep one client from taking the broker's memory. Each is a default that the
//! server's configuration may override.

/// Deliveries a session may have queued but not yet written. Large enough to keep a fast
/// consumer's socket busy between wake-ups, small enough that a stalled one holds little.
pub const INBOX_CAPACITY: u32 = 4096;

/// Ready message bytes a queue holds in memory before its publishers must wait: 256 MiB.
/// Until message bodies page to disk, this is what keeps a queue without consumers from
/// exhausting memory; publishers block (TCP pushes back) instead.
pub const QUEUE_READY_BYTES_MAX: usize = 256 * 1024 * 1024;
