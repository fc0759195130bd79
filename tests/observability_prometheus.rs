//! Observability end to end: a real Prometheus (Debian package `prometheus`, installed by
//! `scripts/install-prometheus.sh`) scrapes an in-process pipeline; every PromQL expression of the
//! shipped dashboards and alert rules must parse, and every dashboard query must return series.
//! `promtool` checks the shipped files. (`/readyz` against NATS going away: tests/readyz.rs.)

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::rig::{Rig, simulation};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `prometheus` and `promtool` from PATH, or a failure naming the installer.
fn prometheus_tools() -> (PathBuf, PathBuf) {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "`{name}` is not installed: run scripts/install-prometheus.sh (it installs the \
                     Debian package `prometheus`; scripts/test.sh runs it)"
                )
            })
    };
    (find("prometheus"), find("promtool"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Prometheus process with its own storage; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Prometheus scraping `target`'s `/metrics` with `token` (as the shipped scrape config does,
    /// from a credentials file).
    fn start(binary: &Path, target: &str, rules: &Path, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let credentials = dir.path().join("admin.token");
        std::fs::write(&credentials, token).expect("write the token");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: tgingest\n    authorization:\n      credentials_file: {}\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n",
                rules.display(),
                credentials.display()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, http: &reqwest::Client, expr: &str) -> Result<Vec<Value>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", expr)],
        )
        .map_err(|e| e.to_string())?;
        let body: Value = http
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every (dashboard file, panel title, expr) of `deploy/grafana/dashboards/*.json`.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        5,
        "overview, accounts, pipeline, nats, cluster"
    );
    for file in files {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for panel in json["panels"].as_array().expect("panels") {
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel without a query");
            for t in targets {
                let expr = t["expr"].as_str().expect("expr").to_string();
                out.push((name.clone(), panel["title"].as_str().unwrap().into(), expr));
            }
        }
    }
    out
}

/// Every `expr:` of the rules file (kept one line each, as the file's header says).
fn rule_queries(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("rules file");
    let exprs: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    let alerts = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(exprs.len(), alerts, "one single-line expr per alert");
    assert!(exprs.iter().all(|e| !e.is_empty() && e != "|" && e != ">"));
    exprs
}

fn promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_shipped_rules_and_scrape_config() {
    let (_, promtool_bin) = prometheus_tools();
    promtool(
        &promtool_bin,
        &["check", "rules", "deploy/prometheus/tgingest.rules.yml"],
    );
    promtool(
        &promtool_bin,
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
}

/// Every alert name of the rules file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_string())
        .collect()
}

/// The cases of the rules' unit-test file, as (alert name, fires?) pairs: a case that expects
/// `exp_alerts: []` is a quiet one, any other expects the alert with its labels.
fn rule_test_cases(tests: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let alert = l.strip_prefix("alertname:")?.trim().to_string();
            let expect = lines.get(i + 1).copied().unwrap_or_default();
            assert!(
                expect.starts_with("exp_alerts:"),
                "alertname {alert} not followed by exp_alerts"
            );
            let fires = expect != "exp_alerts: []";
            if fires {
                assert!(
                    lines
                        .get(i + 2)
                        .is_some_and(|l| l.starts_with("- exp_labels:")),
                    "{alert}: a firing case must name its labels"
                );
            }
            Some((alert, fires))
        })
        .collect()
}

#[test]
fn every_alert_is_quiet_on_healthy_series_and_fires_with_its_labels_on_its_failure() {
    let (_, promtool_bin) = prometheus_tools();
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/tgingest.rules.yml"))
        .expect("rules file");
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/tgingest.rules.test.yml"))
        .expect("rules test file");
    let cases = rule_test_cases(&tests);
    let alerts = alert_names(&rules);
    assert!(!alerts.is_empty());
    for alert in &alerts {
        for fires in [false, true] {
            assert!(
                cases.contains(&(alert.clone(), fires)),
                "{alert} has no {} case in tgingest.rules.test.yml",
                if fires { "firing" } else { "quiet" }
            );
        }
    }
    for (alert, _) in &cases {
        assert!(
            alerts.contains(alert),
            "a test names no such alert: {alert}"
        );
    }
    promtool(
        &promtool_bin,
        &["test", "rules", "deploy/prometheus/tgingest.rules.test.yml"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_demo_and_every_dashboard_and_alert_query_answers() {
    let (prometheus_bin, _) = prometheus_tools();
    let admin_port = free_port();
    // Slow enough to still produce events while Prometheus scrapes for a while.
    let mut rig = Rig::start(simulation(3, 2_000, 20.0, 7), |c| {
        c.admin.listen = format!("127.0.0.1:{admin_port}");
        c.admin.per_account_metrics = true;
    })
    .await;
    let node = rig.node.as_ref().expect("node");
    let admin = node.admin_addr().expect("admin server on");
    // The node does not verify its log on its own; the demo does, and so does this test.
    assert!(node.eventlog.verify().ok);

    let token = support::generated_admin_token(&node.config.node.data_dir);
    let http = support::admin_http(&token);
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    for name in [
        "tgingest_accounts",
        "connector_ingest_submissions_total",
        "connector_checkpoint_saves_total",
        "tgingest_build_info",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }

    let rules = repo().join("deploy/prometheus/tgingest.rules.yml");
    let prometheus = Prometheus::start(&prometheus_bin, &admin.to_string(), &rules, &token);
    let panels = dashboard_queries();
    let alerts = rule_queries(&rules);

    // Wait until Prometheus scraped long enough for every panel (rates need two samples).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String>;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        missing = Vec::new();
        for (file, title, expr) in &panels {
            match prometheus.query(&http, expr).await {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => missing.push(format!("{file} / {title}: no data for `{expr}`")),
                Err(e) => missing.push(format!("{file} / {title}: `{expr}` failed: {e}")),
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard queries without data after 90 s:\n{}",
        missing.join("\n")
    );

    let mut broken = Vec::new();
    for expr in &alerts {
        if let Err(e) = prometheus.query(&http, expr).await {
            broken.push(format!("`{expr}`: {e}"));
        }
    }
    assert!(
        broken.is_empty(),
        "alert expressions Prometheus refused:\n{}",
        broken.join("\n")
    );
    // The rules loaded into Prometheus too, with no evaluation errors.
    let rules_api: Value = http
        .get(format!("{}/api/v1/rules", prometheus.url))
        .send()
        .await
        .expect("rules API")
        .json()
        .await
        .expect("json");
    let loaded: Vec<&Value> = rules_api["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .leak()
                .iter()
        })
        .collect();
    assert_eq!(loaded.len(), alerts.len(), "every rule loaded");
    for rule in loaded {
        assert_ne!(rule["health"], "err", "rule failed to evaluate: {rule}");
    }
    // For the record (not asserted): panels whose series are all 0 or NaN in this demo, i.e.
    // shown by series registered at 0 (no flood wait, restart or rejection happened).
    let mut quiet = Vec::new();
    for (file, title, expr) in &panels {
        let result = prometheus.query(&http, expr).await.unwrap_or_default();
        let active = result.iter().any(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v != 0.0 && !v.is_nan())
        });
        if !active {
            quiet.push(format!("{file} / {title}"));
        }
    }
    println!(
        "{} dashboard queries returned data ({} of them only zeros/NaN: {:?}), {} alert expressions evaluated",
        panels.len(),
        quiet.len(),
        quiet,
        alerts.len()
    );
    drop(prometheus);
    rig.stop().await;
}
