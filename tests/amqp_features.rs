//! RabbitMQ's extensions to AMQP 0-9-1, checked with lapin against a real `warren` process:
//! TTLs, queue expiry, length limits, dead-lettering, priorities, single active consumer,
//! exchange-to-exchange bindings, alternate exchanges, transactions, direct reply-to, the
//! consumer timeout and connection.blocked. Every expectation is what RabbitMQ 3.x does; each
//! test starts its own broker on port 0.
//!
//! State the broker changes on its own (expiry, dead-lettering) is polled with a deadline or
//! awaited as a delivery; fixed windows are used only to show that something does not arrive.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    ack, assert_bodies, assert_no_delivery, assert_reply_code, bind, bind_with, confirm_channel, connect, consume,
    declare_exchange, declare_queue, get_no_ack, message_count, next_delivery, no_ack, open_channel, passive,
    poll_until, publish_confirmed, publish_plain, raw, reply_code, string_table, try_declare, within, Broker,
    QUIET_PERIOD, RPC_TIMEOUT,
};
use futures_lite::stream::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeUnbindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer, ExchangeKind};

/// AMQP reply codes (spec section 1.2).
const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;
/// The pseudo-queue a direct reply-to client consumes from and names in `reply_to`.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// A TTL no test outlives, for the "larger TTL" side of a comparison.
const LONG_TTL_MS: i32 = 60_000;
/// A TTL short enough that polling for the expiry keeps the tests fast.
const SHORT_TTL_MS: i32 = 100;

// -- helpers -------------------------------------------------------------------------------

/// A field table from `(name, value)` pairs, for queue, exchange and consume arguments.
fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert(name.into(), value);
    }
    table
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

async fn declare_queue_with(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Queue {
    within("queue.declare", channel.queue_declare(name, QueueDeclareOptions::default(), arguments))
        .await
        .unwrap_or_else(|error| panic!("declare queue {name:?}: {error}"))
}

/// Publishes on a confirm-mode channel and returns the broker's confirmation, whatever it is.
async fn publish_for_confirmation(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    properties: BasicProperties,
) -> Confirmation {
    let confirm = within("basic.publish", channel.basic_publish(exchange, routing_key, options, body, properties))
        .await
        .expect("basic.publish");
    within("publisher confirm", confirm).await.expect("publisher confirm")
}

/// Publishes on a channel without confirms (a transactional one): nothing to wait for.
async fn publish_unconfirmed(channel: &Channel, routing_key: &str, body: &str) {
    let confirmation = publish_for_confirmation(
        channel,
        "",
        routing_key,
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await;
    assert_eq!(confirmation, Confirmation::NotRequested);
}

/// Polls a passive queue.declare until `queue` holds `expected` ready messages.
async fn wait_for_depth(channel: &Channel, queue: &str, expected: u32) {
    let what = format!("{expected} ready messages in {queue:?}");
    poll_until(&what, RPC_TIMEOUT, move || async move { message_count(channel, queue).await == expected }).await;
}

/// `basic.consume` with consumer arguments (`x-priority`).
async fn consume_with(
    channel: &Channel,
    queue: &str,
    tag: &str,
    options: BasicConsumeOptions,
    arguments: FieldTable,
) -> Consumer {
    within("basic.consume", channel.basic_consume(queue, tag, options, arguments))
        .await
        .unwrap_or_else(|error| panic!("consume from {queue:?}: {error}"))
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(name)
}

/// A string value, whichever of the two string types carries it.
fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// An integer value, whatever its wire width (RabbitMQ sends x-death's count as a signed 64-bit).
fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(number) => Some(i64::from(*number)),
        AMQPValue::ShortShortUInt(number) => Some(i64::from(*number)),
        AMQPValue::ShortInt(number) => Some(i64::from(*number)),
        AMQPValue::ShortUInt(number) => Some(i64::from(*number)),
        AMQPValue::LongInt(number) => Some(i64::from(*number)),
        AMQPValue::LongUInt(number) => Some(i64::from(*number)),
        AMQPValue::LongLongInt(number) => Some(*number),
        _ => None,
    }
}

fn table_field<'a>(table: &'a FieldTable, name: &str) -> Option<&'a AMQPValue> {
    table.inner().get(name)
}

fn text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    header(properties, name).and_then(text)
}

