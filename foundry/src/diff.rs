//! `foundry diff OLD NEW`: every change between two versions of a contract, each judged
//! breaking or compatible for clients and servers built against the old one.
//!
//! Methods are matched by ordinal, their wire identity. A change is breaking if a peer
//! built from OLD could send something the NEW peer rejects or misreads, or vice versa,
//! or if code written against the OLD generated API stops compiling. Bounds are judged
//! by direction: a request bound may grow (old clients send less than allowed) but not
//! shrink; a reply bound may shrink but not grow. The same holds for enum variants.

use std::collections::BTreeSet;
use std::fmt;

use crate::model::*;

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// True if peers built from the two versions cannot talk, or old code breaks.
    pub breaking: bool,
    /// What changed, e.g. `Echo.echo (ordinal 1): parameter `b` ...`.
    pub message: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.breaking { "breaking" } else { "compatible" };
        write!(f, "{kind}: {}", self.message)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Reply,
}

struct Differ<'a> {
    old: &'a Contract,
    new: &'a Contract,
    changes: BTreeSet<Change>,
}

/// Lists every change from `old` to `new`, breaking ones first.
pub fn diff(old: &Contract, new: &Contract) -> Vec<Change> {
    let mut differ = Differ { old, new, changes: BTreeSet::new() };
    differ.contract();
    let mut changes: Vec<Change> = differ.changes.into_iter().collect();
    changes.sort_by_key(|change| !change.breaking);
    changes
}

