//! The standard `process_*` series, as the Prometheus client libraries define them (Go's
//! `client_golang` process collector, Python's `prometheus_client`): read from `/proc` at
//! scrape time.
//!
//! Everything comes from files, so no `unsafe` is needed here: the clock tick and page
//! size from the auxiliary vector (`/proc/self/auxv`, `AT_CLKTCK` and `AT_PAGESZ`, what
//! `sysconf` itself returns), the fd limit from `/proc/self/limits` (the soft
//! `RLIMIT_NOFILE`, as `getrlimit` returns it), and the boot time from `/proc/stat`.

use std::sync::OnceLock;

/// One scrape's worth of process figures. A field is `None` when its source could not be
/// read or parsed (not Linux, `/proc` not mounted, an unexpected format); the series is then
/// left out rather than shown as a wrong value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE` (`u64::MAX` for unlimited).
    pub max_fds: Option<u64>,
    /// Unix time the process started, in seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Read the figures of this process now.
    pub fn read() -> ProcessSample {
        let sys = sys_params();
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| Stat::parse(&s));
        let limits = std::fs::read_to_string("/proc/self/limits").ok();
        ProcessSample {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / sys.clock_ticks as f64),
            resident_memory_bytes: stat.map(|s| s.rss_pages.saturating_mul(sys.page_size)),
            virtual_memory_bytes: stat.map(|s| s.vsize),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: limits.as_deref().and_then(max_open_files),
            start_time_seconds: start_time(stat, sys),
        }
    }
}

/// The fields of `/proc/self/stat` the series need (proc(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    /// Clock ticks in user mode (field 14).
    utime: u64,
    /// Clock ticks in kernel mode (field 15).
    stime: u64,
    /// Clock ticks after boot at which the process started (field 22).
    starttime: u64,
    /// Virtual memory size in bytes (field 23).
    vsize: u64,
    /// Resident set size in pages (field 24).
    rss_pages: u64,
}

impl Stat {
    fn parse(text: &str) -> Option<Stat> {
        // Field 2 is the command name in parentheses, which may itself hold spaces and
        // parentheses: the fields after it start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3.
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let (utime, stime) = (field(14)?, field(15)?);
        let (starttime, vsize, rss_pages) = (field(22)?, field(23)?, field(24)?);
        Some(Stat {
            utime,
            stime,
            starttime,
            vsize,
            rss_pages,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SysParams {
    /// `sysconf(_SC_CLK_TCK)`: the unit of the times in `/proc/self/stat`.
    clock_ticks: u64,
    /// `sysconf(_SC_PAGESIZE)`: the unit of the resident set size.
    page_size: u64,
}

const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// The clock tick and page size, read once. Without `/proc/self/auxv` they fall back to
/// the values of every common Linux build (100 Hz `USER_HZ`, 4 KiB pages).
fn sys_params() -> SysParams {
    static PARAMS: OnceLock<SysParams> = OnceLock::new();
    *PARAMS.get_or_init(|| {
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        SysParams {
            clock_ticks: auxv_value(&auxv, AT_CLKTCK)
                .filter(|v| *v > 0)
                .unwrap_or(100),
            page_size: auxv_value(&auxv, AT_PAGESZ)
                .filter(|v| *v > 0)
                .unwrap_or(4096),
        }
    })
}

/// The value of entry `key` in an auxiliary vector: (type, value) pairs of native words.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> { Some(usize::from_ne_bytes(b.try_into().ok()?) as u64) };
    auxv.chunks_exact(2 * W).find_map(|pair| {
        let (k, v) = pair.split_at(W);
        (word(k)? == key).then(|| word(v)).flatten()
    })
}

/// The soft limit on the `Max open files` line of a `/proc/PID/limits` text.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Boot time (`btime` of `/proc/stat`) plus the process's start in ticks after boot. Both
/// are fixed for the process's life: computed on the first scrape and kept.
fn start_time(stat: Option<Stat>, sys: SysParams) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = stat?;
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = boot_time(&text)?;
        Some(btime as f64 + stat.starttime as f64 / sys.clock_ticks as f64)
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_name_with_spaces_and_parens() {
        let text = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 \
                    4096 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            Stat::parse(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
    }

    #[test]
    fn hostile_stat_texts_give_none() {
        for text in [
            "",
            "no parens at all",
            "1 (x)",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 75 0 0 20 0 3 0 1 2 3",
            ")))))",
        ] {
            assert_eq!(Stat::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn limits_soft_nofile() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            4321                 524288               files     \n";
        assert_eq!(max_open_files(text), Some(4321));
        assert_eq!(
            max_open_files("Max open files            unlimited            unlimited  files\n"),
            Some(u64::MAX)
        );
        assert_eq!(max_open_files("Max open files\n"), None);
        assert_eq!(max_open_files(""), None);
    }

    #[test]
    fn auxv_pairs() {
        let mut v = Vec::new();
        for (k, val) in [(33u64, 7u64), (AT_PAGESZ, 16384), (AT_CLKTCK, 250), (0, 0)] {
            v.extend_from_slice(&(k as usize).to_ne_bytes());
            v.extend_from_slice(&(val as usize).to_ne_bytes());
        }
        assert_eq!(auxv_value(&v, AT_PAGESZ), Some(16384));
        assert_eq!(auxv_value(&v, AT_CLKTCK), Some(250));
        assert_eq!(auxv_value(&v, 99), None);
        // A truncated vector reads only whole pairs.
        assert_eq!(auxv_value(&v[..v.len() - 1], 0), None);
        assert_eq!(auxv_value(&[], AT_PAGESZ), None);
    }

    #[test]
    fn boot_time_line() {
        assert_eq!(
            boot_time("cpu  1 2 3\nintr 5\nbtime 1764800000\nprocesses 9\n"),
            Some(1764800000)
        );
        assert_eq!(boot_time("cpu 1\n"), None);
    }

    /// This process's own figures, against what the kernel says through other channels.
    #[test]
    fn reads_this_process() {
        let s = ProcessSample::read();
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        let rss = s.resident_memory_bytes.expect("rss");
        let vsz = s.virtual_memory_bytes.expect("vsz");
        assert!(rss > 0 && vsz > rss, "{s:?}");
        // VmRSS of /proc/self/status is in kB; it moves between the two reads only a little.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let vm_rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        let diff = (rss as i64 - (vm_rss_kb * 1024) as i64).unsigned_abs();
        assert!(diff < 16 << 20, "rss {rss} vs VmRSS {vm_rss_kb} kB");
        assert!(s.max_fds.is_some_and(|n| n >= 3), "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = s.start_time_seconds.expect("start");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
    }
}
