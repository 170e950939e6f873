/*
 * cpu_isa.h — which SIMD level the CPU kernels use, chosen at run time.
 *
 * The AVX-512 and AVX2+FMA kernels are compiled with per-function target
 * attributes (DS_TARGET_AVX512, DS_TARGET_AVX2), so one build carries both and
 * picks the widest the CPU has (AVX-512 on AVX-512 CPUs, AVX2+FMA on Zen 3 and
 * the like, plain C elsewhere).  DS_CPU_ISA=avx2 (or scalar) in the
 * environment caps the level (DS_CPU_BF16=0 turns off only AVX512_BF16) — to compare the paths on one machine; tests
 * switch with ds_cpu_isa_set.
 */
#ifndef DS_CPU_ISA_H
#define DS_CPU_ISA_H

enum { DS_ISA_SCALAR = 0, DS_ISA_AVX2 = 1, DS_ISA_AVX512 = 2 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DS_X86_SIMD 1
#define DS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define DS_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#endif

/* The level in use: the CPU's best, capped by DS_CPU_ISA (read once). */
int ds_cpu_isa(void);
/* The best level this CPU supports (ignores DS_CPU_ISA). */
int ds_cpu_isa_max(void);
/* Use level `isa` from now on (clamped to what the CPU has); returns the
 * previous level.  For tests and benches; not thread-safe against kernels
 * running at the same time. */
int ds_cpu_isa_set(int isa);
/* "avx512", "avx2+fma" or "scalar". */
const char *ds_cpu_isa_name(int isa);
/* 1 when the CPU has AVX512_BF16 (vdpbf16ps), the level is AVX-512 and it is
 * not switched off (DS_CPU_BF16=0 in the environment, or ds_cpu_bf16_set(0)). */
int ds_cpu_has_avx512bf16(void);
/* Allow (1) or forbid (0) the AVX512_BF16 kernels; returns the previous setting. */
int ds_cpu_bf16_set(int on);

#endif
