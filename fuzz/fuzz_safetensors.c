/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser
 * (ds_st_parse_buffer) and the conversions that read tensor data through the
 * parsed offsets.  Property: any input is either a clean error or a file whose
 * every tensor lies inside the input; nothing crashes (ASan/UBSan).
 *   make fuzz FUZZ_SECONDS=20      (seeds in fuzz/seeds/fuzz_safetensors) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "fuzz_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_st_file f;
    if (ds_st_parse_buffer(&f, data, size, "fuzz.safetensors") != 0) {
        if (!strstr(ds_errmsg(), "fuzz.safetensors")) abort(); /* messages name the file */
        ds_fuzz_check_msg(ds_errmsg());
        return 0;
    }
    for (int64_t i = 0; i < f.n; i++) {
        const ds_st_tensor *t = &f.tensors[i];
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) abort();
        if (t->numel > (1 << 20)) continue;
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
        ds_st_to_f32(t, out);
        /* block dequant against the next tensor as a scale (mostly a shape error) */
        if (i + 1 < f.n && ds_st_dequant_fp8_block(t, &f.tensors[i + 1], 2, 3, out) != 0) ds_fuzz_check_msg(ds_errmsg());
        free(out);
        if (ds_st_find(&f, t->name) != t) abort();
    }
    ds_st_close(&f);
    return 0;
}
