import Foundation
import Testing
@testable import SpeechainMPI

/// The float32 → float16/bfloat16 → float32 rounding kernels against IEEE 754's round-to-nearest-even, from two
/// independent references: Swift's own `Float16` conversion (binary16) and a definition-level bfloat16 rounding
/// written here (pick the nearer of the two neighbouring bfloat16 values, measured in Double; ties to the even
/// one; past the largest finite value as if the exponent were unbounded, then ±inf). Every kernel this CPU runs
/// (AVX-512, F16C/AVX2, portable) is checked, bit for bit, over every class of float32, millions of random values and
/// every tail length around the vector width (with IEEE subnormals: `DenormalMode.kept`); the ones it cannot run
/// show as skipped. Under flush-to-zero every path must still give the same bits.
@Suite struct ReducedPrecisionTests {
    // MARK: references

    /// binary16 reference: the standard library's Float16 conversion.
    static func f16Reference(_ x: Float) -> Float { Float(Float16(x)) }

    /// bfloat16 reference from the definition.
    static func bf16Reference(_ x: Float) -> Float {
        if x.isNaN { return Float(bitPattern: (x.bitPattern | 0x0040_0000) & 0xFFFF_0000) }   // quiet, payload kept
        if x.isInfinite || x == 0 { return x }
        let toward0 = x.bitPattern & 0xFFFF_0000                 // the neighbour toward zero (truncation)
        if toward0 == x.bitPattern { return x }
        let away = toward0 + 0x1_0000                             // the next one away from zero (may be ±inf's pattern)
        let magnitude = Double(x.magnitude)
        let lo = Double(Float(bitPattern: toward0).magnitude)
        // above the largest finite bfloat16 the unbounded-exponent neighbour is 2^128
        let hi = (away & 0x7FFF_FFFF) == 0x7F80_0000 ? 0x1p128 : Double(Float(bitPattern: away).magnitude)
        let dLo = magnitude - lo, dHi = hi - magnitude
        let pickAway = dHi < dLo || (dHi == dLo && (toward0 >> 16) & 1 == 1)
        return Float(bitPattern: pickAway ? away : toward0)
    }

    static func reference(_ p: ReducedPrecision, _ x: Float) -> Float {
        p == .float16 ? f16Reference(x) : bf16Reference(x)
    }

    /// The kernels to check on this machine: the dispatched one and those of every vector path the CPU runs.
    static var kernels: [ReducedPrecision.Kernel] {
        [.dispatched] + VectorPath.supported.reversed().map(ReducedPrecision.Kernel.init)
    }

