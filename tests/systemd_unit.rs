//! `deploy/systemd/tgingest.service`: systemd itself checks it (`systemd-analyze verify`, no
//! warning allowed; `systemd-analyze security --offline`, exposure at most 2.0), and the real
//! binary takes what the unit gives it: the `ExecStart=` command line, the `Environment=`
//! variables and the credentials named by `LoadCredential=`.
//!
//! `systemd-analyze` comes with Debian's `systemd` package; without it these tests fail saying
//! so, rather than pass having checked nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::tgingest_bin;
use tgingest::credentials::{ADMIN_TOKEN_CREDENTIAL, MASTER_KEY_CREDENTIAL};

/// Where the unit says the binary is installed.
const INSTALLED_BINARY: &str = "/usr/local/bin/tgingest";

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/tgingest.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The values of every `key=` line of the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .collect()
}

fn systemd_analyze() -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "systemd-analyze not found (on PATH or in /usr/bin): install Debian's `systemd` \
             package, which provides it; these tests check deploy/systemd/tgingest.service with it"
        )
    })
}

/// The unit copied into a temp dir with `ExecStart=` pointing at the binary this build made
/// (`verify` refuses a command that does not exist); `edit` may change the text further.
fn unit_copy(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let unit = unit_text();
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED_BINARY} ")),
        "ExecStart does not start {INSTALLED_BINARY}"
    );
    let unit = unit.replace(
        &format!("ExecStart={INSTALLED_BINARY} "),
        &format!("ExecStart={} ", tgingest_bin().display()),
    );
    let path = dir.join(name);
    std::fs::write(&path, edit(unit)).unwrap();
    path
}

fn analyze(args: &[&str], unit: &Path) -> Output {
    Command::new(systemd_analyze())
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn systemd_verifies_the_unit_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), "tgingest.service", |u| u);
    let out = analyze(&["verify"], &unit);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "", "systemd-analyze verify warned");

    // The same check sees a mistake (verify exits 0 on warnings: the output is what counts).
    let broken = unit_copy(dir.path(), "broken.service", |u| {
        u.replace("ProtectSystem=strict", "ProtectSystem=strickt")
    });
    let text = said(&analyze(&["verify"], &broken));
    assert!(
        text.contains("ProtectSystem") || text.contains("protect system"),
        "{text:?}"
    );
}

#[test]
fn the_units_exposure_is_at_most_2() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path(), "tgingest.service", |u| u);
    // --threshold counts tenths: 20 = an exposure of 2.0 ("OK" is below 4.0).
    let out = analyze(&["security", "--offline=true", "--threshold=20"], &unit);
    let text = said(&out);
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall line");
    eprintln!("{overall}");
    assert!(
        out.status.success(),
        "exposure above 2.0: {overall}\n{text}"
    );
}

#[test]
fn the_binary_takes_the_units_command_line_environment_and_credentials() {
    let unit = unit_text();
    let exec = values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let mut args = exec[0].split_whitespace();
    assert_eq!(args.next(), Some(INSTALLED_BINARY));
    let args: Vec<&str> = args.collect();
    assert_eq!(args.first(), Some(&"run"), "the unit must run a node");

    // The command line parses (`--help` stops before anything starts).
    let out = Command::new(tgingest_bin())
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("Run this node"), "{}", said(&out));

    // The credentials it loads are the ones the binary reads.
    let loaded: Vec<&str> = values(&unit, "LoadCredential")
        .into_iter()
        .map(|v| v.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(loaded, [MASTER_KEY_CREDENTIAL, ADMIN_TOKEN_CREDENTIAL]);

    // Its environment (%S = /var/lib, here a temp dir) and credentials pass `config check`, the
    // key taken from the credential, the data dir from the environment.
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for (name, text) in [
        (MASTER_KEY_CREDENTIAL, "ab".repeat(32)),
        (ADMIN_TOKEN_CREDENTIAL, "token".to_string()),
    ] {
        let path = creds.join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    let state = dir.path().join("state");
    let mut check = Command::new(tgingest_bin());
    check
        .env_clear()
        .env("CREDENTIALS_DIRECTORY", &creds)
        .args(["config", "check"]);
    for assignment in values(&unit, "Environment") {
        let (name, value) = assignment.split_once('=').expect("NAME=value");
        check.env(name, value.replace("%S", &state.display().to_string()));
    }
    let out = check.output().unwrap();
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("# master key: Credential("), "{text}");
    assert!(
        text.contains(&format!(
            "data_dir = \"{}\"",
            state.join("tgingest").display()
        )),
        "{text}"
    );
}
