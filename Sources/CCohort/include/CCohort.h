// Wrappers for the parts of MPI and HDF5 that Swift cannot import: their handles,
// datatypes and property-list classes are macros over global structs or over calls
// to H5open(). Each wrapper is a static inline function returning the macro's value.
#ifndef CCOHORT_H
#define CCOHORT_H

#include <mpi.h>
#include <hdf5.h>
#include <cblas.h>
#include <zlib.h>
#include <stdint.h>

// MARK: MPI
static inline MPI_Comm cohort_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype cohort_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype cohort_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype cohort_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype cohort_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype cohort_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op cohort_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op cohort_mpi_max(void) { return MPI_MAX; }
static inline void *cohort_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Info cohort_mpi_info_null(void) { return MPI_INFO_NULL; }
static inline MPI_Errhandler cohort_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Errhandler cohort_mpi_errors_are_fatal(void) { return MPI_ERRORS_ARE_FATAL; }
static inline MPI_Win cohort_mpi_win_null(void) { return MPI_WIN_NULL; }
static inline MPI_Request cohort_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline MPI_Datatype cohort_mpi_uint16(void) { return MPI_UINT16_T; }
static inline MPI_Status *cohort_mpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }
static inline MPI_Status *cohort_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }

/// One part of a parallel region: `part` of the region's parts, run by thread `worker`.
typedef void (*cohort_part_fn)(void *context, long part, long worker);
/// Runs fn(context, part, worker) for every part in 0..<parts on `workers` threads (the caller
/// is worker 0; worker w takes parts w, w + workers, …), returning when all are done. Not
/// reentrant: a part that needs parallel work runs it serially (`cohort_pool_inside`).
void cohort_pool_run(long parts, long workers, cohort_part_fn fn, void *context);
/// Whether this thread is running a part of a region (a worker, or the caller inside one).
int cohort_pool_inside(void);
/// CPUs this process may run on (its affinity mask), at least 1.
int cohort_bound_cores(void);
/// bfloat16 (the top 16 bits of a float32), rounded to nearest even; NaN stays NaN.
void cohort_float_to_bf16(const float *restrict x, uint16_t *restrict y, long n);
void cohort_bf16_to_float(const uint16_t *restrict x, float *restrict y, long n);
/// An MPI_Op on MPI_UINT16_T buffers of bfloat16: each pair summed in float32, rounded back.
/// Made on first use (after MPI_Init); commutative.
MPI_Op cohort_mpi_bf16_sum(void);
/// Sums `count` floats over `comm` in place, sent as bfloat16, as a ring: a reduce-scatter of
/// bfloat16 blocks (each addition in float32, rounded back) and an all-gather of the summed
/// blocks, so every rank ends with the same bits and each link carries half the bytes of a
/// float32 ring. (One MPI_Allreduce with a user-defined operation is not run as a ring by
/// OpenMPI: measured, it saved nothing over float32 on two hosts.) Returns an MPI error code.
int cohort_allreduce_bf16(float *data, long count, MPI_Comm comm);

// MARK: HDF5
static inline hid_t cohort_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t cohort_h5t_native_uint16(void) { return H5T_NATIVE_UINT16; }
static inline hid_t cohort_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t cohort_h5t_native_uint32(void) { return H5T_NATIVE_UINT32; }
static inline hid_t cohort_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t cohort_h5t_native_uint64(void) { return H5T_NATIVE_UINT64; }
static inline hid_t cohort_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t cohort_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t cohort_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t cohort_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t cohort_h5p_default(void) { return H5P_DEFAULT; }
static inline unsigned cohort_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned cohort_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned cohort_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline hid_t cohort_h5s_all(void) { return H5S_ALL; }
static inline size_t cohort_h5t_variable(void) { return H5T_VARIABLE; }

// MARK: Kernels (optimizer.c, elementwise.c, node_sum.c, pooling.c, convolution.c, signals.c)

/// Adam over a run of parameters that all decay (`decays` 1) or none do (0): g = grad + wd·decays·θ; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; θ −= step·m / (sqrt(v) + ε̂).
/// With `shrink` ≠ 0 (AdamW's decoupled decay, wd = 0 then), θ −= shrink·decays·θ first, in the same pass.
void cohort_adam_update(float *restrict theta, const float *restrict grad, float *restrict m, float *restrict v,
                        float decays, long n, float beta1, float beta2, float step_size,
                        float epsilon_hat, float weight_decay, float shrink);
/// SGD over a run as Adam's: g = grad + wd·decays·θ; v = μ·v + g; θ −= lr·(nesterov ? g + μ·v : v) (θ −= lr·g when μ = 0).
void cohort_sgd_update(float *restrict theta, const float *restrict grad, float *restrict velocity,
                       float decays, long n, float learning_rate, float momentum,
                       int nesterov, float weight_decay);
/// out[i] = a[i] + b[i] (out may be a or b).
void cohort_add(const float *a, const float *b, float *out, long n);
void cohort_relu_forward(const float *restrict x, float *restrict y, long n);
void cohort_relu_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n);
/// sum[c] += Σ_r rows[r·width + c]
void cohort_add_rows(const float *restrict rows, float *restrict sum, long count, long width);

