import CCohort
import Foundation

/// Everything needed to continue a run exactly where it stopped, as one HDF5 file.
///
/// Layout (format version 1; h5dump -H shows it):
///   /parameters/<layer>/<parameter>           float32, the parameter's true shape
///   /optimizer/<slot>/<layer>/<parameter>     float32, e.g. adam_m, adam_v, momentum
///   /state/<name>                             uint64 words: generators and other counters
///   /metrics/<name>                           float64, one value per finished epoch
///   root attributes: format = "cohort-checkpoint", format_version, config (the resolved YAML),
///   epoch, step_in_epoch, global_step, optimizer_steps, world_size, batch_size, samples_seen,
///   datasets (every dataset path, in checksum order), checksum_crc32.
/// The checksum is CRC-32 over every dataset's path and bytes in the listed order; a file whose
/// checksum does not match is refused.
public struct Checkpoint {
    /// 2: the checksum also covers the attributes restore reads (config, position, world size, batch size).
    public static let formatVersion: Int64 = 2

    public struct Position: Equatable, Sendable {
        /// The epoch in progress (0-based) and the next step inside it.
        public var epoch: Int
        public var stepInEpoch: Int
        /// Optimizer steps taken since the start of the run.
        public var globalStep: Int
        public var samplesSeen: Int
        public init(epoch: Int, stepInEpoch: Int, globalStep: Int, samplesSeen: Int) {
            (self.epoch, self.stepInEpoch, self.globalStep, self.samplesSeen) = (epoch, stepInEpoch, globalStep, samplesSeen)
        }
    }

    public var position: Position
    public var worldSize: Int
    public var batchSize: Int
    public var optimizerSteps: Int
    public var config: String
    /// The training data's fingerprint (`SampleSource.fingerprint`), when the trainer wrote it.
    public var dataFingerprint: String? = nil
    /// The training file's class names, or a language model's vocabulary and its tokenizer.
    public var classNames: [String]? = nil
    public var tokenizer: String? = nil
    /// A byte-level BPE's merges, so that generation encodes prompts from the checkpoint alone.
    public var merges: [String]? = nil
    /// An imported model's Hugging Face `tokenizer.json` (BERT's WordPiece), so that `cohort
    /// embed` and the export need nothing beside the checkpoint: the dataset `tokenizer/json`,
    /// its UTF-8 bytes.
    public var tokenizerJSON: String? = nil
    /// Absolute paths of the training and test files (`train=…`, `test=…`), so that a checkpoint
    /// evaluated from another directory still finds its data.
    public var dataFiles: [String]? = nil
    /// The shape of one sample as the model reads it ([C, H, W] for images, [T] for token
    /// windows, [T, D] or [D]), how the data file lays it out, and the loss it was trained with
    /// (`softmax_cross_entropy`, `binary_cross_entropy`, `mean_squared_error`).
    public var inputShape: [Int]? = nil
    public var inputLayout: String? = nil
    /// The factor raw feature values are multiplied by before standardization (1/255 for uint8
    /// pixels under `normalize: scale` or `standardize`, else 1).
    public var inputScale: Double? = nil
    public var loss: String? = nil
    /// name → (shape, values) for /parameters and /optimizer.
    public var tensors: [String: (shape: [Int], values: [Float])] = [:]
    /// More tensors to write, read in place from memory the caller keeps alive and unchanged
    /// until the write returns (a trainer's parameters and moments: no copy of the model state
    /// while rank 0 writes). Written and checksummed exactly as `tensors`; reading gives `tensors`.
    public var views: [String: (shape: [Int], values: UnsafeBufferPointer<Float>)] = [:]
    /// Parts of views in memory that other processes share and that this one reads only to
    /// write them (the other ranks' slices of a node's shared optimizer moments): once a view
    /// is written, these parts' whole pages are dropped from this process's mappings
    /// (`madvise(MADV_DONTNEED)`; the shared memory keeps its contents), so writing a
    /// checkpoint does not leave the node's whole state resident in rank 0. Never private memory,
    /// which the call would zero.
    public var sharedPartsToUnmap: [String: [UnsafeBufferPointer<Float>]] = [:]
    public var words: [String: [UInt64]] = [:]
    public var metrics: [String: [Double]] = [:]

