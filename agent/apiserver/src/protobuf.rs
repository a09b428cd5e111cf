//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! JSON objects the rest of the server handles.
//!
//! **Why.** kubectl's typed commands (`kubectl create namespace|configmap|secret|deployment|
//! service|job|role|...`, the pod deletions of `kubectl drain`) send protobuf, not JSON, and
//! client-go does not fall back to JSON when a server refuses it. Answers stay JSON: every
//! client-go request accepts it.
//!
//! **How.** A body is the magic `k8s\0` followed by a `runtime.Unknown` envelope: `typeMeta`
//! (apiVersion, kind), `raw` (the object, protobuf-encoded) and an optional content
//! encoding/type. The object is decoded against Kubernetes' own schemas: build.rs turns the
//! `FileDescriptorSet` compiled from the Kubernetes 1.35 `.proto` files into static tables
//! ([`Message`], [`Field`]), so decoding allocates nothing but the JSON it returns. (A
//! descriptor pool parsed at run time, prost-reflect's, costs ~5 MiB of RSS for these
//! schemas; the tables cost nothing until a protobuf body arrives. The tests encode their
//! bodies with prost-reflect, an independent implementation.) The wire format is read here:
//! varints, fixed 32/64-bit values and length-delimited fields, packed or not. The JSON
//! follows the rules of Kubernetes' JSON encoding:
//! - proto field names are the JSON names (CRD schema props rename `ref` → `$ref` etc.),
//!   except that Go structs embedded inline (`Volume.volumeSource`) are a field in protobuf
//!   and flattened in JSON: a message field the parent's OpenAPI schema does not know is
//!   merged into the parent;
//! - `Time`/`MicroTime` are RFC 3339 strings, `Duration` a Go duration (`1h2m3s`),
//!   `Quantity` its string, `IntOrString` a number or string, `RawExtension`/`FieldsV1`/
//!   `JSON` the embedded JSON, `bytes` base64, `Verbs`/`ExtraValue` string lists;
//! - Go's protobuf encoder writes every non-pointer field, so empty strings and zero times
//!   are dropped (as JSON's `omitempty` would); zero numbers and `false` are kept, since for
//!   pointer fields (`replicas: 0`, `automountServiceAccountToken: false`) they matter.
//!   The one pointer string where `""` matters (`storageClassName: ""` on a claim) therefore
//!   reads as unset.

use base64::Engine as _;
use serde_json::{Map, Value as Json};

use crate::error::ApiError;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Every protobuf-encoded Kubernetes object starts with these bytes.
const MAGIC: &[u8; 4] = b"k8s\0";
/// Nesting deeper than this is refused (a hostile body cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

/// One message type of the schemas.
#[derive(Debug)]
pub struct Message {
    /// Full name without the leading dot (`api.core.v1.Pod`).
    pub name: &'static str,
    /// A synthesized `map<K, V>` entry (`key` = 1, `value` = 2).
    pub map_entry: bool,
    /// Sorted by number.
    pub fields: &'static [Field],
}

/// One field of a [`Message`].
#[derive(Debug)]
pub struct Field {
    pub number: u32,
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

/// The protobuf type of a field (enums read as `Int`; Kubernetes uses none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Double,
    Float,
    Int,
    UInt,
    SInt,
    Fixed64,
    SFixed64,
    Fixed32,
    SFixed32,
    Bool,
    String,
    Bytes,
    /// Index into the generated `MESSAGES` table.
    Message(usize),
}

include!(concat!(env!("OUT_DIR"), "/protobuf_schema.rs"));

/// The schema named `name` (`api.core.v1.Pod`).
pub fn find(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &MESSAGES[i])
}

fn schema(name: &str) -> &'static Message {
    find(name).unwrap_or_else(|| panic!("{name} is in the protobuf schemas"))
}

