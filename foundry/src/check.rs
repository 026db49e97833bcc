//! Resolve, type-check and lay out a parsed contract.
//!
//! Checking goes on past the first error so one run reports everything it can; the
//! contract is returned only if no error was found.

use std::collections::HashMap;

use ramen_abi::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_MAX_WORDS, MSG_REGS};

use crate::diag::{Diag, Span};
use crate::model::*;
use crate::syntax::{self, Annotation, AnnotationArg, FileDecl, Item, TypeArg, TypeExpr};

/// Largest bound of a `bytes<N>` / `string<N>` (the length travels as a `u16`).
pub const MAX_SEQUENCE_BOUND: u64 = u16::MAX as u64;

/// Bytes a whole message may carry.
const MSG_MAX_BYTES: usize = MSG_MAX_WORDS * 8;

/// Checks `file`; returns the contract and any warnings, or every diagnostic found.
pub fn check(file: &FileDecl, source_name: &str) -> Result<(Contract, Vec<Diag>), Vec<Diag>> {
    let mut checker = Checker { diags: Vec::new(), names: HashMap::new() };
    let contract = checker.contract(file, source_name);
    if checker.diags.iter().any(|diag| diag.is_error) {
        Err(checker.diags)
    } else {
        Ok((contract, checker.diags))
    }
}

#[derive(Clone, Copy)]
enum Declared {
    Type(usize),
    Interface(usize),
}

struct Checker {
    diags: Vec<Diag>,
    names: HashMap<String, (Declared, Span)>,
}

/// Where a type appears: capabilities and leases travel outside the payload, so they
/// may only be direct parameters or results.
#[derive(Clone, Copy, PartialEq)]
enum Position {
    Param,
    Result,
    Nested,
}

/// Names of the generated client's own methods.
const RESERVED_METHODS: [&str; 3] = ["new", "with_tracer", "transport_mut"];

/// Names the generated methods use for their locals and extra parameters.
const RESERVED_PARAMS: [&str; 10] =
    ["transport", "msg", "writer", "reader", "label", "len_words", "leases", "tracer", "server", "buf"];

const BUILTINS: [&str; 5] = ["bool", "bytes", "string", "cap", "lease"];

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j] + 1).min(row[j + 1] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row.last().copied().unwrap_or(0)
}

impl Checker {
    fn error(&mut self, diag: Diag) {
        self.diags.push(diag);
    }

    fn contract(&mut self, file: &FileDecl, source_name: &str) -> Contract {
        let mut version = None;
        for annotation in &file.annotations {
            match annotation.name.name.as_str() {
                "version" => version = self.int_arg(annotation),
                _ => self.unknown_annotation(annotation, &["version"]),
            }
        }
        let version = version.unwrap_or_else(|| {
            self.error(
                Diag::error("contract has no version")
                    .primary(file.name.span, "add `@version(1)` here")
                    .help("every contract carries a version so `@since` and `foundry diff` can refer to it"),
            );
            1
        });

        // Declare every name first so declarations may refer to later ones.
        let mut type_decls = Vec::new();
        let mut iface_decls = Vec::new();
        for item in &file.items {
            let (name, declared) = match item {
                Item::Struct(decl) => {
                    type_decls.push(item);
                    (&decl.name, Declared::Type(type_decls.len() - 1))
                }
                Item::Enum(decl) => {
                    type_decls.push(item);
                    (&decl.name, Declared::Type(type_decls.len() - 1))
                }
                Item::Interface(decl) => {
                    iface_decls.push(decl);
                    (&decl.name, Declared::Interface(iface_decls.len() - 1))
                }
            };
            self.declare(name, declared);
        }

        let mut types: Vec<TypeDef> = type_decls
            .iter()
            .map(|item| match item {
                Item::Struct(decl) => TypeDef {
                    name: decl.name.name.clone(),
                    doc: decl.doc.clone(),
                    body: TypeBody::Struct(StructDef { fields: Vec::new() }),
                },
                Item::Enum(decl) => TypeDef {
                    name: decl.name.name.clone(),
                    doc: decl.doc.clone(),
                    body: TypeBody::Enum(self.enumeration(decl)),
                },
                Item::Interface(_) => unreachable!("interfaces are not types"),
            })
            .collect();
        for (index, item) in type_decls.iter().enumerate() {
            if let Item::Struct(decl) = item {
                self.no_annotations(&decl.annotations);
                let fields = self.fields(&decl.fields, Position::Nested, "field");
                if let Some(TypeBody::Struct(def)) = types.get_mut(index).map(|def| &mut def.body) {
                    def.fields = fields;
                }
            }
        }
        self.struct_cycles(&types, &type_decls);

        let mut contract = Contract {
            name: file.name.name.clone(),
            version,
            doc: file.doc.clone(),
            source_name: source_name.to_string(),
            types: std::mem::take(&mut types),
            interfaces: Vec::new(),
        };
        // Layout needs every struct, so interfaces come last.
        for decl in &iface_decls {
            self.no_annotations(&decl.annotations);
            let iface =
                Interface { name: decl.name.name.clone(), doc: decl.doc.clone(), methods: Vec::new() };
            contract.interfaces.push(iface);
        }
        for (index, decl) in iface_decls.iter().enumerate() {
            let methods = self.methods(decl, &contract);
            if let Some(iface) = contract.interfaces.get_mut(index) {
                iface.methods = methods;
            }
        }
        contract
    }

