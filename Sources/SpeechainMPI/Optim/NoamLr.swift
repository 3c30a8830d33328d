/// SpeeChain's `noam.NoamLr` (Vaswani et al., 2017): lr = init_lr · min(s^−0.5, s · w^−1.5), where
/// init_lr = d_model^−0.5 when d_model is given, else the optimizer's lr · w^0.5 (so the peak, at s = w, is that lr).
public struct NoamLr: LRSchedule {
    public static let typeName = "noam.NoamLr"
    public static let confKeys = ["d_model", "warmup_steps"]
    public let dModel: Int?
    public let warmupSteps: Int
    public let initLR: Double

    public init(conf: ConfReader, baseLR: Double) throws {
        dModel = try conf.optionalInt("d_model")
        warmupSteps = try conf.int("warmup_steps", default: 4000)
        try requirePositive(conf, "warmup_steps", warmupSteps)
        if let d = dModel { try requirePositive(conf, "d_model", d) }
        initLR = dModel.map { 1 / Double($0).squareRoot() } ?? baseLR * Double(warmupSteps).squareRoot()
    }

    public func lr(realStep: Int, epoch: Int) -> Double {
        let s = Double(realStep), w = Double(warmupSteps)
        return initLR * min(1 / s.squareRoot(), s * Foundation.pow(w, -1.5))
    }

    public var reprFields: String { "d_model=\(pythonRepr(dModel)), warmup_steps=\(warmupSteps)" }
}

import Foundation