/// The headers RabbitMQ adds the first time it dead-letters a message from `queue`: an x-death
/// array holding one table, and the x-first-death-* summary.
fn assert_one_death(properties: &BasicProperties, reason: &str, queue: &str, exchange: &str, routing_keys: &[&str]) {
    let deaths = header(properties, "x-death")
        .and_then(AMQPValue::as_array)
        .unwrap_or_else(|| panic!("no x-death array in {:?}", properties.headers()));
    let [death] = deaths.as_slice() else {
        panic!("expected exactly one x-death entry, got {deaths:?}");
    };
    let death = death.as_field_table().unwrap_or_else(|| panic!("x-death entry is not a table: {death:?}"));
    let field = |name: &str| table_field(death, name);
    assert_eq!(field("count").and_then(integer), Some(1), "x-death count in {death:?}");
    assert_eq!(field("reason").and_then(text).as_deref(), Some(reason), "x-death reason in {death:?}");
    assert_eq!(field("queue").and_then(text).as_deref(), Some(queue), "x-death queue in {death:?}");
    assert_eq!(field("exchange").and_then(text).as_deref(), Some(exchange), "x-death exchange in {death:?}");
    let keys = field("routing-keys")
        .and_then(AMQPValue::as_array)
        .map(|keys| keys.as_slice().iter().filter_map(text).collect::<Vec<_>>());
    let expected_keys: Vec<String> = routing_keys.iter().map(|key| key.to_string()).collect();
    assert_eq!(keys, Some(expected_keys), "x-death routing-keys in {death:?}");
    assert!(matches!(field("time"), Some(AMQPValue::Timestamp(_))), "x-death time in {death:?}");
    assert_eq!(text_header(properties, "x-first-death-reason").as_deref(), Some(reason));
    assert_eq!(text_header(properties, "x-first-death-queue").as_deref(), Some(queue));
    assert_eq!(text_header(properties, "x-first-death-exchange").as_deref(), Some(exchange));
}

// -- message TTL ---------------------------------------------------------------------------

#[tokio::test]
async fn queue_message_ttl_expires_messages_which_are_never_delivered() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = "ttl-queue";
    declare_queue_with(&channel, queue, table(vec![("x-message-ttl", AMQPValue::LongInt(SHORT_TTL_MS))])).await;

    for body in ["stale-0", "stale-1", "stale-2"] {
        publish_plain(&channel, "", queue, body).await;
    }
    // A passive declare counts as use only for x-expires, so polling does not keep them alive.
    wait_for_depth(&channel, queue, 0).await;
    assert!(get_no_ack(&channel, queue).await.is_none(), "an expired message is not handed out by basic.get");

    // A consumer attached after the expiry gets only what is published from now on.
    let mut consumer = consume(&channel, queue, "ttl-consumer", no_ack()).await;
    publish_plain(&channel, "", queue, "fresh").await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data, b"fresh");
    assert_no_delivery(&mut consumer, QUIET_PERIOD).await;
}

#[tokio::test]
async fn a_requeued_message_keeps_its_original_expiry() {
    // RabbitMQ: "The original expiry time of a message is preserved if it is requeued".
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let setup = confirm_channel(&connection).await;
    let queue = "ttl-requeued";
    declare_queue_with(&setup, queue, table(vec![("x-message-ttl", AMQPValue::LongInt(2_000))])).await;
    publish_plain(&setup, "", queue, "short-lived").await;
    let published = Instant::now();
    // Delivered, held unacknowledged, then requeued by closing the channel, 1.2 s in.
    let holder = open_channel(&connection).await;
    let mut consumer = consume(&holder, queue, "ttl-holder", BasicConsumeOptions::default()).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"short-lived");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    holder.close(200, "requeue").await.expect("close the channel");
    // 2.6 s after the publish it has expired: its 2 s did not start again at the requeue.
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(published.elapsed())).await;
    assert!(get_no_ack(&setup, queue).await.is_none(), "expired 2 s after it was published");
}

#[tokio::test]
async fn smaller_of_queue_ttl_and_message_expiration_applies() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;

    // Long queue TTL, short per-message expiration: the message's own TTL wins.
    let long_queue = "ttl-min-long-queue";
    declare_queue_with(&channel, long_queue, table(vec![("x-message-ttl", AMQPValue::LongInt(LONG_TTL_MS))])).await;
    let short_message = BasicProperties::default().with_expiration(SHORT_TTL_MS.to_string().into());
    publish_confirmed(&channel, "", long_queue, b"short-lived", short_message).await;
    publish_plain(&channel, "", long_queue, "queue ttl only").await;
    wait_for_depth(&channel, long_queue, 1).await;
    let kept = get_no_ack(&channel, long_queue).await.expect("the message without expiration stays");
    assert_eq!(kept.delivery.data, b"queue ttl only");
    assert_eq!(kept.delivery.properties.expiration(), &None);

    // Short queue TTL, long per-message expiration: the queue's TTL wins.
    let short_queue = "ttl-min-short-queue";
    declare_queue_with(&channel, short_queue, table(vec![("x-message-ttl", AMQPValue::LongInt(SHORT_TTL_MS))])).await;
    let long_message = BasicProperties::default().with_expiration(LONG_TTL_MS.to_string().into());
    publish_confirmed(&channel, "", short_queue, b"long expiration", long_message).await;
    wait_for_depth(&channel, short_queue, 0).await;
    assert!(get_no_ack(&channel, short_queue).await.is_none());
}

