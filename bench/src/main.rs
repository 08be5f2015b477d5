//! `warren-bench`: a lean AMQP 0-9-1 load generator. One producer thread publishes to a queue
//! and one consumer thread consumes from it, each on its own connection with blocking sockets
//! and batched writes, using Warren's sans-IO codec. It works against any AMQP 0-9-1 broker, so
//! the same client measures Warren and RabbitMQ. Prints one JSON line per run.
//!
//! Throughput runs keep at most `--window` messages in flight (published, not yet consumed), so
//! the queue stays short and the figure measures steady-state flow, not queue growth. Latency
//! runs publish at a fixed `--rate` and report p50/p99 of publish-to-consume time.

mod backlog;
mod client;
mod mqtt;
mod stomp;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Clone, Debug, Parser)]
#[command(name = "warren-bench")]
pub struct Options {
    /// The broker's AMQP address.
    #[arg(long, default_value = "127.0.0.1:5672")]
    pub addr: String,
    /// Message body size in bytes (at least 8: the body carries its send time).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// `auto` (no-ack consumer) or `manual` (ack every message).
    #[arg(long, default_value = "auto")]
    pub ack: String,
    /// Consumer prefetch for manual ack.
    #[arg(long, default_value_t = 100)]
    pub prefetch: u16,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Most messages in flight at once in throughput mode.
    #[arg(long, default_value_t = 20_000)]
    pub window: u64,
    /// Messages per second; 0 means as fast as the window allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Publish with delivery_mode 2 (persistent).
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms (AMQP): unconfirmed publishes count against the window too.
    #[arg(long)]
    pub confirm: bool,
    /// `amqp`, `mqtt` or `stomp`.
    #[arg(long, default_value = "amqp")]
    pub protocol: String,
    /// MQTT QoS of publishes and subscriptions (0 or 1).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Consumer connections, each receiving every message (MQTT fan-out); 1 elsewhere.
    #[arg(long, default_value_t = 1)]
    pub subscribers: u64,
    /// Backlog mode (AMQP): publish exactly this many persistent messages to `--queue` with
    /// confirms and no consumer, each body carrying its index; then exit.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Backlog mode (AMQP): consume this many messages from `--queue`, checking that indexes
    /// arrive in order; then exit.
    #[arg(long, default_value_t = 0)]
    pub consume_count: u64,
    /// The durable queue of backlog mode.
    #[arg(long, default_value = "warren-backlog")]
    pub queue: String,
}

/// What the threads share.
pub struct Shared {
    pub epoch: Instant,
    pub sent: AtomicU64,
    /// Publishes the broker confirmed (with `--confirm`).
    pub confirmed: AtomicU64,
    /// Deliveries counted across all consumers.
    pub received: AtomicU64,
    /// Consumers each expected to receive every message.
    pub subscribers: u64,
    pub stop_publishing: AtomicBool,
    pub stop_consuming: AtomicBool,
}

impl Shared {
    /// Messages published but not yet delivered to every consumer.
    pub fn in_flight(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received.load(Ordering::Acquire) / self.subscribers)
    }
}

/// The threads of one run.
pub struct Running {
    pub producer: std::thread::JoinHandle<()>,
    /// Each returns its publish-to-deliver latencies in nanoseconds.
    pub consumers: Vec<std::thread::JoinHandle<Vec<u64>>>,
    pub cleanup: Box<dyn FnOnce() + Send>,
}

