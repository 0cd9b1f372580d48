import Yams

/// One layer family: its YAML keys and defaults, how its layer is built, and a small specimen
/// the registry tests check it on. A new family is one file holding a type that conforms to
/// this (with the layer's forward and backward beside it) plus one line in
/// `LayerRegistry.families`; the config parser, the model builder, `profile` and `summary` find
/// it there, and `LayerRegistryTests` gradient-checks and round-trips every family listed.
public protocol LayerOptions: Sendable {
    /// The `type` of a `model.layers` entry.
    static var type: String { get }
    /// Reads the family's keys. The caller reads `type` and `name` and refuses unread keys.
    init(config: ConfigMap) throws
    /// The family's keys as YAML scalars, to write the entry back (`type` and `name` excluded).
    var yaml: [String: String] { get }
    /// Builds the layer for samples of `inputShape`.
    func makeLayer(name: String, inputShape: [Int], builder: LayerBuilder) throws -> Layer
    /// A small model using the family, and its input, for the registry tests.
    static var specimen: LayerSpecimen { get }
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

/// The layer families that live in a file of their own. (The image families of the first
/// release, `dense` to `residual`, are still cases of `LayerSpec.Kind`; they move here one by one.)
public enum LayerRegistry {
    public static let families: [any LayerOptions.Type] = [
        LayerNormOptions.self,
        EmbeddingOptions.self,
        PositionalEmbeddingOptions.self,
        AttentionOptions.self,
        TransformerBlockOptions.self,
        LanguageModelHeadOptions.self,
        LSTMOptions.self,
    ]

    public static func family(named type: String) -> (any LayerOptions.Type)? {
        families.first { $0.type == type }
    }
}

/// A registered family's options inside a `LayerSpec` (compared by type and keys).
public struct FamilyOptions: Equatable, Sendable {
    public let options: any LayerOptions
    public init(_ options: any LayerOptions) { self.options = options }
    public var type: String { Swift.type(of: options).type }
    public static func == (a: FamilyOptions, b: FamilyOptions) -> Bool { a.type == b.type && a.options.yaml == b.options.yaml }
}

extension LayerSpec {
    /// A layer of a registered family, for models written in Swift.
    public static func family(_ options: some LayerOptions, name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, .family(FamilyOptions(options)))
    }

    /// The entry as a one-line YAML flow mapping (registered families), for writing configs back.
    public var yamlFlow: String? {
        guard case .family(let family) = kind else { return nil }
        var pairs = ["type: \(family.type)"]
        if let name { pairs.append("name: \(name)") }
        pairs += family.options.yaml.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        return "{" + pairs.joined(separator: ", ") + "}"
    }
}

/// How many layers of each type a list of specs holds, residual blocks included: a family can
/// size its initialization by it (GPT-2 scales residual projections by 1/√(2·blocks)).
func typeCounts(_ specs: [LayerSpec]) -> [String: Int] {
    var counts: [String: Int] = [:]
    for spec in specs {
        switch spec.kind {
        case .family(let family): counts[family.type, default: 0] += 1
        case .residual(let layers, _, _): counts.merge(typeCounts(layers), uniquingKeysWith: +)
        default: break
        }
    }
    return counts
}
