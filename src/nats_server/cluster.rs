//! A JetStream cluster on loopback (three servers for R3 streams and KV), each server run from the
//! shipped `deploy/nats/cluster-node.conf`, so the config operators deploy is the one the cluster
//! tests and the loadtest exercise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{NatsServer, NatsServerError, ServerOptions};

/// The shipped per-server config (its `$NATS_*` values come from the environment).
pub const CLUSTER_CONFIG: &str = include_str!("../../deploy/nats/cluster-node.conf");

/// Running servers of one cluster; each is stopped when dropped.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` clustered servers under `dir` (one store each) on free loopback ports.
    ///
    /// Route ports are picked by binding port 0 and letting go, so another process may take one
    /// before the server binds it: a start that fails that way is tried again with new ports.
    pub fn start(binary: PathBuf, dir: &Path, size: usize) -> Result<NatsCluster, NatsServerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A fresh folder per try: a failed try's stores hold the old routes' peers.
            match Self::start_once(&binary, &dir.join(format!("try-{attempt}")), size) {
                Err(NatsServerError::EarlyExit { log_tail, .. })
                    if attempt < 5 && log_tail.contains("address already in use") =>
                {
                    tracing::debug!(attempt, "a route port was taken meanwhile; new ports");
                }
                other => return other,
            }
        }
    }

    fn start_once(binary: &Path, dir: &Path, size: usize) -> Result<NatsCluster, NatsServerError> {
        let prepare = |path: &Path, source| NatsServerError::Prepare {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| prepare(dir, e))?;
        let config = dir.join("cluster-node.conf");
        std::fs::write(&config, CLUSTER_CONFIG).map_err(|e| prepare(&config, e))?;
        // All held at once, so one pick cannot return the same port twice.
        let held = (0..size)
            .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| prepare(dir, e)))
            .collect::<Result<Vec<TcpListener>, _>>()?;
        let route_ports = held
            .iter()
            .map(|l| {
                l.local_addr()
                    .map(|a| a.port())
                    .map_err(|e| prepare(dir, e))
            })
            .collect::<Result<Vec<u16>, _>>()?;
        drop(held);
        let key = hex::encode(rand::random::<[u8; 16]>());
        let mut servers = Vec::with_capacity(size);
        for (i, port) in route_ports.iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let store = dir.join(&name);
            let mut options = ServerOptions::new(binary.to_path_buf(), store.clone(), &name);
            options.monitoring = true;
            options.config_file = Some(config.clone());
            let mut env = vec![
                ("NATS_NAME".to_string(), name.clone()),
                ("NATS_LISTEN".into(), "127.0.0.1:-1".into()),
                ("NATS_HTTP".into(), "127.0.0.1:-1".into()),
                (
                    "NATS_STORE_DIR".into(),
                    store.to_string_lossy().into_owned(),
                ),
                ("NATS_JS_KEY".into(), key.clone()),
                ("NATS_CLUSTER_LISTEN".into(), format!("127.0.0.1:{port}")),
            ];
            // The file names three routes; a smaller cluster repeats the last one.
            for r in 0..3 {
                let p = route_ports[r.min(size - 1)];
                env.push((
                    format!("NATS_ROUTE_{}", r + 1),
                    format!("nats-route://127.0.0.1:{p}"),
                ));
            }
            options.env = env;
            servers.push(NatsServer::start(options)?);
        }
        Ok(NatsCluster { servers })
    }

    /// The client URLs of every server, comma-separated (what `nats.url` takes).
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The servers, in start order.
    pub fn servers(&mut self) -> &mut [NatsServer] {
        &mut self.servers
    }

    /// Waits until the JetStream cluster is formed: every server sees the same meta leader and
    /// all its peers current (before that, R3 placement fails); returns the leader's name.
    pub async fn wait_until_formed(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        crate::telemetry::install_crypto_provider();
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            let mut metas = Vec::new();
            for s in &self.servers {
                let Some(base) = s.monitoring_url() else {
                    continue;
                };
                let jsz: Option<serde_json::Value> = async {
                    client
                        .get(format!("{base}/jsz"))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()
                }
                .await;
                metas.push(jsz.map(|j| j["meta_cluster"].clone()).unwrap_or_default());
            }
            let leader = metas.first().and_then(|m| m["leader"].as_str());
            let agreed = leader.is_some_and(|l| {
                !l.is_empty() && metas.iter().all(|m| m["leader"].as_str() == Some(l))
            });
            // Only the leader knows whether every follower is current: its own `replicas`
            // list is the one that does not name it.
            let formed = agreed
                && metas.iter().any(|m| {
                    let peers = m["replicas"].as_array().cloned().unwrap_or_default();
                    !peers.iter().any(|p| p["name"] == m["leader"])
                        && peers.len() + 1 == self.servers.len()
                        && peers.iter().all(|p| p["current"].as_bool() == Some(true))
                });
            if formed {
                return leader.map(str::to_string);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}
