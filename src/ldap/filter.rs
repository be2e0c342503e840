//! The search filters: the admin's filter AND an escaped equality on the username field (logins),
//! or AND a presence test of the username field (the sync's listing of every user).

use ldap3::ldap_escape;

/// Checks that the admin's filter is one complete, parenthesised LDAP filter (RFC 4515).
pub fn validate_admin_filter(filter: &str) -> Result<(), String> {
    if !filter.starts_with('(') || !filter.ends_with(')') {
        return Err(format!("'{filter}' must be enclosed in parentheses"));
    }
    if filter.contains("%s") || filter.contains("%u") {
        return Err(format!(
            "'{filter}' contains a %-placeholder; the login is added automatically as (<username_field>=<login>)"
        ));
    }
    // One complete filter, not e.g. `(a=1)(b=2` nor the list `(a=1)(b=2)` (which composing
    // alone would let through).
    ldap3::parse_filter(filter)
        .map(|_| ())
        .map_err(|()| format!("'{filter}' is not a valid LDAP filter"))
}

/// `(&<filter>(<field>=<escaped login>))`, or just the equality without an admin filter.
/// Every filter metacharacter of the login (`*`, `(`, `)`, `\`, NUL) is escaped. Several
/// spellings of one login (an IDN domain in Unicode and in ASCII) become an OR.
pub fn user_filter(admin_filter: Option<&str>, username_field: &str, logins: &[&str]) -> String {
    let mut equality: String = logins
        .iter()
        .map(|login| format!("({username_field}={})", ldap_escape(*login)))
        .collect();
    if logins.len() > 1 {
        equality = format!("(|{equality})");
    }
    match admin_filter {
        Some(f) => format!("(&{f}{equality})"),
        None => equality,
    }
}

/// `(&<filter>(<field>=*))`, or just the presence test without an admin filter: every entry
/// that carries a username, as the sync lists them. The admin filter is the one validated by
/// [`validate_admin_filter`]; the field is a validated attribute name, so nothing is escaped.
pub(crate) fn all_users_filter(admin_filter: Option<&str>, username_field: &str) -> String {
    let presence = format!("({username_field}=*)");
    match admin_filter {
        Some(f) => format!("(&{f}{presence})"),
        None => presence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_equality_without_admin_filter() {
        assert_eq!(user_filter(None, "mail", &["a@b.c"]), "(mail=a@b.c)");
    }

    #[test]
    fn admin_filter_is_anded() {
        assert_eq!(
            user_filter(Some("(objectClass=person)"), "uid", &["jdoe"]),
            "(&(objectClass=person)(uid=jdoe))"
        );
    }

    #[test]
    fn two_spellings_are_ored() {
        assert_eq!(
            user_filter(
                None,
                "mail",
                &["b@bücher.example", "b@xn--bcher-kva.example"]
            ),
            "(|(mail=b@bücher.example)(mail=b@xn--bcher-kva.example))"
        );
    }

    #[test]
    fn injection_is_escaped() {
        let hostile = "*)(|(mail=*))(\\\0";
        let f = user_filter(Some("(objectClass=person)"), "mail", &[hostile]);
        assert_eq!(
            f,
            "(&(objectClass=person)(mail=\\2a\\29\\28|\\28mail=\\2a\\29\\29\\28\\5c\\00))"
        );
        // Still one equality assertion: the server sees no wildcard and no extra clause.
        assert!(ldap3::parse_filter(&f).is_ok());
        assert!(!f.contains("=*"));
    }

    #[test]
    fn all_users_filter_is_a_presence_test() {
        assert_eq!(all_users_filter(None, "mail"), "(mail=*)");
        let f = all_users_filter(Some("(&(objectClass=person)(!(a=1)))"), "uid");
        assert_eq!(f, "(&(&(objectClass=person)(!(a=1)))(uid=*))");
        assert!(ldap3::parse_filter(&f).is_ok());
    }

    #[test]
    fn admin_filter_validation() {
        assert!(validate_admin_filter("(objectClass=inetOrgPerson)").is_ok());
        assert!(validate_admin_filter("(&(a=1)(|(b=2)(c=3)))").is_ok());
        assert!(validate_admin_filter("objectClass=person").is_err());
        assert!(validate_admin_filter("(objectClass=person").is_err());
        assert!(validate_admin_filter("(a=1)(b=2").is_err());
        // found by fuzz/fuzz_targets/ldap_filter.rs: two filters side by side are not one
        assert!(validate_admin_filter("(a=1)(b=2)").is_err());
        assert!(validate_admin_filter("(mail=%s)").is_err());
    }
}
