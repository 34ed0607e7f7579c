//! The agent's Debian package installed for real: `cargo deb --no-build` around the
//! debug binary this test run already built (no release build added to the suite; see
//! [`build_deb`]), then
//! `dpkg -i`, and what the package promises is checked on this system: the binary, the
//! unit (passing `systemd-analyze verify`, enabled), the default config as a conffile
//! readable only by the service user, the system user and group with their log groups,
//! the state directory. `dpkg -r` keeps the conffile, `dpkg --purge` removes the rest.
//!
//! It changes the machine, so: it needs root (dpkg writes the system; `make test` runs as
//! root here and in CI) and fails naming that otherwise; a system-wide lock keeps two
//! test runs (other worktrees, other `cargo test` processes) from installing at once;
//! the packages it builds carry the revision [`TEST_REVISION`], so a leftover of a run
//! that died is purged first, while a real installation is refused and left alone; a
//! guard purges the package even when an assertion fails, and the user is deleted again
//! if this test created it.

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGE: &str = "vantage-agent";
/// Debian revision of the packages this test builds (a real build gets `1`).
const TEST_REVISION: &str = "0vantagetest";
const BIN: &str = "/usr/bin/vantage-agent";
const CONFIG: &str = "/etc/vantage-agent/agent.yaml";
const STATE_DIR: &str = "/var/lib/vantage-agent";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/vantage-agent.service";
/// Where Debian keeps packaged units (bookworm: `/lib` is a link to `/usr/lib`, either
/// may be the one cargo-deb's helper names).
const UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];
/// Serialises every run of this test on the machine.
const LOCK: &str = "vantage-agent-deb-install-test.lock";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `Some((status, version))` when dpkg knows the package in any state but not-installed.
fn dpkg_state() -> Option<(String, String)> {
    let out = run("dpkg-query", &["-W", "-f=${Status}\t${Version}", PACKAGE]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('\t')?;
    (out.status.success() && !status.ends_with(" not-installed"))
        .then(|| (status.to_string(), version.to_string()))
}

/// `getent passwd|group NAME` split on ':'.
fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = run("getent", &[db, name]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(':')
            .map(str::to_string)
            .collect()
    })
}

/// Purges the package when dropped (also after a failed assertion), and deletes the
/// service user and group if the test created them.
struct Cleanup {
    delete_user: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if dpkg_state().is_some() {
            let _ = run("dpkg", &["--purge", PACKAGE]);
        }
        if self.delete_user {
            let _ = run("userdel", &[PACKAGE]);
            if getent("group", PACKAGE).is_some() {
                let _ = run("groupdel", &[PACKAGE]);
            }
        }
    }
}

