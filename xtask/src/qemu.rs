//! The QEMU machine: command-line construction, accelerator choice, and reading the
//! kernel's exit status.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::process::{Exit, Outcome};

/// The QEMU binary we boot with.
pub const QEMU: &str = "qemu-system-x86_64";

/// The Debian package providing `QEMU`.
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// The kernel writes 0x10 (success) or 0x11 (failure) to the isa-debug-exit port, and QEMU
/// exits with `(value << 1) | 1`.
pub const EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
pub const EXIT_FAILURE: i32 = (0x11 << 1) | 1;

/// The exit device the kernel writes its verdict to.
const EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// How many console lines to show when a boot times out.
pub const TAIL_LINES: usize = 30;

/// Firmware for machines without ACPI. `acpi=off` alone is not enough: SeaBIOS (the
/// default) builds its own ACPI tables, MADT included, when QEMU provides none, whereas
/// qboot only passes on QEMU's. Found by name in QEMU's data directory (qemu-system-data).
const NO_ACPI_FIRMWARE: &str = "qboot.rom";

/// The ACPI SLIT distance between two different nodes; QEMU sets each node's distance to
/// itself to the local value, 10.
const NUMA_REMOTE_DISTANCE: u32 = 21;

/// Machine shape flags shared by the commands that boot the kernel.
#[derive(clap::Args, Clone)]
pub struct MachineArgs {
    /// Number of CPUs.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Number of sockets; each socket is its own NUMA node. Must divide --smp.
    #[arg(long, default_value_t = 1)]
    pub sockets: u32,
    /// Guest memory in MiB (suffix M or G accepted), split across sockets (evenly, or
    /// the first nodes one MiB more).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_mem_mib)]
    pub mem: u64,
    /// Accelerator: auto picks KVM only where it is hardware virtualisation.
    #[arg(long, value_enum, default_value_t = AccelRequest::Auto)]
    pub accel: AccelRequest,
    /// Deterministic single-threaded TCG: one guest TSC tick per instruction.
    #[arg(long)]
    pub icount: bool,
    /// Give the guest no ACPI tables (qboot firmware, `-machine acpi=off`).
    #[arg(long)]
    pub no_acpi: bool,
}

impl MachineArgs {
    pub fn to_machine(&self) -> anyhow::Result<Machine> {
        let mut machine = Machine::new(self.smp, self.sockets, self.mem)?;
        machine.acpi = !self.no_acpi;
        Ok(machine)
    }
}

/// Parses a memory size: a number of MiB, optionally with an `M` or `G` suffix.
pub fn parse_mem_mib(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, scale) = match text.strip_suffix(['G', 'g']) {
        Some(digits) => (digits, 1024),
        None => (text.strip_suffix(['M', 'm']).unwrap_or(text), 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&mib| mib > 0)
        .ok_or_else(|| format!("`{text}` is not a memory size in MiB (e.g. 512, 512M, 1G)"))
}

/// A validated machine shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub sockets: u32,
    pub mem_mib: u64,
    /// Whether the guest gets ACPI tables (MADT, SRAT, SLIT).
    pub acpi: bool,
}

impl Machine {
    pub fn new(cpus: u32, sockets: u32, mem_mib: u64) -> anyhow::Result<Self> {
        ensure!(cpus >= 1, "--smp must be at least 1");
        ensure!(sockets >= 1, "--sockets must be at least 1");
        ensure!(
            cpus.is_multiple_of(sockets),
            "--sockets {sockets} does not divide --smp {cpus}: every socket needs the same number of cores"
        );
        ensure!(
            mem_mib >= u64::from(sockets),
            "--mem {mem_mib}M leaves a socket without memory ({sockets} sockets, one NUMA node each)"
        );
        Ok(Self { cpus, sockets, mem_mib, acpi: true })
    }

    /// The memory of NUMA node `node` (one per socket): an even share, the first
    /// nodes one MiB more when it does not split evenly (512M over 3 sockets:
    /// 171M, 171M, 170M).
    pub fn node_mib(&self, node: u32) -> u64 {
        let sockets = u64::from(self.sockets);
        self.mem_mib / sockets + u64::from(u64::from(node) < self.mem_mib % sockets)
    }

