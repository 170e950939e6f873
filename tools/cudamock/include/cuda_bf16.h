/* cudamock: nothing of cuda_bf16.h is used */
