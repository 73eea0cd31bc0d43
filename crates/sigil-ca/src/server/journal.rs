//! Group commit of issuance records and audit events: one writer thread takes everything queued,
//! writes it to the store in one transaction and to the audit log with one `fdatasync`, then
//! acknowledges. An SVID is returned to its caller only after its record is durable.
//!
//! When a batch cannot be written (disk full, immutable file), every request waiting on it is
//! refused, and the records that nobody waits for (refusals) are counted in
//! `sigil_server_audit_records_lost_total` and written to the server log at error level, so an
//! outage of the audit log never loses them silently.

use std::sync::Arc;
use std::thread;

use prometheus_client::metrics::counter::Counter;
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

/// Counters the writer keeps (registered in [`super::metrics::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct JournalMetrics {
    /// Batches that could not be made durable.
    pub write_failures: Counter,
    /// Audit records that never reached the log (each is logged at error level instead).
    pub records_lost: Counter,
    /// Requests refused because their record could not be made durable.
    pub requests_refused: Counter,
}

/// Logs and counts records that could not be written.
fn lost(metrics: &JournalMetrics, events: &[Event], why: &str) {
    for e in events {
        metrics.records_lost.inc();
        let record = serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"));
        tracing::error!(%record, reason = why, "audit record lost");
    }
}

/// Handle to the writer thread. Dropping it flushes the queue and waits for the thread, so the
/// store and log are closed when the server is gone.
#[derive(Debug)]
pub struct Journal {
    tx: Option<mpsc::Sender<Item>>,
    thread: Option<thread::JoinHandle<()>>,
    metrics: JournalMetrics,
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
    pub fn start(store: Arc<Store>, mut audit: AuditLog, metrics: JournalMetrics) -> Self {
        let thread_metrics = metrics.clone();
        let (tx, mut rx) = mpsc::channel::<Item>(8192);
        let spawned = thread::Builder::new().name("sigil-journal".to_owned()).spawn(move || {
            let metrics = thread_metrics;
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
                let events: Vec<Event> = batch.iter().flat_map(|i| i.events.iter().cloned()).collect();
                let mut result = Ok(());
                if !issued.is_empty() {
                    result = store.record_issued(&issued).map_err(|e| e.to_string());
                }
                if result.is_ok() && !events.is_empty() {
                    result = audit.append(events).map_err(|e| e.to_string());
                }
                if let Err(e) = &result {
                    metrics.write_failures.inc();
                    tracing::error!(error = %e, "journal write failed; refusing to hand out unrecorded SVIDs");
                }
                for i in batch.drain(..) {
                    if let Err(e) = &result {
                        lost(&metrics, &i.events, e);
                        if i.ack.is_some() {
                            metrics.requests_refused.inc();
                        }
                    }
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
            metrics,
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
        let Ok(tx) = self.sender() else {
            lost(&self.metrics, &events, "journal stopped");
            return;
        };
        let item = Item {
            events,
            issued: None,
            ack: None,
        };
        if let Err(e) = tx.try_send(item) {
            let (mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item)) =
                e;
            lost(&self.metrics, &item.events, "audit journal queue full");
        }
    }
}
