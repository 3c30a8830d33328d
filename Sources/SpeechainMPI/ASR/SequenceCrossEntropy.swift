import Foundation

/// SpeeChain's `criterion.cross_entropy.CrossEntropy` (length_normalized false, temperature 1, no confidence
/// threshold) with its `Accuracy`, over decoder logits [B, L, V] and targets [B, L] with lengths:
///
///     log p = log_softmax(logits);  ℓ_n = (1 − ε)·log p[n, y_n] + (ε/V)·Σ_v log p[n, v]   (ε: label_smoothing)
///     loss = −(1/B)·Σ_b Σ_{n < len_b} ℓ_n       (summed over each sentence, averaged over sentences)
///     accuracy = #{n < len_b : argmax logits[n] = y_n} / Σ_b len_b
///     ∂loss/∂logits[n, v] = (1/B)·(p[n, v] − (1 − ε)·[v = y_n] − ε/V) for valid n, 0 for padding
public final class SequenceCrossEntropy {
    public let labelSmoothing: Float
    private let probabilities = FloatBuffer(count: 0)
    private var batch = 0, steps = 0, vocab = 0
    private var targets: UnsafePointer<Int32>?
    private var targetStride = 0
    private var lengths: [Int] = []

    public init(labelSmoothing: Float) { self.labelSmoothing = labelSmoothing }

    /// targets[b·targetStride + n] for n < lengths[b]; returns (loss, accuracy).
    public func forward(logits: UnsafePointer<Float>, batch: Int, steps: Int, vocab: Int,
                        targets: UnsafePointer<Int32>, targetStride: Int, lengths: [Int]) -> (loss: Float, accuracy: Float) {
        self.batch = batch; self.steps = steps; self.vocab = vocab; self.targets = targets; self.targetStride = targetStride
        self.lengths.removeAll(keepingCapacity: true); self.lengths.append(contentsOf: lengths)   // own storage: sharing the caller's would copy on its next write
        probabilities.resize(to: batch * steps * vocab)
        let eps = Double(labelSmoothing)
        var total = 0.0, correct = 0, tokens = 0
        for b in 0..<batch {
            for n in 0..<lengths[b] {
                let row = logits + (b * steps + n) * vocab, p = probabilities.pointer + (b * steps + n) * vocab
                var m = -Float.infinity, arg = 0
                for v in 0..<vocab where row[v] > m { m = row[v]; arg = v }
                var s: Double = 0
                for v in 0..<vocab { let e = expf(row[v] - m); p[v] = e; s += Double(e) }
                let logZ = Double(m) + log(s)
                var sumLog = 0.0
                for v in 0..<vocab { sumLog += Double(row[v]) - logZ }
                let y = Int(targets[b * targetStride + n])
                total += (1 - eps) * (Double(row[y]) - logZ) + eps / Double(vocab) * sumLog
                let r = Float(1 / s)
                for v in 0..<vocab { p[v] *= r }
                if arg == y { correct += 1 }
                tokens += 1
            }
        }
        return (Float(-total / Double(batch)), tokens > 0 ? Float(correct) / Float(tokens) : 0)
    }

    /// dLogits (overwritten, zero at padding) = seed·∂loss/∂logits of the last forward.
    public func backward(seed: Float, dLogits: UnsafeMutablePointer<Float>) {
        Kernels.fill(dLogits, count: batch * steps * vocab, value: 0)
        let k = seed / Float(batch), smooth = labelSmoothing / Float(vocab)
        for b in 0..<batch {
            for n in 0..<lengths[b] {
                let o = (b * steps + n) * vocab, p = probabilities.pointer + o, d = dLogits + o
                for v in 0..<vocab { d[v] = k * (p[v] - smooth) }
                d[Int(targets![b * targetStride + n])] -= k * (1 - labelSmoothing)
            }
        }
    }
}