/// Decodes a protobuf body into the JSON object it encodes, with `apiVersion` and `kind` set.
/// `expected` is the (apiVersion, kind) to assume when the envelope does not name one.
pub fn decode(body: &[u8], expected: (&str, &str)) -> Result<Json, ApiError> {
    let Some(envelope) = body.strip_prefix(MAGIC) else {
        return Err(ApiError::BadRequest(
            "the protobuf body does not start with Kubernetes' magic bytes \"k8s\\0\"".into(),
        ));
    };
    let unknown = Decoded::read(schema("apimachinery.pkg.runtime.Unknown"), envelope, 0)
        .map_err(|e| ApiError::BadRequest(format!("the protobuf envelope is malformed: {e}")))?;
    for (field, what) in [
        ("contentEncoding", "content encoding"),
        ("contentType", "content type"),
    ] {
        let value = unknown.text(field);
        if !value.is_empty() && value != MEDIA_TYPE {
            return Err(ApiError::UnsupportedMediaType {
                accepted: format!(
                    "{MEDIA_TYPE} without an inner {what} (got {value:?}), or application/json"
                ),
            });
        }
    }
    let (mut api_version, mut kind) = match unknown.get("typeMeta") {
        Some(Val::Msg(t)) => (t.text("apiVersion").to_owned(), t.text("kind").to_owned()),
        _ => Default::default(),
    };
    if kind.is_empty() {
        kind = expected.1.to_owned();
    }
    if api_version.is_empty() {
        api_version = expected.0.to_owned();
    }
    let message =
        message_for(&api_version, &kind).ok_or_else(|| ApiError::UnsupportedMediaType {
            accepted: format!(
                "application/json (cairn has no protobuf schema for {kind} in {api_version})"
            ),
        })?;
    let raw = match unknown.get("raw") {
        Some(Val::Bytes(b)) => *b,
        _ => &[],
    };
    let mut json = object(message, raw).map_err(|e| match e {
        Error::Wire(e) => ApiError::BadRequest(format!(
            "the protobuf body is not a valid {kind} of {api_version}: {e}"
        )),
        Error::Api(e) => e,
    })?;
    if let Some(map) = json.as_object_mut() {
        map.insert("apiVersion".into(), Json::String(api_version));
        map.insert("kind".into(), Json::String(kind));
    }
    Ok(json)
}

/// Decodes one encoded message of type `message` into JSON.
pub(crate) fn object(message: &'static Message, bytes: &[u8]) -> Result<Json, Error> {
    let decoded = Decoded::read(message, bytes, 0).map_err(Error::Wire)?;
    Ok(decoded
        .to_json()?
        .unwrap_or_else(|| Json::Object(Map::new())))
}

