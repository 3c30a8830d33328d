import Foundation

/// Connectionist temporal classification loss over logits, as SpeeChain's criterion/ctc.py computes it:
/// `torch.nn.functional.ctc_loss(log_softmax(logits), targets, input_lengths, target_lengths, blank,
/// reduction='none', zero_infinity)` followed by the mean over the batch.
///
/// For utterance b with frames t < T_b, target y_1..y_S and the extended sequence l' = (∅ y_1 ∅ y_2 … ∅ y_S ∅)
/// of length L = 2S+1 (∅ = blank), with log-probabilities lp_t(c) = log_softmax(z_t)(c):
///
///     α_0(0) = lp_0(∅),  α_0(1) = lp_0(y_1),  α_0(s) = −∞ for s ≥ 2
///     α_t(s) = lp_t(l'_s) + logsumexp(α_{t−1}(s), α_{t−1}(s−1), [α_{t−1}(s−2) if l'_s ≠ ∅ and l'_s ≠ l'_{s−2}])
///     loss_b = −log P_b,  log P_b = logsumexp(α_{T_b−1}(L−1), α_{T_b−1}(L−2))
///     β_{T_b−1}(L−1) = β_{T_b−1}(L−2) = 0 (others −∞)
///     β_t(s) = logsumexp over s' ∈ {s, s+1, s+2 (same rule, for l'_{s+2})} of (β_{t+1}(s') + lp_{t+1}(l'_{s'}))
///
/// (β excludes frame t's emission, so α_t(s) + β_t(s) is the log-probability of all the paths through s at t).
/// The returned loss is mean_b loss_b (each NLL not divided by its length). With `zeroInfinity`, an utterance
/// that cannot be aligned (T_b < S + the number of equal neighbours in y, each needing a blank between) has
/// loss 0 and gradient 0, as in torch; T_b = 0 with S = 0 is a loss of 0.
///
/// Gradient of mean_b loss_b with respect to the logits (through the log_softmax): for t < T_b,
///
///     ∂/∂z_t(c) = (p_t(c) − γ_t(c)) / B,   p_t = softmax(z_t),
///     γ_t(c) = Σ_{s : l'_s = c} exp(α_t(s) + β_t(s) − log P_b)     (the posterior occupancy of label c at t),
///
/// and 0 on frames t ≥ T_b. (∂loss_b/∂lp_t(c) = −γ_t(c); through the log_softmax that is −γ_t(c) + p_t(c)·Σ_c γ_t(c),
/// and Σ_c γ_t(c) = 1.) As Σ_s exp(α_t(s) + β_t(s)) = P_b at every frame, γ_t is normalised frame by frame, so
/// each frame's gradient sums to 0 over the vocabulary up to rounding.
///
/// Numerics: log space throughout (no under/overflow whatever the logits), in Float with branch-free exp/log
/// (Cephes polynomials, ≲ 2 ulp) in loops the optimiser vectorises; each α (and β) row is kept relative to its
/// own maximum, the offsets summed in Double, so the stored values stay small and their rounding does not grow
/// with the utterance's log-likelihood. (torch's float32 rows reach −log P: on the reference cases its float32
/// gradient is up to 3.4e-5 (max|Δ|/max|g|) from its float64 one, this one 4e-7; losses 2e-7 and 4e-8 relative.)
/// Only the cells that can lie on a complete path are computed:
/// max(0, L − 2(T_b − t)) ≤ s < min(L, 2t + 2), rounded out to multiples of 8.
/// Frames beyond an utterance's length are never read. No allocation after the first call at a given maximum
/// shape (B, T, V, longest target): the workspaces only grow.
public final class CTCLoss {
    public let blank: Int
    public let zeroInfinity: Bool

    /// Per-utterance losses of the last forward (0 for an unalignable utterance when `zeroInfinity`, +∞ otherwise).
    public private(set) var utteranceLosses: [Double] = []

    /// −∞ entries before and after each extended-sequence row, so that reads at s−2 … s+2 need no bounds tests.
    private static let guardWidth = 8

    // Shape of the last forward.
    private var batch = 0, maxFrames = 0, vocab = 0
    /// Row stride of the extended-sequence buffers: guard + roundUp(2·S_max + 1, 8) + guard.
    private var rowStride = 0

    private enum Status: UInt8 { case regular, zero, nan }
    private var status: [Status] = []
    private var frames: [Int] = []
    private var extLengths: [Int] = []
    private var hasForward = false

