//! Which mailcow template an LDAP entry maps to.

use crate::config::Mapping;

/// The template of the first mapping (in configuration order) whose attribute equals any of the
/// entry's values exactly.
pub fn mapped_template<'a>(mapping: &'a [Mapping], values: &[String]) -> Option<&'a str> {
    mapping
        .iter()
        .find(|m| values.contains(&m.attribute))
        .map(|m| m.template.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Vec<Mapping> {
        [("staff", "Staff"), ("admins", "Admins"), ("01", "Numeric")]
            .map(|(a, t)| Mapping {
                attribute: a.into(),
                template: t.into(),
            })
            .to_vec()
    }

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn config_order_wins_over_value_order() {
        assert_eq!(
            mapped_template(&mapping(), &values(&["admins", "staff"])),
            Some("Staff")
        );
    }

    #[test]
    fn matching_is_exact() {
        assert_eq!(
            mapped_template(&mapping(), &values(&["Staff", " staff", "1"])),
            None
        );
        assert_eq!(
            mapped_template(&mapping(), &values(&["01"])),
            Some("Numeric")
        );
        assert_eq!(mapped_template(&mapping(), &[]), None);
    }
}