// -- queue expiry --------------------------------------------------------------------------

#[tokio::test]
async fn unused_queue_with_x_expires_is_deleted() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = "expires-queue";
    declare_queue_with(&channel, queue, table(vec![("x-expires", AMQPValue::LongInt(200))])).await;

    // Not a passive declare: RabbitMQ counts any declare as use and restarts the x-expires
    // clock, so polling that way would keep the queue alive. A publish is not use; once the
    // queue is gone a mandatory one comes back unroutable.
    let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let probe = &channel;
    poll_until("the queue to expire (a mandatory probe is returned)", RPC_TIMEOUT, move || async move {
        let confirmation =
            publish_for_confirmation(probe, "", queue, mandatory, b"probe", BasicProperties::default()).await;
        assert!(confirmation.is_ack(), "probe was nacked: {confirmation:?}");
        confirmation.take_message().is_some()
    })
    .await;

    let fresh = open_channel(&connection).await;
    assert_reply_code(try_declare(&fresh, queue, passive()).await, NOT_FOUND);
}

// -- length limits -------------------------------------------------------------------------

#[tokio::test]
async fn max_length_drops_the_oldest_and_reject_publish_nacks() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;

    let drop_head = "max-length-drop-head";
    declare_queue_with(&channel, drop_head, table(vec![("x-max-length", AMQPValue::LongInt(2))])).await;
    for index in 0..5 {
        publish_plain(&channel, "", drop_head, &format!("message-{index}")).await;
    }
    assert_eq!(message_count(&channel, drop_head).await, 2);
    for expected in ["message-3", "message-4"] {
        let message = get_no_ack(&channel, drop_head).await.expect("a kept message");
        assert_eq!(message.delivery.data, expected.as_bytes(), "drop-head keeps the newest, in order");
    }
    assert!(get_no_ack(&channel, drop_head).await.is_none());

    let reject = "max-length-reject-publish";
    let arguments = table(vec![("x-max-length", AMQPValue::LongInt(2)), ("x-overflow", long_string("reject-publish"))]);
    declare_queue_with(&channel, reject, arguments).await;
    publish_plain(&channel, "", reject, "first").await;
    publish_plain(&channel, "", reject, "second").await;
    let refused = publish_for_confirmation(
        &channel,
        "",
        reject,
        BasicPublishOptions::default(),
        b"refused",
        BasicProperties::default(),
    )
    .await;
    assert_eq!(refused, Confirmation::Nack(None), "a publish to a full reject-publish queue is nacked");
    assert!(channel.status().connected(), "a nack does not close the channel");
    assert_eq!(message_count(&channel, reject).await, 2);

    // Taking one makes room again: the next publish is acked.
    let first = get_no_ack(&channel, reject).await.expect("first");
    assert_eq!(first.delivery.data, b"first");
    publish_plain(&channel, "", reject, "third").await;
    for expected in ["second", "third"] {
        let message = get_no_ack(&channel, reject).await.expect("a kept message");
        assert_eq!(message.delivery.data, expected.as_bytes());
    }
}

// -- dead-lettering ------------------------------------------------------------------------

