//! Checks of free text. Names, host names and image references are parsed
//! into their types (`vt_ids::Name`, `vt_ids::Hostname`, `vt_image::ImageRef`)
//! where requests are decoded; this is what is left.

use crate::error::ApiErr;

/// Free text (descriptions, reasons): at most `max` characters, no control characters but newline and tab.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiErr> {
    if value.chars().count() > max {
        return Err(ApiErr::invalid(field, format!("`{field}` is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiErr::invalid(field, format!("`{field}` contains control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_bounded_and_printable() {
        assert!(text("d", "two\nlines\tok", 20).is_ok());
        assert_eq!(text("d", "abc", 2).unwrap_err().field.as_deref(), Some("d"));
        assert!(text("d", "a\u{0}b", 20).is_err());
    }
}
