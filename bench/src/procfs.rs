//! CPU time and peak memory of processes, read from `/proc`; and finding a container's
//! process on the host (a pod's processes are the host's processes in their own namespaces).

use std::collections::HashMap;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

/// Peak resident set (`VmHWM`) of `pid`, in MB (MiB).
pub fn vm_hwm_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

/// utime + stime of a process, in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

/// CPU seconds the whole machine spent busy (every state but idle and iowait, all cores).
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(cpu) = stat.lines().find_map(|l| l.strip_prefix("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let ticks: f64 = cpu
        .split_whitespace()
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

/// CPU seconds spent by the processes of a local cluster, by column: a sample taken now, or
/// (with [`Cpu::since`]) what a phase took. Columns a benchmark does not watch stay 0.
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub operator: f64,
    /// Every engine pod (0 where the engine runs inside the operator).
    pub engines: f64,
    pub apiserver: f64,
    pub etcd: f64,
    pub controller_manager: f64,
    /// The benchmark process itself.
    pub bench: f64,
    /// The whole machine's busy time ([`machine_busy_seconds`]).
    pub machine: f64,
    /// Wall-clock seconds (since the epoch in a sample; of the phase after `since`).
    pub wall: f64,
}

impl Cpu {
    /// What was spent between `earlier` and this sample.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            operator: self.operator - earlier.operator,
            engines: self.engines - earlier.engines,
            apiserver: self.apiserver - earlier.apiserver,
            etcd: self.etcd - earlier.etcd,
            controller_manager: self.controller_manager - earlier.controller_manager,
            bench: self.bench - earlier.bench,
            machine: self.machine - earlier.machine,
            wall: self.wall - earlier.wall,
        }
    }

    /// The machine's busy time not in any column (kubelet, containerd, kube-proxy, the
    /// forwarders, wrk, anything else).
    pub fn other(&self) -> f64 {
        (self.machine
            - self.operator
            - self.engines
            - self.apiserver
            - self.etcd
            - self.controller_manager
            - self.bench)
            .max(0.0)
    }
}

/// Seconds since the epoch, for [`Cpu::wall`].
pub fn wall_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Every process's command name and CPU seconds (utime + stime), by pid.
pub type Snapshot = HashMap<u32, (String, f64)>;

/// A [`Snapshot`] of every process now.
pub fn snapshot() -> Snapshot {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Snapshot::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((pid, (comm.trim().to_owned(), cpu_seconds(pid))))
        })
        .collect()
}

/// The CPU seconds processes not in `exclude` spent between two snapshots, summed by command
/// name, most first: who else used the machine in a phase. A process that started and ended
/// between the snapshots is not seen.
pub fn busiest_since(before: &Snapshot, after: &Snapshot, exclude: &[u32]) -> Vec<(String, f64)> {
    let mut by_name: HashMap<&str, f64> = HashMap::new();
    for (pid, (comm, cpu)) in after {
        if exclude.contains(pid) {
            continue;
        }
        // A pid reused by another command started from zero.
        let earlier = before
            .get(pid)
            .filter(|(c, _)| c == comm)
            .map_or(0.0, |(_, c)| *c);
        *by_name.entry(comm.as_str()).or_default() += (cpu - earlier).max(0.0);
    }
    let mut sorted: Vec<(String, f64)> = by_name
        .into_iter()
        .map(|(name, cpu)| (name.to_owned(), cpu))
        .collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; `getconf` says so without unsafe.
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The processes whose command line starts with `argv` (exactly these arguments), for
/// example `["/usr/local/bin/kubekms-operator", "run"]`, and whose cgroup path names
/// `cgroup_contains` (a pod's UID: the kubelet puts each pod in a cgroup named after it,
/// with `_` for `-` under the systemd driver), so another cluster's pods never count.
pub fn find_processes(argv: &[&str], cgroup_contains: &str) -> Vec<u32> {
    let uid_systemd = cgroup_contains.replace('-', "_");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.len() < argv.len() || argv.iter().zip(&args).any(|(a, b)| a.as_bytes() != *b) {
                return false;
            }
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|cg| cg.contains(cgroup_contains) || cg.contains(uid_systemd.as_str()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(vm_hwm_mb(me).unwrap() > 0.0);
        assert!(cpu_seconds(me) >= 0.0);
        assert!(machine_busy_seconds() > 0.0);
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
        // This process's own cgroup names no pod.
        assert!(find_processes(&["/nonexistent"], "x").is_empty());
        let now = snapshot();
        assert!(now.contains_key(&me));
        let busiest = busiest_since(&Snapshot::new(), &now, &[me]);
        assert!(busiest.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}