impl Differ<'_> {
    fn report(&mut self, breaking: bool, message: String) {
        self.changes.insert(Change { breaking, message });
    }

    fn contract(&mut self) {
        let (old, new) = (self.old, self.new);
        if old.name != new.name {
            self.report(true, format!("contract renamed from `{}` to `{}`", old.name, new.name));
        }
        if new.version < old.version {
            self.report(true, format!("version went back from {} to {}", old.version, new.version));
        }
        for old_iface in &old.interfaces {
            match new.interfaces.iter().find(|iface| iface.name == old_iface.name) {
                None => self.report(true, format!("interface `{}` removed", old_iface.name)),
                Some(new_iface) => self.interface(old_iface, new_iface),
            }
        }
        for new_iface in &new.interfaces {
            if !old.interfaces.iter().any(|iface| iface.name == new_iface.name) {
                self.report(false, format!("interface `{}` added", new_iface.name));
            }
        }
    }

    fn interface(&mut self, old: &Interface, new: &Interface) {
        for old_method in &old.methods {
            let at = format!("{}.{} (ordinal {})", old.name, old_method.name, old_method.ordinal);
            match new.methods.iter().find(|method| method.ordinal == old_method.ordinal) {
                Some(new_method) => self.method(&at, old_method, new_method),
                None => match new.methods.iter().find(|method| method.name == old_method.name) {
                    Some(moved) => self.report(
                        true,
                        format!("{at}: ordinal changed from {} to {}", old_method.ordinal, moved.ordinal),
                    ),
                    None => self.report(true, format!("{at}: method removed")),
                },
            }
        }
        for new_method in &new.methods {
            let known = old
                .methods
                .iter()
                .any(|method| method.ordinal == new_method.ordinal || method.name == new_method.name);
            if known {
                continue;
            }
            let at = format!("{}.{} (ordinal {})", new.name, new_method.name, new_method.ordinal);
            self.report(false, format!("{at}: method added"));
            if new_method.since.is_none_or(|since| since <= self.old.version) {
                self.report(
                    false,
                    format!(
                        "{at}: added without `@since({})`; annotate it so clients know when it appeared",
                        self.new.version.max(self.old.version + 1)
                    ),
                );
            }
        }
    }

    fn method(&mut self, at: &str, old: &Method, new: &Method) {
        if old.name != new.name {
            self.report(true, format!("{at}: method renamed to `{}`", new.name));
        }
        if old.oneway != new.oneway {
            let now = if new.oneway { "one-way" } else { "two-way" };
            self.report(true, format!("{at}: is now {now}"));
        }
        if old.deprecated.is_none() && new.deprecated.is_some() {
            self.report(false, format!("{at}: deprecated"));
        }
        if old.params.len() != new.params.len() {
            self.report(
                true,
                format!("{at}: takes {} parameters instead of {}", new.params.len(), old.params.len()),
            );
        } else {
            for (old_param, new_param) in old.params.iter().zip(&new.params) {
                let what = format!("{at}: parameter `{}`", old_param.name);
                self.ty(&what, &old_param.ty, &new_param.ty, Direction::Request);
            }
        }
        let (old_ret, new_ret) = (old.returns.types(), new.returns.types());
        if old_ret.len() != new_ret.len() {
            self.report(true, format!("{at}: returns {} values instead of {}", new_ret.len(), old_ret.len()));
        } else {
            for (i, (old_ty, new_ty)) in old_ret.iter().zip(&new_ret).enumerate() {
                self.ty(&format!("{at}: result {i}"), old_ty, new_ty, Direction::Reply);
            }
        }
        match (old.error, new.error) {
            (None, None) => {}
            (Some(old_error), Some(new_error)) => self.ty(
                &format!("{at}: error"),
                &Ty::Named(old_error),
                &Ty::Named(new_error),
                Direction::Reply,
            ),
            _ => self.report(true, format!("{at}: error type added or removed")),
        }
    }

    fn ty(&mut self, what: &str, old: &Ty, new: &Ty, direction: Direction) {
        let (old_name, new_name) = (self.old.type_name(old), self.new.type_name(new));
        match (old, new) {
            (Ty::Bytes(old_bound), Ty::Bytes(new_bound)) | (Ty::Str(old_bound), Ty::Str(new_bound)) => {
                self.bound(what, *old_bound, *new_bound, direction)
            }
            (Ty::Array(old_element, old_len), Ty::Array(new_element, new_len)) if old_len == new_len => {
                self.ty(what, old_element, new_element, direction)
            }
            (Ty::Named(old_index), Ty::Named(new_index)) if old_name == new_name => {
                if let (Some(old_def), Some(new_def)) =
                    (self.old.types.get(*old_index), self.new.types.get(*new_index))
                {
                    self.named(old_def, new_def, direction);
                }
            }
            _ if old_name != new_name => {
                self.report(true, format!("{what}: type changed from `{old_name}` to `{new_name}`"))
            }
            _ => {}
        }
    }

    fn bound(&mut self, what: &str, old: u64, new: u64, direction: Direction) {
        match (new.cmp(&old), direction) {
            (std::cmp::Ordering::Equal, _) => {}
            (std::cmp::Ordering::Less, Direction::Request) => self.report(
                true,
                format!("{what}: bound narrowed from {old} to {new}; old clients may send longer values"),
            ),
            (std::cmp::Ordering::Greater, Direction::Reply) => self.report(
                true,
                format!(
                    "{what}: bound widened from {old} to {new} in a reply; old clients reject longer values"
                ),
            ),
            _ => self.report(false, format!("{what}: bound changed from {old} to {new}")),
        }
    }

    fn named(&mut self, old: &TypeDef, new: &TypeDef, direction: Direction) {
        let name = &old.name;
        match (&old.body, &new.body) {
            (TypeBody::Struct(old_body), TypeBody::Struct(new_body)) => {
                if old_body.fields.len() != new_body.fields.len() {
                    self.report(
                        true,
                        format!(
                            "struct `{name}`: has {} fields instead of {}",
                            new_body.fields.len(),
                            old_body.fields.len()
                        ),
                    );
                    return;
                }
                for (old_field, new_field) in old_body.fields.iter().zip(&new_body.fields) {
                    if old_field.name != new_field.name {
                        self.report(
                            true,
                            format!(
                                "struct `{name}`: field `{}` renamed to `{}`",
                                old_field.name, new_field.name
                            ),
                        );
                    }
                    let what = format!("struct `{name}`: field `{}`", old_field.name);
                    self.ty(&what, &old_field.ty, &new_field.ty, direction);
                }
            }
            (TypeBody::Enum(old_body), TypeBody::Enum(new_body)) => {
                if old_body.repr != new_body.repr {
                    self.report(
                        true,
                        format!(
                            "enum `{name}`: carried as `{}` instead of `{}`",
                            new_body.repr.name(),
                            old_body.repr.name()
                        ),
                    );
                }
                for variant in &old_body.variants {
                    match new_body.variants.iter().find(|other| other.name == variant.name) {
                        None => {
                            self.report(true, format!("enum `{name}`: variant `{}` removed", variant.name))
                        }
                        Some(other) if other.value != variant.value => self.report(
                            true,
                            format!(
                                "enum `{name}`: variant `{}` changed value from {} to {}",
                                variant.name, variant.value, other.value
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                for variant in &new_body.variants {
                    if !old_body.variants.iter().any(|other| other.name == variant.name) {
                        match direction {
                            Direction::Reply => self.report(
                                true,
                                format!(
                                    "enum `{name}`: variant `{}` added to a type servers send; old clients reject it",
                                    variant.name
                                ),
                            ),
                            Direction::Request => self.report(false, format!("enum `{name}`: variant `{}` added", variant.name)),
                        }
                    }
                }
            }
            _ => self.report(true, format!("`{name}` changed between struct and enum")),
        }
    }
}