/// What can go wrong turning a body into JSON.
#[derive(Debug)]
pub(crate) enum Error {
    /// The bytes are not a valid encoding of the message.
    Wire(String),
    /// They are, but what they hold cannot be accepted.
    Api(ApiError),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

/// The schema of `kind` in `api_version`: its group's package (`apps/v1` → `api.apps.v1`,
/// `rbac.authorization.k8s.io/v1` → `api.rbac.v1`), else the meta package (`DeleteOptions`
/// is sent as `v1` or `meta.k8s.io/v1`).
fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if version.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let package = match group {
        "" => format!("api.core.{version}"),
        "apiextensions.k8s.io" => {
            format!("apiextensions_apiserver.pkg.apis.apiextensions.{version}")
        }
        "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{version}"),
        other => format!("api.{}.{version}", other.split('.').next().unwrap_or(other)),
    };
    find(&format!("{package}.{kind}"))
        .or_else(|| find(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

/// One decoded value; strings and bytes borrow from the body.
#[derive(Debug)]
enum Val<'a> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(&'a str),
    Bytes(&'a [u8]),
    Msg(Decoded<'a>),
}

/// A decoded message: its fields in wire order (index into `message.fields`, value).
#[derive(Debug)]
struct Decoded<'a> {
    message: &'static Message,
    values: Vec<(usize, Val<'a>)>,
}

/// Reads a base-128 varint.
fn varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err(format!(
            "truncated: {n} bytes announced, {} left",
            buf.len()
        ));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

impl<'a> Decoded<'a> {
    fn read(message: &'static Message, mut buf: &'a [u8], depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} messages"));
        }
        let mut values = Vec::new();
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let (number, wire) = (key >> 3, key & 7);
            let field = message
                .fields
                .binary_search_by_key(&number, |f| u64::from(f.number));
            // The wire payload: a varint, 8 bytes, a length-delimited slice or 4 bytes.
            let payload: Payload = match wire {
                0 => Payload::Varint(varint(&mut buf)?),
                1 => Payload::Fixed(take(&mut buf, 8)?),
                2 => {
                    let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length overflow")?;
                    Payload::Len(take(&mut buf, len)?)
                }
                5 => Payload::Fixed(take(&mut buf, 4)?),
                other => return Err(format!("field {number}: unsupported wire type {other}")),
            };
            let Ok(index) = field else {
                continue; // a field newer than these schemas: skipped, as protobuf does
            };
            let f = &message.fields[index];
            match (f.ty, payload) {
                // Packed repeated scalars: one length-delimited run of values.
                (ty, Payload::Len(mut run)) if f.repeated && scalar(ty) => {
                    while !run.is_empty() {
                        let item = match ty {
                            Ty::Double | Ty::Fixed64 | Ty::SFixed64 => {
                                Payload::Fixed(take(&mut run, 8)?)
                            }
                            Ty::Float | Ty::Fixed32 | Ty::SFixed32 => {
                                Payload::Fixed(take(&mut run, 4)?)
                            }
                            _ => Payload::Varint(varint(&mut run)?),
                        };
                        values.push((index, Self::scalar(f, item)?));
                    }
                }
                (Ty::Message(m), Payload::Len(bytes)) => {
                    values.push((index, Val::Msg(Self::read(&MESSAGES[m], bytes, depth + 1)?)));
                }
                (_, payload) => values.push((index, Self::scalar(f, payload)?)),
            }
        }
        Ok(Decoded { message, values })
    }

    fn scalar(f: &Field, payload: Payload<'a>) -> Result<Val<'a>, String> {
        let wrong = || format!("field {} ({}): wrong wire type", f.number, f.name);
        let fixed = |b: &[u8]| -> u64 {
            let mut le = [0u8; 8];
            le[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(le)
        };
        Ok(match (f.ty, payload) {
            (Ty::Int, Payload::Varint(v)) => Val::Int(v as i64),
            (Ty::UInt, Payload::Varint(v)) => Val::UInt(v),
            (Ty::SInt, Payload::Varint(v)) => Val::Int(((v >> 1) as i64) ^ -((v & 1) as i64)),
            (Ty::Bool, Payload::Varint(v)) => Val::Bool(v != 0),
            (Ty::Fixed64, Payload::Fixed(b)) => Val::UInt(fixed(b)),
            (Ty::SFixed64, Payload::Fixed(b)) => Val::Int(fixed(b) as i64),
            (Ty::Fixed32, Payload::Fixed(b)) => Val::UInt(fixed(b)),
            (Ty::SFixed32, Payload::Fixed(b)) => Val::Int(i64::from(fixed(b) as u32 as i32)),
            (Ty::Double, Payload::Fixed(b)) if b.len() == 8 => Val::Float(f64::from_bits(fixed(b))),
            (Ty::Float, Payload::Fixed(b)) if b.len() == 4 => {
                Val::Float(f64::from(f32::from_bits(fixed(b) as u32)))
            }
            (Ty::String, Payload::Len(b)) => Val::Str(
                std::str::from_utf8(b)
                    .map_err(|_| format!("field {} ({}): string is not UTF-8", f.number, f.name))?,
            ),
            (Ty::Bytes, Payload::Len(b)) => Val::Bytes(b),
            _ => return Err(wrong()),
        })
    }

    /// The last value of the singular field `name`.
    fn get(&self, name: &str) -> Option<&Val<'a>> {
        let index = self.message.fields.iter().position(|f| f.name == name)?;
        self.values
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| v)
    }

    fn text(&self, name: &str) -> &'a str {
        match self.get(name) {
            Some(Val::Str(s)) => s,
            _ => "",
        }
    }

    fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(Val::Int(n)) => *n,
            Some(Val::UInt(n)) => *n as i64,
            _ => 0,
        }
    }

    /// This message as JSON; `None` when it stands for an absent value (a zero `Time`).
    fn to_json(&self) -> Result<Option<Json>, ApiError> {
        let name = self.message.name;
        let raw = |field: &str| -> Result<Option<Json>, ApiError> {
            match self.get(field) {
                Some(Val::Bytes(b)) if !b.is_empty() => {
                    serde_json::from_slice(b).map(Some).map_err(|e| {
                        ApiError::BadRequest(format!(
                        "an embedded object in the protobuf body is not JSON ({e}); cairn reads \
                         embedded objects only as JSON"
                    ))
                    })
                }
                _ => Ok(None),
            }
        };
        let short = name.rsplit('.').next().unwrap_or(name);
        Ok(match name {
            "apimachinery.pkg.apis.meta.v1.Time" => {
                time(self.int("seconds"), self.int("nanos"), false)
            }
            "apimachinery.pkg.apis.meta.v1.MicroTime" => {
                time(self.int("seconds"), self.int("nanos"), true)
            }
            "apimachinery.pkg.apis.meta.v1.Duration" => {
                Some(Json::String(go_duration(self.int("duration"))))
            }
            "apimachinery.pkg.api.resource.Quantity" => {
                Some(Json::String(self.text("string").into()))
            }
            "apimachinery.pkg.util.intstr.IntOrString" => Some(if self.int("type") == 1 {
                Json::String(self.text("strVal").into())
            } else {
                Json::from(self.int("intVal"))
            }),
            "apimachinery.pkg.runtime.RawExtension" => raw("raw")?,
            "apimachinery.pkg.apis.meta.v1.FieldsV1" => raw("Raw")?,
            "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => raw("raw")?,
            _ if short == "Verbs" || short == "ExtraValue" => {
                Some(self.field_json(0)?.unwrap_or(Json::Array(vec![])))
            }
            _ if short.starts_with("JSONSchemaPropsOr") => self.schema_or()?,
            _ => Some(Json::Object(self.object()?)),
        })
    }

    /// The JSON of field `index` (all its values: a list, a map or the last one); `None`
    /// when absent or dropped.
    fn field_json(&self, index: usize) -> Result<Option<Json>, ApiError> {
        let f = &self.message.fields[index];
        let mut values = self
            .values
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, v)| v);
        let entry = match f.ty {
            Ty::Message(m) if MESSAGES[m].map_entry => Some(&MESSAGES[m]),
            _ => None,
        };
        if let Some(entry) = entry {
            let mut map = Map::new();
            for v in values {
                let Val::Msg(e) = v else { continue };
                let key = match e.get("key") {
                    Some(Val::Str(s)) => (*s).to_owned(),
                    Some(other) => value_json(other, false)?
                        .map(|k| k.to_string())
                        .unwrap_or_default(),
                    None => String::new(),
                };
                let value = match e.get("value") {
                    Some(v) => value_json(v, false)?.unwrap_or(Json::Null),
                    None => default_json(entry.fields.iter().find(|f| f.name == "value")),
                };
                map.insert(key, value);
            }
            return Ok(Some(Json::Object(map)));
        }
        if f.repeated {
            let mut list = Vec::new();
            for v in values {
                list.push(value_json(v, false)?.unwrap_or(Json::Null));
            }
            return Ok(Some(Json::Array(list)));
        }
        match values.next_back() {
            Some(v) => value_json(v, f.ty == Ty::String),
            None => Ok(None),
        }
    }

    fn object(&self) -> Result<Map<String, Json>, ApiError> {
        let schema_props = self.message.name.ends_with(".JSONSchemaProps");
        let properties = crate::openapi::schemas()
            .get(&openapi_name(self.message.name))
            .and_then(|s| s.get("properties"))
            .and_then(Json::as_object);
        let mut map = Map::new();
        for (index, f) in self.message.fields.iter().enumerate() {
            if !self.values.iter().any(|(i, _)| *i == index) {
                continue;
            }
            let Some(json) = self.field_json(index)? else {
                continue;
            };
            // Go structs embedded with `json:",inline"` are a field in protobuf but their
            // fields sit in the parent in JSON (`Volume.volumeSource`, `Probe.handler`,
            // `IngressRule.ingressRuleValue`): the parent's schema does not know the field.
            let inline = !f.repeated
                && matches!(f.ty, Ty::Message(_))
                && properties.is_some_and(|p| !p.contains_key(f.name));
            match json {
                Json::Object(inner) if inline => map.extend(inner),
                json => {
                    let key = if schema_props {
                        schema_prop_name(f.name)
                    } else {
                        f.name.to_owned()
                    };
                    map.insert(key, json);
                }
            }
        }
        Ok(map)
    }

    /// `JSONSchemaPropsOrArray|OrBool|OrStringArray`: the schema when there is one, else the
    /// array of schemas, the boolean or the string list.
    fn schema_or(&self) -> Result<Option<Json>, ApiError> {
        for name in ["schema", "jSONSchemas", "property"] {
            if let Some(index) = self.message.fields.iter().position(|f| f.name == name) {
                if self.values.iter().any(|(i, _)| *i == index) {
                    return self.field_json(index);
                }
            }
        }
        Ok(match self.get("allows") {
            Some(Val::Bool(b)) => Some(Json::Bool(*b)),
            _ => None,
        })
    }
}

