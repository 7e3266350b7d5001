//! The SVG chart written next to each JSON report: records per second over time (the engine,
//! and the plain-COPY baseline when one ran), and the latency percentiles of each endpoint.
//!
//! SVG only, through plotters' SVG backend: text is emitted as SVG `<text>`, so no font or
//! system library is needed to draw it.

use std::path::Path;

use plotters::prelude::*;

use crate::report::number_en;
use crate::statistics::{LatencyHistogram, TimelinePoint, CHART_QUANTILES};

const CHART_SIZE: (u32, u32) = (1200, 960);

/// One line of the throughput panel.
pub struct TimelineSeries<'a> {
    pub name: String,
    pub points: &'a [TimelinePoint],
}

/// Draws the chart into `path`.
pub fn write_chart(
    path: &Path,
    title: &str,
    timelines: &[TimelineSeries<'_>],
    latencies: &[(String, LatencyHistogram)],
) -> Result<(), String> {
    draw(path, title, timelines, latencies)
        .map_err(|error| format!("drawing the chart {} failed: {error}", path.display()))
}

/// A chart of several quantities over time, one panel each (the `soak` scenario's resources).
pub fn write_resource_chart(
    path: &Path,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), String> {
    draw_resources(path, title, series)
        .map_err(|error| format!("drawing the chart {} failed: {error}", path.display()))
}

fn draw_resources(
    path: &Path,
    title: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((series.len().max(1), 1));
    for (index, ((name, points), panel)) in series.iter().zip(panels.iter()).enumerate() {
        let longest = points.iter().map(|(second, _)| *second).fold(1.0, f64::max);
        let highest = points.iter().map(|(_, value)| *value).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(*name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..longest, 0f64..highest * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds / giây")
            .y_label_formatter(&|value: &f64| number_en(*value, 1))
            .draw()?;
        let color = Palette99::pick(index).to_rgba();
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

fn draw(
    path: &Path,
    title: &str,
    timelines: &[TimelineSeries<'_>],
    latencies: &[(String, LatencyHistogram)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (upper, lower) = root.split_vertically(CHART_SIZE.1 / 2 - 20);
    draw_throughput(&upper, timelines)?;
    draw_latencies(&lower, latencies)?;
    root.present()?;
    Ok(())
}

fn draw_throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    timelines: &[TimelineSeries<'_>],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let longest_seconds = timelines
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.second + 1))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let highest_rate = timelines
        .iter()
        .flat_map(|series| series.points.iter().map(|point| point.records))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Records written per second / Số bản ghi được ghi mỗi giây",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..longest_seconds, 0f64..highest_rate * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start / giây kể từ lúc bắt đầu")
        .y_desc("records/s")
        .y_label_formatter(&|records: &f64| number_en(*records, 0))
        .draw()?;
    for (index, series) in timelines.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        // A record counted in second n is drawn at n + 0.5, the middle of its bucket.
        let points = series
            .points
            .iter()
            .map(|point| (point.second as f64 + 0.5, point.records as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(series.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if !timelines.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    Ok(())
}

fn draw_latencies<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    latencies: &[(String, LatencyHistogram)],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let drawn: Vec<&(String, LatencyHistogram)> = latencies
        .iter()
        .filter(|(_, histogram)| histogram.count() > 0)
        .collect();
    let slowest_ms = drawn
        .iter()
        .map(|(_, histogram)| histogram.quantile_ms(1.0))
        .fold(1.0_f64, f64::max);
    let fastest_ms = drawn
        .iter()
        .map(|(_, histogram)| histogram.quantile_ms(0.5))
        .fold(slowest_ms, f64::min)
        .max(0.01);
    let last_quantile = (CHART_QUANTILES.len() - 1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency percentiles of successful requests (ms, log scale) / Phân vị độ trễ (ms)",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(
            -0.2f64..last_quantile + 0.2,
            // log10 of milliseconds on a linear axis: plotters' own log axis labels only
            // powers of ten, which leaves one label or none when latencies span one decade.
            (fastest_ms / 1.5).log10()..(slowest_ms * 1.5).log10(),
        )?;
    chart
        .configure_mesh()
        .x_labels(CHART_QUANTILES.len())
        .x_label_formatter(&|position: &f64| {
            let position = *position;
            let index = position.round();
            if (position - index).abs() > 0.01 || index < 0.0 {
                return String::new();
            }
            CHART_QUANTILES
                .get(index as usize)
                .map(|(_, label)| label.to_string())
                .unwrap_or_default()
        })
        .x_desc("percentile / phân vị")
        .y_desc("ms")
        .y_labels(10)
        .y_label_formatter(&|log_ms: &f64| milliseconds_label(10f64.powf(*log_ms)))
        .draw()?;
    for (index, (name, histogram)) in drawn.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points: Vec<(f64, f64)> = CHART_QUANTILES
            .iter()
            .enumerate()
            .map(|(position, (quantile, _))| {
                let milliseconds = histogram.quantile_ms(*quantile).max(0.01);
                (position as f64, milliseconds.log10())
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{name} (n = {})", histogram.count()))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, 3, color.filled())),
        )?;
    }
    if !drawn.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    Ok(())
}

/// A latency axis label: whole milliseconds from 100 ms, fewer digits lost below.
fn milliseconds_label(milliseconds: f64) -> String {
    if milliseconds >= 100.0 {
        number_en(milliseconds, 0)
    } else if milliseconds >= 1.0 {
        number_en(milliseconds, 1)
    } else {
        number_en(milliseconds, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statistics::TimelinePoint;
    use std::time::Duration;

    #[test]
    fn a_chart_is_drawn_without_any_font_or_system_library() {
        let mut narrow = LatencyHistogram::new();
        let mut wide = LatencyHistogram::new();
        for step in 0..500u64 {
            narrow.record(Duration::from_millis(2_000 + step * 15));
            wide.record(Duration::from_micros(300 + step * step * 40));
        }
        let points: Vec<TimelinePoint> = (0..20)
            .map(|second| TimelinePoint {
                second,
                records: 40_000 + second * 1_000,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("loadtest-chart-{}.svg", std::process::id()));
        let outcome = write_chart(
            &path,
            "loadtest — biểu đồ thử",
            &[TimelineSeries {
                name: "engine".to_string(),
                points: &points,
            }],
            &[("narrow".to_string(), narrow), ("wide".to_string(), wide)],
        );
        let svg = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        assert_eq!(outcome, Ok(()));
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("biểu đồ thử"));
        assert!(svg.contains("p99.9"));
    }
}
