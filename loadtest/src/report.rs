//! The reports: `report.json` (everything, machine-readable), `report.svg` (throughput, latency
//! and queue depth over time) and a short text summary on stdout.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::stage::RunReport;

/// Writes `report.json` and `report.svg` into `dir`.
pub fn write(dir: &Path, report: &RunReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("report.json"), json).context("write report.json")?;
    svg(&dir.join("report.svg"), report).map_err(|e| anyhow::anyhow!("write report.svg: {e}"))?;
    Ok(())
}

/// A plot of one or more named series (x, y) for [`write_with_plot`].
pub struct Plot {
    pub title: String,
    pub x_desc: &'static str,
    pub y_desc: &'static str,
    pub series: Vec<(&'static str, Vec<(f64, f64)>)>,
}

/// Writes `report.json` and `report.svg` (one plot) for the scenario kinds with their own
/// report (`cluster-failover`, `crash-soak`), and prints `summary` and where both are.
pub fn write_with_plot(
    dir: &Path,
    report: &impl serde::Serialize,
    plot: &Plot,
    summary: &str,
) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join("report.json"), json).context("write report.json")?;
    plot_svg(&dir.join("report.svg"), plot)
        .map_err(|e| anyhow::anyhow!("write report.svg: {e}"))?;
    print!("{summary}");
    println!(
        "report: {} and {}",
        dir.join("report.json").display(),
        dir.join("report.svg").display()
    );
    Ok(())
}

fn plot_svg(path: &Path, plot: &Plot) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = || plot.series.iter().flat_map(|(_, s)| s.iter());
    let x_max = max_of(points().map(|p| p.0)).max(1.0);
    let y_max = max_of(points().map(|p| p.1)) * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .draw()?;
    for (i, (name, series)) in plot.series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(series.iter().copied(), colour))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max)
}

