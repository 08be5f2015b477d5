//! Channel methods: each arm of `channel_method` is one call to a handler here.

use std::sync::Arc;

use bytes::Bytes;
use warren_core::exchange::{Exchange, ExchangeKind, ExchangeOptions};
use warren_core::journal::Lsn;
use warren_core::name::{ConsumerTag, ExchangeName, QueueName};
use warren_core::properties::Properties;
use warren_core::queue::{AckMode, Consumer, Credit, Exclusivity};
use warren_core::topic::RoutingKey;
use warren_core::vhost::{Declare, REPLY_TO};
use warren_core::{Error, Message, Queue, Vhost};

use crate::channel::{self, Channel, ChannelConsumer, ChannelState, Content, Pending, PendingPublish, Unacked};
use crate::codec::methods::{access, basic, channel as channel_methods, confirm, exchange, queue};
use crate::codec::{self, Method};
use crate::connection::Connection;
use crate::error::{code, Close};
use crate::translate;
use crate::tx::Settlement;

type Handled = Result<(), Close>;

impl Connection {
    pub(crate) fn channel_method(&mut self, channel_id: u16, method: Method) -> Handled {
        let method_id = method.id();
        if self.channel(channel_id).publish.is_some() {
            return Err(Close::connection(
                code::UNEXPECTED_FRAME,
                format!("expected content header for class 60, got non content header frame {}", method.name()),
            )
            .during(method_id));
        }
        let result = match method {
            Method::ChannelClose(_) => {
                self.close_channel(channel_id);
                Ok(())
            }
            Method::ChannelOpen(_) => Err(Close::connection(code::CHANNEL_ERROR, "second 'channel.open' seen")),
            Method::ChannelFlow(flow) => self.flow(channel_id, flow),
            Method::AccessRequest(_) => self.access_request(channel_id),
            Method::ExchangeDeclare(declare) => self.exchange_declare(channel_id, declare),
            Method::ExchangeDelete(delete) => self.exchange_delete(channel_id, delete),
            Method::ExchangeBind(bind) => self.exchange_bind(channel_id, bind),
            Method::ExchangeUnbind(unbind) => self.exchange_unbind(channel_id, unbind),
            Method::QueueDeclare(declare) => self.queue_declare(channel_id, declare),
            Method::QueueBind(bind) => self.queue_bind(channel_id, bind),
            Method::QueueUnbind(unbind) => self.queue_unbind(channel_id, unbind),
            Method::QueuePurge(purge) => self.queue_purge(channel_id, purge),
            Method::QueueDelete(delete) => self.queue_delete(channel_id, delete),
            Method::BasicQos(qos) => self.basic_qos(channel_id, qos),
            Method::BasicConsume(consume) => self.basic_consume(channel_id, consume),
            Method::BasicCancel(cancel) => self.basic_cancel(channel_id, cancel),
            Method::BasicPublish(publish) => self.basic_publish(channel_id, publish),
            Method::BasicGet(get) => self.basic_get(channel_id, get),
            Method::BasicAck(ack) => self.basic_ack(channel_id, ack),
            Method::BasicReject(reject) => self.basic_reject(channel_id, reject.delivery_tag, false, reject.requeue),
            Method::BasicNack(nack) => self.basic_reject(channel_id, nack.delivery_tag, nack.multiple, nack.requeue),
            Method::BasicRecover(recover) => self.basic_recover(channel_id, recover.requeue, true),
            Method::BasicRecoverAsync(recover) => self.basic_recover(channel_id, recover.requeue, false),
            Method::ConfirmSelect(select) => self.confirm_select(channel_id, select),
            Method::TxSelect(_) => self.tx_select(channel_id),
            Method::TxCommit(_) => self.tx_commit(channel_id),
            Method::TxRollback(_) => self.tx_rollback(channel_id),
            other => Err(not_implemented(&other)),
        };
        result.map_err(|close| close.during(method_id))
    }

    pub(crate) fn channel_mut(&mut self, channel_id: u16) -> &mut Channel {
        self.channel(channel_id)
    }

