import Foundation
@testable import SpeechainMPI

/// The reference model and data of the PyTorch trajectories: encoder Linear(16,32), ReLU, Linear(32,32), ReLU;
/// decoder Linear(32,4); 64 samples in batches of 8, taken in order.
struct ReferenceData {
    let features: [Float]   // [64, 16]
    let labels: [Int32]
    let cols: Int
    static let batchSize = 8

    init(directory: String) throws {
        let feat = try NPY.readFloat32Matrix(contentsOf: TestResources.url("\(directory)/feat.npy"))
        features = feat.values
        cols = feat.cols
        labels = try NPY.readInt64Vector(contentsOf: TestResources.url("\(directory)/label.npy")).map { Int32($0) }
    }

    var batchesPerEpoch: Int { labels.count / Self.batchSize }

    /// Batch `index` (0-based, cycling) of 8 consecutive samples.
    func batch(_ index: Int) -> Batch {
        let b = index % batchesPerEpoch, n = Self.batchSize
        return Batch(features: Array(features[(b * n * cols)..<((b + 1) * n * cols)]),
                     labels: Array(labels[(b * n)..<((b + 1) * n)]), cols: cols)
    }
}

enum ReferenceModel {
    static func make(initWeights: String = "torch_refs/adam_noam_accum4/init.safetensors") throws -> MLPClassifier {
        let model = try MLPClassifier(encoder: .init(dims: [16, 32, 32], activation: "ReLU"),
                                      decoder: .init(dims: [32, 4]))
        let file = try Safetensors.read(contentsOf: TestResources.url(initWeights))
        try model.parameters.load(file.tensors, source: initWeights)
        return model
    }

    /// Runs `steps` steps (step_num 1...steps) with SpeeChain's runner order: forward, then the schedulers' step
    /// (every backward before any update).
    static func train(_ model: MLPClassifier, schedulers: [OptimScheduler], data: ReferenceData, steps: Int,
                      startStep: Int = 1, onStep: (Int, Float, [StepReport]) -> Void = { _, _, _ in }) throws {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        let context = ForwardContext(training: true)
        for stepNum in startStep..<(startStep + steps) {
            let epoch = (stepNum - 1) / data.batchesPerEpoch + 1
            try model.forward(data.batch(stepNum - 1), context: context, losses: &losses, metrics: &metrics)
            let reports = try OptimSchedulers.step(schedulers, losses: losses, stepNum: stepNum, epochNum: epoch)
            onStep(stepNum, losses["loss"]!, reports)
        }
    }

    /// Largest |a − b| / max(max|b|, floor) over every parameter, per tensor (the reference README's measure).
    static func maxRelativeDifference(_ model: MLPClassifier, _ expected: [String: [Float]]) -> Double {
        var worst = 0.0
        for e in model.parameters.entries {
            guard let ref = expected[e.name], ref.count == e.count else { return .infinity }
            let got = model.parameters.values.toArray(e.range)
            let scale = Double(ref.map { abs($0) }.max() ?? 1)
            let diff = zip(got, ref).map { Double(abs($0 - $1)) }.max() ?? 0
            worst = max(worst, diff / max(scale, 1e-12))
        }
        return worst
    }
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(contentsOf: TestResources.url(relativePath)))
}