    private var probs = Workspace<Float>()      // [B, T, V] softmax of the valid frames
    private var emissions = Workspace<Float>()  // [B, T, rowStride] lp_t(l'_s), −∞ past L
    private var alphas = Workspace<Float>()     // [B, T, rowStride] α_t(s) − max_s α_t(s), −∞ outside the band
    private var skips = Workspace<Float>()      // [B, rowStride] 0 where the s−2 → s transition is allowed, else −∞
    private var labels = Workspace<Int32>()     // [B, rowStride] l'_s
    private var rowA = Workspace<Float>(), rowB = Workspace<Float>(), rowC = Workspace<Float>()

    public init(blank: Int = 0, zeroInfinity: Bool = true) {
        self.blank = blank
        self.zeroInfinity = zeroInfinity
    }

    deinit {
        probs.free(); emissions.free(); alphas.free(); skips.free(); labels.free()
        rowA.free(); rowB.free(); rowC.free()
    }

    /// The mean over the batch of the per-utterance CTC losses (also kept in `utteranceLosses`).
    /// - Parameters:
    ///   - logits: [batch, maxFrames, vocab] row-major; frames t ≥ inputLengths[b] are ignored (may hold anything).
    ///   - inputLengths: [batch], each in 0...maxFrames.
    ///   - targets: [batch, targetStride] row-major; utterance b's tokens are the first targetLengths[b] of its row,
    ///     each in 0..<vocab and ≠ blank.
    ///   - targetLengths: [batch], each in 0...targetStride (0: the alignment is all blanks).
    public func forward(logits: UnsafePointer<Float>, batch: Int, maxFrames: Int, vocab: Int, inputLengths: [Int],
                        targets: UnsafePointer<Int32>, targetStride: Int, targetLengths: [Int]) -> Float {
        precondition(batch > 0 && maxFrames >= 0 && vocab > 0, "CTCLoss: bad shape")
        precondition(inputLengths.count == batch && targetLengths.count == batch, "CTCLoss: one length per utterance")
        precondition(blank >= 0 && blank < vocab, "CTCLoss: blank \(blank) outside the vocabulary of \(vocab)")
        var maxTarget = 0
        for b in 0..<batch {
            precondition(inputLengths[b] >= 0 && inputLengths[b] <= maxFrames, "CTCLoss: input length out of range")
            precondition(targetLengths[b] >= 0 && targetLengths[b] <= targetStride, "CTCLoss: target length out of range")
            maxTarget = max(maxTarget, targetLengths[b])
        }
        let g = Self.guardWidth
        let rs = 2 * g + Self.roundUp(2 * maxTarget + 1)
        self.batch = batch; self.maxFrames = maxFrames; self.vocab = vocab; rowStride = rs
        probs.reserve(batch * maxFrames * vocab)
        emissions.reserve(batch * maxFrames * rs)
        alphas.reserve(batch * maxFrames * rs)
        skips.reserve(batch * rs)
        labels.reserve(batch * rs)
        rowA.reserve(rs); rowB.reserve(rs); rowC.reserve(rs)
        Self.resize(&utteranceLosses, batch, 0.0)
        Self.resize(&status, batch, .regular)
        Self.resize(&frames, batch, 0)
        Self.resize(&extLengths, batch, 0)

        var total = 0.0
        for b in 0..<batch {
            let T = inputLengths[b], S = targetLengths[b]
            frames[b] = T; extLengths[b] = 2 * S + 1
            let row = targets + b * targetStride
            // The extended sequence, the s−2 → s mask and the frames an alignment needs (a blank between repeats).
            let lab = labels.pointer + b * rs, skip = skips.pointer + b * rs
            lab.initialize(repeating: Int32(blank), count: rs)
            skip.initialize(repeating: -.infinity, count: rs)
            var needed = S
            for k in 0..<S {
                let y = Int(row[k])
                precondition(y >= 0 && y < vocab && y != blank, "CTCLoss: target token \(y) is blank or outside 0..<\(vocab)")
                lab[g + 2 * k + 1] = row[k]
                if k > 0 && row[k] == row[k - 1] { needed += 1 } else if k > 0 { skip[g + 2 * k + 1] = 0 }
            }
            var loss: Double
            if T < needed {
                loss = .infinity
            } else if T == 0 {
                loss = 0  // no frames and no target: the empty alignment, probability 1
            } else {
                loss = -forwardUtterance(b, logits: logits + b * maxFrames * vocab)
            }
            if loss == .infinity {
                status[b] = zeroInfinity ? .zero : .nan
                if zeroInfinity { loss = 0 }
            } else {
                status[b] = T == 0 ? .zero : .regular
            }
            utteranceLosses[b] = loss
            total += loss
        }
        hasForward = true
        return Float(total / Double(batch))
    }

