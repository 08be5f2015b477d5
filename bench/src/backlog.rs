//! Backlog mode: publish a large number of persistent messages with confirms and no consumer,
//! or consume such a backlog checking its order. `bench/backlog.py` runs the two phases around
//! a broker restart and watches the broker's memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use warren_amqp::codec::methods::basic;
use warren_amqp::codec::{self, Frame, Method};

use crate::client::Client;
use crate::{Options, Shared};

/// Acks go out as one multiple-ack per this many deliveries.
const ACK_EVERY: u64 = 500;

pub fn run(options: &Options) {
    if options.count > 0 {
        let started = Instant::now();
        publish(options);
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"phase\":\"publish\",\"messages\":{},\"size\":{},\"seconds\":{seconds:.2},\"msgs_per_s\":{:.0}}}",
            options.count,
            options.size,
            options.count as f64 / seconds
        );
    }
    if options.consume_count > 0 {
        let started = Instant::now();
        if let Err(error) = consume(options) {
            eprintln!("{error}");
            std::process::exit(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"phase\":\"consume\",\"messages\":{},\"seconds\":{seconds:.2},\"msgs_per_s\":{:.0}}}",
            options.consume_count,
            options.consume_count as f64 / seconds
        );
    }
}

fn publish(options: &Options) {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        received: AtomicU64::new(0),
        subscribers: 1,
        stop_publishing: AtomicBool::new(false),
        stop_consuming: AtomicBool::new(false),
    });
    let mut client = Client::connect(&options.addr).expect("publisher connects");
    client.declare_queue(&options.queue, true).expect("queue declared");
    let options = Options { persistent: true, confirm: true, ..options.clone() };
    client.publish_loop(&options.queue, &options, &shared).expect("publisher runs");
    assert_eq!(shared.confirmed.load(Ordering::Acquire), options.count, "every publish confirmed");
}

/// Consumes `consume_count` messages, each carrying the next index; acks in batches.
fn consume(options: &Options) -> Result<(), String> {
    let mut client = Client::connect(&options.addr)?;
    client.declare_queue(&options.queue, true)?;
    client.send(1, Method::BasicQos(basic::Qos { prefetch_count: 2000, ..Default::default() }))?;
    client.expect(|method| matches!(method, Method::BasicQosOk(_)))?;
    let consume = basic::Consume { queue: options.queue.clone(), ..Default::default() };
    client.send(1, Method::BasicConsume(consume))?;
    client.expect(|method| matches!(method, Method::BasicConsumeOk(_)))?;
    let mut expected = 0u64;
    let mut last_tag = 0;
    let mut acks = BytesMut::new();
    let mut last_report = Instant::now();
    while expected < options.consume_count {
        match client.next_frame()? {
            Frame::Method { method: Method::BasicDeliver(deliver), .. } => last_tag = deliver.delivery_tag,
            Frame::Body { payload, .. } => {
                let index = u64::from_le_bytes(payload[..8].try_into().map_err(|_| "short body")?);
                if index != expected {
                    return Err(format!("message {index} arrived where {expected} was due"));
                }
                expected += 1;
                if expected.is_multiple_of(ACK_EVERY) || expected == options.consume_count {
                    acks.clear();
                    let ack = Method::BasicAck(basic::Ack { delivery_tag: last_tag, multiple: true });
                    codec::encode_method(&mut acks, 1, &ack);
                    client.write(&acks)?;
                }
                if last_report.elapsed() > Duration::from_secs(5) {
                    eprintln!("consumed {expected}");
                    last_report = Instant::now();
                }
            }
            Frame::Method { method: Method::ConnectionClose(close), .. } => {
                return Err(format!("connection closed: {} {}", close.reply_code, close.reply_text));
            }
            _ => {}
        }
    }
    Ok(())
}