    /// `-machine`, `-m`, `-smp` and, with several sockets, one NUMA node per socket.
    fn args(&self) -> Vec<String> {
        let cores = self.cpus / self.sockets;
        let mut args = Vec::new();
        if !self.acpi {
            args.extend(["-bios".into(), NO_ACPI_FIRMWARE.into()]);
        }
        let machine = if self.acpi { "q35" } else { "q35,acpi=off" };
        args.extend([
            "-machine".into(),
            machine.into(),
            "-m".into(),
            format!("{}M", self.mem_mib),
            "-smp".into(),
            format!("{},sockets={},cores={cores},threads=1", self.cpus, self.sockets),
        ]);
        if self.sockets > 1 {
            for node in 0..self.sockets {
                let node_mib = self.node_mib(node);
                let first = node * cores;
                let last = first + cores - 1;
                let cpus = if first == last { first.to_string() } else { format!("{first}-{last}") };
                args.extend([
                    "-object".into(),
                    format!("memory-backend-ram,id=mem{node},size={node_mib}M"),
                    "-numa".into(),
                    format!("node,nodeid={node},cpus={cpus},memdev=mem{node}"),
                ]);
            }
            // Explicit distances make QEMU build a SLIT for the guest.
            for src in 0..self.sockets {
                for dst in (0..self.sockets).filter(|&dst| dst != src) {
                    args.extend([
                        "-numa".into(),
                        format!("dist,src={src},dst={dst},val={NUMA_REMOTE_DISTANCE}"),
                    ]);
                }
            }
        }
        args
    }
}

/// The `--accel` flag.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelRequest {
    /// KVM where the CPU has vmx/svm and /dev/kvm is usable, TCG otherwise.
    Auto,
    /// KVM, even where it is a software hypervisor.
    Kvm,
    /// QEMU's emulator.
    Tcg,
}

/// The accelerator a boot uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM; `software` when the host has no vmx/svm (a software hypervisor such as PVM).
    Kvm { software: bool },
    /// Multi-threaded TCG: vCPUs run in parallel on host cores.
    Tcg,
    /// Single-threaded TCG with `-icount shift=0`: deterministic instruction counting.
    TcgIcount,
}

impl Accel {
    fn args(self) -> Vec<String> {
        let words: &[&str] = match self {
            Accel::Kvm { software: false } => &["-accel", "kvm", "-cpu", "host"],
            // The software hypervisor rejects `-cpu host` unless this feature is masked.
            Accel::Kvm { software: true } => &["-accel", "kvm", "-cpu", "host,-arch-capabilities"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
            Accel::TcgIcount => &["-accel", "tcg", "-icount", "shift=0", "-cpu", "max"],
        };
        words.iter().map(|&word| word.into()).collect()
    }
}

/// What the host offers for virtualisation.
#[derive(Clone, Copy, Debug)]
pub struct HostVirt {
    /// `/proc/cpuinfo` lists `vmx` or `svm`: KVM is real hardware virtualisation.
    pub hardware: bool,
    /// `/dev/kvm` opens read-write.
    pub kvm_device: bool,
}

/// An accelerator and the reason it was chosen, for every report.
#[derive(Clone, Debug)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

impl AccelChoice {
    /// One line saying which accelerator runs and why.
    pub fn describe(&self) -> String {
        let name = match self.accel {
            Accel::Kvm { software: false } => "kvm",
            Accel::Kvm { software: true } => "kvm (software hypervisor: slow, not representative)",
            Accel::Tcg => "tcg (multi-threaded)",
            Accel::TcgIcount => "tcg (single-threaded, icount)",
        };
        format!("accel: {name}; {}", self.reason)
    }
}

/// Whether a `/proc/cpuinfo` text lists hardware virtualisation on its `flags` lines.
pub fn cpuinfo_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .filter_map(|line| line.split_once(':'))
        .any(|(_, flags)| flags.split_whitespace().any(|flag| flag == "vmx" || flag == "svm"))
}

