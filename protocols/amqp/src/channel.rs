//! One AMQP channel's state: the publish being assembled, confirms, consumers, prefetch and the
//! deliveries awaiting acknowledgement.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use warren_core::journal::ConfirmQueue;
use warren_core::name::{ConsumerId, ConsumerTag, ExchangeName, QueueName};
use warren_core::properties::Properties;
use warren_core::queue::{Consumer, Credit, Requeue};
use warren_core::topic::RoutingKey;
use warren_core::{Message, Queue, Vhost};

use crate::error::{code, Close};
use crate::tx::Transaction;

/// The largest message body accepted: RabbitMQ's default `max_message_size` (128 MiB). A larger
/// body would be buffered whole before routing.
pub const MESSAGE_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// The most bytes reserved up front for a multi-frame body; larger bodies grow as frames arrive,
/// so a header that announces 128 MiB cannot make us reserve it before the bytes come.
const ASSEMBLY_CAPACITY_MAX: usize = 1024 * 1024;

/// Whether the channel is usable or waiting for the peer's channel.close-ok.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    Open,
    /// We sent channel.close; everything but close and close-ok is discarded.
    Closing,
}

/// A basic.publish whose content is still arriving.
#[derive(Debug)]
pub struct PendingPublish {
    pub exchange: ExchangeName,
    pub routing_key: RoutingKey,
    pub mandatory: bool,
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    AwaitingHeader,
    AwaitingBody { properties: Box<Properties>, body_size: u64, body: BodyBuffer },
}

/// A body arriving in frames. A body in one frame is kept as the frame's own bytes, uncopied.
#[derive(Debug)]
pub enum BodyBuffer {
    Empty,
    Single(Bytes),
    Assembled(BytesMut),
}

impl BodyBuffer {
    fn len(&self) -> usize {
        match self {
            BodyBuffer::Empty => 0,
            BodyBuffer::Single(bytes) => bytes.len(),
            BodyBuffer::Assembled(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, payload: Bytes, body_size: u64) {
        *self = match std::mem::replace(self, BodyBuffer::Empty) {
            // Copied: a slice would keep the whole 64 KiB read buffer alive for as long as the
            // message sits in a queue.
            BodyBuffer::Empty => BodyBuffer::Single(Bytes::copy_from_slice(&payload)),
            BodyBuffer::Single(first) => {
                let capacity = (body_size as usize).min(ASSEMBLY_CAPACITY_MAX);
                let mut assembled = BytesMut::with_capacity(capacity);
                assembled.extend_from_slice(&first);
                assembled.extend_from_slice(&payload);
                BodyBuffer::Assembled(assembled)
            }
            BodyBuffer::Assembled(mut assembled) => {
                assembled.extend_from_slice(&payload);
                BodyBuffer::Assembled(assembled)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            BodyBuffer::Empty => Bytes::new(),
            BodyBuffer::Single(bytes) => bytes,
            BodyBuffer::Assembled(bytes) => bytes.freeze(),
        }
    }
}

/// A delivery awaiting ack.
#[derive(Debug)]
pub struct Unacked {
    pub delivery_tag: u64,
    pub queue: Arc<Queue>,
    pub sequence: u64,
    pub message: Arc<Message>,
    /// The consumer whose credit it holds; `None` for basic.get.
    pub consumer: Option<Arc<Consumer>>,
    /// When it was sent, for the consumer timeout.
    pub delivered_at: Instant,
    /// When it expires, kept if it is requeued.
    pub expires_at: Option<Instant>,
}

/// Publisher-confirm bookkeeping.
#[derive(Debug, Default)]
pub struct Confirms {
    /// The sequence number of the last publish.
    pub last_sequence: u64,
    /// Publishes up to this number are confirmed but not yet acked to the client.
    pub ack_pending_upto: Option<u64>,
}

/// An outcome waiting, in order, for the message store to sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A publisher confirm.
    Ack(u64),
    /// A publisher nack (the message was refused); it waits only for the outcomes before it.
    Nack(u64),
    /// A tx.commit-ok, sent once the committed persistent messages are on disk.
    CommitOk,
}

/// A consumer on this channel.
#[derive(Debug)]
pub struct ChannelConsumer {
    pub consumer: Arc<Consumer>,
    pub queue: Arc<Queue>,
}

#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub state: ChannelState,
    pub publish: Option<PendingPublish>,
    next_delivery_tag: u64,
    pub unacked: VecDeque<Unacked>,
    pub consumers: HashMap<ConsumerTag, ChannelConsumer>,
    /// basic.qos with global=false: the prefetch of consumers created from now on.
    pub consumer_prefetch: u32,
    /// basic.qos with global=true: a window shared by all of the channel's consumers.
    pub shared_credit: Arc<Credit>,
    pub confirms: Option<Confirms>,
    /// The last queue declared, which an empty queue name refers to.
    pub last_queue: Option<QueueName>,
    /// The exchange this channel last published to with write permission: the next publish
    /// there skips the check, so the publish path stays free of locks and allocation.
    pub publish_authorized: Option<String>,
    /// Set by tx.select: publishes and acks wait for tx.commit.
    pub transaction: Option<Transaction>,
    /// The channel's direct reply-to queue, while it has a reply consumer.
    pub reply_queue: Option<Arc<Queue>>,
    /// Confirms and commit-oks waiting for the message store, in the order they go out.
    pub pending: ConfirmQueue<Pending>,
}

impl Channel {
    pub fn new(id: u16) -> Channel {
        Channel {
            id,
            state: ChannelState::Open,
            publish: None,
            next_delivery_tag: 1,
            unacked: VecDeque::new(),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            shared_credit: Credit::new(0),
            confirms: None,
            last_queue: None,
            publish_authorized: None,
            transaction: None,
            reply_queue: None,
            pending: ConfirmQueue::default(),
        }
    }

