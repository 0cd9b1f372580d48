import CCohort
import Foundation

/// One open dataset: its shape and element type, whole reads and reads of chosen rows.
public final class HDF5Dataset {
    public let file: HDF5File
    public let name: String
    public let shape: [Int]
    public let elementType: ElementType
    public let chunkShape: [Int]?
    let id: hid_t

    public enum ElementType: Equatable, CustomStringConvertible, Sendable {
        case integer(bytes: Int, signed: Bool)
        case float(bytes: Int)
        case other(String)

        public var description: String {
            switch self {
            case .integer(let bytes, let signed): return "\(signed ? "int" : "uint")\(bytes * 8)"
            case .float(let bytes): return "float\(bytes * 8)"
            case .other(let name): return name
            }
        }
    }

    init(file: HDF5File, name: String, id: hid_t) throws {
        self.file = file
        self.name = name
        self.id = id
        let space = H5Dget_space(id)
        defer { H5Sclose(space) }
        let rank = Int(H5Sget_simple_extent_ndims(space))
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        var maxDims = [hsize_t](repeating: 0, count: max(rank, 1))
        H5Sget_simple_extent_dims(space, &dims, &maxDims)
        let type = H5Dget_type(id)
        defer { H5Tclose(type) }
        let size = Int(H5Tget_size(type))
        // A damaged header can claim any extent: check it against the maximum dimensions the
        // dataset was created with, and its byte count against what a process could hold,
        // before anything is sized from it.
        if let axis = (0..<rank).first(where: { maxDims[$0] != hsize_t.max && dims[$0] > maxDims[$0] }) {
            H5Dclose(id)
            throw CohortError("\(file.path): dataset '\(name)' claims \(dims[axis]) along axis \(axis), beyond its maximum \(maxDims[axis]); the file is damaged")
        }
        var bytes = hsize_t(max(size, 1))
        for axis in 0..<rank {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dims[axis])
            guard !overflow, product <= 1 << 50 else {
                H5Dclose(id)
                throw CohortError("\(file.path): dataset '\(name)' claims shape \(dims.prefix(rank).map { $0 }) (over 1 PiB); the file is damaged")
            }
            bytes = product
        }
        shape = rank == 0 ? [] : dims.prefix(rank).map { Int($0) }
        switch H5Tget_class(type) {
        case H5T_INTEGER: elementType = .integer(bytes: size, signed: H5Tget_sign(type) == H5T_SGN_2)
        case H5T_FLOAT: elementType = .float(bytes: size)
        case H5T_STRING: elementType = .other("string")
        case H5T_COMPOUND: elementType = .other("compound")
        default: elementType = .other("unsupported")
        }
        let properties = H5Dget_create_plist(id)
        defer { H5Pclose(properties) }
        if H5Pget_layout(properties) == H5D_CHUNKED {
            var chunk = [hsize_t](repeating: 0, count: max(rank, 1))
            H5Pget_chunk(properties, Int32(rank), &chunk)
            chunkShape = chunk.prefix(rank).map { Int($0) }
        } else {
            chunkShape = nil
        }
    }

    deinit { H5Dclose(id) }

    /// Where a contiguous dataset's bytes start in the file (nil when chunked or unallocated).
    public var fileOffset: Int? {
        let offset = H5Dget_offset(id)
        return offset == UInt64.max ? nil : Int(offset)
    }

    public var rows: Int { shape.first ?? 1 }
    /// Elements in one row (the product of all axes after the first).
    public var rowElements: Int { shape.dropFirst().reduce(1, *) }
    public var isNumeric: Bool {
        if case .other = elementType { return false }
        return true
    }

    public func readAll<T: HDF5Scalar>(as: T.Type = T.self) throws -> [T] {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        silenceThisThread()
        let count = shape.reduce(1, *)
        var values = [T](repeating: T.zero, count: count)
        if count > 0 {
            try values.withUnsafeMutableBufferPointer { buffer in
                guard H5Dread(id, T.hdf5Type, cohort_h5s_all(), cohort_h5s_all(), cohort_h5p_default(), buffer.baseAddress) >= 0 else {
                    throw CohortError("\(file.path): cannot read dataset '\(name)' as \(T.self)")
                }
            }
        }
        return values
    }

    /// Reads rows `start..<start+count` into `destination` (count × rowElements values).
    public func readRows<T: HDF5Scalar>(start: Int, count: Int, into destination: UnsafeMutablePointer<T>) throws {
        try readSelection(rowRuns: [(start, count)], totalRows: count, into: destination)
    }

    /// Reads the given rows, in ascending order of row index, into `destination`.
    /// Consecutive rows are merged into one hyperslab block, so a shard's contiguous runs
    /// cost one selection each; the rows must be sorted and distinct.
    public func readRows<T: HDF5Scalar>(sorted rows: [Int], into destination: UnsafeMutablePointer<T>) throws {
        var runs: [(Int, Int)] = []
        for row in rows {
            if let last = runs.last, last.0 + last.1 == row {
                runs[runs.count - 1].1 += 1
            } else {
                runs.append((row, 1))
            }
        }
        try readSelection(rowRuns: runs, totalRows: rows.count, into: destination)
    }

    /// Where the chunk that starts at `row` is stored in the file (byte offset and size), or nil
    /// when the dataset is not chunked or has no such chunk.
    func chunkLocation(row: Int) -> (offset: Int, size: Int)? {
        var start = [hsize_t](repeating: 0, count: shape.count)
        start[0] = hsize_t(row)
        var (mask, address, size): (UInt32, haddr_t, hsize_t) = (0, 0, 0)
        guard H5Dget_chunk_info_by_coord(id, &start, &mask, &address, &size) >= 0, size > 0 else { return nil }
        return (Int(address), Int(size))
    }

    private func readSelection<T: HDF5Scalar>(rowRuns: [(Int, Int)], totalRows: Int, into destination: UnsafeMutablePointer<T>) throws {
        guard totalRows > 0 else { return }
        // HDF5 calls go one at a time, whichever thread makes them (the prefetch thread reads
        // training rows while the main thread may evaluate).
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        silenceThisThread()
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        let rank = shape.count
        var count = shape.map { hsize_t($0) }
        var start = [hsize_t](repeating: 0, count: rank)
        for (index, run) in rowRuns.enumerated() {
            guard run.0 >= 0, run.0 + run.1 <= rows else {
                throw CohortError("\(file.path): rows \(run.0)..<\(run.0 + run.1) are outside dataset '\(name)' of \(rows) rows")
            }
            start[0] = hsize_t(run.0)
            count[0] = hsize_t(run.1)
            H5Sselect_hyperslab(fileSpace, index == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, &start, nil, &count, nil)
        }
        var memoryDims = shape.map { hsize_t($0) }
        memoryDims[0] = hsize_t(totalRows)
        let memorySpace = H5Screate_simple(Int32(rank), &memoryDims, nil)
        defer { H5Sclose(memorySpace) }
        guard H5Dread(id, T.hdf5Type, memorySpace, fileSpace, cohort_h5p_default(), destination) >= 0 else {
            throw CohortError("\(file.path): cannot read \(unreadableRows(of: rowRuns, into: destination)) of dataset '\(name)' (damaged or truncated file, or an I/O error)")
        }
    }

    /// After a failed read: the first run of rows that does not read on its own, named for the
    /// error ("rows 30720..<30784"); the failed read's runs when each reads alone.
    private func unreadableRows<T: HDF5Scalar>(of rowRuns: [(Int, Int)], into scratch: UnsafeMutablePointer<T>) -> String {
        func name(_ run: (Int, Int)) -> String { run.1 == 1 ? "row \(run.0)" : "rows \(run.0)..<\(run.0 + run.1)" }
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        var count = shape.map { hsize_t($0) }
        var start = [hsize_t](repeating: 0, count: shape.count)
        for run in rowRuns {
            (start[0], count[0]) = (hsize_t(run.0), hsize_t(run.1))
            H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &count, nil)
            let memorySpace = H5Screate_simple(Int32(shape.count), &count, nil)
            defer { H5Sclose(memorySpace) }
            if H5Dread(id, T.hdf5Type, memorySpace, fileSpace, cohort_h5p_default(), scratch) < 0 { return name(run) }
        }
        guard let first = rowRuns.first else { return "rows" }
        return rowRuns.count == 1 ? name(first) : "\(rowRuns.reduce(0) { $0 + $1.1 }) rows in \(rowRuns.count) runs from \(name(first))"
    }
}