#[tokio::test]
async fn rejected_message_is_dead_lettered_with_x_death() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let dead_letter_exchange = "dlx-reject";
    let dead_letter_queue = "dlq-reject";
    declare_exchange(&channel, dead_letter_exchange, ExchangeKind::Direct).await;
    declare_queue(&channel, dead_letter_queue).await;
    bind(&channel, dead_letter_queue, dead_letter_exchange, "dead").await;

    let source = "dl-reject-source";
    let arguments = table(vec![
        ("x-dead-letter-exchange", long_string(dead_letter_exchange)),
        ("x-dead-letter-routing-key", long_string("dead")),
    ]);
    declare_queue_with(&channel, source, arguments).await;
    let origin = "dl-reject-origin";
    declare_exchange(&channel, origin, ExchangeKind::Direct).await;
    bind(&channel, source, origin, "origin-key").await;

    let mut dead_letters = consume(&channel, dead_letter_queue, "dlq-reject-consumer", no_ack()).await;
    let properties =
        BasicProperties::default().with_message_id("m-1".into()).with_headers(string_table(&[("app", "kept")]));
    publish_confirmed(&channel, origin, "origin-key", b"unwanted", properties).await;

    let got = within("basic.get", channel.basic_get(source, BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("the message is ready");
    within("basic.reject", got.delivery.reject(BasicRejectOptions { requeue: false })).await.expect("basic.reject");

    let dead = next_delivery(&mut dead_letters).await;
    assert_eq!(dead.data, b"unwanted");
    assert_eq!(dead.exchange.as_str(), dead_letter_exchange);
    assert_eq!(dead.routing_key.as_str(), "dead", "x-dead-letter-routing-key replaces the key");
    assert!(!dead.redelivered, "a dead-lettered message is a new message");
    assert_eq!(dead.properties.message_id().as_ref().map(|id| id.as_str()), Some("m-1"));
    assert_eq!(text_header(&dead.properties, "app").as_deref(), Some("kept"), "the publisher's headers stay");
    assert_one_death(&dead.properties, "rejected", source, origin, &["origin-key"]);
    assert!(get_no_ack(&channel, source).await.is_none(), "the rejected message left its queue");
}

#[tokio::test]
async fn expired_message_is_dead_lettered_with_reason_expired() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let dead_letter_exchange = "dlx-expired";
    let dead_letter_queue = "dlq-expired";
    declare_exchange(&channel, dead_letter_exchange, ExchangeKind::Fanout).await;
    declare_queue(&channel, dead_letter_queue).await;
    bind(&channel, dead_letter_queue, dead_letter_exchange, "").await;

    let source = "dl-expired-source";
    let arguments = table(vec![
        ("x-message-ttl", AMQPValue::LongInt(50)),
        ("x-dead-letter-exchange", long_string(dead_letter_exchange)),
    ]);
    declare_queue_with(&channel, source, arguments).await;
    let mut dead_letters = consume(&channel, dead_letter_queue, "dlq-expired-consumer", no_ack()).await;
    publish_plain(&channel, "", source, "too late").await;

    let dead = next_delivery(&mut dead_letters).await;
    assert_eq!(dead.data, b"too late");
    assert_eq!(dead.exchange.as_str(), dead_letter_exchange);
    assert_eq!(dead.routing_key.as_str(), source, "without x-dead-letter-routing-key the key is kept");
    assert_one_death(&dead.properties, "expired", source, "", &[source]);
    assert_eq!(message_count(&channel, source).await, 0);
}

// -- priorities ----------------------------------------------------------------------------

#[tokio::test]
async fn priority_queue_hands_out_highest_priority_first() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let queue = "priority-queue";
    declare_queue_with(&channel, queue, table(vec![("x-max-priority", AMQPValue::LongInt(10))])).await;

    for priority in [1u8, 9, 5] {
        let properties = BasicProperties::default().with_priority(priority);
        publish_confirmed(&channel, "", queue, format!("priority-{priority}").as_bytes(), properties).await;
    }

    for priority in [9u8, 5, 1] {
        let message = get_no_ack(&channel, queue).await.expect("a queued message");
        assert_eq!(message.delivery.data, format!("priority-{priority}").as_bytes());
        assert_eq!(message.delivery.properties.priority(), &Some(priority));
    }
    assert!(get_no_ack(&channel, queue).await.is_none());
}

#[tokio::test]
async fn higher_priority_consumer_gets_messages_while_it_has_credit() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    let queue = "consumer-priority";
    declare_queue(&publisher, queue).await;

    // The low-priority consumer subscribes first, so plain round-robin would serve it first.
    let low_channel = open_channel(&connection).await;
    let high_channel = open_channel(&connection).await;
    for channel in [&low_channel, &high_channel] {
        within("basic.qos", channel.basic_qos(1, BasicQosOptions::default())).await.expect("basic.qos");
    }
    let manual_ack = BasicConsumeOptions::default();
    let low_priority = table(vec![("x-priority", AMQPValue::LongInt(1))]);
    let high_priority = table(vec![("x-priority", AMQPValue::LongInt(10))]);
    let mut low = consume_with(&low_channel, queue, "low-priority", manual_ack, low_priority).await;
    let mut high = consume_with(&high_channel, queue, "high-priority", manual_ack, high_priority).await;

    publish_plain(&publisher, "", queue, "first").await;
    publish_plain(&publisher, "", queue, "second").await;

    let first = next_delivery(&mut high).await;
    assert_eq!(first.data, b"first", "the high-priority consumer is served first");
    // It holds "first" unacked with prefetch 1, so "second" falls to the low-priority one.
    let second = next_delivery(&mut low).await;
    assert_eq!(second.data, b"second");
    assert_no_delivery(&mut high, QUIET_PERIOD).await;
    ack(&first).await;
    ack(&second).await;
}

#[tokio::test]
async fn single_active_consumer_serves_one_consumer_until_it_cancels() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    let queue = "single-active";
    declare_queue_with(&publisher, queue, table(vec![("x-single-active-consumer", AMQPValue::Boolean(true))])).await;
    let first_channel = open_channel(&connection).await;
    let second_channel = open_channel(&connection).await;
    let mut first = consume(&first_channel, queue, "sac-first", no_ack()).await;
    let mut second = consume(&second_channel, queue, "sac-second", no_ack()).await;

    for body in ["a0", "a1", "a2"] {
        publish_plain(&publisher, "", queue, body).await;
    }
    for expected in ["a0", "a1", "a2"] {
        assert_eq!(next_delivery(&mut first).await.data, expected.as_bytes());
    }
    assert_no_delivery(&mut second, QUIET_PERIOD).await;

    within("basic.cancel", first_channel.basic_cancel("sac-first", BasicCancelOptions::default()))
        .await
        .expect("basic.cancel");
    for body in ["b0", "b1", "b2"] {
        publish_plain(&publisher, "", queue, body).await;
    }
    for expected in ["b0", "b1", "b2"] {
        assert_eq!(next_delivery(&mut second).await.data, expected.as_bytes());
    }
}