    /// Names become Rust identifiers, so they follow Rust's naming conventions and stay
    /// clear of the names generated code uses itself.
    fn style(&mut self, name: &syntax::Ident, camel: bool, what: &str, reserved: &[&str]) {
        let text = name.name.as_str();
        let first_ok = text
            .chars()
            .next()
            .is_some_and(|c| if camel { c.is_ascii_uppercase() } else { c.is_ascii_lowercase() });
        let rest_ok = text.chars().all(|c| {
            c.is_ascii_digit()
                || if camel { c.is_ascii_alphabetic() } else { c.is_ascii_lowercase() || c == '_' }
        });
        if !first_ok || !rest_ok {
            let style = if camel { "UpperCamelCase" } else { "snake_case" };
            self.error(
                Diag::error(format!("{what} `{text}` is not {style}"))
                    .primary(name.span, format!("write {what} names in {style}"))
                    .help("names become Rust identifiers, and generated code must compile without warnings"),
            );
        } else if reserved.contains(&text) {
            self.error(
                Diag::error(format!("{what} name `{text}` is reserved"))
                    .primary(name.span, "generated code uses this name itself")
                    .help(format!("reserved {what} names: {}", reserved.join(", "))),
            );
        }
    }

    fn declare(&mut self, name: &syntax::Ident, declared: Declared) {
        let what = match declared {
            Declared::Type(_) => "type",
            Declared::Interface(_) => "interface",
        };
        self.style(name, true, what, &[]);
        if BUILTINS.contains(&name.name.as_str())
            || IntTy::ALL.iter().any(|(builtin, _)| *builtin == name.name)
        {
            self.error(
                Diag::error(format!("`{}` is a built-in type", name.name))
                    .primary(name.span, "cannot be declared again")
                    .help("choose another name"),
            );
            return;
        }
        if let Some((_, first)) = self.names.get(&name.name) {
            let first = *first;
            self.error(
                Diag::error(format!("`{}` is declared twice", name.name))
                    .primary(name.span, "second declaration")
                    .secondary(first, "first declared here")
                    .help("rename or remove one of them"),
            );
            return;
        }
        self.names.insert(name.name.clone(), (declared, name.span));
    }

    fn unknown_annotation(&mut self, annotation: &Annotation, known: &[&str]) {
        let list = if known.is_empty() {
            "none are allowed here".to_string()
        } else {
            format!(
                "allowed here: {}",
                known.iter().map(|name| format!("@{name}")).collect::<Vec<_>>().join(", ")
            )
        };
        self.error(
            Diag::error(format!("unknown annotation `@{}`", annotation.name.name))
                .primary(annotation.span, "not understood here")
                .help(list),
        );
    }

    fn no_annotations(&mut self, annotations: &[Annotation]) {
        for annotation in annotations {
            self.unknown_annotation(annotation, &[]);
        }
    }

    fn int_arg(&mut self, annotation: &Annotation) -> Option<u64> {
        match annotation.args.as_slice() {
            [AnnotationArg::Int(value, _)] => Some(*value),
            _ => {
                self.error(
                    Diag::error(format!("`@{}` takes one number", annotation.name.name))
                        .primary(annotation.span, "expected one number argument")
                        .help(format!("write `@{}(1)`", annotation.name.name)),
                );
                None
            }
        }
    }

