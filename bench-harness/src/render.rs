//! Every plot is drawn once as SVG (plotters) and written twice: the SVG, and a PNG of it
//! rasterised by resvg. Both use one font, DejaVu Sans, embedded in the binary
//! (`bench-harness/fonts/`, Bitstream Vera licence, which allows redistribution): plotters
//! lays text out with its metrics (feature `ab_glyph`) and resvg draws it, so neither needs
//! a system font, fontconfig or a C library, and the PNG looks the same on every machine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use plotters::style::FontStyle;
use resvg::{tiny_skia, usvg};

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); its licence is `fonts/LICENSE-DejaVu.txt`.
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
/// The font's family name, as resvg's font database knows it.
const FONT_FAMILY: &str = "DejaVu Sans";
/// The family the plots ask for: plotters writes it into the SVG, and both plotters and
/// resvg map it to the embedded font.
pub const PLOT_FONT: &str = "sans-serif";
/// PNG pixels per SVG pixel.
pub const PNG_SCALE: f32 = 1.0;

/// Registers the embedded font with plotters (once per process); plotting without it fails
/// with `FontUnavailable`.
pub fn register_plot_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(PLOT_FONT, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the embedded DejaVu Sans is not a valid font".to_string())
        })
        .clone()
}

/// resvg's options with only the embedded font (no system fonts are looked at).
fn options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut fonts = usvg::fontdb::Database::new();
        fonts.load_font_data(FONT_BYTES.to_vec());
        fonts.set_sans_serif_family(FONT_FAMILY);
        usvg::Options {
            font_family: FONT_FAMILY.to_string(),
            fontdb: Arc::new(fonts),
            ..usvg::Options::default()
        }
    })
}

/// `svg` drawn on a white pixmap.
fn rasterise(svg: &str) -> Result<tiny_skia::Pixmap, String> {
    let tree = usvg::Tree::from_str(svg, options()).map_err(|e| format!("parsing SVG: {e}"))?;
    let size = tree.size().to_int_size();
    let width = (size.width() as f32 * PNG_SCALE).ceil() as u32;
    let height = (size.height() as f32 * PNG_SCALE).ceil() as u32;
    let mut pixmap = tiny_skia::Pixmap::new(width, height)
        .ok_or_else(|| format!("no {width}x{height} pixmap"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap)
}

/// A PNG of `svg`: (PNG bytes, width, height).
pub fn svg_to_png(svg: &str) -> Result<(Vec<u8>, u32, u32), String> {
    let pixmap = rasterise(svg)?;
    let (width, height) = (pixmap.width(), pixmap.height());
    let png = pixmap
        .encode_png()
        .map_err(|e| format!("encoding PNG: {e}"))?;
    Ok((png, width, height))
}

/// Writes `svg` to `svg_path` and its PNG beside it (same name, `.png`); returns the PNG's
/// path.
pub fn write_svg_and_png(svg_path: &Path, svg: &str) -> Result<PathBuf, String> {
    std::fs::write(svg_path, svg).map_err(|e| format!("writing {}: {e}", svg_path.display()))?;
    let png_path = svg_path.with_extension("png");
    let (png, _, _) = svg_to_png(svg).map_err(|e| format!("{}: {e}", png_path.display()))?;
    std::fs::write(&png_path, png).map_err(|e| format!("writing {}: {e}", png_path.display()))?;
    Ok(png_path)
}

/// Width and height from a PNG's IHDR chunk (bytes 16..24 after the signature and the
/// chunk header); `None` for anything that is not a PNG.
#[cfg(test)]
pub fn png_dimensions(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];
    if png.get(..8)? != SIGNATURE || png.get(12..16)? != b"IHDR" {
        return None;
    }
    let word = |at: usize| Some(u32::from_be_bytes(png.get(at..at + 4)?.try_into().ok()?));
    Some((word(16)?, word(20)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_text_is_rasterised_with_the_embedded_font() {
        register_plot_font().expect("registers");
        let blank = r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="50">
            <rect width="200" height="50" fill="white"/></svg>"#;
        let text = blank.replace(
            "</svg>",
            r#"<text x="10" y="35" font-family="sans-serif" font-size="24">p99.9 ms</text></svg>"#,
        );
        let dark_pixels = |svg: &str| {
            let pixmap = rasterise(svg).expect("renders");
            pixmap.pixels().iter().filter(|p| p.red() < 128).count()
        };
        assert_eq!(dark_pixels(blank), 0);
        // Without a font resvg would skip the text: dark pixels mean it found DejaVu Sans.
        assert!(dark_pixels(&text) > 100, "{}", dark_pixels(&text));
        let (png, width, height) = svg_to_png(&text).expect("renders");
        assert_eq!((width, height), (200, 50));
        assert_eq!(png_dimensions(&png), Some((200, 50)));
        assert_eq!(png_dimensions(b"GIF89a not a png"), None);
    }
}
