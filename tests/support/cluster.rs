//! A three-server JetStream cluster for cluster tests, with the shortened ownership timings they
//! use (lease 3 s, renew every 300 ms, fence after 1.5 s: the same rules, seen in seconds).

use std::time::Duration;

use tgingest::bus::{BUCKET_LEASES, Bus};
use tgingest::cluster::record::Records;
use tgingest::config::{ClusterConfig, Config, Dur};
use tgingest::nats_server::cluster::NatsCluster;
use tokio::sync::watch;

/// Shortened timings.
pub fn timing() -> ClusterConfig {
    ClusterConfig {
        lease: Dur(Duration::from_secs(3)),
        renew_every: Dur(Duration::from_millis(300)),
        self_fence_after: Dur(Duration::from_millis(1500)),
        lock_delay: Dur(Duration::from_millis(200)),
        stable_after: Dur(Duration::from_secs(1)),
        connects_per_second: 50,
        ..ClusterConfig::default()
    }
}

/// Three clustered servers with the streams and buckets set up at R3.
pub struct ClusterRig {
    pub cluster: NatsCluster,
    pub config: Config,
    _dir: tempfile::TempDir,
}

impl ClusterRig {
    pub async fn start() -> ClusterRig {
        let dir = tempfile::tempdir().unwrap();
        let cluster =
            NatsCluster::start(super::binary(), dir.path(), 3).expect("start the NATS cluster");
        assert!(
            cluster
                .wait_until_formed(Duration::from_secs(30))
                .await
                .is_some(),
            "the three servers never formed a JetStream cluster"
        );
        let mut config = Config::default();
        config.kv.replicas = 3;
        config.kv.lease_ttl = Dur(Duration::from_secs(6));
        config.streams.raw.replicas = 3;
        config.streams.clean.replicas = 3;
        config.streams.dlq.replicas = 3;
        config.cluster = timing();
        let rig = ClusterRig {
            cluster,
            config,
            _dir: dir,
        };
        let bus = rig.bus(&rig.cluster.url()).await;
        bus.setup(&rig.config).await.expect("bus set-up with R3");
        rig
    }

    /// A connection to `url` (the cluster's, or a proxy's).
    pub async fn bus(&self, url: &str) -> Bus {
        let mut nats = self.config.nats.clone();
        nats.request_timeout = Dur(Duration::from_secs(2));
        Bus::connect(url, &nats, "cluster-test")
            .await
            .expect("connect")
    }

    /// The lease records over `bus`.
    pub async fn records(&self, bus: &Bus) -> Records {
        Records::open(
            bus,
            BUCKET_LEASES,
            self.config.kv.lease_ttl.into(),
            Duration::from_millis(800),
        )
        .await
        .expect("open TG_LEASES")
    }
}

/// A stop signal that is never given (its sender lives as long as the test binary).
pub fn never() -> watch::Receiver<bool> {
    static NEVER: std::sync::LazyLock<watch::Sender<bool>> =
        std::sync::LazyLock::new(|| watch::channel(false).0);
    NEVER.subscribe()
}
