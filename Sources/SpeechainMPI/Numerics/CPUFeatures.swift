import CKernels
import Foundation

/// The vector features of this CPU, as CPUID reports them (and, for those with register state — AVX, AVX-512,
/// AMX — only when XGETBV says the OS saves that state, without which the instructions fault).
public struct CPUFeatures: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let sse42 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_SSE42))
    public static let avx = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX))
    public static let avx2 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX2))
    public static let fma = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_FMA))
    public static let f16c = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_F16C))
    public static let avx512f = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512F))
    public static let avx512bw = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512BW))
    public static let avx512vl = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512VL))
    public static let avx512dq = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512DQ))
    public static let avx512bf16 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512_BF16))
    public static let avx512fp16 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AVX512_FP16))
    /// AMX tiles (amx_tile); `amxBF16` and `amxInt8` are its instruction sets.
    public static let amx = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AMX_TILE))
    public static let amxBF16 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AMX_BF16))
    public static let amxInt8 = CPUFeatures(rawValue: UInt32(truncatingIfNeeded: CK_CPU_AMX_INT8))

    /// This machine's features (detected once).
    public static let current = CPUFeatures(rawValue: UInt32(ck_cpu_features()))

    /// Each feature with its /proc/cpuinfo flag name and its display name.
    static let all: [(CPUFeatures, flag: String, name: String)] = [
        (.sse42, "sse4_2", "SSE4.2"), (.avx, "avx", "AVX"), (.avx2, "avx2", "AVX2"), (.fma, "fma", "FMA"),
        (.f16c, "f16c", "F16C"), (.avx512f, "avx512f", "AVX-512F"), (.avx512bw, "avx512bw", "AVX-512BW"),
        (.avx512vl, "avx512vl", "AVX-512VL"), (.avx512dq, "avx512dq", "AVX-512DQ"),
        (.avx512bf16, "avx512_bf16", "AVX512_BF16"), (.avx512fp16, "avx512_fp16", "AVX512_FP16"),
        (.amx, "amx_tile", "AMX"), (.amxBF16, "amx_bf16", "AMX_BF16"), (.amxInt8, "amx_int8", "AMX_INT8"),
    ]

    /// Every feature present, by display name: "SSE4.2 AVX AVX2 FMA ...".
    public var description: String { Self.all.filter { contains($0.0) }.map(\.name).joined(separator: " ") }

    /// The features that matter to the kernels, compactly: "AVX-512F/BW/VL/DQ, AVX512_BF16" on an AVX-512 CPU,
    /// "AVX2, FMA, F16C" on an AVX2 one, "SSE4.2" (or "SSE2") otherwise.
    public var compact: String {
        var parts: [String] = []
        if contains(.avx512f) {
            let subsets = [(CPUFeatures.avx512bw, "BW"), (.avx512vl, "VL"), (.avx512dq, "DQ")].filter { contains($0.0) }
            parts.append((["AVX-512F"] + subsets.map(\.1)).joined(separator: "/"))
            if contains(.avx512bf16) { parts.append("AVX512_BF16") }
            if contains(.avx512fp16) { parts.append("AVX512_FP16") }
            if contains(.amx) { parts.append("AMX") }
        } else if contains(.avx2) {
            parts = [(CPUFeatures.avx2, "AVX2"), (.fma, "FMA"), (.f16c, "F16C")].filter { contains($0.0) }.map(\.1)
        } else if contains(.avx) {
            parts = ["AVX"]
        } else {
            parts = [contains(.sse42) ? "SSE4.2" : "SSE2"]
        }
        return parts.joined(separator: ", ")
    }

    /// One line for the start of a run: the vector path the kernels take and the CPU's features, e.g.
    /// "avx512 (AVX-512F/BW/VL/DQ, AVX512_BF16)"; with SPEECHAIN_VECTOR_PATH, what it asked for.
    public static var summary: String {
        let features = current.compact
        switch VectorPath.selection {
        case .best: return "\(VectorPath.selected) (\(features))"
        case .environment(let name):
            return "\(VectorPath.selected) (\(VectorPath.environmentKey)=\(name); CPU: \(features))"
        case .ignored(let name, let reason):
            return "\(VectorPath.selected) (\(features); \(VectorPath.environmentKey)=\(name) ignored: \(reason))"
        }
    }
}

/// Which compiled variant of the vector kernels (CKernels) runs: AVX-512 (16 floats per register), AVX2+FMA (8) or
/// baseline x86-64 SSE2 (4). All three compute the same bits (see CKernels.h); they differ only in speed.
///
/// The process uses `selected`, chosen once: the widest path the CPU runs, or the one the environment variable
/// SPEECHAIN_VECTOR_PATH (baseline | avx2 | avx512) names when the CPU runs it (for measurements). Tests run a
/// specific path with `VectorPath.avx2.run { ... }` (a task-local override seen by every kernel called inside),
/// or pass `path:` to the `Kernels` functions.
public enum VectorPath: String, CaseIterable, Sendable, CustomStringConvertible, Comparable {
    case baseline, avx2, avx512

    public var description: String { rawValue }

    public static func < (a: VectorPath, b: VectorPath) -> Bool { a.rank < b.rank }
    private var rank: Int { switch self { case .baseline: 0; case .avx2: 1; case .avx512: 2 } }

    var ck: ck_path {
        switch self {
        case .baseline: return CK_PATH_BASELINE
        case .avx2: return CK_PATH_AVX2
        case .avx512: return CK_PATH_AVX512
        }
    }

    /// Whether this CPU and OS run the path (avx2: AVX, AVX2, FMA, F16C; avx512: those and AVX-512F/BW/VL/DQ).
    public var isSupported: Bool { ck_path_supported(ck) != 0 }

    /// The paths this machine runs, narrowest first.
    public static var supported: [VectorPath] { allCases.filter(\.isSupported) }

    /// The widest path this machine runs.
    public static let best: VectorPath = supported.max()!

    static let environmentKey = "SPEECHAIN_VECTOR_PATH"

    enum Selection: Equatable { case best, environment(String), ignored(String, reason: String) }

    /// How `selected` was chosen.
    static let selection: Selection = {
        guard let name = ProcessInfo.processInfo.environment[environmentKey], !name.isEmpty else { return .best }
        guard let path = VectorPath(rawValue: name) else {
            return .ignored(name, reason: "not one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard path.isSupported else { return .ignored(name, reason: "this CPU does not run it") }
        return .environment(name)
    }()

    /// The process-wide path, chosen once.
    public static let selected: VectorPath = {
        if case .environment(let name) = selection, let path = VectorPath(rawValue: name) { return path }
        return best
    }()

    /// A path set for the current task and the calls it makes (tests, benchmarks).
    @TaskLocal static var override: VectorPath?

    /// The path kernels take now: the task's override, else `selected`.
    public static var current: VectorPath { override ?? selected }

    /// Runs `body` with every kernel it calls on this path (which the CPU must run).
    public func run<R>(_ body: () throws -> R) rethrows -> R {
        precondition(isSupported, "vector path \(self) is not supported on this CPU (\(CPUFeatures.current.compact))")
        return try VectorPath.$override.withValue(self, operation: body)
    }
}