    fn channel(&mut self, channel_id: u16) -> &mut Channel {
        self.channels.get_mut(&channel_id).expect("routed only to open channels")
    }

    fn vhost(&self) -> Arc<Vhost> {
        self.vhost.clone().expect("channels exist only on open connections")
    }

    fn flow(&mut self, channel_id: u16, flow: channel_methods::Flow) -> Handled {
        if !flow.active {
            // As RabbitMQ: a client may not stop the broker's deliveries with channel.flow.
            return Err(Close::connection(code::NOT_IMPLEMENTED, "active=false"));
        }
        self.send(channel_id, Method::ChannelFlowOk(channel_methods::FlowOk { active: flow.active }));
        Ok(())
    }

    fn access_request(&mut self, channel_id: u16) -> Handled {
        self.send(channel_id, Method::AccessRequestOk(access::RequestOk { ticket: 1 }));
        Ok(())
    }

    fn exchange_declare(&mut self, channel_id: u16, declare: exchange::Declare) -> Handled {
        let name = ExchangeName::new(&declare.exchange);
        let vhost = self.vhost();
        let mode = if declare.passive { Declare::Passive } else { Declare::Create };
        if mode == Declare::Create {
            let kind = ExchangeKind::from_name(&declare.kind)
                .ok_or_else(|| Error::UnknownExchangeType { type_name: declare.kind.clone() })?;
            let options = ExchangeOptions {
                kind,
                durability: translate::durability(declare.durable),
                auto_delete: declare.auto_delete,
                internal: declare.internal,
                arguments: declare.arguments,
            };
            vhost.declare_exchange(&name, options, mode)?;
        } else {
            vhost.exchange(&name)?;
        }
        if !declare.nowait {
            self.send(channel_id, Method::ExchangeDeclareOk(exchange::DeclareOk {}));
        }
        Ok(())
    }

    fn exchange_delete(&mut self, channel_id: u16, delete: exchange::Delete) -> Handled {
        self.vhost().delete_exchange(&ExchangeName::new(&delete.exchange), delete.if_unused)?;
        if !delete.nowait {
            self.send(channel_id, Method::ExchangeDeleteOk(exchange::DeleteOk {}));
        }
        Ok(())
    }

    fn exchange_bind(&mut self, channel_id: u16, bind: exchange::Bind) -> Handled {
        let key = translate::binding_key(&bind.routing_key);
        let destination = ExchangeName::new(&bind.destination);
        let source = ExchangeName::new(&bind.source);
        self.vhost().bind_exchange(&destination, &source, key, bind.arguments)?;
        if !bind.nowait {
            self.send(channel_id, Method::ExchangeBindOk(exchange::BindOk {}));
        }
        Ok(())
    }

    fn exchange_unbind(&mut self, channel_id: u16, unbind: exchange::Unbind) -> Handled {
        let key = translate::binding_key(&unbind.routing_key);
        let destination = ExchangeName::new(&unbind.destination);
        let source = ExchangeName::new(&unbind.source);
        self.vhost().unbind_exchange(&destination, &source, key, unbind.arguments)?;
        if !unbind.nowait {
            self.send(channel_id, Method::ExchangeUnbindOk(exchange::UnbindOk {}));
        }
        Ok(())
    }

    fn queue_declare(&mut self, channel_id: u16, declare: queue::Declare) -> Handled {
        if declare.queue == REPLY_TO && declare.passive {
            // The pseudo-queue always exists, as in RabbitMQ.
            let ok = queue::DeclareOk { queue: declare.queue, message_count: 0, consumer_count: 1 };
            self.send(channel_id, Method::QueueDeclareOk(ok));
            return Ok(());
        }
        let vhost = self.vhost();
        let name = QueueName::new(&declare.queue);
        let mode = if declare.passive { Declare::Passive } else { Declare::Create };
        let options = translate::queue_options(
            declare.durable,
            declare.exclusive,
            declare.auto_delete,
            declare.arguments,
            self.id,
        );
        let exclusive = options.exclusive_owner.is_some();
        let declared = vhost.declare_queue(&name, options, mode, self.id)?;
        let name = declared.queue.name().clone();
        let queue = &declared.queue;
        if exclusive && mode == Declare::Create && !self.exclusive_queues.iter().any(|known| Arc::ptr_eq(known, queue))
        {
            self.exclusive_queues.push(queue.clone());
        }
        self.channel(channel_id).last_queue = Some(name.clone());
        if !declare.nowait {
            let ok = queue::DeclareOk {
                queue: name.to_string(),
                message_count: count(declared.message_count),
                consumer_count: count(declared.consumer_count),
            };
            self.send(channel_id, Method::QueueDeclareOk(ok));
        }
        Ok(())
    }

