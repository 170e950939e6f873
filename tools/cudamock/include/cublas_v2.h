/* cudamock: the cuBLAS API the CUDA backend uses (the grouped GEMM), on the CPU. */
#ifndef CUDAMOCK_CUBLAS_V2_H
#define CUDAMOCK_CUBLAS_V2_H
#include "cublasLt.h"

typedef struct cudamock_blas *cublasHandle_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
const char *cublasGetStatusString(cublasStatus_t s);
/* CUDAMOCK_GROUPED=0: refuses (NOT_SUPPORTED), for the fallback path */
cublasStatus_t cublasGemmGroupedBatchedEx(cublasHandle_t h, const cublasOperation_t transa[],
                                          const cublasOperation_t transb[], const int m[], const int n[],
                                          const int k[], const void *alpha, const void *const A[], cudaDataType at,
                                          const int lda[], const void *const B[], cudaDataType bt, const int ldb[],
                                          const void *beta, void *const C[], cudaDataType ct, const int ldc[],
                                          int group_count, const int group_size[], cublasComputeType_t compute);
#endif
