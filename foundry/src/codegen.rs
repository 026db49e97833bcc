//! Rust generation: types, a typed client and a server trait plus dispatcher per
//! interface. The output is `no_std`, free of `unsafe` and allocation, and never panics
//! on malformed input (decoding goes through the bounds-checked `foundry_runtime::Reader`).
//!
//! Layout per file: contract constants, then structs and enums (with their `Wire`
//! impls), then for each interface a capability newtype `<Name>Cap` and a module
//! `<name>` holding `ordinal`, `Client`, `Server` and `Dispatcher`.

use std::fmt::Write as _;

use crate::model::*;

const RT: &str = "::foundry_runtime";

/// Rust keywords that need `r#` as identifiers.
const KEYWORDS: [&str; 39] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while",
];

fn ident(name: &str) -> String {
    if KEYWORDS.contains(&name) { format!("r#{name}") } else { name.to_string() }
}

/// `BlockDevice` -> `block_device`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

struct Out {
    text: String,
    indent: usize,
}

impl Out {
    fn line(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        if !line.is_empty() {
            self.text.push_str(&"    ".repeat(self.indent));
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn open(&mut self, line: impl AsRef<str>) {
        self.line(line);
        self.indent += 1;
    }

    fn close(&mut self, line: impl AsRef<str>) {
        self.indent = self.indent.saturating_sub(1);
        self.line(line);
    }

    fn doc(&mut self, doc: &[String]) {
        for line in doc {
            if line.is_empty() {
                self.line("///");
            } else {
                self.line(format!("/// {line}"));
            }
        }
    }
}

/// Generates the Rust module for `contract`.
pub fn generate(contract: &Contract) -> String {
    let mut generator = Gen { contract, out: Out { text: String::new(), indent: 0 } };
    generator.file();
    generator.out.text
}

struct Gen<'c> {
    contract: &'c Contract,
    out: Out,
}

/// How a value is handed to a generated client method.
enum Passing {
    Value,
    Reference,
}

impl Gen<'_> {
    /// The Rust type of `ty`; `scope` is `""` at top level and `"super::"` inside an
    /// interface module.
    fn rust_type(&self, ty: &Ty, scope: &str) -> String {
        match ty {
            Ty::Int(int) => int.name().into(),
            Ty::Bool => "bool".into(),
            Ty::Named(index) => {
                format!("{scope}{}", self.contract.types.get(*index).map_or("()", |def| def.name.as_str()))
            }
            Ty::Array(element, len) => format!("[{}; {len}]", self.rust_type(element, scope)),
            Ty::Bytes(bound) => format!("{RT}::BoundedBytes<{bound}>"),
            Ty::Str(bound) => format!("{RT}::BoundedStr<{bound}>"),
            Ty::Cap(index) => format!("{scope}{}Cap", self.interface_name(*index)),
            Ty::Lease(LeaseKind::Read) => format!("{RT}::ReadLease"),
            Ty::Lease(LeaseKind::ReadWrite) => format!("{RT}::RwLease"),
        }
    }

    fn interface_name(&self, index: usize) -> &str {
        self.contract.interfaces.get(index).map_or("", |iface| iface.name.as_str())
    }

    fn passing(&self, ty: &Ty) -> Passing {
        match ty {
            Ty::Int(_) | Ty::Bool | Ty::Cap(_) | Ty::Lease(_) => Passing::Value,
            Ty::Named(index) => match self.contract.types.get(*index).map(|def| &def.body) {
                Some(TypeBody::Enum(_)) => Passing::Value,
                _ => Passing::Reference,
            },
            Ty::Array(..) | Ty::Bytes(_) | Ty::Str(_) => Passing::Reference,
        }
    }

    /// The parameter type a client method takes for `ty`.
    fn client_param_type(&self, ty: &Ty) -> String {
        match (ty, self.passing(ty)) {
            (Ty::Lease(LeaseKind::Read), _) => "&[u8]".into(),
            (Ty::Lease(LeaseKind::ReadWrite), _) => "&mut [u8]".into(),
            (_, Passing::Value) => self.rust_type(ty, "super::"),
            (_, Passing::Reference) => format!("&{}", self.rust_type(ty, "super::")),
        }
    }

