//! Group commit of issuance records and audit events: one writer thread takes everything queued,
//! writes it to the store in one transaction and to the audit log with one `fdatasync`, then
//! acknowledges. An SVID is returned to its caller only after its record is durable.

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditLog, Event};
use crate::store::{IssuedRecord, Store};

/// Most items written per batch.
const MAX_BATCH: usize = 2048;

/// Work for the writer.
#[derive(Debug)]
pub struct Item {
    pub events: Vec<Event>,
    pub issued: Option<IssuedRecord>,
    pub ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the writer thread. Dropping it flushes the queue and waits for the thread, so the
/// store and log are closed when the server is gone.
#[derive(Debug)]
pub struct Journal {
    tx: Option<mpsc::Sender<Item>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Journal {
    pub fn start(store: Arc<Store>, mut audit: AuditLog) -> Self {
        let (tx, mut rx) = mpsc::channel::<Item>(8192);
        let spawned = thread::Builder::new().name("sigil-journal".to_owned()).spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.blocking_recv() {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(i) => batch.push(i),
                        Err(_) => break,
                    }
                }
                let issued: Vec<IssuedRecord> = batch.iter_mut().filter_map(|i| i.issued.take()).collect();
                let events: Vec<Event> = batch.iter_mut().flat_map(|i| std::mem::take(&mut i.events)).collect();
                let mut result = Ok(());
                if !issued.is_empty() {
                    result = store.record_issued(&issued).map_err(|e| e.to_string());
                }
                if result.is_ok() && !events.is_empty() {
                    result = audit.append(events).map_err(|e| e.to_string());
                }
                if let Err(e) = &result {
                    tracing::error!(error = %e, "journal write failed; refusing to hand out unrecorded SVIDs");
                }
                for i in batch.drain(..) {
                    if let Some(ack) = i.ack {
                        let _ = ack.send(result.clone());
                    }
                }
            }
        });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot start journal thread");
                None
            }
        };
        Self {
            tx: Some(tx),
            thread,
        }
    }

    fn sender(&self) -> Result<&mpsc::Sender<Item>, String> {
        self.tx.as_ref().ok_or_else(|| "journal stopped".to_owned())
    }

    /// Queues and waits until durable.
    pub async fn commit(
        &self,
        events: Vec<Event>,
        issued: Option<IssuedRecord>,
    ) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.sender()?
            .send(Item {
                events,
                issued,
                ack: Some(ack),
            })
            .await
            .map_err(|_| "journal stopped".to_owned())?;
        done.await.map_err(|_| "journal stopped".to_owned())?
    }

    /// Queues without waiting (refusals: the caller gets nothing to lose).
    pub fn record(&self, events: Vec<Event>) {
        let sent = self.sender().map(|tx| {
            tx.try_send(Item {
                events,
                issued: None,
                ack: None,
            })
            .is_ok()
        });
        if sent != Ok(true) {
            tracing::warn!("audit journal queue full; dropping a refusal record");
        }
    }
}
