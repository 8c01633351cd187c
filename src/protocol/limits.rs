//! The semantic checks every message passes after rkyv's structural check: names valid, lists
//! and strings within their named maximums (`constants`, Protocol section).
//!
//! The checks run on the archived (zero-copy) view, before anything is deserialized, so a
//! message breaking a limit costs no allocation. The encoder runs the same checks on what it
//! wrote, so a message that would be refused is never sent.

use rkyv::string::ArchivedString;
use rkyv::vec::ArchivedVec;

use super::error::{ProtocolError, TopicNameError};
use super::messages::ArchivedConfigEntry;
use crate::constants::{
    CONFIG_ENTRIES_MAX, CONFIG_KEY_BYTES_MAX, CONFIG_VALUE_BYTES_MAX, ERROR_MESSAGE_BYTES_MAX,
    TOPIC_NAME_BYTES_MAX,
};

/// The semantic checks of one archived message.
pub(crate) trait CheckArchived {
    fn check(&self) -> Result<(), ProtocolError>;

    /// The trailer bytes each entry of the message claims, in order. Only messages that
    /// carry record batches in the trailer (produce requests, fetch responses) claim any.
    fn trailer_lengths(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::empty()
    }
}

/// Checks a topic name: 1 to `TOPIC_NAME_BYTES_MAX` bytes of `[a-zA-Z0-9._-]`, and neither
/// `.` nor `..` (they would name directories).
pub fn check_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicNameError::TooLong {
            len: name.len(),
            max: TOPIC_NAME_BYTES_MAX,
        });
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved);
    }
    let valid = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    match name.bytes().position(|byte| !valid(byte)) {
        Some(index) => Err(TopicNameError::InvalidCharacter {
            byte: name.as_bytes()[index],
            index,
        }),
        None => Ok(()),
    }
}

pub(crate) fn topic(name: &ArchivedString) -> Result<(), ProtocolError> {
    Ok(check_topic_name(name.as_str())?)
}

pub(crate) fn count(what: &'static str, count: usize, max: usize) -> Result<(), ProtocolError> {
    if count > max {
        return Err(ProtocolError::TooMany { what, count, max });
    }
    Ok(())
}

pub(crate) fn string(
    what: &'static str,
    value: &ArchivedString,
    max: usize,
) -> Result<(), ProtocolError> {
    if value.len() > max {
        return Err(ProtocolError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

pub(crate) fn message(value: &ArchivedString) -> Result<(), ProtocolError> {
    string("error message", value, ERROR_MESSAGE_BYTES_MAX)
}

/// A list of topic names: at most `max` entries, each valid.
/// A per-partition list: at most `PARTITIONS_PER_REQUEST_MAX` entries, each naming a valid
/// topic (`topic_of` picks the name out of an entry).
pub(crate) fn partition_list<'a, T: 'a>(
    what: &'static str,
    entries: &'a ArchivedVec<T>,
    topic_of: impl Fn(&'a T) -> &'a ArchivedString,
) -> Result<(), ProtocolError> {
    count(
        what,
        entries.len(),
        crate::constants::PARTITIONS_PER_REQUEST_MAX,
    )?;
    entries.iter().try_for_each(|entry| topic(topic_of(entry)))
}

pub(crate) fn topics(names: &ArchivedVec<ArchivedString>, max: usize) -> Result<(), ProtocolError> {
    count("topic list", names.len(), max)?;
    names.iter().try_for_each(topic)
}

pub(crate) fn config_key(key: &ArchivedString) -> Result<(), ProtocolError> {
    if key.is_empty() || key.len() > CONFIG_KEY_BYTES_MAX {
        return Err(ProtocolError::InvalidConfig(format!(
            "config key of {} bytes is outside 1..={CONFIG_KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

pub(crate) fn config_value(value: &ArchivedString) -> Result<(), ProtocolError> {
    if value.len() > CONFIG_VALUE_BYTES_MAX {
        return Err(ProtocolError::InvalidConfig(format!(
            "config value of {} bytes exceeds {CONFIG_VALUE_BYTES_MAX}",
            value.len()
        )));
    }
    Ok(())
}

pub(crate) fn config_count(len: usize) -> Result<(), ProtocolError> {
    if len > CONFIG_ENTRIES_MAX {
        return Err(ProtocolError::InvalidConfig(format!(
            "{len} config entries, more than {CONFIG_ENTRIES_MAX}"
        )));
    }
    Ok(())
}

pub(crate) fn config_entries(
    entries: &ArchivedVec<ArchivedConfigEntry>,
) -> Result<(), ProtocolError> {
    config_count(entries.len())?;
    entries.iter().try_for_each(|entry| {
        config_key(&entry.key)?;
        config_value(&entry.value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_topic_names_pass() {
        for name in ["a", "orders", "Orders.v2", "a_b-c.d", "...", ".a", "0", "-"] {
            assert_eq!(check_topic_name(name), Ok(()), "{name}");
        }
        assert_eq!(check_topic_name(&"x".repeat(TOPIC_NAME_BYTES_MAX)), Ok(()));
    }

    #[test]
    fn invalid_topic_names_are_refused() {
        assert_eq!(check_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(check_topic_name("."), Err(TopicNameError::Reserved));
        assert_eq!(check_topic_name(".."), Err(TopicNameError::Reserved));
        assert_eq!(
            check_topic_name(&"x".repeat(TOPIC_NAME_BYTES_MAX + 1)),
            Err(TopicNameError::TooLong {
                len: TOPIC_NAME_BYTES_MAX + 1,
                max: TOPIC_NAME_BYTES_MAX
            })
        );
        for (name, byte, index) in [
            ("a b", b' ', 1),
            ("a/b", b'/', 1),
            ("é", 0xC3, 0),
            ("x\0", 0, 1),
        ] {
            assert_eq!(
                check_topic_name(name),
                Err(TopicNameError::InvalidCharacter { byte, index }),
                "{name}"
            );
        }
    }
}
