//! Text for next-token prediction: fixed context windows over a character or byte stream.
//!
//! The file becomes one token sequence `t[0..L]`. Example `i` has features
//! `t[i*s .. i*s + T]` (an `[T]` row of `Int64` token ids) and label `t[i*s + T]`, the token
//! that follows, for context length `T` and stride `s`. The train side is the first part of the
//! file and the test side the rest: a random split of overlapping windows would put most of
//! each test window into training.
//!
//! Features are a strided view of the token tensor (`Tensor::unfold`), so a stride of 1 costs
//! `O(L)` memory rather than `O(L·T)`. Selecting a batch (`index_select`) copies only the batch.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::{DataError, DataInfo, Dataset, Split};

/// What one token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextLevel {
    /// One Unicode scalar value per token; the vocabulary is the characters the file uses.
    #[default]
    Char,
    /// One byte per token; the vocabulary is all 256 byte values (any file, any encoding).
    Byte,
}

/// How to cut a text file into examples (the options of a `text:` [`DataSpec`](super::DataSpec)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    /// Context length `T`: tokens of input per example.
    pub context: usize,
    /// Tokenisation.
    #[serde(default)]
    pub level: TextLevel,
    /// Offset between consecutive windows (1 uses every position as a label).
    #[serde(default = "default_stride")]
    pub stride: usize,
    /// Fraction of the token stream, taken from its end, held out for testing, in `(0, 1)`.
    #[serde(default = "default_text_test_fraction")]
    pub test_fraction: f64,
}

fn default_stride() -> usize {
    1
}

pub(crate) fn default_text_test_fraction() -> f64 {
    0.1
}

impl TextOptions {
    /// Character-level options with stride 1 and a 10% test tail.
    pub fn new(context: usize) -> Self {
        Self {
            context,
            level: TextLevel::Char,
            stride: default_stride(),
            test_fraction: default_text_test_fraction(),
        }
    }
}

/// The mapping between token ids and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vocabulary {
    /// Token `k` is the `k`-th character in code-point order of those the file uses.
    Chars(Vec<char>),
    /// Token `k` is the byte `k`.
    Bytes,
}

impl Vocabulary {
    /// Number of distinct tokens (the `num_classes` of the data set).
    pub fn len(&self) -> usize {
        match self {
            Self::Chars(chars) => chars.len(),
            Self::Bytes => 256,
        }
    }

