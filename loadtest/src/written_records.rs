//! Records the engine wrote per second, read from its own counter.
//!
//! Every 0.5 s the sampler reads `GET /metrics` and sums `ingest_records_written_total` (all
//! regions), which a writer increments as soon as a chunk's transaction commits: the timeline
//! is exact in time to the sample interval. (It used to come from PostgreSQL's cumulative
//! statistics, `pg_stat_user_tables.n_tup_ins`, which a backend publishes up to seconds late,
//! so charts showed writes after the last scan had finished.) `/metrics` needs no token.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::statistics::{Timeline, TimelinePoint};

/// How often the counter is read.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// Longest wait at the end for the counter to reach the rows expected (writes acknowledged
/// are already counted; this only covers the last sample).
const FINAL_WAIT: Duration = Duration::from_secs(2);

pub struct WrittenRecordsSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<TimelinePoint>, String>>,
    written_at_start: i64,
    latest_written: Arc<AtomicI64>,
}

impl WrittenRecordsSampler {
    /// Reads the counter once and starts sampling; the timeline's second 0 starts now.
    pub async fn start(engine_url: &str) -> Result<WrittenRecordsSampler, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| error.to_string())?;
        let url = format!("{}/metrics", engine_url.trim_end_matches('/'));
        let written_at_start = records_written(&http, &url).await?;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let latest_written = Arc::new(AtomicI64::new(written_at_start));
        let task = tokio::spawn({
            let (stop, latest_written) = (stop.clone(), latest_written.clone());
            async move {
                let timeline = Timeline::starting_at(started);
                let mut previous = written_at_start;
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    tokio::time::sleep(SAMPLE_INTERVAL).await;
                    let written = records_written(&http, &url).await?;
                    if written > previous {
                        timeline.add((written - previous) as u64);
                        previous = written;
                        latest_written.store(written, Ordering::Relaxed);
                    }
                    if stopping {
                        return Ok(timeline.points());
                    }
                }
            }
        });
        Ok(WrittenRecordsSampler {
            stop,
            task,
            written_at_start,
            latest_written,
        })
    }

    /// Waits until the counter shows `expected_rows` more than at the start (at most
    /// [`FINAL_WAIT`]), then stops and returns the timeline.
    pub async fn finish(self, expected_rows: i64) -> Result<Vec<TimelinePoint>, String> {
        let waiting_since = Instant::now();
        while self.latest_written.load(Ordering::Relaxed) - self.written_at_start < expected_rows
            && waiting_since.elapsed() < FINAL_WAIT
            && !self.task.is_finished()
        {
            tokio::time::sleep(SAMPLE_INTERVAL / 5).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|_| "the written-records sampler stopped unexpectedly".to_string())?
    }
}

/// The sum of `ingest_records_written_total` over its labels.
async fn records_written(http: &reqwest::Client, url: &str) -> Result<i64, String> {
    let text = http
        .get(url)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|error| format!("reading {url} failed: {error}"))?
        .text()
        .await
        .map_err(|error| format!("reading {url} failed: {error}"))?;
    Ok(sum_of(&text, "ingest_records_written_total"))
}

/// Sums every sample of `name` in a Prometheus text exposition.
fn sum_of(text: &str, name: &str) -> i64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

#[cfg(test)]
mod tests {
    use super::sum_of;

    #[test]
    fn every_labelled_sample_of_the_counter_is_summed() {
        let text = "# HELP ingest_records_written_total x\n\
                    ingest_records_written_total{region=\"north\"} 10\n\
                    ingest_records_written_total{region=\"unassigned\"} 5\n\
                    ingest_records_written_total_other 99\n\
                    ingest_records_written 7\n";
        assert_eq!(sum_of(text, "ingest_records_written_total"), 15);
        assert_eq!(
            sum_of(
                "ingest_records_written_total 3\n",
                "ingest_records_written_total"
            ),
            3
        );
    }
}
