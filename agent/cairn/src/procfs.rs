//! What cairn reads from `/proc`: uptime and init's memory for the ready marker, the hostname,
//! the local IPv4 addresses for the serving certificate, and the node's CPU time and memory
//! working set for `kubectl top`. Parsers are pure for testing.

use std::fs;
use std::net::Ipv4Addr;

/// The console marker printed once HTTPS is serving (docs/design.md, "Boot sequence").
pub fn ready_line() -> String {
    let uptime = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| parse_uptime_ms(&t));
    let rss = fs::read_to_string("/proc/1/status")
        .ok()
        .and_then(|t| parse_vm_rss_kb(&t));
    format!(
        "cairn: ready uptime_ms={} init_rss_kb={}",
        uptime.unwrap_or(0),
        rss.unwrap_or(0)
    )
}

/// Milliseconds since boot (CLOCK_BOOTTIME) from `/proc/uptime` ("12.34 56.78").
pub fn parse_uptime_ms(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, "0"));
    let secs: u64 = secs.parse().ok()?;
    // The kernel prints two decimals; take up to three as milliseconds.
    let mut ms = 0;
    for (i, c) in frac.chars().chain("000".chars()).take(3).enumerate() {
        ms += c.to_digit(10)? as u64 * [100, 10, 1][i];
    }
    Some(secs * 1000 + ms)
}

/// `VmRSS` in kB from a `/proc/<pid>/status` text.
pub fn parse_vm_rss_kb(text: &str) -> Option<u64> {
    kb_field(text, "VmRSS:")
}

/// `MemTotal` in kB from a `/proc/meminfo` text.
pub fn parse_mem_total_kb(text: &str) -> Option<u64> {
    kb_field(text, "MemTotal:")
}

/// `/proc/stat` counts in USER_HZ ticks, which the kernel keeps at 100 per second on every
/// architecture Cairn runs on (x86, ARM, s390) whatever its internal tick rate.
const USER_HZ: u64 = 100;

/// The CPU time the node has been busy since boot, in nanoseconds, from `/proc/stat`'s `cpu`
/// line: user, nice, system, irq, softirq and steal, what the root cgroup's `cpu.stat` counts
/// as usage (guest time is already in user; idle and iowait are not busy).
pub fn parse_cpu_busy_nanos(text: &str) -> Option<u64> {
    let fields: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal ...
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// How many CPUs `/proc/stat` counts (its `cpuN` lines: the online ones).
pub fn parse_cpu_count(text: &str) -> Option<u64> {
    let count = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    (count > 0).then_some(count)
}

/// The node's memory working set in bytes from `/proc/meminfo`: MemTotal − MemFree −
/// Inactive(file), as the kubelet counts the root cgroup on cgroup v2 (page cache the kernel
/// may drop at once is not in use; the active cache is).
pub fn parse_memory_working_set(text: &str) -> Option<u64> {
    let total = kb_field(text, "MemTotal:")?;
    let free = kb_field(text, "MemFree:")?;
    let inactive_file = kb_field(text, "Inactive(file):").unwrap_or(0);
    Some(total.saturating_sub(free).saturating_sub(inactive_file) * 1024)
}

/// The number after `key` on its line of a `/proc` key-value file (`VmRSS:   1234 kB`).
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel's hostname (`/proc/sys/kernel/hostname`), if set.
pub fn kernel_hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_owned())
}

/// The IPv4 addresses assigned to local interfaces, loopback included, sorted.
pub fn local_ipv4_addrs() -> Vec<Ipv4Addr> {
    fs::read_to_string("/proc/net/fib_trie")
        .map(|t| parse_fib_trie(&t))
        .unwrap_or_default()
}

/// The node's own IPv4 addresses, loopback left out, those of the interface with the default
/// route first: what a Node reports, its first address being the `InternalIP` the API server
/// reaches its kubelet at (the kubelet's choice without `--node-ip`). Bridges this machine
/// makes for pods come later, so they are never taken for the node's address.
pub fn node_ipv4_addrs() -> Vec<Ipv4Addr> {
    let addrs = local_ipv4_addrs()
        .into_iter()
        .filter(|a| !a.is_loopback())
        .collect();
    let routes = fs::read_to_string("/proc/net/route").unwrap_or_default();
    default_route_first(addrs, &routes)
}

