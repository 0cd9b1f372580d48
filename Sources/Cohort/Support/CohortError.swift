/// Every failure a user can cause or meet ends up as one of these: a message that names
/// the file, key or rank at fault, thrown up to the command line, printed once, exit non-zero.
public struct CohortError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Thrown on the ranks that agreed to stop because another rank (which reports it) failed.
public struct AgreedStop: Error {
    public init() {}
}
