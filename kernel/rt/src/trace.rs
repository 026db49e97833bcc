//! User-space trace recording: spans, instants and counters go straight into a
//! per-thread buffer the kernel shares with the thread (`thread::SET_TRACE_BUFFER`,
//! layout in `ramen_perf_record::user_buffer`), with no system call per event. The
//! kernel turns recording on and off by rewriting the buffer's header when tracing
//! starts and stops (only with the `USER` category), and copies the records into its
//! trace dump, where each thread gets a track of its own.
//!
//! Labels are [`label`]s: up to eight bytes of text packed into the id, which the
//! exporter shows as the text, so a program needs no label table.
//!
//! Foundry-generated clients and dispatchers record one span per call through
//! [`CallSpans`]: `echo::Client::with_tracer(endpoint, &spans)`.

use core::cell::RefCell;

pub use ramen_perf_record::inline_label as label;
use ramen_perf_record::user_buffer::{UserBufferView, UserBufferWriter};
use ramen_perf_record::{EventKind, Record};

use crate::vm::{Mapping, PAGE, Tables};
use crate::{Error, SysError, kobj};

/// Where a program's first thread maps its trace buffer: the page after its IPC
/// buffer, whose page table the loader has installed.
pub const BUFFER_VADDR: u64 = crate::msgbuf::PROGRAM_IPC_BUFFER + PAGE;

/// For a mapping whose page tables are already installed.
struct NoTables;

impl Tables for NoTables {
    fn take(&mut self, _: u32) -> Result<u64, SysError> {
        Err(SysError(Error::MissingPageTable.code()))
    }

    fn give_back(&mut self, _: u32, _: u64) {}
}

/// A thread's trace buffer, mapped in its own address space.
pub struct Tracer {
    mapping: Mapping,
}

impl Tracer {
    /// Maps the 4 KiB frame capability `frame` writable at `vaddr` (its page table
    /// must exist, as at [`BUFFER_VADDR`]) and makes it the trace buffer of `thread`
    /// (a thread capability, normally `slot::THREAD`). On failure nothing stays mapped.
    pub fn attach(thread: u64, frame: u64, vaddr: u64) -> Result<Self, SysError> {
        let mapping = Mapping::new(frame, 1, vaddr, true, &mut NoTables)?;
        if let Err(e) = kobj::set_trace_buffer(thread, frame) {
            let _ = mapping.unmap();
            return Err(e);
        }
        Ok(Self { mapping })
    }

    /// Takes the buffer away from `thread` and unmaps it.
    pub fn detach(self, thread: u64) -> Result<(), SysError> {
        kobj::set_trace_buffer(thread, 0)?;
        self.mapping.unmap()
    }

    /// Records appended since the kernel last reset the buffer (when it was attached
    /// or tracing started), as the header says.
    pub fn recorded(&self) -> u64 {
        UserBufferView::parse(self.mapping.bytes()).map_or(0, |view| view.written())
    }

    /// Appends one record if the kernel has user tracing on; returns whether it did.
    /// (The kernel reads the buffer only after tracing stopped, so plain stores
    /// suffice; a record being written at that moment may be lost.)
    fn record(&mut self, kind: EventKind, args: [u64; 2]) -> bool {
        let Ok(mut writer) = UserBufferWriter::attach(self.mapping.bytes_mut()) else {
            return false;
        };
        if !writer.enabled() {
            return false;
        }
        // CPU indexes fit 16 bits (the kernel has at most 256 CPUs).
        let cpu = crate::current_cpu() as u16;
        writer.record(Record::new(kind, cpu, 0, crate::tsc::rdtsc(), args))
    }

    /// Opens a span named `label`; `data` travels with it.
    pub fn begin(&mut self, label: u64, data: u64) -> bool {
        self.record(EventKind::UserSpanBegin, [label, data])
    }

    /// Closes the innermost span named `label`.
    pub fn end(&mut self, label: u64, data: u64) -> bool {
        self.record(EventKind::UserSpanEnd, [label, data])
    }

    /// A point in time.
    pub fn instant(&mut self, label: u64, data: u64) -> bool {
        self.record(EventKind::UserInstant, [label, data])
    }

    /// A sample of the counter `label`.
    pub fn counter(&mut self, label: u64, value: i64) -> bool {
        self.record(EventKind::UserCounter, [label, u64::from_le_bytes(value.to_le_bytes())])
    }

    /// Runs `f` inside a span named `label`.
    pub fn span<R>(&mut self, label: u64, f: impl FnOnce() -> R) -> R {
        self.begin(label, 0);
        let result = f();
        self.end(label, 0);
        result
    }
}

/// A [`Tracer`] that Foundry-generated code records into, one span per call: the
/// label is the method name (its first eight bytes), the data the method ordinal,
/// with bit 63 set on the server side. Pass `&CallSpans` to `with_tracer`.
pub struct CallSpans {
    tracer: RefCell<Tracer>,
}

/// Bit 63 of a Foundry span's data: the server side of the call.
pub const SERVER_SIDE: u64 = 1 << 63;

impl CallSpans {
    /// Records the spans into `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        Self { tracer: RefCell::new(tracer) }
    }

    /// Records in the buffer, as [`Tracer::recorded`] counts them.
    pub fn recorded(&self) -> u64 {
        self.tracer.try_borrow().map_or(0, |t| t.recorded())
    }

    fn data(span: &foundry_runtime::Span) -> u64 {
        match span.side {
            foundry_runtime::Side::Client => span.ordinal,
            foundry_runtime::Side::Server => span.ordinal | SERVER_SIDE,
        }
    }
}

impl foundry_runtime::Tracer for &CallSpans {
    fn begin(&self, span: &'static foundry_runtime::Span) {
        // A call made from inside another traced call's span (never nested in
        // generated code) would find the tracer busy; it then goes unrecorded.
        if let Ok(mut tracer) = self.tracer.try_borrow_mut() {
            tracer.begin(label(span.method), CallSpans::data(span));
        }
    }

    fn end(&self, span: &'static foundry_runtime::Span) {
        if let Ok(mut tracer) = self.tracer.try_borrow_mut() {
            tracer.end(label(span.method), CallSpans::data(span));
        }
    }
}
