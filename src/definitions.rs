//! The durable definitions file, `<data_dir>/definitions.json`: vhosts, users with their
//! permissions (passwords as RabbitMQ's salted SHA-256 hashes), runtime policies, and the
//! durable exchanges, queues and bindings, rewritten after every change and restored at start.
//!
//! Each write goes to a temporary file that is fsync'd, renamed over the old one, and followed by
//! an fsync of the directory, so a crash leaves either the old file or the new one, never a torn
//! one. Values keep their types: each is an object with one key naming the type
//! (`{"long": 5}`, `{"string": "x"}`, `{"table": [...]}`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{json, Map, Value as Json};
use warren_core::auth::{Permissions, User, PASSWORD_HASHING};
use warren_core::definitions::{
    BindingDefinition, Definitions, DestinationKind, ExchangeDefinition, PolicyDefinition, QueueDefinition,
};
use warren_core::exchange::ExchangeKind;
use warren_core::name::{UserName, VhostName};
use warren_core::value::{Table, Value};

/// The format's version, checked on load. Version 1 files (before users, permissions and
/// policies were stored) still load.
const FORMAT_VERSION: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid definitions file: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Group commit for the definitions file: a change returns once a write that began after it
/// has finished. Changes made while a write runs share the next one, so a burst of declares
/// (a fleet of persistent MQTT sessions reconnecting) costs a few writes, not one each.
#[derive(Debug, Default)]
pub struct GroupWriter {
    state: std::sync::Mutex<WriterState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Changes announced so far.
    requested: u64,
    /// Changes covered by a finished write.
    written: u64,
    writing: bool,
}

/// Ends a write: clears `writing`, records what it covered (if it finished), wakes waiters.
struct WritingGuard<'a> {
    writer: &'a GroupWriter,
    covers: Option<u64>,
}

impl Drop for WritingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.writer.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.writing = false;
        if let Some(covers) = self.covers {
            state.written = state.written.max(covers);
        }
        self.writer.done.notify_all();
    }
}

impl GroupWriter {
    /// Records a change and returns once it is written: by this caller, which then writes
    /// (with `write`, taking a fresh snapshot) as long as changes keep coming, or by the writer
    /// already at work.
    pub fn changed(&self, write: impl Fn()) {
        let lock = || self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut state = lock();
        state.requested += 1;
        let mine = state.requested;
        loop {
            if state.written >= mine {
                return;
            }
            if !state.writing {
                state.writing = true;
                let covers = state.requested;
                drop(state);
                // Even if `write` panics, the next caller must be able to write: a guard
                // clears the flag (without counting the write as done) and wakes the waiters.
                let mut guard = WritingGuard { writer: self, covers: None };
                write();
                guard.covers = Some(covers);
                drop(guard);
                state = lock();
                continue;
            }
            state = self.done.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("definitions.json")
}

/// Loads the definitions, or `None` if there is no file yet.
pub fn load(path: &Path) -> Result<Option<Definitions>, DefinitionsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DefinitionsError::Io { path: path.to_owned(), source }),
    };
    let invalid = |reason: String| DefinitionsError::Invalid { path: path.to_owned(), reason };
    let json: Json = serde_json::from_str(&text).map_err(|error| invalid(error.to_string()))?;
    from_json(&json).map(Some).map_err(invalid)
}

/// Writes the definitions durably (temporary file, fsync, rename, directory fsync).
pub fn save(path: &Path, definitions: &Definitions) -> Result<(), DefinitionsError> {
    let io = |source| DefinitionsError::Io { path: path.to_owned(), source };
    let temporary = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&to_json(definitions)).expect("JSON values serialise");
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(directory) = path.parent() {
        File::open(directory).and_then(|directory| directory.sync_all()).map_err(io)?;
    }
    Ok(())
}

