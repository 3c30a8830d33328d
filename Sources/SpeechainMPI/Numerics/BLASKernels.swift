import CKernels
import COpenBLAS
import Foundation

/// Which kernels the BLAS runs, against what the CPU offers. Debian's OpenBLAS 0.3.21 picks its kernels once, when
/// the library loads, from a table of CPU models; on a CPU newer than that table (e.g. Intel Xeon family 6 model 207)
/// it falls back to Prescott (SSE3) kernels, 4–5× slower. `OPENBLAS_CORETYPE` must be in the environment before the
/// library loads, so the fix is to run the program again with it set (`ensureNativeKernels`).
public struct BLASKernels: Sendable, Equatable, CustomStringConvertible {
    /// The vector instruction level of a CPU or of a kernel set.
    public enum Level: Int, Comparable, Sendable {
        case sse = 0, avx = 1, avx2 = 2, avx512 = 3
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var name: String { ["SSE", "AVX", "AVX2", "AVX-512"][rawValue] }
    }

    public var library = "OpenBLAS"
    public var version: String
    /// `openblas_get_corename()`, e.g. "Cooperlake", "SkylakeX", "Prescott".
    public var kernels: String
    /// What CPUID offers (as the kernel reports it in /proc/cpuinfo).
    public var cpuLevel: Level
    /// The kernels OpenBLAS chose before this process restarted itself with better ones.
    public var replaced: String?
    /// OPENBLAS_CORETYPE as the user set it (nil when unset, or set by this program).
    public var userCoreType: String?
    /// The CPU's vendor and family (/proc/cpuinfo), for the one model whose best kernels are not its widest.
    public var cpu: CPUIdentity? = nil

    /// `vendor_id` and `cpu family` of /proc/cpuinfo.
    public struct CPUIdentity: Sendable, Equatable {
        public var vendor: String
        public var family: Int
        public init(vendor: String, family: Int) { self.vendor = vendor; self.family = family }

        /// AMD family 25 with AVX-512 is Zen 4, whose cores execute a 512-bit instruction as two 256-bit halves.
        /// OpenBLAS 0.3.21 gives it its AVX-512 sets (Cooperlake), but its AVX2 set (Haswell) measured faster there
        /// on every product of the steps (2026-12-07, AMD EPYC family 25 model 17, alternated pairs: the 1024³ sgemm
        /// 106–109 against 98–102 GFLOP/s, the benchmark MLP's products 86–91 against 79–84, the ASR step 0.93–0.97×).
        /// Zen 5 (family 26) runs AVX-512 at full width, and there Cooperlake was the faster (2026-12-02).
        public func prefersAVX2Kernels(at level: Level) -> Bool { vendor == "AuthenticAMD" && family == 25 && level == .avx512 }
    }

    /// The ISA level of OpenBLAS 0.3.21's x86-64 kernel sets (names as `openblas_get_corename` spells them,
    /// compared without case). A name not listed (a newer release's) is trusted.
    static let kernelLevels: [String: Level] = [
        "prescott": .sse, "core2": .sse, "penryn": .sse, "dunnington": .sse, "nehalem": .sse, "atom": .sse,
        "katmai": .sse, "coppermine": .sse, "northwood": .sse, "banias": .sse, "opteron": .sse, "opteron_sse3": .sse,
        "barcelona": .sse, "bobcat": .sse, "athlon": .sse, "nano": .sse, "generic": .sse, "unknown": .sse,
        "sandybridge": .avx, "bulldozer": .avx, "piledriver": .avx, "steamroller": .avx, "excavator": .avx,
        "haswell": .avx2, "zen": .avx2,
        "skylakex": .avx512, "cooperlake": .avx512, "sapphirerapids": .avx512,
    ]

    /// The kernels to ask for on a CPU of each level: measured fastest on the step's GEMM shapes (README, "BLAS
    /// kernels"); Haswell is OpenBLAS's AVX2 set, also on a Zen 4 (see `CPUIdentity.prefersAVX2Kernels`).
    public static func preferredKernels(for level: Level, cpu: CPUIdentity? = nil) -> String? {
        switch level {
        case .avx512: return cpu?.prefersAVX2Kernels(at: level) == true ? "Haswell" : "SkylakeX"
        case .avx2: return "Haswell"
        case .avx, .sse: return nil
        }
    }

    /// The kernels are a fallback when they use a lower vector level than the ones this CPU is best served by.
    public var isFallback: Bool {
        guard let level = Self.kernelLevels[kernels.lowercased()], cpuLevel >= .avx2,
              let preferred = Self.preferredKernels(for: cpuLevel, cpu: cpu),
              let preferredLevel = Self.kernelLevels[preferred.lowercased()] else { return false }
        return level < preferredLevel
    }