    fn enumeration(&mut self, decl: &syntax::EnumDecl) -> EnumDef {
        self.no_annotations(&decl.annotations);
        let repr = match &decl.repr {
            TypeExpr::Named { name, args, .. } if args.is_empty() => {
                IntTy::ALL.iter().find(|(int, ty)| *int == name.name && ty.is_unsigned()).map(|(_, ty)| *ty)
            }
            _ => None,
        };
        let repr = repr.unwrap_or_else(|| {
            self.error(
                Diag::error(format!("enum `{}` needs an unsigned integer type", decl.name.name))
                    .primary(decl.repr.span(), "not `u8`, `u16`, `u32` or `u64`")
                    .help("write for example `enum Mode : u8 { ... }`"),
            );
            IntTy::U64
        });
        if decl.variants.is_empty() {
            self.error(
                Diag::error(format!("enum `{}` has no variants", decl.name.name))
                    .primary(decl.name.span, "an empty enum can never be sent")
                    .help("add a variant or remove the enum"),
            );
        }
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut values: HashMap<u64, Span> = HashMap::new();
        let mut variants = Vec::new();
        for variant in &decl.variants {
            self.style(&variant.name, true, "variant", &[]);
            if let Some(first) = names.insert(&variant.name.name, variant.name.span) {
                self.error(
                    Diag::error(format!("variant `{}` is declared twice", variant.name.name))
                        .primary(variant.name.span, "second declaration")
                        .secondary(first, "first declared here"),
                );
            }
            let Some((value, span)) = variant.value else {
                self.error(
                    Diag::error(format!("variant `{}` has no value", variant.name.name))
                        .primary(variant.name.span, "needs `= value`")
                        .help("discriminants travel on the wire, so every variant states its value"),
                );
                continue;
            };
            if value > repr.max_unsigned() {
                self.error(
                    Diag::error(format!("value {value} does not fit in `{}`", repr.name()))
                        .primary(span, format!("largest `{}` is {}", repr.name(), repr.max_unsigned()))
                        .help("use a smaller value or a wider enum type"),
                );
            }
            if let Some(first) = values.insert(value, span) {
                self.error(
                    Diag::error(format!("value {value} is used twice in enum `{}`", decl.name.name))
                        .primary(span, "second use")
                        .secondary(first, "first used here")
                        .help("every variant needs its own value"),
                );
            }
            variants.push(VariantDef { name: variant.name.name.clone(), doc: variant.doc.clone(), value });
        }
        EnumDef { repr, variants }
    }

    fn fields(&mut self, fields: &[syntax::Field], position: Position, what: &str) -> Vec<FieldDef> {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for field in fields {
            let reserved: &[&str] = if position == Position::Param { &RESERVED_PARAMS } else { &[] };
            self.style(&field.name, false, what, reserved);
            if let Some(first) = seen.insert(&field.name.name, field.name.span) {
                self.error(
                    Diag::error(format!("{what} `{}` is declared twice", field.name.name))
                        .primary(field.name.span, "second declaration")
                        .secondary(first, "first declared here"),
                );
            }
            if let Some(ty) = self.resolve(&field.ty, position) {
                out.push(FieldDef { name: field.name.name.clone(), doc: field.doc.clone(), ty });
            }
        }
        out
    }

    fn bound(&mut self, args: &[TypeArg], span: Span, name: &str) -> Option<u64> {
        match args {
            [TypeArg::Int(0, at)] => {
                self.error(
                    Diag::error(format!("`{name}<0>` can hold nothing"))
                        .primary(*at, "bound must be at least 1"),
                );
                None
            }
            [TypeArg::Int(bound, at)] if *bound > MAX_SEQUENCE_BOUND => {
                self.error(
                    Diag::error(format!("bound {bound} is too large for a message"))
                        .primary(*at, format!("a message carries at most {MSG_MAX_BYTES} bytes"))
                        .help("pass large data through a `lease<read>` or `lease<read_write>` instead"),
                );
                None
            }
            [TypeArg::Int(bound, _)] => Some(*bound),
            _ => {
                self.error(
                    Diag::error(format!("`{name}` needs a maximum length"))
                        .primary(span, format!("write `{name}<N>` with the largest length in bytes")),
                );
                None
            }
        }
    }

