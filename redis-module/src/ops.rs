//! Reading and writing plain Redis values from module code.
//!
//! Writes reach replicas and the AOF as the plain command they are (`HSET`, `SADD`,
//! `SET … PXAT` with absolute times). The ones on the publish path — string values with
//! an absolute expiry (the sender policy, room history positions), history expiry and
//! deletion — use the low-level key API and replicate the command themselves
//! ([`set_string`], [`expire_at`], [`delete`]): `RM_Call` costs a few µs per call. The
//! rest go through `RM_Call` with the replicate flag ([`write`]). Reads use the
//! low-level key API, which is faster and never replicates (`SISMEMBER` and
//! `SRANDMEMBER`, which it lacks, go through `RM_Call` unreplicated).

use std::os::raw::c_int;
use std::ptr::NonNull;

use redis_module::key::{KeyFlags, RedisKey};
use redis_module::raw::{self, KeyType};
use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, RedisError};
use redis_module::{RedisString, ScanKeyCursor};

use crate::args::{coded, err};

/// A Redis string of `bytes`, for a key name or a command argument. Unlike
/// `Context::create_string` it takes any bytes (no C string in between: no NUL check
/// that could fail, no extra allocation and copy), which matters on the publish path,
/// where every inbox append names its key, id and channel.
pub fn string(ctx: &Context, bytes: impl AsRef<[u8]>) -> RedisString {
    RedisString::create_from_slice(ctx.get_raw(), bytes.as_ref())
}

/// Options for every write: replicate the effect, return errors as values.
fn write_options() -> CallOptions {
    CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build()
}