    /// The kernels this program restarts with: the preferred ones when OpenBLAS chose a fallback, and Haswell when
    /// it chose an AVX-512 set on a Zen 4; nil when its choice stands.
    public var betterKernels: String? {
        if isFallback { return Self.preferredKernels(for: cpuLevel, cpu: cpu) }
        if let cpu, cpu.prefersAVX2Kernels(at: cpuLevel), Self.kernelLevels[kernels.lowercased()] == .avx512 { return "Haswell" }
        return nil
    }

    public var description: String {
        var text = "\(library) \(version), \(kernels) kernels on an \(cpuLevel.name) CPU"
        if let replaced { text += " (OpenBLAS chose \(replaced); restarted with OPENBLAS_CORETYPE=\(kernels))" }
        else if let user = userCoreType { text += " (OPENBLAS_CORETYPE=\(user), yours)" }
        if isFallback { text += "; these are fallback kernels for this CPU" }
        return text
    }

    // MARK: - Reading the process's state

    /// Marks OPENBLAS_CORETYPE as imposed by the tests (to make OpenBLAS start on fallback kernels), not by the user.
    public static let imposedMarker = "SPEECHAIN_TEST_IMPOSED_CORETYPE"
    /// Set for the restarted process: the kernels OpenBLAS had chosen.
    static let replacedMarker = "SPEECHAIN_BLAS_REPLACED"

    public static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> BLASKernels {
        let config = openblas_get_config().map { String(cString: $0) } ?? "OpenBLAS"
        // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64"
        let words = config.split(separator: " ")
        let version = words.count > 1 && words[0] == "OpenBLAS" ? String(words[1]) : "unknown"
        let kernels = openblas_get_corename().map { String(cString: $0) } ?? "unknown"
        let imposed = environment[imposedMarker] != nil || environment[replacedMarker] != nil
        return BLASKernels(version: version, kernels: kernels, cpuLevel: cpuLevel(), replaced: environment[replacedMarker],
                           userCoreType: imposed ? nil : environment["OPENBLAS_CORETYPE"], cpu: cpuIdentity())
    }

    /// The CPU's vendor and family from /proc/cpuinfo (nil when it does not say).
    public static func cpuIdentity(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> CPUIdentity? {
        guard let lines = cpuinfo?.split(separator: "\n") else { return nil }
        func value(_ key: String) -> String? {
            guard let line = lines.first(where: { $0.hasPrefix(key) }), let colon = line.firstIndex(of: ":") else { return nil }
            return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        guard let vendor = value("vendor_id"), let family = value("cpu family").flatMap({ Int($0) }) else { return nil }
        return CPUIdentity(vendor: vendor, family: family)
    }

    /// The CPU's vector level from the flags the kernel reports (CPUID bits it also enabled in XCR0).
    public static func cpuLevel(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> Level {
        guard let line = cpuinfo?.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return .sse }
        let flags = Set(line.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains) { return .avx512 }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return .avx2 }
        if flags.contains("avx") { return .avx }
        return .sse
    }

    /// When OpenBLAS runs fallback kernels (or its AVX-512 set on a Zen 4) and the user did not choose them, runs
    /// this program again (same PID, same arguments) with OPENBLAS_CORETYPE set to the kernels for this CPU. Call it
    /// first thing in `main`, before MPI is initialised. Returns only when nothing needs to change (or the restart
    /// failed, which is reported by `current()` still naming OpenBLAS's choice).
    public static func ensureNativeKernels() {
        let environment = ProcessInfo.processInfo.environment
        let now = current(environment: environment)
        guard now.userCoreType == nil, now.replaced == nil, let better = now.betterKernels else { return }
        setenv("OPENBLAS_CORETYPE", better, 1)
        setenv(replacedMarker, now.kernels, 1)
        unsetenv(imposedMarker)
        let arguments = CommandLine.arguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        // exec failed: carry on with the kernels we have (the start line names them as a fallback)
        unsetenv(replacedMarker)
    }
}

/// Flush-to-zero and denormals-are-zero (torch.set_flush_denormal): on from the first instruction of the process on
/// every thread it creates (see Denormals.h), switchable per thread.
public enum Denormals {
    public static var flushed: Bool { ck_denormals_flushed() != 0 }
    public static func setFlushed(_ on: Bool) { ck_set_flush_denormal(on ? 1 : 0) }
    public static var flushedAtStart: Bool { ck_flush_denormal_at_start() != 0 }
}