    fn resolve(&mut self, expr: &TypeExpr, position: Position) -> Option<Ty> {
        match expr {
            TypeExpr::Array { element, len, span } => {
                let element = self.resolve(element, Position::Nested)?;
                if *len == 0 || *len > MSG_MAX_BYTES as u64 {
                    self.error(
                        Diag::error(format!("array length {len} is out of range"))
                            .primary(*span, format!("length must be 1 to {MSG_MAX_BYTES}")),
                    );
                    return None;
                }
                Some(Ty::Array(Box::new(element), *len))
            }
            TypeExpr::Named { name, args, span } => {
                let span = *span;
                let word = name.name.as_str();
                if let Some((_, int)) = IntTy::ALL.iter().find(|(int, _)| *int == word) {
                    return self.no_args(args, span, word).then_some(Ty::Int(*int));
                }
                match word {
                    "bool" => self.no_args(args, span, word).then_some(Ty::Bool),
                    "bytes" => self.bound(args, span, word).map(Ty::Bytes),
                    "string" => self.bound(args, span, word).map(Ty::Str),
                    "cap" | "lease" if position == Position::Nested => {
                        self.error(
                            Diag::error(format!("a `{word}` cannot be nested in a struct or array"))
                                .primary(span, "capabilities and leases travel outside the payload")
                                .help("make it a parameter or result of the method itself"),
                        );
                        None
                    }
                    "lease" if position == Position::Result => {
                        self.error(
                            Diag::error("a lease cannot be returned")
                                .primary(span, "leases are lent by the caller")
                                .help("take a `lease<read_write>` parameter and fill it instead"),
                        );
                        None
                    }
                    "cap" => self.cap(args, span),
                    "lease" => match args.as_slice() {
                        [TypeArg::Type(TypeExpr::Named { name, args, .. })] if args.is_empty() => {
                            match name.name.as_str() {
                                "read" => Some(Ty::Lease(LeaseKind::Read)),
                                "read_write" => Some(Ty::Lease(LeaseKind::ReadWrite)),
                                _ => {
                                    self.error(
                                        Diag::error(format!("unknown lease rights `{}`", name.name))
                                            .primary(name.span, "expected `read` or `read_write`"),
                                    );
                                    None
                                }
                            }
                        }
                        _ => {
                            self.error(
                                Diag::error("a lease needs its rights")
                                    .primary(span, "write `lease<read>` or `lease<read_write>`"),
                            );
                            None
                        }
                    },
                    _ => match self.names.get(word).copied() {
                        Some((Declared::Type(index), _)) => {
                            self.no_args(args, span, word).then_some(Ty::Named(index))
                        }
                        Some((Declared::Interface(_), declared)) => {
                            self.error(
                                Diag::error(format!("`{word}` is an interface, not a type"))
                                    .primary(span, "an interface cannot be sent by value")
                                    .secondary(declared, "declared here")
                                    .help(format!("to hand over access to it, send a `cap<{word}>`")),
                            );
                            None
                        }
                        None => {
                            self.unknown_type(name);
                            None
                        }
                    },
                }
            }
        }
    }

    fn unknown_type(&mut self, name: &syntax::Ident) {
        let known = self
            .names
            .keys()
            .map(String::as_str)
            .chain(BUILTINS)
            .chain(IntTy::ALL.iter().map(|(int, _)| *int));
        let closest = known
            .map(|candidate| (edit_distance(&name.name, candidate), candidate))
            .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
            .min();
        let mut diag = Diag::error(format!("unknown type `{}`", name.name))
            .primary(name.span, "not declared in this contract");
        diag = match closest {
            Some((_, candidate)) => diag.help(format!("did you mean `{candidate}`?")),
            None => diag.help("declare it as a `struct` or `enum` in this file, or use a built-in type"),
        };
        self.error(diag);
    }

    fn no_args(&mut self, args: &[TypeArg], span: Span, name: &str) -> bool {
        if !args.is_empty() {
            self.error(
                Diag::error(format!("`{name}` takes no arguments"))
                    .primary(span, format!("write just `{name}`")),
            );
        }
        args.is_empty()
    }

