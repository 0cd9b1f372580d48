import Yams

/// One layer family: its YAML keys and defaults, how its layer is built, and a small specimen
/// the registry tests check it on. A new family is one file holding a type that conforms to
/// this (with the layer's forward and backward beside it) plus one line in
/// `LayerRegistry.families`; the config parser, the model builder, `profile` and `summary` find
/// it there, and `LayerRegistryTests` gradient-checks and round-trips every family listed.
public protocol LayerOptions: Sendable {
    /// The `type` of a `model.layers` entry.
    static var type: String { get }
    /// Every `type` the family answers to (the activations share one family); default `[type]`.
    static var types: [String] { get }
    /// This entry's `type` (one of `types`); default `type`.
    var typeName: String { get }
    /// Reads the family's keys. The caller reads `type` and `name` and refuses unread keys.
    init(config: ConfigMap) throws
    /// The family's keys as YAML values, to write the entry back (`type` and `name` excluded).
    var yaml: [String: String] { get }
    /// Builds the layer for samples of `inputShape`.
    func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer
    /// An activation the builder places after the layer, as a layer of its own named
    /// `<layer>/<activation>` (dense and conv2d fuse a ReLU into themselves instead); default none.
    var followingActivation: ActivationKind? { get }
    /// Entries nested inside this one (a residual block's layers); default none.
    var nested: [LayerSpec] { get }
    /// The options of one layer doing the work of this entry and `next` together, when the two
    /// can be fused for samples of `inputShape` (a convolution and the 2×2 max pool after it);
    /// default nil. The fused layer takes this entry's name; `next` keeps its number.
    func fused(with next: LayerSpec, inputShape: [Int], builder: LayerBuilder) -> (any LayerOptions)?
    /// The family's inference form in an ONNX graph, over `x` of per-sample `shape` (the batch
    /// axis first, dynamic); returns the output and its per-sample shape. Default: none, and an
    /// export says so (the registry tests require one of every family).
    func onnx(_ graph: inout OnnxGraph, _ x: String, _ shape: [Int], name: String) throws -> (String, [Int])
    /// A small model using the family, and its input, for the registry tests.
    static var specimen: LayerSpecimen { get }
}

extension LayerOptions {
    public static var types: [String] { [type] }
    public var typeName: String { Self.type }
    public var followingActivation: ActivationKind? { nil }
    public var nested: [LayerSpec] { [] }
    public func fused(with next: LayerSpec, inputShape: [Int], builder: LayerBuilder) -> (any LayerOptions)? { nil }
}

/// What the registry tests build for a family: gradient check, YAML and checkpoint round trip.
public struct LayerSpecimen: Sendable {
    public let layers: [LayerSpec]
    public let inputShape: [Int]
    /// Inputs are token ids below this bound (they have no gradient), or real values when nil.
    public let vocabulary: Int?
    public init(layers: [LayerSpec], inputShape: [Int], vocabulary: Int? = nil) {
        self.layers = layers
        self.inputShape = inputShape
        self.vocabulary = vocabulary
    }
}

/// Every layer family, in the order the config reference lists them.
public enum LayerRegistry {
    public static let families: [any LayerOptions.Type] = [
        FlattenOptions.self,
        DenseOptions.self,
        Conv2DOptions.self,
        MaxPoolOptions.self,
        AveragePoolOptions.self,
        GlobalAveragePoolOptions.self,
        DropoutOptions.self,
        BatchNormOptions.self,
        ActivationOptions.self,
        ResidualOptions.self,
        LayerNormOptions.self,
        EmbeddingOptions.self,
        PositionalEmbeddingOptions.self,
        AttentionOptions.self,
        TransformerBlockOptions.self,
        LanguageModelHeadOptions.self,
        LSTMOptions.self,
        BertEmbeddingsOptions.self,
        EncoderBlockOptions.self,
        SequencePoolOptions.self,
    ]

    /// Every `type` a `model.layers` entry may have.
    public static var typeNames: [String] { families.flatMap { $0.types } }

    public static func family(named type: String) -> (any LayerOptions.Type)? {
        families.first { $0.types.contains(type) }
    }

    /// Reads one `model.layers` entry: its `type` picks the family, which reads its keys.
    static func parse(_ node: Node, file: String, path: String) throws -> LayerSpec {
        let map = try ConfigMap(node, file: file, path: path)
        guard let type = try map.string("type") else { throw CohortError("\(file): \(path): missing key type") }
        guard let family = family(named: type) else {
            throw map.error("type", "unknown layer type '\(type)' (known: \(typeNames.joined(separator: ", ")))")
        }
        let spec = LayerSpec(name: try map.string("name"), try family.init(config: map))
        try map.finish()
        return spec
    }
}

extension ConfigMap {
    /// A required positive count such as `units` or `filters`.
    func required(_ key: String, _ range: ClosedRange<Int> = 1...1_000_000, family: String) throws -> Int {
        guard has(key) else { throw CohortError("\(file): \(path): \(family) needs \(key)") }
        return try int(key, default: 0, range: range)
    }

    /// An optional `activation:` key of a dense or conv2d entry.
    func activation(_ key: String = "activation") throws -> ActivationKind? {
        try string(key).map { value in
            guard let kind = ActivationKind(rawValue: value) else {
                throw error(key, "unknown activation '\(value)' (known: \(ActivationKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return kind
        }
    }

    /// An optional `init:` key naming an initializer.
    func initializer() throws -> Initializer? {
        try string("init").map { value in
            guard let initializer = Initializer(rawValue: value) else {
                throw error("init", "unknown initializer '\(value)' (known: glorot_uniform, he_normal, normal)")
            }
            return initializer
        }
    }
}

extension LayerSpec {
    /// A layer of any family, for models written in Swift.
    public static func family(_ options: some LayerOptions, name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, options)
    }

    /// The entry as a one-line YAML flow mapping, for writing configs back.
    public var yamlFlow: String {
        var pairs = ["type: \(type)"]
        if let name { pairs.append("name: \(name)") }
        pairs += options.yaml.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        return "{" + pairs.joined(separator: ", ") + "}"
    }
}

/// How many layers of each type a list of specs holds, nested entries included: a family can
/// size its initialization by it (GPT-2 scales residual projections by 1/√(2·blocks)).
func typeCounts(_ specs: [LayerSpec]) -> [String: Int] {
    var counts: [String: Int] = [:]
    for spec in specs {
        counts[spec.type, default: 0] += 1
        counts.merge(typeCounts(spec.options.nested), uniquingKeysWith: +)
    }
    return counts
}
