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
//! - `p99.svg`: the workers' highest p99 so far, over time (a log axis
//!   when the values span two decades or more).
//!
//! With several series the legend is a column right of the plot, never
//! over the data; tick labels carry units (`12 ms`, `1.6M/s`). The same
//! renderers draw the HTML report's charts (`html.rs`).
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
        write(&path, &spectrum_svg(title, &series)?)?;
        written.push(path);
    }
    for (file, title, unit, scale, pick) in [
        (
            "throughput.svg",
            "messages received per second",
            Unit::PerSecond,
            Scale::Linear,
            (|point: &crate::report::TimelinePoint| point.msgs_per_s)
                as fn(&crate::report::TimelinePoint) -> f64,
        ),
        (
            "connections.svg",
            "open connections",
            Unit::Count,
            Scale::Linear,
            |point| point.open as f64,
        ),
        (
            "p99.svg",
            "p99 so far (highest worker)",
            Unit::Ms,
            Scale::Auto,
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
        write(&path, &timeline_svg(title, unit, scale, &series)?)?;
        written.push(path);
    }
    anyhow::ensure!(
        !written.is_empty(),
        "the results files hold no latency spectrum and no timeline (written by an older \
         ringcast-loadgen?)"
    );
    Ok(written)
}

fn write(path: &Path, svg: &str) -> anyhow::Result<()> {
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
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
pub fn nines(quantile: f64) -> f64 {
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

/// What a chart's y values are, for tick labels with units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds: `250 µs`, `12 ms`, `1.5 s`.
    Ms,
    /// Per second: `950/s`, `12k/s`, `1.6M/s`.
    PerSecond,
    /// A plain count: `950`, `12k`, `1.6M`.
    Count,
    /// Percent: `45%`.
    Percent,
    /// Mebibytes: `150 MiB`, `1.2 GiB`.
    Mib,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Ms if value >= 1000.0 => format!("{} s", short(value / 1000.0)),
            Unit::Ms if value >= 1.0 || value == 0.0 => format!("{} ms", short(value)),
            Unit::Ms => format!("{} µs", short(value * 1000.0)),
            Unit::PerSecond => format!("{}/s", short(value)),
            Unit::Count => short(value),
            Unit::Percent => format!("{}%", short(value)),
            Unit::Mib if value >= 1024.0 => format!("{} GiB", short(value / 1024.0)),
            Unit::Mib => format!("{} MiB", short(value)),
        }
    }
}

/// `1600000` -> `1.6M`, `12000` -> `12k`, `0.25` -> `0.25`: no trailing
/// zeros, at most 3 significant digits below 1000.
pub fn short(value: f64) -> String {
    let trim = |text: String| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    let abs = value.abs();
    if abs >= 1e6 {
        format!("{}M", trim(format!("{:.2}", value / 1e6)))
    } else if abs >= 1e3 {
        format!("{}k", trim(format!("{:.1}", value / 1e3)))
    } else if abs >= 10.0 || abs == 0.0 {
        trim(format!("{value:.1}"))
    } else {
        trim(format!("{value:.2}"))
    }
}

/// The y axis of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Logarithmic where the positive values span two decades or more
    /// (one slow server would flatten every other to zero), else linear.
    Auto,
}

type Series = (String, Vec<(f64, f64)>);

const LEGEND_WIDTH: u32 = 200;
/// Tick labels and axis names (plotters' default is hard to read).
const LABEL_FONT: (&str, u32) = ("sans-serif", 15);
/// The minor grid: faint, so the series stand out.
const LIGHT_GRID: RGBColor = RGBColor(245, 245, 245);
/// Room right of the plot so the last x label is not cut off.
const RIGHT_MARGIN: u32 = 36;

