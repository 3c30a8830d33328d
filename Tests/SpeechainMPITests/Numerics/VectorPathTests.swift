import CKernels
import Foundation
import Testing
@testable import SpeechainMPI

/// The run-time dispatched vector kernels (CKernels, via Kernels, the optimizers, GELU, CrossEntropy and LayerNorm),
/// path by path, against scalar references written here: plain loops in float32 doing torch's operations in torch's
/// order for the optimizers (so the results must agree bit for bit), double-precision formulas with tolerances for
/// the rest. Each path must also give exactly the bits of the baseline path. Sizes exercise empty buffers, partial
/// and whole registers and long tails; inputs include ±inf, NaN, ±0 and subnormals.
///
/// One suite per path (`Baseline`, `AVX2`, `AVX512`) runs the same checks; a path this CPU cannot run is disabled
/// with its reason and shows as skipped, not passed.
@Suite struct VectorPathTests {
    static let sizes = [0, 1, 15, 16, 17, 1000, 4099]

    /// Same bits, or both NaN (NaN payloads may differ with operand order).
    static func same(_ a: Float, _ b: Float) -> Bool { a.bitPattern == b.bitPattern || (a.isNaN && b.isNaN) }

    static func random(_ n: Int, seed: UInt64, _ lo: Float = -2, _ hi: Float = 2) -> [Float] {
        var rng = Xoshiro256(seed: seed)
        return (0..<n).map { _ in rng.uniform(lo, hi) }
    }

    /// Random values with specials at fixed places: a subnormal, ±0, an overflowing 3e38, inf and NaN (the last
    /// two only when `nonFinite`), in the vector body and in the tail.
    static func withSpecials(_ n: Int, seed: UInt64, nonFinite: Bool = true) -> [Float] {
        var x = random(n, seed: seed)
        let specials: [Float] = nonFinite ? [0x1p-133, -0.0, 3e38, -0x1.bp-129, .infinity, .nan, 0] : [0x1p-133, -0.0, 3e38, -0x1.bp-129, 0]
        for (k, v) in specials.enumerated() where n > 0 {
            x[(k * 7 + n / 2 + (k.isMultiple(of: 2) ? n - 1 : 0)) % n] = v
        }
        return x
    }