pub fn to_json(definitions: &Definitions) -> Json {
    json!({
        "version": FORMAT_VERSION,
        "vhosts": definitions.vhosts.iter().map(|vhost| vhost.as_str()).collect::<Vec<_>>(),
        "exchanges": definitions.exchanges.iter().map(|exchange| json!({
            "vhost": exchange.vhost.as_str(),
            "name": exchange.name,
            "type": exchange.kind.name(),
            "auto_delete": exchange.auto_delete,
            "internal": exchange.internal,
            "arguments": table_to_json(&exchange.arguments),
        })).collect::<Vec<_>>(),
        "queues": definitions.queues.iter().map(|queue| json!({
            "vhost": queue.vhost.as_str(),
            "name": queue.name,
            "auto_delete": queue.auto_delete,
            "arguments": table_to_json(&queue.arguments),
        })).collect::<Vec<_>>(),
        "bindings": definitions.bindings.iter().map(|binding| json!({
            "vhost": binding.vhost.as_str(),
            "source": binding.source,
            "destination": binding.destination,
            "destination_type": match binding.destination_kind {
                DestinationKind::Queue => "queue",
                DestinationKind::Exchange => "exchange",
            },
            "key": binding.key,
            "arguments": table_to_json(&binding.arguments),
        })).collect::<Vec<_>>(),
        "users": definitions.users.iter().flatten().map(|user| json!({
            "name": user.name.as_str(),
            "password_hash": user.password_hash,
            "hashing_algorithm": PASSWORD_HASHING,
            "tags": user.tags,
        })).collect::<Vec<_>>(),
        "permissions": definitions.users.iter().flatten().flat_map(|user| {
            let mut permissions: Vec<_> = user.permissions.iter().collect();
            permissions.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            permissions.into_iter().map(|(vhost, permissions)| json!({
                "user": user.name.as_str(),
                "vhost": vhost.as_str(),
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            })).collect::<Vec<_>>()
        }).collect::<Vec<_>>(),
        "policies": definitions.policies.iter().map(|policy| json!({
            "vhost": policy.vhost.as_str(),
            "name": policy.name,
            "pattern": policy.pattern,
            "apply-to": policy.apply_to,
            "priority": policy.priority,
            "definition": table_to_json(&policy.definition),
        })).collect::<Vec<_>>(),
    })
}

fn from_json(json: &Json) -> Result<Definitions, String> {
    let version = json["version"].as_u64();
    if version != Some(FORMAT_VERSION) && version != Some(1) {
        return Err(format!("unsupported version {}", json["version"]));
    }
    let text = |value: &Json, field: &str| value[field].as_str().map(str::to_owned).ok_or(format!("missing {field}"));
    let flag = |value: &Json, field: &str| value[field].as_bool().ok_or(format!("missing {field}"));
    let list = |field: &str| json[field].as_array().cloned().ok_or(format!("missing {field}"));
    let mut definitions = Definitions::default();
    for vhost in list("vhosts")? {
        definitions.vhosts.push(VhostName::new(vhost.as_str().ok_or("vhost name is not a string")?));
    }
    for exchange in list("exchanges")? {
        let kind = ExchangeKind::from_name(&text(&exchange, "type")?).ok_or("unknown exchange type")?;
        definitions.exchanges.push(ExchangeDefinition {
            vhost: VhostName::new(&text(&exchange, "vhost")?),
            name: text(&exchange, "name")?,
            kind,
            auto_delete: flag(&exchange, "auto_delete")?,
            internal: flag(&exchange, "internal")?,
            arguments: table_from_json(&exchange["arguments"])?,
        });
    }
    for queue in list("queues")? {
        definitions.queues.push(QueueDefinition {
            vhost: VhostName::new(&text(&queue, "vhost")?),
            name: text(&queue, "name")?,
            auto_delete: flag(&queue, "auto_delete")?,
            arguments: table_from_json(&queue["arguments"])?,
        });
    }
    for binding in list("bindings")? {
        let destination_kind = match text(&binding, "destination_type")?.as_str() {
            "queue" => DestinationKind::Queue,
            "exchange" => DestinationKind::Exchange,
            other => return Err(format!("unknown destination type {other}")),
        };
        definitions.bindings.push(BindingDefinition {
            vhost: VhostName::new(&text(&binding, "vhost")?),
            source: text(&binding, "source")?,
            destination: text(&binding, "destination")?,
            destination_kind,
            key: text(&binding, "key")?,
            arguments: table_from_json(&binding["arguments"])?,
        });
    }
    if version == Some(1) {
        return Ok(definitions);
    }
    let mut users = Vec::new();
    for user in list("users")? {
        if text(&user, "hashing_algorithm")? != PASSWORD_HASHING {
            return Err(format!("unsupported hashing algorithm {}", user["hashing_algorithm"]));
        }
        let tags = user["tags"].as_array().ok_or("missing tags")?;
        users.push(User {
            name: UserName::new(&text(&user, "name")?),
            password_hash: text(&user, "password_hash")?,
            tags: tags.iter().filter_map(|tag| tag.as_str().map(str::to_owned)).collect(),
            permissions: Default::default(),
        });
    }
    for permission in list("permissions")? {
        let name = text(&permission, "user")?;
        let user = users.iter_mut().find(|user| user.name.as_str() == name).ok_or("permission of an unknown user")?;
        let permissions = Permissions {
            configure: text(&permission, "configure")?,
            write: text(&permission, "write")?,
            read: text(&permission, "read")?,
        };
        user.permissions.insert(VhostName::new(&text(&permission, "vhost")?), permissions);
    }
    definitions.users = Some(users);
    for policy in list("policies")? {
        definitions.policies.push(PolicyDefinition {
            vhost: VhostName::new(&text(&policy, "vhost")?),
            name: text(&policy, "name")?,
            pattern: text(&policy, "pattern")?,
            apply_to: text(&policy, "apply-to")?,
            priority: policy["priority"].as_i64().and_then(|p| i32::try_from(p).ok()).ok_or("missing priority")?,
            definition: table_from_json(&policy["definition"])?,
        });
    }
    Ok(definitions)
}

