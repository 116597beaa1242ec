//! What the simulator's examples share: a few flags on top of a built-in config.

use std::path::PathBuf;

/// `[--out DIR] [--seed N] [--transport inprocess|https] [--set KEY=VALUE]...`
#[derive(Debug, Clone, Default)]
pub struct ExampleArgs {
    /// Where the outputs go.
    pub out: Option<PathBuf>,
    /// The seed.
    pub seed: Option<u64>,
    /// Config overrides, in order.
    pub sets: Vec<String>,
}

impl ExampleArgs {
    /// Parses the flags; the message says which flag is wrong.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut out = Self::default();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--out" => out.out = Some(PathBuf::from(value("--out")?)),
                "--seed" => {
                    let v = value("--seed")?;
                    out.seed = Some(
                        v.parse()
                            .map_err(|_| format!("--seed must be a whole number, got {v:?}"))?,
                    );
                }
                "--transport" => out
                    .sets
                    .push(format!("transport=\"{}\"", value("--transport")?)),
                "--set" => out.sets.push(value("--set")?),
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; accepted: --out DIR, --seed N, --transport inprocess|https, --set KEY=VALUE"
                    ));
                }
            }
        }
        Ok(out)
    }
}