/// Picks the accelerator. KVM without vmx/svm is a software hypervisor on these machines
/// (slow, and unfaithful in guest ring 0), so `auto` never picks it.
pub fn choose_accel(request: AccelRequest, icount: bool, host: HostVirt) -> anyhow::Result<AccelChoice> {
    let choice = |accel, reason: &str| Ok(AccelChoice { accel, reason: reason.into() });
    if icount {
        if request == AccelRequest::Kvm {
            bail!("--icount needs TCG; it cannot be combined with --accel kvm");
        }
        return choice(Accel::TcgIcount, "--icount asks for deterministic instruction counting");
    }
    match request {
        AccelRequest::Tcg => choice(Accel::Tcg, "--accel tcg requested"),
        AccelRequest::Kvm => {
            ensure!(host.kvm_device, "--accel kvm requested but /dev/kvm cannot be opened read-write");
            if host.hardware {
                choice(Accel::Kvm { software: false }, "--accel kvm requested")
            } else {
                choice(
                    Accel::Kvm { software: true },
                    "--accel kvm requested, but no vmx/svm in /proc/cpuinfo: /dev/kvm is a software hypervisor",
                )
            }
        }
        AccelRequest::Auto => match (host.hardware, host.kvm_device) {
            (true, true) => choice(Accel::Kvm { software: false }, "vmx/svm present and /dev/kvm usable"),
            (true, false) => choice(Accel::Tcg, "kvm not used: /dev/kvm cannot be opened read-write"),
            (false, true) => choice(
                Accel::Tcg,
                "kvm not used: no vmx/svm in /proc/cpuinfo (this host's /dev/kvm is a software hypervisor)",
            ),
            (false, false) => {
                choice(Accel::Tcg, "kvm not used: no vmx/svm in /proc/cpuinfo and no usable /dev/kvm")
            }
        },
    }
}

/// `choose_accel` for this host.
pub fn choose_accel_for_host(request: AccelRequest, icount: bool) -> anyhow::Result<AccelChoice> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let host = HostVirt {
        hardware: cpuinfo_has_hw_virt(&cpuinfo),
        kvm_device: std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
    };
    choose_accel(request, icount, host)
}

/// Everything that determines one boot.
#[derive(Clone, Debug)]
pub struct BootConfig {
    pub machine: Machine,
    pub accel: Accel,
    pub kernel: PathBuf,
    /// The boot archive (`-initrd`), if any: the root task and the other programs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line, space separated; empty for none.
    pub kernel_args: String,
    /// Add `-s -S`: gdb stub on tcp::1234, CPU halted until gdb continues.
    pub gdb: bool,
    /// Further QEMU arguments (e.g. `-acpitable` for a test's extra firmware table).
    pub extra_args: Vec<String>,
}

/// The QEMU arguments for `config`.
pub fn args(config: &BootConfig) -> Vec<String> {
    let mut args = config.machine.args();
    args.extend(config.accel.args());
    args.extend(["-kernel".into(), config.kernel.display().to_string()]);
    if let Some(initrd) = &config.initrd {
        args.extend(["-initrd".into(), initrd.display().to_string()]);
    }
    if !config.kernel_args.is_empty() {
        args.extend(["-append".into(), config.kernel_args.clone()]);
    }
    args.extend(
        ["-device", EXIT_DEVICE, "-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot"]
            .map(String::from),
    );
    if config.gdb {
        args.extend(["-s".into(), "-S".into()]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// The QEMU command for `config`.
pub fn command(config: &BootConfig) -> Command {
    let mut command = Command::new(QEMU);
    command.args(args(config));
    command
}

/// What a boot's exit says about the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel wrote its success code.
    Success,
    /// The kernel wrote its failure code.
    KernelFailure,
    /// QEMU ended some other way: the kernel never reported.
    NoReport(Exit),
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Success => "kernel reported success".into(),
            Verdict::KernelFailure => "kernel reported failure".into(),
            Verdict::NoReport(Exit::Code(code)) => {
                format!("QEMU exited with status {code} (kernel did not report)")
            }
            Verdict::NoReport(Exit::Signal(signal)) => {
                format!("QEMU was killed by signal {signal} (kernel did not report)")
            }
            Verdict::NoReport(Exit::TimedOut(timeout)) => {
                format!("timed out after {} s; QEMU killed (kernel did not report)", timeout.as_secs_f64())
            }
        }
    }
}

pub fn verdict(outcome: &Outcome) -> Verdict {
    match outcome.exit {
        Exit::Code(EXIT_SUCCESS) => Verdict::Success,
        Exit::Code(EXIT_FAILURE) => Verdict::KernelFailure,
        other => Verdict::NoReport(other),
    }
}