    /// Whether the vocabulary is empty (only for a character vocabulary of an empty text).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of `text`, or `None` if it uses a character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Option<Vec<i64>> {
        match self {
            Self::Chars(chars) => text
                .chars()
                .map(|c| {
                    chars
                        .binary_search(&c)
                        .ok()
                        .and_then(|i| i64::try_from(i).ok())
                })
                .collect(),
            Self::Bytes => Some(text.bytes().map(i64::from).collect()),
        }
    }

    /// The text of token ids (bytes that are not valid UTF-8 become U+FFFD); ids outside the
    /// vocabulary are skipped.
    pub fn decode(&self, tokens: &[i64]) -> String {
        match self {
            Self::Chars(chars) => tokens
                .iter()
                .filter_map(|&t| usize::try_from(t).ok().and_then(|i| chars.get(i)))
                .collect(),
            Self::Bytes => {
                let bytes: Vec<u8> = tokens
                    .iter()
                    .filter_map(|&t| u8::try_from(t).ok())
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    }
}

/// Context windows over `tokens` as a data set (features are a view; see the module doc).
fn windows(tokens: &[i64], options: &TextOptions, vocab: i64) -> Result<Dataset, DataError> {
    let context = i64::try_from(options.context).unwrap_or(i64::MAX);
    let stride = i64::try_from(options.stride).unwrap_or(i64::MAX);
    let len = i64::try_from(tokens.len()).unwrap_or(i64::MAX);
    let count = (len - 1 - context) / stride + 1;
    let stream = Tensor::from_slice(tokens);
    let features = stream
        .f_narrow(0, 0, len - 1)?
        .f_unfold(0, context, stride)?;
    let features = features.f_narrow(0, 0, count)?;
    let last = context + (count - 1) * stride;
    let labels = stream
        .f_slice(0, Some(context), Some(last + 1), stride)?
        .f_contiguous()?;
    Ok(Dataset {
        features,
        labels,
        num_classes: vocab,
    })
}

/// Loads a text file as next-token examples; see the module documentation for the layout.
pub fn load_text(path: &Path, options: &TextOptions) -> Result<Split, DataError> {
    let text_error = |reason: String| DataError::Text {
        path: path.to_path_buf(),
        reason,
    };
    if options.context == 0 || options.stride == 0 {
        return Err(text_error(
            "context and stride must be at least 1".to_owned(),
        ));
    }
    super::split::check_fraction(options.test_fraction)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let (tokens, vocabulary) = match options.level {
        TextLevel::Byte => (
            bytes.iter().map(|&b| i64::from(b)).collect(),
            Vocabulary::Bytes,
        ),
        TextLevel::Char => {
            let text = String::from_utf8(bytes).map_err(|e| {
                text_error(format!(
                    "not valid UTF-8 at byte {}; use `level=byte` for other encodings",
                    e.utf8_error().valid_up_to()
                ))
            })?;
            let chars: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
            let vocabulary = Vocabulary::Chars(chars);
            let tokens = vocabulary.encode(&text).unwrap_or_default();
            (tokens, vocabulary)
        }
    };
    // Each side needs at least one window: context + 1 tokens.
    let needed = options.context + 1;
    let test_len = super::split::test_count(tokens.len(), options.test_fraction);
    let train_len = tokens.len() - test_len;
    if train_len < needed || test_len < needed {
        return Err(text_error(format!(
            "{} tokens give a train part of {train_len} and a test part of {test_len}, but each \
             needs at least context + 1 = {needed}; use a longer text or a smaller `context`",
            tokens.len()
        )));
    }
    let vocab = i64::try_from(vocabulary.len()).unwrap_or(i64::MAX);
    let train = windows(&tokens[..train_len], options, vocab)?;
    let test = windows(&tokens[train_len..], options, vocab)?;
    Ok(Split {
        train,
        test,
        info: DataInfo {
            vocabulary: Some(vocabulary),
            ..DataInfo::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_text(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        file
    }

    fn rows(tensor: &Tensor) -> Vec<Vec<i64>> {
        Vec::try_from(&tensor.contiguous()).unwrap()
    }

    #[test]
    fn char_windows_predict_the_next_character() {
        let file = write_text(b"abcabcabcabcabcabcabcabcabcabc"); // 30 chars
        let mut options = TextOptions::new(4);
        options.test_fraction = 0.3;
        let split = load_text(file.path(), &options).unwrap();
        assert_eq!(split.train.num_classes, 3);
        // 21 train tokens → 17 windows; 9 test tokens → 5 windows.
        assert_eq!(split.train.features.size(), vec![17, 4]);
        assert_eq!(split.test.features.size(), vec![5, 4]);
        let features = rows(&split.train.features);
        let labels = split.train.label_vec().unwrap();
        assert_eq!(features[0], vec![0, 1, 2, 0]);
        assert_eq!(labels[0], 1);
        for (window, label) in features.iter().zip(&labels) {
            // In "abcabc…", the token after a window is the one three back plus one.
            assert_eq!(*label, (window[3] + 1) % 3);
        }
        let vocab = split.info.vocabulary.unwrap();
        assert_eq!(vocab.decode(&features[1]), "bcab");
        assert_eq!(vocab.encode("cab"), Some(vec![2, 0, 1]));
        assert_eq!(vocab.encode("abd"), None);
    }

    #[test]
    fn stride_skips_windows_and_labels_follow_them() {
        let text: Vec<u8> = (0..=99u8).collect();
        let file = write_text(&text);
        let options = TextOptions {
            context: 5,
            level: TextLevel::Byte,
            stride: 3,
            test_fraction: 0.2,
        };
        let split = load_text(file.path(), &options).unwrap();
        assert_eq!(split.train.num_classes, 256);
        // 80 train tokens: windows start at 0, 3, …, 72 (the label of the last is token 77,
        // and one starting at 75 would need token 80, which is on the test side).
        let features = rows(&split.train.features);
        assert_eq!(features.len(), 25);
        assert_eq!(features[2], vec![6, 7, 8, 9, 10]);
        let labels = split.train.label_vec().unwrap();
        assert_eq!(labels[2], 11);
        assert_eq!(*labels.last().unwrap(), 77);
        let test = rows(&split.test.features);
        assert_eq!(test[0], vec![80, 81, 82, 83, 84]);
        assert_eq!(split.test.label_vec().unwrap()[0], 85);
        // Batches are copies of the views, as the engine will take them.
        let batch = split.train.select(&[24, 0]).unwrap();
        assert_eq!(
            rows(&batch.features),
            vec![features[24].clone(), features[0].clone()]
        );
    }

    #[test]
    fn multibyte_characters_are_single_tokens() {
        let file = write_text("héllo wörld, ".repeat(6).as_bytes());
        let split = load_text(file.path(), &TextOptions::new(3)).unwrap();
        let vocab = split.info.vocabulary.unwrap();
        assert_eq!(vocab.decode(&rows(&split.train.features)[0]), "hél");
    }

    #[test]
    fn invalid_input_is_explained() {
        let short = write_text(b"abcdef");
        let err = load_text(short.path(), &TextOptions::new(4)).unwrap_err();
        assert!(err.to_string().contains("smaller `context`"), "{err}");
        let binary = write_text(&[0x61, 0xff, 0x62, 0x63]);
        let err = load_text(binary.path(), &TextOptions::new(1)).unwrap_err();
        assert!(err.to_string().contains("level=byte"), "{err}");
        let err = load_text(binary.path(), &TextOptions::new(0)).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
        let missing = load_text(Path::new("/nonexistent.txt"), &TextOptions::new(2));
        assert!(matches!(missing, Err(DataError::Io { .. })));
    }
}
