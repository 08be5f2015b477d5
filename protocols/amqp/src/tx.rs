//! Transactions (tx.select, tx.commit, tx.rollback), as RabbitMQ implements them: on a
//! transactional channel, publishes and acknowledgements take effect only at commit, and a
//! rollback discards the publishes and returns the acknowledged deliveries to the unacked list.

use warren_core::Message;

use crate::channel::{self, Pending, Unacked};
use crate::codec::methods::tx;
use crate::codec::Method;
use crate::connection::Connection;
use crate::error::{code, Close};

/// The most body bytes one transaction may hold before commit: a transaction buffers whole
/// messages, so it needs a bound like any other buffer.
const TRANSACTION_BYTES_MAX: usize = 128 * 1024 * 1024;

/// How deliveries acknowledged in a transaction are settled at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    Reject,
    Requeue,
}

/// What a transactional channel holds until commit.
#[derive(Debug, Default)]
pub struct Transaction {
    publishes: Vec<(Message, bool)>,
    publish_bytes: usize,
    settlements: Vec<(Settlement, Vec<Unacked>)>,
}

impl Transaction {
    /// Everything the transaction took from the unacked list, for a rollback or a close.
    pub fn take_unacked(&mut self) -> Vec<Unacked> {
        self.settlements.drain(..).flat_map(|(_, entries)| entries).collect()
    }
}

impl Connection {
    pub(crate) fn tx_select(&mut self, channel_id: u16) -> Result<(), Close> {
        let channel = self.channel_mut(channel_id);
        if channel.confirms.is_some() {
            return Err(Close::channel(code::PRECONDITION_FAILED, "cannot switch from confirm to tx mode"));
        }
        if channel.transaction.is_none() {
            channel.transaction = Some(Transaction::default());
        }
        self.send(channel_id, Method::TxSelectOk(tx::SelectOk {}));
        Ok(())
    }

    /// Holds a complete publish until commit.
    pub(crate) fn tx_publish(&mut self, channel_id: u16, message: Message, mandatory: bool) -> Result<(), Close> {
        let transaction = self.channel_mut(channel_id).transaction.as_mut().expect("called on tx channels");
        transaction.publish_bytes += message.body.len();
        if transaction.publish_bytes > TRANSACTION_BYTES_MAX {
            return Err(Close::channel(
                code::PRECONDITION_FAILED,
                format!("transaction holds more than {TRANSACTION_BYTES_MAX} bytes of messages"),
            ));
        }
        transaction.publishes.push((message, mandatory));
        Ok(())
    }

    /// Holds acknowledged deliveries until commit.
    pub(crate) fn tx_settle(&mut self, channel_id: u16, settlement: Settlement, entries: Vec<Unacked>) {
        let transaction = self.channel_mut(channel_id).transaction.as_mut().expect("called on tx channels");
        transaction.settlements.push((settlement, entries));
    }

    /// Commits; commit-ok waits until the committed persistent messages are on disk.
    pub(crate) fn tx_commit(&mut self, channel_id: u16) -> Result<(), Close> {
        let mut transaction = self.transaction(channel_id)?;
        let mut lsn = None;
        for (message, mandatory) in std::mem::take(&mut transaction.publishes) {
            match self.route_now(channel_id, message, mandatory) {
                Ok(journaled) => lsn = lsn.max(journaled),
                Err(close) => {
                    // The acknowledged deliveries go back to the unacked list, for the
                    // channel's close to requeue.
                    let returned = transaction.take_unacked();
                    self.channel_mut(channel_id).restore_unacked(returned);
                    return Err(close);
                }
            }
        }
        for (settlement, entries) in transaction.settlements {
            match settlement {
                Settlement::Ack => channel::ack(&entries),
                Settlement::Requeue => channel::requeue(entries),
                Settlement::Reject => {
                    channel::settle(&entries);
                    channel::dead_letter(entries);
                }
            }
        }
        self.send_after_sync(channel_id, lsn, Pending::CommitOk);
        Ok(())
    }

    pub(crate) fn tx_rollback(&mut self, channel_id: u16) -> Result<(), Close> {
        let mut transaction = self.transaction(channel_id)?;
        let returned = transaction.take_unacked();
        self.channel_mut(channel_id).restore_unacked(returned);
        self.send(channel_id, Method::TxRollbackOk(tx::RollbackOk {}));
        Ok(())
    }

    /// Takes the channel's open transaction, leaving a fresh one (the channel stays
    /// transactional).
    fn transaction(&mut self, channel_id: u16) -> Result<Transaction, Close> {
        let channel = self.channel_mut(channel_id);
        let Some(transaction) = channel.transaction.as_mut() else {
            return Err(Close::channel(code::PRECONDITION_FAILED, "channel is not transactional"));
        };
        Ok(std::mem::take(transaction))
    }
}
