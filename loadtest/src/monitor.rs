//! Polls, every sample interval, what moves: stream sequences and the durable consumers'
//! backlog (per-stage throughput and queue depth), the fake's counters, and the tgingest
//! process's CPU and memory.

use std::time::Duration;

use async_nats::jetstream;
use serde::Serialize;
use tgingest::bus::{STREAM_CLEAN, STREAM_RAW};
use tgingest::pipeline::clean::DEDUPE_CONSUMER;
use tgingest::pipeline::delivery::DELIVERY_CONSUMER;

use crate::procs::{ProcSample, proc_sample};
use crate::remote_switchboard::RemoteSwitchboard;

/// A durable consumer's backlog.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ConsumerDepth {
    /// Messages in the stream not yet delivered to the consumer.
    pub num_pending: u64,
    /// Delivered, not yet acknowledged.
    pub num_ack_pending: u64,
    /// Highest stream sequence acknowledged (the stage's progress).
    pub ack_floor: u64,
}

/// One poll.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since tgingest was started.
    pub t: f64,
    /// `TG_RAW`'s last sequence: events the accounts published (after Msg-Id dedupe).
    pub raw_last_seq: u64,
    /// `TG_CLEAN`'s last sequence: events past dedupe, filter and redaction.
    pub clean_last_seq: u64,
    /// Consumer `dedupe` on `TG_RAW`.
    pub dedupe: Option<ConsumerDepth>,
    /// Consumer `switchboard` on `TG_CLEAN`.
    pub switchboard: Option<ConsumerDepth>,
    /// Envelopes the fake stored so far.
    pub stored: u64,
    /// Whether the fake was serving (false during an outage).
    pub switchboard_up: bool,
    /// tgingest's CPU use since the previous sample, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
    pub threads: u64,
}

/// Samples one process and the bus.
pub struct Monitor {
    js: jetstream::Context,
    pid: u32,
    last_proc: Option<(f64, ProcSample)>,
}

impl Monitor {
    pub async fn connect(url: &str, pid: u32) -> anyhow::Result<Monitor> {
        let client = async_nats::ConnectOptions::new()
            .name("loadtest-monitor")
            .connect(url)
            .await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client);
        Ok(Monitor {
            js,
            pid,
            last_proc: None,
        })
    }

    async fn last_seq(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        }
    }

    async fn depth(&self, stream: &str, consumer: &str) -> Option<ConsumerDepth> {
        let s = self.js.get_stream(stream).await.ok()?;
        let info = s.consumer_info(consumer).await.ok()?;
        Some(ConsumerDepth {
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending as u64,
            ack_floor: info.ack_floor.stream_sequence,
        })
    }

    /// Takes one sample at `t` seconds (a fake that does not answer counts as down).
    pub async fn sample(&mut self, t: f64, fake: &RemoteSwitchboard) -> Sample {
        let proc = proc_sample(self.pid);
        let cpu_cores = match (proc, self.last_proc) {
            (Some(now), Some((t_prev, prev))) if t > t_prev => {
                (now.cpu_s - prev.cpu_s) / (t - t_prev)
            }
            _ => 0.0,
        };
        if let Some(p) = proc {
            self.last_proc = Some((t, p));
        }
        let p = proc.unwrap_or_default();
        let fake = fake.status().await.ok();
        Sample {
            t,
            raw_last_seq: self.last_seq(STREAM_RAW).await,
            clean_last_seq: self.last_seq(STREAM_CLEAN).await,
            dedupe: self.depth(STREAM_RAW, DEDUPE_CONSUMER).await,
            switchboard: self.depth(STREAM_CLEAN, DELIVERY_CONSUMER).await,
            stored: fake.as_ref().map_or(0, |f| f.counts.stored),
            switchboard_up: fake.is_some_and(|f| f.running),
            cpu_cores,
            rss_bytes: p.rss,
            hwm_bytes: p.hwm,
            threads: p.threads,
        }
    }
}