    public init(position: Position, worldSize: Int, batchSize: Int, optimizerSteps: Int, config: String) {
        self.position = position
        self.worldSize = worldSize
        self.batchSize = batchSize
        self.optimizerSteps = optimizerSteps
        self.config = config
    }

    // MARK: Writing

    /// Writes to a temporary file beside `path`, flushes it to disk, then renames it over
    /// `path`: a crash or a full disk at any moment leaves the previous file as it was.
    /// Creates the checkpoint directory and proves it writable before training starts, so that a
    /// read-only or full file system is found before the first step, not at the first checkpoint.
    public static func prepareDirectory(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw CohortError("\(directory): is a file, not a directory for checkpoints")
        }
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw CohortError("\(directory): cannot create the checkpoint directory: \(String(cString: strerror(errno)))")
        }
        let probe = "\(directory)/.write-probe-\(getpid())"
        let descriptor = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw CohortError("\(directory): cannot write checkpoints there: \(String(cString: strerror(errno)))")
        }
        close(descriptor)
        unlink(probe)
    }

    /// Removes the temporary files (`.NAME.tmp-PID`) that writers killed before their rename left
    /// in `directory`: only those whose process no longer exists. Returns the removed paths.
    public static func removeStaleTemporaries(in directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var removed: [String] = []
        for name in names where name.hasPrefix(".") && name.contains(".h5.tmp-") {
            guard let pid = Int32(name.split(separator: "-").last ?? ""), pid > 0 else { continue }
            if kill(pid, 0) == 0 || errno != ESRCH { continue }  // alive, or not ours to judge
            if unlink("\(directory)/\(name)") == 0 { removed.append("\(directory)/\(name)") }
        }
        return removed
    }

    public func writeAtomically(to path: String, crashForTesting: Bool = false) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let temporary = "\(directory)/.\(URL(fileURLWithPath: path).lastPathComponent).tmp-\(getpid())"
        try checkSpace(in: directory, for: path)
        do {
            try write(toTemporary: temporary)
            if crashForTesting {
                // A kill between writing and renaming: what a preempted rank 0 leaves behind.
                truncate(temporary, 4096)
                kill(getpid(), SIGKILL)
            }
            try replaceItem(at: path, with: temporary)
            try? syncFile(directory)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Bytes of the datasets and the config.
    var datasetBytes: Int {
        let floats = tensors.values.reduce(0) { $0 + $1.values.count } + views.values.reduce(0) { $0 + $1.values.count }
        return floats * 4 + words.values.reduce(0) { $0 + $1.count * 8 } + metrics.values.reduce(0) { $0 + $1.count * 8 } + config.utf8.count
    }

    /// `datasetBytes` and a margin for HDF5's metadata and the attributes (W1's Adam checkpoint:
    /// 2,853,656 bytes for 2.82 MB of datasets).
    var estimatedBytes: Int { datasetBytes + datasetBytes / 100 + (64 << 10) }

    /// Refuses, before anything is written, a checkpoint that the file system has no room for.
    private func checkSpace(in directory: String, for path: String) throws {
        var status = statvfs()
        guard statvfs(directory, &status) == 0 else { return }  // no figure: the write itself will say
        let free = Int(status.f_bavail) * Int(status.f_frsize)
        guard estimatedBytes > free else { return }
        throw CohortError(String(format: "%@: not enough space in %@ for the checkpoint (about %.1f MB, %.1f MB free); the newest checkpoint is kept",
                                 path, directory, Double(estimatedBytes) / 1e6, Double(free) / 1e6))
    }

    /// Drops the pages wholly inside `part` from this process's page tables (shared memory only).
    private static func unmapWholePages(of part: UnsafeBufferPointer<Float>) {
        guard let base = part.baseAddress, part.count > 0 else { return }
        let page = Int(getpagesize())
        let start = (Int(bitPattern: base) + page - 1) / page * page
        let end = (Int(bitPattern: base + part.count)) / page * page
        guard end > start, let address = UnsafeMutableRawPointer(bitPattern: start) else { return }
        madvise(address, end - start, Int32(MADV_DONTNEED))
    }

    private func write(toTemporary path: String) throws {
        let file = try HDF5File.create(path)
        var checksum = CRC32()
        var names: [String] = []
        // Every dataset is written and added to the checksum the same way, in a fixed order.
        func store<T: HDF5Scalar>(_ path: String, _ buffer: UnsafeBufferPointer<T>, shape: [Int]) throws {
            try file.write(path, buffer, shape: shape)
            checksum.update(name: path, bytes: UnsafeRawBufferPointer(buffer))
            names.append(path)
        }
        func store<T: HDF5Scalar>(_ path: String, _ values: [T], shape: [Int]) throws {
            try values.withUnsafeBufferPointer { try store(path, $0, shape: shape) }
        }
        for name in Set(tensors.keys).union(views.keys).sorted() {
            if let view = views[name] {
                try store(name, view.values, shape: view.shape)
                sharedPartsToUnmap[name]?.forEach(Checkpoint.unmapWholePages)
            } else if let tensor = tensors[name] {
                try store(name, tensor.values, shape: tensor.shape)
            }
        }
        for name in words.keys.sorted() { try store(CheckpointSchema.statePrefix + name, words[name]!, shape: [words[name]!.count]) }
        if let tokenizerJSON { try store(CheckpointSchema.tokenizerJSON, Array(tokenizerJSON.utf8), shape: [tokenizerJSON.utf8.count]) }
        for name in metrics.keys.sorted() { try store(CheckpointSchema.metricsPrefix + name, metrics[name]!, shape: [metrics[name]!.count]) }
        try file.setAttribute("format", "cohort-checkpoint")
        try file.setAttribute("format_version", [Checkpoint.formatVersion])
        try file.setAttribute("config", config)
        try file.setAttribute("epoch", [Int64(position.epoch)])
        try file.setAttribute("step_in_epoch", [Int64(position.stepInEpoch)])
        try file.setAttribute("global_step", [Int64(position.globalStep)])
        try file.setAttribute("samples_seen", [Int64(position.samplesSeen)])
        try file.setAttribute("optimizer_steps", [Int64(optimizerSteps)])
        try file.setAttribute("world_size", [Int64(worldSize)])
        try file.setAttribute("batch_size", [Int64(batchSize)])
        try file.setAttribute("datasets", names)
        if let dataFingerprint { try file.setAttribute("data_fingerprint", dataFingerprint) }
        if let classNames { try file.setAttribute("class_names", classNames) }
        if let tokenizer { try file.setAttribute("tokenizer", tokenizer) }
        if let merges { try file.setAttribute("merges", merges) }
        if let dataFiles { try file.setAttribute("data_files", dataFiles) }
        if let inputShape { try file.setAttribute("input_shape", inputShape.map(Int64.init)) }
        if let inputLayout { try file.setAttribute("input_layout", inputLayout) }
        if let inputScale { try file.setAttribute("input_scale", [inputScale]) }
        if let loss { try file.setAttribute("loss", loss) }
        checksum.update(attributes: attributeText())
        try file.setAttribute("checksum_crc32", [Int64(checksum.value)])
        try file.flush()
        file.close()
    }

    /// The attributes a resume depends on, as the text the checksum covers after the datasets.
    func attributeText(version: Int64 = Checkpoint.formatVersion) -> String {
        "format_version=\(version)\nepoch=\(position.epoch)\nstep_in_epoch=\(position.stepInEpoch)\nglobal_step=\(position.globalStep)\n"
            + "samples_seen=\(position.samplesSeen)\noptimizer_steps=\(optimizerSteps)\nworld_size=\(worldSize)\nbatch_size=\(batchSize)\nconfig=\(config)"
            + (dataFingerprint.map { "\ndata_fingerprint=\($0)" } ?? "")
            + (classNames.map { "\nclass_names=" + $0.joined(separator: "\u{1F}") } ?? "")
            + (tokenizer.map { "\ntokenizer=\($0)" } ?? "")
            + (merges.map { "\nmerges=" + $0.joined(separator: "\u{1F}") } ?? "")
            + (dataFiles.map { "\ndata_files=" + $0.joined(separator: "\u{1F}") } ?? "")
            + (inputShape.map { "\ninput_shape=" + $0.map(String.init).joined(separator: ",") } ?? "")
            + (inputLayout.map { "\ninput_layout=\($0)" } ?? "")
            + (inputScale.map { "\ninput_scale=\($0)" } ?? "")
            + (loss.map { "\nloss=\($0)" } ?? "")
    }

    // MARK: Reading

    /// Reads and verifies a checkpoint: format, version and checksum.
    public static func read(from path: String) throws -> Checkpoint {
        let file = try HDF5File.open(path)
        guard (try? file.stringAttribute("format")) == "cohort-checkpoint" else {
            throw CohortError("\(path): not a Cohort checkpoint (no format attribute)")
        }
        let version = try file.numberAttribute("format_version", as: Int64.self).first ?? 0
        guard version <= formatVersion else {
            throw CohortError("\(path): checkpoint format version \(version) is newer than this Cohort reads (\(formatVersion)); upgrade Cohort")
        }
        func integer(_ name: String) throws -> Int {
            guard let value = try file.numberAttribute(name, as: Int64.self).first else {
                throw CohortError("\(path): attribute \(name) is empty")
            }
            return Int(value)
        }
        var checkpoint = Checkpoint(
            position: Position(epoch: try integer("epoch"), stepInEpoch: try integer("step_in_epoch"),
                               globalStep: try integer("global_step"), samplesSeen: try integer("samples_seen")),
            worldSize: try integer("world_size"),
            batchSize: try integer("batch_size"),
            optimizerSteps: try integer("optimizer_steps"),
            config: try file.stringAttribute("config")
        )
        if file.hasAttribute("data_fingerprint") { checkpoint.dataFingerprint = try file.stringAttribute("data_fingerprint") }
        if file.hasAttribute("class_names") { checkpoint.classNames = try file.stringsAttribute("class_names") }
        if file.hasAttribute("tokenizer") { checkpoint.tokenizer = try file.stringAttribute("tokenizer") }
        if file.hasAttribute("merges") { checkpoint.merges = try file.stringsAttribute("merges") }
        if file.hasAttribute("data_files") { checkpoint.dataFiles = try file.stringsAttribute("data_files") }
        if file.hasAttribute("input_shape") { checkpoint.inputShape = try file.numberAttribute("input_shape", as: Int64.self).map { Int($0) } }
        if file.hasAttribute("input_layout") { checkpoint.inputLayout = try file.stringAttribute("input_layout") }
        if file.hasAttribute("input_scale") { checkpoint.inputScale = try file.numberAttribute("input_scale", as: Double.self).first }
        if file.hasAttribute("loss") { checkpoint.loss = try file.stringAttribute("loss") }
        var checksum = CRC32()
        for name in try file.stringsAttribute("datasets") {
            guard file.exists(name) else { throw CohortError("\(path): dataset \(name) is missing (truncated or damaged file)") }
            if name.hasPrefix(CheckpointSchema.statePrefix) {
                let values: [UInt64] = try file.read(name).values
                values.withUnsafeBytes { checksum.update(name: name, bytes: $0) }
                checkpoint.words[String(name.dropFirst(CheckpointSchema.statePrefix.count))] = values
            } else if name == CheckpointSchema.tokenizerJSON {
                let bytes: [UInt8] = try file.read(name).values
                bytes.withUnsafeBytes { checksum.update(name: name, bytes: $0) }
                checkpoint.tokenizerJSON = String(decoding: bytes, as: UTF8.self)
            } else if name.hasPrefix(CheckpointSchema.metricsPrefix) {
                let values: [Double] = try file.read(name).values
                values.withUnsafeBytes { checksum.update(name: name, bytes: $0) }
                checkpoint.metrics[String(name.dropFirst(CheckpointSchema.metricsPrefix.count))] = values
            } else {
                let (values, shape): ([Float], [Int]) = try file.read(name)
                values.withUnsafeBytes { checksum.update(name: name, bytes: $0) }
                checkpoint.tensors[name] = (shape, values)
            }
        }
        // Version 1 files (before the attributes were covered) are still read.
        if version >= 2 { checksum.update(attributes: checkpoint.attributeText(version: version)) }
        let stored = try integer("checksum_crc32")
        guard stored == Int(checksum.value) else {
            throw CohortError("\(path): checksum mismatch (stored \(stored), computed \(checksum.value)); the file is damaged")
        }
        return checkpoint
    }
}

