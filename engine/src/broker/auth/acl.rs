//! Kafka-style ACLs and the authorizer (Kafka's `AclAuthorizer`/`StandardAuthorizer` rules).
//!
//! A binding: principal (`User:name`, or `User:*` for everyone), host (`*` or an IP address),
//! resource (type topic / group / cluster / transactional-id; pattern literal — `*` matching
//! every name — or prefixed), operation, permission allow/deny.
//!
//! `authorize(principal, host, op, resource)`:
//! 1. a super user is allowed everything;
//! 2. a DENY binding matching principal, host, resource and the operation (or All) denies:
//!    deny wins;
//! 3. an ALLOW binding matching the operation, All, or an operation that implies it allows
//!    (Describe is implied by Read, Write, Delete and Alter; DescribeConfigs by AlterConfigs);
//! 4. anything else is denied (deny by default, Kafka's allow.everyone.if.no.acl.found=false).
//!
//! Bindings are kept in `<data>/.security/acls`, one a line (fields percent-escaped), replaced
//! durably (temporary file, fdatasync, rename, directory fsync) before a change is applied.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use super::credentials::{escape, unescape, write_durably};

pub const ACLS_FILE: &str = "acls";
/// The one cluster resource's name (Kafka's `kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $code:expr, $text:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($v),* }
        impl $name {
            pub fn code(self) -> i8 { match self { $($name::$v => $code),* } }
            pub fn from_code(c: i8) -> Option<$name> { match c { $($code => Some($name::$v),)* _ => None } }
            pub fn name(self) -> &'static str { match self { $($name::$v => $text),* } }
            pub fn parse(s: &str) -> Option<$name> {
                let norm: String = s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_ascii_lowercase();
                [$($name::$v),*].into_iter().find(|v| v.name().replace(['_', '-'], "").to_ascii_lowercase() == norm)
            }
        }
    };
}

wire_enum!(
    /// Kafka's ResourceType codes (Any only in filters).
    ResourceType {
        Any = 1, "Any";
        Topic = 2, "Topic";
        Group = 3, "Group";
        Cluster = 4, "Cluster";
        TransactionalId = 5, "TransactionalId";
    }
);

wire_enum!(
    /// Kafka's PatternType codes (Any and Match only in filters).
    PatternType {
        Any = 1, "Any";
        Match = 2, "Match";
        Literal = 3, "Literal";
        Prefixed = 4, "Prefixed";
    }
);

wire_enum!(
    /// Kafka's AclOperation codes (Any only in filters).
    Operation {
        Any = 1, "Any";
        All = 2, "All";
        Read = 3, "Read";
        Write = 4, "Write";
        Create = 5, "Create";
        Delete = 6, "Delete";
        Alter = 7, "Alter";
        Describe = 8, "Describe";
        ClusterAction = 9, "ClusterAction";
        DescribeConfigs = 10, "DescribeConfigs";
        AlterConfigs = 11, "AlterConfigs";
        IdempotentWrite = 12, "IdempotentWrite";
    }
);

wire_enum!(
    /// Kafka's AclPermissionType codes (Any only in filters).
    Permission {
        Any = 1, "Any";
        Deny = 2, "Deny";
        Allow = 3, "Allow";
    }
);

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub pattern: PatternType,
    pub name: String,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// A filter of DescribeAcls / DeleteAcls (None = any).
#[derive(Debug, Clone)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub pattern: PatternType,
    pub name: Option<String>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

/// `Type:name` with a non-empty type and name.
pub fn check_principal(p: &str) -> Result<(), String> {
    match p.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok(()),
        _ => Err(format!("principal {p:?} must be Type:name (e.g. User:alice)")),
    }
}

impl AclBinding {
    /// Kafka's checks of a binding to create (INVALID_REQUEST otherwise).
    pub fn validate(&self) -> Result<(), String> {
        if self.resource_type == ResourceType::Any {
            return Err("the resource type of an ACL must be specific (not Any)".into());
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return Err("the pattern type of an ACL must be Literal or Prefixed".into());
        }
        if self.operation == Operation::Any || self.permission == Permission::Any {
            return Err("the operation and permission of an ACL must be specific (not Any)".into());
        }
        if self.name.is_empty() {
            return Err("the resource name of an ACL must not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!("the cluster resource is named {CLUSTER_NAME:?}"));
        }
        check_principal(&self.principal)?;
        if self.host != "*" && self.host.parse::<IpAddr>().is_err() {
            return Err(format!("host {:?} must be * or an IP address", self.host));
        }
        Ok(())
    }

    /// Does this binding's resource pattern cover the resource `name` of type `rt`?
    fn covers(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern {
                PatternType::Literal => self.name == name || self.name == "*",
                PatternType::Prefixed => name.starts_with(&self.name),
                _ => false,
            }
    }

    fn applies_to(&self, principal: &str, host: IpAddr) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == "*" || self.host.parse::<IpAddr>().ok() == Some(host))
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.permission.name(),
            escape(&self.principal),
            escape(&self.host),
            self.operation.name(),
            self.resource_type.name(),
            self.pattern.name(),
            escape(&self.name)
        )
    }

    fn parse_line(line: &str) -> Result<AclBinding, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [perm, principal, host, op, rt, pattern, name] = f[..] else {
            return Err("expected 7 fields: permission principal host operation resource-type pattern-type name".into());
        };
        let b = AclBinding {
            permission: Permission::parse(perm).ok_or_else(|| format!("unknown permission {perm:?}"))?,
            principal: unescape(principal)?,
            host: unescape(host)?,
            operation: Operation::parse(op).ok_or_else(|| format!("unknown operation {op:?}"))?,
            resource_type: ResourceType::parse(rt).ok_or_else(|| format!("unknown resource type {rt:?}"))?,
            pattern: PatternType::parse(pattern).ok_or_else(|| format!("unknown pattern type {pattern:?}"))?,
            name: unescape(name)?,
        };
        b.validate()?;
        Ok(b)
    }
}

