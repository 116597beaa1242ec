use super::*;
use std::io::Write;

fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(payload);
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8], gzip: bool) {
    if gzip {
        let file = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap();
    } else {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes a tiny IDX directory: `n_train` and `n_test` images of 4×3 pixels where pixel `p` of
/// image `i` is `(i * 12 + p) % 256`, and label `i % 10`.
fn write_set(dir: &Path, n_train: u32, n_test: u32, gzip: bool) {
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let pixels: Vec<u8> = (0..n * 12).map(|v| (v % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write(
            dir,
            &format!("{prefix}-images-idx3-ubyte"),
            &idx_bytes(IMAGES_MAGIC, &[n, 4, 3], &pixels),
            gzip,
        );
        write(
            dir,
            &format!("{prefix}-labels-idx1-ubyte"),
            &idx_bytes(LABELS_MAGIC, &[n], &labels),
            gzip,
        );
    }
}

#[test]
fn loads_plain_and_gzipped_directories_identically() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 25, 7, gzip);
        let split = load_idx_dir(dir.path(), IdxFlavour::Mnist).unwrap();
        assert_eq!(split.train.features.size(), vec![25, 1, 4, 3]);
        assert_eq!(split.test.features.size(), vec![7, 1, 4, 3]);
        assert_eq!(split.train.features.kind(), Kind::Float);
        assert_eq!(split.train.num_classes, 10);
        assert_eq!(
            split.train.label_vec().unwrap()[..12],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        );
        let first: Vec<f32> = Vec::try_from(&split.train.features.get(1).view([-1])).unwrap();
        let expected: Vec<f32> = (12..24).map(|v| v as f32 / 255.0).collect();
        assert_eq!(first, expected);
        let max = split.train.features.max().double_value(&[]);
        assert!((max - 255.0 / 255.0).abs() < 1e-6, "{max}");
        assert_eq!(split.info.class_names.len(), 10);
    }
}

#[test]
fn swapped_files_are_caught_by_their_magic_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), 3, 3, false);
    std::fs::copy(
        dir.path().join("train-labels-idx1-ubyte"),
        dir.path().join("train-images-idx3-ubyte"),
    )
    .unwrap();
    let err = load_idx_dir(dir.path(), IdxFlavour::Mnist).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DataError::Idx { .. }), "{err:?}");
    assert!(
        message.contains("0x00000801") && message.contains("label file"),
        "{message}"
    );
}

#[test]
fn non_idx_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, b"<html>not found</html>").unwrap();
    let err = read_idx_images(&path).unwrap_err();
    assert!(err.to_string().contains("not an IDX file"), "{err}");
    std::fs::write(&path, [0u8, 0]).unwrap();
    let err = read_idx_images(&path).unwrap_err();
    assert!(err.to_string().contains("ends inside the header"), "{err}");
}

#[test]
fn truncated_and_oversized_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images");
    let mut bytes = idx_bytes(IMAGES_MAGIC, &[2, 4, 3], &[7u8; 24]);
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, &bytes).unwrap();
    let err = read_idx_images(&path).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    let bytes = idx_bytes(IMAGES_MAGIC, &[2, 4, 3], &[7u8; 25]);
    std::fs::write(&path, &bytes).unwrap();
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        err.to_string().contains("more than the 24 data bytes"),
        "{err}"
    );

    let huge = idx_bytes(IMAGES_MAGIC, &[u32::MAX, 28, 28], &[]);
    std::fs::write(&path, &huge).unwrap();
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        err.to_string().contains("more than any IDX data set"),
        "{err}"
    );
}

#[test]
fn out_of_range_label_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels");
    std::fs::write(&path, idx_bytes(LABELS_MAGIC, &[3], &[1, 10, 2])).unwrap();
    let err = read_idx_labels(&path).unwrap_err();
    assert!(err.to_string().contains("label 10 at position 1"), "{err}");
}

#[test]
fn label_count_must_match_image_count() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), 4, 2, false);
    write(
        dir.path(),
        "t10k-labels-idx1-ubyte",
        &idx_bytes(LABELS_MAGIC, &[3], &[0, 1, 2]),
        false,
    );
    let err = load_idx_dir(dir.path(), IdxFlavour::FashionMnist).unwrap_err();
    assert!(err.to_string().contains("3 labels for 2 images"), "{err}");
}

#[test]
fn missing_files_and_directories_say_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), 2, 2, true);
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    let err = load_idx_dir(dir.path(), IdxFlavour::Mnist).unwrap_err();
    assert!(
        matches!(err, DataError::MissingFile { ref name, .. } if name == "t10k-images-idx3-ubyte")
    );
    assert!(err.to_string().contains("make data"), "{err}");
    let err = load_idx_dir(&dir.path().join("absent"), IdxFlavour::Mnist).unwrap_err();
    assert!(err.to_string().contains("make data"), "{err}");
}

/// The real data set, when `make data` has fetched it (the suite never depends on it).
#[test]
fn full_mnist_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist");
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} is absent (run `make data` to fetch MNIST)",
            dir.display()
        );
        return;
    }
    let split = load_idx_dir(&dir, IdxFlavour::Mnist).unwrap();
    assert_eq!(split.train.features.size(), vec![60_000, 1, 28, 28]);
    assert_eq!(split.test.features.size(), vec![10_000, 1, 28, 28]);
    let counts = split.train.labels.bincount::<Tensor>(None, 10);
    let counts: Vec<i64> = Vec::try_from(&counts).unwrap();
    assert_eq!(counts.iter().sum::<i64>(), 60_000);
    assert!(
        counts.iter().all(|&c| (5_000..7_000).contains(&c)),
        "{counts:?}"
    );
}

/// The real gzipped Fashion-MNIST, when `make data` has fetched it.
#[test]
fn full_fashion_mnist_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fashion-mnist");
    if !dir.is_dir() {
        eprintln!(
            "skipped: {} is absent (run `make data` to fetch Fashion-MNIST)",
            dir.display()
        );
        return;
    }
    let split = load_idx_dir(&dir, IdxFlavour::FashionMnist).unwrap();
    assert_eq!(split.train.features.size(), vec![60_000, 1, 28, 28]);
    assert_eq!(split.test.features.size(), vec![10_000, 1, 28, 28]);
    let counts: Vec<i64> = Vec::try_from(&split.test.labels.bincount::<Tensor>(None, 10)).unwrap();
    assert_eq!(
        counts,
        vec![1_000; 10],
        "Fashion-MNIST's test set is balanced"
    );
    assert_eq!(split.info.class_names[9], "Ankle boot");
}
