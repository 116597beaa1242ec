//! Round trips through files written here by the `image` crate's encoders (a different code
//! path from the decoders under test), and one test per way a folder can be malformed.

use super::*;
use crate::data::{self, DataSpec};
use image::{ImageBuffer, Luma, Rgb};

fn spec(text: &str) -> DataSpec {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn load_err(spec_text: &str) -> String {
    match data::load(&spec(spec_text)) {
        Ok(split) => panic!("{spec_text} loaded {} examples", split.train.len()),
        Err(e) => e.to_string(),
    }
}

/// Every (label, features) pair of both sides, sorted, so a seeded split does not matter.
fn examples(split: &Split) -> Vec<(i64, Vec<f32>)> {
    let mut out = Vec::new();
    for side in [&split.train, &split.test] {
        let labels = side.label_vec().unwrap();
        for (i, label) in labels.into_iter().enumerate() {
            let row: Vec<f32> = Vec::try_from(&side.features.get(i as i64).flatten(0, -1)).unwrap();
            out.push((label, row));
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn gray(width: u32, height: u32, seed: u8) -> ImageBuffer<Luma<u8>, Vec<u8>> {
    ImageBuffer::from_fn(width, height, |x, y| {
        Luma([seed.wrapping_mul(31).wrapping_add((x * 7 + y * 13) as u8)])
    })
}

#[test]
fn a_gray_folder_round_trips_pixel_for_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for (class, name) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        for k in 0..3u8 {
            let image = gray(4, 3, k + 10 * class as u8);
            image
                .save(dir.path().join(name).join(format!("{k}.png")))
                .unwrap();
            let row: Vec<f32> = image
                .as_raw()
                .iter()
                .map(|&v| f32::from(v) / 255.0)
                .collect();
            expected.push((class as i64, row));
        }
    }
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let text = format!(
        "images:{}?size=3x4&color=gray&test=0.5",
        dir.path().display()
    );
    let split = data::load(&spec(&text)).unwrap();
    assert_eq!(split.train.features.size(), [3, 1, 3, 4]);
    assert_eq!(split.train.num_classes, 2);
    assert_eq!(split.info.class_names, ["cat", "dog"]);
    assert_eq!(examples(&split), expected);
}

#[test]
fn rgb_is_planar_and_a_deep_png_keeps_its_precision() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    let rgb: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_fn(2, 2, |x, y| Rgb([(10 * x + y) as u8, 100, 200 + x as u8]));
    rgb.save(dir.path().join("a/rgb.png")).unwrap();
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(2, 2, |x, y| Luma([1 + 1000 * x as u16 + 30_000 * y as u16]));
    deep.save(dir.path().join("b/deep.png")).unwrap();

    let text = format!("images:{}?size=2&test=0.5", dir.path().display());
    let got = examples(&data::load(&spec(&text)).unwrap());
    let planar: Vec<f32> = [0u8, 10, 1, 11, 100, 100, 100, 100, 200, 201, 200, 201]
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    assert_eq!(got[0], (0, planar));
    let want: Vec<f32> = [1u16, 1001, 30_001, 31_001]
        .iter()
        .map(|&v| f32::from(v) / 65535.0)
        .collect();
    assert_eq!(got[1].0, 1);
    for (channel, plane) in got[1].1.chunks(4).enumerate() {
        for (g, w) in plane.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "channel {channel}: {g} vs {w}");
        }
    }
}

#[test]
fn jpeg_gray_conversion_and_resizing() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["red", "flat"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    let red: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_pixel(16, 8, Rgb([255, 0, 0]));
    red.save(dir.path().join("red/r.png")).unwrap();
    let flat: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(24, 24, Luma([120]));
    flat.save(dir.path().join("flat/f.jpg")).unwrap();

    let text = format!(
        "images:{}?size=4x4&color=gray&test=0.5",
        dir.path().display()
    );
    let got = examples(&data::load(&spec(&text)).unwrap());
    // Class 0 is `flat` (byte order): a JPEG of one gray level, resized 24×24 → 4×4.
    assert_eq!(got[0].1.len(), 16);
    for v in &got[0].1 {
        assert!((v - 120.0 / 255.0).abs() <= 2.0 / 255.0, "{v}");
    }
    // Class 1: pure red as BT.709 luma, 0.2126·255 ≈ 54, resized 16×8 → 4×4.
    for v in &got[1].1 {
        assert!((v - 54.0 / 255.0).abs() <= 1.0 / 255.0, "{v}");
    }
}