impl AclFilter {
    pub fn matches(&self, b: &AclBinding) -> bool {
        let rt = self.resource_type == ResourceType::Any || self.resource_type == b.resource_type;
        let resource = match (self.pattern, &self.name) {
            (PatternType::Any, None) => true,
            (PatternType::Any, Some(n)) => &b.name == n,
            (PatternType::Match, None) => true,
            // Every binding that would apply to a resource of this exact name.
            (PatternType::Match, Some(n)) => match b.pattern {
                PatternType::Literal => &b.name == n || b.name == "*",
                PatternType::Prefixed => n.starts_with(&b.name),
                _ => false,
            },
            (p, n) => b.pattern == p && n.as_ref().is_none_or(|n| &b.name == n),
        };
        rt && resource
            && self.principal.as_ref().is_none_or(|p| &b.principal == p)
            && self.host.as_ref().is_none_or(|h| &b.host == h)
            && (self.operation == Operation::Any || self.operation == b.operation)
            && (self.permission == Permission::Any || self.permission == b.permission)
    }
}

/// The ACL authorizer of a broker.
pub struct Authorizer {
    super_users: Vec<String>,
    acls: RwLock<Vec<AclBinding>>,
    path: PathBuf,
    writing: Mutex<()>,
}

impl Authorizer {
    /// Load `<security_dir>/acls` (none yet: no bindings).
    pub fn open(security_dir: &Path, super_users: Vec<String>) -> Result<Authorizer, String> {
        let path = security_dir.join(ACLS_FILE);
        let mut acls = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    acls.push(AclBinding::parse_line(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        Ok(Authorizer { super_users, acls: RwLock::new(acls), path, writing: Mutex::new(()) })
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    pub fn authorize(&self, principal: &str, host: IpAddr, op: Operation, rt: ResourceType, name: &str) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        let relevant = || acls.iter().filter(|b| b.covers(rt, name) && b.applies_to(principal, host));
        if relevant().any(|b| b.permission == Permission::Deny && (b.operation == op || b.operation == Operation::All)) {
            return false;
        }
        let implied: &[Operation] = match op {
            Operation::Describe => &[Operation::Describe, Operation::Read, Operation::Write, Operation::Delete, Operation::Alter],
            Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
            _ => std::slice::from_ref(&op),
        };
        relevant().any(|b| b.permission == Permission::Allow && (b.operation == Operation::All || implied.contains(&b.operation)))
    }

    /// Some resource of type `rt` allows `op`: an ALLOW binding for it exists and no DENY
    /// binding covers every name (literal `*` or the empty prefix).
    pub fn authorize_some(&self, principal: &str, host: IpAddr, op: Operation, rt: ResourceType) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        let mine = || acls.iter().filter(|b| b.resource_type == rt && b.applies_to(principal, host));
        let denies_all = mine().any(|b| {
            b.permission == Permission::Deny
                && (b.operation == op || b.operation == Operation::All)
                && ((b.pattern == PatternType::Literal && b.name == "*") || (b.pattern == PatternType::Prefixed && b.name.is_empty()))
        });
        !denies_all && mine().any(|b| b.permission == Permission::Allow && (b.operation == op || b.operation == Operation::All))
    }

    pub fn describe(&self, f: &AclFilter) -> Vec<AclBinding> {
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        acls.iter().filter(|b| f.matches(b)).cloned().collect()
    }

    /// Add bindings (already validated; duplicates are kept once), durably.
    pub fn create(&self, new: &[AclBinding]) -> Result<(), String> {
        self.change(|acls| {
            for b in new {
                if !acls.contains(b) {
                    acls.push(b.clone());
                }
            }
            Vec::<()>::new()
        })
        .map(|_| ())
    }

    /// Remove what each filter matches, durably; returns each filter's removed bindings.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, String> {
        self.change(|acls| {
            let mut out = Vec::with_capacity(filters.len());
            for f in filters {
                out.push(acls.iter().filter(|b| f.matches(b)).cloned().collect());
            }
            acls.retain(|b| !filters.iter().any(|f| f.matches(b)));
            out
        })
    }

