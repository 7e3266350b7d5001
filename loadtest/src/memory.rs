//! The engine's memory, read from `/proc/<pid>/status` while a scenario runs.
//!
//! `VmHWM` is the kernel's high-water mark of resident memory over the whole life of the
//! process, so after several runs it says nothing about the last one; the sampler therefore
//! also reads `VmRSS` every [`SAMPLE_INTERVAL`] and keeps the largest value seen during the
//! scenario. Both are reported. The embedded PostgreSQL is a separate process and not counted.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// How often resident memory is sampled: fine enough to catch the peak of a 100-scan burst.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// The executable name the engine runs under (`/proc/<pid>/comm`).
const ENGINE_PROCESS_NAME: &str = "ingest-engine";

/// The engine's memory during one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub engine_pid: u32,
    /// `VmRSS` when the scenario started, in KiB: memory an earlier run left mapped counts in
    /// the peak too, so the peak is read against this.
    pub rss_at_start_kib: u64,
    /// Largest `VmRSS` sampled during the scenario, in KiB.
    pub peak_rss_sampled_kib: u64,
    /// `VmHWM` at the end: peak resident memory since the engine started, in KiB.
    pub vm_hwm_kib: u64,
    /// `VmRSS` at the end, in KiB.
    pub rss_at_end_kib: u64,
    pub samples: u64,
}

/// Samples an engine's resident memory on a background task until [`MemorySampler::finish`].
pub struct MemorySampler {
    engine_pid: u32,
    rss_at_start_kib: u64,
    /// Set by `finish`; the sampling task sees it at its next tick and ends.
    stop: Arc<AtomicBool>,
    peak_rss_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    pub fn start(engine_pid: u32) -> MemorySampler {
        let rss_at_start_kib = read_memory_status(engine_pid).map_or(0, |status| status.rss_kib);
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, peak_rss_kib, samples) =
                (stop.clone(), peak_rss_kib.clone(), samples.clone());
            async move {
                let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
                while !stop.load(Ordering::Relaxed) {
                    interval.tick().await;
                    if let Some(status) = read_memory_status(engine_pid) {
                        peak_rss_kib.fetch_max(status.rss_kib, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        MemorySampler {
            engine_pid,
            rss_at_start_kib,
            stop,
            peak_rss_kib,
            samples,
            task,
        }
    }

    /// Stops sampling; `None` if the engine's status could not be read at the end (it exited).
    pub async fn finish(self) -> Option<MemoryReport> {
        self.stop.store(true, Ordering::Relaxed);
        // The task only sleeps and reads a file: it cannot fail, and it ends within one tick.
        let _ = self.task.await;
        let status = read_memory_status(self.engine_pid)?;
        Some(MemoryReport {
            engine_pid: self.engine_pid,
            rss_at_start_kib: self.rss_at_start_kib,
            peak_rss_sampled_kib: self
                .peak_rss_kib
                .load(Ordering::Relaxed)
                .max(status.rss_kib),
            vm_hwm_kib: status.high_water_mark_kib,
            rss_at_end_kib: status.rss_kib,
            samples: self.samples.load(Ordering::Relaxed),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStatus {
    pub rss_kib: u64,
    pub high_water_mark_kib: u64,
}

fn read_memory_status(pid: u32) -> Option<MemoryStatus> {
    let contents = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory_status(&contents)
}

/// `VmRSS` and `VmHWM` of a `/proc/<pid>/status` text.
pub fn parse_memory_status(contents: &str) -> Option<MemoryStatus> {
    let field_kib = |name: &str| {
        contents
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some(MemoryStatus {
        rss_kib: field_kib("VmRSS:")?,
        high_water_mark_kib: field_kib("VmHWM:")?,
    })
}

/// The pid of the engine serving `engine_port`: the only `ingest-engine` process, or, when
/// several run (another engineer's, a test's), the one holding a socket listening on that port.
pub fn find_engine_pid(engine_port: u16) -> Result<u32, String> {
    let candidates = processes_named(ENGINE_PROCESS_NAME);
    match candidates.as_slice() {
        [] => Err(format!(
            "no {ENGINE_PROCESS_NAME} process found; pass --engine-pid to measure its memory"
        )),
        [only] => Ok(*only),
        several => {
            let listening_inodes = listening_socket_inodes(engine_port);
            several
                .iter()
                .copied()
                .find(|pid| holds_any_socket(*pid, &listening_inodes))
                .ok_or_else(|| {
                    format!(
                        "{} {ENGINE_PROCESS_NAME} processes run and none of them listens on port \
                         {engine_port}; pass --engine-pid",
                        several.len()
                    )
                })
        }
    }
}

fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim() == name)
                .unwrap_or(false)
        })
        .collect()
}

/// Inodes of the TCP sockets listening on `port`, from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_socket_inodes(port: u16) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(Path::new(path)).ok())
        .flat_map(|table| parse_listening_inodes(&table, port))
        .collect()
}

/// Rows of a `/proc/net/tcp` table whose local port is `port` and whose state is LISTEN (0A).
pub fn parse_listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN_STATE: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let local_address = columns.get(1)?;
            let state = columns.get(3)?;
            let inode = columns.get(9)?.parse::<u64>().ok()?;
            let (_, port_hex) = local_address.rsplit_once(':')?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            (local_port == port && *state == LISTEN_STATE).then_some(inode)
        })
        .collect()
}

fn holds_any_socket(pid: u32, inodes: &[u64]) -> bool {
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    descriptors.filter_map(Result::ok).any(|descriptor| {
        std::fs::read_link(descriptor.path())
            .ok()
            .and_then(|target| {
                let target = target.to_string_lossy().into_owned();
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_and_its_high_water_mark_are_read() {
        let status = "Name:\tingest-engine\nVmPeak:\t 2000000 kB\nVmHWM:\t  512000 kB\nVmRSS:\t  256000 kB\n";
        assert_eq!(
            parse_memory_status(status),
            Some(MemoryStatus {
                rss_kib: 256_000,
                high_water_mark_kib: 512_000
            })
        );
        assert_eq!(parse_memory_status("Name:\tzombie\n"), None);
    }

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        // 18181 is 0x4705; the second row listens on 8080 (0x1F90); the third is established.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:4705 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
            1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n\
            2: 0100007F:4705 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening_inodes(table, 18181), vec![111]);
        assert_eq!(parse_listening_inodes(table, 8080), vec![222]);
    }
}