    fn queue_bind(&mut self, channel_id: u16, bind: queue::Bind) -> Handled {
        let queue = self.channel(channel_id).queue_name(&bind.queue)?;
        let key = translate::binding_key(&bind.routing_key);
        let exchange = ExchangeName::new(&bind.exchange);
        self.vhost().bind_queue(&queue, &exchange, key, bind.arguments, self.id)?;
        if !bind.nowait {
            self.send(channel_id, Method::QueueBindOk(queue::BindOk {}));
        }
        Ok(())
    }

    fn queue_unbind(&mut self, channel_id: u16, unbind: queue::Unbind) -> Handled {
        let queue = self.channel(channel_id).queue_name(&unbind.queue)?;
        let key = translate::binding_key(&unbind.routing_key);
        let exchange = ExchangeName::new(&unbind.exchange);
        self.vhost().unbind_queue(&queue, &exchange, key, unbind.arguments, self.id)?;
        self.send(channel_id, Method::QueueUnbindOk(queue::UnbindOk {}));
        Ok(())
    }

    fn queue_purge(&mut self, channel_id: u16, purge: queue::Purge) -> Handled {
        let name = self.channel(channel_id).queue_name(&purge.queue)?;
        let purged = self.vhost().queue(&name, self.id)?.purge();
        if !purge.nowait {
            self.send(channel_id, Method::QueuePurgeOk(queue::PurgeOk { message_count: count(purged) }));
        }
        Ok(())
    }

    fn queue_delete(&mut self, channel_id: u16, delete: queue::Delete) -> Handled {
        let name = self.channel(channel_id).queue_name(&delete.queue)?;
        let deleted = self.vhost().delete_queue(&name, delete.if_unused, delete.if_empty, self.id)?;
        self.exclusive_queues.retain(|queue| !queue.is_deleted());
        if !delete.nowait {
            self.send(channel_id, Method::QueueDeleteOk(queue::DeleteOk { message_count: count(deleted) }));
        }
        Ok(())
    }

    fn basic_qos(&mut self, channel_id: u16, qos: basic::Qos) -> Handled {
        if qos.prefetch_size != 0 {
            return Err(Close::connection(code::NOT_IMPLEMENTED, format!("prefetch_size!=0 ({})", qos.prefetch_size)));
        }
        let channel = self.channel(channel_id);
        let prefetch = u32::from(qos.prefetch_count);
        if qos.global {
            channel.shared_credit.set_limit(prefetch);
        } else {
            channel.consumer_prefetch = prefetch;
        }
        self.send(channel_id, Method::BasicQosOk(basic::QosOk {}));
        Ok(())
    }

