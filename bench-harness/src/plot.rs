//! Plots, each written as SVG and PNG (`render.rs`): latency by percentile (one line per
//! profile, the percentile axis scaled like HdrHistogram's plotter: x = log10(1 / (1 - p)),
//! labelled 50 %, 90 %, 99 %, ...) and throughput bars per run and profile. The throughput
//! over time is in `plot_time.rs`.

use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::render::{self, PLOT_FONT};
use crate::results::RunResult;

/// Every plot's size in pixels (the SVG's and, at `render::PNG_SCALE` 1, the PNG's).
pub const PLOT_SIZE: (u32, u32) = (960, 600);
pub const TITLE_FONT_PX: u32 = 22;
pub const LABEL_FONT_PX: u32 = 16;
/// Up to 99.9999 % (x = 6) on the percentile axis.
const PERCENTILE_NINES_MAX: u32 = 6;
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// (percentile in [0, 1), value in ms) rows of an HdrHistogram percentile distribution file;
/// the 100 % row has no finite x and is left out.
pub fn read_hgrm(path: &Path) -> Result<Vec<(f64, f64)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_hgrm(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_hgrm(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("empty file")?;
    if !header.trim_start().starts_with("Value") {
        return Err(format!("not an hgrm header: {header}"));
    }
    let mut rows = Vec::new();
    for line in lines.filter(|line| !line.trim().is_empty() && !line.starts_with('#')) {
        let fields: Result<Vec<f64>, _> = line.split_whitespace().map(str::parse::<f64>).collect();
        let fields = fields.map_err(|e| format!("row '{line}': {e}"))?;
        match fields.as_slice() {
            [value_ms, percentile, _, _] if *percentile < 1.0 => {
                rows.push((*percentile, *value_ms))
            }
            [_, _, _] | [_, _, _, _] => {}
            _ => return Err(format!("row '{line}' has {} fields", fields.len())),
        }
    }
    Ok(rows)
}

/// The x coordinate of percentile `p`: log10(1 / (1 - p)).
pub fn percentile_x(p: f64) -> f64 {
    (1.0 / (1.0 - p)).log10()
}

/// The label of x: 50 % at log10(2), 90 % at 1, 99 % at 2, 99.9 % at 3 ...
pub fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-x));
    let nines = x.round() as i32;
    if (x - x.round()).abs() < 1e-9 && nines >= 2 {
        format!("{percent:.prec$}%", prec = (nines - 2) as usize)
    } else {
        format!("{percent:.0}%")
    }
}

/// The drawing area of one plot.
pub type Canvas<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws one plot with `draw` and writes it to `path` (SVG) and beside it as PNG.
pub fn write_plot(
    path: &Path,
    draw: impl FnOnce(&Canvas<'_>) -> Result<(), String>,
) -> Result<(), String> {
    render::register_plot_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        draw(&root)?;
        root.present().map_err(svg_error(path))?;
    }
    render::write_svg_and_png(path, &svg).map(|_| ())
}

/// A linear axis whose ticks are exactly the given key points (plotters' `WithKeyPoints`
/// over f64 lacks a default formatter, which the mesh needs).
pub struct KeyedAxis {
    pub range: std::ops::Range<f64>,
    pub keys: Vec<f64>,
}

impl Ranged for KeyedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.keys.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

pub fn svg_error<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> String + '_ {
    move |e| format!("plotting {}: {e:?}", path.display())
}

/// One line per profile: `lines` is (profile, rows of (percentile, ms)).
pub fn latency_plot(
    path: &Path,
    title: &str,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let error = svg_error(path);
    let x_max = lines
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|&(p, _)| percentile_x(p)))
        .fold(1.0f64, f64::max)
        .ceil()
        .min(f64::from(PERCENTILE_NINES_MAX));
    let y_max = lines
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|&(_, ms)| ms))
        .fold(0.001f64, f64::max)
        * 1.05;
    let mut key_points = vec![0.0, percentile_x(0.5)];
    key_points.extend((1..=x_max as u32).map(f64::from));
    write_plot(path, |root| {
        root.fill(&WHITE).map_err(&error)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (PLOT_FONT, TITLE_FONT_PX))
            .margin(16)
            .margin_right(48)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(
                KeyedAxis {
                    range: 0.0..x_max,
                    keys: key_points,
                },
                0.0..y_max,
            )
            .map_err(&error)?;
        chart
            .configure_mesh()
            .label_style((PLOT_FONT, LABEL_FONT_PX))
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .draw()
            .map_err(&error)?;
        for (index, (profile, rows)) in lines.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points = rows
                .iter()
                .map(|&(p, ms)| (percentile_x(p), ms))
                .filter(|&(x, _)| x <= x_max);
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(&error)?
                .label(profile.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft).map_err(&error)
    })
}