#[test]
fn a_manifest_names_files_relative_to_itself_and_orders_numeric_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    let mut manifest = String::from("path,site,label\n");
    for k in 0..4u8 {
        gray(2, 2, k)
            .save(dir.path().join(format!("img/{k}.png")))
            .unwrap();
        let label = if k.is_multiple_of(2) { "10" } else { "2" };
        manifest.push_str(&format!("img/{k}.png,x,{label}\n"));
    }
    std::fs::write(dir.path().join("labels.csv"), manifest).unwrap();
    let text = format!(
        "images:{}?size=2&color=gray&seed=4",
        dir.path().join("labels.csv").display()
    );
    let parsed = spec(&text);
    assert_eq!(parsed.to_string().parse::<DataSpec>().unwrap(), parsed);
    let split = data::load(&parsed).unwrap();
    assert_eq!(split.info.class_names, ["2", "10"]);
    let got = examples(&split);
    let want = |k: u8| -> Vec<f32> {
        gray(2, 2, k)
            .as_raw()
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect()
    };
    let mut expected = vec![(1, want(0)), (0, want(1)), (1, want(2)), (0, want(3))];
    expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, expected);
}

/// A folder of two classes with one good PNG each, for the malformed cases to spoil.
fn two_classes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        gray(3, 3, 1)
            .save(dir.path().join(name).join("ok.png"))
            .unwrap();
    }
    dir
}

#[test]
fn malformed_inputs_get_one_error_naming_the_file_and_what_was_expected() {
    let dir = two_classes();
    let spec_text = format!("images:{}?size=3", dir.path().display());

    // A truncated PNG.
    let mut bytes = Vec::new();
    gray(8, 8, 2)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    let broken = dir.path().join("b/truncated.png");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&spec_text);
    assert!(err.contains(&broken.display().to_string()), "{err}");
    assert!(err.contains("cannot decode this Png file"), "{err}");
    std::fs::remove_file(&broken).unwrap();

    // Not an image at all, whatever its name says.
    let text = dir.path().join("a/notes.png");
    std::fs::write(&text, "hello").unwrap();
    let err = load_err(&spec_text);
    assert!(
        err.contains("notes.png") && err.contains("not a PNG or JPEG"),
        "{err}"
    );
    std::fs::remove_file(&text).unwrap();

    // A loose file beside the class folders; hidden files are ignored.
    std::fs::write(dir.path().join(".DS_Store"), "x").unwrap();
    assert_eq!(data::load(&spec(&spec_text)).unwrap().train.len(), 1);
    std::fs::write(dir.path().join("README"), "x").unwrap();
    let err = load_err(&spec_text);
    assert!(
        err.contains("README") && err.contains("one per class"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("README")).unwrap();

    // One class only.
    std::fs::remove_dir_all(dir.path().join("b")).unwrap();
    let err = load_err(&spec_text);
    assert!(err.contains("at least two"), "{err}");

    // A manifest without a label column, and one with an empty path.
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "path,class\na/ok.png,x\n").unwrap();
    let err = load_err(&format!("images:{}?size=3", manifest.display()));
    assert!(err.contains("no column named `label`"), "{err}");
    std::fs::write(&manifest, "path,label\na/ok.png,x\n,y\n").unwrap();
    let err = load_err(&format!("images:{}?size=3", manifest.display()));
    assert!(err.contains("line 3") && err.contains("`path`"), "{err}");
    // A manifest row naming a file that is not there.
    std::fs::write(&manifest, "path,label\na/ok.png,x\na/gone.png,y\n").unwrap();
    let err = load_err(&format!("images:{}?size=3", manifest.display()));
    assert!(err.contains("gone.png"), "{err}");
}

#[test]
fn the_spec_needs_a_size_and_accepts_only_its_options() {
    let err = "images:x".parse::<DataSpec>().unwrap_err().to_string();
    assert!(err.contains("size=HxW"), "{err}");
    for bad in ["images:x?size=0", "images:x?size=3x", "images:x?size=9000"] {
        let err = bad.parse::<DataSpec>().unwrap_err().to_string();
        assert!(err.contains("expected HxW"), "{bad}: {err}");
    }
    let err = "images:x?size=3&color=cmyk"
        .parse::<DataSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`gray` or `rgb`"), "{err}");
    let err = "images:x?size=3&label=y"
        .parse::<DataSpec>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("accepted: size, color, test, seed"), "{err}");
    let parsed = spec("images:scans?size=28&color=gray&test=0.3&seed=2");
    assert_eq!(
        parsed.to_string(),
        "images:scans?size=28x28&color=gray&test=0.3&seed=2"
    );
    assert_eq!(
        spec("images:scans?size=64x32").to_string(),
        "images:scans?size=64x32"
    );
}
