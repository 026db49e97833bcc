//! The checked contract: every name resolved, every number in range, every message laid
//! out. Code generation and `foundry diff` work on this, never on the syntax tree.

use ramen_abi::{MSG_MAX_CAPS, MSG_MAX_LEASES, MSG_REGS};

/// An integer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntTy {
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
}

impl IntTy {
    /// Every integer type, by contract name.
    pub const ALL: [(&'static str, IntTy); 8] = [
        ("u8", Self::U8),
        ("u16", Self::U16),
        ("u32", Self::U32),
        ("u64", Self::U64),
        ("i8", Self::I8),
        ("i16", Self::I16),
        ("i32", Self::I32),
        ("i64", Self::I64),
    ];

    /// Size on the wire (and alignment).
    pub fn size_bytes(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 => 4,
            Self::U64 | Self::I64 => 8,
        }
    }

    /// True for the unsigned types.
    pub fn is_unsigned(self) -> bool {
        matches!(self, Self::U8 | Self::U16 | Self::U32 | Self::U64)
    }

    /// The contract (and Rust) name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, ty)| *ty == self).map_or("u64", |(name, _)| name)
    }

    /// Largest value of an unsigned type.
    pub fn max_unsigned(self) -> u64 {
        match self.size_bytes() {
            8 => u64::MAX,
            size => (1u64 << (size * 8)) - 1,
        }
    }
}

/// Rights a lease grants the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    /// `lease<read>`.
    Read,
    /// `lease<read_write>`.
    ReadWrite,
}

/// A resolved type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    /// An integer.
    Int(IntTy),
    /// `bool`.
    Bool,
    /// A struct or enum: index into [`Contract::types`].
    Named(usize),
    /// `[T; N]`.
    Array(Box<Ty>, u64),
    /// `bytes<N>`.
    Bytes(u64),
    /// `string<N>`.
    Str(u64),
    /// `cap<Interface>`: index into [`Contract::interfaces`].
    Cap(usize),
    /// `lease<rights>`.
    Lease(LeaseKind),
}

/// A named, typed value: a struct field, parameter or named result.
#[derive(Clone, Debug)]
pub struct FieldDef {
    /// The name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The type.
    pub ty: Ty,
}

/// A struct.
#[derive(Clone, Debug)]
pub struct StructDef {
    /// Fields in wire order.
    pub fields: Vec<FieldDef>,
}

/// One enum variant.
#[derive(Clone, Debug)]
pub struct VariantDef {
    /// The name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The discriminant.
    pub value: u64,
}

/// An enum.
#[derive(Clone, Debug)]
pub struct EnumDef {
    /// The integer type carrying it.
    pub repr: IntTy,
    /// Variants in declaration order.
    pub variants: Vec<VariantDef>,
}

/// A struct or enum definition.
#[derive(Clone, Debug)]
pub enum TypeBody {
    /// A struct.
    Struct(StructDef),
    /// An enum.
    Enum(EnumDef),
}

/// A named user type.
#[derive(Clone, Debug)]
pub struct TypeDef {
    /// The name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Struct or enum.
    pub body: TypeBody,
}

/// What a method returns on success.
#[derive(Clone, Debug, PartialEq)]
pub enum Returns {
    /// Nothing.
    Unit,
    /// One unnamed value.
    Single(Ty),
    /// Several named values (a tuple in Rust).
    Named(Vec<(String, Ty)>),
}

impl Returns {
    /// The returned types in wire order.
    pub fn types(&self) -> Vec<&Ty> {
        match self {
            Self::Unit => Vec::new(),
            Self::Single(ty) => vec![ty],
            Self::Named(fields) => fields.iter().map(|(_, ty)| ty).collect(),
        }
    }
}

/// The compile-time layout of one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageLayout {
    /// Largest payload, in bytes.
    pub max_bytes: usize,
    /// Largest payload, in words.
    pub max_words: usize,
    /// True if every instance is exactly `max_words` long (no bounded sequences), so a
    /// decoder can check the whole shape of the message in one compare.
    pub fixed_size: bool,
    /// Capabilities transferred.
    pub caps: usize,
    /// Leases carried.
    pub leases: usize,
}

impl MessageLayout {
    /// True if every instance of this message fits the register fastpath.
    pub fn fits_fastpath(&self) -> bool {
        self.max_words <= MSG_REGS && self.caps == 0 && self.leases == 0
    }

    /// True if the payload always fits in registers (the IPC buffer is never used).
    pub fn fits_registers(&self) -> bool {
        self.max_words <= MSG_REGS
    }

    /// One-line description, e.g. `2 words in registers (fastpath)`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} word{}", self.max_words, if self.max_words == 1 { "" } else { "s" });
        out.push_str(if self.fits_registers() { " in registers" } else { " (registers + IPC buffer)" });
        if self.caps > 0 {
            out.push_str(&format!(", {} cap{}", self.caps, if self.caps == 1 { "" } else { "s" }));
        }
        if self.leases > 0 {
            out.push_str(&format!(", {} lease{}", self.leases, if self.leases == 1 { "" } else { "s" }));
        }
        if self.fits_fastpath() {
            out.push_str(" (fastpath)");
        }
        out
    }
}

const _: () = assert!(MSG_MAX_CAPS < 8 && MSG_MAX_LEASES < 8);

/// A method.
#[derive(Clone, Debug)]
pub struct Method {
    /// The name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Stable ordinal: the request label.
    pub ordinal: u32,
    /// No reply.
    pub oneway: bool,
    /// `@since(v)`.
    pub since: Option<u64>,
    /// `@deprecated("why")`.
    pub deprecated: Option<String>,
    /// Parameters.
    pub params: Vec<FieldDef>,
    /// Success values.
    pub returns: Returns,
    /// The error enum (index into [`Contract::types`]).
    pub error: Option<usize>,
    /// Request layout.
    pub request: MessageLayout,
    /// Reply layout (the success case; errors are a bare label). Zero for one-way.
    pub reply: MessageLayout,
}

/// An interface.
#[derive(Clone, Debug)]
pub struct Interface {
    /// The name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Methods in declaration order.
    pub methods: Vec<Method>,
}

/// A checked contract file.
#[derive(Clone, Debug)]
pub struct Contract {
    /// Dotted contract name.
    pub name: String,
    /// `@version(n)`.
    pub version: u64,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The file it came from, as given.
    pub source_name: String,
    /// Structs and enums in declaration order.
    pub types: Vec<TypeDef>,
    /// Interfaces in declaration order.
    pub interfaces: Vec<Interface>,
}

impl Contract {
    /// The contract-language spelling of `ty`.
    pub fn type_name(&self, ty: &Ty) -> String {
        match ty {
            Ty::Int(int) => int.name().into(),
            Ty::Bool => "bool".into(),
            Ty::Named(index) => self.types.get(*index).map_or("?".into(), |def| def.name.clone()),
            Ty::Array(element, len) => format!("[{}; {len}]", self.type_name(element)),
            Ty::Bytes(bound) => format!("bytes<{bound}>"),
            Ty::Str(bound) => format!("string<{bound}>"),
            Ty::Cap(index) => {
                format!("cap<{}>", self.interfaces.get(*index).map_or("?", |iface| iface.name.as_str()))
            }
            Ty::Lease(LeaseKind::Read) => "lease<read>".into(),
            Ty::Lease(LeaseKind::ReadWrite) => "lease<read_write>".into(),
        }
    }

    /// The struct or enum called `name`.
    pub fn type_named(&self, name: &str) -> Option<&TypeDef> {
        self.types.iter().find(|def| def.name == name)
    }
}
