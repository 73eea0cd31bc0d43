//! Where the items of a list document start. `kubectl get -o yaml` and the API server's typed
//! lists (`PodList`, ...) put a whole cluster in one document; an error or finding about one of
//! its objects must point at that object's line, not at the line of the list.
//!
//! YAML: the document is read once, with the location of each element of the top-level `items`
//! sequence recorded (serde-saphyr's `Spanned`). JSON: only for a document that is a list, the
//! value is read again as raw slices (`serde_json::value::RawValue`) to find where each item starts.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A YAML document as a value, plus the 1-based lines (relative to the document text) of the
/// elements of its top-level `items` sequence, if it has one.
pub(crate) struct YamlDoc {
    pub value: Value,
    pub item_lines: Vec<u64>,
}

impl<'de> serde::Deserialize<'de> for YamlDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut item_lines = Vec::new();
        let value = d.deserialize_any(TopVisitor {
            item_lines: &mut item_lines,
        })?;
        Ok(Self { value, item_lines })
    }
}

/// Builds a `serde_json::Value` from any input, like `Value`'s own visitor; for a mapping, the
/// `items` entry is read through [`ItemsSeed`].
struct TopVisitor<'a> {
    item_lines: &'a mut Vec<u64>,
}

/// The scalar and sequence cases every visitor here shares with `Value`'s own.
macro_rules! scalar_visits {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            serde::Deserialize::deserialize(d)
        }
    };
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a YAML document")
    }

    scalar_visits!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if key == "items" {
                self.item_lines.clear();
                map.next_value_seed(ItemsSeed {
                    item_lines: self.item_lines,
                })?
            } else {
                map.next_value::<Value>()?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The value of a top-level `items` key: a sequence's elements are read with their locations.
struct ItemsSeed<'a> {
    item_lines: &'a mut Vec<u64>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the items of a list")
    }

    scalar_visits!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<serde_saphyr::Spanned<Value>>()? {
            self.item_lines.push(v.referenced.line());
            out.push(v.value);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Byte offsets (relative to `json`, the text of one JSON value) where the elements of its
/// top-level `items` array start; `None` when they cannot be found.
pub(crate) fn json_item_offsets(json: &str) -> Option<Vec<usize>> {
    #[derive(serde::Deserialize)]
    struct Items<'a> {
        #[serde(borrow)]
        items: Vec<&'a serde_json::value::RawValue>,
    }
    let items: Items<'_> = serde_json::from_str(json).ok()?;
    let base = json.as_ptr() as usize;
    items
        .items
        .iter()
        .map(|raw| (raw.get().as_ptr() as usize).checked_sub(base))
        .collect()
}
