//! Lexer, syntax tree and recursive-descent parser for `.ridl` files.
//!
//! The parser only builds the tree; names, types and numbers are judged by
//! [`crate::check`]. Every node keeps its [`Span`] so diagnostics can point at it.

use crate::diag::{Diag, Span};

/// A name with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// One argument of an annotation.
#[derive(Clone, Debug)]
pub enum AnnotationArg {
    /// An integer literal.
    Int(u64, Span),
    /// A string literal.
    Str(String, Span),
    /// A bare name.
    Name(Ident),
}

impl AnnotationArg {
    /// Where the argument was written.
    pub fn span(&self) -> Span {
        match self {
            Self::Int(_, span) | Self::Str(_, span) => *span,
            Self::Name(ident) => ident.span,
        }
    }
}

/// `@name(args)`.
#[derive(Clone, Debug)]
pub struct Annotation {
    /// The annotation name, without `@`.
    pub name: Ident,
    /// Its arguments.
    pub args: Vec<AnnotationArg>,
    /// The whole annotation.
    pub span: Span,
}

/// A type as written.
#[derive(Clone, Debug)]
pub enum TypeExpr {
    /// `name` or `name<args>`.
    Named {
        /// The type name.
        name: Ident,
        /// Generic arguments (`bytes<16>`, `cap<Echo>`, `lease<read>`).
        args: Vec<TypeArg>,
        /// The whole type.
        span: Span,
    },
    /// `[element; len]`.
    Array {
        /// Element type.
        element: Box<TypeExpr>,
        /// Element count.
        len: u64,
        /// The whole type.
        span: Span,
    },
}

impl TypeExpr {
    /// Where the type was written.
    pub fn span(&self) -> Span {
        match self {
            Self::Named { span, .. } | Self::Array { span, .. } => *span,
        }
    }
}

/// A generic argument: a number or a type.
#[derive(Clone, Debug)]
pub enum TypeArg {
    /// `bytes<256>`.
    Int(u64, Span),
    /// `cap<Echo>`, `lease<read>`.
    Type(TypeExpr),
}

/// `name: type`, a parameter, named result or struct field.
#[derive(Clone, Debug)]
pub struct Field {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The name.
    pub name: Ident,
    /// The type.
    pub ty: TypeExpr,
}

/// What a method returns on success.
#[derive(Clone, Debug)]
pub enum Returns {
    /// `-> T`.
    Single(TypeExpr),
    /// `-> (a: T, b: U)` or `-> ()`.
    Named(Vec<Field>),
}

/// The part after `->`.
#[derive(Clone, Debug)]
pub struct ResultDecl {
    /// Success values.
    pub ok: Returns,
    /// `Result<_, E>`: the error type.
    pub error: Option<TypeExpr>,
    /// The whole result clause.
    pub span: Span,
}

/// A method of an interface.
#[derive(Clone, Debug)]
pub struct MethodDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Annotations before it.
    pub annotations: Vec<Annotation>,
    /// `oneway`, if present.
    pub oneway: Option<Span>,
    /// The method name.
    pub name: Ident,
    /// Parameters.
    pub params: Vec<Field>,
    /// Results; `None` for no `->`.
    pub result: Option<ResultDecl>,
}

/// `interface Name { methods }`.
#[derive(Clone, Debug)]
pub struct InterfaceDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Annotations before it.
    pub annotations: Vec<Annotation>,
    /// The name.
    pub name: Ident,
    /// Methods in declaration order.
    pub methods: Vec<MethodDecl>,
}

/// `struct Name { fields }`.
#[derive(Clone, Debug)]
pub struct StructDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Annotations before it.
    pub annotations: Vec<Annotation>,
    /// The name.
    pub name: Ident,
    /// Fields in declaration (= wire) order.
    pub fields: Vec<Field>,
}

/// One enum variant.
#[derive(Clone, Debug)]
pub struct VariantDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// The name.
    pub name: Ident,
    /// `= value`, required by the checker.
    pub value: Option<(u64, Span)>,
}

