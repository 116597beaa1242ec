//! The `KEY=VALUE` options of a [`DataSpec`](super::DataSpec) and their `%XX` escapes.
//!
//! Each loader module parses its own options from an [`Options`] and writes its own canonical
//! form, so adding a kind touches the spec's dispatch and nothing else here.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::DataError;

pub(crate) const RESERVED: [char; 5] = ['%', '?', '&', '=', ','];

pub(crate) fn encode(text: &str, reserved: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if reserved.contains(&c) {
            out.push_str(&format!("%{:02X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn decode(spec: &str, text: &str) -> Result<String, DataError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).unwrap_or("");
            let byte = u8::from_str_radix(hex, 16).map_err(|_| {
                DataError::spec(
                    spec,
                    format!("`%{hex}` is not a %XX escape (use %25 for `%`)"),
                )
            })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| DataError::spec(spec, "a %XX escape does not form valid UTF-8"))
}

/// The largest side an image spec may resize to: beyond it one example alone is tens of
/// megabytes of floats, which is a typo rather than a model input.
pub(crate) const MAX_SIDE: u32 = 4096;

/// `HxW` or `N` (for N×N), each side in `1..=MAX_SIDE`, as `(height, width)`.
pub(crate) fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (h, w) = match text.split_once(['x', 'X']) {
        Some((h, w)) => (h.parse().ok()?, w.parse().ok()?),
        None => {
            let n = text.parse().ok()?;
            (n, n)
        }
    };
    let ok = |side: u32| (1..=MAX_SIDE).contains(&side);
    (ok(h) && ok(w)).then_some((h, w))
}

/// The `key=value` options of a spec, consumed one by one so leftovers can be reported.
pub(crate) struct Options<'a> {
    spec: &'a str,
    kind: &'static str,
    accepted: &'static str,
    values: BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    pub(crate) fn parse(
        spec: &'a str,
        kind: &'static str,
        accepted: &'static str,
        query: &str,
    ) -> Result<Self, DataError> {
        let mut values = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                DataError::spec(spec, format!("option `{pair}` needs the form KEY=VALUE"))
            })?;
            let key = decode(spec, key)?;
            if values.insert(key.clone(), value.to_owned()).is_some() {
                return Err(DataError::spec(
                    spec,
                    format!("option `{key}` is given twice"),
                ));
            }
        }
        Ok(Self {
            spec,
            kind,
            accepted,
            values,
        })
    }

    /// An error about this spec.
    pub(crate) fn error(&self, reason: impl Into<String>) -> DataError {
        DataError::spec(self.spec, reason)
    }

    /// A required option's decoded value; `hint` says what it is (e.g. "`label=COLUMN`, the
    /// name of the label column").
    pub(crate) fn require(&mut self, key: &str, hint: &str) -> Result<String, DataError> {
        self.take(key)?
            .ok_or_else(|| self.error(format!("`{}` needs {hint}", self.kind)))
    }

    /// The option's value as written (still %-encoded).
    pub(crate) fn take_raw(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// The option's decoded value.
    pub(crate) fn take(&mut self, key: &str) -> Result<Option<String>, DataError> {
        self.take_raw(key)
            .map(|v| decode(self.spec, &v))
            .transpose()
    }

    /// A comma-separated list option, each item decoded (empty when absent).
    pub(crate) fn take_list(&mut self, key: &str) -> Result<Vec<String>, DataError> {
        match self.take_raw(key) {
            None => Ok(Vec::new()),
            Some(list) => list.split(',').map(|c| decode(self.spec, c)).collect(),
        }
    }

    pub(crate) fn take_parsed<T: FromStr>(
        &mut self,
        key: &str,
        expected: &str,
    ) -> Result<Option<T>, DataError> {
        match self.take(key)? {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                DataError::spec(self.spec, format!("`{key}={text}`: expected {expected}"))
            }),
        }
    }

    pub(crate) fn take_fraction(&mut self, default: f64) -> Result<f64, DataError> {
        let value = self
            .take_parsed::<f64>("test", "a fraction such as 0.2")?
            .unwrap_or(default);
        if value > 0.0 && value < 1.0 {
            Ok(value)
        } else {
            Err(DataError::spec(
                self.spec,
                format!("`test={value}`: the test fraction must be strictly between 0 and 1"),
            ))
        }
    }

    pub(crate) fn finish(self) -> Result<(), DataError> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(key) if self.accepted.is_empty() => Err(DataError::spec(
                self.spec,
                format!("`{}` takes no options, got `{key}`", self.kind),
            )),
            Some(key) => Err(DataError::spec(
                self.spec,
                format!(
                    "unknown option `{key}` for `{}` (accepted: {})",
                    self.kind, self.accepted
                ),
            )),
        }
    }
}
