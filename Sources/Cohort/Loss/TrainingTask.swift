/// What a run learns, read once from its training data and loss: the one value that tells a
/// language model from a classifier from a regression. The trainer, evaluation and the command
/// line ask it (its output shape, whether it has an accuracy, its unit, its report) instead of
/// testing the data's type; each rule about a task's shape is written here once.
public enum TrainingTask: Equatable, Sendable {
    /// One class label per row: `outputs` logits (one for binary cross-entropy) over `classes`.
    case classification(classes: Int, outputs: Int)
    /// One class label per token sequence (a text through a published encoder).
    case sequenceClassification(classes: Int, outputs: Int)
    /// `width` float targets per row (mean squared error).
    case regression(width: Int)
    /// The next token at each of `positions` places of a window over `vocabulary` tokens.
    case languageModel(vocabulary: Int, positions: Int)

    /// The task of `data` under `loss` for `model` (labels of token sequences when its first
    /// layer reads token ids); refuses a loss the data cannot be learned with, naming the file.
    public init(data: any SampleSource, loss: Loss, model: Model? = nil) throws {
        let tokenInput = model?.layers.first is TokenConsumer
        if data is TokenWindows {
            self = .languageModel(vocabulary: data.classes, positions: data.targetsPerRow)
        } else if data.isRegression {
            guard loss == .meanSquaredError else {
                throw CohortError("\(data.path): it holds float targets (regression); use loss: mean_squared_error")
            }
            self = .regression(width: data.targetWidth)
        } else {
            if loss == .binaryCrossEntropy, data.classes != 2 {
                throw CohortError("\(data.path): binary_cross_entropy needs labels 0 and 1 (2 classes), the file has \(data.classes)")
            }
            let outputs = loss.outputWidth(classes: data.classes)
            self = tokenInput ? .sequenceClassification(classes: data.classes, outputs: outputs)
                : .classification(classes: data.classes, outputs: outputs)
        }
    }

    /// The output shape a model needs for this task: [outputs], or [positions, vocabulary].
    public var outputShape: [Int] {
        switch self {
        case .classification(_, let outputs), .sequenceClassification(_, let outputs): [outputs]
        case .regression(let width): [width]
        case .languageModel(let vocabulary, let positions): positions > 1 ? [positions, vocabulary] : [vocabulary]
        }
    }

    /// Every check of a run's model and files against the task, in the order a user fixes them:
    /// the token ids, the sentence pairs, the output width, the test file, the validation split.
    public func check(_ model: Model, training: any SampleSource, test: (any SampleSource)?, validationSplit: Double) throws {
        try checkTokens(of: model, file: training.path)
        try checkSegments(of: model, data: training)
        try checkOutput(model.outputShape, file: training.path)
        if let test { try checkTest(test, training: training) }
        try checkValidationSplit(validationSplit, file: training.path)
    }

    /// Refuses a model whose last layer does not give `outputShape`, naming `file` and `model`.
    public func checkOutput(_ shape: [Int], file: String, model: String = "the model's last layer") throws {
        guard shape != outputShape else { return }
        switch self {
        case .classification(let classes, _), .sequenceClassification(let classes, _):
            throw CohortError("\(file): has \(classes) classes, so it needs \(outputShape.last ?? 0) outputs, but \(model) gives \(shape)")
        case .regression(let width):
            throw CohortError("\(file): has \(width) target(s) per row, but \(model) gives \(shape)")
        case .languageModel(let vocabulary, _):
            throw CohortError("\(file): its vocabulary has \(vocabulary) tokens, so it needs outputs \(outputShape), but \(model) gives \(shape)")
        }
    }

    /// Refuses a test file that does not hold this task's targets the way the training file does.
    public func checkTest(_ test: any SampleSource, training: any SampleSource) throws {
        switch self {
        case .languageModel:
            guard test.classNames == training.classNames else {
                throw CohortError("\(test.path): its vocabulary (\(test.classes) tokens) differs from \(training.path)'s (\(training.classes)); prepare both with one cohort prepare text")
            }
        case .regression(let width):
            guard test.isRegression, test.targetWidth == width else {
                throw CohortError("\(test.path): its targets are not \(width) float(s) per row like \(training.path)'s")
            }
        case .classification, .sequenceClassification:
            break
        }
    }

    /// A language model's every layer that reads token ids must accept every id of its vocabulary.
    public func checkTokens(of model: Model, file: String) throws {
        guard case .languageModel(let vocabulary, _) = self else { return }
        for case let consumer as TokenConsumer in model.stack.allLayers where consumer.vocabulary != vocabulary {
            throw CohortError("\(file): its vocabulary has \(vocabulary) tokens, but \(consumer.name) has vocabulary \(consumer.vocabulary)")
        }
    }

    /// Sentence pairs need a model that gives their second text token type 1: a data file
    /// with `sep_id` is refused for a `bert_embeddings` without the same `sep_id`.
    public func checkSegments(of model: Model, data: any SampleSource) throws {
        guard case .sequenceClassification = self, let separator = (data as? LabeledData)?.separatorID,
              let embeddings = model.layers.first as? BertEmbeddings, embeddings.options.sepID != separator else { return }
        throw CohortError("\(data.path): holds sentence pairs whose first text ends at id \(separator), but \(embeddings.name) has "
                          + (embeddings.options.sepID.map { "sep_id \($0)" } ?? "no sep_id")
                          + " (import the model with its tokenizer.json, or set sep_id on bert_embeddings)")
    }

    /// Refuses `data.validation_split` where it does not apply (a language model's token file).
    public func checkValidationSplit(_ split: Double, file: String) throws {
        if case .languageModel = self, split > 0 {
            throw CohortError("\(file): validation_split does not apply to token files; cohort prepare text writes val.h5 (data.test)")
        }
    }

    /// Whether the task has an accuracy (a regression has losses only).
    public var hasAccuracy: Bool { if case .regression = self { false } else { true } }
    /// Whether an evaluation ends in a per-class report.
    public var reportsClasses: Bool {
        switch self {
        case .classification, .sequenceClassification: true
        case .regression, .languageModel: false
        }
    }
    /// A language model's recipe is a number of steps, which rarely end an epoch: a run stopped
    /// by `max_steps` evaluates then too.
    public var evaluatesWhenStoppedMidEpoch: Bool { if case .languageModel = self { true } else { false } }
    /// What a training rate counts.
    public var rateUnit: String { if case .languageModel = self { "tokens/s" } else { "samples/s" } }
    /// The number of targets an evaluation of `rows` rows covers.
    public func targets(rows: Int) -> Int { if case .languageModel(_, let positions) = self { rows * positions } else { rows } }
}
