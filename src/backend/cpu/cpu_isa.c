/*
 * cpu_isa.c — run-time SIMD level (cpu_isa.h).
 */
#include "backend/cpu/cpu_isa.h"

#include <stdlib.h>
#include <string.h>

static int g_isa = -1, g_max = -1;

int ds_cpu_isa_max(void) {
    if (g_max >= 0) return g_max;
    int m = DS_ISA_SCALAR;
#ifdef DS_X86_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) m = DS_ISA_AVX2;
    if (m == DS_ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        m = DS_ISA_AVX512;
#endif
    return g_max = m;
}

int ds_cpu_isa(void) {
    if (g_isa >= 0) return g_isa;
    int m = ds_cpu_isa_max();
    const char *e = getenv("DS_CPU_ISA");
    if (e && *e) {
        int cap = !strcmp(e, "scalar") ? DS_ISA_SCALAR : !strncmp(e, "avx2", 4) ? DS_ISA_AVX2 : DS_ISA_AVX512;
        if (cap < m) m = cap;
    }
    return g_isa = m;
}

int ds_cpu_isa_set(int isa) {
    int prev = ds_cpu_isa();
    int m = ds_cpu_isa_max();
    g_isa = isa < DS_ISA_SCALAR ? DS_ISA_SCALAR : isa > m ? m : isa;
    return prev;
}

const char *ds_cpu_isa_name(int isa) {
    return isa == DS_ISA_AVX512 ? "avx512" : isa == DS_ISA_AVX2 ? "avx2+fma" : "scalar";
}

static int g_bf16_on = -1;

int ds_cpu_bf16_set(int on) {
    if (g_bf16_on < 0) {
        const char *e = getenv("DS_CPU_BF16");
        g_bf16_on = !(e && !strcmp(e, "0"));
    }
    int prev = g_bf16_on;
    g_bf16_on = on ? 1 : 0;
    return prev;
}

int ds_cpu_has_avx512bf16(void) {
#ifdef DS_X86_SIMD
    if (g_bf16_on < 0) ds_cpu_bf16_set(ds_cpu_bf16_set(1)); /* read DS_CPU_BF16 once */
    if (ds_cpu_isa() < DS_ISA_AVX512 || !g_bf16_on) return 0;
    static int have = -1;
    if (have < 0) {
        /* CPUID leaf 7 subleaf 1, EAX bit 5 */
        unsigned a = 0, b = 0, c = 0, d = 0;
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
        have = (a >> 5) & 1;
    }
    return have;
#else
    return 0;
#endif
}
