//! Publishes messages to a queue with publisher confirms, using lapin.
//!
//! Start a broker (`cargo run --release`), then:
//! `cargo run --example producer -- [amqp://guest:guest@127.0.0.1:5672/%2f] [count]`

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let mut args = std::env::args().skip(1);
    let uri = args.next().unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let count: u32 = args.next().and_then(|text| text.parse().ok()).unwrap_or(10);

    let connection = Connection::connect(&uri, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.queue_declare("hello", QueueDeclareOptions::default(), FieldTable::default()).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    for number in 0..count {
        let body = format!("hello {number}");
        let properties = BasicProperties::default().with_content_type("text/plain".into());
        // The second await waits for the broker's confirm.
        channel.basic_publish("", "hello", BasicPublishOptions::default(), body.as_bytes(), properties).await?.await?;
        println!("sent and confirmed: {body}");
    }
    connection.close(200, "done").await?;
    Ok(())
}