    fn returns_type(&self, returns: &Returns) -> String {
        match returns {
            Returns::Unit => "()".into(),
            Returns::Single(ty) => self.rust_type(ty, "super::"),
            Returns::Named(fields) => format!(
                "({})",
                fields.iter().map(|(_, ty)| self.rust_type(ty, "super::")).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn file(&mut self) {
        let contract = self.contract;
        self.out.line(format!(
            "// @generated by foundry from `{}`: contract `{}`, version {}. Do not edit.",
            contract.source_name, contract.name, contract.version
        ));
        self.out.line("");
        self.out.doc(&contract.doc);
        if !contract.doc.is_empty() {
            self.out.line("///");
        }
        self.out.line("/// The contract name.");
        self.out.line(format!("pub const CONTRACT_NAME: &str = \"{}\";", contract.name));
        self.out.line("/// The contract version (`@version`).");
        self.out.line(format!("pub const CONTRACT_VERSION: u64 = {};", contract.version));
        for def in &contract.types {
            self.out.line("");
            match &def.body {
                TypeBody::Struct(body) => self.structure(def, body),
                TypeBody::Enum(body) => self.enumeration(def, body),
            }
        }
        for (index, iface) in contract.interfaces.iter().enumerate() {
            self.out.line("");
            self.out.line(format!(
                "/// A capability to a server speaking `{}` (see [`{}`]).",
                iface.name,
                snake_case(&iface.name)
            ));
            self.out.line("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]");
            self.out.line(format!("pub struct {}Cap(pub {RT}::CapPtr);", iface.name));
            self.out.line("");
            self.interface(index, iface);
        }
    }

    fn structure(&mut self, def: &TypeDef, body: &StructDef) {
        self.out.doc(&def.doc);
        self.out.line("#[derive(Clone, Copy, Debug, PartialEq, Eq)]");
        self.out.open(format!("pub struct {} {{", def.name));
        for field in &body.fields {
            self.out.doc(&field.doc);
            self.out.line(format!("pub {}: {},", ident(&field.name), self.rust_type(&field.ty, "")));
        }
        self.out.close("}");
        self.out.line("");
        self.out.open(format!("impl {RT}::Wire for {} {{", def.name));
        self.out.line("#[inline]");
        self.out.open(format!("fn encode(&self, writer: &mut {RT}::Writer<'_>) {{"));
        for field in &body.fields {
            self.out.line(format!("{RT}::Wire::encode(&self.{}, writer);", ident(&field.name)));
        }
        self.out.close("}");
        self.out.line("#[inline]");
        self.out.open(format!(
            "fn decode(reader: &mut {RT}::Reader<'_>) -> Result<Self, {RT}::ProtocolError> {{"
        ));
        self.out.open("Ok(Self {");
        for field in &body.fields {
            self.out.line(format!("{}: {RT}::Wire::decode(reader)?,", ident(&field.name)));
        }
        self.out.close("})");
        self.out.close("}");
        self.out.open("fn placeholder() -> Self {");
        self.out.open("Self {");
        for field in &body.fields {
            self.out.line(format!("{}: {RT}::Wire::placeholder(),", ident(&field.name)));
        }
        self.out.close("}");
        self.out.close("}");
        self.out.close("}");
    }

    fn is_error_enum(&self, index: usize) -> bool {
        self.contract
            .interfaces
            .iter()
            .flat_map(|iface| &iface.methods)
            .any(|method| method.error == Some(index))
    }

    fn enumeration(&mut self, def: &TypeDef, body: &EnumDef) {
        let repr = body.repr.name();
        let name = &def.name;
        self.out.doc(&def.doc);
        self.out.line("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]");
        self.out.line(format!("#[repr({repr})]"));
        self.out.open(format!("pub enum {name} {{"));
        for variant in &body.variants {
            self.out.doc(&variant.doc);
            self.out.line(format!("{} = {},", ident(&variant.name), variant.value));
        }
        self.out.close("}");
        self.out.line("");
        self.out.open(format!("impl {name} {{"));
        self.out.line("/// The discriminant, as sent on the wire.");
        self.out.open(format!("pub const fn to_raw(self) -> {repr} {{"));
        self.out.line(format!("self as {repr}"));
        self.out.close("}");
        self.out.line("");
        self.out.line("/// The variant with discriminant `raw`, if any.");
        self.out.open(format!("pub const fn from_raw(raw: {repr}) -> Option<Self> {{"));
        self.out.open("match raw {");
        for variant in &body.variants {
            self.out.line(format!("{} => Some(Self::{}),", variant.value, ident(&variant.name)));
        }
        self.out.line("_ => None,");
        self.out.close("}");
        self.out.close("}");
        self.out.close("}");
        self.out.line("");
        let first = body.variants.first().map_or("".to_string(), |variant| ident(&variant.name));
        self.out.open(format!("impl {RT}::Wire for {name} {{"));
        self.out.line("#[inline]");
        self.out.open(format!("fn encode(&self, writer: &mut {RT}::Writer<'_>) {{"));
        self.out.line(format!("{RT}::Wire::encode(&self.to_raw(), writer);"));
        self.out.close("}");
        self.out.line("#[inline]");
        self.out.open(format!(
            "fn decode(reader: &mut {RT}::Reader<'_>) -> Result<Self, {RT}::ProtocolError> {{"
        ));
        self.out.line(format!(
            "Self::from_raw({RT}::Wire::decode(reader)?).ok_or({RT}::ProtocolError::InvalidValue)"
        ));
        self.out.close("}");
        self.out.open("fn placeholder() -> Self {");
        self.out.line(format!("Self::{first}"));
        self.out.close("}");
        self.out.close("}");
        let index = self.contract.types.iter().position(|other| other.name == def.name);
        if index.is_some_and(|index| self.is_error_enum(index)) {
            self.out.line("");
            self.out.open(format!("impl {RT}::ErrorEnum for {name} {{"));
            self.out.open("fn label(self) -> u64 {");
            self.out.line("u64::from(self.to_raw())");
            self.out.close("}");
            self.out.open("fn from_label(label: u64) -> Option<Self> {");
            self.out.open(format!("match {repr}::try_from(label) {{"));
            self.out.line("Ok(raw) => Self::from_raw(raw),");
            self.out.line("Err(_) => None,");
            self.out.close("}");
            self.out.close("}");
            self.out.close("}");
        }
    }

    fn interface(&mut self, index: usize, iface: &Interface) {
        let module = snake_case(&iface.name);
        self.out.doc(&iface.doc);
        self.out.line("#[allow(clippy::too_many_arguments, clippy::type_complexity, clippy::let_unit_value, clippy::module_inception, unused_mut)]");
        self.out.open(format!("pub mod {module} {{"));
        self.out.line(format!("use {RT} as rt;"));
        self.out.line("");
        self.out.line("/// Method ordinals: the request labels.");
        self.out.open("pub mod ordinal {");
        for method in &iface.methods {
            self.out.line(format!("/// `{}`.", method.name));
            self.out.line(format!("pub const {}: u64 = {};", method.name.to_uppercase(), method.ordinal));
        }
        self.out.close("}");
        self.out.line("");
        self.out.open("mod span {");
        for method in &iface.methods {
            for side in ["Client", "Server"] {
                self.out.open(format!(
                    "pub(super) static {}_{}: super::rt::Span = super::rt::Span {{",
                    method.name.to_uppercase(),
                    side.to_uppercase()
                ));
                self.out.line("contract: super::super::CONTRACT_NAME,");
                self.out.line(format!("interface: \"{}\",", iface.name));
                self.out.line(format!("method: \"{}\",", method.name));
                self.out.line(format!("ordinal: super::ordinal::{},", method.name.to_uppercase()));
                self.out.line(format!("side: super::rt::Side::{side},"));
                self.out.close("};");
            }
        }
        self.out.close("}");
        self.out.line("");
        self.client(index, iface);
        self.out.line("");
        self.server(iface);
        self.out.close("}");
    }

    fn method_docs(&mut self, method: &Method) {
        self.out.doc(&method.doc);
        if !method.doc.is_empty() {
            self.out.line("///");
        }
        let mut layout = format!("Ordinal {}. Request: {}.", method.ordinal, method.request.describe());
        if method.oneway {
            layout.push_str(" One-way: no reply.");
        } else {
            let _ = write!(layout, " Reply: {}.", method.reply.describe());
        }
        self.out.line(format!("/// {layout}"));
        let documented: Vec<&FieldDef> = method.params.iter().filter(|field| !field.doc.is_empty()).collect();
        if !documented.is_empty() {
            self.out.line("///");
            for field in documented {
                self.out.line(format!("/// - `{}`: {}", field.name, field.doc.join(" ")));
            }
        }
        if let Some(since) = method.since {
            self.out.line(format!("/// Since version {since}."));
        }
    }

    fn client(&mut self, index: usize, iface: &Interface) {
        let _ = index;
        self.out.line(format!("/// Typed client for `{}`: one method per contract method.", iface.name));
        self.out.line("#[derive(Debug)]");
        self.out.open("pub struct Client<T, R = rt::NoTrace> {");
        self.out.line("transport: T,");
        self.out.line("tracer: R,");
        self.out.close("}");
        self.out.line("");
        self.out.open("impl<T: rt::Transport> Client<T> {");
        self.out.line("/// A client over `transport`, without tracing.");
        self.out.open("pub fn new(transport: T) -> Self {");
        self.out.line("Self { transport, tracer: rt::NoTrace }");
        self.out.close("}");
        self.out.close("}");
        self.out.line("");
        self.out.open("impl<T: rt::Transport, R: rt::Tracer> Client<T, R> {");
        self.out.line("/// A client that reports a trace span around every call.");
        self.out.open("pub fn with_tracer(transport: T, tracer: R) -> Self {");
        self.out.line("Self { transport, tracer }");
        self.out.close("}");
        self.out.line("");
        self.out.line("/// The transport.");
        self.out.open("pub fn transport_mut(&mut self) -> &mut T {");
        self.out.line("&mut self.transport");
        self.out.close("}");
        for method in &iface.methods {
            self.out.line("");
            self.client_method(method);
        }
        self.out.close("}");
    }

    fn client_method(&mut self, method: &Method) {
        self.method_docs(method);
        if let Some(why) = &method.deprecated {
            self.out.line(format!("#[deprecated(note = {why:?})]"));
        }
        let params: Vec<String> = method
            .params
            .iter()
            .map(|field| format!("{}: {}", ident(&field.name), self.client_param_type(&field.ty)))
            .collect();
        let ok = self.returns_type(&method.returns);
        let result = match method.error {
            Some(error) => format!(
                "Result<Result<{ok}, super::{}>, rt::ClientError>",
                self.contract.types.get(error).map_or("", |def| def.name.as_str())
            ),
            None => format!("Result<{ok}, rt::ClientError>"),
        };
        let mut signature = format!("pub fn {}(&mut self", ident(&method.name));
        for param in &params {
            signature.push_str(", ");
            signature.push_str(param);
        }
        self.out.line("#[inline]");
        self.out.open(format!("{signature}) -> {result} {{"));
        let upper = method.name.to_uppercase();
        self.out.line("let transport = &mut self.transport;");
        self.out.open(format!("rt::traced(&self.tracer, &span::{upper}_CLIENT, move || {{"));
        self.out.line(format!("let mut msg = rt::Message::new(ordinal::{upper});"));
        // Encode the payload.
        let payload: Vec<&FieldDef> =
            method.params.iter().filter(|field| !matches!(field.ty, Ty::Cap(_) | Ty::Lease(_))).collect();
        self.out.open("let len_words = {");
        if method.request.fits_registers() {
            self.out.line("// Fits the registers: the IPC buffer is never touched.");
            self.out.line("let mut writer = rt::Writer::new(&mut msg.regs, &mut []);");
        } else {
            self.out
                .line("let mut writer = rt::Writer::new(&mut msg.regs, &mut transport.ipc_buffer().words);");
        }
        for field in &payload {
            let value = match self.passing(&field.ty) {
                Passing::Value => format!("&{}", ident(&field.name)),
                Passing::Reference => ident(&field.name),
            };
            self.out.line(format!("rt::Wire::encode({value}, &mut writer);"));
        }
        self.out.line("writer.finish().map_err(rt::ClientError::Malformed)?");
        self.out.close("};");
        let caps: Vec<&FieldDef> =
            method.params.iter().filter(|field| matches!(field.ty, Ty::Cap(_))).collect();
        let leases: Vec<&FieldDef> =
            method.params.iter().filter(|field| matches!(field.ty, Ty::Lease(_))).collect();
        for (slot, field) in caps.iter().enumerate() {
            self.out.line(format!("msg.caps[{slot}] = {}.0;", ident(&field.name)));
        }
        self.out.line(format!(
            "msg.set_info(ordinal::{upper}, len_words, {}, {}).map_err(rt::ClientError::Malformed)?;",
            caps.len(),
            leases.len()
        ));
        if method.oneway {
            self.out.line("transport.send(&msg)?;");
            self.out.line("Ok(())");
            self.out.close("})");
            self.out.close("}");
            return;
        }
        let lease_list: Vec<String> = leases
            .iter()
            .map(|field| match field.ty {
                Ty::Lease(LeaseKind::ReadWrite) => {
                    format!("rt::LeaseBuf::ReadWrite({})", ident(&field.name))
                }
                _ => format!("rt::LeaseBuf::Read({})", ident(&field.name)),
            })
            .collect();
        self.out.line(format!("transport.call(&mut msg, &mut [{}])?;", lease_list.join(", ")));
        // Decode the reply.
        let result_types = method.returns.types();
        let reply_caps = result_types.iter().filter(|ty| matches!(ty, Ty::Cap(_))).count();
        let buffer = if method.reply.fits_registers() { "&[]" } else { "&transport.ipc_buffer().words" };
        let fixed_len = method.reply.fixed_size.then_some(method.reply.max_words);
        if let Some(len) = fixed_len {
            // Success with the one shape this reply has takes a single compare; only
            // anything else looks at the label and the shape separately.
            self.out.open(format!(
                "if !rt::has_label_and_shape(msg.info, rt::LABEL_OK, {len}, {reply_caps}, 0) {{"
            ));
        }
        self.out.line("let label = msg.info.label();");
        self.out.open("if label != rt::LABEL_OK {");
        if let Some(error) = method.error {
            let name = self.contract.types.get(error).map_or("", |def| def.name.as_str());
            self.out.open(format!("return match <super::{name} as rt::ErrorEnum>::from_label(label) {{"));
            self.out.line("Some(error) => Ok(Err(error)),");
            self.out.line("None => Err(rt::ClientError::from_reply_label(label)),");
            self.out.close("};");
        } else {
            self.out.line("return Err(rt::ClientError::from_reply_label(label));");
        }
        self.out.close("}");
        if let Some(len) = fixed_len {
            self.out.line(format!(
                "rt::check_shape(msg.info, {len}, {reply_caps}, 0).map_err(rt::ClientError::Malformed)?;"
            ));
            self.out.close("}");
            self.out.line(format!("let mut reader = rt::Reader::new(&msg.regs, {buffer}, {len});"));
        } else {
            self.out.open(format!("if msg.info.caps() != {reply_caps} || msg.info.leases() != 0 {{"));
            self.out.line("return Err(rt::ClientError::Malformed(rt::ProtocolError::WrongCaps));");
            self.out.close("}");
            self.out.line(format!(
                "let mut reader = rt::Reader::new(&msg.regs, {buffer}, msg.info.len_words());"
            ));
        }
        let mut names = Vec::new();
        let mut cap_slot = 0;
        for (i, ty) in result_types.iter().enumerate() {
            let name = format!("out{i}");
            match ty {
                Ty::Cap(index) => {
                    self.out.line(format!(
                        "let {name} = super::{}Cap(msg.caps[{cap_slot}]);",
                        self.interface_name(*index)
                    ));
                    cap_slot += 1;
                }
                _ => self.out.line(format!(
                    "let {name}: {} = rt::Wire::decode(&mut reader).map_err(rt::ClientError::Malformed)?;",
                    self.rust_type(ty, "super::")
                )),
            }
            names.push(name);
        }
        self.out.line("reader.finish().map_err(rt::ClientError::Malformed)?;");
        let value = match &method.returns {
            Returns::Unit => "()".to_string(),
            Returns::Single(_) => names.join(""),
            Returns::Named(_) => format!("({})", names.join(", ")),
        };
        if method.error.is_some() {
            self.out.line(format!("Ok(Ok({value}))"));
        } else {
            self.out.line(format!("Ok({value})"));
        }
        self.out.close("})");
        self.out.close("}");
    }

    fn server(&mut self, iface: &Interface) {
        self.out.line(format!("/// What a `{}` server implements.", iface.name));
        self.out.open("pub trait Server {");
        for (i, method) in iface.methods.iter().enumerate() {
            if i > 0 {
                self.out.line("");
            }
            self.method_docs(method);
            let mut params: Vec<String> = method
                .params
                .iter()
                .map(|field| format!("{}: {}", ident(&field.name), self.rust_type(&field.ty, "super::")))
                .collect();
            if method.request.leases > 0 {
                params.push("leases: &mut dyn rt::LeaseAccess".into());
            }
            let ok = self.returns_type(&method.returns);
            let result = match (method.oneway, method.error) {
                (true, _) => String::new(),
                (false, Some(error)) => format!(
                    " -> Result<{ok}, super::{}>",
                    self.contract.types.get(error).map_or("", |def| def.name.as_str())
                ),
                (false, None) if ok == "()" => String::new(),
                (false, None) => format!(" -> {ok}"),
            };
            let mut signature = format!("fn {}(&mut self", ident(&method.name));
            for param in &params {
                signature.push_str(", ");
                signature.push_str(param);
            }
            self.out.line(format!("{signature}){result};"));
        }
        self.out.close("}");
        self.out.line("");
        self.out.line("/// Decodes requests, calls a [`Server`] and encodes its replies; a malformed");
        self.out.line("/// request gets a protocol-error reply and the server keeps serving.");
        self.out.line("#[derive(Debug)]");
        self.out.open("pub struct Dispatcher<S, R = rt::NoTrace> {");
        self.out.line("/// The server implementation.");
        self.out.line("pub server: S,");
        self.out.line("tracer: R,");
        self.out.close("}");
        self.out.line("");
        self.out.open("impl<S: Server> Dispatcher<S> {");
        self.out.line("/// A dispatcher for `server`, without tracing.");
        self.out.open("pub fn new(server: S) -> Self {");
        self.out.line("Self { server, tracer: rt::NoTrace }");
        self.out.close("}");
        self.out.close("}");
        self.out.line("");
        self.out.open("impl<S: Server, R: rt::Tracer> Dispatcher<S, R> {");
        self.out.line("/// A dispatcher that reports a trace span around every request served.");
        self.out.open("pub fn with_tracer(server: S, tracer: R) -> Self {");
        self.out.line("Self { server, tracer }");
        self.out.close("}");
        self.out.close("}");
        self.out.line("");
        self.out.open("impl<S: Server, R: rt::Tracer> rt::Dispatch for Dispatcher<S, R> {");
        self.out.line("#[inline]");
        self.out.open(
            "fn dispatch(&mut self, msg: &mut rt::Message, buf: &mut rt::IpcBuffer, leases: &mut dyn rt::LeaseAccess) -> rt::Disposition {",
        );
        self.out.line("let server = &mut self.server;");
        // Register-only requests of a fixed shape are recognised first by their whole
        // info word (label and shape: one mask and one compare each), and their decoder
        // skips the shape check; everything else goes through the label.
        let exact: Vec<&Method> = iface.methods.iter().filter(|m| exact_request(m)).collect();
        if !exact.is_empty() {
            self.out.line("// Fixed register-only requests: label and shape in one compare each.");
        }
        for method in &exact {
            let upper = method.name.to_uppercase();
            let r = &method.request;
            self.out.open(format!(
                "if rt::has_label_and_shape(msg.info, ordinal::{upper}, {}, {}, {}) {{",
                r.max_words, r.caps, r.leases
            ));
            self.out.line(format!(
                "return rt::traced(&self.tracer, &span::{upper}_SERVER, || serve_{}::<true, S>(server, msg, buf, leases));",
                method.name
            ));
            self.out.close("}");
        }
        self.out.open("match msg.info.label() {");
        for method in &iface.methods {
            let upper = method.name.to_uppercase();
            let generics = if exact_request(method) { "::<false, S>" } else { "" };
            self.out.line(format!(
                "ordinal::{upper} => rt::traced(&self.tracer, &span::{upper}_SERVER, || serve_{}{generics}(server, msg, buf, leases)),",
                method.name
            ));
        }
        self.out.line("_ => rt::reject(msg, rt::ProtocolError::UnknownOrdinal),");
        self.out.close("}");
        self.out.close("}");
        self.out.close("}");
        for method in &iface.methods {
            self.out.line("");
            self.decode_request(method);
            self.out.line("");
            self.serve_method(method);
        }
    }

    fn decode_request(&mut self, method: &Method) {
        let types: Vec<String> =
            method.params.iter().map(|field| self.rust_type(&field.ty, "super::")).collect();
        let tuple = if types.len() == 1 {
            format!("({},)", types.join(""))
        } else {
            format!("({})", types.join(", "))
        };
        let buf = if method.request.fits_registers() { "_buf" } else { "buf" };
        // `SHAPE_CHECKED`: the dispatcher already compared the whole info word.
        let generics = if exact_request(method) { "<const SHAPE_CHECKED: bool>" } else { "" };
        self.out.line("#[inline]");
        self.out.open(format!(
            "fn decode_{}{generics}(msg: &rt::Message, {buf}: &rt::IpcBuffer) -> Result<{tuple}, rt::ProtocolError> {{",
            method.name
        ));
        let fixed = method.request.fixed_size;
        if fixed && exact_request(method) {
            self.out.open("if !SHAPE_CHECKED {");
            self.out.line(format!(
                "rt::check_shape(msg.info, {}, {}, {})?;",
                method.request.max_words, method.request.caps, method.request.leases
            ));
            self.out.close("}");
        } else if fixed {
            self.out.line(format!(
                "rt::check_shape(msg.info, {}, {}, {})?;",
                method.request.max_words, method.request.caps, method.request.leases
            ));
        } else {
            self.out.open(format!("if msg.info.caps() != {} {{", method.request.caps));
            self.out.line("return Err(rt::ProtocolError::WrongCaps);");
            self.out.close("}");
        }
        let leases: Vec<LeaseKind> = method
            .params
            .iter()
            .filter_map(|field| match field.ty {
                Ty::Lease(kind) => Some(kind),
                _ => None,
            })
            .collect();
        // The count is part of the shape of a fixed-size message; the rights never are.
        let mut lease_checks = Vec::new();
        if !fixed {
            lease_checks.push(format!("msg.info.leases() != {}", leases.len()));
        }
        for (slot, kind) in leases.iter().enumerate() {
            let rights = match kind {
                LeaseKind::Read => "Read",
                LeaseKind::ReadWrite => "ReadWrite",
            };
            lease_checks.push(format!("msg.leases[{slot}].rights != rt::LeaseRights::{rights}"));
        }
        if !lease_checks.is_empty() {
            self.out.open(format!("if {} {{", lease_checks.join(" || ")));
            self.out.line("return Err(rt::ProtocolError::WrongLeases);");
            self.out.close("}");
        }
        let overflow = if method.request.fits_registers() { "&[]" } else { "&buf.words" };
        let len = if fixed { method.request.max_words.to_string() } else { "msg.info.len_words()".into() };
        self.out.line(format!("let mut reader = rt::Reader::new(&msg.regs, {overflow}, {len});"));
        let mut names = Vec::new();
        let (mut cap_slot, mut lease_slot) = (0, 0);
        for field in &method.params {
            let name = format!("arg_{}", field.name);
            let ty = self.rust_type(&field.ty, "super::");
            match field.ty {
                Ty::Cap(_) => {
                    self.out.line(format!("let {name} = {ty}(msg.caps[{cap_slot}]);"));
                    cap_slot += 1;
                }
                Ty::Lease(_) => {
                    self.out.line(format!(
                        "let {name} = {ty} {{ index: {lease_slot}, len_bytes: msg.leases[{lease_slot}].len_bytes }};"
                    ));
                    lease_slot += 1;
                }
                _ => self.out.line(format!("let {name}: {ty} = rt::Wire::decode(&mut reader)?;")),
            }
            names.push(name);
        }
        self.out.line("reader.finish()?;");
        if names.len() == 1 {
            self.out.line(format!("Ok(({},))", names.join("")));
        } else {
            self.out.line(format!("Ok(({}))", names.join(", ")));
        }
        self.out.close("}");
    }

    fn serve_method(&mut self, method: &Method) {
        // `buf` always reaches the decoder, which ignores it for register-only requests.
        let buf = "buf";
        let leases = if method.request.leases > 0 { "leases" } else { "_leases" };
        self.out.line("#[allow(deprecated)]");
        self.out.line("#[inline]");
        let (generics, decode) = if exact_request(method) {
            ("<const SHAPE_CHECKED: bool, S: Server + ?Sized>", "::<SHAPE_CHECKED>")
        } else {
            ("<S: Server + ?Sized>", "")
        };
        self.out.open(format!(
            "fn serve_{}{generics}(server: &mut S, msg: &mut rt::Message, {buf}: &mut rt::IpcBuffer, {leases}: &mut dyn rt::LeaseAccess) -> rt::Disposition {{",
            method.name
        ));
        let args: Vec<String> = method.params.iter().map(|field| format!("arg_{}", field.name)).collect();
        let pattern =
            if args.len() == 1 { format!("({},)", args.join("")) } else { format!("({})", args.join(", ")) };
        self.out.open(format!("let {pattern} = match decode_{}{decode}(msg, {buf}) {{", method.name));
        self.out.line("Ok(args) => args,");
        if method.oneway {
            self.out.line("// Nobody waits for a one-way reply: drop the bad request.");
            self.out.line("Err(_) => return rt::Disposition::NoReply,");
        } else {
            self.out.line("Err(error) => return rt::reject(msg, error),");
        }
        self.out.close("};");
        let mut call_args = args.clone();
        if method.request.leases > 0 {
            call_args.push("leases".into());
        }
        let call = format!("server.{}({})", ident(&method.name), call_args.join(", "));
        if method.oneway {
            self.out.line(format!("{call};"));
            self.out.line("rt::Disposition::NoReply");
            self.out.close("}");
            return;
        }
        let result_types = method.returns.types();
        let out = if result_types.is_empty() { "()" } else { "out" };
        if method.error.is_some() {
            self.out.open(format!("let {out} = match {call} {{"));
            self.out.line("Ok(out) => out,");
            self.out.open("Err(error) => {");
            self.out.line("msg.set_reply_label(rt::ErrorEnum::label(error));");
            self.out.line("return rt::Disposition::Reply;");
            self.out.close("}");
            self.out.close("};");
        } else {
            self.out.line(format!("let {out} = {call};"));
        }
        // The writer overwrites every word it covers and `set_info` the info word; the
        // rest of the request is never read again (the info word says what is meaningful).
        let access = |i: usize| match method.returns {
            Returns::Named(_) => format!("out.{i}"),
            _ => "out".to_string(),
        };
        self.out.open("let len_words = {");
        if method.reply.fits_registers() {
            self.out.line("let mut writer = rt::Writer::new(&mut msg.regs, &mut []);");
        } else {
            self.out.line("let mut writer = rt::Writer::new(&mut msg.regs, &mut buf.words);");
        }
        for (i, ty) in result_types.iter().enumerate() {
            if !matches!(ty, Ty::Cap(_)) {
                self.out.line(format!("rt::Wire::encode(&{}, &mut writer);", access(i)));
            }
        }
        self.out.line("writer.finish()");
        self.out.close("};");
        let mut cap_slot = 0;
        for (i, ty) in result_types.iter().enumerate() {
            if matches!(ty, Ty::Cap(_)) {
                self.out.line(format!("msg.caps[{cap_slot}] = {}.0;", access(i)));
                cap_slot += 1;
            }
        }
        self.out.open(format!(
            "match len_words.and_then(|len_words| msg.set_info(rt::LABEL_OK, len_words, {cap_slot}, 0)) {{"
        ));
        self.out.line("Ok(()) => rt::Disposition::Reply,");
        self.out.line("Err(error) => rt::reject(msg, error),");
        self.out.close("}");
        self.out.close("}");
    }
}

/// A request the dispatcher recognises by its whole info word: a fixed shape that
/// fits the registers (no buffer words, capabilities or leases).
fn exact_request(method: &Method) -> bool {
    method.request.fixed_size && method.request.fits_fastpath()
}
