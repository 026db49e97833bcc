//! Perf trace spans around generated calls, free when tracing is off.
//!
//! Generated clients and dispatchers take a [`Tracer`] type parameter that defaults to
//! [`NoTrace`], whose methods are empty and inlined away. The perf crate provides the
//! real recorder by implementing [`Tracer`].

/// Which end of a call a span measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// From encoding the request to decoding the reply.
    Client,
    /// From decoding the request to encoding the reply.
    Server,
}

/// Static description of one traced method; generated as a `static` per method and side.
#[derive(Debug)]
pub struct Span {
    /// Contract name, e.g. `bench.echo`.
    pub contract: &'static str,
    /// Interface name.
    pub interface: &'static str,
    /// Method name.
    pub method: &'static str,
    /// Method ordinal (the request label).
    pub ordinal: u64,
    /// Which end of the call.
    pub side: Side,
}

/// Receives span events. Implementations use interior mutability (a per-CPU ring).
pub trait Tracer {
    /// A call described by `span` starts.
    fn begin(&self, span: &'static Span);
    /// The call described by `span` ends.
    fn end(&self, span: &'static Span);
}

/// The tracer used when tracing is off: does nothing and costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn begin(&self, _span: &'static Span) {}
    #[inline(always)]
    fn end(&self, _span: &'static Span) {}
}

/// Runs `body` inside the span: begin, body, end (also on early error returns).
#[inline(always)]
pub fn traced<T: Tracer + ?Sized, R>(tracer: &T, span: &'static Span, body: impl FnOnce() -> R) -> R {
    tracer.begin(span);
    let result = body();
    tracer.end(span);
    result
}