/// Runs a write command, replicated, and returns its integer reply (0 for non-integers).
pub fn write(ctx: &Context, command: &str, args: &[&[u8]]) -> Result<i64, RedisError> {
    let reply: CallResult = ctx.call_ext(command, &write_options(), args);
    match reply {
        Ok(CallReply::I64(n)) => Ok(n.to_i64()),
        Ok(_) => Ok(0),
        Err(e) => Err(err(format!(
            "{command} failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
    }
}

/// Fails with `WRONGTYPE` unless the key is empty or of `expected` type.
fn expect_type(key_type: KeyType, expected: KeyType, name: &str) -> Result<bool, RedisError> {
    if key_type == KeyType::Empty {
        return Ok(false);
    }
    if key_type != expected {
        return Err(coded(
            "WRONGTYPE",
            format!("roomcast key {name} holds the wrong kind of value"),
        ));
    }
    Ok(true)
}

/// Opens a key for reading without touching its LRU/LFU data or keyspace stats.
fn open_read(ctx: &Context, name: &str) -> RedisKey {
    ctx.open_key_with_flags(&string(ctx, name), KeyFlags::NOTOUCH)
}

/// `HGET name field`.
pub fn hget(ctx: &Context, name: &str, field: &str) -> Result<Option<String>, RedisError> {
    let key = open_read(ctx, name);
    if !expect_type(key.key_type(), KeyType::Hash, name)? {
        return Ok(None);
    }
    let value = key.hash_get(field)?;
    Ok(value.map(|v| String::from_utf8_lossy(v.as_slice()).into_owned()))
}

/// Every field/value pair of a hash (`HGETALL`), in storage order.
pub fn hgetall(ctx: &Context, name: &str) -> Result<Vec<(String, String)>, RedisError> {
    let key = open_read(ctx, name);
    if !expect_type(key.key_type(), KeyType::Hash, name)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    ScanKeyCursor::new(key).for_each(|_, field, value| {
        out.push((
            String::from_utf8_lossy(field.as_slice()).into_owned(),
            String::from_utf8_lossy(value.as_slice()).into_owned(),
        ));
    });
    Ok(out)
}

/// Every member of a set (`SMEMBERS`).
pub fn smembers(ctx: &Context, name: &str) -> Result<Vec<String>, RedisError> {
    let key = open_read(ctx, name);
    if !expect_type(key.key_type(), KeyType::Set, name)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    ScanKeyCursor::new(key).for_each(|_, member, _| {
        out.push(String::from_utf8_lossy(member.as_slice()).into_owned());
    });
    Ok(out)
}

/// Options of the reads that go through `RM_Call`: no replication, errors as values.
fn read_options() -> CallOptions {
    CallOptionsBuilder::new().errors_as_replies().build()
}

/// `SISMEMBER name member` (false for a missing key, without a call).
pub fn sismember(ctx: &Context, name: &str, member: &str) -> Result<bool, RedisError> {
    if count(ctx, name)? == 0 {
        return Ok(false);
    }
    let reply: CallResult = ctx.call_ext(
        "SISMEMBER",
        &read_options(),
        &[name.as_bytes(), member.as_bytes()],
    );
    match reply {
        Ok(CallReply::I64(n)) => Ok(n.to_i64() == 1),
        Ok(_) => Ok(false),
        Err(e) => Err(err(format!(
            "SISMEMBER failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
    }
}

/// Up to `n` distinct members of a set (`SRANDMEMBER name n`: O(n)).
pub fn srandmember(ctx: &Context, name: &str, n: usize) -> Result<Vec<Vec<u8>>, RedisError> {
    if count(ctx, name)? == 0 {
        return Ok(Vec::new());
    }
    let n = n.to_string();
    let reply: CallResult = ctx.call_ext(
        "SRANDMEMBER",
        &read_options(),
        &[name.as_bytes(), n.as_bytes()],
    );
    match reply {
        Ok(CallReply::Array(items)) => Ok(items
            .iter()
            .filter_map(|item| match item {
                Ok(CallReply::String(s)) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect()),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(err(format!(
            "SRANDMEMBER failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
    }
}

/// Number of elements of a hash, set or stream: 0 when the key does not exist.
/// Low-level (`RM_ValueLength`), so counting never shows up as a client command.
pub fn count(ctx: &Context, name: &str) -> Result<u64, RedisError> {
    let key_name = string(ctx, name);
    let key = RawKey::open(ctx, &key_name, false)?;
    match key.key_type() {
        KeyType::Empty => Ok(0),
        KeyType::Hash | KeyType::Set | KeyType::Stream => Ok(key.value_length() as u64),
        _ => Err(coded(
            "WRONGTYPE",
            format!("roomcast key {name} holds the wrong kind of value"),
        )),
    }
}

/// A key opened with the raw `RM_OpenKey`, closed on drop: for the low-level calls
/// redis-module has no safe wrapper for (`RM_StreamAdd`, `RM_ValueLength`).
/// Opened for reading, a key that does not exist is `None` (Redis returns NULL).
pub struct RawKey(Option<NonNull<raw::RedisModuleKey>>);

impl RawKey {
    /// Opens `name` for reading (without touching LRU/LFU) or for writing.
    pub fn open(ctx: &Context, name: &RedisString, write: bool) -> Result<Self, RedisError> {
        // SAFETY: function pointers are set by Redis at module load and never change.
        let open = unsafe { raw::RedisModule_OpenKey }
            .ok_or_else(|| err("internal: RM_OpenKey is not available"))?;
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH
        };
        // SAFETY: ctx and name are valid for the duration of the command.
        let key = NonNull::new(unsafe { open(ctx.get_raw(), name.inner, mode as c_int) });
        if write && key.is_none() {
            return Err(err("internal: cannot open a key for writing"));
        }
        Ok(RawKey(key))
    }

    /// The raw key pointer (null for a missing key opened for reading).
    pub fn as_ptr(&self) -> *mut raw::RedisModuleKey {
        self.0.map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        let Some(key) = self.0 else {
            return KeyType::Empty;
        };
        // SAFETY: the key is open.
        let kind = unsafe { raw::RedisModule_KeyType.map_or(0, |f| f(key.as_ptr())) };
        match kind as isize {
            raw::REDISMODULE_KEYTYPE_STRING => KeyType::String,
            raw::REDISMODULE_KEYTYPE_LIST => KeyType::List,
            raw::REDISMODULE_KEYTYPE_HASH => KeyType::Hash,
            raw::REDISMODULE_KEYTYPE_SET => KeyType::Set,
            raw::REDISMODULE_KEYTYPE_ZSET => KeyType::ZSet,
            raw::REDISMODULE_KEYTYPE_MODULE => KeyType::Module,
            raw::REDISMODULE_KEYTYPE_STREAM => KeyType::Stream,
            _ => KeyType::Empty,
        }
    }

    /// Elements of the value (`RM_ValueLength`); 0 for an empty key.
    pub fn value_length(&self) -> usize {
        let Some(key) = self.0 else { return 0 };
        // SAFETY: the key is open.
        unsafe { raw::RedisModule_ValueLength.map_or(0, |f| f(key.as_ptr())) }
    }
}

impl Drop for RawKey {
    fn drop(&mut self) {
        // SAFETY: the pointer came from RM_OpenKey and is closed exactly once.
        if let (Some(key), Some(close)) = (self.0, unsafe { raw::RedisModule_CloseKey }) {
            unsafe { close(key.as_ptr()) };
        }
    }
}

/// The bytes of a string key, if it exists.
pub fn get_string(ctx: &Context, name: &str) -> Result<Option<Vec<u8>>, RedisError> {
    let key = open_read(ctx, name);
    if !expect_type(key.key_type(), KeyType::String, name)? {
        return Ok(None);
    }
    Ok(key.read()?.map(<[u8]>::to_vec))
}

/// Redis's clock, in Unix milliseconds (cached per command by Redis).
pub fn now_ms() -> i64 {
    // SAFETY: RM_Milliseconds takes no arguments and exists in every Redis ≥ 4.
    unsafe { redis_module::raw::RedisModule_Milliseconds.map_or(0, |now| now()) }
}

/// `SET name value [PXAT expire_at_ms]` without `RM_Call` (the publish path: the sender
/// policy, room history positions): `RM_StringSet`, which replaces any value and any TTL
/// as `SET` does, then `RM_SetAbsExpire`; replicated as exactly that `SET`, with the
/// absolute time, so replicas and the AOF get the same absolute expiry.
pub fn set_string(
    ctx: &Context,
    name: &str,
    value: &[u8],
    expire_at_ms: Option<i64>,
) -> Result<(), RedisError> {
    let missing = || err("internal: the string key API is not available in this Redis");
    // SAFETY: function pointers are set by Redis at module load and never change.
    let (string_set, abs_expire) = unsafe {
        (
            raw::RedisModule_StringSet.ok_or_else(missing)?,
            raw::RedisModule_SetAbsExpire.ok_or_else(missing)?,
        )
    };
    if expire_at_ms.is_some_and(|at| at <= now_ms()) {
        // What `SET … PXAT` does with a time already past: the key is gone.
        return delete(ctx, name);
    }
    let key_name = string(ctx, name);
    let value = RedisString::create_from_slice(ctx.get_raw(), value);
    let key = RawKey::open(ctx, &key_name, true)?;
    // SAFETY: the key is open for writing; the value lives until after the call.
    if unsafe { string_set(key.as_ptr(), value.inner) } != raw::REDISMODULE_OK as c_int {
        return Err(err(format!("cannot write {name}")));
    }
    let Some(at) = expire_at_ms else {
        drop(key);
        ctx.replicate("SET", &[&key_name, &value][..]);
        return Ok(());
    };
    // SAFETY: as above; the key now holds the string just set.
    if unsafe { abs_expire(key.as_ptr(), at) } != raw::REDISMODULE_OK as c_int {
        return Err(err(format!("cannot set the expiry of {name}")));
    }
    drop(key);
    let pxat = string(ctx, "PXAT");
    let at = string(ctx, at.to_string());
    ctx.replicate("SET", &[&key_name, &value, &pxat, &at][..]);
    Ok(())
}

/// `PEXPIREAT name at_ms` without `RM_Call`, on a key that exists; replicated as that
/// command. Nothing happens (and nothing is replicated) when the key does not exist.
pub fn expire_at(ctx: &Context, name: &str, at_ms: i64) -> Result<(), RedisError> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let abs_expire = unsafe { raw::RedisModule_SetAbsExpire }
        .ok_or_else(|| err("internal: RM_SetAbsExpire is not available in this Redis"))?;
    let key_name = string(ctx, name);
    let key = RawKey::open(ctx, &key_name, true)?;
    if key.key_type() == KeyType::Empty {
        return Ok(());
    }
    // SAFETY: the key is open for writing and holds a value.
    if unsafe { abs_expire(key.as_ptr(), at_ms) } != raw::REDISMODULE_OK as c_int {
        return Err(err(format!("cannot set the expiry of {name}")));
    }
    drop(key);
    let at = string(ctx, at_ms.to_string());
    ctx.replicate("PEXPIREAT", &[&key_name, &at][..]);
    Ok(())
}

/// `DEL name` without `RM_Call`; replicated (as Redis does) only when the key existed.
pub fn delete(ctx: &Context, name: &str) -> Result<(), RedisError> {
    // SAFETY: function pointers are set by Redis at module load and never change.
    let delete_key = unsafe { raw::RedisModule_DeleteKey }
        .ok_or_else(|| err("internal: RM_DeleteKey is not available"))?;
    let key_name = string(ctx, name);
    let key = RawKey::open(ctx, &key_name, true)?;
    if key.key_type() == KeyType::Empty {
        return Ok(());
    }
    // SAFETY: the key is open for writing and holds a value.
    if unsafe { delete_key(key.as_ptr()) } != raw::REDISMODULE_OK as c_int {
        return Err(err(format!("cannot delete {name}")));
    }
    drop(key);
    ctx.replicate("DEL", &[&key_name][..]);
    Ok(())
}
