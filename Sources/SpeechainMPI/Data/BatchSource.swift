/// What the trainer draws batches from: SpeeChain's Iterator with its Dataset inside (`data_cfg.train`,
/// `data_cfg.valid`). The Iterator side plans which items make each step of an epoch on each rank; the Dataset side
/// loads those items and collates them into a `Batch`. The trainer never looks inside the batch.
///
/// `collate` runs on a `BatchLoader`'s thread, one call at a time, ahead of the step that uses it; a source may keep
/// scratch buffers for it. Every random draw of loading (speed perturbation) comes from the generator passed in,
/// so that what a step sees does not depend on thread timing.
public protocol BatchSource: AnyObject, CustomStringConvertible {
    /// Items (rows, utterances) in the set.
    var itemCount: Int { get }

    /// The items this rank takes at each training step of `epoch` (1-based): every rank gets the same number of
    /// steps, each step one global batch, a share of it per rank.
    func trainingSteps(epoch: Int, rank: Int, world: Int) -> [[Int]]

    /// The items this rank evaluates, batch by batch: every item once over all ranks (ranks may have different
    /// numbers of batches; a share may be empty and is then not listed).
    func evaluationSteps(rank: Int, world: Int) -> [[Int]]

    /// Loads `items` and writes them into `batch` (capacity kept: no allocation once the largest batch is seen,
    /// beyond what a C library reading a file does).
    func collate(_ items: [Int], into batch: inout Batch, random: inout Xoshiro256) throws

    /// Checks, at set-up, that the data fits the model (a table's width and labels); one line naming the set.
    func check(for model: any Model, set: String) throws

    /// What a resume must find unchanged: the size and a checksum of the contents.
    var fingerprint: String { get }
}
