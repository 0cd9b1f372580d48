import Foundation
import XCTest
@testable import Cohort

final class DataTests: XCTestCase {
    // MARK: IDX

    private func writeIDX(_ path: String, dimensions: [Int], bytes: [UInt8], magic: UInt8 = 0x08) {
        var data: [UInt8] = [0, 0, magic, UInt8(dimensions.count)]
        for dimension in dimensions { data += [24, 16, 8, 0].map { UInt8((dimension >> $0) & 0xFF) } }
        _ = FileManager.default.createFile(atPath: path, contents: Data(data + bytes))
    }

    /// `layout = "NTC"`: [N, T, D] features are sequences of T vectors, read as [T, D] samples
    /// (not one-channel images), standardized per feature, and an LSTM trains on them.
    func test_sequencesOfVectorsAreReadAsTByD() throws {
        let directory = try temporaryDirectory(self)
        let path = "\(directory)/sequences.h5"
        let (rows, length, width) = (40, 3, 2)
        let values = (0..<(rows * length * width)).map { Float($0 % 7) + Float($0 % width) * 10 }
        do {
            let file = try HDF5File.create(path)
            try file.write("features", values, shape: [rows, length, width])
            try file.write("labels", (0..<rows).map { Int64($0 % 2) }, shape: [rows])
            try file.setAttribute("layout", "NTC")
            try file.setAttribute("mean", [3.0, 13.0])
            try file.setAttribute("std", [2.0, 4.0])
        }
        let data = try LabeledData(path: path, featuresName: "features", labelsName: "labels", normalization: .standardize, cache: true)
        XCTAssertEqual(data.sampleShape, [length, width])
        var x = [Float](repeating: 0, count: 2 * length * width)
        var y = [Int32](repeating: 0, count: 2)
        try data.load(rows: [1, 0][...], x: &x, y: &y)
        let second = (0..<(length * width)).map { index -> Float in
            let raw = values[length * width + index]
            return index % width == 0 ? (raw - 3) / 2 : (raw - 13) / 4
        }
        XCTAssertEqual(Array(x[0..<(length * width)]), second, "row 1, position-major, each feature with its own mean and std")
        XCTAssertEqual(y, [1, 0])

        try """
        name: sequences
        run_dir: \(directory)/run
        data: {train: \(path), features: features, normalize: standardize}
        model:
          layers:
            - {type: lstm, hidden: 4, return_sequences: false}
            - {type: dense, units: 2}
        training: {epochs: 1, batch_size: 8, max_steps: 3}
        """.write(toFile: "\(directory)/c.yaml", atomically: true, encoding: .utf8)
        let run = try runCohort(ranks: 2, ["train", "\(directory)/c.yaml"], directory: directory)
        XCTAssertEqual(run.status, 0, run.error)
        XCTAssertTrue(run.output.contains("-> [4]"), run.output)

        let bad = "\(directory)/bad-layout.h5"
        do {
            let file = try HDF5File.create(bad)
            try file.write("features", values, shape: [rows, length, width])
            try file.write("labels", (0..<rows).map { Int64($0 % 2) }, shape: [rows])
            try file.setAttribute("layout", "TNC")
        }
        XCTAssertThrowsError(try LabeledData(path: bad, featuresName: "features", labelsName: "labels", normalization: .none, cache: false)) {
            XCTAssertTrue("\($0)".contains("layout 'TNC' is not one of NHWC, NCHW, NTC"), "\($0)")
        }
    }

    func test_idxPairBecomesHDF5WithLayoutAndAttributes() throws {
        let directory = try temporaryDirectory(self)
        writeIDX("\(directory)/images", dimensions: [3, 2, 2], bytes: Array(0..<12))
        writeIDX("\(directory)/labels", dimensions: [3], bytes: [2, 0, 1])
        let set = try FashionMNIST.readIDXPair(images: "\(directory)/images", labels: "\(directory)/labels",
                                               classNames: ["a", "b", "c"], source: "test")
        try set.write(to: "\(directory)/out.h5")
        let file = try HDF5File.open("\(directory)/out.h5")
        let (images, shape): ([UInt8], [Int]) = try file.read("images")
        XCTAssertEqual(shape, [3, 2, 2, 1])
        XCTAssertEqual(images, Array(0..<12))
        XCTAssertEqual(try file.read("labels", as: Int64.self).values, [2, 0, 1])
        XCTAssertEqual(try file.stringsAttribute("class_names"), ["a", "b", "c"])
        XCTAssertEqual(try file.stringAttribute("layout"), "NHWC")
        XCTAssertNotNil(try file.dataset("images").chunkShape)
    }

    func test_truncatedIDXIsRefusedWithCounts() throws {
        let directory = try temporaryDirectory(self)
        writeIDX("\(directory)/images", dimensions: [3, 2, 2], bytes: Array(0..<10))
        XCTAssertThrowsError(try IDXArray.read(path: "\(directory)/images")) { error in
            XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
            XCTAssertTrue("\(error)".contains("12 bytes"), "\(error)")
        }
    }