/// Whether `program` is an executable file somewhere on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether we may install system packages: root, or password-less sudo.
fn install_prefix() -> Option<Vec<&'static str>> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let is_root = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0");
    if is_root {
        return Some(Vec::new());
    }
    let sudo_works = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    sudo_works.then(|| vec!["sudo", "-n"])
}

/// Runs `apt-get <args>` non-interactively, prefixed by `as_root` (empty, or `sudo -n`).
fn apt_get(as_root: &[&str], args: &[&str]) -> anyhow::Result<bool> {
    let words: Vec<&str> = as_root
        .iter()
        .copied()
        .chain(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"])
        .chain(args.iter().copied())
        .collect();
    let status = Command::new(words[0])
        .args(&words[1..])
        .status()
        .with_context(|| format!("could not run {}", words.join(" ")))?;
    Ok(status.success())
}

/// Makes sure QEMU is installed, installing the Debian package where we are allowed to.
pub fn ensure_installed() -> anyhow::Result<()> {
    if on_path(QEMU) {
        return Ok(());
    }
    let install = format!("apt-get update && apt-get install -y {QEMU_PACKAGE}");
    let Some(as_root) = install_prefix().filter(|_| on_path("apt-get")) else {
        bail!("{QEMU} is not on PATH; install it with: sudo sh -c '{install}'");
    };
    println!("qemu: {QEMU} not found; running: {install}");
    let installed = apt_get(&as_root, &["update"])? && apt_get(&as_root, &["install", "-y", QEMU_PACKAGE])?;
    ensure!(installed, "installing {QEMU_PACKAGE} failed; run: sudo sh -c '{install}'");
    ensure!(on_path(QEMU), "{QEMU_PACKAGE} installed but {QEMU} is still not on PATH");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(machine: Machine, accel: Accel) -> BootConfig {
        BootConfig {
            machine,
            accel,
            kernel: "k.elf".into(),
            initrd: Some("boot.rfs".into()),
            kernel_args: "test".into(),
            gdb: false,
            extra_args: Vec::new(),
        }
    }

    #[test]
    fn single_socket_command_line() {
        let config = boot(Machine::new(1, 1, 512).unwrap(), Accel::Tcg);
        assert_eq!(
            args(&config).join(" "),
            "-machine q35 -m 512M -smp 1,sockets=1,cores=1,threads=1 \
             -accel tcg,thread=multi -cpu max -kernel k.elf -initrd boot.rfs -append test \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -serial stdio -display none \
             -monitor none -no-reboot"
        );
    }

    #[test]
    fn one_numa_node_per_socket_with_distances() {
        let config = boot(Machine::new(4, 2, 512).unwrap(), Accel::Tcg);
        let line = args(&config).join(" ");
        assert!(line.contains("-smp 4,sockets=2,cores=2,threads=1"), "{line}");
        assert!(line.contains(
            "-object memory-backend-ram,id=mem0,size=256M -numa node,nodeid=0,cpus=0-1,memdev=mem0"
        ));
        assert!(line.contains(
            "-object memory-backend-ram,id=mem1,size=256M -numa node,nodeid=1,cpus=2-3,memdev=mem1"
        ));
        assert!(line.contains("-numa dist,src=0,dst=1,val=21 -numa dist,src=1,dst=0,val=21"));
        assert!(!line.contains("src=0,dst=0"));
    }

    #[test]
    fn single_cpu_nodes_name_one_cpu() {
        let line = args(&boot(Machine::new(2, 2, 512).unwrap(), Accel::Tcg)).join(" ");
        assert!(line.contains("node,nodeid=1,cpus=1,memdev=mem1"), "{line}");
    }

    #[test]
    fn memory_that_does_not_split_evenly_goes_to_the_first_nodes() {
        // Regression: `--smp 6 --sockets 3` failed with the default 512M.
        let machine = Machine::new(6, 3, 512).unwrap();
        let sizes: Vec<u64> = (0..3).map(|node| machine.node_mib(node)).collect();
        assert_eq!(sizes, [171, 171, 170]);
        let line = args(&boot(machine, Accel::Tcg)).join(" ");
        assert!(line.contains("memory-backend-ram,id=mem2,size=170M"), "{line}");
        assert_eq!(Machine::new(2, 2, 512).unwrap().node_mib(1), 256);
    }

    #[test]
    fn rejects_uneven_machines() {
        assert!(Machine::new(3, 2, 512).is_err());
        assert!(Machine::new(4, 4, 3).is_err(), "a socket without memory");
        assert!(Machine::new(0, 1, 512).is_err());
        assert!(Machine::new(4, 0, 512).is_err());
    }

    #[test]
    fn no_acpi_gdb_and_accel_flags() {
        let mut machine = Machine::new(2, 1, 256).unwrap();
        machine.acpi = false;
        let mut config = boot(machine, Accel::TcgIcount);
        config.gdb = true;
        config.kernel_args.clear();
        config.initrd = None;
        let line = args(&config).join(" ");
        assert!(line.starts_with("-bios qboot.rom -machine q35,acpi=off -m 256M"), "{line}");
        assert!(line.contains("-accel tcg -icount shift=0 -cpu max"));
        assert!(line.ends_with("-no-reboot -s -S"));
        assert!(!line.contains("-append"));
        assert!(!line.contains("-initrd"));
        let line = args(&boot(Machine::new(1, 1, 512).unwrap(), Accel::Kvm { software: false })).join(" ");
        assert!(line.contains("-accel kvm -cpu host "), "{line}");
    }

    #[test]
    fn parses_memory_sizes() {
        assert_eq!(parse_mem_mib("512"), Ok(512));
        assert_eq!(parse_mem_mib("512M"), Ok(512));
        assert_eq!(parse_mem_mib("2G"), Ok(2048));
        assert!(parse_mem_mib("0").is_err());
        assert!(parse_mem_mib("lots").is_err());
    }

    #[test]
    fn finds_hardware_virtualisation_in_cpuinfo() {
        let amd = "processor\t: 0\nflags\t\t: fpu vme sse2 svm lahf_lm\n";
        let intel = "flags\t\t: fpu vmx ept\n";
        let pvm = "flags\t\t: fpu sse2 hypervisor\nvmx flags\t: none\n";
        assert!(cpuinfo_has_hw_virt(amd));
        assert!(cpuinfo_has_hw_virt(intel));
        assert!(!cpuinfo_has_hw_virt(pvm));
        assert!(!cpuinfo_has_hw_virt(""));
    }

    #[test]
    fn auto_picks_kvm_only_with_hardware_virtualisation() {
        let real = HostVirt { hardware: true, kvm_device: true };
        let pvm = HostVirt { hardware: false, kvm_device: true };
        let none = HostVirt { hardware: false, kvm_device: false };
        let auto = |host| choose_accel(AccelRequest::Auto, false, host).unwrap();
        assert_eq!(auto(real).accel, Accel::Kvm { software: false });
        assert_eq!(auto(pvm).accel, Accel::Tcg);
        assert!(auto(pvm).describe().contains("software hypervisor"));
        assert_eq!(auto(none).accel, Accel::Tcg);
    }

    #[test]
    fn explicit_requests_and_icount() {
        let pvm = HostVirt { hardware: false, kvm_device: true };
        let none = HostVirt { hardware: false, kvm_device: false };
        assert_eq!(choose_accel(AccelRequest::Kvm, false, pvm).unwrap().accel, Accel::Kvm { software: true });
        assert!(choose_accel(AccelRequest::Kvm, false, none).is_err());
        assert!(choose_accel(AccelRequest::Kvm, true, pvm).is_err());
        assert_eq!(choose_accel(AccelRequest::Auto, true, pvm).unwrap().accel, Accel::TcgIcount);
        assert_eq!(choose_accel(AccelRequest::Tcg, false, pvm).unwrap().accel, Accel::Tcg);
    }

    #[test]
    fn exit_codes_map_to_verdicts() {
        let outcome = |exit| Outcome { exit, console: Vec::new(), stderr: Vec::new() };
        assert_eq!(verdict(&outcome(Exit::Code(33))), Verdict::Success);
        assert_eq!(verdict(&outcome(Exit::Code(35))), Verdict::KernelFailure);
        let reset = verdict(&outcome(Exit::Code(0)));
        assert_eq!(reset.describe(), "QEMU exited with status 0 (kernel did not report)");
    }
}
