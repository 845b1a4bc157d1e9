//! Reading and writing plain Redis values from module code.
//!
//! Writes go through `RM_Call` with the replicate flag, so each one reaches replicas
//! and the AOF as the plain command it is (`HSET`, `SADD`, `SET … PXAT` with absolute
//! times); reads use the low-level key API, which is faster and never replicates.

use redis_module::key::{KeyFlags, RedisKey};
use redis_module::{raw::KeyType, ScanKeyCursor};
use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, RedisError};

use crate::args::{coded, err};

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
    ctx.open_key_with_flags(&ctx.create_string(name), KeyFlags::NOTOUCH)
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

/// `HLEN` / `SCARD` / `XLEN` of a key: 0 when it does not exist.
pub fn count(ctx: &Context, command: &str, name: &str) -> Result<u64, RedisError> {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let reply: CallResult = ctx.call_ext(command, &options, &[name.as_bytes()]);
    match reply {
        Ok(CallReply::I64(n)) => Ok(u64::try_from(n.to_i64()).unwrap_or(0)),
        Ok(_) => Ok(0),
        Err(e) => Err(err(format!(
            "{command} {name} failed: {}",
            e.to_utf8_string().unwrap_or_default()
        ))),
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

/// Stores a string value that expires at an absolute time (`SET key value PXAT ms`),
/// replicated as written so replicas and the AOF get the same absolute expiry.
pub fn set_until(
    ctx: &Context,
    name: &str,
    value: &str,
    expire_at_ms: i64,
) -> Result<(), RedisError> {
    write(
        ctx,
        "SET",
        &[
            name.as_bytes(),
            value.as_bytes(),
            b"PXAT",
            expire_at_ms.to_string().as_bytes(),
        ],
    )
    .map(|_| ())
}
