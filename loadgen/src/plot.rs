//! `plot`: SVG charts from one or more results files (`--out=<prefix>`
//! writes `<prefix>.json`). Several files go on the same axes, one series
//! each, so runs against different servers or configurations compare at a
//! glance.
//!
//! Charts:
//! - `push-latency.svg`, `connect-latency.svg`: the latency percentile
//!   spectrum (HdrHistogram style: the x axis stretches the tail, 90% ->
//!   99% -> 99.9% are equally spaced; log-scale latency on y).
//! - `throughput.svg`: messages received per second over time.
//! - `connections.svg`: open connections over time.
//! - `p99.svg`: the workers' highest p99 so far, over time.
//!
//! SVG only: it needs no font files (text is left to the viewer), so the
//! charts render the same on a headless CI host.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::cli::PlotArgs;
use crate::report::{SpectrumPoint, Summary};

const SIZE: (u32, u32) = (960, 540);
/// The spectrum's x axis: `log10(1 / (1 - q))`, capped where q = 1.
const NINES_MAX: f64 = 5.0;

/// Draw every chart the inputs have data for; returns the files written.
pub fn run(args: &PlotArgs) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        !args.inputs.is_empty(),
        "plot needs at least one results file"
    );
    let mut runs = args
        .inputs
        .iter()
        .map(|path| load(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The same file name from several directories (one per server, as
    // benches/compare writes them): label each run by its directory.
    let mut names: Vec<&str> = runs.iter().map(|(label, _)| label.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < runs.len() {
        for ((label, _), path) in runs.iter_mut().zip(&args.inputs) {
            if let Some(dir) = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|dir| dir.to_str())
            {
                *label = dir.to_owned();
            }
        }
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut written = Vec::new();
    for (file, title, pick) in [
        (
            "push-latency.svg",
            "publish-to-receive latency by percentile",
            (|summary: &Summary| &summary.push_spectrum) as fn(&Summary) -> &Vec<SpectrumPoint>,
        ),
        (
            "connect-latency.svg",
            "connect latency by percentile",
            |summary: &Summary| &summary.connect_spectrum,
        ),
    ] {
        let series = collect_series(&runs, |summary| {
            pick(summary)
                .iter()
                .map(|point| (nines(point.quantile), point.value_us.max(1) as f64 / 1000.0))
                .collect()
        });
        if series.is_empty() {
            continue;
        }
        let path = args.out_dir.join(file);
        draw_spectrum(&path, title, &series)?;
        written.push(path);
    }
    for (file, title, y_desc, pick) in [
        (
            "throughput.svg",
            "messages received per second",
            "msgs/s",
            (|point: &crate::report::TimelinePoint| point.msgs_per_s)
                as fn(&crate::report::TimelinePoint) -> f64,
        ),
        (
            "connections.svg",
            "open connections",
            "connections",
            |point| point.open as f64,
        ),
        (
            "p99.svg",
            "p99 so far (highest worker), ms",
            "ms",
            |point| point.p99_us_max as f64 / 1000.0,
        ),
    ] {
        let series = collect_series(&runs, |summary| {
            summary
                .timeline
                .iter()
                .map(|point| (point.t_s, pick(point)))
                .collect()
        });
        if series.is_empty() {
            continue;
        }
        let path = args.out_dir.join(file);
        draw_timeline(&path, title, y_desc, &series)?;
        written.push(path);
    }
    anyhow::ensure!(
        !written.is_empty(),
        "the results files hold no latency spectrum and no timeline (written by an older \
         ringcast-loadgen?)"
    );
    Ok(written)
}

/// One series per run that has points: (label, points).
fn collect_series(
    runs: &[(String, Summary)],
    points: impl Fn(&Summary) -> Vec<(f64, f64)>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    runs.iter()
        .map(|(label, summary)| (label.clone(), points(summary)))
        .filter(|(_, points)| !points.is_empty())
        .collect()
}

/// A run's label (the file name without `.json`) and its summary.
fn load(path: &Path) -> anyhow::Result<(String, Summary)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let summary: Summary = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ringcast-loadgen results file", path.display()))?;
    let label = path
        .file_name()
        .and_then(|name| name.to_str())
        .map(|name| name.trim_end_matches(".json").to_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((label, summary))
}

/// `q` on the spectrum's x axis: 0.9 -> 1, 0.99 -> 2, 0.999 -> 3.
fn nines(quantile: f64) -> f64 {
    if quantile >= 1.0 {
        return NINES_MAX;
    }
    (1.0 / (1.0 - quantile)).log10().min(NINES_MAX)
}

fn nines_label(x: &f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-*x));
    if *x < 0.5 {
        format!("{percent:.0}%")
    } else {
        let decimals = (x.round() as usize).saturating_sub(2);
        format!("{percent:.decimals$}%")
    }
}

fn draw_spectrum(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let (y_min, y_max) = bounds(series);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..NINES_MAX, (y_min / 1.5..y_max * 1.5).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(6)
        .x_label_formatter(&nines_label)
        .draw()
        .map_err(plot_error)?;
    draw_series(&mut chart, series)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_timeline(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let (_, y_max) = bounds(series);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..(y_max * 1.1).max(1.0))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .draw()
        .map_err(plot_error)?;
    draw_series(&mut chart, series)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_series<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (idx, (label, points)) in series.iter().enumerate() {
        let color = Palette99::pick(idx).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn bounds(series: &[(String, Vec<(f64, f64)>)]) -> (f64, f64) {
    let values = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, y)| *y));
    let min = values.clone().fold(f64::INFINITY, f64::min);
    let max = values.fold(0.0, f64::max);
    (
        if min.is_finite() && min > 0.0 {
            min
        } else {
            0.001
        },
        max.max(0.001),
    )
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(
    error: DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_spaces_the_tail_evenly() {
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), NINES_MAX);
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }
}