/// `enum Name : repr { variants }`.
#[derive(Clone, Debug)]
pub struct EnumDecl {
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// Annotations before it.
    pub annotations: Vec<Annotation>,
    /// The name.
    pub name: Ident,
    /// The integer type that carries it.
    pub repr: TypeExpr,
    /// Variants in declaration order.
    pub variants: Vec<VariantDecl>,
}

/// A top-level declaration.
#[derive(Clone, Debug)]
pub enum Item {
    /// An interface.
    Interface(InterfaceDecl),
    /// A struct.
    Struct(StructDecl),
    /// An enum.
    Enum(EnumDecl),
}

/// A whole `.ridl` file.
#[derive(Clone, Debug)]
pub struct FileDecl {
    /// Doc comment on the contract.
    pub doc: Vec<String>,
    /// The dotted contract name.
    pub name: Ident,
    /// Annotations on the contract line (`@version`).
    pub annotations: Vec<Annotation>,
    /// Declarations.
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Int(u64),
    Str(String),
    Doc(String),
    Punct(char),
    Arrow,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Self::Ident(name) => format!("`{name}`"),
            Self::Int(value) => format!("number `{value}`"),
            Self::Str(_) => "a string".into(),
            Self::Doc(_) => "a doc comment".into(),
            Self::Punct(c) => format!("`{c}`"),
            Self::Arrow => "`->`".into(),
            Self::Eof => "end of file".into(),
        }
    }
}

fn lex(file: usize, text: &str) -> Result<Vec<(Tok, Span)>, Diag> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    let span = |start: usize, end: usize| Span { file, start, end };
    while let Some(&byte) = bytes.get(pos) {
        let start = pos;
        match byte {
            b' ' | b'\t' | b'\r' | b'\n' => pos += 1,
            b'/' if bytes.get(pos + 1) == Some(&b'/') => {
                let end = text[pos..].find('\n').map_or(text.len(), |n| pos + n);
                let line = &text[pos..end];
                if let Some(doc) = line.strip_prefix("///").filter(|_| !line.starts_with("////")) {
                    let doc = doc.strip_prefix(' ').unwrap_or(doc);
                    tokens.push((Tok::Doc(doc.trim_end().to_string()), span(start, end)));
                }
                pos = end;
            }
            b'-' if bytes.get(pos + 1) == Some(&b'>') => {
                tokens.push((Tok::Arrow, span(start, pos + 2)));
                pos += 2;
            }
            b'{' | b'}' | b'(' | b')' | b'<' | b'>' | b'[' | b']' | b';' | b':' | b',' | b'=' | b'@'
            | b'.' => {
                tokens.push((Tok::Punct(byte as char), span(start, pos + 1)));
                pos += 1;
            }
            b'"' => {
                let close = text[pos + 1..].find(['"', '\n']).map(|n| pos + 1 + n);
                match close {
                    Some(end) if bytes.get(end) == Some(&b'"') => {
                        tokens.push((Tok::Str(text[pos + 1..end].to_string()), span(start, end + 1)));
                        pos = end + 1;
                    }
                    _ => {
                        return Err(Diag::error("unterminated string")
                            .primary(span(start, start + 1), "this string has no closing `\"`")
                            .help("close the string on the same line"));
                    }
                }
            }
            b'0'..=b'9' => {
                let end = text[pos..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |n| pos + n);
                let literal = text[pos..end].replace('_', "");
                let value = match literal.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => literal.parse(),
                };
                match value {
                    Ok(value) => tokens.push((Tok::Int(value), span(start, end))),
                    Err(_) => {
                        return Err(Diag::error("invalid number")
                            .primary(span(start, end), "not a decimal or `0x` number that fits in 64 bits"));
                    }
                }
                pos = end;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = text[pos..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |n| pos + n);
                tokens.push((Tok::Ident(text[pos..end].to_string()), span(start, end)));
                pos = end;
            }
            _ => {
                let ch = text[pos..].chars().next().unwrap_or('?');
                return Err(Diag::error(format!("unexpected character `{ch}`"))
                    .primary(span(start, start + ch.len_utf8()), "not part of the contract language"));
            }
        }
    }
    tokens.push((Tok::Eof, span(text.len(), text.len())));
    Ok(tokens)
}