fn table_to_json(table: &Table) -> Json {
    Json::Array(table.iter().map(|(name, value)| json!([name, value_to_json(value)])).collect())
}

fn table_from_json(json: &Json) -> Result<Table, String> {
    let mut table = Table::new();
    for entry in json.as_array().ok_or("a table is not a list")? {
        let name = entry[0].as_str().ok_or("a table entry has no name")?;
        table.insert(name, value_from_json(&entry[1])?);
    }
    Ok(table)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Result<Bytes, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|error| error.to_string()))
        .collect::<Result<Vec<u8>, String>>()
        .map(Bytes::from)
}

fn value_to_json(value: &Value) -> Json {
    let (tag, content) = match value {
        Value::Bool(v) => ("bool", json!(v)),
        Value::I8(v) => ("i8", json!(v)),
        Value::U8(v) => ("u8", json!(v)),
        Value::I16(v) => ("i16", json!(v)),
        Value::U16(v) => ("u16", json!(v)),
        Value::I32(v) => ("i32", json!(v)),
        Value::U32(v) => ("u32", json!(v)),
        Value::I64(v) => ("long", json!(v)),
        Value::F32(v) => ("f32", json!(v)),
        Value::F64(v) => ("f64", json!(v)),
        Value::Decimal { scale, value } => ("decimal", json!([scale, value])),
        Value::LongString(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => ("string", json!(text)),
            Err(_) => ("string_hex", json!(hex(bytes))),
        },
        Value::Array(values) => ("array", Json::Array(values.iter().map(value_to_json).collect())),
        Value::Timestamp(v) => ("timestamp", json!(v)),
        Value::Table(table) => ("table", table_to_json(table)),
        Value::ByteArray(bytes) => ("bytes_hex", json!(hex(bytes))),
        Value::Void => ("void", Json::Null),
    };
    let mut object = Map::new();
    object.insert(tag.to_owned(), content);
    Json::Object(object)
}

