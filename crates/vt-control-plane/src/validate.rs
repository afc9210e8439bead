//! Field validation shared by the commands. Messages say what is allowed.

use crate::error::ApiErr;

/// Names of orgs, apps, envs and process types: a DNS label.
pub fn name(field: &str, value: &str) -> Result<(), ApiErr> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.as_bytes()[0].is_ascii_lowercase()
        && !value.ends_with('-')
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiErr::invalid(field, format!("`{field}` must be 1-63 characters of a-z, 0-9 and '-', start with a letter and not end with '-'; got {}", shown(value))))
    }
}

/// Node names: DNS labels joined by dots (a host name), at most 253 characters.
pub fn node_name(field: &str, value: &str) -> Result<(), ApiErr> {
    let ok = !value.is_empty() && value.len() <= 253 && value.split('.').all(|label| name(field, label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ApiErr::invalid(
            field,
            format!("`{field}` must be a host name: labels of a-z, 0-9 and '-' joined by '.'; got {}", shown(value)),
        ))
    }
}

/// A DNS host name as a TLS client sends it in SNI: labels of a-z, 0-9 and '-'
/// joined by '.', at most 253 characters. Returned in lower case.
pub fn hostname(field: &str, value: &str) -> Result<String, ApiErr> {
    let lower = value.to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let numeric = lower.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if lower.len() <= 253 && !numeric && lower.split('.').all(label_ok) {
        Ok(lower)
    } else {
        Err(ApiErr::invalid(
            field,
            format!(
                "`{field}` must be a DNS host name (labels of a-z, 0-9 and '-' joined by '.', no IP addresses); got {}",
                shown(value)
            ),
        ))
    }
}

pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiErr> {
    if value.chars().count() > max {
        return Err(ApiErr::invalid(field, format!("`{field}` is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiErr::invalid(field, format!("`{field}` contains control characters")));
    }
    Ok(())
}

/// An image pinned by digest: `repository@sha256:<64 lowercase hex>`.
pub fn image_ref(field: &str, value: &str) -> Result<(String, String), ApiErr> {
    let bad = |why: &str| {
        ApiErr::invalid(
            field,
            format!(
                "`{field}` must be an image pinned by digest, `repository@sha256:<64 hex>`: {why}; got {}",
                shown(value)
            ),
        )
    };
    let (repo, digest) = value.split_once('@').ok_or_else(|| {
        bad("no `@sha256:` digest (tags are resolved when the registry is in use: push with `vt image push`)")
    })?;
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| bad("the digest algorithm must be sha256"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad("the digest must be 64 lowercase hex characters"));
    }
    let repo_ok = !repo.is_empty()
        && repo.len() <= 255
        && repo.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
        && !repo.starts_with('/')
        && !repo.ends_with('/');
    if !repo_ok {
        return Err(bad("the repository must be lowercase letters, digits and `._-/:`"));
    }
    Ok((repo.to_owned(), digest.to_owned()))
}

fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(80).collect();
    if value.chars().count() > 80 {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "acme", "my-app-2", &"a".repeat(63)] {
            assert!(name("name", good).is_ok(), "{good}");
        }
        for bad in ["", "A", "1app", "app-", "my_app", "my app", "é", &"a".repeat(64)] {
            let err = name("name", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("name"));
        }
        assert!(node_name("name", "node-1.example").is_ok());
        assert!(node_name("name", "node..1").is_err());
    }

    #[test]
    fn image_refs() {
        let d = "a".repeat(64);
        assert_eq!(
            image_ref("image", &format!("localhost:5000/acme/web@sha256:{d}")).unwrap().0,
            "localhost:5000/acme/web"
        );
        for bad in [
            "acme/web:v1".to_string(),
            format!("acme/web@sha512:{d}"),
            format!("acme/web@sha256:{}", "A".repeat(64)),
            format!("@sha256:{d}"),
            format!("Acme@sha256:{d}"),
        ] {
            assert!(image_ref("image", &bad).is_err(), "{bad}");
        }
    }
}
