//! Running a test in a network namespace of its own (`ip netns add`, `lo` up; root), for
//! tests that bind fixed ports, flood the daemon or lower its limits.

use std::process::Command;
use std::time::Duration;

use super::run_with_timeout;

/// Set in the environment of a test re-run inside its namespace.
pub const NETNS_ENV: &str = "STUNNERD_TEST_NETNS";

/// A network namespace this test created, with `lo` up; deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn create(test: &str) -> Netns {
        // At most 40 characters; a long test name keeps its head and gets a hash of the
        // whole, so two tests whose names share the first 40 characters never collide.
        let full = format!("stunnerd-{}-{test}", std::process::id());
        let name = if full.len() <= 40 {
            full
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&full, &mut h);
            let head: String = full.chars().take(31).collect();
            format!("{head}-{:08x}", std::hash::Hasher::finish(&h) as u32)
        };
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed (root needed)");
        };
        run(&["netns", "add", &name]);
        let ns = Netns(name);
        run(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }
}

impl Netns {
    /// Run `ip` inside the namespace (`ip -n NAME ARGS`).
    pub fn ip(&self, args: &[&str]) {
        let st = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .status()
            .expect("run ip");
        assert!(st.success(), "ip -n {} {args:?} failed", self.0);
    }

    /// A command that runs `bin` inside the namespace.
    pub fn command(&self, bin: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(bin);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Run `body` inside a fresh network namespace: outside one, re-run this very test (by its
/// exact name) under `ip netns exec` and require that it passed there.
pub fn in_netns(module: &str, test: &str, body: fn()) {
    if std::env::var_os(NETNS_ENV).is_some() {
        body();
        return;
    }
    let ns = Netns::create(test);
    let exe = std::env::current_exe().expect("test binary");
    // The harness names a test by its path below the crate root (`k8s_restart::name`);
    // `module` is the caller's `module_path!()` (`it::k8s_restart`).
    let module = module.split_once("::").map_or("", |(_, m)| m);
    let full = format!("{module}::{test}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([full.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, &ns.0);
    let out = run_with_timeout(cmd, Duration::from_secs(180));
    assert!(
        out.code() == Some(0) && out.stdout.contains("test result: ok. 1 passed"),
        "{test} in netns {} failed (exit {:?}):\n{}",
        ns.0,
        out.code(),
        out.combined()
    );
    // Show the measured figures of the inner run.
    for line in out.stdout.lines() {
        if let Some(i) = line.find("measured:").or_else(|| line.find("FIGURE")) {
            println!("{}", &line[i..]);
        }
    }
}