fn value_from_json(json: &Json) -> Result<Value, String> {
    let object = json.as_object().filter(|object| object.len() == 1).ok_or("a value is not a one-key object")?;
    let (tag, content) = object.iter().next().expect("checked one key");
    let integer = || content.as_i64().ok_or(format!("{tag} is not an integer"));
    Ok(match tag.as_str() {
        "bool" => Value::Bool(content.as_bool().ok_or("bool is not a boolean")?),
        "i8" => Value::I8(i8::try_from(integer()?).map_err(|error| error.to_string())?),
        "u8" => Value::U8(u8::try_from(integer()?).map_err(|error| error.to_string())?),
        "i16" => Value::I16(i16::try_from(integer()?).map_err(|error| error.to_string())?),
        "u16" => Value::U16(u16::try_from(integer()?).map_err(|error| error.to_string())?),
        "i32" => Value::I32(i32::try_from(integer()?).map_err(|error| error.to_string())?),
        "u32" => Value::U32(u32::try_from(integer()?).map_err(|error| error.to_string())?),
        "long" => Value::I64(integer()?),
        "f32" => Value::F32(content.as_f64().ok_or("f32 is not a number")? as f32),
        "f64" => Value::F64(content.as_f64().ok_or("f64 is not a number")?),
        "decimal" => Value::Decimal {
            scale: u8::try_from(content[0].as_u64().ok_or("decimal scale")?).map_err(|error| error.to_string())?,
            value: u32::try_from(content[1].as_u64().ok_or("decimal value")?).map_err(|error| error.to_string())?,
        },
        "string" => Value::string(content.as_str().ok_or("string is not a string")?),
        "string_hex" => Value::LongString(unhex(content.as_str().ok_or("string_hex is not a string")?)?),
        "array" => Value::Array(
            content.as_array().ok_or("array is not a list")?.iter().map(value_from_json).collect::<Result<_, _>>()?,
        ),
        "timestamp" => Value::Timestamp(content.as_u64().ok_or("timestamp is not an integer")?),
        "table" => Value::Table(table_from_json(content)?),
        "bytes_hex" => Value::ByteArray(unhex(content.as_str().ok_or("bytes_hex is not a string")?)?),
        "void" => Value::Void,
        other => return Err(format!("unknown value type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_changes_share_writes_and_none_returns_before_its_write() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let writer = Arc::new(GroupWriter::default());
        let writes = Arc::new(AtomicU64::new(0));
        // Each change bumps `changes`; a write copies it to `stored`, as a snapshot would.
        let changes = Arc::new(AtomicU64::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (writer, writes, changes, stored) =
                    (writer.clone(), writes.clone(), changes.clone(), stored.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = changes.fetch_add(1, Ordering::SeqCst) + 1;
                        writer.changed(|| {
                            writes.fetch_add(1, Ordering::SeqCst);
                            let snapshot = changes.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            stored.fetch_max(snapshot, Ordering::SeqCst);
                        });
                        assert!(stored.load(Ordering::SeqCst) >= mine, "returned before its change was written");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(stored.load(Ordering::SeqCst), 400);
        assert!(writes.load(Ordering::SeqCst) < 400, "{} writes for 400 changes", writes.load(Ordering::SeqCst));
    }

    #[test]
    fn a_write_that_panics_does_not_block_the_next() {
        let writer = GroupWriter::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.changed(|| panic!("a snapshot failed"));
        }));
        assert!(panicked.is_err());
        let written = std::cell::Cell::new(false);
        writer.changed(|| written.set(true));
        assert!(written.get(), "the next change is written");
    }

    #[test]
    fn definitions_round_trip_through_the_file() {
        let mut arguments = Table::new();
        for (name, value) in [
            ("x-message-ttl", Value::I64(1000)),
            ("x-dead-letter-exchange", Value::string("dlx")),
            ("flag", Value::Bool(true)),
            ("small", Value::U8(7)),
            ("raw", Value::LongString(Bytes::from_static(b"\xff\x00"))),
            ("nested", Value::Array(vec![Value::I32(-1), Value::Void])),
        ] {
            arguments.insert(name, value);
        }
        let vhost = VhostName::new("/");
        let definitions = Definitions {
            vhosts: vec![vhost.clone()],
            exchanges: vec![ExchangeDefinition {
                vhost: vhost.clone(),
                name: "orders".into(),
                kind: ExchangeKind::Topic,
                auto_delete: false,
                internal: true,
                arguments: arguments.clone(),
            }],
            queues: vec![QueueDefinition { vhost: vhost.clone(), name: "q".into(), auto_delete: true, arguments }],
            bindings: vec![BindingDefinition {
                vhost,
                source: "orders".into(),
                destination: "q".into(),
                destination_kind: DestinationKind::Queue,
                key: "a.*.#".into(),
                arguments: Table::new(),
            }],
            users: Some(vec![User {
                name: UserName::new("alice"),
                password_hash: warren_core::auth::hash_password("secret"),
                tags: vec!["monitoring".into()],
                permissions: [(
                    VhostName::new("/"),
                    Permissions { configure: "^a".into(), write: ".*".into(), read: "".into() },
                )]
                .into_iter()
                .collect(),
            }]),
            policies: vec![PolicyDefinition {
                vhost: VhostName::new("/"),
                name: "ttl".into(),
                pattern: "^tmp\\.".into(),
                apply_to: "queues".into(),
                priority: 3,
                definition: Table(vec![("message-ttl".to_owned(), Value::I64(60_000))]),
            }],
        };
        let dir = std::env::temp_dir().join(format!("warren-definitions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = path(&dir);
        save(&file, &definitions).expect("saves");
        assert_eq!(load(&file).expect("loads"), Some(definitions));
        std::fs::write(&file, "{\"version\": 99}").expect("write");
        assert!(load(&file).is_err());
        assert_eq!(load(&dir.join("missing.json")).expect("no file is fine"), None);
        std::fs::remove_dir_all(dir).ok();
    }
}
