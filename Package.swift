// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "speechain-mpi",
    products: [
        .executable(name: "speechain-mpi", targets: ["speechain-mpi"]),
        .library(name: "SpeechainMPI", targets: ["SpeechainMPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // The speech path's C libraries (Debian packages; scripts/setup.sh installs them).
        .systemLibrary(name: "CFFTW", path: "Sources/CFFTW", pkgConfig: "fftw3f", providers: [.apt(["libfftw3-dev"])]),
        .systemLibrary(name: "CSndFile", path: "Sources/CSndFile", pkgConfig: "sndfile", providers: [.apt(["libsndfile1-dev"])]),
        .systemLibrary(name: "CSoxr", path: "Sources/CSoxr", pkgConfig: "soxr", providers: [.apt(["libsoxr-dev"])]),
        // SentencePiece is C++: a small C face compiled here, linked against Debian's libsentencepiece.
        .target(name: "CSentencePiece", path: "Sources/CSentencePiece",
                linkerSettings: [.linkedLibrary("sentencepiece"), .linkedLibrary("stdc++")]),
        // Float16/bfloat16 rounding kernels, dispatched at run time between F16C/AVX2 and portable code.
        .target(name: "CKernels", path: "Sources/CKernels"),
        .target(
            name: "SpeechainMPI",
            dependencies: [
                "CMPI", "COpenBLAS", "CKernels", "CFFTW", "CSndFile", "CSoxr", "CSentencePiece",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                // TensorBoard event records (Runner/TensorBoard; the .proto lives in scripts/proto).
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "speechain-mpi",
            dependencies: [
                "SpeechainMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Counts the heap allocations of a thread, so a test can prove the training step allocates nothing.
        .target(name: "MallocCounter", path: "Tests/MallocCounter"),
        .testTarget(
            name: "SpeechainMPITests",
            dependencies: ["SpeechainMPI", "MallocCounter"],
            resources: [.copy("Resources")]
        ),
    ],
    swiftLanguageModes: [.v5]
)