/// `addrs` with those on the default route's interface's subnets first (order kept
/// otherwise); `routes` is `/proc/net/route`.
pub fn default_route_first(mut addrs: Vec<Ipv4Addr>, routes: &str) -> Vec<Ipv4Addr> {
    // Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ..., addresses as
    // hexadecimal numbers in the machine's byte order.
    let hex = |f: &str| u32::from_str_radix(f, 16).ok().map(u32::to_ne_bytes);
    let rows: Vec<(&str, [u8; 4], [u8; 4], [u8; 4])> = routes
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                *f.first()?,
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(7)?)?,
            ))
        })
        .collect();
    let Some(iface) = rows
        .iter()
        .find(|(_, dest, _, mask)| *dest == [0; 4] && *mask == [0; 4])
        .map(|r| r.0)
    else {
        return addrs;
    };
    let subnets: Vec<([u8; 4], [u8; 4])> = rows
        .iter()
        .filter(|(i, dest, gw, _)| *i == iface && *gw == [0; 4] && *dest != [0; 4])
        .map(|(_, dest, _, mask)| (*dest, *mask))
        .collect();
    let on_default = |a: &Ipv4Addr| {
        let o = a.octets();
        subnets
            .iter()
            .any(|(dest, mask)| (0..4).all(|i| o[i] & mask[i] == dest[i]))
    };
    addrs.sort_by_key(|a| !on_default(a));
    addrs
}

/// Local addresses from `/proc/net/fib_trie`: a leaf `|-- A.B.C.D` followed by `/32 host LOCAL`.
pub fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut leaf = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse::<Ipv4Addr>().ok();
        } else if line.starts_with("/32 host LOCAL") {
            out.extend(leaf);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_address_comes_first() {
        // A pod bridge's address sorts before the LAN's; the default route is on eth0.
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            cairn0\t00002A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let addrs = vec![a("10.42.0.1"), a("100.64.3.1"), a("192.0.2.2")];
        if cfg!(target_endian = "little") {
            assert_eq!(
                default_route_first(addrs.clone(), routes),
                [a("192.0.2.2"), a("10.42.0.1"), a("100.64.3.1")]
            );
        }
        // No default route: the order stays.
        assert_eq!(default_route_first(addrs.clone(), "Iface\n"), addrs);
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime_ms("12.34 56.78\n"), Some(12_340));
        assert_eq!(parse_uptime_ms("0.05 0.00"), Some(50));
        assert_eq!(parse_uptime_ms("7 1"), Some(7_000));
        assert_eq!(parse_uptime_ms("3.1234 1"), Some(3_123));
        assert_eq!(parse_uptime_ms(""), None);
        assert_eq!(parse_uptime_ms("x.1 2"), None);
    }

    #[test]
    fn rss() {
        let status = "Name:\tinit\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kb(status), Some(1234));
        assert_eq!(parse_vm_rss_kb("Name:\tkthreadd\n"), None);
        let meminfo = "MemTotal:        2030244 kB\nMemFree:          100 kB\n";
        assert_eq!(parse_mem_total_kb(meminfo), Some(2_030_244));
        assert_eq!(parse_mem_total_kb("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn node_cpu_and_memory() {
        let stat = "cpu  2848740 6675 333334 3485884 20136 10 3547 2374 0 0\n\
                    cpu0 1387291 2967 157938 1793000 6591 0 800 1196 0 0\n\
                    cpu1 1461449 3708 175396 1692884 13545 10 2747 1178 0 0\n\
                    intr 1 2 3\n";
        let ticks = 2_848_740 + 6_675 + 333_334 + 10 + 3_547 + 2_374;
        assert_eq!(parse_cpu_busy_nanos(stat), Some(ticks * 10_000_000));
        // Old kernels print fewer fields.
        assert_eq!(parse_cpu_busy_nanos("cpu 1 2 3 4\n"), Some(6 * 10_000_000));
        assert_eq!(parse_cpu_busy_nanos("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_cpu_busy_nanos("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_cpu_count(stat), Some(2));
        assert_eq!(parse_cpu_count("cpu 1 2 3 4\n"), None);
        let meminfo = "MemTotal:       24684084 kB\nMemFree:        18077560 kB\n\
                       MemAvailable:   23844356 kB\nActive(file):    1763168 kB\n\
                       Inactive(file):  4071580 kB\n";
        assert_eq!(
            parse_memory_working_set(meminfo),
            Some((24_684_084 - 18_077_560 - 4_071_580) * 1024)
        );
        assert_eq!(parse_memory_working_set("MemTotal: 10 kB\n"), None);
        // The real files of this machine read.
        let real = |p| fs::read_to_string(p).unwrap();
        assert!(parse_cpu_busy_nanos(&real("/proc/stat")).unwrap() > 0);
        assert!(parse_memory_working_set(&real("/proc/meminfo")).unwrap() > 0);
    }

    #[test]
    fn ready_line_format() {
        let line = ready_line();
        let rest = line.strip_prefix("cairn: ready uptime_ms=").unwrap();
        let (up, rss) = rest.split_once(" init_rss_kb=").unwrap();
        up.parse::<u64>().unwrap();
        rss.parse::<u64>().unwrap();
    }

    #[test]
    fn fib_trie() {
        let text = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.2.0/24 2 0 2
        +-- 10.0.2.0/28 2 0 2
           |-- 10.0.2.0
              /24 link UNICAST
           |-- 10.0.2.15
              /32 host LOCAL
        |-- 10.0.2.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 10.0.2.15
              /32 host LOCAL
";
        assert_eq!(
            parse_fib_trie(text),
            [Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::LOCALHOST]
        );
    }
}
