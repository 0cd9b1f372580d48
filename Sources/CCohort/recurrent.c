// LSTM cells, one row at a time.
#include "kernels_common.h"

// One LSTM cell, one row: gates [4H] (i | f | g | o pre-activations, recurrent part added when
// `recurrent` is not NULL) become activations; c = f·c_prev + i·g, h = o·tanh(c).
VECTORIZED
void cohort_lstm_cell_forward(float *restrict gates, const float *restrict recurrent, const float *restrict previous_cell,
                              float *restrict cell, float *restrict hidden, long H) {
    if (recurrent) for (long j = 0; j < 4 * H; j++) gates[j] += recurrent[j];
    for (long j = 0; j < 2 * H; j++) gates[j] = sigmoid_(gates[j]);
    for (long j = 2 * H; j < 3 * H; j++) gates[j] = tanh_(gates[j]);
    for (long j = 3 * H; j < 4 * H; j++) gates[j] = sigmoid_(gates[j]);
    for (long j = 0; j < H; j++) {
        cell[j] = gates[H + j] * previous_cell[j] + gates[j] * gates[2 * H + j];
        hidden[j] = gates[3 * H + j] * tanh_(cell[j]);
    }
}

// Its backward for one row: dh = dy + dh_next; dc = dc_next + dh·o·(1 − tanh²c); the gate
// pre-activation gradients into dgates; dc_next becomes dc·f (the carry to the step before).
VECTORIZED
void cohort_lstm_cell_backward(const float *restrict gates, const float *restrict cell, const float *restrict previous_cell,
                               const float *restrict dy, const float *restrict dh_next, float *restrict dc_next,
                               float *restrict dgates, long H) {
    for (long j = 0; j < H; j++) {
        float i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
        float dh = dy[j] + dh_next[j];
        float tc = tanh_(cell[j]);
        float dc = dc_next[j] + dh * o * (1.0f - tc * tc);
        dgates[j] = dc * g * i * (1.0f - i);
        dgates[H + j] = dc * previous_cell[j] * f * (1.0f - f);
        dgates[2 * H + j] = dc * i * (1.0f - g * g);
        dgates[3 * H + j] = dh * tc * o * (1.0f - o);
        dc_next[j] = dc * f;
    }
}
