/*
 * eval.h — evaluation tasks scored as lm-evaluation-harness scores them
 * (docs/tokenizer-eval-data.md section 3), over a ds_lm (lm.h).
 *
 * Task kinds:
 *   mc   multiple choice by log-likelihood: acc, acc_norm (per character), acc_bytes
 *   ll   loglikelihood of a target (LAMBADA): perplexity and acc (= target is greedy)
 *   lm   rolling log-likelihood of documents: bits_per_byte, byte/word/token perplexity
 *   gen  greedy generation with stop sequences, exact match after answer extraction
 *
 * A task SPEC is a name as lm-eval spells it (lambada_openai, wikitext, arc_easy, arc_challenge,
 * winogrande, hellaswag, piqa; lambada_gen; aliases lambada and wikitext2: files under the data
 * folder) or KIND:PATH[#opt=val,opt=val...]; see ds_task_parse_spec.
 * BOS: by default text is encoded as lm-eval's HFLM encodes it without add_bos_token (under
 * transformers 5.x: tokenizer.json's post-processor only, tokenizer_config.json's add_bos_token
 * is not applied); add_bos (ds_eval_opts, or the task option add_bos=1) = HFLM(add_bos_token=True).
 * Flow: ds_task_load (parse the file into documents) -> ds_task_run (score with a ds_lm)
 * -> ds_eval_print_table / ds_eval_write_json.
 */
#ifndef DS_EVAL_EVAL_H
#define DS_EVAL_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "eval/lm.h"

typedef enum { DS_TASK_MC = 0, DS_TASK_LL, DS_TASK_LM, DS_TASK_GEN } ds_task_kind;
typedef enum { DS_EXTRACT_NONE = 0, DS_EXTRACT_LAST_NUMBER, DS_EXTRACT_FIRST_WORD } ds_extract;
typedef enum { DS_DOCS_FILE = 0, DS_DOCS_LINES, DS_DOCS_WIKITEXT } ds_docs_split;
enum { DS_ON_ERROR_STOP = 0, DS_ON_ERROR_SKIP = 1 };

/* One document.  MC: n options, option i scores cont[i] after ctx[i] (ctx[i] may be the
 * same string for all i); len_chars/len_bytes are the choice lengths without the
 * delimiter (the acc_norm / acc_bytes normalizers).  LL: n = 1.  LM: text is scored,
 * bytes/words come from the original text.  GEN: ctx[0] is the prompt, answer the
 * reference. */
typedef struct {
    int64_t line;        // 1-based line (or item) in the source file
    int n;
    char **ctx, **cont;  // (n)
    double *len_chars, *len_bytes; // (n)
    int gold;
    char *text;          // LM: text to score (after detokenization)
    int64_t bytes, words;// LM: of the original text
    char *answer;        // GEN
} ds_eval_doc;

typedef struct {
    char name[64];
    ds_task_kind kind;
    char *path;
    int multi_ctx;       // MC from context_options: report acc only
    /* spec options */
    int prompt_qa;       // MC: context = query without trailing newlines + "\nAnswer:"
    char *delim;         // MC/LL: target delimiter (default " ")
    int64_t stride;      // LM: predicted tokens per window (0 = max_length, lm-eval rolling)
    ds_docs_split docs_split;
    int detok_wikitext;
    char **until; int n_until;     // GEN stop sequences
    int64_t max_new;               // GEN
    int64_t limit;                 // first N documents of this task (0: the run's --limit)
    int add_bos;                   // -1: the run's add_bos; 0/1: this task's (option add_bos=)
    ds_extract extract;            // GEN
    /* documents */
    ds_eval_doc *docs;
    int64_t n_docs, n_skipped;
} ds_task;

typedef struct {
    int64_t limit;     // first N documents (<= 0: all)
    int64_t batch;     // requests per loglik call (>= 1)
    int on_error;      // DS_ON_ERROR_STOP or DS_ON_ERROR_SKIP (malformed lines)
    int progress;      // progress bar on stderr
    int add_bos;       // encode as lm-eval's HFLM(add_bos_token=True) (see above)
    const char *data_dir; // for named tasks
} ds_eval_opts;

typedef struct {
    const char *name;
    double value, stderr_;
    int has_stderr;
} ds_metric;

