//! `cohort bench images`: how fast an `images:` data spec loads a folder of PNGs.
//!
//! The run writes `--count` grayscale PNGs (a seeded blob on a noisy background, so they
//! compress like scans rather than like flat test cards) into `--classes` class folders, then
//! times `data::load` on the spec `images:DIR?size=…` end to end — listing, reading, decoding,
//! resizing when `--load-size` differs, splitting and building the tensors — `--repeats` times.
//! The first load may read from disk; later ones come from the page cache, which is what a
//! trainer that starts again on the same folder sees. Both are reported.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use cohort_client::data::{self, DataSpec};
use image::{ImageBuffer, Luma};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// Options of `cohort bench images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Number of PNG files to write and load.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Side of the square PNGs written, in pixels.
    #[arg(long, default_value_t = 28)]
    size: u32,
    /// Side the spec resizes to (default: the written size, so no resizing).
    #[arg(long)]
    load_size: Option<u32>,
    /// Number of class folders.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Timed loads of the folder.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Folder to write into (default: a fresh folder under the system temp dir, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    count: usize,
    size: u32,
    load_size: u32,
    classes: usize,
    bytes_on_disk: u64,
    threads: usize,
    write_seconds: f64,
    /// Seconds of each timed load, in order (the first may hit the disk).
    load_seconds: Vec<f64>,
    first_images_per_second: f64,
    best_images_per_second: f64,
}

fn write_folder(dir: &std::path::Path, args: &ImagesArgs) -> Result<u64, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut bytes = 0u64;
    for class in 0..args.classes {
        let folder = dir.join(format!("class{class}"));
        std::fs::create_dir_all(&folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    let side = f64::from(args.size);
    for i in 0..args.count {
        let (cx, cy) = (
            rng.random_range(0.3..0.7) * side,
            rng.random_range(0.3..0.7) * side,
        );
        let radius = rng.random_range(0.15..0.3) * side;
        let noise: Vec<u8> = (0..args.size * args.size)
            .map(|_| rng.random_range(0..24u8))
            .collect();
        let image = ImageBuffer::from_fn(args.size, args.size, |x, y| {
            let d = ((f64::from(x) - cx).powi(2) + (f64::from(y) - cy).powi(2)).sqrt();
            let blob = if d < radius { 200u8 } else { 0 };
            let n = noise[(y * args.size + x) as usize];
            Luma([blob.saturating_add(n)])
        });
        let path = dir.join(format!("class{}/{i:05}.png", i % args.classes));
        image
            .save(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    }
    Ok(bytes)
}

fn measure(args: &ImagesArgs, dir: &std::path::Path) -> Result<Report, String> {
    if args.count < 2 || args.classes < 2 || args.repeats == 0 || args.size == 0 {
        return Err("need --count ≥ 2, --classes ≥ 2, --repeats ≥ 1 and --size ≥ 1".to_owned());
    }
    let start = Instant::now();
    let bytes_on_disk = write_folder(dir, args)?;
    let write_seconds = start.elapsed().as_secs_f64();
    let load_size = args.load_size.unwrap_or(args.size);
    let spec: DataSpec = format!("images:{}?size={load_size}&color=gray", dir.display())
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut load_seconds = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        let split = data::load(&spec).map_err(|e| format!("loading failed: {e}"))?;
        load_seconds.push(start.elapsed().as_secs_f64());
        let loaded = usize::try_from(split.train.len() + split.test.len()).unwrap_or(0);
        if loaded != args.count {
            return Err(format!("loaded {loaded} images, wrote {}", args.count));
        }
    }
    let rate = |s: f64| args.count as f64 / s;
    let best = load_seconds.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Report {
        count: args.count,
        size: args.size,
        load_size,
        classes: args.classes,
        bytes_on_disk,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        write_seconds,
        first_images_per_second: rate(load_seconds[0]),
        best_images_per_second: rate(best),
        load_seconds,
    })
}

/// Runs the benchmark.
pub fn run(args: &ImagesArgs) -> ExitCode {
    let (dir, remove) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("cohort-bench-images-{}", std::process::id())),
            true,
        ),
    };
    let result = measure(args, &dir);
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(report) => {
            print(&report, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cohort bench images: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(r: &Report, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
        return;
    }
    println!(
        "{} grayscale PNGs of {size}×{size} px in {} class folders ({:.1} MB on disk, written \
         in {:.1} s), loaded as images:…?size={load}x{load}&color=gray on {} threads",
        r.count,
        r.classes,
        r.bytes_on_disk as f64 / 1e6,
        r.write_seconds,
        r.threads,
        size = r.size,
        load = r.load_size,
    );
    let times: Vec<String> = r.load_seconds.iter().map(|s| format!("{s:.3}")).collect();
    println!("load seconds: {}", times.join(", "));
    println!(
        "first load {:.0} images/s, best {:.0} images/s",
        r.first_images_per_second, r.best_images_per_second
    );
}
