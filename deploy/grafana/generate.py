#!/usr/bin/env python3
"""Writes the tgingest Grafana dashboards (dashboards/*.json) from the panel lists below.

Edit here, run `python3 deploy/grafana/generate.py`, commit both. Every query must return data on
a running pipeline: tests/observability_prometheus.rs evaluates each one against a real Prometheus
scraping a demo. Queries use fixed windows (no Grafana variables) so they run as written.
"""
import json, os

DS = {"type": "prometheus", "uid": "tgingest-prometheus"}

def panel(pid, title, exprs, kind="timeseries", unit="short", w=12, h=8, x=0, y=0, desc=""):
    targets = []
    for i, e in enumerate(exprs):
        expr, legend = e if isinstance(e, tuple) else (e, "")
        targets.append({"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DS})
    p = {
        "id": pid, "type": kind, "title": title, "description": desc, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
    }
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    if kind == "table":
        p["targets"][0]["instant"] = True
        p["targets"][0]["format"] = "table"
    return p

def layout(specs):
    panels, x, y, row_h = [], 0, 0, 0
    for i, s in enumerate(specs, start=1):
        title, exprs = s[0], s[1]
        kw = s[2] if len(s) > 2 else {}
        w, h = kw.get("w", 12), kw.get("h", 8)
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        panels.append(panel(i, title, exprs, x=x, y=y, **kw))
        x += w
        row_h = max(row_h, h)
    return panels

def dashboard(uid, title, specs, tags):
    return {
        "uid": uid, "title": title, "tags": ["tgingest"] + tags, "timezone": "utc",
        "schemaVersion": 39, "version": 1, "refresh": "30s", "editable": True,
        "time": {"from": "now-1h", "to": "now"}, "panels": layout(specs),
        "templating": {"list": []}, "annotations": {"list": []},
    }

STAT = {"kind": "stat", "w": 6, "h": 4}
P99 = "histogram_quantile(0.99, sum by (le) (rate({m}_bucket[1m])))"
P50 = "histogram_quantile(0.50, sum by (le) (rate({m}_bucket[1m])))"

overview = [
    ("Nodes up", ['sum(up{job="tgingest"})'], STAT),
    ("NATS connected", ["min(tgingest_nats_connected)"], STAT),
    ("Accounts running", ['sum(tgingest_accounts{state="running"})'], STAT),
    ("DLQ depth", ["max(tgingest_dlq_depth)"], STAT),
    ("Ingest rate (events/s)", [("sum by (origin) (rate(tgingest_events_ingested_total[1m]))", "{{origin}}")], {"unit": "ops"}),
    ("Deliveries by result (/s)", [("sum by (result) (rate(tgingest_deliveries_total[1m]))", "{{result}}")], {"unit": "ops"}),
    ("End-to-end latency (source → Switchboard)", [(P50.format(m="tgingest_end_to_end_latency_seconds"), "p50"), (P99.format(m="tgingest_end_to_end_latency_seconds"), "p99")], {"unit": "s"}),
    ("Switchboard errors (/s)", [("sum by (kind) (rate(connector_errors_total[5m]))", "{{kind}}")], {"unit": "ops"}),
    ("Actor restarts (15 min)", [("sum by (actor_kind) (increase(tgingest_actor_restarts_total[15m]))", "{{actor_kind}}")]),
    ("Accounts needing an operator", [('sum by (state) (tgingest_accounts{state=~"revoked|duplicated|flood_wait|paused"})', "{{state}}")]),
]

accounts = [
    ("Accounts by state", [("sum by (state) (tgingest_accounts)", "{{state}}")], {"w": 24}),
    ("Checkpoint lag, worst account", ["max(tgingest_checkpoint_lag_seconds_max)"], {"unit": "s"}),
    ("Last event age, worst account", ["max(tgingest_last_event_age_seconds_max)"], {"unit": "s"}),
    ("Events not yet checkpointed", ["sum(tgingest_uncheckpointed_events)"]),
    ("Ingest by origin (catch-up progress)", [("sum by (origin) (rate(tgingest_events_ingested_total[1m]))", "{{origin}}")], {"unit": "ops"}),
    ("Flood waits (1 h)", [("sum by (kind) (increase(tgingest_flood_waits_total[1h]))", "{{kind}}")]),
    ("Flood wait seconds (1 h)", [("sum by (kind) (increase(tgingest_flood_wait_seconds_total[1h]))", "{{kind}}")], {"unit": "s"}),
    ("Reconnects (1 h)", ["sum(increase(tgingest_reconnects_total[1h]))"]),
    ("Backfill: tasks pending, events/s", [("sum(tgingest_backfill_tasks_pending)", "pending"), ("sum(rate(tgingest_backfill_events_total[5m]))", "events/s")]),
    ("Top 10 lagging accounts (checkpoint lag, per-account metrics)", [("topk(10, tgingest_account_checkpoint_lag_seconds)", "{{account}}")], {"kind": "table", "unit": "s"}),
    ("Top 10 idle accounts (last event age, per-account metrics)", [("topk(10, tgingest_account_last_event_age_seconds)", "{{account}}")], {"kind": "table", "unit": "s"}),
    ("Ingest rate per account (top 10, per-account metrics)", [("topk(10, rate(tgingest_account_events_total[1m]))", "{{account}}")], {"w": 24, "unit": "ops"}),
]

pipeline = [
    ("Stage rates (/s)", [
        ("sum(rate(tgingest_events_ingested_total[1m]))", "ingested"),
        ("sum(rate(tgingest_eventlog_appends_total[1m]))", "event-log appends"),
        ('sum(rate(tgingest_deliveries_total{result=~"accepted|duplicate"}[1m]))', "delivered"),
    ], {"w": 24, "unit": "ops"}),
    ("Dedupe drops by layer (/s)", [("sum by (layer) (rate(tgingest_dedupe_drops_total[1m]))", "{{layer}}")], {"unit": "ops"}),
    ("Scope drops by rule (/s)", [("sum by (rule) (rate(tgingest_scope_drops_total[1m]))", "{{rule}}")], {"unit": "ops"}),
    ("Redactions by kind (/s)", [("sum by (kind) (rate(tgingest_redactions_total[1m]))", "{{kind}}")], {"unit": "ops"}),
    ("Publish to TG_RAW: latency", [(P50.format(m="tgingest_publish_latency_seconds"), "p50"), (P99.format(m="tgingest_publish_latency_seconds"), "p99")], {"unit": "s"}),
    ("Publish window in flight", [("sum(tgingest_publish_inflight)", "in flight"), ("max(tgingest_publish_window)", "window per account")]),
    ("Consumer pending per stage", [("sum by (stage) (tgingest_consumer_pending)", "{{stage}}")]),
    ("Consumer ack-pending per stage", [("sum by (stage) (tgingest_consumer_ack_pending)", "{{stage}}")]),
    ("Backpressure: share of time waiting, per stage", [("sum by (stage) (rate(tgingest_backpressure_wait_seconds_sum[1m]))", "{{stage}}")], {"unit": "percentunit"}),
    ("Delivery latency (one Switchboard attempt)", [(P50.format(m="tgingest_delivery_latency_seconds"), "p50"), (P99.format(m="tgingest_delivery_latency_seconds"), "p99")], {"unit": "s"}),
    ("DLQ depth and dead letters (15 min)", [("max(tgingest_dlq_depth)", "depth"), ("sum by (stage) (increase(tgingest_dead_letters_total[15m]))", "dead-lettered by {{stage}}")]),
    ("Switchboard submissions (connector_*)", [("sum by (status) (rate(connector_ingest_submissions_total[1m]))", "{{status}}"), ("sum(rate(connector_checkpoint_saves_total[1m]))", "checkpoint saves")], {"unit": "ops"}),
    ("Switchboard latency (connector_ingest_latency_seconds)", [(P99.format(m="connector_ingest_latency_seconds"), "p99")], {"unit": "s"}),
    ("Event log: appends by kind (/s)", [("sum by (kind) (rate(tgingest_eventlog_appends_total[1m]))", "{{kind}}")], {"unit": "ops"}),
    ("Event log: flush latency", [(P99.format(m="tgingest_eventlog_flush_seconds"), "p99")], {"unit": "s"}),
    ("Event log: last verify (1 = ok)", ["min(tgingest_eventlog_verify_ok)"], {"kind": "stat", "w": 12, "h": 8}),
]

nats = [
    ("NATS connected (per node)", [("tgingest_nats_connected", "{{instance}}")], {"kind": "stat", "w": 8, "h": 6}),
    ("NATS disconnects (1 h)", ["sum(increase(tgingest_nats_disconnects_total[1h]))"], {"kind": "stat", "w": 8, "h": 6}),
    ("Publish retries (/s)", [("sum(rate(tgingest_publish_retries_total[5m]))", "retries")], {"w": 8, "h": 6, "unit": "ops"}),
    ("Stream messages", [("max by (stream) (tgingest_stream_messages)", "{{stream}}")]),
    ("Stream bytes", [("max by (stream) (tgingest_stream_bytes)", "{{stream}}")], {"unit": "bytes"}),
    ("Consumer pending (num_pending)", [("max by (stage) (tgingest_consumer_pending)", "{{stage}}")]),
    ("Consumer ack-pending (num_ack_pending)", [("max by (stage) (tgingest_consumer_ack_pending)", "{{stage}}")]),
    ("PubAck latency p99", [(P99.format(m="tgingest_publish_latency_seconds"), "p99")], {"unit": "s"}),
    ("Metrics poller errors (/s)", [("sum by (what) (rate(tgingest_metrics_poll_errors_total[5m]))", "{{what}}")], {"unit": "ops"}),
]

here = os.path.dirname(os.path.abspath(__file__))
for name, uid, title, specs, tags in [
    ("overview", "tgingest-overview", "tgingest: overview", overview, ["overview"]),
    ("accounts", "tgingest-accounts", "tgingest: accounts", accounts, ["accounts"]),
    ("pipeline", "tgingest-pipeline", "tgingest: pipeline", pipeline, ["pipeline"]),
    ("nats", "tgingest-nats", "tgingest: NATS / JetStream", nats, ["nats"]),
]:
    with open(os.path.join(here, "dashboards", f"{name}.json"), "w") as f:
        json.dump(dashboard(uid, title, specs, tags), f, indent=2)
        f.write("\n")
