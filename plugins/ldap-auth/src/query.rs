//! RabbitMQ's LDAP query language, in TOML/JSON form. Each query evaluates to true or false for
//! one request:
//!
//! - `{ constant = true }`
//! - `{ in_group = "cn=${vhost}-users,ou=groups,dc=example,dc=com" }`: the user's DN is among
//!   the group entry's members (`group_attribute`, `member` by default);
//! - `{ equals = ["${permission}", "read"] }`;
//! - `{ match = ["${name}", "^${username}-"] }`: the first string matches the regular
//!   expression the second becomes;
//! - `{ any = [...] }`, `{ all = [...] }`, `{ not = {...} }`.
//!
//! `${...}` variables are filled in from the request: `username` and `user_dn` always; `vhost`
//! and `ip` for vhost access; `ip` for tags; `vhost`, `resource` (`queue` or `exchange`), `name`
//! and `permission` for resource access. Values put into a DN are DN-escaped, values put into a
//! regular expression are regex-escaped, and a value is never expanded again.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    Constant(bool),
    InGroup(String),
    Equals(String, String),
    Match(String, String),
    Any(Vec<Query>),
    All(Vec<Query>),
    Not(Box<Query>),
}

/// The deepest nesting evaluated: a config is written by an operator, but a loop in a
/// hand-written file should fail, not overflow the stack.
const QUERY_DEPTH_MAX: usize = 16;

impl Query {
    pub fn allow() -> Query {
        Query::Constant(true)
    }
}

/// The request a query is evaluated for: variable names and values.
pub type Variables<'a> = [(&'static str, &'a str)];

/// Fills `${name}` placeholders. `escape` is applied to each value (DN escaping for DNs).
/// One pass over the pattern: a value that itself contains `${...}` is not expanded again.
/// Unknown placeholders stay as written.
pub fn fill(pattern: &str, variables: &Variables, escape: fn(&str) -> String) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after.find('}').and_then(|end| {
            let name = &after[..end];
            variables.iter().find(|(variable, _)| *variable == name).map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(&escape(value));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn no_escape(value: &str) -> String {
    value.to_owned()
}

pub fn dn_escape(value: &str) -> String {
    ldap3::dn_escape(value).into_owned()
}

/// Asks the directory whether a user DN is a member of a group DN.
pub trait Directory {
    fn is_member(&mut self, group_dn: &str, user_dn: &str) -> Result<bool, String>;
}

/// Evaluates a query. `Err` means the directory could not answer.
pub fn evaluate(query: &Query, variables: &Variables, directory: &mut dyn Directory) -> Result<bool, String> {
    evaluate_at(query, variables, directory, 0)
}

fn evaluate_at(
    query: &Query,
    variables: &Variables,
    directory: &mut dyn Directory,
    depth: usize,
) -> Result<bool, String> {
    if depth > QUERY_DEPTH_MAX {
        return Err(format!("query nested deeper than {QUERY_DEPTH_MAX}"));
    }
    match query {
        Query::Constant(value) => Ok(*value),
        Query::InGroup(pattern) => {
            let user_dn = variables.iter().find(|(name, _)| *name == "user_dn").map_or("", |(_, value)| *value);
            directory.is_member(&fill(pattern, variables, dn_escape), user_dn)
        }
        Query::Equals(left, right) => Ok(fill(left, variables, no_escape) == fill(right, variables, no_escape)),
        Query::Match(text, pattern) => {
            let pattern = fill(pattern, variables, regex::escape);
            let regex = regex::Regex::new(&pattern).map_err(|error| format!("bad regular expression: {error}"))?;
            Ok(regex.is_match(&fill(text, variables, no_escape)))
        }
        Query::Any(queries) => {
            for query in queries {
                if evaluate_at(query, variables, directory, depth + 1)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Query::All(queries) => {
            for query in queries {
                if !evaluate_at(query, variables, directory, depth + 1)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Query::Not(query) => Ok(!evaluate_at(query, variables, directory, depth + 1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Groups(Vec<(&'static str, &'static str)>);

    impl Directory for Groups {
        fn is_member(&mut self, group_dn: &str, user_dn: &str) -> Result<bool, String> {
            Ok(self.0.iter().any(|(group, user)| *group == group_dn && *user == user_dn))
        }
    }

    fn parse(json: &str) -> Query {
        serde_json::from_str(json).expect("a valid query")
    }

    #[test]
    fn queries_parse_from_config_and_evaluate() {
        let mut groups = Groups(vec![("cn=inventory-users,ou=groups", "uid=alice,ou=people")]);
        let alice = [("username", "alice"), ("user_dn", "uid=alice,ou=people"), ("vhost", "inventory")];
        let bob = [("username", "bob"), ("user_dn", "uid=bob,ou=people"), ("vhost", "inventory")];
        let in_group = parse(r#"{"in_group": "cn=${vhost}-users,ou=groups"}"#);
        assert_eq!(evaluate(&in_group, &alice, &mut groups), Ok(true));
        assert_eq!(evaluate(&in_group, &bob, &mut groups), Ok(false));

        let own_queues =
            parse(r#"{"any": [{"match": ["${name}", "^${username}-"]}, {"equals": ["${username}", "root"]}]}"#);
        let queue = [("username", "bob"), ("name", "bob-orders")];
        assert_eq!(evaluate(&own_queues, &queue, &mut groups), Ok(true));
        let other = [("username", "bob"), ("name", "alice-orders")];
        assert_eq!(evaluate(&own_queues, &other, &mut groups), Ok(false));
        let not = parse(r#"{"not": {"constant": true}}"#);
        assert_eq!(evaluate(&not, &queue, &mut groups), Ok(false));
    }

    #[test]
    fn values_are_escaped_where_they_land() {
        // A user name cannot smuggle a DN component or a regular expression.
        let variables = [("vhost", "a,cn=admins"), ("username", "a.b")];
        assert_eq!(fill("cn=${vhost},ou=g", &variables, dn_escape), "cn=a\\2ccn\\3dadmins,ou=g");
        let query = parse(r#"{"match": ["axb-1", "^${username}-"]}"#);
        assert_eq!(evaluate(&query, &variables, &mut Groups(vec![])), Ok(false));
        // A value is not expanded again.
        let sneaky = [("username", "${vhost}"), ("vhost", "prod")];
        assert_eq!(fill("${username}/${vhost}/${other}", &sneaky, no_escape), "${vhost}/prod/${other}");
    }
}
