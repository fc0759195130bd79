//! Secrets in the running process, through the real binary: the master key and the admin token
//! from systemd credentials (`$CREDENTIALS_DIRECTORY`) in their place in the precedence order,
//! malformed credentials refused naming them, the token sent by `tgingest accounts`, the process
//! non-dumpable, and the embedded nats-server started with no core file.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{children_of, signal, tgingest_bin, tgingest_cmd, wait_exit};

const KEY_ENV: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_ENV_FILE: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const KEY_CREDENTIAL: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const KEY_CONFIG: &str = "4444444444444444444444444444444444444444444444444444444444444444";

fn write(path: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// A credentials directory as systemd makes it: the files 0400 (0440 with the ACL systemd adds
/// for a unit's user, which is what this test writes, the looser of the two).
fn credentials_dir(dir: &Path, credentials: &[(&str, &str)]) -> PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    for (name, text) in credentials {
        write(&creds.join(name), text, 0o440);
    }
    creds
}

/// `tgingest config check` with a clean environment plus `env`.
fn config_check(config: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(tgingest_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(["config", "check", "--config"])
        .arg(config)
        .output()
        .expect("run tgingest config check")
}

/// The `# master key: …` line of a successful `config check`.
fn key_origin(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("# master key: "))
        .unwrap_or_else(|| panic!("no master key line in:\n{stdout}"))
        .to_string()
}

/// A config file naming `key_file` as `security.master_key_file`, with an external NATS (so no
/// key is generated).
fn config_naming(dir: &Path, key_file: &Path) -> PathBuf {
    write(
        &dir.join("tgingest.toml"),
        &format!(
            "[nats]\nurl = \"nats://127.0.0.1:1\"\n[security]\nmaster_key_file = \"{}\"\n",
            key_file.display()
        ),
        0o644,
    )
}

#[test]
fn the_master_key_comes_from_env_then_env_file_then_credential_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config_key = write(&dir.path().join("config.key"), KEY_CONFIG, 0o600);
    let env_key = write(&dir.path().join("env.key"), KEY_ENV_FILE, 0o600);
    let config = config_naming(dir.path(), &config_key);
    let creds = credentials_dir(dir.path(), &[("tgingest-master-key", KEY_CREDENTIAL)]);
    let empty_creds = dir.path().join("no-credentials");
    std::fs::create_dir_all(&empty_creds).unwrap();
    let credential = creds.join("tgingest-master-key");

    let origin = |env: &[(&str, &Path)]| key_origin(&config_check(&config, env));
    assert_eq!(origin(&[]), format!("File({config_key:?})"));
    // A credentials directory without the credential is no source.
    assert_eq!(
        origin(&[("CREDENTIALS_DIRECTORY", &empty_creds)]),
        format!("File({config_key:?})")
    );
    assert_eq!(
        origin(&[("CREDENTIALS_DIRECTORY", &creds)]),
        format!("Credential({credential:?})")
    );
    assert_eq!(
        origin(&[
            ("CREDENTIALS_DIRECTORY", &creds),
            ("TGINGEST_MASTER_KEY_FILE", &env_key)
        ]),
        format!("File({env_key:?})")
    );
    assert_eq!(
        origin(&[
            ("CREDENTIALS_DIRECTORY", &creds),
            ("TGINGEST_MASTER_KEY_FILE", &env_key),
            ("TGINGEST_MASTER_KEY", Path::new(KEY_ENV)),
        ]),
        "Env"
    );
}

