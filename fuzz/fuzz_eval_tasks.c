/* fuzz_eval_tasks.c — libFuzzer target for the evaluation data readers (src/eval/tasks.c):
 * the same bytes as JSONL for mc / ll / gen, as a HellaSwag 6-line file, and as raw text split
 * into documents, lines and WikiText articles (with the detokenizer), in both error modes.
 * Any input must give documents or a clean error, never a crash or a leak. */
#include "eval/eval.h"
#include "base/base.h"
#include "fuzz_msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *specs[] = {
        "mc:f.jsonl", "mc:f.jsonl#prompt=qa", "ll:f.jsonl", "gen:f.jsonl", "mc:f.txt",
        "lm:f.txt", "lm:f.txt#docs=lines", "lm:f.txt#docs=wikitext,detok=wikitext",
    };
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++)
        for (int mode = 0; mode < 2; mode++) {
            ds_eval_opts o;
            ds_eval_opts_default(&o);
            o.on_error = mode ? DS_ON_ERROR_SKIP : DS_ON_ERROR_STOP;
            o.limit = mode ? 3 : 0;
            ds_task t;
            if (ds_task_parse_spec(&t, specs[s], NULL) == 0) {
                FILE *keep = stderr;
                stderr = fopen("/dev/null", "w"); /* skip-mode warnings */
                if (ds_task_load_buffer(&t, buf, size, &o) != 0) ds_fuzz_check_msg(ds_errmsg());
                fclose(stderr);
                stderr = keep;
            }
            ds_task_free(&t);
        }
    /* the text rules on arbitrary bytes */
    char *h = ds_hellaswag_preprocess(buf), *w = ds_wikitext_detokenize(buf), *x = ds_extract_last_number(buf);
    char *a = ds_normalize_answer(buf), *f = ds_extract_first_word(buf);
    (void)ds_py_word_count(buf, size);
    (void)ds_utf8_chars(buf, size);
    free(h); free(w); free(x); free(a); free(f);
    free(buf);
    return 0;
}
