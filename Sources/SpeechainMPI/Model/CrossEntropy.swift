import CKernels
import Foundation

/// torch.nn.functional.cross_entropy with mean reduction and label smoothing ε over K classes:
/// loss = mean_i[(1−ε)·(−log p_{i,y_i}) + ε·mean_k(−log p_{i,k})], p = softmax(logits);
/// ∂loss/∂logits = (p − ((1−ε)·onehot + ε/K)) / N. Accuracy = mean(argmax logits == y).
/// The exponentials, the softmax and the gradient run in C (CKernels) on the CPU's vector path.
public final class CrossEntropy {
    public let labelSmoothing: Float
    private var probabilities = FloatBuffer(count: 0)
    private var labels: [Int32] = []
    private var rows = 0, classes = 0

    public init(labelSmoothing: Float = 0) { self.labelSmoothing = labelSmoothing }

    /// Returns (loss, accuracy); keeps the softmax for backward.
    public func forward(logits: Matrix, labels newLabels: UnsafeBufferPointer<Int32>) -> (loss: Float, accuracy: Float) {
        rows = logits.rows; classes = logits.cols
        probabilities.resize(to: rows * classes)
        if labels.count != rows { labels = [Int32](repeating: 0, count: rows) }
        var total = 0.0
        var correct = 0
        let eps = Double(labelSmoothing), k = classes
        let path = VectorPath.current.ck
        for r in 0..<rows {
            let z = logits.data + r * k, p = probabilities.pointer + r * k
            let y = Int(newLabels[r])
            labels[r] = newLabels[r]
            var m = z[0], arg = 0
            for j in 1..<k where z[j] > m { m = z[j]; arg = j }
            if arg == y { correct += 1 }
            // s = Σ exp(double(z − m)); p = float(exp(double(z) − log Σ)); Σ −log p = −Σ (double(z) − log Σ).
            let s = ck_sum_exp_shifted(path, z, k, m)
            let logSum = Double(m) + Foundation.log(s)
            let sumNegLog = -ck_softmax_from_log_sum(path, z, k, logSum, p)
            let nll = logSum - Double(z[y])
            // Without smoothing the mean over classes is not taken (as torch): a −inf logit would make it inf, and 0·inf NaN.
            total += (1 - eps) * nll + (eps == 0 ? 0 : eps * sumNegLog / Double(k))
        }
        return (Float(total / Double(rows)), Float(correct) / Float(rows))
    }

    /// Writes `seed · ∂loss/∂logits` into `dlogits`.
    public func backward(seed: Float, into dlogits: Matrix) {
        let k = classes
        let scale = seed / Float(rows)
        let offValue = labelSmoothing / Float(k)
        let onValue = 1 - labelSmoothing + offValue
        // d = (p − (j == y ? on : off))·scale, element by element.
        labels.withUnsafeBufferPointer {
            ck_cross_entropy_backward(VectorPath.current.ck, probabilities.pointer, dlogits.data, rows, k, $0.baseAddress,
                                      onValue, offValue, scale)
        }
    }
}