/// The wire payload of one field.
enum Payload<'a> {
    Varint(u64),
    Fixed(&'a [u8]),
    Len(&'a [u8]),
}

fn scalar(ty: Ty) -> bool {
    !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_))
}

/// A value as JSON; `drop_empty` drops `""` (singular strings: Go writes them always).
fn value_json(v: &Val, drop_empty: bool) -> Result<Option<Json>, ApiError> {
    Ok(match v {
        Val::Int(n) => Some(Json::from(*n)),
        Val::UInt(n) => Some(Json::from(*n)),
        Val::Float(n) => serde_json::Number::from_f64(*n).map(Json::Number),
        Val::Bool(b) => Some(Json::Bool(*b)),
        Val::Str(s) if drop_empty && s.is_empty() => None,
        Val::Str(s) => Some(Json::String((*s).to_owned())),
        Val::Bytes(b) => Some(Json::String(
            base64::engine::general_purpose::STANDARD.encode(b),
        )),
        Val::Msg(m) => m.to_json()?,
    })
}

/// The JSON of a map value that was not written (its type's zero value).
fn default_json(field: Option<&Field>) -> Json {
    match field.map(|f| f.ty) {
        Some(Ty::String) | Some(Ty::Bytes) => Json::String(String::new()),
        Some(Ty::Bool) => Json::Bool(false),
        Some(Ty::Message(_)) | None => Json::Null,
        Some(_) => Json::from(0),
    }
}