    fn basic_consume(&mut self, channel_id: u16, consume: basic::Consume) -> Handled {
        let vhost = self.vhost();
        let queue = if consume.queue == REPLY_TO {
            self.reply_queue(channel_id, consume.no_ack)?
        } else {
            let name = self.channel(channel_id).queue_name(&consume.queue)?;
            vhost.queue(&name, self.id)?
        };
        let tag = if consume.consumer_tag.is_empty() {
            ConsumerTag::from(generated_tag(self.id.0, self.next_consumer_id().0))
        } else {
            ConsumerTag::new(&consume.consumer_tag)
        };
        if self.channel(channel_id).consumers.contains_key(&tag) {
            return Err(Close::connection(code::NOT_ALLOWED, format!("attempt to reuse consumer tag '{tag}'")));
        }
        let priority = translate::consumer_priority(&consume.arguments)?;
        let id = self.next_consumer_id();
        let inbox = self.inbox.clone();
        let channel = self.channel(channel_id);
        let consumer = Arc::new(Consumer {
            id,
            tag: tag.clone(),
            ack_mode: if consume.no_ack { AckMode::Auto } else { AckMode::Manual },
            exclusivity: if consume.exclusive { Exclusivity::Exclusive } else { Exclusivity::Shared },
            priority,
            inbox,
            prefetch: Credit::new(channel.consumer_prefetch),
            shared: Some(channel.shared_credit.clone()),
        });
        queue.add_consumer(consumer.clone())?;
        // Deliveries reach the wire only when the inbox is drained, after this method's output,
        // so consume-ok still precedes them.
        if !consume.nowait {
            let ok = basic::ConsumeOk { consumer_tag: tag.to_string() };
            self.send(channel_id, Method::BasicConsumeOk(ok));
        }
        let channel = self.channel(channel_id);
        channel.consumers.insert(tag.clone(), ChannelConsumer { consumer, queue });
        self.consumers.insert(id, (channel_id, tag));
        Ok(())
    }

    /// Direct reply-to: a no-ack consumer of the pseudo-queue gets a private reply queue, one
    /// per channel, that the channel's publishes name in their reply_to.
    fn reply_queue(&mut self, channel_id: u16, no_ack: bool) -> Result<Arc<Queue>, Close> {
        if !no_ack {
            return Err(Close::channel(code::PRECONDITION_FAILED, "reply consumer cannot acknowledge"));
        }
        if self.channel(channel_id).reply_queue.is_some() {
            return Err(Close::channel(code::PRECONDITION_FAILED, "reply consumer already set"));
        }
        let queue = self.vhost().create_reply_queue(self.id);
        self.channel(channel_id).reply_queue = Some(queue.clone());
        Ok(queue)
    }

    fn basic_cancel(&mut self, channel_id: u16, cancel: basic::Cancel) -> Handled {
        let vhost = self.vhost();
        let tag = ConsumerTag::new(&cancel.consumer_tag);
        if let Some(entry) = self.channel(channel_id).consumers.remove(&tag) {
            channel::cancel(&vhost, &entry);
            let channel = self.channel(channel_id);
            if channel.reply_queue.as_ref().is_some_and(|queue| Arc::ptr_eq(queue, &entry.queue)) {
                channel.reply_queue = None;
            }
            self.consumers.remove(&entry.consumer.id);
        }
        if !cancel.nowait {
            self.send(channel_id, Method::BasicCancelOk(basic::CancelOk { consumer_tag: cancel.consumer_tag }));
        }
        Ok(())
    }

    fn basic_publish(&mut self, channel_id: u16, publish: basic::Publish) -> Handled {
        if publish.immediate {
            return Err(Close::connection(code::NOT_IMPLEMENTED, "immediate=true"));
        }
        self.channel(channel_id).publish = Some(PendingPublish {
            exchange: ExchangeName::new(&publish.exchange),
            routing_key: RoutingKey::new(&publish.routing_key),
            mandatory: publish.mandatory,
            content: Content::AwaitingHeader,
        });
        Ok(())
    }

    pub(crate) fn content_header(&mut self, channel_id: u16, body_size: u64, properties: Box<Properties>) -> Handled {
        let channel = self.channel(channel_id);
        let mandatory = channel.publish.as_ref().is_some_and(|publish| publish.mandatory);
        match channel.content_header(body_size, properties)? {
            Some(message) => self.route(channel_id, message, mandatory),
            None => Ok(()),
        }
    }

    pub(crate) fn content_body(&mut self, channel_id: u16, payload: Bytes) -> Handled {
        let channel = self.channel(channel_id);
        let mandatory = channel.publish.as_ref().is_some_and(|publish| publish.mandatory);
        match channel.content_body(payload)? {
            Some(message) => self.route(channel_id, message, mandatory),
            None => Ok(()),
        }
    }