// -- exchanges -----------------------------------------------------------------------------

#[tokio::test]
async fn exchange_to_exchange_binding_routes_until_unbound() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let source = "e2e-source";
    let destination = "e2e-destination";
    let queue = "e2e-queue";
    declare_exchange(&channel, source, ExchangeKind::Direct).await;
    declare_exchange(&channel, destination, ExchangeKind::Fanout).await;
    declare_queue(&channel, queue).await;
    bind(&channel, queue, destination, "").await;
    within(
        "exchange.bind",
        channel.exchange_bind(destination, source, "key", ExchangeBindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.bind");

    publish_plain(&channel, source, "key", "via binding").await;
    publish_plain(&channel, source, "other", "no binding for this key").await;
    let message = get_no_ack(&channel, queue).await.expect("routed through the exchange binding");
    assert_eq!(message.delivery.data, b"via binding");
    assert_eq!(message.delivery.exchange.as_str(), source, "the delivery names the exchange published to");
    assert_eq!(message.delivery.routing_key.as_str(), "key");
    assert!(get_no_ack(&channel, queue).await.is_none(), "the source's other keys are not bound");

    within(
        "exchange.unbind",
        channel.exchange_unbind(destination, source, "key", ExchangeUnbindOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.unbind");
    publish_plain(&channel, source, "key", "after unbind").await;
    publish_plain(&channel, destination, "", "to the destination").await;
    assert_bodies(&channel, queue, &["to the destination"]).await;
}

#[tokio::test]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let alternate = "ae-alternate";
    let primary = "ae-primary";
    declare_exchange(&channel, alternate, ExchangeKind::Fanout).await;
    let arguments = table(vec![("alternate-exchange", long_string(alternate))]);
    within(
        "exchange.declare",
        channel.exchange_declare(primary, ExchangeKind::Direct, ExchangeDeclareOptions::default(), arguments),
    )
    .await
    .expect("declare the exchange with an alternate");
    declare_queue(&channel, "ae-routed").await;
    bind(&channel, "ae-routed", primary, "key").await;
    declare_queue(&channel, "ae-leftovers").await;
    bind(&channel, "ae-leftovers", alternate, "").await;

    // Mandatory, yet acked without a basic.return: the alternate exchange routed them.
    let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    for (key, body) in [("key", "routed"), ("nowhere", "unroutable")] {
        let confirmation =
            publish_for_confirmation(&channel, primary, key, mandatory, body.as_bytes(), BasicProperties::default())
                .await;
        assert_eq!(confirmation, Confirmation::Ack(None), "publish {body:?} with key {key:?}");
    }

    assert_bodies(&channel, "ae-routed", &["routed"]).await;
    let leftover = get_no_ack(&channel, "ae-leftovers").await.expect("the unroutable message");
    assert_eq!(leftover.delivery.data, b"unroutable", "routed messages do not also go to the alternate");
    assert_eq!(leftover.delivery.exchange.as_str(), primary);
    assert_eq!(leftover.delivery.routing_key.as_str(), "nowhere");
    assert!(get_no_ack(&channel, "ae-leftovers").await.is_none());
}

#[tokio::test]
async fn headers_exchange_any_with_x_matches_x_headers() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let exchange = "headers-with-x";
    declare_exchange(&channel, exchange, ExchangeKind::Headers).await;
    // Plain `any` ignores binding arguments starting with x-; `any-with-x` matches them too.
    for (queue, mode) in [("headers-any-with-x", "any-with-x"), ("headers-any", "any")] {
        declare_queue(&channel, queue).await;
        let arguments = string_table(&[("x-match", mode), ("x-tenant", "a"), ("kind", "k")]);
        bind_with(&channel, queue, exchange, "", arguments).await;
    }

    let messages = [
        ("tenant only", Some(string_table(&[("x-tenant", "a")]))),
        ("kind only", Some(string_table(&[("kind", "k")]))),
        ("wrong tenant", Some(string_table(&[("x-tenant", "b")]))),
        ("no headers", None),
    ];
    for (body, headers) in messages {
        let properties = match headers {
            Some(headers) => BasicProperties::default().with_headers(headers),
            None => BasicProperties::default(),
        };
        publish_confirmed(&channel, exchange, "", body.as_bytes(), properties).await;
    }

    assert_bodies(&channel, "headers-any-with-x", &["tenant only", "kind only"]).await;
    assert_bodies(&channel, "headers-any", &["kind only"]).await;
}

// -- transactions --------------------------------------------------------------------------

#[tokio::test]
async fn transaction_publishes_on_commit_and_discards_on_rollback() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    // Confirm mode and transactions exclude each other, so a plain channel.
    let channel = open_channel(&connection).await;
    let queue = "tx-queue";
    declare_queue(&channel, queue).await;
    within("tx.select", channel.tx_select()).await.expect("tx.select");

    for body in ["t0", "t1", "t2"] {
        publish_unconfirmed(&channel, queue, body).await;
    }
    assert_eq!(message_count(&channel, queue).await, 0, "uncommitted publishes are held");
    within("tx.commit", channel.tx_commit()).await.expect("tx.commit");
    assert_eq!(message_count(&channel, queue).await, 3, "commit-ok follows the routing of every publish");

    for body in ["r0", "r1"] {
        publish_unconfirmed(&channel, queue, body).await;
    }
    within("tx.rollback", channel.tx_rollback()).await.expect("tx.rollback");
    assert_eq!(message_count(&channel, queue).await, 3, "rolled-back publishes are discarded");

    let observer = open_channel(&connection).await;
    assert_bodies(&observer, queue, &["t0", "t1", "t2"]).await;
}