    pub fn next_delivery_tag(&mut self) -> u64 {
        let tag = self.next_delivery_tag;
        self.next_delivery_tag += 1;
        tag
    }

    /// Resolves an empty queue name to the channel's last declared queue.
    pub fn queue_name(&self, name: &str) -> Result<QueueName, Close> {
        if !name.is_empty() {
            return Ok(QueueName::new(name));
        }
        self.last_queue.clone().ok_or_else(|| Close::channel(code::NOT_FOUND, "no previously declared queue"))
    }

    /// Adds a content header to the pending publish.
    pub fn content_header(&mut self, body_size: u64, properties: Box<Properties>) -> Result<Option<Message>, Close> {
        let publish = match &mut self.publish {
            Some(publish @ PendingPublish { content: Content::AwaitingHeader, .. }) => publish,
            _ => return Err(Close::connection(code::UNEXPECTED_FRAME, "content header without a publish")),
        };
        if body_size > MESSAGE_BYTES_MAX {
            return Err(Close::channel(
                code::PRECONDITION_FAILED,
                format!("message size {body_size} is larger than configured max size {MESSAGE_BYTES_MAX}"),
            ));
        }
        publish.content = Content::AwaitingBody { properties, body_size, body: BodyBuffer::Empty };
        Ok(if body_size == 0 { self.take_message() } else { None })
    }

    /// Adds a body frame; returns the message once its body is complete.
    pub fn content_body(&mut self, payload: Bytes) -> Result<Option<Message>, Close> {
        let Some(PendingPublish { content: Content::AwaitingBody { body_size, body, .. }, .. }) = &mut self.publish
        else {
            return Err(Close::connection(code::UNEXPECTED_FRAME, "content body without a content header"));
        };
        let size = body.len() as u64 + payload.len() as u64;
        if size > *body_size {
            return Err(Close::connection(
                code::FRAME_ERROR,
                format!("content body of {size} bytes exceeds the declared {body_size}"),
            ));
        }
        body.push(payload, *body_size);
        Ok(if size == *body_size { self.take_message() } else { None })
    }

    fn take_message(&mut self) -> Option<Message> {
        let publish = self.publish.take()?;
        let Content::AwaitingBody { properties, body, .. } = publish.content else {
            unreachable!("take_message is called once the body is complete");
        };
        Some(Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            properties: *properties,
            body: body.into_bytes(),
            journal: None,
        })
    }

    /// Takes the unacked deliveries that a (multiple) ack, nack or reject names.
    pub fn take_unacked(&mut self, delivery_tag: u64, multiple: bool) -> Result<Vec<Unacked>, Close> {
        if multiple {
            let upto = if delivery_tag == 0 { u64::MAX } else { delivery_tag };
            if delivery_tag != 0 && !self.unacked.iter().any(|entry| entry.delivery_tag == delivery_tag) {
                return Err(unknown_tag(delivery_tag));
            }
            let count = self.unacked.partition_point(|entry| entry.delivery_tag <= upto);
            return Ok(self.unacked.drain(..count).collect());
        }
        let index = self
            .unacked
            .binary_search_by_key(&delivery_tag, |entry| entry.delivery_tag)
            .map_err(|_| unknown_tag(delivery_tag))?;
        Ok(self.unacked.remove(index).into_iter().collect())
    }

