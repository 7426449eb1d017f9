//! QR codes for pairing tickets: drawn in the terminal, written as PNG, read back from PNG.

use std::{fs::File, io::BufWriter, path::Path};

use anyhow::{Context as _, bail};
use qrcode::{EcLevel, QrCode, render::unicode::Dense1x2};

/// Pixels per QR module in PNG files.
const SCALE: usize = 8;
/// Blank modules around the code (the standard asks for four).
const QUIET_ZONE: usize = 4;

fn code(text: &str) -> anyhow::Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .context("cannot make a QR code")
}

/// The code as Unicode half blocks, light on dark so it scans from a dark terminal too.
pub(crate) fn terminal(text: &str) -> anyhow::Result<String> {
    Ok(code(text)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Writes the code as a black-on-white greyscale PNG.
pub(crate) fn write_png(text: &str, path: &Path) -> anyhow::Result<()> {
    let code = code(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (index % modules + QUIET_ZONE, index / modules + QUIET_ZONE);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(())
}

/// Reads the text of the first QR code found in a PNG file.
pub(crate) fn read_png(path: &Path) -> anyhow::Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a PNG image", path.display()))?;
    let mut buffer = vec![0; reader.output_buffer_size().context("image too large")?];
    let info = reader.next_frame(&mut buffer)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let grey = |x: usize, y: usize| -> u8 {
        let at = (y * width + x) * channels;
        match channels {
            1 | 2 => buffer[at],
            _ => {
                ((u32::from(buffer[at]) + u32::from(buffer[at + 1]) + u32::from(buffer[at + 2]))
                    / 3) as u8
            }
        }
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, grey);
    for grid in image.detect_grids() {
        if let Ok((_, text)) = grid.decode() {
            return Ok(text);
        }
    }
    bail!("no QR code found in {}", path.display())
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_round_trips_and_an_empty_image_has_no_code() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("code.png");
        let text = "BAEQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ";
        super::write_png(text, &path).unwrap();
        assert_eq!(super::read_png(&path).unwrap(), text);
        assert!(super::terminal(text).unwrap().lines().count() > 10);

        let blank = temp.path().join("blank.png");
        let file = std::fs::File::create(&blank).unwrap();
        let mut encoder = png::Encoder::new(file, 64, 64);
        encoder.set_color(png::ColorType::Grayscale);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&[255; 64 * 64])
            .unwrap();
        assert!(
            super::read_png(&blank)
                .unwrap_err()
                .to_string()
                .contains("no QR code")
        );
    }
}
