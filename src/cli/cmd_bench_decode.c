/*
 * cmd_bench_decode.c — `dsv3 bench-decode --config CONFIG.json|PRESET --batch B
 * [--prompt P] [--new N] [--device cpu|cuda]` times greedy decoding of B
 * sequences at once on a randomly initialised model: the continuous-batching
 * engine `serve` runs (infer/decode_rows.c: B cache rows, one token each per
 * step), batched prefills of the B prompts (random ids, each row its own
 * seed, so row i's prompt does not depend on B), then N-1 decode steps of B
 * tokens, the next tokens by the table's argmax.  Prints one JSON line:
 * prefill and decode seconds, decode tokens/s over all rows (B·(N−1) tokens),
 * and the first row's new tokens (the same for any B on the CPU table, where
 * a row's numbers are a batch-1 step's: tests/test_cli_bench.c checks it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "infer/infer.h"
#include "model/model.h"
#include "model/presets.h"

static int run(int argc, char **argv) {
    const char *config = NULL, *device = "cpu";
    long long B = 0, P = 33, N = 32;
    const ds_opt opts[] = {
        {"--config", DS_OPT_STR, &config, "CONFIG.json|PRESET  model (randomly initialised)"},
        {"--batch", DS_OPT_INT, &B, "B  sequences decoded together", DS_RANGE(1, 4096)},
        {"--prompt", DS_OPT_INT, &P, "P  prompt tokens a sequence (default 33)", DS_RANGE(1, 1000000)},
        {"--new", DS_OPT_INT, &N, "N  new tokens a sequence (default 32; the first from the prefill)", DS_RANGE(2, 1000000)},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP},
    };
    ds_cli_parse("bench-decode", "--config CONFIG.json|PRESET --batch B [--prompt P] [--new N]", argc, argv, opts, 5,
                 NULL, 0, NULL);
    if (!config || B <= 0) ds_cli_usage_error("bench-decode", "--config and --batch are required");
    ds_cli_check_config("bench-decode", config);
    ds_cli_device_resident("bench-decode", device);
    struct ds_ops ops;
    if (ds_backend_table_resident(&ops, device, DS_PREC_FP32)) return ds_cli_fail("bench-decode");
    const struct ds_ops *dev = ops.host_visible ? NULL : &ops;
    ds_model m;
    if (ds_cli_random_model(&m, config, dev)) return ds_cli_fail("bench-decode");
    const long long maxpos = m.cfg.max_position_embeddings;
    if (P + N > maxpos) {
        ds_model_free(&m);
        ds_cli_usage_error("bench-decode", "--prompt + --new is %lld, over the model's %lld positions", P + N, maxpos);
    }
    const int64_t V = m.cfg.vocab_size;
    ds_rows_engine e;
    if (ds_rows_engine_create(&e, &m, &ops, B, P + N) || ds_rows_engine_prefill_init(&e, B * P)) {
        ds_model_free(&m);
        return ds_cli_fail("bench-decode");
    }
    int32_t *ids = ds_malloc((size_t)(B * P) * sizeof(int32_t)), *next = ds_malloc((size_t)B * sizeof(int32_t));
    int32_t *row0 = ds_malloc((size_t)N * sizeof(int32_t));
    int64_t *rows = ds_malloc((size_t)B * sizeof(int64_t)), *pos = ds_malloc((size_t)B * sizeof(int64_t));
    for (int64_t i = 0; i < B; i++) {
        ds_rng r;
        ds_rng_seed(&r, 1000 + (uint64_t)i);
        for (int64_t j = 0; j < P; j++) ids[i * P + j] = (int32_t)ds_rng_below(&r, (uint64_t)V);
        rows[i] = i, pos[i] = 0;
    }
    int rc = 0;
    double t0 = ds_now();
    /* the prompts in as few prefill forwards as the engine's chunk allows */
    const int64_t per = e.pchunk / P > 0 ? e.pchunk / P : 1;
    for (int64_t i0 = 0; i0 < B && !rc; i0 += per) {
        const int64_t n = B - i0 < per ? B - i0 : per;
        if (ds_rows_engine_prefill(&e, ids + i0 * P, rows + i0, pos + i0, NULL, n, P)) rc = -1;
        else ops.argmax_rows(next + i0, e.p_logits, n, V); /* host ids: synchronises */
    }
    double t1 = ds_now();
    row0[0] = next[0];
    for (int64_t i = 0; i < B; i++) pos[i] = P;
    for (long long s = 1; s < N && !rc; s++) {
        if (ds_rows_engine_step(&e, next, rows, pos, B)) {
            rc = -1;
            break;
        }
        ops.argmax_rows(next, e.logits, B, V);
        row0[s] = next[0];
        for (int64_t i = 0; i < B; i++) pos[i]++;
    }
    double t2 = ds_now();
    if (!rc) {
        printf("{\"impl\": \"dsv3\", \"device\": \"%s\", \"threads\": %d, \"batch\": %lld, \"prompt_tokens\": %lld, "
               "\"new_tokens\": %lld, \"prefill_s\": %.6f, \"decode_s\": %.6f, \"tokens_per_s\": %.2f, "
               "\"prefill_tokens_per_s\": %.2f, \"row0_ids\": [",
               device, ds_threads(), B, P, N, t1 - t0, t2 - t1, (double)(B * (N - 1)) / (t2 - t1),
               (double)(B * P) / (t1 - t0));
        for (long long s = 0; s < N; s++) printf("%s%d", s ? ", " : "", row0[s]);
        printf("]}\n");
    }
    free(ids), free(next), free(row0), free(rows), free(pos);
    ds_rows_engine_free(&e);
    ds_model_free(&m);
    return rc ? ds_cli_fail("bench-decode") : 0;
}
DS_COMMAND("bench-decode", "time greedy decoding of B sequences at once (serve's batching engine) on random ids", run)
