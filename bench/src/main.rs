//! `warren-bench`: a lean AMQP 0-9-1 load generator. One producer thread publishes to a queue
//! and one consumer thread consumes from it, each on its own connection with blocking sockets
//! and batched writes, using Warren's sans-IO codec. It works against any AMQP 0-9-1 broker, so
//! the same client measures Warren and RabbitMQ. Prints one JSON line per run.
//!
//! Throughput runs keep at most `--window` messages in flight (published, not yet consumed), so
//! the queue stays short and the figure measures steady-state flow, not queue growth. Latency
//! runs publish at a fixed `--rate` and report p50/p99 of publish-to-consume time.

mod client;

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
}

/// What the two threads share.
pub struct Shared {
    pub epoch: Instant,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub stop_publishing: AtomicBool,
    pub stop_consuming: AtomicBool,
}

fn main() {
    let options = Options::parse();
    assert!(options.size >= 8, "--size must be at least 8");
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        stop_publishing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
    });
    let queue = format!("warren-bench-{}", std::process::id());
    let mut consumer = client::Client::connect(&options.addr).expect("consumer connects");
    consumer.declare_queue(&queue, options.persistent).expect("queue declared");
    let producer = client::Client::connect(&options.addr).expect("producer connects");

    let consumer_thread = {
        let (shared, options, queue) = (shared.clone(), options.clone(), queue.clone());
        std::thread::spawn(move || consumer.consume(&queue, &options, &shared).expect("consumer runs"))
    };
    let producer_thread = {
        let (shared, options, queue) = (shared.clone(), options.clone(), queue.clone());
        std::thread::spawn(move || {
            let mut producer = producer;
            producer.publish_loop(&queue, &options, &shared).expect("producer runs");
            producer
        })
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
    let mut producer = producer_thread.join().expect("producer thread");
    // Let the consumer catch up with what was sent, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.received.load(Ordering::Acquire) < shared.sent.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.stop_consuming.store(true, Ordering::Release);
    let latencies = consumer_thread.join().expect("consumer thread");
    let _ = producer.delete_queue(&queue);

    let rate = (received_end - received_start) as f64 / elapsed;
    let (p50, p99) = percentiles(latencies);
    println!(
        "{{\"size\":{},\"ack\":\"{}\",\"prefetch\":{},\"target_rate\":{},\"msgs_per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"client_cpu_s\":{:.2},\"seconds\":{:.2},\"sent\":{},\"received\":{}}}",
        options.size,
        options.ack,
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
