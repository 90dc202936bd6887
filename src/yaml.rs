//! YAML helpers shared by the pipeline and profile parsers: error messages
//! that name the file, line and column; maps that reject duplicate keys;
//! scalars that accept `1` and `true` where a string is meant; and the
//! limits a document must meet before it is loaded (`limits`).

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use indexmap::IndexMap;
use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

mod limits;
pub use limits::{read_file, MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES};

/// Parses `text` (the contents of `path`) into `T`, turning any error into
/// `path:line:column: message`. A text over a limit (size, nesting depth,
/// alias expansion) is rejected before it is loaded.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, String> {
    limits::check(path, text)?;
    serde_norway::from_str(text).map_err(|e| locate(path, &e))
}

fn locate(path: &Path, e: &serde_norway::Error) -> String {
    let msg = e.to_string();
    match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let msg = match msg.find(&suffix) {
                Some(i) => format!("{}{}", &msg[..i], &msg[i + suffix.len()..]),
                None => msg,
            };
            format!(
                "{}:{}:{}: {}",
                path.display(),
                loc.line(),
                loc.column(),
                msg
            )
        }
        None => format!("{}: {}", path.display(), msg),
    }
}

/// An insertion-ordered map whose keys must be unique: a repeated key is an
/// error (YAML allows it silently otherwise, and the last one would win).
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueMap<V>(pub IndexMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(IndexMap::new())
    }
}

impl<V> std::ops::Deref for UniqueMap<V> {
    type Target = IndexMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(UniqueMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = IndexMap::new();
                while let Some(key) = map.next_key::<Scalar>()? {
                    if out.contains_key(&key.0) {
                        return Err(de::Error::custom(format!(
                            "duplicate key `{}`: each name may appear once",
                            key.0
                        )));
                    }
                    let value = map.next_value()?;
                    out.insert(key.0, value);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

/// A string that YAML may have written as a number or a boolean
/// (`PORT: 8080`, `DEBUG: true`), kept as the text the user meant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SV;
        impl Visitor<'_> for SV {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(SV)
    }
}

/// Deserializes a duration such as `10m` or `7d` with an error that points
/// at the key.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    let s = Scalar::deserialize(d)?;
    crate::util::parse_duration(&s.0)
        .map(Some)
        .map_err(de::Error::custom)
}

/// An environment map: names to scalar values, names unique.
pub type EnvMap = UniqueMap<Scalar>;
