// Lowering convolutions to GEMMs: packing chunks of samples, im2col and its adjoint.
#include "kernels_common.h"
#include <string.h>

// A convolution works on chunks of `count` samples in an interleaved layout, the sample index
// fastest: the input as padded[c][y][x][s] (zero-padded to padded_height × padded_width, the
// rows and columns the kernel windows cover), and the lowered matrix as
//   cols[(c·k + i)·k + j][(oy·OW + ox)·count + s] = padded[c][oy·stride + i][ox·stride + j][s],
// so that with stride 1 each output line of a row of cols is one run of OW·count floats in
// padded: long vector copies with no edge tests, where per-sample rows would be short copies
// (14 floats for W3) with padding handled per line. The GEMM's output columns come out in the
// same (pixel, sample) order.

// padded[c][y][x][s] = x_s[c][y − pad_top][x − pad_left], 0 outside the image; sample s at
// x + s·sample_size. Input rows and columns the windows never cover (valid, stride > 1) are left out.
VECTORIZED
void cohort_pack_interleaved(const float *restrict x, float *restrict padded, long count, long sample_size, long channels,
                             long height, long width, long pad_top, long pad_left, long padded_height, long padded_width) {
    long plane = padded_height * padded_width * count;
    for (long i = 0; i < channels * plane; i++) padded[i] = 0.0f;
    long rows = height < padded_height - pad_top ? height : padded_height - pad_top;
    long columns = width < padded_width - pad_left ? width : padded_width - pad_left;
    for (long s = 0; s < count; s++) {
        for (long c = 0; c < channels; c++) {
            const float *restrict source = x + s * sample_size + c * height * width;
            float *restrict target = padded + c * plane + (pad_top * padded_width + pad_left) * count + s;
            for (long y = 0; y < rows; y++)
                for (long column = 0; column < columns; column++)
                    target[(y * padded_width + column) * count] = source[y * width + column];
        }
    }
}

// Its adjoint for the input gradient: dx_s[c][y][x] = padded[c][y + pad_top][x + pad_left][s],
// 0 for input pixels no window covers.
VECTORIZED
void cohort_unpack_interleaved(const float *restrict padded, float *restrict dx, long count, long sample_size, long channels,
                               long height, long width, long pad_top, long pad_left, long padded_height, long padded_width) {
    long plane = padded_height * padded_width * count;
    long rows = height < padded_height - pad_top ? height : padded_height - pad_top;
    long columns = width < padded_width - pad_left ? width : padded_width - pad_left;
    for (long s = 0; s < count; s++) {
        for (long c = 0; c < channels; c++) {
            float *restrict target = dx + s * sample_size + c * height * width;
            const float *restrict source = padded + c * plane + (pad_top * padded_width + pad_left) * count + s;
            for (long i = 0; i < height * width; i++) target[i] = 0.0f;
            for (long y = 0; y < rows; y++)
                for (long column = 0; column < columns; column++)
                    target[y * width + column] = source[(y * padded_width + column) * count];
        }
    }
}

VECTORIZED
void cohort_im2col(const float *restrict padded, float *restrict cols, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w) {
    long line = out_w * count, row_size = out_h * line;
    long row = 0;
    for (long c = 0; c < channels; c++) {
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                float *restrict out = cols + row * row_size;
                for (long oy = 0; oy < out_h; oy++, out += line) {
                    const float *restrict source = padded + ((c * padded_height + oy * stride + i) * padded_width + j) * count;
                    if (stride == 1) {
                        for (long q = 0; q < line; q++) out[q] = source[q];
                    } else {
                        for (long ox = 0; ox < out_w; ox++)
                            for (long s = 0; s < count; s++) out[ox * count + s] = source[ox * stride * count + s];
                    }
                }
            }
        }
    }
}

// The adjoint of cohort_im2col: padded is overwritten with the sum of the cols entries that
// read each of its entries, added in row order.
VECTORIZED
void cohort_col2im(const float *restrict cols, float *restrict padded, long count, long channels, long kernel, long stride,
                   long padded_height, long padded_width, long out_h, long out_w) {
    for (long i = 0; i < channels * padded_height * padded_width * count; i++) padded[i] = 0.0f;
    long line = out_w * count, row_size = out_h * line;
    long row = 0;
    for (long c = 0; c < channels; c++) {
        for (long i = 0; i < kernel; i++) {
            for (long j = 0; j < kernel; j++, row++) {
                const float *restrict in = cols + row * row_size;
                for (long oy = 0; oy < out_h; oy++, in += line) {
                    float *restrict target = padded + ((c * padded_height + oy * stride + i) * padded_width + j) * count;
                    if (stride == 1) {
                        for (long q = 0; q < line; q++) target[q] += in[q];
                    } else {
                        for (long ox = 0; ox < out_w; ox++)
                            for (long s = 0; s < count; s++) target[ox * stride * count + s] += in[ox * count + s];
                    }
                }
            }
        }
    }
}
