import Foundation

/// torch.nn.utils.clip_grad_norm_ over flat gradient ranges: total = (Σ|g|^p)^(1/p) (max|g| for p = ∞), then
/// g ← g·min(1, max_norm/(total + 1e-6)); the total norm before clipping is returned. A non-finite total leaves the
/// gradients as they are (the caller skips the update). max_norm ≤ 0 only measures.
public enum GradientClipping {
    /// `recordedSumOfSquares` (2-norm only): Σ g² of gradients outside `ranges` that belong to the norm, summed
    /// where they were written (GradientNormTally).
    public static func totalNorm(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>], normType p: Double,
                                 recordedSumOfSquares: Double = 0) -> Double {
        precondition(recordedSumOfSquares == 0 || p == 2, "recorded sums of squares are for the 2-norm")
        if p.isInfinite {
            var m: Float = 0
            for r in ranges {
                let v = Kernels.maxMagnitude(gradients + r.lowerBound, count: r.count)
                if v.isNaN { return .nan }
                m = max(m, v)
            }
            return Double(m)
        }
        var sum = recordedSumOfSquares
        for r in ranges {
            let g = gradients + r.lowerBound
            switch p {
            case 2: sum += Kernels.sumOfSquares(g, count: r.count)
            case 1: sum += Kernels.sumOfMagnitudes(g, count: r.count)
            default: sum += Kernels.sumOfPowers(g, count: r.count, p: p)
            }
        }
        switch p {
        case 2: return sum.squareRoot()
        case 1: return sum
        default: return Foundation.pow(sum, 1 / p)
        }
    }

    /// Clips in place and returns the total norm (as torch, in float32 precision). `factor` (> 0, a pending
    /// 1/world size) is applied first: the norm is that of factor·g, and the clipping pass multiplies by it too.
    @discardableResult
    public static func clip(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>], maxNorm: Double, normType: Double,
                            factor: Float = 1) -> Float {
        let (total, scale) = measure(gradients, ranges: ranges, maxNorm: maxNorm, normType: normType, factor: factor)
        if let scale { for r in ranges { Kernels.scale(gradients + r.lowerBound, count: r.count, by: scale) } }
        return total
    }

    /// `clip` without its pass: the total norm of factor·g and, when clipping applies (max_norm > 0, a finite
    /// norm), the multiplier coef·factor the clipping pass would apply — an optimizer step given it as its
    /// gradient scale sees exactly the clipped gradients (the same single product g·(coef·factor) per element).
    public static func measure(_ gradients: UnsafeMutablePointer<Float>, ranges: [Range<Int>], maxNorm: Double, normType: Double,
                               factor: Float = 1, recordedSumOfSquares: Double = 0) -> (total: Float, scale: Float?) {
        let total = Float(totalNorm(gradients, ranges: ranges, normType: normType, recordedSumOfSquares: recordedSumOfSquares)
                          * Double(factor))
        guard maxNorm > 0, total.isFinite else { return (total, nil) }
        let coef = min(Float(maxNorm) / (total + 1e-6), 1)
        return (total, coef * factor)
    }
}
