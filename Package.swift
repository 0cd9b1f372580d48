// swift-tools-version:6.0
import PackageDescription

// Cohort: data-parallel training over MPI, HDF5 datasets and OpenBLAS kernels.
// The four system libraries are found through pkg-config (Debian's -dev packages);
// CCohort holds the small C wrappers for what Swift cannot import (MPI and HDF5 macros).
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Cohort",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "cohort", targets: ["CohortCLI"]),
        .library(name: "Cohort", targets: ["Cohort"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CHDF5", pkgConfig: "hdf5-serial", providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(
            name: "CCohort",
            dependencies: ["CMPI", "CHDF5", "COpenBLAS", "CZlib"],
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=off", "-fno-builtin-memcpy", "-fno-builtin-memset",
                                      "-fveclib=libmvec"])],
            linkerSettings: [.linkedLibrary("mvec")]
        ),
        .target(
            name: "Cohort",
            dependencies: ["CCohort", .product(name: "Yams", package: "Yams")],
            swiftSettings: optimize
        ),
        .executableTarget(
            name: "CohortCLI",
            dependencies: ["Cohort", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/cohort-cli",
            swiftSettings: optimize
        ),
        // The library driven from Swift with typed configs (docs/guide.md, "Training from Swift").
        .executableTarget(name: "train-fashion-mnist", dependencies: ["Cohort"], path: "Examples/TrainFashionMNIST"),
        .testTarget(name: "CohortTests", dependencies: ["Cohort"]),
    ]
)