/// target[i] = dy[i] where y[i] > 0 (or everywhere when y is NULL), else 0.
void cohort_mask_copy(const float *restrict dy, const float *restrict y, float *restrict target, long n);
/// Σ x[i], accumulated in double.
float cohort_sum(const float *restrict x, long n);
/// Σ x[i]² in double (8 lanes in a fixed tree).
double cohort_sum_squares(const float *restrict x, long n);
void cohort_box_muller(const double *restrict u1, const double *restrict u2, float *restrict out, long n, float scale);
// Sequence models (activations.c, recurrent.c): GELU, causal softmax rows, LSTM cells, all 8 lanes wide.
void cohort_gelu_forward(const float *restrict x, float *restrict y, long n);
void cohort_gelu_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n);
void cohort_gelu_tanh_forward(const float *restrict x, float *restrict y, long n);
void cohort_gelu_tanh_backward(const float *restrict x, const float *restrict dy, float *restrict dx, long n);
/// y = f(x) and slope = f'(x) in one pass; then dx = dy · slope (dx may be dy).
void cohort_gelu_forward_slope(const float *restrict x, float *restrict y, float *restrict slope, long n);
void cohort_gelu_tanh_forward_slope(const float *restrict x, float *restrict y, float *restrict slope, long n);
void cohort_multiply(const float *dy, const float *restrict slope, float *dx, long n);
/// y = e^x by the kernels' own exponential (within 2 ulp on [−87, 88]).
void cohort_exp(const float *restrict x, float *restrict y, long n);
void cohort_softmax_prefix(float *restrict row, long count, long length);
/// Softmax cross-entropy of `batch` rows (targets `on` at the label, `off` elsewhere): the summed
/// loss; the gradient (p − t)·scale when `gradient` is not NULL; rows whose argmax is the label in `correct`.
double cohort_softmax_cross_entropy(const float *restrict logits, const int *restrict labels, long batch, long classes,
                                    float on, float off, float *restrict gradient, float scale, long *correct);
void cohort_softmax_backward(const float *p, const float *dp, float *ds, long T, long rows, int causal, long keys);
/// One attention pair's products (activations.c): C = alpha · A · B over a causal span.
enum { COHORT_SPAN_ALL = 0, COHORT_SPAN_LOWER = 1, COHORT_SPAN_PREFIX = 2, COHORT_SPAN_SUFFIX = 3 };
void cohort_attention_product(long M, long N, long K, float alpha, const float *a, long a_row, long a_col,
                              const float *b, long ldb, float *c, long ldc, int span, float *restrict padded);
void cohort_transpose(const float *restrict x, long ldx, long rows, long columns, float *restrict t);
/// Layer normalization over rows (normalization.c), sums in 8 lanes.
void cohort_layer_norm_forward(const float *restrict x, const float *restrict gamma, const float *restrict beta,
                               float *restrict y, float *restrict mean, float *restrict inverse, long r0, long r1,
                               long width, float epsilon);
void cohort_layer_norm_backward(const float *restrict x, const float *restrict dy, const float *restrict gamma,
                                const float *restrict mean, const float *restrict inverse, float *restrict dx,
                                float *restrict dgamma, float *restrict dbeta, long rows, long width, long r0, long r1,
                                long c0, long c1);
/// Products of a batch's rows by one matrix packed once per call (products.c): op(B) [K, N] in
/// panels of 16 columns, then any rows and panels of C = op(A) · op(B) (+ C with `accumulate`, or
/// + bias broadcast over the rows).
long cohort_panel_count(long N);
long cohort_panels_size(long K, long N);
void cohort_pack_panels(long p0, long p1, long K, long N, const float *restrict b, long ldb, int transposed,
                        float *restrict packed);
void cohort_panel_product(long m0, long m1, long p0, long p1, long N, long K, const float *a, long a_row, long a_col,
                          const float *packed, float *c, long ldc, int accumulate, const float *bias, int transposed_c);
long cohort_panel_rows(void);
void cohort_panel_product_streamed(long m0, long m1, long p0, long p1, long N, long K, const float *a, long a_row,
                                   long a_col, const float *b, long ldb, int transposed, float *c, long ldc, int accumulate,
                                   const float *bias, float *restrict scratch);
/// The LSTM recurrence without a BLAS call per step (recurrent.c): W_hh packed once per pass,
/// each step one call per part of its panels (product, then the cells of those units).
long cohort_lstm_forward_panels(long H);
long cohort_lstm_backward_panels(long H);
void cohort_lstm_pack_forward(const float *restrict w, float *restrict packed, long H);
void cohort_lstm_pack_backward(const float *restrict w, float *restrict packed, long H);
void cohort_lstm_forward_step(const float *restrict packed, const float *restrict bias, long H, long batch, long first, long count,
                              const float *previous, long previous_stride, float *gates, long gates_stride,
                              const float *previous_cell, long previous_cell_stride,
                              float *cell, float *hidden, long state_stride);