/// Three panels sharing the time axis: arrivals/s (with the offered rate), latency p50/p99 per
/// second of arrival, and the consumers' backlog (pending + awaiting ack).
fn svg(path: &Path, r: &RunReport) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1100, 960)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(&svg_title(r), ("sans-serif", 18))?;
    let panels = body.split_evenly((3, 1));
    let t_max = max_of(
        r.bins
            .iter()
            .map(|b| b.t as f64 + 1.0)
            .chain(r.samples.iter().map(|s| s.t)),
    )
    .max(1.0);

    // 1. throughput
    let y_max = max_of(
        r.bins
            .iter()
            .map(|b| b.arrived as f64)
            .chain(std::iter::once(r.delivery.offered_per_s)),
    ) * 1.15
        + 1.0;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(
            "events/s arriving at the fake Switchboard",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("s since tgingest start")
        .y_desc("events/s")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            r.bins.iter().map(|b| (b.t as f64 + 0.5, b.arrived as f64)),
            &BLUE,
        ))?
        .label("arrived")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let offered_end = r.scenario.duration.0.as_secs_f64();
    chart
        .draw_series(LineSeries::new(
            [
                (0.0, r.delivery.offered_per_s),
                (offered_end, r.delivery.offered_per_s),
            ],
            &BLACK.mix(0.5),
        ))?
        .label("offered (mean)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // 2. latency
    let y_max = max_of(r.bins.iter().map(|b| b.latency_p99_ms)) * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(
            "latency observed_at -> stored, by second of arrival (ms)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("s since tgingest start")
        .y_desc("ms")
        .draw()?;
    let p50: Vec<(f64, f64)> = r
        .bins
        .iter()
        .map(|b| (b.t as f64 + 0.5, b.latency_p50_ms))
        .collect();
    let p99: Vec<(f64, f64)> = r
        .bins
        .iter()
        .map(|b| (b.t as f64 + 0.5, b.latency_p99_ms))
        .collect();
    for (name, color, points) in [("p50", GREEN, p50), ("p99", RED, p99)] {
        chart
            .draw_series(LineSeries::new(points, &color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // 3. queue depth
    let dedupe = |s: &crate::monitor::Sample| {
        s.dedupe
            .map_or(0.0, |d| (d.num_pending + d.num_ack_pending) as f64)
    };
    let delivery = |s: &crate::monitor::Sample| {
        s.switchboard
            .map_or(0.0, |d| (d.num_pending + d.num_ack_pending) as f64)
    };
    let y_max = max_of(r.samples.iter().map(|s| dedupe(s).max(delivery(s)))) * 1.15 + 1.0;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "backlog: consumer num_pending + num_ack_pending (messages)",
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("s since tgingest start")
        .y_desc("messages")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t, dedupe(s))),
            &MAGENTA,
        ))?
        .label("dedupe (TG_RAW)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    chart
        .draw_series(LineSeries::new(
            r.samples.iter().map(|s| (s.t, delivery(s))),
            &CYAN,
        ))?
        .label("switchboard (TG_CLEAN)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CYAN));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The SVG's title: the scenario, the verdict, and tgingest's rate against the floor and the
/// publish ceiling (and the replay's against the replay floor).
fn svg_title(r: &RunReport) -> String {
    let d = &r.delivery;
    let mut t = format!(
        "{} ({} accounts x {} pos/s) {}: {:.0} events/s",
        r.scenario.name,
        r.accounts,
        r.rate_per_account,
        if r.ok { "OK" } else { "LOSS/DUPLICATES" },
        d.throughput_per_s
    );
    if let Some(f) = &r.floor_ratio {
        t += &format!(" = {:.3} x floor ({:.0}/s)", f.ratio, f.floor_per_s);
    }
    if let Some(q) = &r.ceiling_ratio {
        t += &format!(", {:.3} x publish ceiling", q.ratio_to_publish);
    }
    if let Some(x) = &r.replay {
        t += &format!("; replay {:.0}/s", x.throughput_per_s);
        if let Some(f) = &x.floor_ratio {
            t += &format!(" = {:.3} x replay floor", f.ratio);
        }
    }
    t
}

/// The summary a human reads after a run.
pub fn render(r: &RunReport) -> String {
    let d = &r.delivery;
    let mut s = format!(
        "tgingest loadtest: {} — {} accounts x {} pos/s for {} ({} build, {} CPUs, load {:.1} at start)\n",
        r.scenario.name,
        r.accounts,
        r.rate_per_account,
        r.scenario.duration,
        r.host.profile,
        r.host.cpus,
        r.host.loadavg_1m_at_start
    );
    s += &format!(
        "  delivery     expected {}  stored {}  lost {}  stored twice {}  unexpected {}  => {}\n",
        d.expected,
        d.stored,
        d.lost,
        d.duplicates_stored,
        d.unexpected,
        if r.ok { "OK" } else { "PROBLEMS" }
    );
    for (what, ids) in [
        ("lost", &d.lost_examples),
        ("unexpected", &d.unexpected_examples),
    ] {
        if !ids.is_empty() {
            s += &format!("  {what:<12} e.g. {}\n", ids.join(", "));
        }
    }
    s += &format!(
        "  throughput   {:.0} events/s after warm-up (offered {:.0}/s); drain {:.1}s{}\n",
        d.throughput_per_s,
        d.offered_per_s,
        d.drain_s,
        if r.drain_timed_out {
            " (DRAIN TIMED OUT)"
        } else {
            ""
        }
    );
    if let (Some(f), Some(q)) = (&r.floor, &r.floor_ratio) {
        s += &format!(
            "  floor        {:.0} events/s (reference pipeline, {} calls in flight, publish window {}); throughput = {:.3} x floor\n",
            f.live.events_per_s, f.settings.max_inflight, f.settings.publish_window, q.ratio
        );
        s += &format!(
            "  floor cpu    per event: loadtest (the floor's loops) {:.0} µs, nats-server {:.0} µs, fake Switchboard {:.0} µs\n",
            f.live.driver_us_per_event,
            f.live.nats_server_us_per_event,
            f.live.fake_switchboard_us_per_event
        );
    }
    if let (Some(c), Some(q)) = (&r.ceiling, &r.ceiling_ratio) {
        s += &format!(
            "  ceiling      publish {:.0}/s, consume {:.0}/s ({} B messages); throughput = {:.4} x publish ceiling{}\n",
            c.publish_per_s,
            c.consume_per_s,
            c.payload_bytes,
            q.ratio_to_publish,
            if q.load_limited {
                " (limited by the offered load: see step mode)"
            } else {
                ""
            }
        );
    }
    let p = |x: &crate::analysis::Percentiles| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
            x.p50, x.p90, x.p99, x.max, x.count
        )
    };
    s += &format!("  latency      {}\n", p(&d.latency_ms));
    s += &format!("  source lag   {}\n", p(&d.source_lag_ms));
    s += &format!(
        "  process      cpu {:.1}s (mean {:.2} cores, max {:.2}), peak RSS {:.1} MiB ({:.0} KiB per account)\n",
        r.resources.cpu_s,
        r.resources.cpu_cores_mean,
        r.resources.cpu_cores_max,
        r.resources.peak_rss_mib,
        r.resources.peak_rss_per_account_bytes / 1024.0
    );
    let res = &r.resources;
    let n = &res.neighbours;
    s += &format!(
        "  cpu/event    tgingest {:.0} µs, nats-server {:.0} µs, fake Switchboard {:.0} µs{}, loadtest (driver) {:.0} µs; {:.2} cores busy in all\n",
        res.cpu_us_per_event,
        res.nats_server_us_per_event,
        res.fake_switchboard_us_per_event,
        res.fake_dc_us_per_event
            .map(|us| format!(", fake DC (with its message driver) {us:.0} µs"))
            .unwrap_or_default(),
        res.driver_us_per_event,
        (res.cpu_s + n.total_s()) / r.wall_s.max(1e-3),
    );
    if let Some(i) = &res.idle {
        s += &format!(
            "  idle         {} accounts, nothing offered: tgingest {:.2} % of one core over {:.0}s (RSS {:.1} MiB, {} events in the window)\n",
            i.accounts,
            i.share_of_one_core * 100.0,
            i.window_s,
            i.rss_bytes as f64 / 1048576.0,
            i.events_in_window
        );
    }
    if let Some(u) = &r.setup {
        s += &format!(
            "  set-up       {} accounts imported, consented and listening in {:.1}s (cpu {:.1}s, RSS {:.1} MiB); not in the figures above\n",
            r.accounts,
            u.setup_s,
            u.setup_cpu_s,
            u.rss_listening_bytes as f64 / 1048576.0
        );
    }
    if let Some(x) = &r.replay {
        s += &format!(
            "  replay       {:?} in {:.1}s: scanned {}, stored again {} ({:.0} events/s{}), already stored {}, rejected {}; lost {}  stored twice {}  unexpected {}; cpu {:.1}s; latency not measured\n",
            x.progress.state,
            x.wall_s,
            x.progress.scanned,
            x.stored,
            x.throughput_per_s,
            x.floor_ratio
                .as_ref()
                .map(|f| format!(", {:.3} x replay floor of {:.0}/s", f.ratio, f.floor_per_s))
                .unwrap_or_default()
                + &x.ratio_to_consume_ceiling
                    .map(|q| format!(", {q:.4} x consume ceiling"))
                    .unwrap_or_default(),
            x.progress.duplicates,
            x.progress.rejected,
            x.lost,
            x.duplicates_stored,
            x.unexpected,
            x.cpu_s
        );
    }
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a here",
        };
        s += &format!("  target       {}: {} ({verdict})\n", t.target, t.value);
    }
    s
}
