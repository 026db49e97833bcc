//! apic