/// Builds the .deb in `scratch` from the binary `cargo test` built; returns its path.
/// The manifest's asset `target/release/vantage-agent` is read from `CARGO_TARGET_DIR`,
/// so a scratch target directory holding the debug binary (a hard link) under
/// `release/` packages it without building anything, and without cargo-deb's deprecated
/// dev-profile mode; strip writes its own copy, the original is untouched.
fn build_deb(scratch: &Path) -> PathBuf {
    let staged = scratch.join("target/release");
    std::fs::create_dir_all(&staged).unwrap();
    let bin = staged.join(PACKAGE);
    if std::fs::hard_link(common::agent_bin(), &bin).is_err() {
        std::fs::copy(common::agent_bin(), &bin).unwrap();
    }
    let out = scratch.join("out");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let result = Command::new(&cargo)
        .args(["deb", "-p", PACKAGE, "--no-build"])
        .args(["--deb-revision", TEST_REVISION])
        // Stripped and quickly compressed: seconds, not the minutes xz takes on a
        // debug binary.
        .args(["--strip", "--no-dbgsym", "--fast"])
        .arg("--output")
        .arg(&out)
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{cargo} deb: {e}"));
    assert!(
        result.status.success(),
        "cargo deb failed (is cargo-deb installed? `make test-deps` installs it):\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

fn unit_path() -> Option<PathBuf> {
    UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join("vantage-agent.service"))
        .find(|p| p.exists())
}

#[test]
fn deb_install_lays_out_the_service_and_purges_clean() {
    let uid = ok("id", &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "this test installs the agent's .deb with dpkg -i, which needs root: run the suite \
         as root (as `make test` does in CI), or leave it out with `--skip deb_install`"
    );
    for tool in [
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "systemd-analyze",
        "getent",
    ] {
        assert!(
            run("sh", &["-c", &format!("command -v {tool}")])
                .status
                .success(),
            "{tool} is missing (Debian: dpkg, systemd, libc-bin)"
        );
    }
    let lock = std::fs::File::create(std::env::temp_dir().join(LOCK)).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();

    // A leftover of a run that died: its user is this test's too.
    let mut leftover = false;
    if let Some((status, version)) = dpkg_state() {
        assert!(
            version.ends_with(&format!("-{TEST_REVISION}")),
            "{PACKAGE} {version} ({status}) is installed and was not built by this test; \
             refusing to touch it"
        );
        ok("dpkg", &["--purge", PACKAGE]);
        leftover = true;
    }
    let _cleanup = Cleanup {
        delete_user: leftover || getent("passwd", PACKAGE).is_none(),
    };

    let scratch = tempfile::tempdir().unwrap();
    let deb = build_deb(scratch.path());
    let version = ok("dpkg-deb", &["-f", deb.to_str().unwrap(), "Version"]);
    assert!(
        version.trim().ends_with(&format!("-{TEST_REVISION}")),
        "{version}"
    );
    ok("dpkg", &["-i", deb.to_str().unwrap()]);
    let (status, _) = dpkg_state().expect("installed");
    assert_eq!(status, "install ok installed");

    // The binary, the one this run built.
    let meta = std::fs::metadata(BIN).expect("the binary");
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        ok(BIN, &["--version"]),
        ok(common::agent_bin().to_str().unwrap(), &["--version"])
    );

    // The unit, as written in packaging/, enabled, and valid for systemd.
    let unit = unit_path().expect("the unit in /usr/lib/systemd/system");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(repo().join("packaging/systemd/vantage-agent.service")).unwrap()
    );
    assert!(
        std::fs::symlink_metadata(WANTS).is_ok(),
        "{WANTS}: the unit is enabled"
    );
    let verify = run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !stderr.contains("vantage-agent"),
        "systemd-analyze verify {}: {stderr}",
        unit.display()
    );

    // The system user and its group, in the log-reading groups.
    let user = getent("passwd", PACKAGE).expect("the vantage-agent user");
    let (user_uid, user_gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!(user_uid < 1000, "a system user: {user:?}");
    assert_eq!(user[5], STATE_DIR, "{user:?}");
    assert!(user[6].ends_with("nologin"), "{user:?}");
    let group = getent("group", PACKAGE).expect("the vantage-agent group");
    assert_eq!(group[2].parse::<u32>().unwrap(), user_gid);
    let groups = ok("id", &["-nG", PACKAGE]);
    for g in ["adm", "systemd-journal"] {
        if getent("group", g).is_some() {
            assert!(groups.split_whitespace().any(|x| x == g), "{g}: {groups}");
        }
    }

    // The default config: a conffile, valid, readable by the service user only.
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        std::fs::read_to_string(repo().join("packaging/debian/agent.yaml")).unwrap()
    );
    let meta = std::fs::metadata(CONFIG).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (user_uid, user_gid));
    assert!(ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]).contains(CONFIG));
    ok(BIN, &["check-config", "--config", CONFIG]);

    // The state directory.
    let meta = std::fs::metadata(STATE_DIR).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (user_uid, user_gid));

    // Remove: the program goes, the edited-or-not conffile stays.
    ok("dpkg", &["-r", PACKAGE]);
    assert!(!Path::new(BIN).exists());
    assert!(unit_path().is_none());
    assert!(Path::new(CONFIG).exists(), "dpkg -r keeps the conffile");
    let (status, _) = dpkg_state().expect("config-files left");
    assert_eq!(status, "deinstall ok config-files");

    // Purge: nothing of the package is left.
    ok("dpkg", &["--purge", PACKAGE]);
    assert!(dpkg_state().is_none());
    for path in [CONFIG, STATE_DIR, WANTS] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} left after purge"
        );
    }
}