/// The OpenAPI component name of a message (`api.core.v1.Pod` → `io.k8s.api.core.v1.Pod`).
fn openapi_name(message: &str) -> String {
    match message.strip_prefix("apiextensions_apiserver.") {
        Some(rest) => format!("io.k8s.apiextensions-apiserver.{rest}"),
        None => format!("io.k8s.{message}"),
    }
}

/// `metav1.Time` (seconds) or `MicroTime` (microseconds), UTC; the zero time is absent.
fn time(seconds: i64, nanos: i64, micro: bool) -> Option<Json> {
    if seconds == 0 && nanos == 0 {
        return None;
    }
    let nanos = i32::try_from(nanos).unwrap_or(0);
    let at = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 }).ok()?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Some(Json::String(at.strftime(format).to_string()))
}

/// Go's `time.Duration.String()`: `0s`, `1.5µs`, `300ms`, `1m30s`, `2h0m0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let fraction = |value: u64, unit: u64| {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let frac = format!("{rest:0digits$}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", fraction(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", fraction(n, 1_000_000));
    }
    let secs = n / 1_000_000_000;
    let seconds = fraction(n % 60_000_000_000, 1_000_000_000);
    let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
    match (hours, secs >= 60) {
        (0, false) => format!("{sign}{seconds}s"),
        (0, true) => format!("{sign}{minutes}m{seconds}s"),
        _ => format!("{sign}{hours}h{minutes}m{seconds}s"),
    }
}

/// JSON names of `JSONSchemaProps` fields whose proto names had to differ.
fn schema_prop_name(proto: &str) -> String {
    match proto {
        "ref" => "$ref".into(),
        "schema" => "$schema".into(),
        p if p.starts_with("xKubernetes") => {
            let mut out = String::from("x-kubernetes");
            for c in p["xKubernetes".len()..].chars() {
                if c.is_ascii_uppercase() {
                    out.push('-');
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
        p => p.to_owned(),
    }
}

#[cfg(test)]
mod tests;