    /// Closes the channel's consumption: detaches every consumer, requeues every unacked
    /// delivery, and only then lets the queues serve their other consumers (so the requeued
    /// messages keep their places) or deletes auto-delete queues left without consumers.
    /// Returns the detached consumers' ids.
    pub fn release(&mut self, vhost: &Vhost) -> Vec<ConsumerId> {
        let mut detached = Vec::with_capacity(self.consumers.len());
        let mut queues: Vec<(Arc<Queue>, bool)> = Vec::new();
        for (_, entry) in self.consumers.drain() {
            detached.push(entry.consumer.id);
            if Vhost::is_reply_queue(&entry.queue) {
                vhost.remove_reply_queue(&entry.queue);
                continue;
            }
            let auto_delete = entry.queue.detach_consumer(entry.consumer.id, &entry.consumer.inbox);
            queues.push((entry.queue, auto_delete));
        }
        self.requeue_all();
        for (queue, auto_delete) in queues {
            if auto_delete {
                vhost.remove_queue(&queue);
            } else {
                queue.dispatch();
            }
        }
        detached
    }

    /// Requeues every unacked delivery, as a channel close does, including those acknowledged
    /// in a transaction that was never committed.
    pub fn requeue_all(&mut self) {
        let mut entries: Vec<Unacked> = self.unacked.drain(..).collect();
        if let Some(transaction) = &mut self.transaction {
            entries.extend(transaction.take_unacked());
        }
        requeue(entries);
    }

    /// Puts deliveries back on the unacked list, in delivery-tag order (a rollback).
    pub fn restore_unacked(&mut self, entries: Vec<Unacked>) {
        self.unacked.extend(entries);
        self.unacked.make_contiguous().sort_unstable_by_key(|entry| entry.delivery_tag);
    }
}

/// Detaches one consumer, deleting its queue if that was auto-delete's last consumer.
pub fn cancel(vhost: &Vhost, entry: &ChannelConsumer) {
    if Vhost::is_reply_queue(&entry.queue) {
        return vhost.remove_reply_queue(&entry.queue);
    }
    if entry.queue.remove_consumer(entry.consumer.id, &entry.consumer.inbox) {
        vhost.remove_queue(&entry.queue);
    }
}

/// Settles acknowledged deliveries: they leave their queues for good.
pub fn ack(entries: &[Unacked]) {
    for entry in entries {
        entry.queue.acked([&entry.message]);
    }
    settle(entries);
}

/// Settles deliveries: releases their consumers' credit, in runs per consumer.
pub fn settle(entries: &[Unacked]) {
    let mut run: Option<(&Arc<Consumer>, u32)> = None;
    for consumer in entries.iter().filter_map(|entry| entry.consumer.as_ref()) {
        match &mut run {
            Some((current, count)) if Arc::ptr_eq(current, consumer) => *count += 1,
            _ => {
                if let Some((current, count)) = run.take() {
                    current.settle(count);
                }
                run = Some((consumer, 1));
            }
        }
    }
    if let Some((current, count)) = run {
        current.settle(count);
    }
}

/// Puts deliveries back in their queues (in place, marked redelivered) and frees their credit.
pub fn requeue(entries: Vec<Unacked>) {
    // Credit is released after the messages are back: releasing it first could let another
    // consumer be served the next message ahead of these.
    let consumers: Vec<Arc<Consumer>> = entries.iter().filter_map(|entry| entry.consumer.clone()).collect();
    let mut by_queue: Vec<(Arc<Queue>, Vec<Requeue>)> = Vec::new();
    for entry in entries {
        let requeue = Requeue {
            sequence: entry.sequence,
            message: entry.message,
            redelivered: true,
            expires_at: entry.expires_at,
        };
        match by_queue.iter_mut().find(|(queue, _)| Arc::ptr_eq(queue, &entry.queue)) {
            Some((_, items)) => items.push(requeue),
            None => by_queue.push((entry.queue, vec![requeue])),
        }
    }
    for (queue, items) in by_queue {
        queue.requeue(items);
    }
    for consumer in consumers {
        consumer.settle(1);
    }
}

fn unknown_tag(delivery_tag: u64) -> Close {
    Close::channel(code::PRECONDITION_FAILED, format!("unknown delivery tag {delivery_tag}"))
}

/// Hands rejected deliveries to their queues' dead-lettering (dropped if a queue has none).
pub fn dead_letter(entries: Vec<Unacked>) {
    let mut by_queue: Vec<(Arc<Queue>, Vec<Arc<Message>>)> = Vec::new();
    for entry in entries {
        match by_queue.iter_mut().find(|(queue, _)| Arc::ptr_eq(queue, &entry.queue)) {
            Some((_, messages)) => messages.push(entry.message),
            None => by_queue.push((entry.queue, vec![entry.message])),
        }
    }
    for (queue, messages) in by_queue {
        queue.reject(messages);
    }
}
