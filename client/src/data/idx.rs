//! MNIST-format (IDX) image sets: MNIST and Fashion-MNIST directories, plain or gzipped.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
//! dimensions), one big-endian `u32` per dimension, then the values in row-major order. Images
//! are `0x00000803` (unsigned bytes, 3 dimensions: count, rows, columns), labels `0x00000801`.
//! Everything the header claims is checked against what the file holds, so a truncated
//! download or a swapped file is an error rather than a silently wrong data set.

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::{DataError, DataInfo, Dataset, Split};

/// Which image set a directory holds; it names the classes and nothing else differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdxFlavour {
    /// Handwritten digits 0–9.
    Mnist,
    /// Zalando's Fashion-MNIST garments.
    FashionMnist,
}

impl IdxFlavour {
    /// The name of each of the 10 classes.
    pub fn class_names(self) -> Vec<String> {
        match self {
            Self::Mnist => (0..10).map(|d: u8| d.to_string()).collect(),
            Self::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        }
    }
}

/// The classes of both IDX data sets.
const CLASSES: u8 = 10;
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
/// No legitimate IDX file here is larger; a header claiming more is corrupt.
const MAX_PAYLOAD: u64 = 1 << 32;

/// Opens a file, transparently gunzipping it when it starts with the gzip magic bytes.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut magic = [0u8; 2];
    let got = file.read(&mut magic).map_err(|e| DataError::io(path, e))?;
    let prefix = std::io::Cursor::new(magic[..got].to_vec());
    let chained = prefix.chain(std::io::BufReader::new(file));
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

fn idx_error(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_u32(path: &Path, reader: &mut dyn Read, what: &str) -> Result<u32, DataError> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            idx_error(
                path,
                format!("file ends inside the header (reading {what})"),
            )
        } else {
            DataError::io(path, e)
        }
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Reads an IDX file with the expected magic number: returns its dimensions and payload.
fn read_idx(path: &Path, magic: u32, kind: &str) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let mut reader = open_maybe_gz(path)?;
    let found = read_u32(path, &mut reader, "the magic number")?;
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an IDX image file)",
            LABELS_MAGIC => " (this is an IDX label file)",
            _ if found >> 16 != 0 => " (not an IDX file at all)",
            _ => " (an IDX file of another type or rank)",
        };
        return Err(idx_error(
            path,
            format!(
                "magic number 0x{found:08x}{hint}, expected 0x{magic:08x} for {kind}; \
                 check that the file is the one its name says"
            ),
        ));
    }
    let rank = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(rank);
    let mut total: u64 = 1;
    for d in 0..rank {
        let dim = read_u32(path, &mut reader, "a dimension")?;
        total = total.saturating_mul(u64::from(dim));
        dims.push(dim as usize);
        if d > 0 && dim == 0 {
            return Err(idx_error(path, "an image dimension is 0"));
        }
    }
    if total > MAX_PAYLOAD {
        return Err(idx_error(
            path,
            format!("header claims {total} bytes of data, more than any IDX data set here"),
        ));
    }
    let mut payload = Vec::new();
    reader
        .by_ref()
        .take(total)
        .read_to_end(&mut payload)
        .map_err(|e| DataError::io(path, e))?;
    if (payload.len() as u64) < total {
        return Err(idx_error(
            path,
            format!(
                "truncated: the header promises {total} bytes of data but the file holds {}; \
                 download it again",
                payload.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if reader
        .read(&mut extra)
        .map_err(|e| DataError::io(path, e))?
        != 0
    {
        return Err(idx_error(
            path,
            format!("the file holds more than the {total} data bytes its header declares"),
        ));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file: `(count, rows, columns)` and the pixels, row-major.
pub fn read_idx_images(path: &Path) -> Result<([usize; 3], Vec<u8>), DataError> {
    let (dims, pixels) = read_idx(path, IMAGES_MAGIC, "images")?;
    match dims[..] {
        [n, rows, cols] => Ok(([n, rows, cols], pixels)),
        _ => Err(idx_error(path, "an image file needs three dimensions")),
    }
}

/// Reads an IDX label file and checks that every label is a class index `0..10`.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let (_, labels) = read_idx(path, LABELS_MAGIC, "labels")?;
    if let Some(at) = labels.iter().position(|&l| l >= CLASSES) {
        return Err(idx_error(
            path,
            format!(
                "label {} at position {at} is not a class 0..{CLASSES}",
                labels[at]
            ),
        ));
    }
    Ok(labels)
}

/// Finds `name` or `name.gz` in `dir`, preferring the uncompressed file.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    [name.to_owned(), format!("{name}.gz")]
        .into_iter()
        .map(|candidate| dir.join(candidate))
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        })
}

/// Loads one side (`train` or `t10k`) as a [`Dataset`] of `[N, 1, rows, cols]` floats in `[0, 1]`.
fn load_side(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let ([n, rows, cols], pixels) = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if labels.len() != n {
        return Err(idx_error(
            &labels_path,
            format!(
                "{} labels for {n} images in {}; the two files must come from the same set",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    if n == 0 {
        return Err(DataError::Empty {
            what: images_path.display().to_string(),
            hint: "the file holds no images".to_owned(),
        });
    }
    let shape = [n, 1, rows, cols].map(|d| i64::try_from(d).unwrap_or(i64::MAX));
    let features = Tensor::from_slice(&pixels)
        .f_view(shape)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?;
    let labels = Tensor::from_slice(&labels).f_to_kind(Kind::Int64)?;
    Ok(Dataset {
        features,
        labels,
        num_classes: i64::from(CLASSES),
    })
}

/// Loads an MNIST-layout directory: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`).
///
/// The official test set is the test split, in file order; training order is left as in the
/// file too, since DP-SGD samples batches itself (use [`shuffle`](super::shuffle) otherwise).
pub fn load_idx_dir(dir: &Path, flavour: IdxFlavour) -> Result<Split, DataError> {
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a directory (run `make data` to fetch MNIST and Fashion-MNIST)",
            ),
        ));
    }
    let train = load_side(dir, "train")?;
    let test = load_side(dir, "t10k")?;
    if train.features.size()[1..] != test.features.size()[1..] {
        return Err(idx_error(
            dir,
            format!(
                "train images are {:?} but test images are {:?}",
                &train.features.size()[2..],
                &test.features.size()[2..]
            ),
        ));
    }
    Ok(Split {
        train,
        test,
        info: DataInfo {
            class_names: flavour.class_names(),
            ..DataInfo::default()
        },
    })
}

#[cfg(test)]
#[path = "idx_tests.rs"]
mod tests;