void cohort_lstm_backward_step(const float *restrict packed, long H, long batch, long first, long count,
                               const float *next_dgates, long dgates_stride, float *dgates,
                               const float *gates, long gates_stride, const float *cell, const float *previous_cell,
                               long state_stride, long previous_cell_stride, const float *dy, long dy_stride,
                               float *dc);
void cohort_add_rows_twice(const float *restrict rows, long stride, float *restrict sum_a, float *restrict sum_b,
                           long count, long width);
/// Every destination gets Σ sources in source order; returns 1 when every sum is finite.
int cohort_sum_sources(const float *const *sources, int count, float *const *destinations, int destination_count, long n);
/// 1 when every x[i] is finite (not ±inf, not NaN).
/// Reads an HDF5 file Cohort did not write in a forked child, within timeout_ms (every object,
/// its attributes and the attributes `names` by name, dataset rows): 0 when the child finished
/// (or could not be started), the signal that ended it, or -1 when it hung.
int cohort_h5_probe(const char *path, const char *const *names, int name_count, int timeout_ms);
int cohort_all_finite(const float *restrict x, long n);
/// target[i] = source[i] (first) or target[i] + source[i] (not first), or the same with zeros
/// for a null source: one rank's turn in a node's ordered gradient sum.
void cohort_sum_turn(float *restrict target, const float *restrict source, long n, int first);
/// Waits (yielding the core) until *counter >= target; the loads acquire.
void cohort_counter_wait(const long long *counter, long long target);
/// *counter = value, releasing every write before it.
void cohort_counter_store(long long *counter, long long value);
void cohort_relu_inplace(float *x, long n);
/// 2×2, stride 2 max pooling of `planes` planes; code holds which of each window's four inputs won (0–3, row-major).
void cohort_max_pool_2x2(const float *restrict x, float *restrict y, unsigned char *restrict code, long planes,
                         long height, long width, long out_height, long out_width);
/// Its adjoint: dx (every entry written) from dy and the codes of the forward pass.
void cohort_max_pool_2x2_backward(const float *restrict dy, const unsigned char *restrict code, float *restrict dx, long planes,
                                  long height, long width, long out_height, long out_width);
/// One output channel of a convolution over a chunk of `count` samples in the interleaved layout
/// (entry (row, column, s) at x[(row·width + column)·count + s]) plus bias, ReLU'd when relu,
/// 2×2 max-pooled into y with winners in code (sample s at s·sample_stride).
void cohort_bias_activate_max_pool_2x2(const float *restrict x, float bias, int relu, float *restrict y,
                                       unsigned char *restrict code, long count, long sample_stride, long width,
                                       long out_height, long out_width);
/// Its adjoint into the interleaved dx (every entry written); with y (the pooled outputs, after a
/// fused ReLU), windows whose output is 0 pass nothing.
void cohort_max_pool_2x2_backward_interleaved(const float *restrict dy, const unsigned char *restrict code, const float *restrict y,
                                              float *restrict dx, long count, long sample_stride, long height, long width,
                                              long out_height, long out_width);
/// target[s·target_stride + p] = source[p·count + s] + bias, then max(·, 0) when relu.
void cohort_bias_activate_deinterleave(const float *restrict source, float *restrict target, long pixels, long count,
                                       long target_stride, float bias, int relu);
/// target[p·count + s] = dy[s·source_stride + p] where y there > 0 (everywhere when y is NULL), else 0.
void cohort_mask_interleave(const float *restrict dy, const float *restrict y, float *restrict target, long pixels, long count,
                            long source_stride);

/// A chunk of `count` NCHW samples into the interleaved, zero-padded layout padded[c][y][x][s] (see convolution.c).
void cohort_pack_interleaved(const float *restrict x, float *restrict padded, long count, long sample_size, long channels,
                             long height, long width, long pad_top, long pad_left, long padded_height, long padded_width);
/// Back to NCHW, the padding dropped (input pixels outside padded get 0).
void cohort_unpack_interleaved(const float *restrict padded, float *restrict dx, long count, long sample_size, long channels,
                               long height, long width, long pad_top, long pad_left, long padded_height, long padded_width);
/// im2col of a packed chunk: cols[(c·k + i)·k + j][(oy·OW + ox)·count + s] = padded[c][oy·stride + i][ox·stride + j][s].
void cohort_im2col(const float *restrict padded, float *restrict cols, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w);
/// The adjoint of cohort_im2col; overwrites padded.
void cohort_col2im(const float *restrict cols, float *restrict padded, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w);

// MARK: Process

/// Flush subnormal floats to zero in this thread (FTZ and DAZ on x86-64; elsewhere nothing).
void cohort_flush_denormals(void);

/// SIGTERM and SIGUSR1 set a flag instead of ending the process.
void cohort_install_stop_signals(void);
/// 1 once SIGTERM or SIGUSR1 has arrived.
int cohort_stop_requested(void);

/// Name of the kernel family OpenBLAS selected at load time (e.g. "Haswell", "Prescott").
static inline const char *cohort_openblas_corename(void) { return openblas_get_corename(); }

#endif
