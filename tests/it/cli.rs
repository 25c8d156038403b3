//! The command line as a user meets it: `--version`, `help`, subcommands in the help, a
//! clear error for a config path that cannot be read, config errors one per line and
//! printed once, and a startup banner that says what runs.

use crate::common;
use crate::ops_util;

use std::process::Command;
use std::time::Duration;

use common::*;
use ops_util::*;

fn stunnerd(args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(stunnerd_bin());
    cmd.args(args).env_remove("STUNNER_CONFIG_ORIGIN");
    run_with_timeout(cmd, Duration::from_secs(10))
}

#[test]
fn version_flags() {
    for flag in ["--version", "-V"] {
        let out = stunnerd(&[flag]);
        assert_eq!(out.code(), Some(0), "{}", out.combined());
        // `--version` also says whether the build carries the eBPF offload.
        let text = out.combined();
        let want = format!("stunnerd {}", env!("CARGO_PKG_VERSION"));
        if flag == "-V" {
            assert_eq!(text.trim(), want);
        } else {
            assert!(text.trim().starts_with(&format!("{want} (")), "{text}");
            assert!(text.contains("offload"), "{text}");
        }
    }
}

#[test]
fn help_lists_every_subcommand() {
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let out = stunnerd(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {}", out.combined());
        let text = out.combined();
        assert!(text.contains("Commands:"), "{args:?}: {text}");
        for cmd in ["render", "cds-server", "help"] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(cmd)),
                "{args:?}: {cmd} missing:\n{text}"
            );
        }
        assert!(text.contains("--udp-thread-num"), "{text}");
        assert!(!text.contains("invalid TURN URI"), "{text}");
    }
    // `help COMMAND` is that command's help.
    let out = stunnerd(&["help", "cds-server"]);
    assert_eq!(out.code(), Some(0), "{}", out.combined());
    assert!(out.combined().contains("--dir"), "{}", out.combined());
    let out = stunnerd(&["help", "render"]);
    assert_eq!(out.code(), Some(0), "{}", out.combined());
    assert!(out.combined().contains("--filename"), "{}", out.combined());
    let out = stunnerd(&["help", "bogus"]);
    assert_eq!(out.code(), Some(2), "{}", out.combined());
    assert!(out.combined().contains("unknown command \"bogus\""));
}

/// A config path that does not exist or cannot be read is named in the error, with the
/// reason, and never turned into a CDS URL; CDS origins stay CDS origins.
#[test]
fn unreadable_config_path_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing.yaml");
    let m = missing.display().to_string();
    for origin in [m.clone(), format!("file://{m}")] {
        let out = stunnerd(&["-c", &origin]);
        assert_eq!(out.code(), Some(1), "{origin}: {}", out.combined());
        let text = out.combined();
        assert!(
            text.contains(&format!("cannot read config file {m}: No such file")),
            "{origin}: {text}"
        );
        assert!(!text.contains("http://"), "{origin}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "printed once: {text}");
    }
    // A relative name with a config extension, and a path through a regular file.
    let out = stunnerd(&["-c", "no-such-stunnerd.conf"]);
    assert!(
        out.combined()
            .contains("cannot read config file no-such-stunnerd.conf"),
        "{}",
        out.combined()
    );
    let file = write_config("{}");
    let through = format!("{}/x.yaml", file.display());
    let out = stunnerd(&["-c", &through]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.combined().contains("Not a directory"),
        "{}",
        out.combined()
    );
    // host:port is still a CDS server (nothing listens on this port: connection error).
    let port = free_udp_tcp_port();
    let out = stunnerd(&["-c", &format!("127.0.0.1:{port}"), "-i", "ns/x"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.combined()
            .contains(&format!("http://127.0.0.1:{port}/api/v1/configs/ns/x")),
        "{}",
        out.combined()
    );
}

/// Every validation error on its own line, and the whole report printed once.
#[test]
fn validation_errors_one_per_line_once() {
    let file = write_config(
        "version: v1\nadmin: {name: a/b}\nauth: {type: static, credentials: {}}\n\
         listeners:\n- name: x\n  protocol: TURN-FOO\n  port: 99999\n",
    );
    let out = stunnerd(&["-c", &file.display().to_string()]);
    assert_eq!(out.code(), Some(1), "{}", out.combined());
    let text = out.combined();
    let errors = [
        "auth.credentials: static: empty username or password",
        "listeners[0].protocol: unknown listener protocol: \"TURN-FOO\"",
        "listeners[0].port: invalid port: 99999",
    ];
    for e in errors {
        assert_eq!(text.matches(e).count(), 1, "{e} not exactly once:\n{text}");
        assert!(
            text.lines().any(|l| l.trim() == e),
            "{e} not on its own line:\n{text}"
        );
    }
    assert_eq!(text.matches("invalid config").count(), 1, "{text}");
}

/// In TURN-URI mode the banner names the TURN URI (without its password), not the unused
/// default CDS origin.
#[test]
fn turn_uri_banner_says_what_runs() {
    let port = free_udp_tcp_port();
    // (It binds the default health port :8086 too; if that is taken it exits after the
    // banner, which is all this test reads.)
    let uri = format!("turn://user:s3cret-pw@127.0.0.1:{port}");
    let mut p = start_stunnerd("stunnerd", &[uri], &[]);
    assert!(
        wait_for(Duration::from_secs(5), || p
            .log()
            .contains("starting stunnerd")),
        "{}",
        p.log()
    );
    let log = p.log();
    let banner = log
        .lines()
        .find(|l| l.contains("starting stunnerd"))
        .expect("banner");
    assert!(
        banner.contains(&format!(
            "origin TURN URI turn://127.0.0.1:{port} (default configuration)"
        )),
        "{banner}"
    );
    assert!(!banner.contains("http://"), "{banner}");
    assert!(!log.contains("s3cret-pw"), "{log}");
    signal(p.pid(), "INT");
    p.wait_exit(Duration::from_secs(5)).expect("exit");
}
