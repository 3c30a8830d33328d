import CFFTW
import Foundation

/// A single-precision real-to-complex DFT of one size through FFTW3:
/// X[k] = Σ_{n<N} x[n]·e^{−2πi·kn/N}, k = 0…N/2 (the onesided half; X[N−k] = conj X[k]).
///
/// Plans are made once per size and shared (FFTW's planner is not thread safe, so planning is under a lock;
/// executing a plan is thread safe). Each transform executes the shared plan on this object's own buffers,
/// allocated by FFTW with the alignment the plan was made for, so a transform allocates nothing.
public final class RealFFT {
    public let size: Int
    /// N/2 + 1 complex outputs.
    public var outputCount: Int { size / 2 + 1 }
    /// The input frame: write N samples here, then call `transform()`.
    public let input: UnsafeMutablePointer<Float>
    /// The output: N/2 + 1 interleaved (re, im) pairs, i.e. 2·(N/2 + 1) floats.
    public let output: UnsafeMutablePointer<Float>
    private let plan: fftwf_plan

    public init(size: Int) {
        precondition(size >= 1, "FFT size must be positive")
        self.size = size
        input = fftwf_alloc_real(size)!
        let complex = fftwf_alloc_complex(size / 2 + 1)!
        output = UnsafeMutableRawPointer(complex).bindMemory(to: Float.self, capacity: 2 * (size / 2 + 1))
        input.initialize(repeating: 0, count: size)
        output.initialize(repeating: 0, count: 2 * (size / 2 + 1))
        plan = RealFFTPlans.plan(size: size)
    }

    deinit {
        fftwf_free(input)
        fftwf_free(output)
    }

    /// `output` ← DFT(`input`). `input` is left as it was (the plan is out of place and preserves its input).
    @inline(__always) public func transform() {
        output.withMemoryRebound(to: fftwf_complex.self, capacity: size / 2 + 1) { out in
            fftwf_execute_dft_r2c(plan, input, out)
        }
    }
}

/// The process-wide plans, one per size, made under a lock.
enum RealFFTPlans {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var plans: [Int: fftwf_plan] = [:]

    static func plan(size: Int) -> fftwf_plan {
        lock.lock()
        defer { lock.unlock() }
        if let p = plans[size] { return p }
        // FFTW_ESTIMATE, not FFTW_MEASURE: MEASURE picks the algorithm by timing candidates, so a busy machine (two
        // ranks on two cores) got another plan in some runs, features that differed in the last bits, and runs of
        // the same seed that did not end bit-identical (a resumed run against an uninterrupted one). ESTIMATE's
        // plan depends on the size alone. The plan is made on scratch arrays and executed on others of the same
        // alignment (fftwf_alloc_* gives SIMD alignment); FFTW_PRESERVE_INPUT keeps r2c from scribbling over its input.
        let scratchIn = fftwf_alloc_real(size)!
        let scratchOut = fftwf_alloc_complex(size / 2 + 1)!
        defer { fftwf_free(scratchIn); fftwf_free(scratchOut) }
        let flags = UInt32(FFTW_ESTIMATE) | UInt32(FFTW_PRESERVE_INPUT)
        guard let p = fftwf_plan_dft_r2c_1d(Int32(size), scratchIn, scratchOut, flags) else {
            preconditionFailure("FFTW could not plan a real DFT of size \(size)")
        }
        plans[size] = p
        return p
    }
}