    /// A complete message: checked now, then routed now or, in a transaction, at commit.
    fn route(&mut self, channel_id: u16, mut message: Message, mandatory: bool) -> Handled {
        let exchange = self.vhost().exchange(&message.exchange)?;
        message.check_expiration()?;
        if message.properties.reply_to.as_deref() == Some(REPLY_TO) {
            let Some(reply_queue) = &self.channel(channel_id).reply_queue else {
                return Err(Close::channel(code::PRECONDITION_FAILED, "fast reply consumer does not exist"));
            };
            message.properties.reply_to = Some(reply_queue.name().to_string());
        }
        if self.channel(channel_id).transaction.is_some() {
            return self.tx_publish(channel_id, message, mandatory);
        }
        self.route_through(channel_id, &exchange, message, mandatory).map(|_| ())
    }

    /// Routes a message held by a transaction, looking its exchange up again (it may have gone).
    /// Returns where it was journaled, if it was.
    pub(crate) fn route_now(
        &mut self,
        channel_id: u16,
        message: Message,
        mandatory: bool,
    ) -> Result<Option<Lsn>, Close> {
        let exchange = self.vhost().exchange(&message.exchange)?;
        self.route_through(channel_id, &exchange, message, mandatory)
    }

    /// Routes a message, returns it if unroutable and mandatory, and confirms it.
    fn route_through(
        &mut self,
        channel_id: u16,
        exchange: &Arc<Exchange>,
        message: Message,
        mandatory: bool,
    ) -> Result<Option<Lsn>, Close> {
        let vhost = self.vhost();
        let mut queues = Vec::new();
        vhost.route(exchange, &message, &mut queues)?;
        if queues.is_empty() && mandatory {
            self.basic_return(channel_id, &message);
        }
        let published = vhost.enqueue(message, &queues);
        for queue in &queues {
            if queue.is_full() {
                self.pause(queue.clone());
            }
        }
        self.confirm(channel_id, published.rejected, published.lsn);
        Ok(published.lsn)
    }

    /// Records a publish's outcome for confirms. Acks are batched into one multiple-ack per
    /// read; a nack goes out at once, after the acks before it, so order is kept. A journaled
    /// message's confirm (and everything after it) waits until the store has synced it.
    fn confirm(&mut self, channel_id: u16, rejected: bool, lsn: Option<Lsn>) {
        let synced = lsn.is_none_or(|lsn| self.sync_outcome(lsn) == Some(true));
        let channel = self.channel(channel_id);
        let Some(confirms) = &mut channel.confirms else {
            return;
        };
        confirms.last_sequence += 1;
        let sequence = confirms.last_sequence;
        if !synced || !channel.pending.is_empty() {
            let outcome = if rejected { Pending::Nack(sequence) } else { Pending::Ack(sequence) };
            channel.pending.push(lsn, outcome);
            self.awaiting_sync = true;
            return;
        }
        if !rejected {
            confirms.ack_pending_upto = Some(sequence);
            return;
        }
        if let Some(upto) = confirms.ack_pending_upto.take() {
            self.send(channel_id, Method::BasicAck(basic::Ack { delivery_tag: upto, multiple: true }));
        }
        let nack = basic::Nack { delivery_tag: sequence, multiple: false, requeue: false };
        self.send(channel_id, Method::BasicNack(nack));
    }

    fn basic_return(&mut self, channel_id: u16, message: &Message) {
        let method = Method::BasicReturn(basic::Return {
            reply_code: code::NO_ROUTE,
            reply_text: "NO_ROUTE".into(),
            exchange: message.exchange.to_string(),
            routing_key: message.routing_key.to_string(),
        });
        let frame_max = self.frame_bytes_max;
        codec::encode_content(&mut self.out, channel_id, &method, &message.properties, &message.body, frame_max);
    }

    /// Acks, in one multiple-ack per channel, every publish confirmed during this batch.
    pub(crate) fn send_pending_confirms(&mut self) {
        let open: Vec<u16> = self
            .channels
            .values()
            .filter(|channel| channel.state == ChannelState::Open && channel.confirms.is_some())
            .map(|channel| channel.id)
            .collect();
        for channel_id in open {
            self.send_pending_confirm(channel_id);
        }
    }

