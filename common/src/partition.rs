//! Partitions: every room and every user lives in exactly one.
//!
//! `partition(name) = crc16(name) mod P`. Each partition has a short hash tag chosen so
//! that the Redis Cluster slots of the `P` tags are spread evenly over the 16384 slots;
//! every key of a partition starts with `{tag}`, so all of them live in one slot and a
//! module command touching one partition stays atomic on one shard.
//!
//! A name may be given plain (`lobby`) or partition-tagged (`{3.17}lobby`); the tagged
//! form is what cluster clients send so that Redis routes the command by its first
//! argument. Both mean the same room; the tag is checked, never trusted.

use crate::crc16::{crc16, key_slot, CLUSTER_SLOTS};
use crate::names::{check_name, NameError};

/// Default number of partitions (`partitions` module argument).
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Most partitions a dataset may have (tags stay short and slots stay spread).
pub const MAX_PARTITIONS: u32 = 1024;

/// The partition layout of one dataset: the partition count and every partition's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioner {
    /// `tags[p]` is the hash tag (without braces) of partition `p`.
    tags: Vec<String>,
}

/// A name resolved to its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The partition the name belongs to.
    pub partition: u32,
    /// The plain name, without any `{tag}` prefix; this is how the name is stored.
    pub name: &'a str,
}

impl Partitioner {
    /// Builds the layout for `count` partitions (1..=[`MAX_PARTITIONS`]).
    ///
    /// Tag `p` is the first string `"{p}.{n}"` (n = 0, 1, …) whose cluster slot falls in
    /// the `p`-th of `count` equal slot ranges, so consecutive partitions sit on
    /// consecutive slot ranges and a cluster's shards get equal shares.
    pub fn new(count: u32) -> Result<Self, String> {
        if count == 0 || count > MAX_PARTITIONS {
            return Err(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {count}"
            ));
        }
        let slots = u32::from(CLUSTER_SLOTS);
        let tags = (0..count)
            .map(|p| {
                let low = p * slots / count;
                let high = (p + 1) * slots / count;
                (0u32..)
                    .map(|n| format!("{p}.{n}"))
                    .find(|tag| {
                        let slot = u32::from(key_slot(tag.as_bytes()));
                        (low..high).contains(&slot)
                    })
                    .unwrap_or_default()
            })
            .collect();
        Ok(Self { tags })
    }

    /// Number of partitions.
    pub fn count(&self) -> u32 {
        self.tags.len() as u32
    }

    /// All tags, indexed by partition.
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// The hash tag of partition `p` (without braces); empty for an out-of-range `p`.
    pub fn tag(&self, p: u32) -> &str {
        self.tags.get(p as usize).map(String::as_str).unwrap_or("")
    }

    /// The partition of a plain name.
    pub fn partition_of(&self, plain: &[u8]) -> u32 {
        u32::from(crc16(plain)) % self.count().max(1)
    }

    /// The partition whose tag is `tag`, if any.
    pub fn partition_of_tag(&self, tag: &str) -> Option<u32> {
        self.tags.iter().position(|t| t == tag).map(|p| p as u32)
    }

    /// Whether a command whose routing key (its first argument) is `first_arg` reaches
    /// the Redis Cluster slot of partition `p`: true for tagged names (`{tag}room`) and
    /// the bare tag, and for a plain name only when its own slot happens to be the
    /// partition's. Redis Cluster routes a module command by its first argument, so a
    /// plain name may land on a shard that does not hold its partition.
    pub fn routes_to(&self, first_arg: &[u8], p: u32) -> bool {
        let tag = format!("{{{}}}", self.tag(p));
        crate::crc16::key_slot(first_arg) == crate::crc16::key_slot(tag.as_bytes())
    }

    /// The tagged form `{tag}name` of a plain name, as cluster clients send it.
    pub fn tagged(&self, plain: &str) -> String {
        let tag = self.tag(self.partition_of(plain.as_bytes()));
        format!("{{{tag}}}{plain}")
    }

    /// Resolves a room / user / key name, plain or tagged, checking the tag.
    pub fn resolve<'a>(&self, raw: &'a [u8]) -> Result<Resolved<'a>, NameError> {
        let (tag, rest) = split_tag(raw)?;
        if tag.is_some() && rest.starts_with(b"{") {
            // `{tag}{tag2}room`: the plain part must not look tagged itself, or the name
            // checked here (`{tag2}room`) and the room a later resolve finds (`room`)
            // differ — an edge would authorize one room and the module join another.
            return Err(NameError::BadCharacter);
        }
        let name = check_name(rest)?;
        let partition = self.partition_of(rest);
        if let Some(tag) = tag {
            let expected = self.tag(partition);
            if tag != expected.as_bytes() {
                return Err(NameError::WrongTag(expected.to_string()));
            }
        }
        Ok(Resolved { partition, name })
    }

    /// Resolves a *partition argument*: a room or user name (plain or tagged), or a
    /// partition's own tag in braces (`{3.17}`).
    pub fn resolve_partition(&self, raw: &[u8]) -> Result<u32, NameError> {
        let (tag, rest) = split_tag(raw)?;
        match tag {
            Some(tag) if rest.is_empty() => std::str::from_utf8(tag)
                .ok()
                .and_then(|t| self.partition_of_tag(t))
                .ok_or_else(|| NameError::WrongTag("a tag listed by RC.INFO".to_string())),
            _ => self.resolve(raw).map(|r| r.partition),
        }
    }
}

