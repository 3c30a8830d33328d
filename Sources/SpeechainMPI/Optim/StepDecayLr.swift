import Foundation

/// `step.StepDecayLr` (beyond SpeeChain; torch's StepLR stepped per epoch): lr = base · gamma^⌊(epoch − 1)/step_size⌋.
public struct StepDecayLr: LRSchedule {
    public static let typeName = "step.StepDecayLr"
    public static let confKeys = ["step_size", "gamma"]
    public let baseLR: Double, gamma: Double
    public let stepSize: Int

    public init(conf: ConfReader, baseLR: Double) throws {
        self.baseLR = baseLR
        stepSize = try conf.int("step_size", default: 1)
        gamma = try conf.double("gamma", default: 0.1)
        try requirePositive(conf, "step_size", stepSize)
    }

    public func lr(realStep: Int, epoch: Int) -> Double {
        baseLR * Foundation.pow(gamma, Double((epoch - 1) / stepSize))
    }

    public var reprFields: String { "step_size=\(stepSize), gamma=\(pythonRepr(gamma))" }
}