    /// Sends one channel's batched ack, if it has one.
    pub(crate) fn send_pending_confirm(&mut self, channel_id: u16) {
        let pending = self.channels.get_mut(&channel_id).and_then(|channel| channel.confirms.as_mut());
        if let Some(upto) = pending.and_then(|confirms| confirms.ack_pending_upto.take()) {
            self.send(channel_id, Method::BasicAck(basic::Ack { delivery_tag: upto, multiple: true }));
        }
    }

    fn basic_get(&mut self, channel_id: u16, get: basic::Get) -> Handled {
        let name = self.channel(channel_id).queue_name(&get.queue)?;
        let queue = self.vhost().queue(&name, self.id)?;
        let Some(got) = queue.get() else {
            self.send(channel_id, Method::BasicGetEmpty(basic::GetEmpty { cluster_id: String::new() }));
            return Ok(());
        };
        let channel = self.channel(channel_id);
        let delivery_tag = channel.next_delivery_tag();
        if !get.no_ack {
            channel.unacked.push_back(Unacked {
                delivery_tag,
                queue,
                sequence: got.sequence,
                message: got.message.clone(),
                consumer: None,
                delivered_at: tokio::time::Instant::now(),
                expires_at: got.expires_at,
            });
        } else {
            queue.acked([&got.message]);
        }
        let method = Method::BasicGetOk(basic::GetOk {
            delivery_tag,
            redelivered: got.redelivered,
            exchange: got.message.exchange.to_string(),
            routing_key: got.message.routing_key.to_string(),
            message_count: count(got.remaining),
        });
        let frame_max = self.frame_bytes_max;
        let message = &got.message;
        codec::encode_content(&mut self.out, channel_id, &method, &message.properties, &message.body, frame_max);
        Ok(())
    }

    fn basic_ack(&mut self, channel_id: u16, ack: basic::Ack) -> Handled {
        let entries = self.channel(channel_id).take_unacked(ack.delivery_tag, ack.multiple)?;
        if self.channel(channel_id).transaction.is_some() {
            self.tx_settle(channel_id, Settlement::Ack, entries);
            return Ok(());
        }
        channel::ack(&entries);
        Ok(())
    }

    fn basic_reject(&mut self, channel_id: u16, delivery_tag: u64, multiple: bool, requeue: bool) -> Handled {
        let entries = self.channel(channel_id).take_unacked(delivery_tag, multiple)?;
        if self.channel(channel_id).transaction.is_some() {
            let settlement = if requeue { Settlement::Requeue } else { Settlement::Reject };
            self.tx_settle(channel_id, settlement, entries);
            return Ok(());
        }
        if requeue {
            channel::requeue(entries);
        } else {
            channel::settle(&entries);
            channel::dead_letter(entries);
        }
        Ok(())
    }

    fn basic_recover(&mut self, channel_id: u16, _requeue: bool, reply: bool) -> Handled {
        // Both forms requeue: redelivering to the original consumer (requeue=false) is not
        // something RabbitMQ does either.
        self.channel(channel_id).requeue_all();
        if reply {
            self.send(channel_id, Method::BasicRecoverOk(basic::RecoverOk {}));
        }
        Ok(())
    }

    fn confirm_select(&mut self, channel_id: u16, select: confirm::Select) -> Handled {
        let channel = self.channel(channel_id);
        if channel.transaction.is_some() {
            return Err(Close::channel(code::PRECONDITION_FAILED, "cannot switch from tx to confirm mode"));
        }
        if channel.confirms.is_none() {
            channel.confirms = Some(Default::default());
        }
        if !select.nowait {
            self.send(channel_id, Method::ConfirmSelectOk(confirm::SelectOk {}));
        }
        Ok(())
    }
}

fn not_implemented(method: &Method) -> Close {
    Close::connection(code::NOT_IMPLEMENTED, format!("{} is not implemented", method.name()))
}

/// Saturates a count into a 32-bit wire field.
fn count(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A server-generated consumer tag, unique per broker run.
fn generated_tag(connection: u64, consumer: u64) -> String {
    format!("amq.ctag-warren-{connection}-{consumer}")
}
