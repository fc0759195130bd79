//! The admin API always wants a token: a node on loopback with none configured generates one into
//! its data dir (mode 0600, like the embedded default's master key) and refuses requests without
//! it, so another local user of the machine cannot import, remove or log in accounts; the CLI,
//! run as the node's user with the node's data dir, finds the token there by itself.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::rig::{Rig, simulation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_node_without_a_configured_token_wants_the_one_it_generated() {
    let mut rig = Rig::start(simulation(1, 10, 50.0, 3), |c| {
        c.admin.listen = "127.0.0.1:0".into();
    })
    .await;
    let admin = rig.node.as_ref().unwrap().admin_addr().expect("admin on");
    let url = format!("http://{admin}/v1/accounts");

    let bare = reqwest::Client::new().get(&url).send().await.expect("GET");
    assert_eq!(bare.status().as_u16(), 401, "no token, no answer");

    let file = rig.config.node.data_dir.join("admin.token");
    let mode = std::fs::metadata(&file)
        .expect("admin.token in the data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&file).unwrap();
    let ok = support::admin_http(token.trim())
        .get(&url)
        .send()
        .await
        .expect("GET");
    assert_eq!(ok.status().as_u16(), 200);

    // `tgingest accounts list` with the node's data dir and nothing else finds the token.
    let base = format!("http://{admin}");
    let mut cmd = support::tgingest_cmd(&rig.config.node.data_dir);
    cmd.args(["accounts", "list", "--admin-url", &base]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run tgingest"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    rig.stop().await;
}
