//! Consumes from a queue with manual acks and a prefetch of 10, using lapin.
//!
//! Start a broker (`cargo run --release`), then:
//! `cargo run --example consumer -- [amqp://guest:guest@127.0.0.1:5672/%2f] [count]`

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: usize = args.next().and_then(|text| text.parse().ok()).unwrap_or(10);

    let connection = Connection::connect(&uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.queue_declare("hello", QueueDeclareOptions::default(), FieldTable::default()).await?;
    channel.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume("hello", "example-consumer", BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut received = 0;
    while received < count {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let delivery = delivery?;
        println!("received: {}", String::from_utf8_lossy(&delivery.data));
        delivery.ack(BasicAckOptions::default()).await?;
        received += 1;
    }
    connection.close(200, "done").await?;
    Ok(())
}