/// Render into an SVG string (for the files of `plot` and the HTML report).
fn render(
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        draw(&root)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// The title on top, and with several series a legend column at the right,
/// outside the plot, so it never covers data.
fn layout<'a>(
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> anyhow::Result<DrawingArea<SVGBackend<'a>, plotters::coord::Shift>> {
    let body = root.titled(title, ("sans-serif", 20)).map_err(plot_error)?;
    if series.len() < 2 {
        return Ok(body);
    }
    let (plot, legend) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    for (idx, (label, _)) in series.iter().enumerate() {
        let color = Palette99::pick(idx).to_rgba();
        let y = 30 + 24 * idx as i32;
        legend
            .draw(&PathElement::new(
                vec![(4, y), (28, y)],
                color.stroke_width(3),
            ))
            .map_err(plot_error)?;
        // Long labels (file names) are cut so they stay in the column.
        let text: String = if label.chars().count() > 22 {
            label.chars().take(21).chain(std::iter::once('…')).collect()
        } else {
            label.clone()
        };
        legend
            .draw(&Text::new(
                text,
                (34, y - 8),
                ("sans-serif", 15).into_font().color(&BLACK),
            ))
            .map_err(plot_error)?;
    }
    Ok(plot)
}

/// A latency percentile spectrum: x in nines (see `nines`), y in ms on a
/// log axis.
pub fn spectrum_svg(title: &str, series: &[Series]) -> anyhow::Result<String> {
    let (y_min, y_max) = bounds(series);
    render(|root| {
        let area = layout(root, title, series)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .margin_right(RIGHT_MARGIN)
            .x_label_area_size(44)
            .y_label_area_size(84)
            .build_cartesian_2d(0f64..NINES_MAX, (y_min / 1.5..y_max * 1.5).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .x_labels(6)
            .x_label_formatter(&nines_label)
            .label_style(LABEL_FONT)
            .axis_desc_style(LABEL_FONT)
            .light_line_style(LIGHT_GRID)
            .y_label_formatter(&|v| Unit::Ms.format(*v))
            .draw()
            .map_err(plot_error)?;
        draw_lines(&mut chart, series)
    })
}

/// Values over the run's seconds.
pub fn timeline_svg(
    title: &str,
    unit: Unit,
    scale: Scale,
    series: &[Series],
) -> anyhow::Result<String> {
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max);
    let (y_min, y_max) = bounds(series);
    let log = scale == Scale::Auto && y_max / y_min >= 100.0;
    render(|root| {
        let area = layout(root, title, series)?;
        let mut builder = ChartBuilder::on(&area);
        builder
            .margin(12)
            .margin_right(RIGHT_MARGIN)
            .x_label_area_size(44)
            .y_label_area_size(84);
        let x_format = |x: &f64| format!("{} s", short(*x));
        let y_format = |y: &f64| unit.format(*y);
        if log {
            // A log axis has no zero: points at zero (nothing measured yet)
            // are left out rather than drawn at the floor.
            let positive: Vec<Series> = series
                .iter()
                .map(|(label, points)| {
                    let points = points.iter().copied().filter(|(_, y)| *y > 0.0).collect();
                    (label.clone(), points)
                })
                .collect();
            let mut chart = builder
                .build_cartesian_2d(0f64..x_max, (y_min / 1.5..y_max * 1.5).log_scale())
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("time into the run")
                .x_label_formatter(&x_format)
                .label_style(LABEL_FONT)
                .axis_desc_style(LABEL_FONT)
                .light_line_style(LIGHT_GRID)
                .y_label_formatter(&y_format)
                .draw()
                .map_err(plot_error)?;
            draw_lines(&mut chart, &positive)
        } else {
            let mut chart = builder
                .build_cartesian_2d(0f64..x_max, 0f64..(y_max * 1.1).max(1.0))
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc("time into the run")
                .x_label_formatter(&x_format)
                .label_style(LABEL_FONT)
                .axis_desc_style(LABEL_FONT)
                .light_line_style(LIGHT_GRID)
                .y_label_formatter(&y_format)
                .draw()
                .map_err(plot_error)?;
            draw_lines(&mut chart, series)
        }
    })
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (idx, (_, points)) in series.iter().enumerate() {
        let color = Palette99::pick(idx).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?;
    }
    Ok(())
}