/// Grouped bars: one group per run, one bar per profile, height = msg/s.
pub fn throughput_plot(path: &Path, title: &str, results: &[RunResult]) -> Result<(), String> {
    let error = svg_error(path);
    let mut runs: Vec<&str> = Vec::new();
    let mut profiles: Vec<&str> = Vec::new();
    for result in results {
        if !runs.contains(&result.run.as_str()) {
            runs.push(&result.run);
        }
        if !profiles.contains(&result.profile.as_str()) {
            profiles.push(&result.profile);
        }
    }
    let y_max = results
        .iter()
        .map(|r| r.throughput_messages_per_s)
        .fold(1.0f64, f64::max)
        * 1.1;
    let group_width = profiles.len() as f64 + 1.0;
    let x_max = group_width * runs.len() as f64;
    let centres: Vec<f64> = (0..runs.len())
        .map(|i| i as f64 * group_width + group_width / 2.0)
        .collect();
    write_plot(path, |root| {
        root.fill(&WHITE).map_err(&error)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (PLOT_FONT, TITLE_FONT_PX))
            .margin(16)
            .margin_right(48)
            .x_label_area_size(48)
            .y_label_area_size(88)
            .build_cartesian_2d(
                KeyedAxis {
                    range: 0.0..x_max,
                    keys: centres.clone(),
                },
                0.0..y_max,
            )
            .map_err(&error)?;
        let label_of = |x: &f64| {
            centres
                .iter()
                .position(|c| (c - x).abs() < 1e-6)
                .map_or(String::new(), |i| runs[i].to_string())
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .label_style((PLOT_FONT, LABEL_FONT_PX))
            .x_desc("run")
            .y_desc("acknowledged msg/s")
            .x_label_formatter(&label_of)
            .draw()
            .map_err(&error)?;
        for (index, profile) in profiles.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let bars = results
                .iter()
                .filter(|r| r.profile == *profile)
                .filter_map(|r| {
                    let group = runs.iter().position(|run| *run == r.run)? as f64;
                    let left = group * group_width + 0.5 + index as f64;
                    Some(Rectangle::new(
                        [(left, 0.0), (left + 0.9, r.throughput_messages_per_s)],
                        colour.filled(),
                    ))
                });
            chart
                .draw_series(bars)
                .map_err(&error)?
                .label(*profile)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(&error)
    })
}

/// Every plot's legend: the plot font, on a translucent white box with a black border.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .label_font((PLOT_FONT, LABEL_FONT_PX))
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::run_result;

    const HGRM: &str = "       Value     Percentile TotalCount 1/(1-Percentile)\n\n\
        0.100 0.000000000000          1           1.00\n\
        0.500 0.500000000000        500           2.00\n\
        0.900 0.900000000000        900          10.00\n\
        2.000 0.990000000000        990         100.00\n\
        5.000 1.000000000000       1000\n\
        #[Mean    =        0.500, StdDeviation   =        0.100]\n\
        #[Max     =        5.000, Total count    =         1000]\n";

    #[test]
    fn hgrm_rows_are_read_without_the_hundred_percent_row() {
        let rows = parse_hgrm(HGRM).expect("parses");
        assert_eq!(rows, [(0.0, 0.1), (0.5, 0.5), (0.9, 0.9), (0.99, 2.0)]);
        assert!(parse_hgrm("nonsense\n1 2\n").is_err());
    }

    #[test]
    fn percentile_axis_labels_read_like_hdr_histogram_plots() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(percentile_x(0.5)), "50%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn plots_are_written_as_svg_and_png_of_the_plot_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = parse_hgrm(HGRM).expect("parses");
        let latency = dir.path().join("latency.svg");
        latency_plot(
            &latency,
            "t",
            &[("latency".into(), rows.clone()), ("durable".into(), rows)],
        )
        .expect("plots");
        let throughput = dir.path().join("throughput.svg");
        let results = [
            run_result("latency", "rate-20000", 500),
            run_result("durable", "rate-20000", 600),
            run_result("latency", "max", 700),
        ];
        throughput_plot(&throughput, "t", &results).expect("plots");
        for path in [latency, throughput] {
            let svg = std::fs::read_to_string(&path).expect("written");
            assert!(svg.starts_with("<svg"), "{svg}");
            assert!(svg.contains("latency") && svg.contains("durable"), "{svg}");
            let png = std::fs::read(path.with_extension("png")).expect("png written");
            assert!(png.len() > 1000, "{} bytes", png.len());
            assert_eq!(crate::render::png_dimensions(&png), Some(PLOT_SIZE));
        }
    }
}