    fn cap(&mut self, args: &[TypeArg], span: Span) -> Option<Ty> {
        match args {
            [TypeArg::Type(TypeExpr::Named { name, args, .. })] if args.is_empty() => {
                match self.names.get(&name.name) {
                    Some((Declared::Interface(index), _)) => Some(Ty::Cap(*index)),
                    Some((Declared::Type(_), _)) => {
                        self.error(
                            Diag::error(format!("`{}` is not an interface", name.name))
                                .primary(name.span, "a capability is typed by the interface it speaks"),
                        );
                        None
                    }
                    None => {
                        self.error(
                            Diag::error(format!("unknown interface `{}`", name.name))
                                .primary(name.span, "not declared in this contract")
                                .help("declare the interface in this file"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    Diag::error("a capability needs its interface")
                        .primary(span, "write `cap<Interface>`")
                        .help("capabilities are typed so a client cannot be handed the wrong one"),
                );
                None
            }
        }
    }

    fn struct_cycles(&mut self, types: &[TypeDef], decls: &[&Item]) {
        fn reaches(types: &[TypeDef], ty: &Ty, target: usize, seen: &mut Vec<usize>) -> bool {
            match ty {
                Ty::Named(index) => {
                    if *index == target {
                        return true;
                    }
                    if seen.contains(index) {
                        return false;
                    }
                    seen.push(*index);
                    match types.get(*index).map(|def| &def.body) {
                        Some(TypeBody::Struct(def)) => {
                            def.fields.iter().any(|field| reaches(types, &field.ty, target, seen))
                        }
                        _ => false,
                    }
                }
                Ty::Array(element, _) => reaches(types, element, target, seen),
                _ => false,
            }
        }
        for (index, def) in types.iter().enumerate() {
            let TypeBody::Struct(body) = &def.body else {
                continue;
            };
            let cyclic = body.fields.iter().any(|field| reaches(types, &field.ty, index, &mut Vec::new()));
            if let (true, Some(Item::Struct(decl))) = (cyclic, decls.get(index)) {
                self.error(
                    Diag::error(format!("struct `{}` contains itself", def.name))
                        .primary(decl.name.span, "this struct is part of a cycle")
                        .help("messages have a fixed maximum size, so types cannot be recursive; break the cycle"),
                );
            }
        }
    }

    fn methods(&mut self, decl: &syntax::InterfaceDecl, contract: &Contract) -> Vec<Method> {
        let mut ordinals: HashMap<u32, (Span, &str)> = HashMap::new();
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut methods = Vec::new();
        for method in &decl.methods {
            self.style(&method.name, false, "method", &RESERVED_METHODS);
            if let Some(first) = names.insert(&method.name.name, method.name.span) {
                self.error(
                    Diag::error(format!("method `{}` is declared twice", method.name.name))
                        .primary(method.name.span, "second declaration")
                        .secondary(first, "first declared here"),
                );
            }
            let mut ordinal = None;
            let mut since = None;
            let mut deprecated = None;
            let mut fastpath = None;
            let mut grant = false;
            for annotation in &method.annotations {
                match annotation.name.name.as_str() {
                    "ordinal" => {
                        let Some(value) = self.int_arg(annotation) else {
                            continue;
                        };
                        match u32::try_from(value) {
                            Ok(value) if value > 0 => ordinal = Some((value, annotation.span)),
                            _ => self.error(
                                Diag::error(format!("ordinal {value} is out of range"))
                                    .primary(annotation.span, format!("ordinals run from 1 to {}", u32::MAX))
                                    .help("ordinal 0 is reserved; pick the next unused ordinal"),
                            ),
                        }
                    }
                    "since" => {
                        since = self.int_arg(annotation);
                        if let Some(version) = since.filter(|version| *version > contract.version) {
                            self.error(
                                Diag::error(format!("`@since({version})` is newer than the contract"))
                                    .primary(
                                        annotation.span,
                                        format!("the contract is at version {}", contract.version),
                                    )
                                    .help(format!(
                                        "bump the contract to `@version({version})` or fix the annotation"
                                    )),
                            );
                        }
                    }
                    "deprecated" => {
                        deprecated = Some(match annotation.args.as_slice() {
                            [AnnotationArg::Str(why, _)] => why.clone(),
                            [] => String::new(),
                            _ => {
                                self.error(
                                    Diag::error("`@deprecated` takes an optional reason")
                                        .primary(annotation.span, "write `@deprecated(\"use x instead\")`"),
                                );
                                String::new()
                            }
                        });
                    }
                    "fastpath" => fastpath = Some(annotation.span),
                    "grant" => grant = true,
                    _ => self.unknown_annotation(
                        annotation,
                        &["ordinal", "since", "deprecated", "fastpath", "grant"],
                    ),
                }
            }
            let Some((ordinal, ordinal_span)) = ordinal else {
                let next = ordinals.keys().max().copied().unwrap_or(0).saturating_add(1);
                self.error(
                    Diag::error(format!("method `{}` has no ordinal", method.name.name))
                        .primary(method.name.span, "needs a stable ordinal")
                        .help(format!(
                            "add `@ordinal({next})`: ordinals are the wire identity of a method and never change"
                        )),
                );
                continue;
            };
            if let Some((first, other)) = ordinals.get(&ordinal) {
                self.error(
                    Diag::error(format!("ordinal {ordinal} is used twice in interface `{}`", decl.name.name))
                        .primary(ordinal_span, format!("`{}` uses it again", method.name.name))
                        .secondary(*first, format!("first used by `{other}`"))
                        .help("give each method its own ordinal and never reuse one"),
                );
            } else {
                ordinals.insert(ordinal, (ordinal_span, &method.name.name));
            }

            let params = self.fields(&method.params, Position::Param, "parameter");
            let (returns, error) = match &method.result {
                None => (Returns::Unit, None),
                Some(result) => {
                    if let Some(oneway) = method.oneway {
                        self.error(
                            Diag::error(format!(
                                "one-way method `{}` cannot return anything",
                                method.name.name
                            ))
                            .primary(result.span, "no reply is sent for a one-way method")
                            .secondary(oneway, "declared one-way here")
                            .help("remove `oneway` or the result"),
                        );
                    }
                    (
                        self.returns(&result.ok),
                        result.error.as_ref().and_then(|error| self.error_type(error, contract)),
                    )
                }
            };

            let request = self.layout(contract, params.iter().map(|field| &field.ty), method, "request");
            let reply = self.layout(contract, returns.types().into_iter(), method, "reply");
            if request.caps > 0 && method.oneway.is_some() && !grant {
                self.error(
                    Diag::error(format!("one-way method `{}` transfers a capability without `@grant`", method.name.name))
                        .primary(method.name.span, "nothing confirms the transfer of a one-way message")
                        .help("add `@grant` to state that the capability is handed over unacknowledged, or make the method two-way"),
                );
            }
            if let (Some(span), false) =
                (fastpath, request.fits_fastpath() && (method.oneway.is_some() || reply.fits_fastpath()))
            {
                self.error(
                    Diag::error(format!("method `{}` does not fit the fastpath", method.name.name))
                        .primary(span, "`@fastpath` promises register-only messages")
                        .help(format!(
                            "request is {}, reply is {}; the fastpath takes at most {MSG_REGS} words and no capabilities or leases",
                            request.describe(),
                            reply.describe()
                        )),
                );
            }
            methods.push(Method {
                name: method.name.name.clone(),
                doc: method.doc.clone(),
                ordinal,
                oneway: method.oneway.is_some(),
                since,
                deprecated,
                params,
                returns,
                error,
                request,
                reply,
            });
        }
        methods
    }

    fn returns(&mut self, returns: &syntax::Returns) -> Returns {
        match returns {
            syntax::Returns::Single(expr) => {
                self.resolve(expr, Position::Result).map_or(Returns::Unit, Returns::Single)
            }
            syntax::Returns::Named(fields) if fields.is_empty() => Returns::Unit,
            syntax::Returns::Named(fields) => Returns::Named(
                self.fields(fields, Position::Result, "result")
                    .into_iter()
                    .map(|field| (field.name, field.ty))
                    .collect(),
            ),
        }
    }

    fn error_type(&mut self, expr: &TypeExpr, contract: &Contract) -> Option<usize> {
        let ty = self.resolve(expr, Position::Nested)?;
        let def = match ty {
            Ty::Named(index) => contract.types.get(index).map(|def| (index, def)),
            _ => None,
        };
        match def {
            Some((index, TypeDef { body: TypeBody::Enum(body), name, .. })) => {
                if body
                    .variants
                    .iter()
                    .any(|variant| variant.value == 0 || variant.value > u64::from(u32::MAX))
                {
                    self.error(
                        Diag::error(format!("error enum `{name}` has a value out of range"))
                            .primary(expr.span(), "used as an error here")
                            .help(format!(
                                "errors travel as the reply label: give every variant a value from 1 to {} (0 means success)",
                                u32::MAX
                            )),
                    );
                }
                Some(index)
            }
            _ => {
                self.error(
                    Diag::error("the error of a `Result` must be an enum")
                        .primary(expr.span(), "not an enum")
                        .help(
                            "declare `enum MyError : u8 { Busy = 1, ... }`: errors travel as the reply label",
                        ),
                );
                None
            }
        }
    }

    fn layout<'t>(
        &mut self,
        contract: &Contract,
        types: impl Iterator<Item = &'t Ty>,
        method: &syntax::MethodDecl,
        which: &str,
    ) -> MessageLayout {
        let mut size = SizeCalc::default();
        let mut caps = 0;
        let mut leases = 0;
        for ty in types {
            match ty {
                Ty::Cap(_) => caps += 1,
                Ty::Lease(_) => leases += 1,
                _ => size.add(contract, ty),
            }
        }
        let layout = MessageLayout {
            max_bytes: size.end,
            max_words: size.end.div_ceil(8),
            fixed_size: !size.inexact,
            caps,
            leases,
        };
        if layout.max_words > MSG_MAX_WORDS {
            self.error(
                Diag::error(format!(
                    "the {which} of `{}` can be {} bytes, over the {MSG_MAX_BYTES}-byte message limit",
                    method.name.name, layout.max_bytes
                ))
                .primary(method.name.span, format!("{which} too large for one message"))
                .help("lower the bounds, or pass bulk data through a lease"),
            );
        }
        if caps > MSG_MAX_CAPS {
            self.error(
                Diag::error(format!("the {which} of `{}` transfers {caps} capabilities", method.name.name))
                    .primary(method.name.span, format!("a message transfers at most {MSG_MAX_CAPS}")),
            );
        }
        if leases > MSG_MAX_LEASES {
            self.error(
                Diag::error(format!("`{}` carries {leases} leases", method.name.name))
                    .primary(method.name.span, format!("a call carries at most {MSG_MAX_LEASES}")),
            );
        }
        layout
    }
}

/// Upper bound of an encoding's size, following the wire rules of `foundry-runtime`.
#[derive(Default)]
struct SizeCalc {
    end: usize,
    /// False once a variable-length field makes later offsets unknown.
    inexact: bool,
}

impl SizeCalc {
    fn scalar(&mut self, size: usize) {
        self.end =
            if self.inexact { self.end + (size - 1) + size } else { self.end.next_multiple_of(size) + size };
    }

    fn add(&mut self, contract: &Contract, ty: &Ty) {
        // Stop growing once far past any limit (a huge array must not take forever).
        if self.end > MSG_MAX_BYTES * 2 {
            return;
        }
        match ty {
            Ty::Int(int) => self.scalar(int.size_bytes()),
            Ty::Bool => self.scalar(1),
            Ty::Named(index) => match contract.types.get(*index).map(|def| &def.body) {
                Some(TypeBody::Enum(def)) => self.scalar(def.repr.size_bytes()),
                Some(TypeBody::Struct(def)) => {
                    def.fields.iter().for_each(|field| self.add(contract, &field.ty))
                }
                None => {}
            },
            Ty::Array(element, len) => {
                for _ in 0..*len {
                    self.add(contract, element);
                    if self.end > MSG_MAX_BYTES * 2 {
                        break;
                    }
                }
            }
            Ty::Bytes(bound) | Ty::Str(bound) => {
                self.scalar(2);
                self.end += *bound as usize;
                self.inexact = true;
            }
            Ty::Cap(_) | Ty::Lease(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("u46", "u64"), 2);
        assert_eq!(edit_distance("Pointt", "Point"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn size_follows_the_wire_alignment_rules() {
        let contract = Contract {
            name: "t".into(),
            version: 1,
            doc: vec![],
            source_name: "t".into(),
            types: vec![],
            interfaces: vec![],
        };
        let mut size = SizeCalc::default();
        for ty in
            [Ty::Int(IntTy::U8), Ty::Int(IntTy::U16), Ty::Int(IntTy::U32), Ty::Bool, Ty::Int(IntTy::U64)]
        {
            size.add(&contract, &ty);
        }
        assert_eq!(size.end, 24);
        size.add(&contract, &Ty::Bytes(3));
        size.add(&contract, &Ty::Int(IntTy::U32));
        // 24 + 2 (len) + 3 bytes, then up to 3 bytes of padding and the u32.
        assert_eq!(size.end, 24 + 2 + 3 + 3 + 4);
    }
}
