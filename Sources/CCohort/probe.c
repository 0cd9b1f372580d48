// A damaged HDF5 file that Cohort did not write (so carries no checksum trailer) can crash or
// hang libhdf5 itself while it parses the file's metadata. Before Cohort opens such a file, a
// forked child reads everything Cohort could read from it (every object, every attribute, and
// the rows of every dataset, sampled in large files); the parent only looks at how the child
// ended. The child never returns to Swift: it calls libhdf5 and _exit only.
#include "CCohort.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>

enum { probe_slab_bytes = 8 << 20, probe_full_bytes = 256 << 20, probe_samples = 64 };

static herr_t probe_read_attribute(hid_t object, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    (void)data;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (attribute < 0) return 0;
    hid_t type = H5Aget_type(attribute), space = H5Aget_space(attribute);
    hssize_t points = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (type >= 0 && points > 0 && points <= (1 << 20)) {
        if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0) {
            // As Cohort reads strings: C strings of the file's character set.
            hid_t memory = H5Tcopy(H5T_C_S1);
            H5Tset_size(memory, H5T_VARIABLE);
            H5Tset_cset(memory, H5Tget_cset(type));
            char **strings = calloc((size_t)points, sizeof(char *));
            if (strings && H5Aread(attribute, memory, strings) >= 0) H5Dvlen_reclaim(memory, space, H5P_DEFAULT, strings);
            free(strings);
            H5Tclose(memory);
        } else {
            hid_t native = H5Tget_native_type(type, H5T_DIR_DEFAULT);
            size_t size = native >= 0 ? H5Tget_size(native) : 0;
            if (size > 0 && size <= 4096) {
                void *buffer = calloc((size_t)points, size);
                if (buffer && H5Aread(attribute, native, buffer) >= 0 && H5Tdetect_class(native, H5T_VLEN) > 0) {
                    H5Dvlen_reclaim(native, space, H5P_DEFAULT, buffer);
                }
                free(buffer);
            }
            if (native >= 0) H5Tclose(native);
        }
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Aclose(attribute);
    return 0;
}

static const char *const *probe_names;
static int probe_name_count;

/// Every attribute the iteration finds, then every name Cohort reads by name (a damaged
/// attribute index can stop the iteration while opening by name still succeeds).
static void probe_read_attributes(hid_t object) {
    hsize_t index = 0;
    H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_NATIVE, &index, probe_read_attribute, NULL);
    for (int name = 0; name < probe_name_count; name++) {
        if (H5Aexists(object, probe_names[name]) > 0) probe_read_attribute(object, probe_names[name], NULL, NULL);
    }
}

/// Reads rows [first, first + count) of a dataset of fixed-size elements.
static void probe_read_rows(hid_t dataset, hid_t space, hid_t native, int rank, const hsize_t *dims,
                            hsize_t first, hsize_t count, void *buffer) {
    hsize_t start[H5S_MAX_RANK] = {0}, extent[H5S_MAX_RANK];
    for (int axis = 0; axis < rank; axis++) extent[axis] = dims[axis];
    start[0] = first;
    extent[0] = count;
    if (H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, extent, NULL) < 0) return;
    hid_t memory = H5Screate_simple(rank, extent, NULL);
    if (memory < 0) return;
    H5Dread(dataset, native, memory, space, H5P_DEFAULT, buffer);
    H5Sclose(memory);
}

static void probe_read_dataset(hid_t dataset) {
    hid_t type = H5Dget_type(dataset), space = H5Dget_space(dataset);
    hid_t native = type >= 0 ? H5Tget_native_type(type, H5T_DIR_DEFAULT) : -1;
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[H5S_MAX_RANK];
    size_t element = native >= 0 ? H5Tget_size(native) : 0;
    int plain = native >= 0 && H5Tdetect_class(native, H5T_VLEN) <= 0 && H5Tis_variable_str(native) <= 0;
    if (rank >= 1 && rank <= H5S_MAX_RANK && element > 0 && plain && H5Sget_simple_extent_dims(space, dims, NULL) == rank && dims[0] > 0) {
        // Bytes in one row, refusing absurd shapes (the caller checks them again, with messages).
        double row = (double)element;
        for (int axis = 1; axis < rank; axis++) row *= (double)dims[axis];
        if (row > 0 && row <= probe_slab_bytes) {
            hsize_t rowsPerSlab = (hsize_t)(probe_slab_bytes / row);
            if (rowsPerSlab < 1) rowsPerSlab = 1;
            void *buffer = malloc((size_t)(rowsPerSlab * row));
            if (buffer) {
                if (row * (double)dims[0] <= probe_full_bytes) {
                    for (hsize_t first = 0; first < dims[0]; first += rowsPerSlab) {
                        hsize_t count = dims[0] - first < rowsPerSlab ? dims[0] - first : rowsPerSlab;
                        probe_read_rows(dataset, space, native, rank, dims, first, count, buffer);
                    }
                } else {
                    hsize_t slabs = (dims[0] + rowsPerSlab - 1) / rowsPerSlab;
                    for (int sample = 0; sample < probe_samples; sample++) {
                        hsize_t first = (slabs - 1) * (hsize_t)sample / (probe_samples - 1) * rowsPerSlab;
                        hsize_t count = dims[0] - first < rowsPerSlab ? dims[0] - first : rowsPerSlab;
                        probe_read_rows(dataset, space, native, rank, dims, first, count, buffer);
                    }
                }
                free(buffer);
            }
        }
    } else if (rank >= 0 && element > 0 && plain && space >= 0 && H5Sget_simple_extent_npoints(space) == 1) {
        void *buffer = calloc(1, element);  // a scalar dataset
        if (buffer) H5Dread(dataset, native, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer);
        free(buffer);
    }
    if (native >= 0) H5Tclose(native);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
}

static herr_t probe_visit(hid_t group, const char *name, const H5L_info_t *link, void *data) {
    (void)data;
    if (link->type != H5L_TYPE_HARD) return 0;
    hid_t object = H5Oopen(group, name, H5P_DEFAULT);
    if (object < 0) return 0;
    probe_read_attributes(object);
    if (H5Iget_type(object) == H5I_DATASET) probe_read_dataset(object);
    H5Oclose(object);
    return 0;
}

int cohort_h5_probe(const char *path, const char *const *names, int name_count, int timeout_ms) {
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) return 0;  // cannot fork: read the file unprobed, as before
    if (child == 0) {
        // The parent's crash handlers (Swift's backtracer) would print for the child: quiet it.
        int quiet[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP};
        for (unsigned index = 0; index < sizeof quiet / sizeof quiet[0]; index++) signal(quiet[index], SIG_DFL);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) { dup2(null, 1); dup2(null, 2); }
        probe_names = names;
        probe_name_count = name_count;
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (file >= 0) {
            probe_read_attributes(file);
            H5Lvisit(file, H5_INDEX_NAME, H5_ITER_NATIVE, probe_visit, NULL);
            H5Fclose(file);
        }
        _exit(0);
    }
    struct timespec pause = {0, 1000000};
    for (int waited = 0;; waited++) {
        int status = 0;
        pid_t done = waitpid(child, &status, WNOHANG);
        if (done == child) return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        if (done < 0) return 0;
        if (waited >= timeout_ms) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            return -1;
        }
        nanosleep(&pause, NULL);
    }
}
