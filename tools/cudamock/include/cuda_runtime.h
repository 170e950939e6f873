/* cudamock: the CUDA runtime API the CUDA backend uses, on the CPU (tools/cudamock/README.md). */
#ifndef CUDAMOCK_RUNTIME_H
#define CUDAMOCK_RUNTIME_H
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorNoDevice = 100 };
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum { cudaStreamNonBlocking = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8, cudaFuncAttributePreferredSharedMemoryCarveout = 9 };
struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount;
    size_t sharedMemPerBlockOptin, sharedMemPerMultiprocessor, reservedSharedMemPerBlock;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
enum cudaDeviceAttr { cudaDevAttrClockRate = 13 };
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventDestroy(cudaEvent_t e);
template <typename F>
cudaError_t cudaFuncSetAttribute(F *, cudaFuncAttribute, int) { return cudaSuccess; }

/* kernels: a launch runs the blocks one after another, each block's threads as
 * OS threads (barriers for __syncthreads and the warp shuffles) */
void cudamock_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn);
void cudamock_launch_seq(dim3 grid, dim3 block, size_t smem, const std::function<void()> &fn);
extern unsigned char *cudamock_smem;
void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu); /* a barrier over the calling thread's warp */
uint64_t cudamock_shfl(uint64_t bits, int src_lane);
/* mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 over the warp: d += A·B
 * with each lane's fragments laid out as the PTX ISA says (fp8mma.cu) */
void cudamock_mma_e4m3(float *d, const uint32_t *a, const uint32_t *b);
/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 over the warp (attention.cu) */
void cudamock_mma_bf16(float *d, const uint32_t *a, const uint32_t *b);
template <typename T>
T __shfl_sync(unsigned mask, T v, int src) {
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof v);
    b = cudamock_shfl(b, src & 31);
    T r;
    std::memcpy(&r, &b, sizeof r);
    return r;
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int o) {
    return __shfl_sync(mask, v, (int)((threadIdx.x & 31) ^ (unsigned)o));
}
/* round-to-nearest double arithmetic that the compiler may not contract
 * (the host compiler contracts nothing without an FMA target) */
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
#endif
