/* cudamock: the WMMA API (nvcuda::wmma, 16x16x16 BF16 with FP32 accumulators)
 * that the CUDA backend's tensor-core attention uses.  A fragment holds the
 * whole 16x16 tile in every thread of the warp (the real layout across lanes
 * is unspecified, and the backend only reads fragments through
 * load/store/mma/fill); a product sums k in order in FP32 (each BF16 x BF16
 * product exact).  A store is written by lane 0 and ends with a warp barrier. */
#ifndef CUDAMOCK_MMA_H
#define CUDAMOCK_MMA_H
#include "cuda_bf16.h"
#include "cuda_runtime.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int num_elements = 256;
    float x[256]; /* element (r, c) at x[r * 16 + c] */
};

inline float cudamock_wmma_in(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float cudamock_wmma_in(float v) { return v; }

/* WMMA's rules for memory operands: the pointer 256-bit aligned, ldm a
 * multiple of 16 bytes (8 BF16 elements, 4 floats) */
template <typename T>
void cudamock_wmma_operand(const T *p, unsigned ld, const char *what) {
    if ((uintptr_t)p % 32 || ld * sizeof(T) % 16) {
        std::fprintf(stderr, "cudamock: wmma::%s at %p with ldm %u: the pointer must be 32-byte aligned and ldm a "
                     "multiple of 16 bytes\n", what, (const void *)p, ld);
        std::abort();
    }
}

template <typename Use, typename T>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, row_major> &f, const T *p, unsigned ld) {
    cudamock_wmma_operand(p, ld, "load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = cudamock_wmma_in(p[(size_t)r * ld + c]);
}
template <typename Use, typename T>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, col_major> &f, const T *p, unsigned ld) {
    cudamock_wmma_operand(p, ld, "load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = cudamock_wmma_in(p[(size_t)c * ld + r]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ld, layout_t l) {
    cudamock_wmma_operand(p, ld, "load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = l == mem_row_major ? p[(size_t)r * ld + c] : p[(size_t)c * ld + r];
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ld, layout_t l) {
    cudamock_wmma_operand(p, ld, "store_matrix_sync");
    if ((threadIdx.x & 31) == 0)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++) (l == mem_row_major ? p[(size_t)r * ld + c] : p[(size_t)c * ld + r]) = f.x[r * 16 + c];
    __syncwarp();
}
template <typename Use, typename T, typename L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L> &f, float v) {
    for (int i = 0; i < 256; i++) f.x[i] = v;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, T, LA> &a,
              const fragment<matrix_b, 16, 16, 16, T, LB> &b, const fragment<accumulator, 16, 16, 16, float> &c) {
    float out[256];
    /* CUDAMOCK_WMMA_BROKEN=1: B read transposed (cuda_attention_tc_selfcheck: the self-check must turn it off) */
    const char *br = getenv("CUDAMOCK_WMMA_BROKEN");
    const bool bt = br && *br == '1';
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float s = c.x[r * 16 + n];
            for (int k = 0; k < 16; k++) s += a.x[r * 16 + k] * b.x[bt ? n * 16 + k : k * 16 + n];
            out[r * 16 + n] = s;
        }
    for (int i = 0; i < 256; i++) d.x[i] = out[i];
}
} // namespace wmma
} // namespace nvcuda
#endif
