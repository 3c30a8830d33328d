import Foundation
import Testing
@testable import SpeechainMPI

/// The BLAS runs the kernels of the CPU it is on; denormals are flushed on every thread of the process.
@Suite struct BLASKernelsTests {
    @Test func kernelLevelsAndFallbacks() {
        func k(_ kernels: String, _ cpu: BLASKernels.Level) -> BLASKernels {
            BLASKernels(version: "0.3.21", kernels: kernels, cpuLevel: cpu, replaced: nil, userCoreType: nil)
        }
        #expect(k("Prescott", .avx512).isFallback && k("Prescott", .avx2).isFallback && k("Haswell", .avx512).isFallback)
        #expect(!k("SkylakeX", .avx512).isFallback && !k("Cooperlake", .avx512).isFallback && !k("Haswell", .avx2).isFallback)
        // nothing better to offer an SSE or AVX CPU; an unknown (newer) kernel name is trusted
        #expect(!k("Prescott", .sse).isFallback && !k("Prescott", .avx).isFallback && !k("Graniterapids", .avx2).isFallback)
        #expect(BLASKernels.cpuLevel(cpuinfo: "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl\n") == .avx512)
        #expect(BLASKernels.cpuLevel(cpuinfo: "flags\t\t: fpu sse2 avx avx2 fma avx512f\n") == .avx2)
        #expect(BLASKernels.cpuLevel(cpuinfo: "flags\t\t: fpu sse2 avx\n") == .avx)
        // what OpenBLAS chose stands unless it is a fallback
        #expect(k("Cooperlake", .avx512).betterKernels == nil && k("Prescott", .avx512).betterKernels == "SkylakeX")
    }

    /// On a Zen 4 (AMD family 25 with AVX-512) the AVX2 kernels are the preferred ones: OpenBLAS's AVX-512 choice is
    /// replaced by Haswell, Haswell is no fallback there; not on a Zen 5 (family 26), a Zen 3 (no AVX-512) or an Intel CPU.
    @Test func zen4PrefersTheAVX2Kernels() {
        func k(_ kernels: String, _ cpu: BLASKernels.Level, _ vendor: String, _ family: Int) -> BLASKernels {
            BLASKernels(version: "0.3.21", kernels: kernels, cpuLevel: cpu, replaced: nil, userCoreType: nil,
                        cpu: .init(vendor: vendor, family: family))
        }
        let amd = "AuthenticAMD", intel = "GenuineIntel"
        #expect(k("Cooperlake", .avx512, amd, 25).betterKernels == "Haswell" && !k("Cooperlake", .avx512, amd, 25).isFallback)
        #expect(k("SkylakeX", .avx512, amd, 25).betterKernels == "Haswell")
        #expect(k("Haswell", .avx512, amd, 25).betterKernels == nil && !k("Haswell", .avx512, amd, 25).isFallback)
        #expect(k("Prescott", .avx512, amd, 25).isFallback && k("Prescott", .avx512, amd, 25).betterKernels == "Haswell")
        #expect(k("Cooperlake", .avx512, amd, 26).betterKernels == nil && k("Haswell", .avx512, amd, 26).isFallback)
        #expect(k("Zen", .avx2, amd, 25).betterKernels == nil && k("Haswell", .avx2, amd, 25).betterKernels == nil)
        #expect(k("Cooperlake", .avx512, intel, 6).betterKernels == nil && k("Prescott", .avx512, intel, 6).betterKernels == "SkylakeX")
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        #expect(BLASKernels.cpuIdentity(cpuinfo: info) == .init(vendor: "AuthenticAMD", family: 25))
        #expect(BLASKernels.cpuIdentity(cpuinfo: "processor\t: 0\n") == nil)
    }