    /// Writes (overwrites) seed · ∂(the last forward's mean loss)/∂logits into dLogits, [batch, maxFrames, vocab]:
    /// zero on padded frames and for utterances zeroed by `zeroInfinity`; NaN on the valid frames of an unalignable
    /// utterance without `zeroInfinity` (as torch).
    public func backward(seed: Float, dLogits: UnsafeMutablePointer<Float>) {
        precondition(hasForward, "CTCLoss.backward before forward")
        let scale = seed / Float(batch), V = vocab
        for b in 0..<batch {
            let T = frames[b]
            let grad = dLogits + b * maxFrames * V
            switch status[b] {
            case .regular: backwardUtterance(b, scale: scale, grad: grad)
            case .zero: grad.initialize(repeating: 0, count: T * V)
            case .nan: grad.initialize(repeating: .nan, count: T * V)
            }
            (grad + T * V).initialize(repeating: 0, count: (maxFrames - T) * V)
        }
    }

    // MARK: - One utterance

    /// The cells of frame t that can lie on a complete path, rounded out to multiples of 8: [lo, hi).
    @inline(__always)
    private static func band(_ t: Int, frames T: Int, extLength L: Int) -> (lo: Int, hi: Int) {
        (max(0, L - 2 * (T - t)) & ~7, roundUp(min(L, 2 * t + 2)))
    }

    @inline(__always)
    private static func roundUp(_ n: Int) -> Int { (n + 7) & ~7 }

    /// The softmax of the valid frames into `probs`, their emissions, and the α recursion; returns log P_b.
    private func forwardUtterance(_ b: Int, logits z: UnsafePointer<Float>) -> Double {
        let T = frames[b], L = extLengths[b], V = vocab, rs = rowStride, g = Self.guardWidth
        let lab = labels.pointer + b * rs + g, skip = skips.pointer + b * rs + g
        let p = probs.pointer + b * maxFrames * V
        let E = emissions.pointer + b * maxFrames * rs + g, A = alphas.pointer + b * maxFrames * rs + g
        for t in 0..<T {
            let logZ = softmaxRow(z + t * V, p + t * V, V)
            let e = E + t * rs
            (e - g).initialize(repeating: -.infinity, count: rs)
            for s in 0..<L { e[s] = Float(Double(z[t * V + Int(lab[s])]) - logZ) }
        }
        // t = 0: a blank or the first token (only the token when T = S).
        var logScale = 0.0
        var a = A
        (a - g).initialize(repeating: -.infinity, count: rs)
        for s in 0..<min(L, 2) { a[s] = E[s] }
        logScale += Double(normaliseRow(a, Self.roundUp(L), maxFrom: max(0, L - 2 * T)))
        for t in 1..<max(T, 1) {
            let prev = UnsafePointer(a)
            a = A + t * rs
            (a - g).initialize(repeating: -.infinity, count: rs)
            let (lo, hi) = Self.band(t, frames: T, extLength: L)
            alphaRow(prev + lo, skip + lo, E + t * rs + lo, a + lo, hi - lo)
            // Shifted by the maximum over the cells that can still complete a path (not those rounded in below).
            logScale += Double(normaliseRow(a + lo, hi - lo, maxFrom: max(0, L - 2 * (T - t)) - lo))
        }
        let last = Double(a[L - 1]), penultimate = L > 1 ? Double(a[L - 2]) : -.infinity
        let m = max(last, penultimate)
        if m == -.infinity { return -.infinity }
        return logScale + m + Foundation.log(Foundation.exp(last - m) + Foundation.exp(penultimate - m))
    }

