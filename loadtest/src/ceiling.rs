//! The bus ceiling of this run: raw JetStream publish and pull-consume rates on the same server,
//! with the same message size, measured before tgingest starts (so they do not compete).
//!
//! Publish: async PubAcks through a sliding window (`inflight`), a `Nats-Msg-Id` on every message
//! as tgingest sets one. Consume: one durable pull consumer, explicit acks, batch 1000,
//! `max_ack_pending` 20 000, timed until the server reports nothing pending or awaiting an ack
//! (the method of crate-notes §8).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use serde::Serialize;

/// Both rates, and how they were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub messages: u64,
    pub payload_bytes: usize,
    pub inflight: usize,
    /// Published and PubAck'ed messages per second.
    pub publish_per_s: f64,
    /// Delivered and acknowledged messages per second.
    pub consume_per_s: f64,
    pub publish_s: f64,
    pub consume_s: f64,
}

const STREAM: &str = "LOADTEST_CEILING";
const SUBJECTS: u64 = 64;

/// Runs both measurements on `url` and deletes the stream afterwards.
pub async fn measure(
    url: &str,
    messages: u64,
    payload_bytes: usize,
    inflight: usize,
) -> anyhow::Result<Ceiling> {
    let client = async_nats::ConnectOptions::new()
        .name("loadtest-ceiling")
        .client_capacity(65_536)
        .connect(url)
        .await
        .context("connect to nats-server for the ceiling")?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(inflight.max(1))
        .backpressure_on_inflight(true)
        .build(client.clone());
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["loadtest.ceiling.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("create the ceiling stream")?;

    let payload = bytes::Bytes::from(vec![b'x'; payload_bytes]);
    let subjects: Vec<String> = (0..SUBJECTS)
        .map(|i| format!("loadtest.ceiling.{i}"))
        .collect();
    let started = Instant::now();
    let mut window = VecDeque::with_capacity(inflight);
    for i in 0..messages {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("ceiling-{i}"));
        let ack = js
            .send_publish(subjects[(i % SUBJECTS) as usize].clone(), msg)
            .await
            .context("ceiling publish")?;
        window.push_back(ack);
        if window.len() >= inflight
            && let Some(oldest) = window.pop_front()
        {
            oldest.await.context("ceiling PubAck")?;
        }
    }
    while let Some(ack) = window.pop_front() {
        ack.await.context("ceiling PubAck")?;
    }
    let publish_s = started.elapsed().as_secs_f64();

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("ceiling".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .context("create the ceiling consumer")?;
    let started = Instant::now();
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .context("ceiling pull")?;
    let mut received = 0u64;
    while received < messages {
        match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
            Ok(Some(Ok(m))) => {
                m.ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ceiling ack: {e}"))?;
                received += 1;
            }
            Ok(Some(Err(e))) => anyhow::bail!("ceiling pull: {e}"),
            Ok(None) | Err(_) => anyhow::bail!("ceiling pull stalled after {received} messages"),
        }
    }
    drop(msgs);
    // Acks are fire-and-forget: the consume is done when the server has them all.
    let mut consumer = consumer;
    loop {
        let info = consumer.info().await.context("ceiling consumer info")?;
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("ceiling consumer still has unacknowledged messages after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consume_s = started.elapsed().as_secs_f64();
    let _ = js.delete_stream(STREAM).await;
    drop(client);
    Ok(Ceiling {
        messages,
        payload_bytes,
        inflight,
        publish_per_s: messages as f64 / publish_s.max(1e-9),
        consume_per_s: messages as f64 / consume_s.max(1e-9),
        publish_s,
        consume_s,
    })
}