fn main() {
    let options = Options::parse();
    assert!(options.size >= 8, "--size must be at least 8");
    if options.count > 0 || options.consume_count > 0 {
        return backlog::run(&options);
    }
    let subscribers = if options.protocol == "mqtt" { options.subscribers.max(1) } else { 1 };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        received: AtomicU64::new(0),
        subscribers,
        stop_publishing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
    });
    let running = match options.protocol.as_str() {
        "amqp" => start_amqp(&options, &shared),
        "mqtt" => mqtt::start(&options, &shared),
        "stomp" => stomp::start(&options, &shared),
        other => panic!("unknown --protocol {other}"),
    };

    // One second of warm-up, then the measured interval.
    std::thread::sleep(Duration::from_secs(1));
    let cpu_start = process_cpu_seconds();
    let received_start = shared.received.load(Ordering::Acquire);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(options.seconds));
    let received_end = shared.received.load(Ordering::Acquire);
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_start;

    shared.stop_publishing.store(true, Ordering::Release);
    running.producer.join().expect("producer thread");
    // Let the consumers catch up with what was sent, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.in_flight(shared.sent.load(Ordering::Acquire)) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.stop_consuming.store(true, Ordering::Release);
    let mut latencies = Vec::new();
    for consumer in running.consumers {
        latencies.extend(consumer.join().expect("consumer thread"));
    }
    (running.cleanup)();

    let rate = (received_end - received_start) as f64 / elapsed;
    let (p50, p99) = percentiles(latencies);
    println!(
        "{{\"protocol\":\"{}\",\"size\":{},\"ack\":\"{}\",\"qos\":{},\"subscribers\":{},\"prefetch\":{},\"target_rate\":{},\"msgs_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"client_cpu_s\":{:.2},\"seconds\":{:.2},\"sent\":{},\"received\":{}}}",
        options.protocol,
        options.size,
        options.ack,
        options.qos,
        subscribers,
        options.prefetch,
        options.rate,
        rate,
        p50,
        p99,
        cpu,
        elapsed,
        shared.sent.load(Ordering::Acquire),
        shared.received.load(Ordering::Acquire),
    );
}

fn start_amqp(options: &Options, shared: &Arc<Shared>) -> Running {
    let queue = format!("warren-bench-{}", std::process::id());
    let mut consumer = client::Client::connect(&options.addr).expect("consumer connects");
    consumer.declare_queue(&queue, options.persistent).expect("queue declared");
    let mut producer = client::Client::connect(&options.addr).expect("producer connects");
    let consumer_thread = {
        let (shared, options, queue) = (shared.clone(), options.clone(), queue.clone());
        std::thread::spawn(move || consumer.consume(&queue, &options, &shared).expect("consumer runs"))
    };
    let producer_thread = {
        let (shared, options, queue) = (shared.clone(), options.clone(), queue.clone());
        std::thread::spawn(move || producer.publish_loop(&queue, &options, &shared).expect("producer runs"))
    };
    let addr = options.addr.clone();
    let cleanup = Box::new(move || {
        if let Ok(mut client) = client::Client::connect(&addr) {
            let _ = client.delete_queue(&queue);
        }
    });
    Running { producer: producer_thread, consumers: vec![consumer_thread], cleanup }
}

/// Sleeps briefly when the producer may not send: the window is full, or it is ahead of its
/// rate. Returns how many it may send now, at most `batch`.
pub fn allowance(options: &Options, shared: &Shared, sent: u64, started: Instant, batch: u64) -> u64 {
    let allowed = if options.rate == 0 {
        let mut in_flight = if options.count > 0 { 0 } else { shared.in_flight(sent) };
        if options.confirm {
            in_flight = in_flight.max(sent.saturating_sub(shared.confirmed.load(Ordering::Acquire)));
        }
        options.window.saturating_sub(in_flight).min(batch)
    } else {
        let due = (started.elapsed().as_secs_f64() * options.rate as f64) as u64;
        due.saturating_sub(sent).min(batch)
    };
    if allowed == 0 {
        std::thread::sleep(Duration::from_micros(if options.rate == 0 { 20 } else { 100 }));
    }
    allowed
}

/// Nanoseconds since the run began, written into each body's first 8 bytes.
pub fn stamp(shared: &Shared, body: &mut [u8]) {
    let now = shared.epoch.elapsed().as_nanos() as u64;
    body[..8].copy_from_slice(&now.to_le_bytes());
}

/// The latency of a received body, from its stamp.
pub fn latency(shared: &Shared, body: &[u8]) -> Option<u64> {
    let sent_at = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some((shared.epoch.elapsed().as_nanos() as u64).saturating_sub(sent_at))
}

/// Median and 99th percentile, in microseconds, of the measured latencies (nanoseconds).
fn percentiles(mut latencies: Vec<u64>) -> (f64, f64) {
    if latencies.is_empty() {
        return (0.0, 0.0);
    }
    latencies.sort_unstable();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction) as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

/// User plus system CPU time of this process, from /proc (Linux).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
