//! Bounds that keep one client from taking the broker's memory. Each is a default that the
//! server's configuration may override.

/// Deliveries a session may have queued but not yet written. Large enough to keep a fast
/// consumer's socket busy between wake-ups, small enough that a stalled one holds little.
pub const INBOX_CAPACITY: u32 = 4096;

/// Ready message bytes a queue holds in memory before its publishers must wait: 256 MiB.
/// Paged messages (below) do not count: this bounds what cannot be paged (transient messages,
/// and persistent ones not yet synced), so a queue without consumers cannot exhaust memory;
/// publishers block (TCP pushes back) instead.
pub const QUEUE_READY_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Resident body bytes above which a durable queue pages its newest synced persistent messages
/// out to the journal, keeping only references (about 80 bytes each): 64 MiB. The bodies are
/// read back when consumers reach them, so a backlog larger than memory streams from disk.
pub const QUEUE_MEMORY_BYTES_MAX: usize = 64 * 1024 * 1024;