// -- direct reply-to -----------------------------------------------------------------------

#[tokio::test]
async fn direct_reply_to_delivers_the_reply_to_the_requesting_channel() {
    let broker = Broker::start();
    let server_connection = connect(&broker).await;
    let server_channel = confirm_channel(&server_connection).await;
    let requests_queue = "rpc-requests";
    declare_queue(&server_channel, requests_queue).await;
    let mut requests = consume(&server_channel, requests_queue, "rpc-server", no_ack()).await;

    let client_connection = connect(&broker).await;
    let client_channel = confirm_channel(&client_connection).await;
    let mut replies = consume(&client_channel, DIRECT_REPLY_TO, "rpc-client", no_ack()).await;
    let request_properties =
        BasicProperties::default().with_reply_to(DIRECT_REPLY_TO.into()).with_correlation_id("request-1".into());
    publish_confirmed(&client_channel, "", requests_queue, b"ping", request_properties).await;

    let request = next_delivery(&mut requests).await;
    assert_eq!(request.data, b"ping");
    let reply_to = request.properties.reply_to().as_ref().expect("the request carries reply_to").as_str().to_owned();
    assert!(
        reply_to.starts_with(DIRECT_REPLY_TO) && reply_to != DIRECT_REPLY_TO,
        "reply_to was not rewritten to a private name: {reply_to:?}"
    );
    let reply_properties = BasicProperties::default().with_correlation_id("request-1".into());
    publish_confirmed(&server_channel, "", &reply_to, b"pong", reply_properties).await;

    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(reply.exchange.as_str(), "");
    assert_eq!(reply.routing_key.as_str(), reply_to, "the reply is addressed to the rewritten name");
    assert_eq!(reply.properties.correlation_id().as_ref().map(|id| id.as_str()), Some("request-1"));
}

// -- consumer timeout ----------------------------------------------------------------------

#[tokio::test]
async fn consumer_timeout_closes_the_channel_with_precondition_failed() {
    // The broker checks unacked deliveries about once a second, so a 500 ms timeout closes the
    // channel 0.5-2 s after the delivery; 4 s leaves scheduling slack.
    const CLOSE_DEADLINE: Duration = Duration::from_secs(4);
    let broker = Broker::start_with_config("[amqp]\nconsumer_timeout_ms = 500\n");
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    let queue = "consumer-timeout";
    declare_queue(&publisher, queue).await;
    let consumer_channel = open_channel(&connection).await;
    let manual_ack = BasicConsumeOptions::default();
    let mut consumer = consume(&consumer_channel, queue, "never-acks", manual_ack).await;

    publish_plain(&publisher, "", queue, "never acked").await;
    let held = next_delivery(&mut consumer).await;
    assert_eq!(held.data, b"never acked");

    // lapin fails the channel's consumers with the channel.close error.
    let error = match tokio::time::timeout(CLOSE_DEADLINE, consumer.next()).await {
        Ok(Some(Err(error))) => error,
        Ok(other) => panic!("expected the consumer to fail with the channel's close, got {other:?}"),
        Err(_) => panic!("channel still open {CLOSE_DEADLINE:?} after a delivery that was never acked"),
    };
    assert_eq!(reply_code(&error), Some(PRECONDITION_FAILED), "channel closed with {error:?}");
    let closed = &consumer_channel;
    poll_until("consumer channel closed", CLOSE_DEADLINE, move || async move { !closed.status().connected() }).await;
    assert!(connection.status().connected(), "only the channel is closed");

    // Closing the channel requeued the unacked delivery.
    wait_for_depth(&publisher, queue, 1).await;
    let again = get_no_ack(&publisher, queue).await.expect("the requeued message");
    assert_eq!(again.delivery.data, b"never acked");
    assert!(again.delivery.redelivered);
}

