//! acpi