    func test_wrongMagicIsRefused() throws {
        let directory = try temporaryDirectory(self)
        writeIDX("\(directory)/images", dimensions: [1], bytes: [0], magic: 0x0D)
        XCTAssertThrowsError(try IDXArray.read(path: "\(directory)/images")) { error in
            XCTAssertTrue("\(error)".contains("not unsigned byte"), "\(error)")
        }
        _ = FileManager.default.createFile(atPath: "\(directory)/text", contents: Data("hello world".utf8))
        XCTAssertThrowsError(try IDXArray.read(path: "\(directory)/text")) { error in
            XCTAssertTrue("\(error)".contains("not an IDX file"), "\(error)")
        }
    }

    // MARK: Reading rows

    func test_cachedAndFileReadsGiveTheSameBatchInRequestedOrder() throws {
        let directory = try temporaryDirectory(self)
        let path = try writeSyntheticDataset("\(directory)/d.h5", rows: 40, height: 3, width: 2, channels: 2)
        let cached = try LabeledData(path: path, featuresName: "images", labelsName: "labels", normalization: .scale, cache: true)
        let direct = try LabeledData(path: path, featuresName: "images", labelsName: "labels", normalization: .scale, cache: false)
        direct.readLog = []
        XCTAssertEqual(cached.sampleShape, [2, 3, 2])
        let rows = [17, 3, 4, 39, 0]
        var (x1, x2) = ([Float](repeating: 0, count: 5 * 12), [Float](repeating: 0, count: 5 * 12))
        var (y1, y2) = ([Int32](repeating: 0, count: 5), [Int32](repeating: 0, count: 5))
        try cached.load(rows: rows[...], x: &x1, y: &y1)
        try direct.load(rows: rows[...], x: &x2, y: &y2)
        XCTAssertEqual(x1, x2)
        XCTAssertEqual(y1, y2)
        XCTAssertEqual(direct.readLog, rows.sorted())
        // NHWC → NCHW: sample 17's channel 1, pixel 0 is byte 1 of the stored row.
        let stored: [UInt8] = try HDF5File.open(path).read("images").values
        XCTAssertEqual(x1[6], Float(stored[17 * 12 + 1]) / 255, accuracy: 1e-6)
    }

    func test_labelOutsideTheClassRangeIsRefused() throws {
        let directory = try temporaryDirectory(self)
        let file = try HDF5File.create("\(directory)/bad.h5")
        try file.write("images", [UInt8](repeating: 0, count: 8), shape: [2, 4])
        try file.write("labels", [Int64(0), 5], shape: [2])
        try file.setAttribute("num_classes", [Int64(3)])
        try file.flush()
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/bad.h5", featuresName: "images", labelsName: "labels",
                                             normalization: .scale, cache: true)) { error in
            XCTAssertTrue("\(error)".contains("row 1 has label 5, outside [0, 3)"), "\(error)")
            XCTAssertTrue("\(error)".contains("bad.h5"), "\(error)")
        }
    }

    func test_missingDatasetAndRowMismatchAreNamed() throws {
        let directory = try temporaryDirectory(self)
        let file = try HDF5File.create("\(directory)/bad.h5")
        try file.write("images", [Float](repeating: 0, count: 8), shape: [2, 4])
        try file.write("labels", [Int64(0), 1, 1], shape: [3])
        try file.flush()
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/bad.h5", featuresName: "pixels", labelsName: "labels",
                                             normalization: .scale, cache: true)) { error in
            XCTAssertTrue("\(error)".contains("no dataset 'pixels'"), "\(error)")
        }
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/bad.h5", featuresName: "images", labelsName: "labels",
                                             normalization: .scale, cache: true)) { error in
            XCTAssertTrue("\(error)".contains("2 rows but 'labels' has 3"), "\(error)")
        }
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/none.h5", featuresName: "images", labelsName: "labels",
                                             normalization: .scale, cache: true)) { error in
            XCTAssertTrue("\(error)".contains("none.h5: no such file"), "\(error)")
        }
    }

    func test_nonFiniteFeaturesAreRefused() throws {
        let directory = try temporaryDirectory(self)
        let file = try HDF5File.create("\(directory)/nan.h5")
        try file.write("images", [0, 1, .nan, 3] as [Float], shape: [2, 2])
        try file.write("labels", [Int64(0), 1], shape: [2])
        try file.flush()
        XCTAssertThrowsError(try LabeledData(path: "\(directory)/nan.h5", featuresName: "images", labelsName: "labels",
                                             normalization: .none, cache: true)) { error in
            XCTAssertTrue("\(error)".contains("row 1 holds a NaN"), "\(error)")
        }
    }
}