    fn change<R>(&self, edit: impl FnOnce(&mut Vec<AclBinding>) -> R) -> Result<R, String> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.acls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let r = edit(&mut next);
        let mut text = String::from("# ACL bindings (zerolog broker): permission principal host operation resource-type pattern-type name\n");
        for b in &next {
            text.push_str(&b.line());
            text.push('\n');
        }
        write_durably(&self.path, text.as_bytes())?;
        *self.acls.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(perm: Permission, principal: &str, op: Operation, rt: ResourceType, pattern: PatternType, name: &str) -> AclBinding {
        AclBinding {
            resource_type: rt,
            pattern,
            name: name.into(),
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    const H: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn matching_deny_wins_implied_describe_prefix_wildcard_super_user() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let dir = tempfile::tempdir().unwrap();
        let a = Authorizer::open(dir.path(), vec!["User:admin".into()]).unwrap();
        // Deny by default.
        assert!(!a.authorize("User:alice", H, Read, Topic, "orders"));
        assert!(a.authorize("User:admin", H, Delete, Cluster, CLUSTER_NAME));
        a.create(&[
            b(Allow, "User:alice", Read, Topic, Prefixed, "ord"),
            b(Allow, "User:alice", Write, Topic, Literal, "orders"),
            b(Deny, "User:alice", Write, Topic, Literal, "orders-secret"),
            b(Allow, "User:alice", All, Topic, Literal, "orders-secret"),
            b(Allow, "User:*", Read, Group, Literal, "*"),
            b(Allow, "User:bob", AlterConfigs, Topic, Literal, "cfg"),
        ])
        .unwrap();
        assert!(a.authorize("User:alice", H, Read, Topic, "orders"));
        assert!(a.authorize("User:alice", H, Read, Topic, "order-x"));
        assert!(!a.authorize("User:alice", H, Read, Topic, "xorders"), "prefix matches from the start only");
        assert!(a.authorize("User:alice", H, Describe, Topic, "orders"), "Read and Write imply Describe");
        assert!(!a.authorize("User:alice", H, Delete, Topic, "orders"));
        assert!(!a.authorize("User:alice", H, Create, Topic, "orders"));
        assert!(!a.authorize("User:alice", H, Write, Topic, "orders-secret"), "deny wins over All");
        assert!(a.authorize("User:alice", H, Read, Topic, "orders-secret"));
        assert!(a.authorize("User:carol", H, Read, Group, "any-group"), "User:* and the * literal");
        assert!(!a.authorize("User:carol", H, Read, Topic, "orders"));
        assert!(a.authorize("User:bob", H, DescribeConfigs, Topic, "cfg"), "AlterConfigs implies DescribeConfigs");
        assert!(!a.authorize("User:bob", H, Describe, Topic, "cfg"));
        // Host-specific binding.
        let mut hb = b(Allow, "User:dave", Read, Topic, Literal, "h");
        hb.host = "10.0.0.1".into();
        a.create(&[hb]).unwrap();
        assert!(!a.authorize("User:dave", H, Read, Topic, "h"));
        assert!(a.authorize("User:dave", "10.0.0.1".parse().unwrap(), Read, Topic, "h"));
        // Persisted and reloaded.
        let a2 = Authorizer::open(dir.path(), vec![]).unwrap();
        assert!(a2.authorize("User:alice", H, Read, Topic, "orders"));
        assert!(!a2.authorize("User:admin", H, Read, Topic, "orders"), "super users come from the config, not the file");
        // Filters: Match finds what applies to a name; delete removes exactly that.
        let f = AclFilter {
            resource_type: Topic,
            pattern: Match,
            name: Some("orders".into()),
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        };
        assert_eq!(a2.describe(&f).len(), 2, "the prefixed ord and literal orders bindings");
        let removed = a2.delete(&[AclFilter { pattern: Literal, ..f.clone() }]).unwrap();
        assert_eq!(removed[0].len(), 1);
        assert!(!a2.authorize("User:alice", H, Write, Topic, "orders"));
        assert!(a2.authorize("User:alice", H, Read, Topic, "orders"));
        assert!(!Authorizer::open(dir.path(), vec![]).unwrap().authorize("User:alice", H, Write, Topic, "orders"));
    }

    #[test]
    fn invalid_bindings_are_refused() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        assert!(b(Allow, "alice", Read, Topic, Literal, "t").validate().is_err());
        assert!(b(Allow, "User:a", Read, ResourceType::Any, Literal, "t").validate().is_err());
        assert!(b(Allow, "User:a", Read, Topic, Match, "t").validate().is_err());
        assert!(b(Allow, "User:a", Operation::Any, Topic, Literal, "t").validate().is_err());
        assert!(b(Allow, "User:a", Alter, Cluster, Literal, "c").validate().is_err());
        assert!(b(Allow, "User:a", Alter, Cluster, Literal, CLUSTER_NAME).validate().is_ok());
        assert_eq!(Operation::parse("idempotent_write"), Some(IdempotentWrite));
        assert_eq!(ResourceType::parse("TRANSACTIONAL_ID"), Some(TransactionalId));
    }
}
