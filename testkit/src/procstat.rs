//! What `/proc` says of a process, for the benches and the fleet
//! simulator: CPU time and memory. A process that is gone reads as 0.

/// User plus system CPU time of `pid`, in clock ticks (1/100 s here).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): state is 0,
    // utime 11, stime 12.
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`, ...), in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid`, MB.
pub fn rss_mb(pid: u32) -> f64 {
    status_kib(pid, "VmRSS:") as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_memory_and_a_gone_one_reads_zero() {
        let me = std::process::id();
        assert!(rss_mb(me) > 1.0);
        assert!(status_kib(me, "VmHWM:") >= status_kib(me, "VmRSS:") / 2);
        // Burn a little CPU so that at least one tick is counted.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && cpu_ticks(me) > 0);
        assert_eq!(cpu_ticks(u32::MAX), 0);
        assert_eq!(rss_mb(u32::MAX), 0.0);
    }
}
