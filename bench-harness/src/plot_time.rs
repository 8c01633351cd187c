//! Throughput over time: messages/s in each second of a run (the load generator's
//! `results.timeline`), one colour per profile, produce as a solid line and consume as a
//! dashed one. For scenarios whose runs are phases on one broker (`spike`), the phases are
//! laid end to end on one time axis, each boundary marked.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{draw_legend, svg_error, write_plot, LABEL_FONT_PX, TITLE_FONT_PX};
use crate::render::PLOT_FONT;
use crate::results::TimelinePoint;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
/// Dash and gap of the consume lines, in pixels.
const DASH_PX: u32 = 8;
const GAP_PX: u32 = 5;
/// Head room above the highest rate, and more per legend entry: the legend sits in the
/// upper right, above the lines.
const Y_HEADROOM: f64 = 1.15;
const Y_HEADROOM_PER_LEGEND_ENTRY: f64 = 0.08;

/// One profile's line pair: its name and its samples.
pub struct ProfileTimeline {
    pub profile: String,
    pub points: Vec<TimelinePoint>,
}

/// The runs of one profile laid end to end: each run's samples shifted by the time where
/// the previous run's samples ended. Returns the points and the start of every run after
/// the first (the phase boundaries).
pub fn concatenate(runs: &[&[TimelinePoint]]) -> (Vec<TimelinePoint>, Vec<f64>) {
    let mut points = Vec::new();
    let mut boundaries = Vec::new();
    let mut offset_s = 0.0;
    for (index, run) in runs.iter().enumerate() {
        if index > 0 {
            boundaries.push(offset_s);
        }
        points.extend(run.iter().map(|point| TimelinePoint {
            elapsed_s: point.elapsed_s + offset_s,
            ..point.clone()
        }));
        offset_s += run.last().map_or(0.0, |last| last.elapsed_s);
    }
    (points, boundaries)
}

/// Points of a line: (seconds, msg/s).
pub type Series = Vec<(f64, f64)>;

/// The series of produce and of consume.
pub fn series(points: &[TimelinePoint]) -> (Series, Series) {
    let produce = points
        .iter()
        .map(|p| (p.elapsed_s, p.produce_messages_per_s))
        .collect();
    let consume = points
        .iter()
        .map(|p| (p.elapsed_s, p.consume_messages_per_s))
        .collect();
    (produce, consume)
}

/// Writes the plot to `path` (SVG) and its PNG; `boundaries` are marked with grey lines.
pub fn throughput_time_plot(
    path: &Path,
    title: &str,
    lines: &[ProfileTimeline],
    boundaries: &[f64],
) -> Result<(), String> {
    let error = svg_error(path);
    let x_max = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|p| p.elapsed_s))
        .fold(1.0f64, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|line| {
            line.points
                .iter()
                .map(|p| p.produce_messages_per_s.max(p.consume_messages_per_s))
        })
        .fold(1.0f64, f64::max)
        * (Y_HEADROOM + Y_HEADROOM_PER_LEGEND_ENTRY * (2 * lines.len()) as f64);
    write_plot(path, |root| {
        root.fill(&WHITE).map_err(&error)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (PLOT_FONT, TITLE_FONT_PX))
            .margin(16)
            .margin_right(48)
            .x_label_area_size(48)
            .y_label_area_size(88)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(&error)?;
        chart
            .configure_mesh()
            .label_style((PLOT_FONT, LABEL_FONT_PX))
            .x_desc("seconds since the producers started")
            .y_desc("messages/s")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(&error)?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(
                boundaries
                    .iter()
                    .map(|&x| PathElement::new(vec![(x, 0.0), (x, y_max)], grey.stroke_width(1))),
            )
            .map_err(&error)?;
        for (index, line) in lines.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let (produce, consume) = series(&line.points);
            chart
                .draw_series(LineSeries::new(produce, colour.stroke_width(2)))
                .map_err(&error)?
                .label(format!("{} produce", line.profile))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(DashedLineSeries::new(
                    consume,
                    DASH_PX,
                    GAP_PX,
                    colour.stroke_width(1),
                ))
                .map_err(&error)?
                .label(format!("{} consume", line.profile))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(1))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight).map_err(&error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::png_dimensions;

    fn point(elapsed_s: f64, produce: f64, consume: f64) -> TimelinePoint {
        TimelinePoint {
            elapsed_s,
            phase: "measure".into(),
            produce_messages_per_s: produce,
            consume_messages_per_s: consume,
        }
    }

    #[test]
    fn phases_are_laid_end_to_end_with_their_boundaries() {
        let before = [point(1.0, 10.0, 9.0), point(2.0, 10.0, 11.0)];
        let spike = [point(1.0, 100.0, 90.0), point(2.5, 100.0, 100.0)];
        let after = [point(1.0, 10.0, 10.0)];
        let (points, boundaries) = concatenate(&[&before, &spike, &after]);
        let times: Vec<f64> = points.iter().map(|p| p.elapsed_s).collect();
        assert_eq!(times, [1.0, 2.0, 3.0, 4.5, 5.5]);
        assert_eq!(boundaries, [2.0, 4.5]);
        let (produce, consume) = series(&points);
        assert_eq!(produce[2], (3.0, 100.0));
        assert_eq!(consume[4], (5.5, 10.0));
        assert_eq!(concatenate(&[]).0, []);
    }

    #[test]
    fn throughput_over_time_is_written_as_svg_and_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("throughput-time.svg");
        let lines = [
            ProfileTimeline {
                profile: "latency".into(),
                points: vec![point(1.0, 5_000.0, 4_900.0), point(2.0, 50_000.0, 40_000.0)],
            },
            ProfileTimeline {
                profile: "durable".into(),
                points: vec![point(1.0, 4_000.0, 4_000.0), point(2.0, 30_000.0, 30_000.0)],
            },
        ];
        throughput_time_plot(&path, "throughput over time", &lines, &[1.5]).expect("plots");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(
            svg.starts_with("<svg") && svg.contains("latency produce"),
            "{svg}"
        );
        assert!(svg.contains("durable consume"), "{svg}");
        let png = std::fs::read(path.with_extension("png")).expect("png");
        assert_eq!(png_dimensions(&png), Some(crate::plot::PLOT_SIZE));
    }
}