/// Splits `{tag}rest` into `(Some(tag), rest)`; a name not starting with `{` is plain.
fn split_tag(raw: &[u8]) -> Result<(Option<&[u8]>, &[u8]), NameError> {
    match raw.strip_prefix(b"{") {
        None => Ok((None, raw)),
        Some(after) => {
            let close = after
                .iter()
                .position(|&b| b == b'}')
                .ok_or(NameError::UnclosedTag)?;
            let tag = after.get(..close).unwrap_or_default();
            let rest = after.get(close + 1..).unwrap_or_default();
            if tag.is_empty() {
                return Err(NameError::WrongTag("a non-empty tag".to_string()));
            }
            Ok((Some(tag), rest))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_names_in_the_partitions_slot_route_to_it() {
        let p = Partitioner::new(16).unwrap();
        let part = p.partition_of(b"lobby");
        let tagged = p.tagged("lobby");
        assert!(p.routes_to(tagged.as_bytes(), part));
        assert!(p.routes_to(format!("{{{}}}", p.tag(part)).as_bytes(), part));
        assert!(!p.routes_to(tagged.as_bytes(), (part + 1) % 16));
        // A plain name routes by its own slot, which is not its partition tag's.
        assert_eq!(
            p.routes_to(b"lobby", part),
            crate::crc16::key_slot(b"lobby") == crate::crc16::key_slot(tagged.as_bytes())
        );
    }

    use super::*;

    #[test]
    fn tags_spread_over_equal_slot_ranges() {
        for count in [1u32, 2, 3, 16, 100, 1024] {
            let p = Partitioner::new(count).unwrap();
            assert_eq!(p.count(), count);
            for (i, tag) in p.tags().iter().enumerate() {
                let slot = u32::from(key_slot(tag.as_bytes()));
                let i = i as u32;
                assert!(slot >= i * 16384 / count && slot < (i + 1) * 16384 / count);
            }
        }
    }

    #[test]
    fn partition_counts_are_bounded() {
        assert!(Partitioner::new(0).is_err());
        assert!(Partitioner::new(1025).is_err());
    }

    #[test]
    fn plain_and_tagged_names_resolve_to_the_same_room() {
        let p = Partitioner::new(16).unwrap();
        let plain = p.resolve(b"lobby").unwrap();
        let tagged_name = p.tagged("lobby");
        let tagged = p.resolve(tagged_name.as_bytes()).unwrap();
        assert_eq!(plain, tagged);
        assert_eq!(plain.name, "lobby");
        // The tagged name hashes to the slot of its partition's tag.
        assert_eq!(
            key_slot(tagged_name.as_bytes()),
            key_slot(p.tag(plain.partition).as_bytes())
        );
    }

    #[test]
    fn wrong_or_broken_tags_are_refused() {
        let p = Partitioner::new(16).unwrap();
        let right = p.partition_of(b"lobby");
        let wrong_tag = p.tag((right + 1) % 16).to_string();
        let name = format!("{{{wrong_tag}}}lobby");
        assert!(matches!(
            p.resolve(name.as_bytes()),
            Err(NameError::WrongTag(_))
        ));
        assert_eq!(p.resolve(b"{abc"), Err(NameError::UnclosedTag));
        assert!(p.resolve(b"{}lobby").is_err());
        assert_eq!(p.resolve(b"{0.0}"), Err(NameError::Empty));
        // Tagged twice, each tag right for what follows it: still refused.
        let inner = p.tagged("lobby");
        let twice = format!("{{{}}}{inner}", p.tag(p.partition_of(inner.as_bytes())));
        assert_eq!(p.resolve(twice.as_bytes()), Err(NameError::BadCharacter));
    }

    #[test]
    fn partition_arguments_accept_names_and_bare_tags() {
        let p = Partitioner::new(16).unwrap();
        for part in 0..16 {
            let bare = format!("{{{}}}", p.tag(part));
            assert_eq!(p.resolve_partition(bare.as_bytes()), Ok(part));
        }
        let room = p.partition_of(b"lobby");
        assert_eq!(p.resolve_partition(b"lobby"), Ok(room));
        assert!(p.resolve_partition(b"{nope}").is_err());
        assert!(p.resolve_partition(b"").is_err());
    }
}
