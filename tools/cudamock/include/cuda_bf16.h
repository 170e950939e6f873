/* cudamock: the BF16 type of cuda_bf16.h that the tensor-core attention uses
 * (bits only: __ushort_as_bfloat16 in, __bfloat162float out) */
#ifndef CUDAMOCK_CUDA_BF16_H
#define CUDAMOCK_CUDA_BF16_H
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 {
    uint16_t bits;
};
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
inline float __bfloat162float(__nv_bfloat16 v) {
    uint32_t u = (uint32_t)v.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
#endif