    /// β backwards from the last frame and, at each frame, the occupancies γ_t and the gradient row.
    private func backwardUtterance(_ b: Int, scale: Float, grad: UnsafeMutablePointer<Float>) {
        let T = frames[b], L = extLengths[b], V = vocab, rs = rowStride, g = Self.guardWidth
        let lab = labels.pointer + b * rs + g, skip = skips.pointer + b * rs + g
        let p = probs.pointer + b * maxFrames * V
        let E = emissions.pointer + b * maxFrames * rs + g, A = alphas.pointer + b * maxFrames * rs + g
        var beta = rowA.pointer + g, next = rowB.pointer + g
        let w = rowC.pointer + g
        (beta - g).initialize(repeating: -.infinity, count: rs)
        beta[L - 1] = 0
        if L > 1 { beta[L - 2] = 0 }
        for t in stride(from: T - 1, through: 0, by: -1) {
            let (lo, hi) = Self.band(t, frames: T, extLength: L)
            // γ_t(s) ∝ exp(α_t(s) + β_t(s)), normalised over s; grad_t = scale · (p_t − γ_t).
            addRows(A + t * rs + lo, beta + lo, w + lo, hi - lo)
            var m = maxOfRow(w + lo, hi - lo)
            if m == -.infinity { m = 0 }
            let sum = expRowInPlace(w + lo, hi - lo, shift: m)
            let coefficient = Float(Double(scale) / sum)
            let gt = grad + t * V
            scaleRow(p + t * V, gt, V, scale)
            for s in lo..<min(hi, L) { gt[Int(lab[s])] -= coefficient * w[s] }
            if t == 0 { break }
            // β_{t−1}(s) = logsumexp over s' ∈ {s, s+1, s+2 (when allowed)} of β_t(s') + lp_t(l'_{s'}).
            (w - g).initialize(repeating: -.infinity, count: rs)
            addRows(beta + lo, E + t * rs + lo, w + lo, hi - lo)
            (next - g).initialize(repeating: -.infinity, count: rs)
            let (lo1, hi1) = Self.band(t - 1, frames: T, extLength: L)
            betaRow(w + lo1, skip + lo1, next + lo1, hi1 - lo1)
            _ = normaliseRow(next + lo1, hi1 - lo1, maxFrom: 0)
            swap(&beta, &next)
        }
    }

    /// Writes softmax(z) into p (V entries); returns log Σ exp(z) in Double.
    private func softmaxRow(_ z: UnsafePointer<Float>, _ p: UnsafeMutablePointer<Float>, _ V: Int) -> Double {
        let m = maxOfRow(z, V)
        let sum = expRow(z, p, V, shift: m)
        scaleRowInPlace(p, V, Float(1 / sum))
        return Double(m) + Foundation.log(sum)
    }

    private static func resize<Element>(_ array: inout [Element], _ count: Int, _ value: Element) {
        if array.count == count { return }
        array.removeAll(keepingCapacity: true)
        array.append(contentsOf: repeatElement(value, count: count))
    }
}

// MARK: - Row kernels
// Plain loops over unsafe pointers with branch-free bodies, which the loop vectoriser turns into SIMD code.
// (Swift's SIMD8<Float> arithmetic reaches LLVM lane by lane and the SLP vectoriser re-vectorised the exp/log
// polynomials only partly; these loops vectorise fully.)

/// α_t(s) = logsumexp(α_{t−1}(s), α_{t−1}(s−1), α_{t−1}(s−2) + skip(s)) + e(s) for s in 0..<n (prev[−2…−1] readable).
@inline(never)
private func alphaRow(_ prev: UnsafePointer<Float>, _ skip: UnsafePointer<Float>, _ e: UnsafePointer<Float>,
                      _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    for s in 0..<n { out[s] = logSumExp3(prev[s], prev[s - 1], prev[s - 2] + skip[s]) + e[s] }
}

/// β_{t−1}(s) = logsumexp(x(s), x(s+1), x(s+2) + skip(s+2)) for s in 0..<n, x = β_t + e_t (x[n…n+1] readable).
@inline(never)
private func betaRow(_ x: UnsafePointer<Float>, _ skip: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    for s in 0..<n { out[s] = logSumExp3(x[s], x[s + 1], x[s + 2] + skip[s + 2]) }
}

@inline(never)
private func addRows(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { out[i] = a[i] + b[i] }
}

@inline(never)
private func scaleRow(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int, _ c: Float) {
    for i in 0..<n { out[i] = c * x[i] }
}

@inline(never)
private func scaleRowInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ c: Float) {
    for i in 0..<n { x[i] *= c }
}

/// out = exp(x − shift) over n entries; returns their sum in Double.
@inline(never)
private func expRow(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
    for i in 0..<n { out[i] = fastExp(x[i] - shift) }
    return sumOfRow(out, n)
}

/// x = exp(x − shift) over n entries; returns their sum in Double.
@inline(never)
private func expRowInPlace(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
    for i in 0..<n { x[i] = fastExp(x[i] - shift) }
    return sumOfRow(x, n)
}

/// Σ x in Double, four partial sums.
@inline(__always)
private func sumOfRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> Double {
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    var i = 0
    while i + 4 <= n {
        s0 += Double(x[i]); s1 += Double(x[i + 1]); s2 += Double(x[i + 2]); s3 += Double(x[i + 3])
        i += 4
    }
    while i < n { s0 += Double(x[i]); i += 1 }
    return (s0 + s1) + (s2 + s3)
}