    /// Runs `body` on `path` and on the baseline and expects the same bits from both.
    static func expectSameAsBaseline(_ path: VectorPath, _ label: String, _ body: () -> [Float],
                                     sourceLocation: SourceLocation = #_sourceLocation) -> [Float] {
        let got = path.run(body)
        let base = VectorPath.baseline.run(body)
        let differ = zip(got, base).filter { !same($0, $1) }.count
        #expect(got.count == base.count && differ == 0, "\(label): \(differ) values differ from the baseline path",
                sourceLocation: sourceLocation)
        return got
    }

    // MARK: - Optimizers

    /// One optimizer configuration; `conf` is what a user writes in optim_conf.
    struct OptimCase: Sendable, CustomTestStringConvertible {
        var name: String, type: String
        var lr = 0.01, momentum = 0.0, dampening = 0.0, wd = 0.0, nesterov = false, maximize = false
        var beta1 = 0.9, beta2 = 0.999, eps = 1e-8, amsgrad = false
        var lrDecay = 0.0, initialAccumulator = 0.0, alpha = 0.99, centered = false
        var testDescription: String { name }

        var conf: [String: ConfigValue] {
            switch type {
            case "SGD":
                return ["lr": .double(lr), "momentum": .double(momentum), "dampening": .double(dampening),
                        "weight_decay": .double(wd), "nesterov": .bool(nesterov), "maximize": .bool(maximize)]
            case "Adam", "AdamW":
                return ["lr": .double(lr), "betas": .list([.double(beta1), .double(beta2)]), "eps": .double(eps),
                        "weight_decay": .double(wd), "amsgrad": .bool(amsgrad), "maximize": .bool(maximize)]
            case "Adagrad":
                return ["lr": .double(lr), "lr_decay": .double(lrDecay), "weight_decay": .double(wd),
                        "initial_accumulator_value": .double(initialAccumulator), "eps": .double(eps),
                        "maximize": .bool(maximize)]
            default:
                return ["lr": .double(lr), "alpha": .double(alpha), "eps": .double(eps), "weight_decay": .double(wd),
                        "momentum": .double(momentum), "centered": .bool(centered), "maximize": .bool(maximize)]
            }
        }
    }

    static let optimCases: [OptimCase] = [
        OptimCase(name: "sgd", type: "SGD", lr: 0.1),
        OptimCase(name: "sgd_momentum_dampening_wd", type: "SGD", lr: 0.1, momentum: 0.9, dampening: 0.1, wd: 0.01),
        OptimCase(name: "sgd_nesterov_wd", type: "SGD", lr: 0.05, momentum: 0.9, wd: 0.01, nesterov: true),
        OptimCase(name: "sgd_maximize_momentum", type: "SGD", lr: 0.1, momentum: 0.5, maximize: true),
        OptimCase(name: "adam", type: "Adam", lr: 1e-3),
        OptimCase(name: "adam_wd_amsgrad", type: "Adam", lr: 1e-2, wd: 0.1, beta1: 0.8, beta2: 0.99, amsgrad: true),
        OptimCase(name: "adam_maximize_eps", type: "Adam", lr: 1e-3, maximize: true, eps: 1e-6),
        OptimCase(name: "adamw", type: "AdamW", lr: 1e-3, wd: 0.01),
        OptimCase(name: "adamw_amsgrad_low_beta1", type: "AdamW", lr: 1e-2, wd: 0.05, beta1: 0.3, beta2: 0.9, amsgrad: true),
        OptimCase(name: "adagrad_decay_wd", type: "Adagrad", lr: 0.1, wd: 0.1, eps: 1e-10, lrDecay: 0.01, initialAccumulator: 0.1),
        OptimCase(name: "adagrad_maximize", type: "Adagrad", lr: 0.1, maximize: true, eps: 1e-10),
        OptimCase(name: "rmsprop", type: "RMSprop", lr: 0.01),
        OptimCase(name: "rmsprop_centered_momentum_wd", type: "RMSprop", lr: 0.01, momentum: 0.9, wd: 0.01, alpha: 0.9, centered: true),
        OptimCase(name: "rmsprop_centered_low_alpha", type: "RMSprop", lr: 0.01, alpha: 0.3, centered: true),
        OptimCase(name: "rmsprop_momentum_maximize", type: "RMSprop", lr: 0.01, momentum: 0.5, maximize: true),
    ]

    /// IEEE maxNum, as the kernels' max (a NaN operand loses to a number).
    static func maxNum(_ a: Float, _ b: Float) -> Float { a.isNaN ? b : b.isNaN ? a : (b > a ? b : a) }

    /// torch's lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w).
    static func lerp(_ s: Float, _ e: Float, _ w: Float) -> Float { w < 0.5 ? s + w * (e - s) : e - (e - s) * (1 - w) }

    /// Update `t` (from 1) of torch.optim's single-tensor algorithm, element by element in float32.
    static func referenceStep(_ c: OptimCase, t: Int, p: inout [Float], g: [Float], scale: Float, state s: inout [String: [Float]]) {
        let sign: Float = (c.maximize ? -1 : 1) * scale
        let wd = Float(c.wd)
        switch c.type {
        case "SGD":
            let mu = Float(c.momentum), keep = 1 - Float(c.dampening), negLR = Float(-c.lr)
            for i in p.indices {
                var gi = sign * g[i]
                if wd != 0 { gi = gi + wd * p[i] }
                if mu != 0 {
                    let b = t == 1 ? gi : mu * s["momentum_buffer"]![i] + keep * gi
                    s["momentum_buffer"]![i] = b
                    gi = c.nesterov ? gi + mu * b : b
                }
                p[i] = p[i] + negLR * gi
            }
        case "Adam", "AdamW":
            let stepSize = Float(c.lr / (1 - Foundation.pow(c.beta1, Double(t))))
            let c2 = Float((1 - Foundation.pow(c.beta2, Double(t))).squareRoot())
            let w1 = Float(1 - c.beta1), b2 = Float(c.beta2), w2 = Float(1 - c.beta2), e = Float(c.eps)
            let decay = Float(1 - c.lr * c.wd)
            for i in p.indices {
                var gi = sign * g[i], pi = p[i]
                if wd != 0 { if c.type == "AdamW" { pi = pi * decay } else { gi = gi + wd * pi } }
                let m = lerp(s["exp_avg"]![i], gi, w1)
                let v = s["exp_avg_sq"]![i] * b2 + w2 * gi * gi
                s["exp_avg"]![i] = m; s["exp_avg_sq"]![i] = v
                var denom: Float
                if c.amsgrad {
                    let mx = maxNum(s["max_exp_avg_sq"]![i], v)
                    s["max_exp_avg_sq"]![i] = mx
                    denom = mx.squareRoot() / c2 + e
                } else {
                    denom = v.squareRoot() / c2 + e
                }
                p[i] = pi + ((-stepSize) * m) / denom
            }
        case "Adagrad":
            let clr = Float(c.lr / (1 + Double(t - 1) * c.lrDecay)), e = Float(c.eps)
            for i in p.indices {
                var gi = sign * g[i]
                if wd != 0 { gi = gi + wd * p[i] }
                let sum = s["sum"]![i] + gi * gi
                s["sum"]![i] = sum
                p[i] = p[i] + ((-clr) * gi) / (sum.squareRoot() + e)
            }
        default:
            let lr = Float(c.lr), a = Float(c.alpha), wa = 1 - Float(c.alpha), e = Float(c.eps), mu = Float(c.momentum)
            for i in p.indices {
                var gi = sign * g[i]
                if wd != 0 { gi = gi + wd * p[i] }
                let v = s["square_avg"]![i] * a + wa * gi * gi
                s["square_avg"]![i] = v
                let d: Float
                if c.centered {
                    let ga = lerp(s["grad_avg"]![i], gi, wa)
                    s["grad_avg"]![i] = ga
                    d = (v - ga * ga).squareRoot() + e
                } else {
                    d = v.squareRoot() + e
                }
                if mu > 0 {
                    let b = s["momentum_buffer"]![i] * mu + gi / d
                    s["momentum_buffer"]![i] = b
                    p[i] = p[i] - lr * b
                } else {
                    p[i] = p[i] + ((-lr) * gi) / d
                }
            }
        }
    }

    /// Three updates (gradient scales 1, 0.5, 1) of `c` on `path` for every size, parameters and every state tensor
    /// checked bit for bit after each update; values past the range must stay untouched. The second update zeroes
    /// the gradients as it reads them (`zeroingGradients`): the range must hold +0 afterwards, the others leave the
    /// gradients bit for bit as they were.
    static func checkOptimizer(_ c: OptimCase, _ path: VectorPath) throws {
        for n in sizes {
            let optimizer = try Optimizers.make(type: c.type, conf: c.conf, parameterCount: n, owner: "test")
            let guardCount = 19, sentinel: Float = -12345.5
            let params = FloatBuffer(withSpecials(n, seed: 1, nonFinite: false) + [Float](repeating: sentinel, count: guardCount))
            var p = Array(params.toArray()[0..<n])
            var state = optimizer.stateDict().tensors
            for (t, scale) in [Float(1), 0.5, 1].enumerated() {
                let g = withSpecials(n, seed: 10 + UInt64(t))
                let grads = FloatBuffer(g + [Float](repeating: .nan, count: guardCount))
                let zeroing = t == 1
                path.run {
                    optimizer.step(parameters: params.pointer, gradients: grads.pointer, ranges: [0..<n], gradientScale: scale,
                                   zeroingGradients: zeroing)
                }
                referenceStep(c, t: t + 1, p: &p, g: g, scale: scale, state: &state)
                let left = grads.toArray()
                let wrongGradients = (0..<n).filter { zeroing ? left[$0].bitPattern != 0 : !same(left[$0], g[$0]) }
                #expect(wrongGradients.isEmpty, "\(c.name) \(path) n=\(n) step \(t + 1) zeroing \(zeroing): \(wrongGradients.count) gradients wrong, first at \(wrongGradients.first ?? -1)")
                #expect(left[n...].allSatisfy { $0.isNaN }, "\(c.name) \(path) n=\(n): gradients past the range touched")
                let got = params.toArray()
                let bad = (0..<n).filter { !same(got[$0], p[$0]) }
                #expect(bad.isEmpty, "\(c.name) \(path) n=\(n) step \(t + 1): \(bad.count) parameters differ, first at \(bad.first ?? -1): \(bad.first.map { "\(got[$0]) vs \(p[$0])" } ?? "")")
                #expect(got[n...].allSatisfy { $0 == sentinel }, "\(c.name) \(path) n=\(n): wrote past the range")
                for (name, want) in state {
                    let have = optimizer.stateDict().tensors[name] ?? []
                    let differ = zip(have, want).filter { !same($0, $1) }.count
                    #expect(have.count == want.count && differ == 0, "\(c.name) \(path) n=\(n) step \(t + 1): state \(name): \(differ) differ")
                }
            }
        }
    }

    // MARK: - Reductions and finite checks

    static func checkReductions(_ path: VectorPath) {
        for n in sizes {
            for (label, values) in [("finite", withSpecials(n, seed: 20, nonFinite: false)), ("random", random(n, seed: 21, -100, 100))] {
                let x = KernelsTests.Guarded(values)
                var squares = 0.0, magnitudes = 0.0, maxAbs: Float = 0
                for v in values { squares += Double(v) * Double(v); magnitudes += abs(Double(v)); maxAbs = max(maxAbs, abs(v)) }
                let s2 = Kernels.sumOfSquares(x.pointer, count: n, path: path)
                let s1 = Kernels.sumOfMagnitudes(x.pointer, count: n, path: path)
                #expect(abs(s2 - squares) <= 1e-14 * squares, "\(path) n=\(n) \(label): Σx² \(s2) vs \(squares)")
                #expect(abs(s1 - magnitudes) <= 1e-14 * magnitudes, "\(path) n=\(n) \(label): Σ|x| \(s1) vs \(magnitudes)")
                #expect(Kernels.maxMagnitude(x.pointer, count: n, path: path) == maxAbs, "\(path) n=\(n) \(label): max|x|")
                for p in [3.0, 1.5, 0.5, 7.25] {
                    var want = 0.0
                    for v in values { want += Foundation.pow(abs(Double(v)), p) }
                    let got = Kernels.sumOfPowers(x.pointer, count: n, p: p, path: path)
                    #expect(abs(got - want) <= 1e-13 * want || got == want, "\(path) n=\(n) \(label) p=\(p): \(got) vs \(want)")
                    #expect(got.bitPattern == Kernels.sumOfPowers(x.pointer, count: n, p: p, path: .baseline).bitPattern)
                }
                // The same bits as the baseline path (the 16 partial sums are laid out alike on every path).
                #expect(s2.bitPattern == Kernels.sumOfSquares(x.pointer, count: n, path: .baseline).bitPattern)
                #expect(s1.bitPattern == Kernels.sumOfMagnitudes(x.pointer, count: n, path: .baseline).bitPattern)
            }
            // Non-finite values anywhere: inf gives inf (inf for max), NaN gives NaN.
            guard n > 0 else { continue }
            for position in Set([0, n / 2, n - 1]) {
                for bad in [Float.infinity, -.infinity, .nan] {
                    var values = random(n, seed: 22)
                    values[position] = bad
                    let x = KernelsTests.Guarded(values)
                    let s2 = Kernels.sumOfSquares(x.pointer, count: n, path: path)
                    let s1 = Kernels.sumOfMagnitudes(x.pointer, count: n, path: path)
                    let sp = Kernels.sumOfPowers(x.pointer, count: n, p: 2.5, path: path)
                    let mx = Kernels.maxMagnitude(x.pointer, count: n, path: path)
                    if bad.isNaN {
                        #expect(s2.isNaN && s1.isNaN && sp.isNaN && mx.isNaN, "\(path) n=\(n) NaN at \(position)")
                    } else {
                        #expect(s2 == .infinity && s1 == .infinity && sp == .infinity && mx == .infinity, "\(path) n=\(n) \(bad) at \(position)")
                    }
                }
            }
        }
    }

    static func checkFiniteChecks(_ path: VectorPath) {
        for n in sizes {
            let values = withSpecials(n, seed: 30, nonFinite: false).map { $0 == 3e38 ? 1e30 : $0 }
            let x = KernelsTests.Guarded(values)
            #expect(Kernels.allFinite(x.pointer, count: n, path: path), "\(path) n=\(n)")
            #expect(Kernels.scaleCheckingFinite(x.pointer, count: n, by: 0.375, path: path), "\(path) n=\(n)")
            let got = x.values
            #expect((0..<n).allSatisfy { same(got[$0], values[$0] * 0.375) }, "\(path) n=\(n): x·a")
            #expect(x.guardIntact)
            guard n > 0 else { continue }
            // A non-finite input, or a finite one the scale makes overflow, in the body and in the tail.
            for position in Set([0, n / 2, max(0, n - 17), n - 1]) {
                for bad in [Float.infinity, -.infinity, .nan, 3e38] {
                    var v = random(n, seed: 31)
                    v[position] = bad
                    let y = KernelsTests.Guarded(v)
                    #expect(Kernels.allFinite(y.pointer, count: n, path: path) == bad.isFinite, "\(path) n=\(n) \(bad) at \(position)")
                    #expect(!Kernels.scaleCheckingFinite(y.pointer, count: n, by: 4, path: path), "\(path) n=\(n) \(bad) at \(position)")
                    #expect(Kernels.allFinite(y.pointer, count: position, path: path), "\(path) n=\(n): prefix before \(position)")
                    #expect(y.guardIntact)
                }
            }
        }
    }

    // MARK: - Special functions

    /// Every `stride`-th float bit pattern of [0, limit] and its negation, plus the edges the kernels switch at.
    static func grid(limit: Float, stride: UInt32) -> [Float] {
        var xs: [Float] = []
        var bits: UInt32 = 0
        while bits <= limit.bitPattern { let x = Float(bitPattern: bits); xs.append(x); xs.append(-x); bits += stride }
        for edge: Float in [0.5, 4, 3.92, 0x1p-10, 20, 1, 2] {
            var x = edge
            for _ in 0..<8 { x = x.nextDown }
            for _ in 0..<16 { xs.append(x); xs.append(-x); x = x.nextUp }
        }
        return xs
    }

    /// Error in units of the last place of the float nearest the exact value (the exact value is a double).
    /// The ulp is that of floats in the exact value's binade (2^-149 among the subnormals), computed in double: a
    /// float ulp below 2^-126 would read as 0 under denormals-are-zero.
    static func ulps(_ got: Float, _ exact: Double) -> Double {
        abs(Double(got) - exact) / Double(sign: .plus, exponent: max(exact.exponent - 23, -149), significand: 1)
    }

    struct Accuracy { var maxUlps = 0.0, at: Float = 0, comparedNormal = 0, mismatchedSubnormal = 0 }

    /// The kernel over `xs` against `exact` in double: the largest error in ulps among normal inputs with normal
    /// results, and the count of other results (subnormal, zero, overflowing, non-finite; subnormal inputs) that
    /// differ from the exact value rounded to float in this thread — so that under flush-to-zero both sides flush —
    /// or, for a subnormal input, also from the value at zero (which denormals-are-zero reads it as).
    static func accuracy(_ xs: [Float], _ kernel: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void,
                         _ exact: (Double) -> Double) -> Accuracy {
        var out = [Float](repeating: .nan, count: xs.count)
        xs.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { kernel(x.baseAddress!, $0.baseAddress!, xs.count) } }
        var a = Accuracy()
        for (x, y) in zip(xs, out) {
            let e = exact(Double(x))
            if Float(e).magnitude < Float.leastNormalMagnitude || !Float(e).isFinite || x.isNaN || x.isSubnormal {
                let atZero = Float(exact(x.sign == .minus ? -0.0 : 0.0))
                if !same(y, Float(e)) && !(x.isSubnormal && same(y, atZero)) { a.mismatchedSubnormal += 1 }
                continue
            }
            a.comparedNormal += 1
            let u = ulps(y, e)
            if !(u <= a.maxUlps) { a.maxUlps = u; a.at = x }
        }
        return a
    }

    static let specials: [Float] = [0, -0.0, .infinity, -.infinity, .nan, 0x1p-133, -0x1p-149, .leastNormalMagnitude,
                                    .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1e-30, -3e-8]

    /// erf over a dense grid of [−4.5, 4.5] (every 61st float: 35 M values) and the specials: within 0.501 ulp of the
    /// exact value (glibc's double erf) wherever the result is normal (measured 2026-12-02: 0.50078 ulp at 0.5163, the
    /// fit's 5e-11 on [0.5, 4]; glibc's erff differs from it on 5.7% of the grid, by at most 1 ulp).
    static func checkErf(_ path: VectorPath) {
        let xs = grid(limit: 4.5, stride: 61) + specials
        let a = accuracy(xs, { Kernels.erf($0, into: $1, count: $2, path: path) }, Foundation.erf)
        #expect(a.maxUlps <= 0.501, "\(path) erf: \(a.maxUlps) ulp at \(a.at)")
        #expect(a.mismatchedSubnormal == 0, "\(path) erf: \(a.mismatchedSubnormal) subnormal/special results differ")
        #expect(a.comparedNormal > 3_000_000)
        var out = [Float](repeating: 0, count: xs.count)
        xs.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { Kernels.erf(x.baseAddress!, into: $0.baseAddress!, count: xs.count, path: path) } }
        var worst = 0.0, differing = 0
        for (x, y) in zip(xs, out) where !x.isNaN {
            let c = erff(x)
            if y != c { differing += 1; worst = max(worst, ulps(y, Double(c))) }
        }
        #expect(worst <= 1, "\(path) erf vs erff: \(worst) ulp, \(differing) of \(xs.count) differ")
        #expect(zip(xs, out).allSatisfy { !$0.isNaN || $1.isNaN }, "\(path) erf(NaN) is NaN")
    }

    /// GELU's float32 erf over the same grid and specials: within 2.6 ulp of glibc's double erf wherever the result
    /// is normal (2.55 at 0.4516 when measured, 2026-12-07), odd (erf(−0) = −0), ±1 from |x| = 4 on, NaN kept; the
    /// same bits as the baseline path at every size.
    static func checkErfFloat(_ path: VectorPath) {
        let xs = grid(limit: 4.5, stride: 61) + specials + [4, -4, 3.9999998, 1.5, -1.5, 0.5, -0.5, 1e4]
        let a = accuracy(xs, { Kernels.erfFloat($0, into: $1, count: $2, path: path) }, Foundation.erf)
        #expect(a.maxUlps <= 2.6, "\(path) float erf: \(a.maxUlps) ulp at \(a.at)")
        #expect(a.mismatchedSubnormal == 0, "\(path) float erf: \(a.mismatchedSubnormal) subnormal/special results differ")
        #expect(a.comparedNormal > 3_000_000)
        for n in sizes {
            let x = withSpecials(n, seed: 41).map { $0 * 3 }
            func run(_ p: VectorPath) -> [Float] {
                var y = [Float](repeating: 7, count: n + 3)
                x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { Kernels.erfFloat(xb.baseAddress!, into: $0.baseAddress!, count: n, path: p) } }
                return y
            }
            let got = run(path), base = run(.baseline)
            #expect(zip(got, base).allSatisfy(same), "\(path) float erf n=\(n)")
            #expect(got[n...].allSatisfy { $0 == 7 }, "\(path) float erf n=\(n): wrote past the end")
        }
    }

    static func checkExpAndTanh(_ path: VectorPath) {
        // exp over [−87, 88.7] (results normal) plus edges past the float range and the specials.
        let ex = grid(limit: 88.7, stride: 97).filter { $0 >= -87 } + specials + [-87.5, -103, -104, -150, 88.72, 89, 100, 710, -746]
        let e = accuracy(ex, { Kernels.exp($0, into: $1, count: $2, path: path) }, Foundation.exp)
        #expect(e.maxUlps <= 0.501, "\(path) exp: \(e.maxUlps) ulp at \(e.at)")
        #expect(e.mismatchedSubnormal == 0, "\(path) exp: \(e.mismatchedSubnormal) subnormal/special results differ")
        let tx = grid(limit: 12, stride: 97) + specials
        let t = accuracy(tx, { Kernels.tanh($0, into: $1, count: $2, path: path) }, Foundation.tanh)
        #expect(t.maxUlps <= 0.501, "\(path) tanh: \(t.maxUlps) ulp at \(t.at)")
        #expect(t.mismatchedSubnormal == 0, "\(path) tanh: \(t.mismatchedSubnormal) subnormal/special results differ")
        // Same bits as the baseline path, every size (the tail is a padded register).
        for n in sizes {
            let x = withSpecials(n, seed: 40).map { $0 * 3 }
            for (name, f) in [("erf", Kernels.erf), ("exp", Kernels.exp), ("tanh", Kernels.tanh)] as [(String, (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, VectorPath) -> Void)] {
                func run(_ p: VectorPath) -> [Float] {
                    var y = [Float](repeating: 7, count: n + 3)
                    x.withUnsafeBufferPointer { xb in y.withUnsafeMutableBufferPointer { f(xb.baseAddress!, $0.baseAddress!, n, p) } }
                    return y
                }
                let got = run(path), base = run(.baseline)
                #expect(zip(got, base).allSatisfy(same), "\(path) \(name) n=\(n)")
                #expect(got[n...].allSatisfy { $0 == 7 }, "\(path) \(name) n=\(n): wrote past the end")
            }
        }
    }

    // MARK: - Layers

    /// GELU forward and backward through the layer on `path` against x·Φ(x) and its derivative in double (or the tanh
    /// form), for every size, with ±inf, NaN, ±0 and subnormal inputs.
    static func checkGELU(_ approximate: GELU.Approximation, _ path: VectorPath) {
        let k0 = (2 / Double.pi).squareRoot(), k1 = 0.044715
        func forward(_ x: Double) -> Double {
            approximate == .none ? 0.5 * x * (1 + Foundation.erf(x / 2.0.squareRoot()))
                                 : 0.5 * x * (1 + Foundation.tanh(k0 * (x + k1 * x * x * x)))
        }
        func derivative(_ x: Double) -> Double {
            if approximate == .none {
                return 0.5 * (1 + Foundation.erf(x / 2.0.squareRoot())) + x * Foundation.exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
            }
            let t = Foundation.tanh(k0 * (x + k1 * x * x * x))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k0 * (1 + 3 * k1 * x * x)
        }
        for n in sizes {
            var xs = random(n, seed: 50, -6, 6)
            let extra: [Float] = [.infinity, -.infinity, .nan, 0, -0.0, 0x1p-133, -0x1p-133, 1e4, -1e4, 12, -12]
            for (k, v) in extra.enumerated() where n > k { xs[(k * 13 + n - 1) % n] = v }
            let g = random(n, seed: 51)
            let layer = GELU(approximate: approximate)
            let x = FloatBuffer(xs), dy = FloatBuffer(g)
            let y = expectSameAsBaseline(path, "GELU(\(approximate)) forward n=\(n)") {
                let y = FloatBuffer(count: n, repeating: .nan)
                layer.forward(Matrix(x.pointer, rows: 1, cols: n), Matrix(y.pointer, rows: 1, cols: n),
                              context: ForwardContext(training: true, rng: Xoshiro256(seed: 1)))
                return y.toArray()
            }
            let dx = expectSameAsBaseline(path, "GELU(\(approximate)) backward n=\(n)") {
                let dx = FloatBuffer(count: n, repeating: .nan)
                let m = Matrix(x.pointer, rows: 1, cols: n)
                layer.backward(x: m, y: m, dy: Matrix(dy.pointer, rows: 1, cols: n), dx: Matrix(dx.pointer, rows: 1, cols: n),
                               accumulate: true)
                return dx.toArray()
            }
            for i in 0..<n {
                let v = Double(xs[i])
                let wantY = forward(v), wantD = Double(g[i]) * derivative(v)
                // The float32 formula loses up to a few ulp of 1 in 1 + erf (or 1 + tanh), scaled by |x|.
                let tolY = 4e-7 * max(1, abs(v)), tolD = 4e-7 * abs(Double(g[i])) * max(1, v * v)
                #expect(same(y[i], Float(wantY)) || abs(Double(y[i]) - wantY) <= tolY,
                        "GELU(\(approximate)) \(path) forward(\(xs[i])) = \(y[i]), want \(wantY)")
                #expect(same(dx[i], Float(wantD)) || abs(Double(dx[i]) - wantD) <= tolD || (wantD.isNaN && dx[i].isNaN),
                        "GELU(\(approximate)) \(path) backward(\(xs[i])) = \(dx[i]), want \(wantD)")
            }
        }
    }

    /// Softmax cross-entropy with label smoothing on `path` against log-sum-exp in double: loss, accuracy and the
    /// gradient, for rows of every size, with large, tiny and −inf logits.
    static func checkCrossEntropy(_ smoothing: Float, _ path: VectorPath) {
        for k in sizes where k > 0 {
            let rows = 3
            var z = random(rows * k, seed: 60, -8, 8)
            if k > 2 { z[1] = 60; z[k + 2] = 0x1p-133; z[2 * k] = -80 }
            if k > 3 && smoothing == 0 { z[3] = -.infinity }   // exp → 0; with smoothing the loss would be inf
            let labels: [Int32] = (0..<rows).map { Int32(($0 * 7 + 2) % k) }
            let logits = FloatBuffer(z)
            let ce = CrossEntropy(labelSmoothing: smoothing)
            let seed: Float = 1.5
            var results: [(Float, Float)] = []
            let d = expectSameAsBaseline(path, "cross-entropy ε=\(smoothing) k=\(k)") {
                let out = labels.withUnsafeBufferPointer { ce.forward(logits: Matrix(logits.pointer, rows: rows, cols: k), labels: $0) }
                results.append(out)
                let d = FloatBuffer(count: rows * k, repeating: .nan)
                ce.backward(seed: seed, into: Matrix(d.pointer, rows: rows, cols: k))
                return d.toArray()
            }
            #expect(results.count == 2 && results[0].0.bitPattern == results[1].0.bitPattern, "loss differs between paths")
            let (loss, accuracy) = results[0]
            var total = 0.0, correct = 0
            for r in 0..<rows {
                let row = (0..<k).map { Double(z[r * k + $0]) }
                let m = row.max()!
                let lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
                let y = Int(labels[r])
                let meanNegLog = row.reduce(0) { $0 + (lse - $1) } / Double(k)
                total += (1 - Double(smoothing)) * (lse - row[y]) + (smoothing > 0 ? Double(smoothing) * meanNegLog : 0)
                if row.firstIndex(of: m) == y { correct += 1 }
                for j in 0..<k {
                    let p = Foundation.exp(row[j] - lse)
                    let target = (j == y ? 1 - Double(smoothing) : 0) + Double(smoothing) / Double(k)
                    let want = (p - target) * Double(seed) / Double(rows)
                    #expect(abs(Double(d[r * k + j]) - want) <= 1e-7 * Double(seed),
                            "ε=\(smoothing) \(path) k=\(k) row \(r) class \(j): \(d[r * k + j]) vs \(want)")
                }
            }
            let want = total / Double(rows)
            #expect(abs(Double(loss) - want) <= 1e-6 * max(1, abs(want)), "ε=\(smoothing) \(path) k=\(k): loss \(loss) vs \(want)")
            #expect(accuracy == Float(correct) / Float(rows))
        }
    }

    /// LayerNorm with random weight and bias on `path` against its formula in double: y, the input gradient, and the
    /// weight and bias gradients (accumulated over the rows), for widths of every size.
    static func checkLayerNorm(_ path: VectorPath) {
        for d in sizes where d > 0 {
            let rows = 3
            var xs = random(rows * d, seed: 70, -3, 3)
            if d > 2 { xs[0] = 40; xs[d + 1] = 0x1p-133; xs[2 * d] = -0.0 }
            let h = GradientCheckTests.Harness(LayerNorm(d), rows: rows, inWidth: d, x: xs)
            let w = random(d, seed: 71, 0.5, 1.5), b = random(d, seed: 72, -1, 1)
            for j in 0..<d { h.store.values[j] = w[j]; h.store.values[d + j] = b[j] }
            let y = expectSameAsBaseline(path, "LayerNorm forward d=\(d)") { h.forward() }
            let backward = expectSameAsBaseline(path, "LayerNorm backward d=\(d)") {
                let (dx, grads) = h.backward()
                return dx + grads
            }
            let dx = Array(backward[0..<(rows * d)]), gw = Array(backward[(rows * d)..<(rows * d + d)])
            let gb = Array(backward[(rows * d + d)...])
            var wantGW = [Double](repeating: 0, count: d), wantGB = [Double](repeating: 0, count: d)
            for r in 0..<rows {
                let x = (0..<d).map { Double(xs[r * d + $0]) }, dy = (0..<d).map { Double(h.w[r * d + $0]) }
                let mu = x.reduce(0, +) / Double(d)
                let variance = x.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(d)
                let rstd = 1 / (variance + 1e-5).squareRoot()
                let xh = x.map { ($0 - mu) * rstd }
                let gh = (0..<d).map { dy[$0] * Double(w[$0]) }
                let meanG = gh.reduce(0, +) / Double(d)
                let meanGX = zip(gh, xh).reduce(0) { $0 + $1.0 * $1.1 } / Double(d)
                for j in 0..<d {
                    let wantY = xh[j] * Double(w[j]) + Double(b[j])
                    // float32 rounding of each term, including μ's rounding to float (|μ|·rstd·2⁻²⁴)
                    #expect(abs(Double(y[r * d + j]) - wantY) <= 2e-6 * (abs(xh[j] * Double(w[j])) + abs(Double(b[j])) + abs(mu * rstd) + 1e-3),
                            "LayerNorm \(path) d=\(d) y[\(r),\(j)] = \(y[r * d + j]), want \(wantY)")
                    let wantDX = rstd * (gh[j] - meanG - xh[j] * meanGX)
                    #expect(abs(Double(dx[r * d + j]) - wantDX) <= 2e-6 * rstd * (abs(gh[j]) + abs(meanG) + abs(xh[j] * meanGX) + abs(mu * rstd * meanGX) + 1e-3),
                            "LayerNorm \(path) d=\(d) dx[\(r),\(j)] = \(dx[r * d + j]), want \(wantDX)")
                    wantGW[j] += dy[j] * xh[j]; wantGB[j] += dy[j]
                }
            }
            for j in 0..<d {
                #expect(abs(Double(gw[j]) - wantGW[j]) <= 1e-5 * max(1, abs(wantGW[j])), "LayerNorm \(path) d=\(d) gw[\(j)]")
                #expect(abs(Double(gb[j]) - wantGB[j]) <= 1e-5 * max(1, abs(wantGB[j])), "LayerNorm \(path) d=\(d) gb[\(j)]")
            }
        }
    }

    /// The attention's softmax backward: d ← p ⊙ (d − p·d) per row, against a double-precision reference (the
    /// only roundings: the dot to float, then one subtraction and one product per element); the same bits on
    /// every path.
    static func checkSoftmaxBackward(_ path: VectorPath) {
        for k in sizes where k > 0 && k < 1100 {
            let rows = 3
            let p = random(rows * k, seed: 80, 0, 1), d0 = random(rows * k, seed: 81, -3, 3)
            let got = expectSameAsBaseline(path, "softmax backward k=\(k)") {
                var d = d0
                p.withUnsafeBufferPointer { pp in d.withUnsafeMutableBufferPointer { ck_softmax_backward(VectorPath.current.ck, pp.baseAddress!, $0.baseAddress!, rows, k) } }
                return d
            }
            for r in 0..<rows {
                let dot = (0..<k).reduce(0.0) { $0 + Double(p[r * k + $1]) * Double(d0[r * k + $1]) }
                let scale = (0..<k).reduce(0.0) { $0 + abs(Double(p[r * k + $1]) * Double(d0[r * k + $1])) }
                for j in 0..<k {
                    let i = r * k + j
                    let want = Double(p[i]) * (Double(d0[i]) - dot)
                    let bound = 1.2e-7 * Double(p[i]) * (abs(Double(d0[i])) + abs(dot) + scale)
                    #expect(abs(Double(got[i]) - want) <= bound, "softmax backward \(path) k=\(k) [\(r),\(j)] = \(got[i]), want \(want)")
                }
            }
        }
    }

    /// im2col and col2im of the prenet's convolutions against the definition, exactly (unfold copies; fold adds at
    /// most k·k/s² … k·k terms per element, here checked in double against a float sum of the same terms in any
    /// order), for stride 1, the usual kernel 3 / stride 2 (the interleaved path), and kernel 5 / stride 3.
    static func checkConvFoldUnfold(_ path: VectorPath) {
        for (k, s) in [(3, 2), (3, 1), (5, 3), (1, 1)] {
            for (channels, height, width) in [(1, 9, 13), (3, 7, 8), (2, 30, 41)] where height >= k && width >= k {
                let oh = (height - k) / s + 1, ow = (width - k) / s + 1, n = oh * ow
                let x = random(channels * height * width, seed: 90, -2, 2)
                let cols = expectSameAsBaseline(path, "unfold k=\(k) s=\(s)") {
                    var c = [Float](repeating: .nan, count: channels * k * k * n)
                    x.withUnsafeBufferPointer { xp in c.withUnsafeMutableBufferPointer { ck_conv_unfold(VectorPath.current.ck, xp.baseAddress!, $0.baseAddress!, channels, height, width, k, s, oh, ow) } }
                    return c
                }
                var unfoldOK = true
                for c in 0..<channels { for u in 0..<k { for v in 0..<k { for i in 0..<oh { for j in 0..<ow {
                    if !same(cols[((c * k + u) * k + v) * n + i * ow + j], x[(c * height + s * i + u) * width + s * j + v]) { unfoldOK = false }
                } } } } }
                #expect(unfoldOK, "unfold \(path) k=\(k) s=\(s) \(channels)x\(height)x\(width)")
                let dcols = random(channels * k * k * n, seed: 91, -1, 1), base = random(channels * height * width, seed: 92, -1, 1)
                let dx = expectSameAsBaseline(path, "fold k=\(k) s=\(s)") {
                    var d = base
                    dcols.withUnsafeBufferPointer { cp in d.withUnsafeMutableBufferPointer { ck_conv_fold(VectorPath.current.ck, cp.baseAddress!, $0.baseAddress!, channels, height, width, k, s, oh, ow, 0, nil) } }
                    return d
                }
                // overwrite (what dx held before does not count) and a ReLU's mask: 0 where y ≤ 0 (−0 and 0 too), the
                // gradient where y > 0 or y is NaN (torch's threshold_backward)
                var mask = random(channels * height * width, seed: 93, -1, 1)
                mask[0] = 0; mask[1] = -0.0; mask[2] = .nan
                let masked = expectSameAsBaseline(path, "fold overwrite+mask k=\(k) s=\(s)") {
                    var d = [Float](repeating: .nan, count: channels * height * width)
                    dcols.withUnsafeBufferPointer { cp in mask.withUnsafeBufferPointer { mp in d.withUnsafeMutableBufferPointer {
                        ck_conv_fold(VectorPath.current.ck, cp.baseAddress!, $0.baseAddress!, channels, height, width, k, s, oh, ow, 1, mp.baseAddress!)
                    } } }
                    return d
                }
                let alone = expectSameAsBaseline(path, "fold overwrite k=\(k) s=\(s)") {
                    var d = [Float](repeating: .nan, count: channels * height * width)
                    dcols.withUnsafeBufferPointer { cp in d.withUnsafeMutableBufferPointer { ck_conv_fold(VectorPath.current.ck, cp.baseAddress!, $0.baseAddress!, channels, height, width, k, s, oh, ow, 1, nil) } }
                    return d
                }
                var want = base.map(Double.init), magnitude = base.map { abs(Double($0)) }
                for c in 0..<channels { for u in 0..<k { for v in 0..<k { for i in 0..<oh { for j in 0..<ow {
                    let t = Double(dcols[((c * k + u) * k + v) * n + i * ow + j]), o = (c * height + s * i + u) * width + s * j + v
                    want[o] += t; magnitude[o] += abs(t)
                } } } } }
                let terms = Double(k * k + 1)
                let bad = (0..<dx.count).filter { abs(Double(dx[$0]) - want[$0]) > terms * 0x1p-24 * magnitude[$0] }
                #expect(bad.isEmpty, "fold \(path) k=\(k) s=\(s) \(channels)x\(height)x\(width): \(bad.count) values off, first \(bad.first.map { "\(dx[$0]) want \(want[$0])" } ?? "")")
                // the folded sums alone, then masked
                let sums = zip(want, base).map { $0 - Double($1) }, sumMagnitude = zip(magnitude, base).map { $0 - abs(Double($1)) }
                let badAlone = (0..<alone.count).filter { !(abs(Double(alone[$0]) - sums[$0]) <= terms * 0x1p-24 * sumMagnitude[$0]) }
                #expect(badAlone.isEmpty, "fold overwrite \(path) k=\(k) s=\(s): \(badAlone.count) values off, first \(badAlone.first.map { "\(alone[$0]) want \(sums[$0])" } ?? "")")
                let badMasked = (0..<masked.count).filter { !same(masked[$0], mask[$0] <= 0 ? 0 : alone[$0]) }
                #expect(badMasked.isEmpty, "fold masked \(path) k=\(k) s=\(s): \(badMasked.count) values off")
            }
        }
    }

    // MARK: - Paths, features, selection

    /// CPUFeatures agrees with the kernel's view of the CPU (/proc/cpuinfo flags).
    @Test func featuresMatchProcCpuinfo() throws {
        #if arch(x86_64)
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let line = try #require(cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") })
        let flags = Set(line.split(separator: ":", maxSplits: 1)[1].split(separator: " ").map(String.init))
        for (feature, flag, name) in CPUFeatures.all {
            #expect(CPUFeatures.current.contains(feature) == flags.contains(flag), "\(name) (\(flag))")
        }
        let avx2 = ["avx", "avx2", "fma", "f16c"].allSatisfy(flags.contains)
        let avx512 = avx2 && ["avx512f", "avx512bw", "avx512vl", "avx512dq"].allSatisfy(flags.contains)
        #expect(VectorPath.best == (avx512 ? .avx512 : avx2 ? .avx2 : .baseline))
        #endif
        #expect(VectorPath.baseline.isSupported)
    }

    @Test func summaryNamesThePathAndTheFeatures() {
        let s = CPUFeatures.summary
        #expect(s.hasPrefix("\(VectorPath.selected) ("), "\(s)")
        #expect(s.contains(CPUFeatures.current.compact), "\(s)")
        if CPUFeatures.current.isSuperset(of: [.avx512f, .avx512bw, .avx512vl, .avx512dq]) {
            #expect(CPUFeatures.current.compact.hasPrefix("AVX-512F/BW/VL/DQ"))
        }
        if ProcessInfo.processInfo.environment["SPEECHAIN_VECTOR_PATH"] == nil {
            #expect(VectorPath.selected == VectorPath.best)
            #expect(s == "\(VectorPath.best) (\(CPUFeatures.current.compact))")
        }
    }

    /// `run` sets the path for what it calls and only for that; concurrent tasks keep their own.
    @Test func runOverridesThePathInItsScopeOnly() async {
        #expect(VectorPath.current == VectorPath.selected)
        VectorPath.baseline.run {
            #expect(VectorPath.current == .baseline)
            VectorPath.best.run { #expect(VectorPath.current == VectorPath.best) }
            #expect(VectorPath.current == .baseline)
        }
        #expect(VectorPath.current == VectorPath.selected)
        await withTaskGroup(of: Bool.self) { group in
            for path in VectorPath.supported {
                group.addTask { path.run { (0..<1000).allSatisfy { _ in VectorPath.current == path } } }
            }
            for await ok in group { #expect(ok) }
        }
    }
}

// MARK: - One suite per path

extension VectorPathTests {
    @Suite struct Baseline {
        @Test(arguments: VectorPathTests.optimCases) func optimizer(_ c: OptimCase) throws { try checkOptimizer(c, .baseline) }
        @Test func reductions() { checkReductions(.baseline) }
        @Test func finiteChecks() { checkFiniteChecks(.baseline) }
        @Test func erf() { checkErf(.baseline) }
        @Test func erfFloat() { checkErfFloat(.baseline) }
        @Test func expAndTanh() { checkExpAndTanh(.baseline) }
        @Test(arguments: [GELU.Approximation.none, .tanh]) func gelu(_ a: GELU.Approximation) { checkGELU(a, .baseline) }
        @Test(arguments: [Float(0), 0.1]) func crossEntropy(_ e: Float) { checkCrossEntropy(e, .baseline) }
        @Test func layerNorm() { checkLayerNorm(.baseline) }
        @Test func softmaxBackward() { checkSoftmaxBackward(.baseline) }
        @Test func convFoldUnfold() { checkConvFoldUnfold(.baseline) }
    }

    @Suite(.enabled(if: VectorPath.avx2.isSupported, "this CPU lacks AVX/AVX2/FMA/F16C: the avx2 path is not run"))
    struct AVX2 {
        @Test(arguments: VectorPathTests.optimCases) func optimizer(_ c: OptimCase) throws { try checkOptimizer(c, .avx2) }
        @Test func reductions() { checkReductions(.avx2) }
        @Test func finiteChecks() { checkFiniteChecks(.avx2) }
        @Test func erf() { checkErf(.avx2) }
        @Test func erfFloat() { checkErfFloat(.avx2) }
        @Test func expAndTanh() { checkExpAndTanh(.avx2) }
        @Test(arguments: [GELU.Approximation.none, .tanh]) func gelu(_ a: GELU.Approximation) { checkGELU(a, .avx2) }
        @Test(arguments: [Float(0), 0.1]) func crossEntropy(_ e: Float) { checkCrossEntropy(e, .avx2) }
        @Test func layerNorm() { checkLayerNorm(.avx2) }
        @Test func softmaxBackward() { checkSoftmaxBackward(.avx2) }
        @Test func convFoldUnfold() { checkConvFoldUnfold(.avx2) }
    }

    @Suite(.enabled(if: VectorPath.avx512.isSupported, "this CPU lacks AVX-512F/BW/VL/DQ: the avx512 path is not run"))
    struct AVX512 {
        @Test(arguments: VectorPathTests.optimCases) func optimizer(_ c: OptimCase) throws { try checkOptimizer(c, .avx512) }
        @Test func reductions() { checkReductions(.avx512) }
        @Test func finiteChecks() { checkFiniteChecks(.avx512) }
        @Test func erf() { checkErf(.avx512) }
        @Test func erfFloat() { checkErfFloat(.avx512) }
        @Test func expAndTanh() { checkExpAndTanh(.avx512) }
        @Test(arguments: [GELU.Approximation.none, .tanh]) func gelu(_ a: GELU.Approximation) { checkGELU(a, .avx512) }
        @Test(arguments: [Float(0), 0.1]) func crossEntropy(_ e: Float) { checkCrossEntropy(e, .avx512) }
        @Test func layerNorm() { checkLayerNorm(.avx512) }
        @Test func softmaxBackward() { checkSoftmaxBackward(.avx512) }
        @Test func convFoldUnfold() { checkConvFoldUnfold(.avx512) }
    }
}

// MARK: - Timing (not a test of correctness; runs only when asked)

/// Adam over the benchmark MLP's 10 492 416 parameters on every supported path, alternated, against the floor set by
/// memory bandwidth (7 streams of 42 MB over the read+write bandwidth of a scaling pass, as `speechain-mpi bench`
/// measures it). Run with SPEECHAIN_VECTOR_BENCH=1 (release build); prints medians.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["SPEECHAIN_VECTOR_BENCH"] == "1", "timing only: set SPEECHAIN_VECTOR_BENCH=1"))
struct VectorPathTiming {
    @Test func adamPerPath() throws {
        let n = 10_492_416, rounds = Int(ProcessInfo.processInfo.environment["SPEECHAIN_VECTOR_BENCH_ROUNDS"] ?? "") ?? 21
        let p = FloatBuffer(count: n, repeating: 0.5), g = FloatBuffer(count: n, repeating: 1e-3)
        let adam = try Optimizers.make(type: "Adam", conf: ["lr": .double(1e-3)], parameterCount: n, owner: "timing")
        func seconds(_ body: () -> Void) -> Double {
            let t = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - t) / 1e9
        }
        func median(_ x: [Double]) -> Double { let s = x.sorted(); return s[s.count / 2] }
        var adamTimes: [VectorPath: [Double]] = [:], bandwidth: [Double] = []
        let paths = VectorPath.supported
        for _ in 0..<3 { for path in paths { path.run { adam.step(parameters: p.pointer, gradients: g.pointer, ranges: [0..<n], gradientScale: 1) } } }
        for _ in 0..<rounds {
            let t = seconds { Kernels.scale(p.pointer, count: n, by: 1.0000001) }
            bandwidth.append(2 * Double(n * 4) / t)
            for path in paths {
                let t = seconds { path.run { adam.step(parameters: p.pointer, gradients: g.pointer, ranges: [0..<n], gradientScale: 1) } }
                adamTimes[path, default: []].append(t)
            }
        }
        let gbps = median(bandwidth), floor = 7 * Double(n * 4) / gbps
        var lines = ["CPU: \(CPUFeatures.summary); \(rounds) alternated rounds, medians",
                     String(format: "memory: %.2f GB/s read+write (best %.2f) -> Adam floor %.2f ms", gbps / 1e9, bandwidth.max()! / 1e9, floor * 1e3)]
        for path in paths {
            let m = median(adamTimes[path]!)
            lines.append(String(format: "adam %@: %.2f ms/update (min %.2f) = %.2fx the floor", path.rawValue, m * 1e3,
                                adamTimes[path]!.min()! * 1e3, m / floor))
        }
        print(lines.joined(separator: "\n"))
    }
}
