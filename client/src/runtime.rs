//! What libtorch this process actually loaded, and what it can use.
//!
//! tch exposes no version call, and the version that matters is the one the dynamic loader
//! picked, not the one we were built against: a stale rpath or LD_LIBRARY_PATH can load another
//! copy. So the library path is read from `/proc/self/maps` and the version from the `version.py`
//! that PyPI's torch wheel ships beside `lib/`.

use std::path::{Path, PathBuf};

/// The libtorch version tch 0.26 is compiled against; anything else is a broken install.
pub const EXPECTED_LIBTORCH_VERSION: &str = "2.13.0";

/// A description of the loaded libtorch and the compute it sees.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// Path of the `libtorch_cpu.so` mapped into this process, if it could be found.
    pub library: Option<PathBuf>,
    /// Version from the wheel's `version.py` (e.g. `2.13.0+cu130`), if present.
    pub version: Option<String>,
    /// Intra-op threads libtorch will use.
    pub intra_op_threads: i32,
    /// Inter-op threads libtorch will use.
    pub inter_op_threads: i32,
    /// Whether a CUDA device can be used.
    pub cuda_available: bool,
    /// Number of CUDA devices visible.
    pub cuda_devices: i64,
}

impl RuntimeInfo {
    /// Probes the running process; it forces libtorch to initialise first.
    pub fn probe() -> Self {
        let intra_op_threads = tch::get_num_threads();
        let inter_op_threads = tch::get_num_interop_threads();
        let cuda_available = tch::Cuda::is_available();
        let cuda_devices = tch::Cuda::device_count();
        let library = std::fs::read_to_string("/proc/self/maps")
            .ok()
            .and_then(|maps| library_from_maps(&maps));
        let version = library.as_deref().and_then(version_beside_library);
        Self {
            library,
            version,
            intra_op_threads,
            inter_op_threads,
            cuda_available,
            cuda_devices,
        }
    }

    /// The version without its build suffix (`2.13.0+cu130` → `2.13.0`).
    pub fn release(&self) -> Option<&str> {
        self.version
            .as_deref()
            .map(|v| v.split_once('+').map_or(v, |(release, _)| release))
    }
}

/// Finds the path of `libtorch_cpu.so` in the text of a `/proc/<pid>/maps` file.
fn library_from_maps(maps: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|name| name == "libtorch_cpu.so")
        })
        .map(PathBuf::from)
}

/// Reads `__version__` from `<torch>/version.py`, given `<torch>/lib/libtorch_cpu.so`.
fn version_beside_library(library: &Path) -> Option<String> {
    let torch_dir = library.parent()?.parent()?;
    let text = std::fs::read_to_string(torch_dir.join("version.py")).ok()?;
    parse_version_py(&text)
}

fn parse_version_py(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("__version__")?;
        let value = rest.trim_start().strip_prefix('=')?.trim();
        let value = value.split('#').next()?.trim();
        let unquoted = value.trim_matches(|c| c == '\'' || c == '"');
        (!unquoted.is_empty()).then(|| unquoted.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libtorch_in_maps() {
        let maps = "7f00-7f01 r--p 00000000 fd:01 123 /usr/lib/libc.so.6\n\
                    7f02-7f03 r-xp 00000000 fd:01 456 /v/torch/lib/libtorch_cpu.so\n";
        assert_eq!(
            library_from_maps(maps),
            Some(PathBuf::from("/v/torch/lib/libtorch_cpu.so"))
        );
        assert_eq!(
            library_from_maps("7f00-7f01 r--p 0 fd:01 1 /lib/libm.so\n"),
            None
        );
    }

    #[test]
    fn parses_version_py() {
        let text =
            "from typing import Optional\n__version__ = '2.13.0+cu130'\ngit_version = 'abc'\n";
        assert_eq!(parse_version_py(text).as_deref(), Some("2.13.0+cu130"));
        assert_eq!(parse_version_py("version = '1'\n"), None);
    }

    #[test]
    fn probe_reports_the_linked_libtorch() {
        let info = RuntimeInfo::probe();
        assert!(
            info.library.is_some(),
            "libtorch_cpu.so not found in /proc/self/maps"
        );
        assert_eq!(info.release(), Some(EXPECTED_LIBTORCH_VERSION));
        assert!(info.intra_op_threads >= 1);
    }
}
