import Foundation

/// Locates files under the test target's copied `Resources` folder, and makes
/// scratch directories for tests that write files.
enum TestResources {
    /// The URL of `Resources/<relativePath>`, e.g. `url("interop/feat_v1.npy")`.
    static func url(_ relativePath: String) -> URL {
        guard let root = Bundle.module.url(forResource: "Resources", withExtension: nil) else {
            fatalError("the test bundle has no Resources folder")
        }
        return root.appendingPathComponent(relativePath)
    }

    /// A new, empty directory under the system temporary directory.
    static func scratchDirectory(_ label: String = "test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("speechain-\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