    static func run(_ p: ReducedPrecision, _ kernel: ReducedPrecision.Kernel, _ values: [Float]) -> [Float] {
        var out = [Float](repeating: .nan, count: values.count)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { p.round(src.baseAddress!, into: $0.baseAddress!, count: values.count, kernel: kernel) }
        }
        return out
    }

    static func hex(_ x: Float) -> String { "0x" + String(x.bitPattern, radix: 16) }

    /// Rounds `values` repeated 17 times in one buffer, so that each lands in several lanes of the vector body and
    /// in the scalar tail, and returns, per value, its distinct results (one when every lane agrees).
    static func runEverywhere(_ p: ReducedPrecision, _ kernel: ReducedPrecision.Kernel, _ values: [Float]) -> [[UInt32]] {
        let copies = 17
        let out = run(p, kernel, Array([[Float]](repeating: values, count: copies).joined()))
        return values.indices.map { i in
            var seen: [UInt32] = []
            for c in 0..<copies where !seen.contains(out[c * values.count + i].bitPattern) { seen.append(out[c * values.count + i].bitPattern) }
            return seen
        }
    }

    // MARK: IEEE classes, values from the definitions

    /// (input, expected) with the expected value worked out from binary16's definition.
    static let float16Cases: [(Float, Float, String)] = [
        (0, 0, "+0"), (-0.0, -0.0, "-0"),
        (.infinity, .infinity, "+inf"), (-.infinity, -.infinity, "-inf"),
        (1, 1, "one"), (-2.5, -2.5, "exact normal"),
        (65504, 65504, "largest finite"),
        (Float(65520).nextDown, 65504, "just below the overflow threshold"),
        (65520, .infinity, "halfway to 2^16: ties to even is 2^16, which overflows"),
        (-65520, -.infinity, "negative overflow"),
        (1e6, .infinity, "far past the range"),
        (.greatestFiniteMagnitude, .infinity, "float32 max"),
        (0x1p-14, 0x1p-14, "smallest normal"),
        (0x1p-24, 0x1p-24, "smallest subnormal"),
        (1023 * 0x1p-24, 1023 * 0x1p-24, "largest subnormal"),
        (1023.5 * 0x1p-24, 0x1p-14, "tie between the largest subnormal (odd) and the smallest normal (even)"),
        (0x1p-25, 0, "tie between 0 and the smallest subnormal: to 0 (even)"),
        (-0x1p-25, -0.0, "negative tie to -0"),
        (Float(0x1p-25).nextUp, 0x1p-24, "just above that tie"),
        (3 * 0x1p-25, 0x1p-23, "tie between 1 and 2 units of 2^-24: to 2"),
        (5 * 0x1p-25, 0x1p-23, "tie between 2 and 3 units of 2^-24: to 2"),
        (0x1p-30, 0, "underflow to 0"),
        (.leastNonzeroMagnitude, 0, "float32 subnormal"),
        (-.leastNonzeroMagnitude, -0.0, "negative float32 subnormal keeps its sign"),
        (1 + 0x1p-11, 1, "tie between 1 and 1+2^-10: to 1 (even)"),
        (1 + 3 * 0x1p-11, 1 + 0x1p-9, "tie between 1+2^-10 (odd) and 1+2^-9 (even)"),
        (1 + 0x1p-11 + 0x1p-20, 1 + 0x1p-10, "just above a tie"),
        (Float(1 + 0x1p-11).nextDown, 1, "just below a tie"),
        (2049, 2048, "integer tie to even"), (2051, 2052, "integer tie to even, upward"),
        (-2051, -2052, "negative tie"),
        (2047.75, 2048, "rounding carries into the exponent"),
    ]

    static let bfloat16Cases: [(Float, Float, String)] = [
        (0, 0, "+0"), (-0.0, -0.0, "-0"),
        (.infinity, .infinity, "+inf"), (-.infinity, -.infinity, "-inf"),
        (1, 1, "one"),
        (1 + 0x1p-8, 1, "tie between 1 and 1+2^-7: to 1 (even)"),
        (1 + 3 * 0x1p-8, 1 + 0x1p-6, "tie between 1+2^-7 (odd) and 1+2^-6 (even)"),
        (1 + 0x1p-8 + 0x1p-23, 1 + 0x1p-7, "just above a tie"),
        (-(1 + 3 * 0x1p-8), -(1 + 0x1p-6), "negative tie"),
        (0x1.fep127, 0x1.fep127, "largest finite bfloat16"),
        (0x1.ffp127, .infinity, "tie between the largest finite (odd) and 2^128: overflows"),
        (Float(0x1.ffp127).nextDown, 0x1.fep127, "just below the overflow tie"),
        (.greatestFiniteMagnitude, .infinity, "float32 max overflows"),
        (-.greatestFiniteMagnitude, -.infinity, "negative overflow"),
        (0x1p-126, 0x1p-126, "smallest normal"),
        (0x1p-133, 0x1p-133, "smallest bfloat16 subnormal"),
        (0x1p-134, 0, "tie between 0 and the smallest subnormal: to 0"),
        (3 * 0x1p-134, 0x1p-132, "subnormal tie to even"),
        (.leastNonzeroMagnitude, 0, "float32's smallest subnormal"),
        (-.leastNonzeroMagnitude, -0.0, "keeps its sign"),
        (Float(0x1p-126).nextDown, 0x1p-126, "largest float32 subnormal rounds up into the normals"),
        (255.5, 256, "carries into the exponent"),
    ]

    @Test(arguments: kernels)
    func float16ClassesRoundAsIEEE(kernel: ReducedPrecision.Kernel) {
        DenormalMode.kept {
            let got = Self.runEverywhere(.float16, kernel, Self.float16Cases.map(\.0))
            for ((x, want, what), r) in zip(Self.float16Cases, got) {
                #expect(r == [want.bitPattern], "\(what): \(x) → \(r.map {Self.hex(Float(bitPattern: $0)) }), want \(Self.hex(want))")
                #expect(want.bitPattern == Self.f16Reference(x).bitPattern, "\(what): the table agrees with Float16")
            }
        }
    }

    @Test(arguments: kernels)
    func bfloat16ClassesRoundAsIEEE(kernel: ReducedPrecision.Kernel) {
        DenormalMode.kept {
            let got = Self.runEverywhere(.bfloat16, kernel, Self.bfloat16Cases.map(\.0))
            for ((x, want, what), r) in zip(Self.bfloat16Cases, got) {
                #expect(r == [want.bitPattern], "\(what): \(x) → \(r.map {Self.hex(Float(bitPattern: $0)) }), want \(Self.hex(want))")
                #expect(want.bitPattern == Self.bf16Reference(x).bitPattern, "\(what): the table agrees with the reference")
            }
        }
    }

    /// NaN stays NaN — also a signalling NaN whose payload lives only in the low bits a naive rounding would drop
    /// (turning it into inf) — quiet, with its sign.
    @Test(arguments: ReducedPrecision.allCases)
    func nanStaysNaN(precision: ReducedPrecision) {
        DenormalMode.kept {
            let nans: [UInt32] = [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7F80_1000, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FA0_0000]
            for kernel in Self.kernels {
                let got = Self.runEverywhere(precision, kernel, nans.map { Float(bitPattern: $0) })
                for (bits, results) in zip(nans, got) {
                    #expect(results.count == 1, "every lane alike")
                    let r = Float(bitPattern: results[0])
                    #expect(r.isNaN, "\(precision) \(kernel): \(String(bits, radix: 16)) → \(Self.hex(r))")
                    #expect(r.sign == Float(bitPattern: bits).sign)
                    #expect(r.bitPattern & 0x0040_0000 != 0, "quiet")
                    #expect(r.bitPattern == Self.reference(precision, Float(bitPattern: bits)).bitPattern)
                }
            }
        }
    }

    // MARK: random values, vector body against scalar reference

    /// Random bit patterns over the whole float32 space, plus patterns built to sit on, just below and just above
    /// every rounding tie of the format across its exponent range (and into overflow and subnormals).
    static func randomValues(_ p: ReducedPrecision, count: Int, seed: UInt64) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        let dropped: UInt32 = p == .float16 ? 13 : 16         // fraction bits the format drops
        let half: UInt32 = 1 << (dropped - 1)
        let lowPatterns: [UInt32] = [0, half - 1, half, half + 1, (1 << dropped) - 1, 1]
        return (0..<count).map { i in
            let r = UInt32(truncatingIfNeeded: rng.next())
            switch i % 4 {
            case 0, 1: return Float(bitPattern: r)                                   // anything, NaNs included
            default:
                // exponent within the format's interesting range ±, random kept bits, a tie-related low part
                let exponent: UInt32 = p == .float16 ? UInt32(96 + Int(r % 60)) : UInt32(r % 256)   // 2^-31...2^28 for f16
                let kept = UInt32(truncatingIfNeeded: rng.next()) & (0x7F_FFFF & ~((1 << dropped) - 1))
                let low = lowPatterns[Int(rng.next() % UInt64(lowPatterns.count))]
                let sign: UInt32 = rng.next() & 1 == 0 ? 0 : 0x8000_0000
                return Float(bitPattern: sign | exponent << 23 | kept | low)
            }
        }
    }

    @Test(arguments: ReducedPrecision.allCases)
    func vectorisedAgreesWithScalarReferenceOnMillionsOfValues(precision: ReducedPrecision) {
        DenormalMode.kept {
            let n = 3_000_017   // not a multiple of any vector width
            let values = Self.randomValues(precision, count: n, seed: precision == .float16 ? 11 : 12)
            let want = values.map { Self.reference(precision, $0) }
            for kernel in Self.kernels {
                let got = Self.run(precision, kernel, values)
                var mismatches = 0, first = ""
                for i in 0..<n where got[i].bitPattern != want[i].bitPattern {
                    if mismatches == 0 { first = "\(Self.hex(values[i])) → \(Self.hex(got[i])), want \(Self.hex(want[i]))" }
                    mismatches += 1
                }
                #expect(mismatches == 0, "\(precision) \(kernel): \(mismatches) of \(n) differ, first \(first)")
            }
        }
    }

    /// Every length from 0 to three vector bodies plus a tail, at unaligned starts, in place and out of place:
    /// the results match the reference and nothing past the end is touched.
    @Test(arguments: ReducedPrecision.allCases)
    func tailsAndOffsets(precision: ReducedPrecision) {
        DenormalMode.kept {
            let pool = Self.randomValues(precision, count: 64, seed: 5)
            let guardValue = Float(bitPattern: 0x7F80_0001)   // a signalling NaN no kernel would write back as is
            for kernel in Self.kernels {
                var failures: [String] = []
                for offset in 0..<4 {
                    for n in 0...52 {
                        let input = Array(pool[0..<n])
                        var src = [Float](repeating: 0, count: offset) + input + [Float](repeating: guardValue, count: 8)
                        var dst = [Float](repeating: guardValue, count: offset + n + 8)
                        src.withUnsafeMutableBufferPointer { s in
                            dst.withUnsafeMutableBufferPointer { d in
                                precision.round(s.baseAddress! + offset, into: d.baseAddress! + offset, count: n, kernel: kernel)
                            }
                            precision.round(s.baseAddress! + offset, count: n, kernel: kernel)   // in place
                        }
                        let want = input.map { Self.reference(precision, $0).bitPattern }
                        let outOfPlace = dst[offset..<(offset + n)].map(\.bitPattern) == want
                        let inPlace = src[offset..<(offset + n)].map(\.bitPattern) == want
                        let guards = dst[..<offset].allSatisfy { $0.bitPattern == guardValue.bitPattern }
                            && dst[(offset + n)...].allSatisfy { $0.bitPattern == guardValue.bitPattern }
                            && src[(offset + n)...].allSatisfy { $0.bitPattern == guardValue.bitPattern }
                        if !(outOfPlace && inPlace && guards) { failures.append("n=\(n) offset=\(offset): out of place \(outOfPlace), in place \(inPlace), guards \(guards)") }
                    }
                }
                #expect(failures.isEmpty, "\(precision) \(kernel): \(failures.count) cases, first \(failures.first ?? "")")
            }
        }
    }

    /// dst += round(src), for every length around the vector width and a large random buffer.
    @Test(arguments: ReducedPrecision.allCases)
    func accumulateRoundedAddsTheRoundedValue(precision: ReducedPrecision) {
        DenormalMode.kept {
            var rng = Xoshiro256(seed: 21)
            for kernel in Self.kernels {
                for n in Array(0...40) + [100_003] {
                    // finite sources spanning the format's range and beyond (so inf can appear), finite destinations
                    let src = (0..<n).map { _ in rng.normal() * Float(1 << (rng.next() % 24)) }
                    let start = (0..<n).map { _ in rng.normal() }
                    var dst = start
                    src.withUnsafeBufferPointer { s in
                        dst.withUnsafeMutableBufferPointer { precision.accumulateRounded(s.baseAddress!, into: $0.baseAddress!, count: n, kernel: kernel) }
                    }
                    let want = zip(start, src).map { $0 + Self.reference(precision, $1) }
                    let wrong = zip(dst, want).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(wrong == 0, "\(precision) \(kernel) n=\(n): \(wrong) values differ")
                }
            }
        }
    }

    /// The dispatcher follows the process's vector path, which is the widest the CPU advertises (read independently
    /// from /proc/cpuinfo) unless SPEECHAIN_VECTOR_PATH chose another; `.avx512` and `.simd` are offered exactly
    /// when the CPU runs them.
    @Test func dispatchFollowsTheCPUFlags() throws {
        #if arch(x86_64)
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let flagsLine = try #require(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") })
        let flags = Set(flagsLine.split(separator: ":", maxSplits: 1)[1].split(separator: " ").map(String.init))
        let avx2 = ["avx", "avx2", "fma", "f16c"].allSatisfy(flags.contains)
        let avx512 = avx2 && ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains)
        #expect(ReducedPrecision.simdSupported == avx2)
        #expect(Self.kernels.contains { if case .avx512 = $0 { return true } else { return false } } == avx512)
        let best = avx512 ? "avx512" : avx2 ? "f16c+avx2" : "portable"
        if VectorPath.selected == VectorPath.best { #expect(ReducedPrecision.kernelName == best) }
        #else
        #expect(ReducedPrecision.kernelName == "portable")
        #endif
        #expect(ReducedPrecision.kernelName == ReducedPrecision.Kernel(VectorPath.selected).description)
        // Inside a scoped override the dispatched kernel follows it.
        for path in VectorPath.supported {
            path.run { #expect(ReducedPrecision.kernelName == ReducedPrecision.Kernel(path).description) }
        }
    }

    /// Under flush-to-zero and denormals-are-zero (the trainer's mode) the paths still agree bit for bit, on values
    /// that straddle float32's and float16's subnormal ranges.
    @Test(arguments: ReducedPrecision.allCases)
    func kernelsAgreeUnderFlushToZero(precision: ReducedPrecision) {
        var values = Self.randomValues(precision, count: 100_003, seed: 9)
        var rng = Xoshiro256(seed: 10)
        for i in stride(from: 0, to: values.count, by: 3) {
            values[i] = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x807F_FFFF)   // float32 subnormals
        }
        DenormalMode.flushed {
            let base = Self.run(precision, .portable, values)
            var sums = [Float](repeating: 0x1p-130, count: values.count)
            values.withUnsafeBufferPointer { s in
                sums.withUnsafeMutableBufferPointer { precision.accumulateRounded(s.baseAddress!, into: $0.baseAddress!, count: values.count, kernel: .portable) }
            }
            for kernel in Self.kernels {
                let got = Self.run(precision, kernel, values)
                #expect(zip(got, base).filter { $0.bitPattern != $1.bitPattern }.isEmpty, "\(precision) \(kernel) round")
                var acc = [Float](repeating: 0x1p-130, count: values.count)
                values.withUnsafeBufferPointer { s in
                    acc.withUnsafeMutableBufferPointer { precision.accumulateRounded(s.baseAddress!, into: $0.baseAddress!, count: values.count, kernel: kernel) }
                }
                #expect(zip(acc, sums).filter { $0.bitPattern != $1.bitPattern }.isEmpty, "\(precision) \(kernel) accumulate")
            }
        }
    }

    // The kernels of a path this CPU cannot run are not in `kernels`; these show as skipped, with the reason,
    // on such a CPU, instead of the checks above passing silently without them.
    @Test(.enabled(if: VectorPath.avx512.isSupported, "this CPU lacks AVX-512F/BW/VL/DQ: the avx512 kernels are not run"))
    func avx512KernelsAreChecked() {
        #expect(Self.kernels.contains { $0.path == .avx512 && "\($0)" == "avx512" })
    }

    @Test(.enabled(if: VectorPath.avx2.isSupported, "this CPU lacks AVX2/FMA/F16C: the f16c+avx2 kernels are not run"))
    func avx2KernelsAreChecked() {
        #expect(Self.kernels.contains { "\($0)" == "f16c+avx2" && $0.path == .avx2 })
    }
}