#[test]
fn a_malformed_master_key_credential_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config_key = write(&dir.path().join("config.key"), KEY_CONFIG, 0o600);
    let config = config_naming(dir.path(), &config_key);
    let cases: [(&str, u32, &str); 4] = [
        ("abc\n", 0o400, "found 3 characters"),
        (&"zz".repeat(32), 0o400, "found a character that is not hex"),
        (KEY_CREDENTIAL, 0o444, "is readable by others (mode 444)"),
        (KEY_CREDENTIAL, 0o000, "cannot read systemd credential"),
    ];
    for (text, mode, problem) in cases {
        let creds = credentials_dir(dir.path(), &[]);
        let credential = write(&creds.join("tgingest-master-key"), text, mode);
        // Root reads a file of any mode: the unreadable case needs a path that is not a file.
        if mode == 0o000 && nix_is_root() {
            std::fs::remove_file(&credential).unwrap();
            std::fs::create_dir(&credential).unwrap();
            std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let out = config_check(&config, &[("CREDENTIALS_DIRECTORY", &creds)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let named = format!(
            "systemd credential tgingest-master-key ({})",
            credential.display()
        );
        assert!(
            stderr.contains(&named) && stderr.contains(problem),
            "wanted {named:?} and {problem:?} in:\n{stderr}"
        );
        std::fs::remove_dir_all(&creds).unwrap();
    }
}

fn nix_is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Who owns `/proc/<pid>/status`, and whom `pid` runs as. For a non-dumpable process the files
/// under `/proc/<pid>` belong to root, whoever runs it (the directory itself keeps its owner).
/// The process must run as someone else than root for that to show.
fn proc_owner_and_uid(pid: u32) -> (u32, u32) {
    let owner = std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("Uid line");
    (owner, uid)
}

/// A command run as `nobody` when this test runs as root (as itself otherwise), stdin and
/// stdout piped.
fn as_unprivileged(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if nix_is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    cmd
}

#[cfg(target_os = "linux")]
#[test]
fn the_running_binary_is_not_dumpable() {
    // Control: the same observation on an ordinary process shows its own user.
    let cat = Path::new("/bin/cat");
    let mut control = as_unprivileged(cat).spawn().expect("spawn cat");
    let (owner, uid) = proc_owner_and_uid(control.id());
    assert_ne!(uid, 0, "the control must not run as root");
    assert_eq!(owner, uid, "an ordinary process's /proc entry is its own");
    drop(control.stdin.take());
    control.wait().unwrap();

    // `policy test` waits on stdin: answering one line shows main() ran past its start.
    let mut child = as_unprivileged(&tgingest_bin())
        .args(["policy", "test"])
        .spawn()
        .expect("spawn tgingest policy test");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "hello").unwrap();
    let mut answer = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert!(!answer.is_empty(), "policy test answered nothing");
    let (owner, uid) = proc_owner_and_uid(child.id());
    drop(stdin);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_ne!(uid, 0);
    assert_eq!(
        owner, 0,
        "/proc/<pid>/status of tgingest (uid {uid}) belongs to uid {owner}: the process is dumpable"
    );
    assert!(status.success());
}

/// `Max core file size` soft and hard limits of `pid`, from `/proc/<pid>/limits`.
fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max core file size"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .expect("core limit line")
}

#[tokio::test]
async fn a_node_under_systemd_credentials_takes_its_key_and_admin_token_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let token = "credential-token-0123456789";
    let creds = credentials_dir(
        dir.path(),
        &[
            ("tgingest-master-key", KEY_CREDENTIAL),
            ("tgingest-admin-token", &format!("{token}\n")),
        ],
    );
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").to_string()
    };
    let log = dir.path().join("run.log");
    let data = dir.path().join("data");
    let mut child = tgingest_cmd(&data)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("TGINGEST_ADMIN_LISTEN", &admin)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn tgingest run");
    let pid = child.id();
    // Stopped even if an assertion below fails first.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            signal(self.0, libc::SIGKILL);
        }
    }
    let guard = KillOnDrop(pid);
    tgingest::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{admin}{path}");
    let up = support::eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("node running"))
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let bare = http.get(url("/v1/accounts")).send().await;
    let with_token = http
        .get(url("/v1/accounts"))
        .bearer_auth(token)
        .send()
        .await;
    let nats = children_of(pid)
        .into_iter()
        .find(|(_, name)| name.starts_with("nats-server"))
        .map(|(p, _)| core_limit(p));
    signal(pid, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    std::mem::forget(guard); // reaped: its pid may belong to another process by now

    assert!(up, "the node did not come up:\n{logged}");
    assert!(
        logged.contains("master key from the systemd credential tgingest-master-key"),
        "{logged}"
    );
    assert!(!logged.contains(KEY_CREDENTIAL) && !logged.contains(token));
    assert_eq!(bare.expect("GET without token").status().as_u16(), 401);
    assert_eq!(with_token.expect("GET with token").status().as_u16(), 200);
    assert_eq!(nats.as_deref(), Some("0 0"), "nats-server's core limit");
    assert!(status.success(), "{logged}");
    // Nothing was generated: the key came from the credential.
    assert!(!data.join("master.key").exists());
}

#[test]
fn the_accounts_client_sends_the_admin_token_from_the_credential() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let token = "client-credential-token-42";
    let creds = credentials_dir(dir.path(), &[("tgingest-admin-token", token)]);
    // A stand-in for the node's admin API: it records the request and answers an empty list.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("a request");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
        );
        String::from_utf8_lossy(&request).into_owned()
    });
    let out = Command::new(tgingest_bin())
        .env_clear()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .args(["accounts", "list", "--admin-url", &url])
        .output()
        .unwrap();
    let request = server.join().unwrap();
    assert!(
        request
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {token}"))),
        "no bearer token from the credential in:\n{request}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
