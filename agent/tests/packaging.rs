//! `packaging/` checked without building a package: the units pass `systemd-analyze
//! verify` and name the paths the package and `install` use, the default config and the
//! DaemonSet's config are valid agent configurations, the manifest parses and mounts
//! what the agent reads, and `install --root` with the real binary is idempotent.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn check_config(path: &Path) {
    let out = Command::new(common::agent_bin())
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_agent_unit_names_the_right_paths_and_hardening() {
    let unit = read("packaging/systemd/vantage-agent.service");
    for line in [
        "ExecStart=/usr/bin/vantage-agent run --config /etc/vantage-agent/agent.yaml",
        "User=vantage-agent",
        "SupplementaryGroups=adm systemd-journal",
        "ReadWritePaths=/var/lib/vantage-agent",
        "StateDirectory=vantage-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "missing {line:?} in the agent unit"
        );
    }
    assert!(unit.lines().any(|l| l.starts_with("MemoryMax=")));
    let collector = read("packaging/systemd/vantage-collector.service");
    assert!(collector.contains("ExecStart=/usr/bin/vantage-collector "));
    assert!(collector.contains("--data-dir /var/lib/vantage-collector"));
    assert!(collector.contains("ReadWritePaths=/var/lib/vantage-collector"));
}

/// `systemd-analyze verify` in a scratch root holding the units, the system's unit
/// tree (for the targets they name) and stand-in binaries.
#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing (Debian package systemd)");
    };
    assert!(version.status.success());
    let root = tempfile::tempdir().unwrap();
    let system = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).is_dir())
        .expect("the system's unit directory");
    let target = root.path().join("lib/systemd");
    std::fs::create_dir_all(&target).unwrap();
    let copied = Command::new("cp")
        .args(["-r", system])
        .arg(&target)
        .status()
        .unwrap();
    assert!(copied.success());
    let units = root.path().join("etc/systemd/system");
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["vantage-agent", "vantage-collector"] {
        std::fs::copy(
            repo().join(format!("packaging/systemd/{name}.service")),
            units.join(format!("{name}.service")),
        )
        .unwrap();
        // verify checks that ExecStart names an executable; a stand-in will do.
        std::fs::write(bin.join(name), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg(format!("{name}.service"))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_packaged_default_config_is_valid() {
    check_config(&repo().join("packaging/debian/agent.yaml"));
    let postinst = read("packaging/debian/agent/postinst");
    assert!(postinst.contains("#DEBHELPER#"));
    assert!(postinst.contains("chmod 0600 /etc/vantage-agent/agent.yaml"));
    assert!(postinst.contains("adduser --system"));
    let manifest = read("agent/Cargo.toml");
    assert!(manifest.contains("[package.metadata.deb]"));
    for asset in ["packaging/debian/agent.yaml", "README.md"] {
        assert!(manifest.contains(&format!("\"../{asset}\"")), "{asset}");
        assert!(repo().join(asset).exists());
    }
    let dockerfile = read("packaging/container/Dockerfile");
    assert!(dockerfile.contains("COPY packaging/debian/agent.yaml /etc/vantage-agent/agent.yaml"));
    assert!(dockerfile.contains("libsystemd0"));
}

#[test]
fn the_daemonset_manifest_parses_mounts_the_logs_and_carries_a_valid_config() {
    let text = read("packaging/kubernetes/agent-daemonset.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("valid YAML document"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let ds = kind("DaemonSet");
    assert_eq!(ds["apiVersion"], Value::from("apps/v1"));
    let spec = &ds["spec"]["template"]["spec"];
    let host_paths: Vec<&str> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in [
        "/var/log",
        "/run/log/journal",
        "/var/lib/vantage-agent",
        "/etc/machine-id",
    ] {
        assert!(host_paths.contains(&p), "{p} in {host_paths:?}");
    }
    let container = &spec["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let token = env
        .iter()
        .find(|e| e["name"] == "VANTAGE_AGENT_TOKEN")
        .expect("token env");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        kind("Secret")["metadata"]["name"]
    );
    assert!(container["resources"]["limits"]["memory"].is_string());
    // The selector matches the pod labels, or the API server refuses the DaemonSet.
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
    let config = kind("ConfigMap")["data"]["agent.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, config).unwrap();
    check_config(&path);
}

#[test]
fn install_with_root_lays_out_the_service_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let install = |extra: &[&str]| {
        Command::new(common::agent_bin())
            .args(["install", "--root"])
            .arg(root.path())
            .args(["--collector", "https://collector.example:4317"])
            .args(extra)
            .env("VANTAGE_AGENT_TOKEN", "vak_from_env")
            .output()
            .unwrap()
    };
    let out = install(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("systemctl daemon-reload"), "{stdout}");
    let config = root.path().join("etc/vantage-agent/agent.yaml");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("vak_from_env")
    );
    check_config(&config);
    assert!(
        root.path()
            .join("etc/systemd/system/vantage-agent.service")
            .exists()
    );
    assert!(root.path().join("usr/local/bin/vantage-agent").exists());
    let again = install(&[]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("unchanged")
            .count(),
        3,
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let changed = install(&["--tail", "/srv/app/*.log"]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&changed.stderr).contains("--force"));
    assert!(
        install(&["--tail", "/srv/app/*.log", "--force"])
            .status
            .success()
    );
    let out = Command::new(common::agent_bin())
        .args(["uninstall", "--purge", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!config.exists());
}
