//! How much an env may hold. A version past a limit is refused whole, with the
//! limit in the message; the guest's secrets tmpfs holds the largest env twice
//! (its files and its bundle).

/// The largest value of one secret, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// The most secrets one env holds.
pub const MAX_COUNT: usize = 200;
/// The most bytes of values one env holds.
pub const MAX_TOTAL: usize = 1024 * 1024;

/// Why a set of secrets is too much: which limit, in words.
pub fn check_total(count: usize, bytes: usize) -> Result<(), String> {
    if count > MAX_COUNT {
        return Err(format!("an env holds at most {MAX_COUNT} secrets; this would make {count}"));
    }
    if bytes > MAX_TOTAL {
        return Err(format!("an env's secrets hold at most {MAX_TOTAL} bytes in all; this would make {bytes}"));
    }
    Ok(())
}

/// Why one value is refused.
pub fn check_value(len: usize) -> Result<(), String> {
    if len > MAX_VALUE {
        return Err(format!("a secret's value is at most {MAX_VALUE} bytes; this one has {len}"));
    }
    Ok(())
}
