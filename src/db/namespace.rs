//! `db.namespace` for spans: the database a URL names, and nothing else
//! of it (never the host, the user or a password). SQLite's is the file's
//! name, without the directories it sits in.

/// The database `url` names, when it names one.
pub(crate) fn database_name(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once(':')?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let name = if scheme.eq_ignore_ascii_case("sqlite") {
        let path = rest.trim_start_matches('/');
        path.rsplit(['/', '\\']).next().unwrap_or_default()
    } else {
        // scheme://[user[:password]@]host[:port]/name
        let authority_and_path = rest.strip_prefix("//")?;
        let (_, path) = authority_and_path.split_once('/')?;
        path.split('/').next().unwrap_or_default()
    };
    let name = percent_decoded(name)?;
    (!name.is_empty() && name != ":memory:").then_some(name)
}

/// `%xx` escapes decoded; `None` when they do not make UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                index += 3;
            }
            None => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::database_name;

    #[test]
    fn names_the_database_and_nothing_else() {
        assert_eq!(
            database_name("postgres://u:secret@db.example:5432/clinic?sslmode=require").as_deref(),
            Some("clinic")
        );
        assert_eq!(
            database_name("mysql://root@127.0.0.1:3306/my%20db").as_deref(),
            Some("my db")
        );
        assert_eq!(
            database_name("sqlite:///var/lib/sqlgate/app.db?mode=rwc").as_deref(),
            Some("app.db")
        );
        assert_eq!(database_name("sqlite::memory:"), None);
        assert_eq!(database_name("postgres://u@host:5432"), None);
        assert_eq!(database_name("postgres://u@host:5432/"), None);
        assert_eq!(database_name("nonsense"), None);
    }
}