/// Parses one file (`file` is its id in the diagnostics' file table).
pub fn parse(file: usize, text: &str) -> Result<FileDecl, Diag> {
    let tokens = lex(file, text)?;
    let mut parser = Parser { tokens, pos: 0 };
    parser.file()
}

struct Parser {
    tokens: Vec<(Tok, Span)>,
    pos: usize,
}

type Parsed<T> = Result<T, Diag>;

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |(tok, _)| tok)
    }

    fn span(&self) -> Span {
        self.tokens.get(self.pos).or(self.tokens.last()).map_or(Span::default(), |(_, span)| *span)
    }

    fn prev_span(&self) -> Span {
        self.tokens.get(self.pos.saturating_sub(1)).map_or(Span::default(), |(_, span)| *span)
    }

    fn bump(&mut self) -> (Tok, Span) {
        let token = self.tokens.get(self.pos).cloned().unwrap_or((Tok::Eof, self.span()));
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn unexpected(&self, expected: &str) -> Diag {
        Diag::error(format!("expected {expected}, found {}", self.peek().describe()))
            .primary(self.span(), format!("expected {expected} here"))
    }

    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Parsed<Span> {
        if self.eat(c) {
            Ok(self.prev_span())
        } else if self.pos > 0 && matches!(c, ';' | ')' | '}' | '>' | ']') {
            // A missing closer is best shown right after what it should follow.
            Err(Diag::error(format!("expected `{c}`, found {}", self.peek().describe()))
                .primary(self.prev_span(), format!("expected `{c}` after this"))
                .secondary(self.span(), "found this instead"))
        } else {
            Err(self.unexpected(&format!("`{c}`")))
        }
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Tok::Ident(name) if name == word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self, what: &str) -> Parsed<Ident> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                let (_, span) = self.bump();
                Ok(Ident { name, span })
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn int(&mut self, what: &str) -> Parsed<(u64, Span)> {
        match *self.peek() {
            Tok::Int(value) => {
                let (_, span) = self.bump();
                Ok((value, span))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn docs(&mut self) -> Vec<String> {
        let mut doc = Vec::new();
        while let Tok::Doc(line) = self.peek().clone() {
            doc.push(line);
            self.pos += 1;
        }
        doc
    }

    fn annotations(&mut self) -> Parsed<Vec<Annotation>> {
        let mut out = Vec::new();
        while *self.peek() == Tok::Punct('@') {
            let start = self.bump().1;
            let name = self.ident("an annotation name")?;
            let mut args = Vec::new();
            if self.eat('(') {
                while !self.eat(')') {
                    let arg = match self.peek().clone() {
                        Tok::Int(value) => AnnotationArg::Int(value, self.bump().1),
                        Tok::Str(text) => AnnotationArg::Str(text, self.bump().1),
                        Tok::Ident(_) => AnnotationArg::Name(self.ident("an argument")?),
                        _ => return Err(self.unexpected("a number, string or name")),
                    };
                    args.push(arg);
                    if !self.eat(',') {
                        self.expect(')')?;
                        break;
                    }
                }
            }
            out.push(Annotation { name, args, span: start.to(self.prev_span()) });
        }
        Ok(out)
    }

    fn file(&mut self) -> Parsed<FileDecl> {
        let doc = self.docs();
        if !self.keyword("contract") {
            return Err(self
                .unexpected("`contract`")
                .help("a contract file starts with `contract some.name @version(1);`"));
        }
        let first = self.ident("a contract name")?;
        let mut name = first.name;
        let mut span = first.span;
        while self.eat('.') {
            let part = self.ident("a name after `.`")?;
            name.push('.');
            name.push_str(&part.name);
            span = span.to(part.span);
        }
        let annotations = self.annotations()?;
        self.expect(';')?;
        let mut items = Vec::new();
        loop {
            let doc = self.docs();
            let annotations = self.annotations()?;
            if *self.peek() == Tok::Eof {
                break;
            }
            let item = if self.keyword("interface") {
                Item::Interface(self.interface(doc, annotations)?)
            } else if self.keyword("struct") {
                let name = self.ident("a struct name")?;
                self.expect('{')?;
                let fields = self.fields('}')?;
                Item::Struct(StructDecl { doc, annotations, name, fields })
            } else if self.keyword("enum") {
                Item::Enum(self.enumeration(doc, annotations)?)
            } else {
                return Err(self.unexpected("`interface`, `struct` or `enum`"));
            };
            items.push(item);
        }
        Ok(FileDecl { doc, name: Ident { name, span }, annotations, items })
    }

    fn interface(&mut self, doc: Vec<String>, annotations: Vec<Annotation>) -> Parsed<InterfaceDecl> {
        let name = self.ident("an interface name")?;
        self.expect('{')?;
        let mut methods = Vec::new();
        loop {
            let doc = self.docs();
            let annotations = self.annotations()?;
            if self.eat('}') {
                break;
            }
            let oneway = self.keyword("oneway").then(|| self.prev_span());
            let name = self.ident("a method name")?;
            self.expect('(')?;
            let params = self.fields(')')?;
            let result = if matches!(self.peek(), Tok::Arrow) {
                let start = self.bump().1;
                Some(self.result(start)?)
            } else {
                None
            };
            self.expect(';')?;
            methods.push(MethodDecl { doc, annotations, oneway, name, params, result });
        }
        Ok(InterfaceDecl { doc, annotations, name, methods })
    }

    fn result(&mut self, start: Span) -> Parsed<ResultDecl> {
        if matches!(self.peek(), Tok::Ident(name) if name == "Result") {
            self.bump();
            self.expect('<')?;
            let ok = self.returns()?;
            self.expect(',')?;
            let error = self.ty()?;
            self.expect('>')?;
            Ok(ResultDecl { ok, error: Some(error), span: start.to(self.prev_span()) })
        } else {
            let ok = self.returns()?;
            Ok(ResultDecl { ok, error: None, span: start.to(self.prev_span()) })
        }
    }

    fn returns(&mut self) -> Parsed<Returns> {
        if self.eat('(') { Ok(Returns::Named(self.fields(')')?)) } else { Ok(Returns::Single(self.ty()?)) }
    }

    /// `name: type` separated by commas, up to and including `close`.
    fn fields(&mut self, close: char) -> Parsed<Vec<Field>> {
        let mut fields = Vec::new();
        loop {
            let doc = self.docs();
            if self.eat(close) {
                break;
            }
            let name = self.ident("a name")?;
            self.expect(':')?;
            let ty = self.ty()?;
            fields.push(Field { doc, name, ty });
            if !self.eat(',') {
                self.docs();
                self.expect(close)?;
                break;
            }
        }
        Ok(fields)
    }

    fn ty(&mut self) -> Parsed<TypeExpr> {
        let start = self.span();
        if self.eat('[') {
            let element = self.ty()?;
            self.expect(';')?;
            let (len, _) = self.int("an array length")?;
            self.expect(']')?;
            return Ok(TypeExpr::Array { element: Box::new(element), len, span: start.to(self.prev_span()) });
        }
        let name = self.ident("a type")?;
        let mut args = Vec::new();
        if self.eat('<') {
            loop {
                match *self.peek() {
                    Tok::Int(value) => args.push(TypeArg::Int(value, self.bump().1)),
                    _ => args.push(TypeArg::Type(self.ty()?)),
                }
                if !self.eat(',') {
                    self.expect('>')?;
                    break;
                }
            }
        }
        Ok(TypeExpr::Named { name, args, span: start.to(self.prev_span()) })
    }

    fn enumeration(&mut self, doc: Vec<String>, annotations: Vec<Annotation>) -> Parsed<EnumDecl> {
        let name = self.ident("an enum name")?;
        if !self.eat(':') {
            return Err(self
                .unexpected("`:`")
                .help("give the enum an integer type: `enum Mode : u8 { ... }`"));
        }
        let repr = self.ty()?;
        self.expect('{')?;
        let mut variants = Vec::new();
        loop {
            let doc = self.docs();
            if self.eat('}') {
                break;
            }
            let name = self.ident("a variant name")?;
            let value = if self.eat('=') { Some(self.int("a value")?) } else { None };
            variants.push(VariantDecl { doc, name, value });
            if !self.eat(',') {
                self.docs();
                self.expect('}')?;
                break;
            }
        }
        Ok(EnumDecl { doc, annotations, name, repr, variants })
    }
}