/* Per-document outcome (also written as --samples JSONL). */
typedef struct {
    double *ll;          // (n) summed log-likelihood per option
    uint8_t *greedy;     // (n) every continuation token was the argmax
    int64_t *n_tokens;   // (n) scored tokens
    int pred, pred_norm, pred_bytes;
    char *generated;     // GEN: text after cutting at the first stop sequence
    char *extracted;     // GEN: extracted answer
    int correct;         // GEN exact match
} ds_doc_result;

typedef struct {
    ds_metric metrics[8];
    int n_metrics;
    int64_t n;           // documents scored
    ds_doc_result *docs; // (n)
    double seconds;
    double cpu_seconds; // process CPU time (all threads) spent on the task
} ds_task_result;

void ds_eval_opts_default(ds_eval_opts *o);
/* Parse a SPEC into t (no file read yet).  Names resolve under data_dir.  An unknown
 * name is an error that suggests the nearest known names. */
int ds_task_parse_spec(ds_task *t, const char *spec, const char *data_dir);
/* The BOS setting a task runs with (its add_bos option, else o->add_bos). */
int ds_task_add_bos(const ds_task *t, const ds_eval_opts *o);
/* Parse the SPEC and read its documents (applies limit and on_error). */
int ds_task_load(ds_task *t, const char *spec, const ds_eval_opts *o);
/* Load documents from an in-memory buffer already named by t (tests use this). */
int ds_task_load_buffer(ds_task *t, const char *buf, size_t len, const ds_eval_opts *o);
void ds_task_free(ds_task *t);

/* Score every document; fills r.  samples (or NULL) gets one JSON line per document. */
int ds_task_run(const ds_task *t, const ds_lm *lm, const ds_eval_opts *o, FILE *samples,
                ds_task_result *r);
void ds_task_result_free(ds_task_result *r);
const ds_metric *ds_result_metric(const ds_task_result *r, const char *name);

/* errors (or NULL): per task, its error message, or NULL when it ran; failed tasks are left
 * out of the table and listed under "errors" in the JSON. */
void ds_eval_print_table(FILE *f, const ds_task *tasks, const ds_task_result *res, int n, const char *const *errors);
/* results JSON, written atomically */
int ds_eval_write_json(const char *path, const ds_lm *lm, const char *model, const ds_eval_opts *o,
                       const ds_task *tasks, const ds_task_result *res, int n, const char *const *errors);

/* ---- pieces with their own tests ----------------------------------------- */
/* lm-eval's pair encoding (_encode_pair, and the empty-context rule of loglikelihood):
 * ctx/cont ids, malloc'd.  Returns 0 or -1. */
int ds_eval_encode_pair(const ds_lm *lm, int add_bos, const char *ctx, const char *cont,
                        int32_t **ctx_ids, int64_t *n_ctx, int32_t **cont_ids, int64_t *n_cont);

/* lm-eval rolling windows (get_rolling_token_windows + make_disjoint_window) over n
 * tokens with window max_len and context_len = max_len - stride + 1 (stride = max_len:
 * lm-eval's loglikelihood_rolling).  Window w predicts tokens [pred_start, pred_start +
 * pred_len) and its context is tokens [ctx_start, pred_start), where ctx_start = -1
 * means the prefix token (first window only).  Returns the window count; *out malloc'd. */
typedef struct { int64_t ctx_start, pred_start, pred_len; } ds_window;
int64_t ds_rolling_windows(int64_t n, int64_t max_len, int64_t stride, ds_window **out);

/* mean and its sample standard error, as lm-eval's mean / mean_stderr */
double ds_mean(const double *x, int64_t n);
double ds_mean_stderr(const double *x, int64_t n);

/* text helpers (UTF-8 in, malloc'd UTF-8 out) */
int64_t ds_utf8_chars(const char *s, size_t n);     // Python len(str)
int64_t ds_py_word_count(const char *s, size_t n);  // len(re.split(r"\s+", s))
size_t ds_py_rstrip_len(const char *s, size_t n);   // len(s.rstrip())
char *ds_py_strip(const char *s);                   // s.strip()
char *ds_hellaswag_preprocess(const char *s);
char *ds_wikitext_detokenize(const char *s);
char *ds_extract_last_number(const char *s);        // NULL when there is none
char *ds_normalize_answer(const char *s);           // strip, drop ',' and '$', trailing '.'
char *ds_extract_first_word(const char *s);         // first whitespace-separated word, trailing punctuation dropped

#endif