/// The smallest positive and the largest y over every series.
fn bounds(series: &[Series]) -> (f64, f64) {
    let values = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, y)| *y));
    let min = values
        .clone()
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max = values.fold(0.0, f64::max);
    (if min.is_finite() { min } else { 0.001 }, max.max(0.001))
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

    #[test]
    fn tick_labels_carry_units() {
        assert_eq!(Unit::PerSecond.format(1_600_000.0), "1.6M/s");
        assert_eq!(Unit::PerSecond.format(10_000.0), "10k/s");
        assert_eq!(Unit::PerSecond.format(950.0), "950/s");
        assert_eq!(Unit::Count.format(12_500.0), "12.5k");
        assert_eq!(Unit::Ms.format(30_000.0), "30 s");
        assert_eq!(Unit::Ms.format(12.0), "12 ms");
        assert_eq!(Unit::Ms.format(0.25), "250 µs");
        assert_eq!(Unit::Ms.format(0.0), "0 ms");
        assert_eq!(Unit::Percent.format(45.0), "45%");
        assert_eq!(Unit::Mib.format(2048.0), "2 GiB");
        assert_eq!(short(1.25), "1.25");
    }

    fn two_series(slow: f64) -> Vec<Series> {
        vec![
            ("fast".to_owned(), vec![(0.0, 0.0), (1.0, 2.0), (2.0, 3.0)]),
            (
                "slow".to_owned(),
                vec![(0.0, 0.0), (1.0, slow), (2.0, slow)],
            ),
        ]
    }

    /// Every `<text>` of an SVG: (x, content).
    fn texts(svg: &str) -> Vec<(f64, String)> {
        svg.split("<text")
            .skip(1)
            .map(|rest| {
                let x = rest
                    .split("x=\"")
                    .nth(1)
                    .and_then(|x| x.split('"').next())
                    .and_then(|x| x.parse().ok())
                    .expect("text has an x");
                let body = &rest[rest.find('>').expect("tag ends") + 1..];
                let body = &body[..body.find("</text>").expect("text closes")];
                (x, body.trim().to_owned())
            })
            .collect()
    }

    fn labels(svg: &str) -> Vec<String> {
        texts(svg).into_iter().map(|(_, text)| text).collect()
    }

    #[test]
    fn p99_over_decades_gets_a_log_axis_with_units() {
        let svg = timeline_svg("p99", Unit::Ms, Scale::Auto, &two_series(30_000.0)).unwrap();
        let log = labels(&svg);
        // Log ticks step by decades, each with its unit.
        for tick in ["10 ms", "100 ms", "1 s", "10 s"] {
            assert!(log.iter().any(|l| l == tick), "{tick} in {log:?}");
        }
        let linear = labels(&timeline_svg("p99", Unit::Ms, Scale::Auto, &two_series(4.0)).unwrap());
        assert!(linear.iter().any(|l| l == "0 ms"), "{linear:?}");
        assert!(!linear.iter().any(|l| l == "10 ms"), "{linear:?}");
        // Throughput ticks read k/s, never `10000.0`.
        let rate = labels(
            &timeline_svg(
                "t",
                Unit::PerSecond,
                Scale::Linear,
                &two_series(1_600_000.0),
            )
            .unwrap(),
        );
        assert!(rate.iter().any(|l| l.ends_with("M/s")), "{rate:?}");
        assert!(!rate.iter().any(|l| l.ends_with(".0")), "{rate:?}");
    }

    #[test]
    fn legend_sits_right_of_the_plot_and_the_last_x_label_fits() {
        let svg = timeline_svg("x", Unit::Count, Scale::Linear, &two_series(5.0)).unwrap();
        let all = texts(&svg);
        for label in ["fast", "slow"] {
            let (x, _) = all.iter().find(|(_, t)| t == label).expect("legend label");
            assert!(*x >= f64::from(SIZE.0 - LEGEND_WIDTH), "{label} at x={x}");
        }
        // The last x tick (`2 s`, centred on its x) ends left of the legend
        // column, with room for its half width.
        let (x, _) = all.iter().find(|(_, t)| t == "2 s").expect("last x tick");
        assert!(
            *x + 20.0 <= f64::from(SIZE.0 - LEGEND_WIDTH),
            "last x label at {x}"
        );
        // One series: no legend at all (the title names it), and the last
        // x label stays inside the picture.
        let one =
            texts(&timeline_svg("x", Unit::Count, Scale::Linear, &two_series(5.0)[..1]).unwrap());
        assert!(!one.iter().any(|(_, t)| t == "fast"));
        let (x, _) = one.iter().find(|(_, t)| t == "2 s").expect("last x tick");
        assert!(*x + 20.0 <= f64::from(SIZE.0), "last x label at {x}");
    }
}
