//! CPU time of the processes a scenario drives, read from `/proc`: the engine processes, the
//! PostgreSQL server (the postmaster with its live children, plus what its exited children
//! used), and anything else the scenario names. Linux only; elsewhere every figure is 0.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux the load test
/// runs on; `getconf CLK_TCK` says it).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks of each process, by group.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    ticks: HashMap<u32, (&'static str, u64)>,
}

/// Reads the CPU ticks of every process of `groups`, and of the PostgreSQL server whose
/// postmaster is `postmaster_opt` (group `postgres`).
pub fn snapshot(groups: &[(&'static str, Vec<u32>)], postmaster_opt: Option<u32>) -> CpuSnapshot {
    let mut ticks = HashMap::new();
    for (group, pids) in groups {
        for pid in pids {
            if let Some(stat) = read_stat(*pid) {
                ticks.insert(*pid, (*group, stat.own_ticks));
            }
        }
    }
    if let Some(postmaster) = postmaster_opt {
        if let Some(stat) = read_stat(postmaster) {
            ticks.insert(
                postmaster,
                ("postgres", stat.own_ticks + stat.children_ticks),
            );
        }
        for pid in child_pids(postmaster) {
            if let Some(stat) = read_stat(pid) {
                ticks.insert(pid, ("postgres", stat.own_ticks));
            }
        }
    }
    CpuSnapshot { ticks }
}

/// CPU seconds each group used from `before` to `after`. A process gone by `after` counts what
/// it had used by `before` as nothing more (it cannot be read any more; a PostgreSQL child's
/// time is then in its postmaster's children time).
pub fn seconds_between(before: &CpuSnapshot, after: &CpuSnapshot) -> BTreeMap<&'static str, f64> {
    let mut seconds = BTreeMap::new();
    for (pid, (group, ticks_after)) in &after.ticks {
        let ticks_before = before.ticks.get(pid).map_or(0, |(_, ticks)| *ticks);
        *seconds.entry(*group).or_insert(0.0) +=
            ticks_after.saturating_sub(ticks_before) as f64 / TICKS_PER_SECOND;
    }
    for value in seconds.values_mut() {
        *value = (*value * 100.0).round() / 100.0;
    }
    seconds
}

/// The postmaster's pid: line 1 of its `postmaster.pid`.
pub fn postmaster_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

struct Stat {
    parent: u32,
    /// utime + stime.
    own_ticks: u64,
    /// cutime + cstime: children waited for.
    children_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/<pid>/stat`, whose second field (the command, in parentheses) may hold spaces.
fn parse_stat(contents: &str) -> Option<Stat> {
    let after_command = &contents[contents.rfind(')')? + 1..];
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    // After the command: state (field 3), parent (4), …, utime (14), stime (15), cutime (16),
    // cstime (17).
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(Stat {
        parent: field(4)? as u32,
        own_ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

fn child_pids(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| read_stat(*pid).is_some_and(|stat| stat.parent == parent))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_command_parses() {
        let line = "4242 (postgres: ingest ingest 127.0.0.1(5) COPY) S 4000 4242 4242 0 -1 \
                    4194560 1200 0 0 0 250 40 7 3 20 0 1 0 100 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.parent, 4000);
        assert_eq!(stat.own_ticks, 290);
        assert_eq!(stat.children_ticks, 10);
    }

    #[test]
    fn this_process_uses_cpu_between_two_snapshots() {
        let pid = std::process::id();
        let before = snapshot(&[("self", vec![pid])], None);
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        loop {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            let after = snapshot(&[("self", vec![pid])], None);
            if seconds_between(&before, &after).get("self").copied() > Some(0.0) {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "30 s of spinning never showed in /proc/{pid}/stat"
            );
        }
    }
}
