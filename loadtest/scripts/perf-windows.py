#!/usr/bin/env python3
"""Where the CPU went during a load-test run, window by window, from a system-wide perf profile.

    perf record -a -F 99 -g -o run.data -- loadtest/scripts/fresh-run.sh ENGINE burst
    perf script -i run.data -F comm,pid,time,ip,sym > run.stacks
    loadtest/scripts/perf-windows.py run.stacks [--window 5] [--classify FROM:TO ...]

Prints, per window of seconds since the first sample, the samples of PostgreSQL's processes
(and, among them, those under `brk` or a page fault: heap given back and faulted in again), of
the engine (its `http` and `actors` threads), of the load generator (tokio's default thread
name), and of the idle task. At 99 Hz on two cores a fully busy window of 5 s holds 990
samples. Each `--classify FROM:TO` range (seconds, as printed) adds a breakdown of
PostgreSQL's samples in it by what their call stacks contain (the first matching rule wins):
compare the engine's phases with the plain COPY baseline's.
"""
import argparse
import collections

# (substring of a frame, class): the first rule any frame of a sample matches decides.
RULES = [
    ("XLogFileInit", "new WAL segment files"),
    ("toast_save_datum", "staging: TOAST insert"),
    ("toast_delete", "staging: TOAST delete"),
    ("heap_vacuum_rel", "vacuum"),
    ("lazy_scan_heap", "vacuum"),
    ("do_autovacuum", "autovacuum, other"),
    ("CheckpointerMain", "checkpointer"),
    ("BackgroundWriterMain", "background writer"),
    ("WalWriterMain", "WAL writer"),
    ("ResourceOwnerRememberTupleDesc", "COPY: slot pins"),
    ("ResourceOwnerForgetTupleDesc", "COPY: slot pins"),
    ("__do_sys_brk", "heap trimmed or grown (brk)"),
    ("exc_page_fault", "page faults"),
    ("XLogFlush", "WAL flush"),
    ("CopyFrom", "COPY"),
    ("DoCopy", "COPY, other"),
    ("ExecUpdate", "UPDATE"),
    ("ExecInsert", "INSERT"),
    ("ExecDelete", "DELETE"),
    ("pg_plan_queries", "planning"),
    ("CommitTransaction", "commit"),
    ("secure_read", "socket read"),
    ("__send", "socket write"),
]
ENGINE_THREADS = ("http", "actors")


def samples(path):
    """Yields (comm, seconds since the first sample, frames) per sample of `perf script`."""
    comm, start, frames, at = None, None, [], 0.0
    with open(path, errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if comm is not None:
                    yield comm, at, frames
                comm = None
                continue
            fields = line.split()
            if comm is None and len(fields) >= 3 and fields[2].endswith(":"):
                comm, frames = fields[0], []
                at = float(fields[2][:-1])
                start = at if start is None else start
                at -= start
                continue
            if comm is not None:
                frames.append(fields[1] if len(fields) > 1 else "?")
    if comm is not None:
        yield comm, at, frames


def classify(frames):
    for key, name in RULES:
        if any(key in frame for frame in frames):
            return name
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", help="output of perf script -F comm,pid,time,ip,sym")
    parser.add_argument("--window", type=float, default=5.0, help="seconds per line")
    parser.add_argument("--classify", action="append", default=[], metavar="FROM:TO")
    arguments = parser.parse_args()
    ranges = [tuple(float(bound) for bound in text.split(":")) for text in arguments.classify]
    windows = collections.defaultdict(collections.Counter)
    classes = [collections.Counter() for _ in ranges]
    for comm, at, frames in samples(arguments.stacks):
        window = windows[int(at // arguments.window)]
        if comm == "postgres":
            window["postgres"] += 1
            if any("__do_sys_brk" in frame or "exc_page_fault" in frame for frame in frames):
                window["postgres memory"] += 1
            for index, (start, end) in enumerate(ranges):
                if start <= at < end:
                    classes[index][classify(frames)] += 1
        elif comm in ENGINE_THREADS:
            window["engine"] += 1
        elif comm == "tokio-rt-worker":
            window["load generator"] += 1
        elif comm == "swapper":
            window["idle"] += 1
        else:
            window["other"] += 1
    columns = ["postgres", "postgres memory", "engine", "load generator", "idle", "other"]
    print("  from " + "".join(f"{column:>17}" for column in columns))
    for index in sorted(windows):
        counts = windows[index]
        print(f"{index * arguments.window:6.0f} " + "".join(f"{counts[c]:17d}" for c in columns))
    for (start, end), counts in zip(ranges, classes):
        print(f"\nPostgreSQL from {start:.0f} s to {end:.0f} s: {sum(counts.values())} samples")
        for name, count in counts.most_common():
            print(f"  {name:32} {count:6d}")


if __name__ == "__main__":
    main()