@inline(never)
private func maxOfRow(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = -Float.infinity
    for i in 0..<n where x[i] > m { m = x[i] }
    return m
}

private func maxOfRow(_ x: UnsafeMutablePointer<Float>, _ n: Int) -> Float { maxOfRow(UnsafePointer(x), n) }

/// Subtracts max(x[first..<n]) from all n entries unless it is not finite; returns it (0 if not finite).
@inline(never)
private func normaliseRow(_ x: UnsafeMutablePointer<Float>, _ n: Int, maxFrom first: Int) -> Float {
    let m = maxOfRow(x + first, n - first)
    if !m.isFinite { return 0 }
    for i in 0..<n { x[i] -= m }
    return m
}

/// log(e^a + e^b + e^c) = m + log(1 + e^(mid − m) + e^(low − m)) with m ≥ mid ≥ low the three sorted;
/// −∞ when all three are −∞.
@inline(__always)
private func logSumExp3(_ a: Float, _ b: Float, _ c: Float) -> Float {
    let hi = a > b ? a : b, lo = a > b ? b : a
    let m = hi > c ? hi : c
    let mid = lo > (hi > c ? c : hi) ? lo : (hi > c ? c : hi)
    let low = lo > c ? c : lo
    // −∞ → −greatest finite, so that the differences are −∞ rather than NaN: then m + log 1 = −∞.
    let shift = m > -.greatestFiniteMagnitude ? m : -.greatestFiniteMagnitude
    return m + fastLog(1 + fastExp(mid - shift) + fastExp(low - shift))
}

/// e^x for Float (Cephes expf: 2^n · P(r), n = round(x / ln 2), |error| ≲ 2 ulp); 0 below −87.3 (no subnormals,
/// which would be slow), NaN kept.
@inline(__always)
private func fastExp(_ x: Float) -> Float {
    let xc = min(max(x, -87.3), 88.3)
    let magic: Float = 12_582_912  // 1.5 · 2^23: adding it rounds to an integer, held in the low mantissa bits
    let t = xc * 1.442_695_04 + magic
    let n = t - magic
    var r = xc - n * 0.693_359_375
    r = r - n * -2.121_944_40e-4
    let z = r * r
    var y: Float = 1.987_569_150_0e-4
    y = y * r + 1.398_199_950_7e-3
    y = y * r + 8.333_451_907_3e-3
    y = y * r + 4.166_579_589_4e-2
    y = y * r + 1.666_666_545_9e-1
    y = y * r + 5.000_000_120_1e-1
    y = y * z + r + 1
    let result = y * Float(bitPattern: (t.bitPattern &- 0x4B40_0000 &+ 127) &<< 23)
    return x < -87.3 ? 0 : (x != x ? x : result)
}

/// ln x for a positive normal x (Cephes logf's polynomial after musl's range reduction to 2^k · (1 + f),
/// 1 + f ∈ [√½, √2); |error| ≲ 1 ulp).
@inline(__always)
private func fastLog(_ x: Float) -> Float {
    let bits = x.bitPattern &+ (0x3F80_0000 - 0x3F35_04F3)
    // k = (bits >> 23) − 127, converted exactly through the magic number 1.5 · 2^23.
    let k = Float(bitPattern: (bits &>> 23) &+ (0x4B40_0000 - 127)) - 12_582_912
    let m = Float(bitPattern: (bits & 0x007F_FFFF) &+ 0x3F35_04F3) - 1
    let z = m * m
    var y: Float = 7.037_683_629_2e-2
    y = y * m - 1.151_461_031_0e-1
    y = y * m + 1.167_699_874_0e-1
    y = y * m - 1.242_014_084_6e-1
    y = y * m + 1.424_932_278_7e-1
    y = y * m - 1.666_805_766_5e-1
    y = y * m + 2.000_071_476_5e-1
    y = y * m - 2.499_999_399_3e-1
    y = y * m + 3.333_333_117_4e-1
    y = y * m * z
    y = y + k * -2.121_944_40e-4
    y = y - 0.5 * z
    return m + y + k * 0.693_359_375
}

/// A manually managed buffer that only grows (its contents are not kept when it does).
private struct Workspace<Element> {
    private(set) var pointer = UnsafeMutablePointer<Element>.allocate(capacity: 1)
    private var capacity = 1

    mutating func reserve(_ count: Int) {
        if count <= capacity { return }
        pointer.deallocate()
        pointer = UnsafeMutablePointer<Element>.allocate(capacity: count)
        capacity = count
    }

    func free() { pointer.deallocate() }
}
