import CCohort
import Foundation

/// A small, safe face over the HDF5 C library: files, groups, datasets of numbers,
/// hyperslab reads of chosen rows, and string/number attributes.
///
/// Every call that can fail throws a `CohortError` naming the file and the object,
/// so a broken or foreign file is a one-line message, never a trap. HDF5's own error
/// stack printing is switched off once, on first use.
public final class HDF5File {
    public let path: String
    private(set) var id: hid_t

    /// Leaves libhdf5 without its exit-time clean-up. Call before any other HDF5 call (the CLI
    /// does, first thing): after a write failed for lack of space the library cannot close that
    /// file, and its clean-up at exit then crashed (SIGSEGV in H5F__close_cb) after the error
    /// line. Files Cohort writes are closed explicitly, and a failed one is removed anyway.
    public static func skipLibraryCleanupAtExit() { H5dont_atexit() }

    private static let silenced: Void = {
        H5dont_atexit()
        _ = H5open()
        H5Eset_auto2(0, nil, nil)
    }()

    /// Every attribute Cohort reads by name, from data files and checkpoints: a file from another
    /// tool is read in a child process first (`FileIntegrity`), these attributes included.
    static let attributeNames = ["class_names", "config", "data_files", "data_fingerprint", "datasets", "epoch", "format",
                                 "format_version", "global_step", "layout", "mean", "num_classes", "source", "split", "std",
                                 "tokenizer", "vocabulary", "world_size"]

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
    }

    public static func open(_ path: String) throws -> HDF5File {
        _ = silenced
        guard FileManager.default.fileExists(atPath: path) else {
            throw CohortError("\(path): no such file")
        }
        // A file Cohort wrote carries a checksum of all its bytes: checked before libhdf5 reads any.
        try FileIntegrity.verify(path)
        guard H5Fis_hdf5(path) > 0 else { throw CohortError("\(path): not an HDF5 file") }
        let id = H5Fopen(path, cohort_h5f_acc_rdonly(), cohort_h5p_default())
        guard id >= 0 else { throw CohortError("\(path): cannot open as HDF5") }
        return HDF5File(path: path, id: id)
    }

    /// Opens an existing file to change it (attributes, new datasets).
    public static func openForWriting(_ path: String) throws -> HDF5File {
        _ = silenced
        let id = H5Fopen(path, cohort_h5f_acc_rdwr(), cohort_h5p_default())
        guard id >= 0 else { throw CohortError("\(path): cannot open for writing") }
        return HDF5File(path: path, id: id)
    }

    public static func create(_ path: String) throws -> HDF5File {
        _ = silenced
        let id = H5Fcreate(path, cohort_h5f_acc_trunc(), cohort_h5p_default(), cohort_h5p_default())
        guard id >= 0 else { throw CohortError("\(path): cannot create (check that the directory exists and is writable)") }
        return HDF5File(path: path, id: id)
    }

    deinit { close() }

    /// Closes the file now (it is also closed when the last reference goes). HDF5 locks open
    /// files, so a writer must close before another process can open the file.
    public func close() {
        if id >= 0 { H5Fclose(id) }
        id = -1
    }

    /// Pushes buffered data to the operating system (used before the atomic rename of checkpoints).
    public func flush() throws {
        errno = 0
        guard H5Fflush(id, H5F_SCOPE_GLOBAL) >= 0 else {
            let reason = errno != 0 ? String(cString: strerror(errno)) : "flush failed"
            throw CohortError("\(path): cannot write the file out (\(reason); disk full?)")
        }
    }

    // MARK: Objects

    public func exists(_ name: String) -> Bool {
        // Walk the path one link at a time: H5Lexists fails on a missing intermediate group.
        var prefix = ""
        for part in name.split(separator: "/") {
            prefix += (prefix.isEmpty ? "" : "/") + part
            if H5Lexists(id, prefix, cohort_h5p_default()) <= 0 { return false }
        }
        return true
    }

    public func createGroup(_ name: String) throws {
        var prefix = ""
        for part in name.split(separator: "/") {
            prefix += (prefix.isEmpty ? "" : "/") + part
            if H5Lexists(id, prefix, cohort_h5p_default()) > 0 { continue }
            let group = H5Gcreate2(id, prefix, cohort_h5p_default(), cohort_h5p_default(), cohort_h5p_default())
            guard group >= 0 else { throw CohortError("\(path): cannot create group \(prefix)") }
            H5Gclose(group)
        }
    }

    /// Names of the members of a group, in HDF5's (alphabetical) order.
    public func members(of group: String) throws -> [String] {
        guard exists(group) || group == "/" else { throw CohortError("\(path): no group \(group)") }
        let gid = H5Gopen2(id, group, cohort_h5p_default())
        guard gid >= 0 else { throw CohortError("\(path): \(group) is not a group") }
        defer { H5Gclose(gid) }
        var info = H5G_info_t()
        H5Gget_info(gid, &info)
        var names: [String] = []
        for index in 0..<info.nlinks {
            let length = H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, cohort_h5p_default())
            guard length >= 0 else { continue }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer, Int(length) + 1, cohort_h5p_default())
            names.append(String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return names
    }

    /// Whether `name` is a group (false for datasets and missing names).
    public func isGroup(_ name: String) -> Bool {
        guard name == "/" || exists(name) else { return false }
        let group = H5Gopen2(id, name, cohort_h5p_default())
        guard group >= 0 else { return false }
        H5Gclose(group)
        return true
    }

    /// Names of the attributes of an object.
    public func attributeNames(on object: String = "/") -> [String] {
        var names: [String] = []
        var index: hsize_t = 0
        while true {
            let length = H5Aget_name_by_idx(id, object, H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, cohort_h5p_default())
            guard length >= 0 else { break }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Aget_name_by_idx(id, object, H5_INDEX_NAME, H5_ITER_INC, index, &buffer, Int(length) + 1, cohort_h5p_default())
            names.append(String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            index += 1
        }
        return names
    }

    /// An attribute's value as text: strings as they are, numbers joined by commas.
    public func describeAttribute(_ name: String, on object: String = "/") -> String {
        if let strings = try? stringsAttribute(name, on: object) {
            return strings.count == 1 ? strings[0] : "[" + strings.joined(separator: ", ") + "]"
        }
        if let numbers = try? numberAttribute(name, on: object, as: Double.self) {
            let text = numbers.map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int64($0)) : String(format: "%.6g", $0) }
            return text.count == 1 ? text[0] : "[" + text.joined(separator: ", ") + "]"
        }
        return "(unreadable type)"
    }

    // MARK: Datasets

    public func dataset(_ name: String) throws -> HDF5Dataset {
        guard exists(name) else { throw CohortError("\(path): no dataset '\(name)'") }
        let dataset = H5Dopen2(id, name, cohort_h5p_default())
        guard dataset >= 0 else { throw CohortError("\(path): '\(name)' is not a dataset") }
        return try HDF5Dataset(file: self, name: name, id: dataset)
    }

    /// Writes a whole dataset. `chunkRows`, when given, chunks along the first axis.
    public func write<T: HDF5Scalar>(_ name: String, _ values: UnsafeBufferPointer<T>, shape: [Int], chunkRows: Int? = nil) throws {
        precondition(shape.reduce(1, *) == values.count, "shape does not match the buffer")
        if let slash = name.lastIndex(of: "/") { try createGroup(String(name[..<slash])) }
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        defer { H5Sclose(space) }
        let properties = H5Pcreate(cohort_h5p_dataset_create())
        defer { H5Pclose(properties) }
        if let chunkRows, !shape.isEmpty, shape[0] > 0 {
            var chunk = dims
            chunk[0] = hsize_t(min(chunkRows, shape[0]))
            H5Pset_chunk(properties, Int32(chunk.count), &chunk)
        }
        let dataset = H5Dcreate2(id, name, T.hdf5Type, space, cohort_h5p_default(), properties, cohort_h5p_default())
        guard dataset >= 0 else { throw CohortError("\(path): cannot create dataset \(name)") }
        defer { H5Dclose(dataset) }
        if values.count > 0 {
            guard H5Dwrite(dataset, T.hdf5Type, cohort_h5s_all(), cohort_h5s_all(), cohort_h5p_default(), values.baseAddress) >= 0 else {
                throw CohortError("\(path): cannot write dataset \(name) (disk full?)")
            }
        }
    }

    public func write<T: HDF5Scalar>(_ name: String, _ values: [T], shape: [Int]? = nil, chunkRows: Int? = nil) throws {
        try values.withUnsafeBufferPointer { try write(name, $0, shape: shape ?? [values.count], chunkRows: chunkRows) }
    }

    /// Creates an empty chunked dataset of `shape`, to be filled with `writeRows`.
    /// `gzipLevel` compresses each chunk with deflate (h5py's `compression="gzip"`).
    public func createDataset<T: HDF5Scalar>(_ name: String, of: T.Type, shape: [Int], chunkRows: Int, gzipLevel: Int? = nil) throws {
        var dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), &dims, nil)
        defer { H5Sclose(space) }
        let properties = H5Pcreate(cohort_h5p_dataset_create())
        defer { H5Pclose(properties) }
        var chunk = dims
        chunk[0] = hsize_t(max(1, min(chunkRows, shape[0])))
        H5Pset_chunk(properties, Int32(chunk.count), &chunk)
        if let gzipLevel { H5Pset_deflate(properties, UInt32(min(max(gzipLevel, 0), 9))) }
        let dataset = H5Dcreate2(id, name, T.hdf5Type, space, cohort_h5p_default(), properties, cohort_h5p_default())
        guard dataset >= 0 else { throw CohortError("\(path): cannot create dataset \(name)") }
        H5Dclose(dataset)
    }

    /// Writes `count` rows starting at row `start` of an existing dataset.
    public func writeRows<T: HDF5Scalar>(_ name: String, start: Int, count: Int, from values: UnsafePointer<T>) throws {
        let dataset = H5Dopen2(id, name, cohort_h5p_default())
        guard dataset >= 0 else { throw CohortError("\(path): no dataset \(name)") }
        defer { H5Dclose(dataset) }
        let fileSpace = H5Dget_space(dataset)
        defer { H5Sclose(fileSpace) }
        let rank = Int(H5Sget_simple_extent_ndims(fileSpace))
        var dims = [hsize_t](repeating: 0, count: rank)
        H5Sget_simple_extent_dims(fileSpace, &dims, nil)
        var offset = [hsize_t](repeating: 0, count: rank)
        offset[0] = hsize_t(start)
        var counts = dims
        counts[0] = hsize_t(count)
        H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &offset, nil, &counts, nil)
        let memorySpace = H5Screate_simple(Int32(rank), &counts, nil)
        defer { H5Sclose(memorySpace) }
        guard H5Dwrite(dataset, T.hdf5Type, memorySpace, fileSpace, cohort_h5p_default(), values) >= 0 else {
            throw CohortError("\(path): cannot write rows \(start)..<\(start + count) of \(name) (disk full?)")
        }
    }

    /// Reads a whole dataset, converting to `T` (HDF5 converts integer and float types).
    public func read<T: HDF5Scalar>(_ name: String, as: T.Type = T.self) throws -> (values: [T], shape: [Int]) {
        let dataset = try dataset(name)
        let values = try dataset.readAll(as: T.self)
        return (values, dataset.shape)
    }

    // MARK: Attributes

    public func setAttribute(_ name: String, _ value: String, on object: String = "/") throws {
        try withObject(object) { objectID in
            let type = H5Tcopy(cohort_h5t_c_s1())
            defer { H5Tclose(type) }
            H5Tset_size(type, cohort_h5t_variable())
            H5Tset_cset(type, H5T_CSET_UTF8)
            let space = H5Screate(H5S_SCALAR)
            defer { H5Sclose(space) }
            let attribute = try createAttribute(objectID, name, type, space, object)
            defer { H5Aclose(attribute) }
            let status = value.withCString { cString -> herr_t in
                var pointer: UnsafePointer<CChar>? = cString
                return H5Awrite(attribute, type, &pointer)
            }
            guard status >= 0 else { throw CohortError("\(path): cannot write attribute \(object)@\(name)") }
        }
    }

    public func setAttribute(_ name: String, _ values: [String], on object: String = "/") throws {
        try withObject(object) { objectID in
            let type = H5Tcopy(cohort_h5t_c_s1())
            defer { H5Tclose(type) }
            H5Tset_size(type, cohort_h5t_variable())
            H5Tset_cset(type, H5T_CSET_UTF8)
            var dims = [hsize_t(values.count)]
            let space = H5Screate_simple(1, &dims, nil)
            defer { H5Sclose(space) }
            let attribute = try createAttribute(objectID, name, type, space, object)
            defer { H5Aclose(attribute) }
            let cStrings = values.map { strdup($0) }
            defer { cStrings.forEach { free($0) } }
            var pointers = cStrings.map { UnsafePointer<CChar>($0) }
            guard H5Awrite(attribute, type, &pointers) >= 0 else {
                throw CohortError("\(path): cannot write attribute \(object)@\(name)")
            }
        }
    }

    public func setAttribute<T: HDF5Scalar>(_ name: String, _ values: [T], on object: String = "/") throws {
        try withObject(object) { objectID in
            var dims = [hsize_t(values.count)]
            let space = values.count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, nil)
            defer { H5Sclose(space) }
            let attribute = try createAttribute(objectID, name, T.hdf5Type, space, object)
            defer { H5Aclose(attribute) }
            guard values.withUnsafeBufferPointer({ H5Awrite(attribute, T.hdf5Type, $0.baseAddress) }) >= 0 else {
                throw CohortError("\(path): cannot write attribute \(object)@\(name)")
            }
        }
    }

    public func hasAttribute(_ name: String, on object: String = "/") -> Bool {
        (try? withObject(object) { H5Aexists($0, name) > 0 }) ?? false
    }

    public func stringAttribute(_ name: String, on object: String = "/") throws -> String {
        guard let first = try stringsAttribute(name, on: object).first else {
            throw CohortError("\(path): attribute \(object)@\(name) is empty")
        }
        return first
    }

    public func stringsAttribute(_ name: String, on object: String = "/") throws -> [String] {
        try withObject(object) { objectID in
            let attribute = try openAttribute(objectID, name, object)
            defer { H5Aclose(attribute) }
            let fileType = H5Aget_type(attribute)
            defer { H5Tclose(fileType) }
            guard H5Tget_class(fileType) == H5T_STRING else {
                throw CohortError("\(path): attribute \(object)@\(name) is not a string")
            }
            let space = H5Aget_space(attribute)
            defer { H5Sclose(space) }
            let count = Int(H5Sget_simple_extent_npoints(space))
            if H5Tis_variable_str(fileType) > 0 {
                let memoryType = H5Tcopy(cohort_h5t_c_s1())
                defer { H5Tclose(memoryType) }
                H5Tset_size(memoryType, cohort_h5t_variable())
                H5Tset_cset(memoryType, H5Tget_cset(fileType))
                var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
                guard H5Aread(attribute, memoryType, &pointers) >= 0 else {
                    throw CohortError("\(path): cannot read attribute \(object)@\(name)")
                }
                defer { pointers.forEach { H5free_memory($0) } }
                return pointers.map { $0.map { String(cString: $0) } ?? "" }
            }
            // Fixed-length strings, as h5py writes for numpy bytes arrays.
            let size = H5Tget_size(fileType)
            var bytes = [UInt8](repeating: 0, count: size * count)
            guard H5Aread(attribute, fileType, &bytes) >= 0 else {
                throw CohortError("\(path): cannot read attribute \(object)@\(name)")
            }
            return (0..<count).map { index in
                let slice = bytes[(index * size)..<((index + 1) * size)]
                return String(decoding: slice.prefix { $0 != 0 }, as: UTF8.self)
            }
        }
    }

    public func numberAttribute<T: HDF5Scalar>(_ name: String, on object: String = "/", as: T.Type = T.self) throws -> [T] {
        try withObject(object) { objectID in
            let attribute = try openAttribute(objectID, name, object)
            defer { H5Aclose(attribute) }
            let space = H5Aget_space(attribute)
            defer { H5Sclose(space) }
            let count = Int(H5Sget_simple_extent_npoints(space))
            var values = [T](repeating: T.zero, count: count)
            guard values.withUnsafeMutableBufferPointer({ H5Aread(attribute, T.hdf5Type, $0.baseAddress) }) >= 0 else {
                throw CohortError("\(path): attribute \(object)@\(name) is not numeric")
            }
            return values
        }
    }

    private func withObject<R>(_ object: String, _ body: (hid_t) throws -> R) throws -> R {
        guard object == "/" || exists(object) else { throw CohortError("\(path): no object \(object)") }
        let objectID = H5Oopen(id, object, cohort_h5p_default())
        guard objectID >= 0 else { throw CohortError("\(path): cannot open \(object)") }
        defer { H5Oclose(objectID) }
        return try body(objectID)
    }

    private func createAttribute(_ objectID: hid_t, _ name: String, _ type: hid_t, _ space: hid_t, _ object: String) throws -> hid_t {
        if H5Aexists(objectID, name) > 0 { H5Adelete(objectID, name) }
        let attribute = H5Acreate2(objectID, name, type, space, cohort_h5p_default(), cohort_h5p_default())
        guard attribute >= 0 else { throw CohortError("\(path): cannot create attribute \(object)@\(name)") }
        return attribute
    }

    private func openAttribute(_ objectID: hid_t, _ name: String, _ object: String) throws -> hid_t {
        guard H5Aexists(objectID, name) > 0 else { throw CohortError("\(path): missing attribute \(object)@\(name)") }
        let attribute = H5Aopen(objectID, name, cohort_h5p_default())
        guard attribute >= 0 else { throw CohortError("\(path): cannot open attribute \(object)@\(name)") }
        return attribute
    }
}

/// Serializes HDF5 reads across threads.
let hdf5Lock = NSLock()

/// HDF5's thread-safe build keeps an error stack, and its printing switch, per thread: reads on
/// the prefetch thread silence their own (the message goes into our one line instead).
func silenceThisThread() { H5Eset_auto2(0, nil, nil) }

/// Element types Cohort reads and writes, with their native HDF5 type.
public protocol HDF5Scalar: Numeric {
    static var hdf5Type: hid_t { get }
}
extension UInt8: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_uint8() } }
extension UInt16: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_uint16() } }
extension UInt32: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_uint32() } }
extension Int32: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_int32() } }
extension Int64: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_int64() } }
extension UInt64: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_uint64() } }
extension Float: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_float() } }
extension Double: HDF5Scalar { public static var hdf5Type: hid_t { cohort_h5t_native_double() } }
