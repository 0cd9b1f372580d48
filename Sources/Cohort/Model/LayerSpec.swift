/// One entry of `model.layers` (keys: configs/README.md): a family's options and an optional
/// name. The same values build models in Swift code:
/// `Model(inputShape: [1, 28, 28], layers: [.conv2d(32, kernel: 3, activation: .relu), .maxPool(2), .flatten, .dense(10)])`.
public struct LayerSpec: Equatable, Sendable {
    public var name: String?
    public var options: any LayerOptions

    public init(name: String? = nil, _ options: some LayerOptions) {
        self.name = name
        self.options = options
    }

    /// The entry's `type`.
    public var type: String { options.typeName }

    public static func == (a: LayerSpec, b: LayerSpec) -> Bool {
        a.name == b.name && a.type == b.type && a.options.yaml == b.options.yaml
    }

    // Keras-like constructors for models written in Swift.
    public static var flatten: LayerSpec { LayerSpec(FlattenOptions()) }
    public static func dense(_ units: Int, activation: ActivationKind? = nil, initializer: Initializer? = nil, bias: Bool = true,
                             name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, DenseOptions(units: units, activation: activation, initializer: initializer, bias: bias))
    }
    public static func conv2d(_ filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .valid,
                              activation: ActivationKind? = nil, initializer: Initializer? = nil, bias: Bool = true,
                              name: String? = nil) -> LayerSpec {
        LayerSpec(name: name, Conv2DOptions(filters: filters, kernel: kernel, stride: stride, padding: padding,
                                            activation: activation, initializer: initializer, bias: bias))
    }
    public static func maxPool(_ size: Int, stride: Int? = nil) -> LayerSpec { LayerSpec(MaxPoolOptions(size: size, stride: stride ?? size)) }
    public static func averagePool(_ size: Int, stride: Int? = nil) -> LayerSpec {
        LayerSpec(AveragePoolOptions(size: size, stride: stride ?? size))
    }
    public static var globalAveragePool: LayerSpec { LayerSpec(GlobalAveragePoolOptions()) }
    public static func dropout(_ rate: Float) -> LayerSpec { LayerSpec(DropoutOptions(rate: rate)) }
    public static func batchNorm(momentum: Float = 0.1, epsilon: Float = 1e-5, sync: Bool = false) -> LayerSpec {
        LayerSpec(BatchNormOptions(momentum: momentum, epsilon: epsilon, sync: sync))
    }
    public static func activation(_ kind: ActivationKind) -> LayerSpec { LayerSpec(ActivationOptions(kind)) }
    public static func residual(_ layers: [LayerSpec], projection: Bool? = nil, activation: ActivationKind? = .relu) -> LayerSpec {
        LayerSpec(ResidualOptions(layers: layers, projection: projection, activation: activation))
    }
}

public enum Padding: String, Sendable {
    /// No padding: output = floor((input − kernel) / stride) + 1.
    case valid
    /// Output = ceil(input / stride), zeros split as TensorFlow does (the extra one at the end).
    case same
}

public enum ActivationKind: Equatable, Sendable, CaseIterable, RawRepresentable {
    case relu
    case leakyRelu(slope: Float)
    case sigmoid
    case tanh
    case gelu
    /// GELU's tanh approximation (GPT-2's `gelu_new`).
    case geluTanh

    public static let allCases: [ActivationKind] = [.relu, .leakyRelu(slope: 0.01), .sigmoid, .tanh, .gelu, .geluTanh]

    public init?(rawValue: String) {
        switch rawValue {
        case "relu": self = .relu
        case "leaky_relu": self = .leakyRelu(slope: 0.01)
        case "sigmoid": self = .sigmoid
        case "tanh": self = .tanh
        case "gelu": self = .gelu
        case "gelu_tanh": self = .geluTanh
        default: return nil
        }
    }

    public var rawValue: String {
        switch self {
        case .relu: return "relu"
        case .leakyRelu: return "leaky_relu"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .gelu: return "gelu"
        case .geluTanh: return "gelu_tanh"
        }
    }
}

public enum Initializer: String, Sendable {
    /// U(-a, a), a = sqrt(6 / (fan_in + fan_out)) — Keras' default for Dense and Conv2D.
    case glorotUniform = "glorot_uniform"
    /// N(0, 2 / fan_in) — He et al. 2015, suited to ReLU.
    case heNormal = "he_normal"
    /// N(0, 0.02²) — GPT-2's and BERT's weights and embeddings (nanoGPT's `_init_weights`).
    case normal = "normal"
}
