//! The notification listener: one connection per instance `LISTEN`s on `ingest_tenant`, which
//! the staging transaction and every change of a tenant's limits or pause notify (at their
//! commit, with the tenant id). The owner then sweeps that tenant's staged work and re-reads its
//! limits at once, whichever instance took the request. The periodic sweep stays the safety net:
//! a notification lost while the connection was down costs latency, never work, and after a
//! reconnect the owned tenants are swept in full.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

use crate::actors::EngineHandle;
use crate::domain::TenantId;
use crate::store::ownership::{MEMBERSHIP, TENANT_CHANNEL};

/// Delay before listening again after the connection failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Listens until `stopping` turns true. A change of instances wakes `membership_changed` (the
/// ownership pass).
pub async fn listen(
    database: tokio_postgres::Config,
    engine: EngineHandle,
    membership_changed: Arc<Notify>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        if *stopping.borrow() {
            return;
        }
        tokio::select! {
            result = listen_once(&database, &engine, &membership_changed, !first) => {
                if let Err(error) = result {
                    tracing::warn!(%error, "notification listener lost its connection; listening again");
                }
            }
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

async fn listen_once(
    database: &tokio_postgres::Config,
    engine: &EngineHandle,
    membership_changed: &Notify,
    sweep_after_listening: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = database.connect(tokio_postgres::NoTls).await?;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        let mut messages =
            futures_util::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => {
                    if sender.send(Ok(message)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {TENANT_CHANNEL}"))
        .await?;
    if sweep_after_listening {
        engine.sweep_now();
    }
    while let Some(message) = receiver.recv().await {
        match message? {
            AsyncMessage::Notification(notification) => {
                if notification.payload() == MEMBERSHIP {
                    membership_changed.notify_one();
                } else if let Ok(tenant) = notification.payload().parse() {
                    engine.tenant_notified(TenantId(tenant));
                }
            }
            _ => continue,
        }
    }
    pump.abort();
    Ok(())
}
