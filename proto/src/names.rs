//! Rules for the names operators choose: module, node, package and label
//! names. They end up in URLs, file names and environment variables, so they
//! are short and plain.

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name: 1 to 64 characters from `[A-Za-z0-9._-]`, starting with a
/// letter or digit. The error says what is wrong, naming `what`.
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} {name:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!(
            "{what} {name:?} must start with a letter or a digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {name:?} contains {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_plain_names_and_names_the_problem() {
        assert!(check("module name", "web-1.2_x").is_ok());
        assert_eq!(
            check("module name", "").unwrap_err(),
            "module name is empty"
        );
        assert!(check("node", "../etc").unwrap_err().contains("start with"));
        assert!(check("node", "a/b").unwrap_err().contains("'/'"));
        assert!(
            check("node", &"x".repeat(65))
                .unwrap_err()
                .contains("longer")
        );
    }
}
