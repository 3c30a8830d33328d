import Foundation

/// What SpeeChain's ValidMonitor leaves in models/ after an epoch (`update_best_and_pop_worst`, `save_aver_model`),
/// as a plan the trainer carries out:
/// - pointers: `<set>_<metric>_best`, `…_best_K` (the best-N list, best first), `latest` and `last_K`
///   (K = 2 … last_model_number);
/// - averages: `{N}_{set}_{metric}_average` of the best-N list when the full list changed in this epoch (N > 1),
///   and `{L}_last_average` of the last L epochs once there are L (L = last_model_number > 1);
/// - the epochs whose files stay: the last L and every best-N list.
///
/// One difference: SpeeChain writes the best-N average only when an epoch leaves a full list, so the epoch that
/// fills the list writes none, and a run of exactly N epochs has no average at all; here the epoch that fills the
/// list writes it too.
public struct ModelsFolderPlan: Equatable, Sendable {
    public var pointers: [String: Int] = [:]
    public var averages: [String: [Int]] = [:]
    public var keep: Set<Int> = []

    public static func after(epoch: Int, selections: [ModelSelection], trackers: [BestModelTracker],
                             changes: [BestModelTracker.Change], lastModelNumber last: Int) -> ModelsFolderPlan {
        var plan = ModelsFolderPlan()
        for (k, sel) in selections.enumerated() {
            for (i, m) in trackers[k].ranked.enumerated() {
                plan.pointers["\(sel.set)_\(sel.metric)_best" + (i == 0 ? "" : "_\(i + 1)")] = m.epoch
            }
            if sel.number > 1 && trackers[k].isFull && changes[k].joined { plan.averages[sel.averageName] = trackers[k].bestEpochs }
            plan.keep.formUnion(trackers[k].bestEpochs)
        }
        for e in stride(from: epoch, to: max(0, epoch - last), by: -1) {
            plan.pointers[e == epoch ? "latest" : "last_\(epoch - e + 1)"] = e
            plan.keep.insert(e)
        }
        if last > 1 && epoch >= last { plan.averages["\(last)_last_average"] = Array((epoch - last + 1)...epoch) }
        return plan
    }
}

/// SpeeChain's pointer files under models/ (`latest`, `last_2`, `valid_accuracy_best`, `…_best_2`): each a
/// relative symbolic link to an `epoch_N.safetensors` beside it, so that the folder can be moved or copied whole.
/// A pointer is replaced by creating the new link under a temporary name and renaming it over the old one, which
/// is atomic: the name never dangles and never names a partial file.
enum ModelPointer {
    static func point(_ name: String, to epoch: Int, in models: URL) throws {
        let link = models.appendingPathComponent("\(name).safetensors").path
        let target = "epoch_\(epoch).safetensors"
        if let current = try? FileManager.default.destinationOfSymbolicLink(atPath: link), current == target { return }
        let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let temporary = models.appendingPathComponent(".\(name).safetensors.tmp-\(getpid())-\(suffix)").path
        guard symlink(target, temporary) == 0 else {
            throw InteropError.writeFailed(path: link, reason: "cannot create a symbolic link in \(models.path) (\(String(cString: strerror(errno))))")
        }
        guard rename(temporary, link) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw InteropError.writeFailed(path: link, reason: "cannot rename the new link into place (\(reason))")
        }
    }
}
