/// Every failure a user can cause or meet ends up as one of these: a message that names
/// the file, key or rank at fault, thrown up to the command line, printed once, exit non-zero.
public struct CohortError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An error every rank has agreed on (through a collective), so the job can end cleanly
/// instead of aborting; only the `reporter` rank prints it.
public struct AgreedFailure: Error {
    public let message: String
    public let reporter: Bool
    public init(_ message: String, reporter: Bool) {
        self.message = message
        self.reporter = reporter
    }
}
