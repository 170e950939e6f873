/* cudamock: the FP8 conversions, through dsv3's own codecs (num/fp8.h) */
#ifndef CUDAMOCK_FP8_H
#define CUDAMOCK_FP8_H
#include <cstdint>
typedef unsigned char __nv_fp8_storage_t;
enum __nv_saturation_t { __NV_NOSAT, __NV_SATFINITE };
enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };
struct __half_raw { float f; };
struct __half {
    float f;
    __half(__half_raw r) : f(r.f) {}
};
inline float __half2float(__half h) { return h.f; }
__nv_fp8_storage_t __nv_cvt_float_to_fp8(float v, __nv_saturation_t s, __nv_fp8_interpretation_t t);
__half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t c, __nv_fp8_interpretation_t t);
#endif