// -- connection.blocked --------------------------------------------------------------------

/// Reads frames until the method `(class_id, method_id)` arrives, failing on a close or after
/// `RPC_TIMEOUT`.
fn wait_for_method(stream: &mut TcpStream, class_id: u16, method_id: u16) {
    let deadline = Instant::now() + RPC_TIMEOUT;
    loop {
        let remaining = deadline
            .checked_duration_since(Instant::now())
            .filter(|remaining| !remaining.is_zero())
            .unwrap_or_else(|| panic!("no {class_id}.{method_id} within {RPC_TIMEOUT:?}"));
        stream.set_read_timeout(Some(remaining)).expect("set read timeout");
        let frame = match raw::read_frame(stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the broker closed the socket while we waited for {class_id}.{method_id}"),
            Err(error) => panic!("no {class_id}.{method_id} within {RPC_TIMEOUT:?}: {error}"),
        };
        match frame.method() {
            Some(method) if method == (class_id, method_id) => return,
            Some((raw::CONNECTION_CLASS, raw::CONNECTION_CLOSE)) | Some((raw::CHANNEL_CLASS, raw::CHANNEL_CLOSE)) => {
                panic!("the broker closed while we waited for {class_id}.{method_id}: {frame:?}")
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn publisher_over_the_queue_bound_is_blocked_then_unblocked() {
    const MESSAGES: usize = 20;
    const BODY_BYTES: usize = 10 * 1024;
    const CHANNEL: u16 = 1;
    let broker = Broker::start_with_config("queue_ready_bytes_max = 65536\n");
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let queue: &'static str = "blocked-queue";
    declare_queue(&channel, queue).await;

    let addr = broker.amqp_addr;
    let stream = tokio::task::spawn_blocking(move || {
        // The broker sends connection.blocked only to clients that announce they handle it.
        let capabilities = raw::client_capabilities(&["connection.blocked"]);
        let mut stream = raw::open_connection_with(addr, 0, &capabilities);
        raw::open_channel(&mut stream, CHANNEL);
        let mut writer = stream.try_clone().expect("clone the socket");
        // The broker stops reading this socket once the queue passes its bound, so these writes
        // may block; on their own thread they cannot stall our reads. The thread ends with a
        // write error at the latest when the broker is killed at the end of the test.
        std::thread::spawn(move || {
            let body = vec![b'x'; BODY_BYTES];
            for _ in 0..MESSAGES {
                if raw::publish(&mut writer, CHANNEL, "", queue, &body).is_err() {
                    return;
                }
            }
        });
        wait_for_method(&mut stream, raw::CONNECTION_CLASS, raw::CONNECTION_BLOCKED);
        stream
    })
    .await
    .expect("raw publisher task");

    // Emptying the queue makes room: the paused publisher is told it may go on.
    let purged =
        within("queue.purge", channel.queue_purge(queue, QueuePurgeOptions::default())).await.expect("queue.purge");
    assert!(purged > 0, "the queue held the blocked publisher's messages");
    tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        wait_for_method(&mut stream, raw::CONNECTION_CLASS, raw::CONNECTION_UNBLOCKED);
    })
    .await
    .expect("raw publisher task");
}

const ACCESS_REFUSED: u16 = 403;

#[tokio::test]
async fn exclusive_consumer_keeps_the_queue_to_itself() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let setup = confirm_channel(&connection).await;
    let queue = "exclusive-consumer";
    declare_queue(&setup, queue).await;
    let owner = open_channel(&connection).await;
    let exclusive = BasicConsumeOptions { exclusive: true, ..BasicConsumeOptions::default() };
    let mut sole = consume(&owner, queue, "sole", exclusive).await;

    // Anyone else consuming is refused with 403, as RabbitMQ does.
    let intruder = open_channel(&connection).await;
    let refused = within(
        "basic.consume beside an exclusive consumer",
        intruder.basic_consume(queue, "intruder", BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_reply_code(refused, ACCESS_REFUSED);

    publish_plain(&setup, "", queue, "only for the exclusive consumer").await;
    let delivery = next_delivery(&mut sole).await;
    assert_eq!(delivery.data, b"only for the exclusive consumer");
    ack(&delivery).await;

    // An exclusive consume on a queue that already has a consumer is refused too.
    let other_queue = "already-consumed";
    declare_queue(&setup, other_queue).await;
    let _first = consume(&owner, other_queue, "first", BasicConsumeOptions::default()).await;
    let late = open_channel(&connection).await;
    let refused =
        within("exclusive basic.consume", late.basic_consume(other_queue, "late", exclusive, FieldTable::default()))
            .await;
    assert_reply_code(refused, ACCESS_REFUSED);
}

#[tokio::test]
async fn config_file_policy_applies_without_queue_arguments() {
    let broker = Broker::start_with_config(
        "[[policies]]\nname = \"short\"\npattern = \"^policy\\\\.\"\napply_to = \"queues\"\n\
         [policies.definition]\nmax-length = 2\nmessage-ttl = 300\n",
    );
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let governed = "policy.limited";
    let free = "unmatched";
    declare_queue(&channel, governed).await;
    declare_queue(&channel, free).await;
    for number in 0..5 {
        let body = format!("message-{number}");
        publish_confirmed(&channel, "", governed, body.as_bytes(), BasicProperties::default()).await;
        publish_confirmed(&channel, "", free, body.as_bytes(), BasicProperties::default()).await;
    }
    // The policy's max-length keeps the newest two; the unmatched queue keeps all five.
    assert_eq!(message_count(&channel, governed).await, 2);
    assert_eq!(message_count(&channel, free).await, 5);
    // The policy's message TTL then empties the governed queue.
    let checker = &channel;
    poll_until("the policy's TTL expired the governed queue", Duration::from_secs(5), move || async move {
        message_count(checker, governed).await == 0
    })
    .await;
    assert_eq!(message_count(&channel, free).await, 5);
}

#[tokio::test]
async fn durable_definitions_survive_a_restart() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    within("exchange.declare", channel.exchange_declare("orders", ExchangeKind::Topic, durable, FieldTable::default()))
        .await
        .expect("durable exchange");
    let durable_queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    try_declare(&channel, "billing", durable_queue).await.expect("durable queue");
    bind(&channel, "billing", "orders", "order.#").await;
    declare_queue(&channel, "scratch").await;
    // The restart (SIGTERM) closes this connection with 320.

    let broker = broker.restart();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let passive_exchange = ExchangeDeclareOptions { passive: true, durable: true, ..ExchangeDeclareOptions::default() };
    within(
        "passive exchange.declare",
        channel.exchange_declare("orders", ExchangeKind::Topic, passive_exchange, FieldTable::default()),
    )
    .await
    .expect("the durable exchange came back");
    publish_confirmed(&channel, "orders", "order.created", b"after restart", BasicProperties::default()).await;
    assert_bodies(&channel, "billing", &["after restart"]).await;
    let probe = open_channel(&connection).await;
    assert_reply_code(try_declare(&probe, "scratch", passive()).await, NOT_FOUND);
}

/// A consumer whose client stops reading is closed once a write has stalled for
/// `write_timeout_ms`, as RabbitMQ's listeners close on a send timeout; the broker serves
/// everyone else meanwhile. Both with no-ack (deliveries keep coming) and with a prefetch limit
/// (once the writer gives up, the connection has nothing more to send, and must still end).
#[tokio::test]
async fn a_consumer_that_stops_reading_is_closed_after_the_write_timeout() {
    for prefetch in [None, Some(24u16)] {
        let broker = Broker::start_with_config("write_timeout_ms = 1000\n");
        let connection = connect(&broker).await;
        let channel = confirm_channel(&connection).await;
        declare_queue(&channel, "stalled").await;
        // A raw consumer that never reads its socket.
        let mut stream = raw::open_connection(broker.amqp_addr, 0);
        raw::open_channel(&mut stream, 1);
        if let Some(prefetch) = prefetch {
            let mut qos = Vec::new();
            qos.extend_from_slice(&0u32.to_be_bytes());
            qos.extend_from_slice(&prefetch.to_be_bytes());
            qos.push(0);
            raw::write_method(&mut stream, 1, raw::BASIC_CLASS, 10, &qos).expect("basic.qos");
        }
        let mut consume = Vec::new();
        consume.extend_from_slice(&0u16.to_be_bytes());
        raw::short_string(&mut consume, "stalled");
        raw::short_string(&mut consume, "");
        consume.push(if prefetch.is_some() { 0 } else { 0b0000_0010 }); // no-ack without a prefetch
        consume.extend_from_slice(&0u32.to_be_bytes());
        raw::write_method(&mut stream, 1, raw::BASIC_CLASS, 20, &consume).expect("basic.consume");
        let body = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            publish_confirmed(&channel, "", "stalled", &body, BasicProperties::default()).await;
        }
        // Well past the timeout, the broker has given up on the stalled consumer: reading now
        // drains what was buffered and then finds the connection closed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let closed = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => return true,
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
                    Err(_) => return false,
                }
            }
        })
        .await
        .expect("reader");
        assert!(closed, "the stalled consumer's connection is still open (prefetch {prefetch:?})");
        // The publisher was never affected.
        publish_confirmed(&channel, "", "stalled", b"still serving", BasicProperties::default()).await;
    }
}