    /// Started with nothing in the environment, the program runs what `betterKernels` says for this CPU: OpenBLAS's
    /// own choice when it stands, else a restart (on a Zen 4: Haswell instead of Cooperlake).
    @Test func withoutOpenBLASCoretypeTheProgramRunsThisCPUsBestKernels() throws {
        let here = BLASKernels.current(environment: [:])   // this test process: OpenBLAS's own choice
        let result = try launch(np: nil, environment: [:])
        #expect(result.status == 0, "\(result.stderr)")
        let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("BLAS: ") }, "\(result.stdout)")
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] {
            // an OPENBLAS_CORETYPE in the environment is the user's: it stands
            #expect(line.contains("(OPENBLAS_CORETYPE=\(user), yours)"), "\(line)")
        } else if let better = here.betterKernels {
            #expect(line.contains("\(better) kernels on an \(here.cpuLevel.name) CPU (OpenBLAS chose \(here.kernels); restarted with OPENBLAS_CORETYPE=\(better))"), "\(line)")
        } else {
            #expect(line.contains("OpenBLAS 0.3.21, \(here.kernels) kernels on an \(here.cpuLevel.name) CPU |") || line.contains("\(here.kernels) kernels on an \(here.cpuLevel.name) CPU;"), "\(line)")
        }
        // and which kernel multiplies small batches (our own on a Zen 4, where it was measured faster)
        let expected = Float32Kernels.effective(Float32Kernels.preferred(cpu: BLASKernels.cpuIdentity(), supported: Float32Kernels.isSupported))
        #expect(line.hasSuffix("; float32 Linear forward and weight gradient (16–256 rows), Conv2d forward, weight and input gradient: \(expected == .own ? "own AVX-512 kernels" : "OpenBLAS")"), "\(line)")
    }

    /// OPENBLAS_CORETYPE=Prescott makes OpenBLAS start on its SSE3 kernels on any x86-64 CPU; marked as imposed (not
    /// the user's choice), the program sees the fallback and restarts itself with the CPU's kernels, under mpirun too.
    @Test(arguments: [nil, 2] as [Int?])
    func prescottIsDetectedAndReplaced(np: Int?) throws {
        let level = BLASKernels.cpuLevel()
        let expected = try #require(BLASKernels.preferredKernels(for: level, cpu: BLASKernels.cpuIdentity()),
                                    "this CPU (\(level.name)) has no better kernels than SSE3")
        let environment = ["OPENBLAS_CORETYPE": "Prescott", BLASKernels.imposedMarker: "1"]
        let result = try launch(np: np, environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("BLAS: ") }, "\(result.stdout)")
        #expect(line.contains("OpenBLAS 0.3.21, \(expected) kernels on an \(level.name) CPU (OpenBLAS chose Prescott; restarted with OPENBLAS_CORETYPE=\(expected))"), "\(line)")
        #expect(!line.contains("fallback"))
        // every rank computed with the same kernels: bit-identical parameters
        if np != nil { #expect(result.stdout.contains("epoch 1:")) }

        // the user's own choice always wins: the same environment without the marker keeps Prescott and says so
        let user = try launch(np: nil, environment: ["OPENBLAS_CORETYPE": "Prescott"])
        let userLine = try #require(user.stdout.split(separator: "\n").first { $0.hasPrefix("BLAS: ") })
        #expect(userLine.contains("Prescott kernels on an \(level.name) CPU (OPENBLAS_CORETYPE=Prescott, yours); these are fallback kernels for this CPU"), "\(userLine)")
    }

    @Test func denormalsAreFlushedOnEveryThreadFromTheStart() throws {
        #expect(Denormals.flushedAtStart)
        // a thread the process creates now inherits the setting, as OpenBLAS's workers did at load time
        final class Box: @unchecked Sendable { var flushed = false; var product: Float = 1 }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let tiny = Float.leastNormalMagnitude
        let t = Thread {
            box.flushed = Denormals.flushed
            box.product = tiny * opaque(0.5)   // 2^-127: a denormal, flushed to 0
            done.signal()
        }
        t.start()
        done.wait()
        #expect(box.flushed && box.product == 0)
        // switched off on this thread, the same product is the denormal
        Denormals.setFlushed(false)
        defer { Denormals.setFlushed(true) }
        #expect(tiny * opaque(0.5) == Float.leastNormalMagnitude / 2 && (tiny * opaque(0.5)).isSubnormal)
    }

    @Test func flushDenormalFalseStartsTheProcessWithout() throws {
        let r = try launch(np: nil, environment: ["SPEECHAIN_FLUSH_DENORMAL": "0"], extra: ["--flush_denormal", "false"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("denormals kept (flush_denormal: false)"))
    }

    private func launch(np: Int?, environment: [String: String], extra: [String] = []) throws -> Executable.Result {
        let args = ["--num_epochs", "1", "--report_per_steps", "100", "--set", "data_cfg.train.conf.count=256"] + extra
        guard let np else { return try Executable.run(args, environment: environment) }
        let exports = environment.keys.sorted().flatMap { ["-x", $0] }
        return try Executable.run(["-np", "\(np)", "--oversubscribe"] + exports + [Executable.url.path] + args,
                                  environment: environment, executable: URL(fileURLWithPath: "/usr/bin/mpirun"))
    }
}

/// Keeps the compiler from folding a product at compile time.
@inline(never) func opaque(_ x: Float) -> Float { x }
