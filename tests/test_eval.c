/* test_eval.c — the evaluation layer against mock models with analytic log-likelihoods:
 * uniform bytes (BPB = 8), a fixed cost per token (acc vs acc_norm vs acc_bytes), a copy
 * model (hand-built tasks with known answers), a recording model (rolling windows,
 * truncation, pair encoding as lm-eval builds them); text rules against lm-eval's own
 * functions (tests/fixtures/eval/text_cases.json, tools/make_eval_fixtures.py); bad input. */
#include "test.h"
#include "base/base.h"
#include "eval/eval.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>

/* ---- mock models -------------------------------------------------------------- */
enum { M_FIXED, M_COPY, M_RECORD };
#define MAXREC 256
typedef struct {
    int kind;
    int word_tok;               /* encode by words (" word" pieces) instead of bytes */
    int64_t nrec;
    struct { int32_t tok[600]; int64_t n_ctx, n_cont; const int32_t *ctx_ptr; } rec[MAXREC];
    int64_t calls;
} mock;

/* the copy model's prediction after seq[0..n): the token that followed the latest earlier
 * occurrence of the longest suffix (up to 16 tokens) seen before; 0 when there is none */
static int32_t copy_next(const int32_t *seq, int64_t n) {
    for (int64_t k = n - 1 < 16 ? n - 1 : 16; k >= 1; k--)
        for (int64_t j = n - k - 1; j >= 0; j--)
            if (!memcmp(seq + j, seq + n - k, (size_t)k * sizeof *seq)) return seq[j + k];
    return 0;
}

static int mock_loglik(void *ctx, ds_lm_request *reqs, int64_t n) {
    mock *m = ctx;
    m->calls++;
    for (int64_t r = 0; r < n; r++) {
        ds_lm_request *q = &reqs[r];
        int32_t *seq = malloc((size_t)(q->n_ctx + q->n_cont) * sizeof *seq);
        memcpy(seq, q->ctx, (size_t)q->n_ctx * sizeof *seq);
        memcpy(seq + q->n_ctx, q->cont, (size_t)q->n_cont * sizeof *seq);
        if (m->kind == M_RECORD && m->nrec < MAXREC && q->n_ctx + q->n_cont <= 600) {
            memcpy(m->rec[m->nrec].tok, seq, (size_t)(q->n_ctx + q->n_cont) * sizeof *seq);
            m->rec[m->nrec].n_ctx = q->n_ctx;
            m->rec[m->nrec].n_cont = q->n_cont;
            m->rec[m->nrec].ctx_ptr = q->ctx;
            m->nrec++;
        }
        for (int64_t j = 0; j < q->n_cont; j++) {
            int64_t pos = q->n_ctx + j; /* predicting seq[pos] from seq[0..pos) */
            if (m->kind == M_COPY) {
                int32_t p = copy_next(seq, pos);
                q->logprobs[j] = (float)(seq[pos] == p ? log(0.9) : log(0.1 / 255));
                q->greedy[j] = seq[pos] == p;
            } else { /* fixed: every token costs 1 nat; M_RECORD also tags its position */
                q->logprobs[j] = -1.0f;
                q->greedy[j] = 0;
            }
        }
        free(seq);
    }
    return 0;
}

static int mock_generate(void *ctx, const int32_t *ids, int64_t n, int64_t max_new, ds_lm_stop_fn stop,
                         void *user, int32_t *out, int64_t *n_out) {
    int32_t *seq = malloc((size_t)(n + max_new) * sizeof *seq);
    memcpy(seq, ids, (size_t)n * sizeof *seq);
    *n_out = 0;
    for (int64_t k = 0; k < max_new; k++) {
        int32_t t = copy_next(seq, n + k);
        if (t == 0) break; /* eos */
        seq[n + k] = t;
        out[(*n_out)++] = t;
        if (stop(user, out, *n_out)) break;
    }
    free(seq);
    (void)ctx;
    return 0;
}

/* word pieces: an optional run of spaces glued to the following letters/digits; any other
 * byte alone.  Ids are FNV hashes mod 100000 + 256 (collisions do not matter here). */
static int64_t mock_encode(void *ctx, const char *s, size_t n, int mode, int32_t **ids) {
    mock *m = ctx;
    *ids = malloc((n + 1) * sizeof(int32_t));
    int64_t k = 0;
    if (mode == DS_LM_ENC_BOS) (*ids)[k++] = 0; /* the mock's BOS (= its prefix id) */
    if (!m->word_tok) {
        for (size_t i = 0; i < n; i++) (*ids)[k++] = (unsigned char)s[i];
        return k;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] == ' ') j++;
        size_t e = j;
        while (e < n && ((s[e] >= 'a' && s[e] <= 'z') || (s[e] >= 'A' && s[e] <= 'Z') || (s[e] >= '0' && s[e] <= '9'))) e++;
        if (e == j) { e = j == i ? i + 1 : j; }
        (*ids)[k++] = (int32_t)(ds_hash64(s + i, e - i, DS_HASH64_INIT) % 100000) + 256;
        i = e;
    }
    return k;
}

static int64_t mock_decode(void *ctx, const int32_t *ids, int64_t n, char **text) {
    (void)ctx;
    *text = malloc((size_t)n + 1);
    for (int64_t i = 0; i < n; i++) (*text)[i] = (char)ids[i];
    (*text)[n] = 0;
    return n;
}

static void mock_lm(ds_lm *lm, mock *m, int kind, int64_t max_length) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    memset(lm, 0, sizeof *lm);
    lm->ctx = m;
    lm->name = "mock";
    lm->max_length = max_length;
    lm->prefix_id = 0;
    lm->eos_id = 0;
    lm->loglik = mock_loglik;
    lm->generate = mock_generate;
    lm->encode = mock_encode;
    lm->decode = mock_decode;
}

/* Build a task of the given spec from an in-memory file. */
static int task_from(ds_task *t, const char *spec, const char *content, const ds_eval_opts *o) {
    if (ds_task_parse_spec(t, spec, NULL)) return -1;
    return ds_task_load_buffer(t, content, strlen(content), o);
}

static double metric(const ds_task_result *r, const char *name) {
    const ds_metric *m = ds_result_metric(r, name);
    return m ? m->value : NAN;
}

/* ---- language modelling ---------------------------------------------------------- */
TEST(uniform_bytes_bpb_is_8) {
    ds_lm lm;
    ds_lm_uniform_bytes(&lm, 16);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    /* 2 documents (docs=lines, newline not included), multi-byte UTF-8 included */
    const char *text =
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of fool\n"
        "caf\xC3\xA9 na\xC3\xAFve \xE2\x82\xAC 12 words? no: six\n";
    CHECK(task_from(&t, "lm:mem.txt#docs=lines", text, &o) == 0);
    CHECK(t.n_docs == 2);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    /* every byte costs ln 256 nats = 8 bits, however the windows fall */
    CHECK_NEAR(metric(&r, "bits_per_byte"), 8.0, 1e-6);
    CHECK_NEAR(metric(&r, "byte_perplexity"), 256.0, 256.0 * 1e-6);
    CHECK_NEAR(metric(&r, "token_perplexity"), 256.0, 256.0 * 1e-6);
    /* bytes 101 and 34; words: Python len(re.split(r"\s+", line)) = 24 and 7 */
    double bytes = 101 + 34, words = 24 + 7;
    CHECK(t.docs[0].bytes == 101 && t.docs[1].bytes == 34);
    CHECK(t.docs[0].words == 24 && t.docs[1].words == 7);
    CHECK_NEAR(log(metric(&r, "word_perplexity")), bytes * log(256.0) / words, 1e-5);
    ds_task_result_free(&r);
    ds_task_free(&t);
}

/* lm-eval get_rolling_token_windows + make_disjoint_window, transcribed with Python list
 * semantics: the independent oracle of ds_rolling_windows. */
static int py_windows(int64_t n, int64_t L, int64_t context_len, int64_t out[][3]) {
    int k = 0;
    int64_t pred_len = L - context_len + 1, predicted = 0;
    int64_t first = n < L ? n : L;
    /* a = [prefix] + tokens[:first-1] (len first), b = tokens[:first]; ctx = a[:len(a)-(len(b)-1)] = [prefix] */
    out[k][0] = -1; out[k][1] = 0; out[k][2] = first; k++;
    predicted += first;
    while (predicted < n) {
        int64_t wpl = n - predicted < pred_len ? n - predicted : pred_len;
        int64_t end = predicted + wpl;
        int64_t a0 = end - L - 1, a1 = end - 1; /* a = tokens[a0:a1] */
        int64_t alen = a1 - a0;
        int64_t ctx_len = alen - (wpl - 1);
        out[k][0] = a0; out[k][1] = a0 + ctx_len; out[k][2] = wpl; k++;
        predicted += wpl;
    }
    return k;
}

TEST(rolling_windows_match_lm_eval) {
    /* hand-worked case: n = 20, L = 8: [P]+t0..t6 -> t0..t7; [t7] -> t8..t15; [t11..t15] -> t16..t19 */
    ds_window *w;
    int64_t k = ds_rolling_windows(20, 8, 8, &w);
    CHECK(k == 3);
    CHECK(w[0].ctx_start == -1 && w[0].pred_start == 0 && w[0].pred_len == 8);
    CHECK(w[1].ctx_start == 7 && w[1].pred_start == 8 && w[1].pred_len == 8);
    CHECK(w[2].ctx_start == 11 && w[2].pred_start == 16 && w[2].pred_len == 4);
    free(w);
    /* stride 4: context_len 5 */
    k = ds_rolling_windows(20, 8, 4, &w);
    CHECK(k == 4);
    CHECK(w[1].ctx_start == 3 && w[1].pred_start == 8 && w[1].pred_len == 4);
    CHECK(w[3].ctx_start == 11 && w[3].pred_start == 16 && w[3].pred_len == 4);
    free(w);
    /* against the transcription, many sizes: same windows; every token predicted once */
    static int64_t ref[4096][3];
    for (int64_t L = 1; L <= 9; L++)
        for (int64_t s = 1; s <= L; s++)
            for (int64_t n = 0; n <= 40; n++) {
                k = ds_rolling_windows(n, L, s, &w);
                if (n == 0) { CHECK(k == 0); continue; }
                int nr = py_windows(n, L, L - s + 1, ref);
                CHECK_MSG(k == nr, "n=%lld L=%lld s=%lld", (long long)n, (long long)L, (long long)s);
                int64_t next = 0;
                for (int64_t i = 0; i < k && i < nr; i++) {
                    CHECK(w[i].ctx_start == ref[i][0] && w[i].pred_start == ref[i][1] && w[i].pred_len == ref[i][2]);
                    CHECK(w[i].pred_start == next);
                    next += w[i].pred_len;
                    int64_t input = (w[i].ctx_start < 0 ? 1 : w[i].pred_start - w[i].ctx_start) + w[i].pred_len - 1;
                    CHECK(input <= L && input >= 1);
                }
                CHECK(next == n);
                free(w);
            }
}

TEST(rolling_requests_cover_every_token_once) {
    /* a recording byte model with an 8-token window over a 20-byte document */
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_RECORD, 8);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.batch = 2;
    ds_task t;
    const char *doc = "ABCDEFGHIJKLMNOPQRST";
    CHECK(task_from(&t, "lm:mem.txt", doc, &o) == 0);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(m.nrec == 3);
    /* window 0: ctx [0] (prefix), cont A..H; window 1: ctx H, cont I..P; window 2: ctx L..P, cont Q..T */
    CHECK(m.rec[0].n_ctx == 1 && m.rec[0].tok[0] == 0 && m.rec[0].n_cont == 8 && m.rec[0].tok[1] == 'A');
    CHECK(m.rec[1].n_ctx == 1 && m.rec[1].tok[0] == 'H' && m.rec[1].n_cont == 8 && m.rec[1].tok[1] == 'I');
    CHECK(m.rec[2].n_ctx == 5 && m.rec[2].tok[0] == 'L' && m.rec[2].n_cont == 4 && m.rec[2].tok[5] == 'Q');
    CHECK(m.calls == 2); /* batch 2: windows {0,1}, {2} */
    CHECK_NEAR(r.docs[0].ll[0], -20.0, 1e-9);
    ds_task_result_free(&r);
    ds_task_free(&t);
}

/* ---- multiple choice ------------------------------------------------------------------ */
TEST(acc_acc_norm_acc_bytes_selection) {
    /* fixed 1 nat per byte: ll(choice) = -(1 + bytes).  doc 1: "\xC3\xA9\xC3\xA9" (2 chars, 4 bytes,
     * ll -5) vs "abc" (ll -4): acc -> abc, acc_norm (per char) -5/2 < -4/3 -> abc, acc_bytes -5/4 >
     * -4/3 -> e-acute pair.  doc 2: "ab" (-3) vs "abcdef" (-7): acc -> ab; per char -1.5 < -7/6 ->
     * abcdef.  doc 3: equal lengths tie -> the first (numpy argmax). */
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_FIXED, 64);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    const char *f =
        "{\"query\": \"Q1\", \"choices\": [\"\xC3\xA9\xC3\xA9\", \"abc\"], \"gold\": 1}\n"
        "{\"query\": \"Q2\", \"choices\": [\"ab\", \"abcdef\"], \"gold\": 1}\n"
        "\n"
        "{\"query\": \"Q3\", \"choices\": [\"xy\", \"zw\"], \"gold\": 1}\n";
    CHECK(task_from(&t, "mc:mem.jsonl", f, &o) == 0);
    CHECK(t.n_docs == 3);
    CHECK(t.docs[2].line == 4);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK_NEAR(r.docs[0].ll[0], -5.0, 1e-9);
    CHECK(r.docs[0].pred == 1 && r.docs[0].pred_norm == 1 && r.docs[0].pred_bytes == 0);
    CHECK(r.docs[1].pred == 0 && r.docs[1].pred_norm == 1 && r.docs[1].pred_bytes == 1);
    CHECK(r.docs[2].pred == 0 && r.docs[2].pred_norm == 0 && r.docs[2].pred_bytes == 0);
    CHECK_NEAR(metric(&r, "acc"), 1.0 / 3, 1e-12);
    CHECK_NEAR(metric(&r, "acc_norm"), 2.0 / 3, 1e-12);
    CHECK_NEAR(metric(&r, "acc_bytes"), 1.0 / 3, 1e-12);
    /* sample stderr of {1,0,0}: sqrt(((2/3)^2 + 2 (1/3)^2) / 2) / sqrt(3) = 1/3 */
    CHECK_NEAR(ds_result_metric(&r, "acc")->stderr_, 1.0 / 3, 1e-12);
    ds_task_result_free(&r);
    ds_task_free(&t);
}

TEST(copy_model_answers_hand_built_tasks) {
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_COPY, 256);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.batch = 5;
    /* the copy model continues a repeated pattern: the gold choice repeats the context */
    const char *mc =
        "{\"query\": \"the cat sat on the mat. the cat sat on the\", \"choices\": [\"hat\", \"mat\", \"dog\"], \"gold\": 1}\n"
        "{\"query\": \"red green blue. red green\", \"choices\": [\"blue\", \"pink\"], \"gold\": 0}\n"
        "{\"query\": \"1 2 3 4. 1 2 3\", \"choices\": [\"5\", \"9\", \"4\", \"3\"], \"gold\": 2}\n";
    ds_task t;
    CHECK(task_from(&t, "mc:mem.jsonl", mc, &o) == 0);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(metric(&r, "acc") == 1.0 && metric(&r, "acc_norm") == 1.0);
    for (int d = 0; d < 3; d++) CHECK(r.docs[d].greedy[t.docs[d].gold]);
    /* " mat": ' ' follows "the" again (p 0.9), 'm','a','t' copied (0.9 each) */
    CHECK_NEAR(r.docs[0].ll[1], 4 * log(0.9), 1e-5);
    CHECK(m.calls == 2); /* batch 5: documents {0, 1} (3 + 2 requests), then {2} (4) */
    ds_task_result_free(&r);
    ds_task_free(&t);

    /* LAMBADA-style: perplexity exp(-mean ll) and acc = whole target greedy */
    const char *ll = "{\"context\": \"abc abd abc ab\", \"continuation\": \"d\"}\n"
                     "{\"context\": \"xy xy x\", \"continuation\": \"q\"}\n";
    CHECK(task_from(&t, "ll:mem.jsonl", ll, &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    /* the oracle: copy_next over the whole byte sequences, context + " " + continuation */
    const char *seqs[2] = {"abc abd abc ab d", "xy xy x q"};
    size_t cl[2] = {14, 7};
    double want[2];
    for (int d = 0; d < 2; d++) {
        int32_t s[64];
        size_t n = strlen(seqs[d]);
        for (size_t i = 0; i < n; i++) s[i] = (unsigned char)seqs[d][i];
        want[d] = 0;
        for (size_t p = cl[d]; p < n; p++) want[d] += s[p] == copy_next(s, (int64_t)p) ? log(0.9) : log(0.1 / 255);
    }
    CHECK_NEAR(r.docs[0].ll[0], want[0], 1e-4);
    CHECK_NEAR(r.docs[1].ll[0], want[1], 1e-4);
    CHECK_NEAR(metric(&r, "perplexity"), exp(-(want[0] + want[1]) / 2), 1e-3 * exp(-(want[0] + want[1]) / 2));
    ds_task_result_free(&r);
    ds_task_free(&t);
}

TEST(generation_stop_sequences_and_last_number) {
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_COPY, 64);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    /* "x=12; x=12; x=" -> copies "12;" and stops at ';' -> "12" */
    const char *g = "{\"prompt\": \"x=12; x=12; x=\", \"answer\": \"#### 12\"}\n"
                    "{\"prompt\": \"y=7; y=7; y=\", \"answer\": \"8\"}\n"
                    "{\"prompt\": \"zz\", \"answer\": 3}\n";
    ds_task t;
    CHECK(task_from(&t, "gen:mem.jsonl#until=;,max_new=10,extract=last_number", g, &o) == 0);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(r.docs[0].generated && !strcmp(r.docs[0].generated, "12"));
    CHECK(r.docs[0].correct == 1);
    CHECK(r.docs[1].generated && !strcmp(r.docs[1].generated, "7"));
    CHECK(r.docs[1].correct == 0);
    CHECK(r.docs[2].correct == 0);
    CHECK_NEAR(metric(&r, "exact_match"), 1.0 / 3, 1e-12);
    ds_task_result_free(&r);
    ds_task_free(&t);
    /* LAMBADA by generation: the copy model continues "... blue." with " blue."; the first word
     * without its punctuation is the target */
    const char *lam = "{\"context\": \"red green blue. red green\", \"continuation\": \"blue\"}\n"
                      "{\"context\": \"red green blue. red green\", \"continuation\": \"pink\"}\n";
    CHECK(task_from(&t, "gen:lam.jsonl#extract=first_word,until=\\n,max_new_tokens=8", lam, &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(r.docs[0].extracted && !strcmp(r.docs[0].extracted, "blue"));
    CHECK(r.docs[0].correct == 1 && r.docs[1].correct == 0);
    ds_task_result_free(&r);
    ds_task_free(&t);
    char *w = ds_extract_first_word("  signs, he said"), *e = ds_extract_first_word(" \n ");
    CHECK(!strcmp(w, "signs") && !strcmp(e, ""));
    free(w);
    free(e);
}

/* ---- pair encoding and truncation -------------------------------------------------------- */
TEST(encode_pair_as_lm_eval) {
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_RECORD, 64);
    m.word_tok = 1;
    int32_t *c, *k, *w;
    int64_t nc, nk;
    /* trailing whitespace of the context moves to the continuation: ctx "Answer:", cont " yes" */
    CHECK(ds_eval_encode_pair(&lm, 0, "Answer: ", "yes", &c, &nc, &k, &nk) == 0);
    int64_t nw = mock_encode(&m, "Answer:", 7, 1, &w);
    CHECK(nc == nw && !memcmp(c, w, (size_t)nw * 4));
    free(w);
    nw = mock_encode(&m, " yes", 4, 1, &w);
    CHECK(nk == 1 && k[0] == w[0]);
    free(w); free(c); free(k);
    /* joint tokenization: ctx "a b" + cont "c d" -> whole ["a", " bc", " d"], ctx ["a", " b"]:
     * the continuation is whole[2:] = [" d"] (lm-eval's rule, not enc(" c d")) */
    CHECK(ds_eval_encode_pair(&lm, 0, "a b", "c d", &c, &nc, &k, &nk) == 0);
    nw = mock_encode(&m, " d", 2, 1, &w);
    CHECK(nc == 2 && nk == 1 && k[0] == w[0]);
    free(w); free(c); free(k);
    /* the continuation merges entirely into the context's last token: an error, not a crash */
    CHECK(ds_eval_encode_pair(&lm, 0, "ab", "cd", &c, &nc, &k, &nk) != 0);
    CHECK(strstr(ds_errmsg(), "empty") != NULL);
    /* empty context: [prefix] + enc(cont); a continuation starting with the prefix token keeps it as context */
    m.word_tok = 0;
    CHECK(ds_eval_encode_pair(&lm, 0, "", "hi", &c, &nc, &k, &nk) == 0);
    CHECK(nc == 1 && c[0] == 0 && nk == 2 && k[0] == 'h');
    free(c); free(k);
    lm.prefix_id = 'h';
    CHECK(ds_eval_encode_pair(&lm, 0, "", "hi", &c, &nc, &k, &nk) == 0);
    CHECK(nc == 1 && c[0] == 'h' && nk == 1 && k[0] == 'i');
    free(c); free(k);
}

TEST(left_truncation_and_shared_context) {
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_RECORD, 8);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.batch = 100;
    /* ctx 10 bytes + cont " xy" 3 bytes = 13 > 8 + 1: 4 bytes dropped from the left */
    const char *f = "{\"query\": \"0123456789\", \"choices\": [\"xy\", \"zw\"], \"gold\": 0}\n";
    ds_task t;
    CHECK(task_from(&t, "mc:mem.jsonl", f, &o) == 0);
    ds_task_result r;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(m.nrec == 2);
    CHECK(m.rec[0].n_ctx == 6 && m.rec[0].tok[0] == '4' && m.rec[0].n_cont == 3 && m.rec[0].tok[6] == ' ');
    CHECK(m.rec[0].ctx_ptr == m.rec[1].ctx_ptr); /* one context for both choices */
    ds_task_result_free(&r);
    ds_task_free(&t);
    /* a continuation longer than the window is an error naming the line */
    f = "\n{\"query\": \"q\", \"choices\": [\"abcdefghijkl\", \"z\"], \"gold\": 0}\n";
    CHECK(task_from(&t, "mc:mem.jsonl", f, &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "mem.jsonl:2: choice 0: continuation of 13 tokens") != NULL, "%s", ds_errmsg());
    ds_task_result_free(&r);
    ds_task_free(&t);
}

TEST(results_do_not_depend_on_batch) {
    const char *path = ds_test_shared("data/llm_foundry_icl/piqa.jsonl");
    if (!path) SKIP("../shared/data/llm_foundry_icl/piqa.jsonl not found");
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_COPY, 1024);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.limit = 40;
    char spec[1200];
    snprintf(spec, sizeof spec, "mc:%s#prompt=qa", path);
    ds_task t1, t2;
    CHECK(ds_task_load(&t1, spec, &o) == 0);
    CHECK(t1.n_docs == 40);
    ds_task_result r1, r2;
    CHECK(ds_task_run(&t1, &lm, &o, NULL, &r1) == 0);
    o.batch = 7;
    CHECK(ds_task_load(&t2, spec, &o) == 0);
    CHECK(ds_task_run(&t2, &lm, &o, NULL, &r2) == 0);
    TEST_RETURN_IF_FAILED();
    for (int64_t d = 0; d < 40; d++)
        for (int i = 0; i < t1.docs[d].n; i++) CHECK(r1.docs[d].ll[i] == r2.docs[d].ll[i]);
    for (int k = 0; k < r1.n_metrics; k++) CHECK(r1.metrics[k].value == r2.metrics[k].value);
    /* the lm-eval PIQA prompt */
    CHECK(strncmp(t1.docs[0].ctx[0], "Question: ", 10) == 0);
    CHECK(strlen(t1.docs[0].ctx[0]) > 8 && !strcmp(t1.docs[0].ctx[0] + strlen(t1.docs[0].ctx[0]) - 8, "\nAnswer:"));
    CHECK(t1.docs[0].cont[0][0] == ' ');
    ds_task_result_free(&r1);
    ds_task_result_free(&r2);
    ds_task_free(&t1);
    ds_task_free(&t2);
}

TEST(stderr_matches_sample_formula) {
    double x[5] = {1, 0, 1, 1, 0};
    /* mean 0.6, sum of squares 3 * 0.16 + 2 * 0.36 = 1.2, var 0.3, stderr sqrt(0.3 / 5) */
    CHECK_NEAR(ds_mean(x, 5), 0.6, 1e-15);
    CHECK_NEAR(ds_mean_stderr(x, 5), sqrt(0.06), 1e-15);
    CHECK(isnan(ds_mean_stderr(x, 1)));
}

/* ---- text rules against lm-eval's functions ------------------------------------------------ */
TEST(text_rules_match_lm_eval) {
    size_t len;
    char *buf = ds_read_file("tests/fixtures/eval/text_cases.json", &len);
    CHECK(buf != NULL);
    if (!buf) return;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    CHECK(j != NULL);
    if (!j) return;
    cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        size_t sl = strlen(s);
        CHECK_MSG(ds_utf8_chars(s, sl) == cJSON_GetObjectItem(c, "chars")->valueint, "chars of '%s'", s);
        CHECK_MSG(ds_utf8_chars(s, ds_py_rstrip_len(s, sl)) == cJSON_GetObjectItem(c, "rstrip_chars")->valueint, "rstrip of '%s'", s);
        CHECK_MSG(ds_py_word_count(s, sl) == cJSON_GetObjectItem(c, "words")->valueint, "words of '%s'", s);
        char *h = ds_hellaswag_preprocess(s), *w = ds_wikitext_detokenize(s), *x = ds_extract_last_number(s);
        CHECK_MSG(!strcmp(h, cJSON_GetObjectItem(c, "hellaswag")->valuestring), "hellaswag('%s') = '%s'", s, h);
        CHECK_MSG(!strcmp(w, cJSON_GetObjectItem(c, "wikitext")->valuestring), "wikitext('%s') = '%s'", s, w);
        cJSON *ln = cJSON_GetObjectItem(c, "last_number");
        if (cJSON_IsNull(ln)) CHECK_MSG(x == NULL, "last_number('%s') = '%s'", s, x);
        else CHECK_MSG(x && !strcmp(x, ln->valuestring), "last_number('%s') = '%s'", s, x ? x : "(none)");
        free(h); free(w); free(x);
        n++;
    }
    CHECK(n >= 15);
    /* WikiText articles: count, sizes, word counts and detokenized text (hashes) */
    const char *wt = ds_test_shared("data/wikitext2/wiki.test.raw");
    if (wt) {
        ds_eval_opts o;
        ds_eval_opts_default(&o);
        ds_task t;
        char spec[1200];
        snprintf(spec, sizeof spec, "lm:%s#docs=wikitext,detok=wikitext", wt);
        CHECK(ds_task_load(&t, spec, &o) == 0);
        CHECK(t.n_docs == cJSON_GetObjectItem(j, "wikitext_docs")->valueint);
        CHECK(t.n_docs == 62); /* docs/tokenizer-eval-data.md: 62 top-level title lines */
        int k = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "wikitext_first")) {
            char hex[17];
            CHECK(t.docs[k].bytes == cJSON_GetObjectItem(c, "bytes")->valueint);
            CHECK(t.docs[k].words == cJSON_GetObjectItem(c, "words")->valueint);
            CHECK((int64_t)strlen(t.docs[k].text) == cJSON_GetObjectItem(c, "detok_bytes")->valueint);
            snprintf(hex, sizeof hex, "%016llx",
                     (unsigned long long)ds_hash64(t.docs[k].text, strlen(t.docs[k].text), DS_HASH64_INIT));
            CHECK_MSG(!strcmp(hex, cJSON_GetObjectItem(c, "detok_fnv1a64")->valuestring), "article %d", k);
            k++;
        }
        ds_task_free(&t);
    }
    cJSON_Delete(j);
    char *a = ds_normalize_answer("The answer is #### $1,234."), *b = ds_normalize_answer(" 1234 ");
    CHECK(!strcmp(a, "1234") && !strcmp(b, "1234"));
    free(a); free(b);
}

TEST(hellaswag_six_line_format) {
    const char *path = ds_test_shared("data/hellaswag/hellaswag_val_full.txt");
    if (!path) SKIP("../shared/data/hellaswag not found");
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.limit = 3;
    ds_task t;
    char spec[1200];
    snprintf(spec, sizeof spec, "mc:%s", path);
    CHECK(ds_task_load(&t, spec, &o) == 0);
    CHECK(t.n_docs == 3);
    /* item 1 of the file: label 3, "Roof shingle removal: A man is sitting on a roof. he" */
    CHECK(t.docs[0].gold == 3 && t.docs[0].n == 4 && t.docs[0].line == 1 && t.docs[1].line == 7);
    CHECK(!strcmp(t.docs[0].ctx[0], "Roof shingle removal: A man is sitting on a roof. he"));
    CHECK(!strcmp(t.docs[0].cont[3], " starts pulling up roofing on a roof."));
    CHECK(t.docs[0].len_chars[3] == 36);
    ds_task_free(&t);
}

/* ---- bad input ---------------------------------------------------------------------------- */
TEST(bad_input_clear_errors) {
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    static const struct { const char *spec, *content, *msg; } cases[] = {
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"query\": \"q\", \"choices\": [\"a\"\n",
         "x.jsonl:2: malformed JSON"},
        {"mc:x.jsonl", "", "x.jsonl: no examples (empty file)"},
        {"mc:x.jsonl", "\n  \n", "x.jsonl: no examples (empty file)"},
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n", "x.jsonl:1: gold: 2 out of range (2 choices)"},
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": -1}\n", "x.jsonl:1: gold: -1 out of range"},
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0.5}\n", "x.jsonl:1: gold: not an integer"},
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", \"b\"]}\n", "x.jsonl:1: gold: missing"},
        {"mc:x.jsonl", "{\"query\": \"q\", \"choices\": [\"a\", 3], \"gold\": 0}\n", "x.jsonl:1: choices[1]: not a string"},
        {"mc:x.jsonl", "{\"choices\": [\"a\"], \"gold\": 0}\n", "x.jsonl:1: query: missing"},
        {"mc:x.jsonl", "[1, 2]\n", "x.jsonl:1: not a JSON object"},
        {"mc:x.jsonl", "{\"query\": \"q\xff\", \"choices\": [\"a\"], \"gold\": 0}\n", "x.jsonl:1: invalid UTF-8 at column 13"},
        {"ll:x.jsonl", "{\"context\": \"c\"}\n", "x.jsonl:1: continuation: missing"},
        {"gen:x.jsonl", "{\"prompt\": \"p\"}\n", "x.jsonl:1: answer: missing"},
        {"mc:h.txt", "ctx\n1\na\nb\nc\nd\nctx\n7\na\nb\nc\nd\n", "h.txt:7: gold label '7' (line 8) is not 0..3"},
        {"mc:h.txt", "ctx\n1\na\nb\n", "h.txt:1: truncated item (4 of 6 lines)"},
        {"lm:x.txt", "ok\n\xc3(\n", "x.txt: invalid UTF-8 at byte 3 (line 2)"},
        {"lm:x.txt", "", "x.txt: no examples (empty file)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = task_from(&t, cases[i].spec, cases[i].content, &o);
        CHECK_MSG(rc != 0, "case %zu accepted", i);
        CHECK_MSG(strstr(ds_errmsg(), cases[i].msg) != NULL, "case %zu: got '%s', want '%s'", i, ds_errmsg(), cases[i].msg);
        ds_task_free(&t);
    }
    /* specs */
    static const struct { const char *spec, *msg; } specs[] = {
        {"nosuchtask", "unknown task 'nosuchtask'"},
        {"xx:file", "unknown kind 'xx'"},
        {"mc:", "missing file path"},
        {"mc:f.jsonl#bogus=1", "unknown option 'bogus'"},
        {"mc:f.jsonl#prompt=zz", "prompt: expected qa or raw"},
        {"lm:f.txt#stride=0", "stride: expected a positive integer"},
        {"gen:f.jsonl#until", "needs a value"},
    };
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        CHECK_MSG(ds_task_parse_spec(&t, specs[i].spec, NULL) != 0, "spec %s accepted", specs[i].spec);
        CHECK_MSG(strstr(ds_errmsg(), specs[i].msg) != NULL, "spec %s: got '%s'", specs[i].spec, ds_errmsg());
        ds_task_free(&t);
    }
}

TEST(malformed_line_skip_option) {
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    o.on_error = DS_ON_ERROR_SKIP;
    ds_task t;
    const char *f = "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n"
                    "{oops\n"
                    "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 9}\n"
                    "{\"query\": \"r\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n";
    CHECK(task_from(&t, "mc:x.jsonl", f, &o) == 0);
    CHECK(t.n_docs == 2 && t.n_skipped == 2);
    CHECK(t.docs[1].line == 4 && t.docs[1].gold == 1);
    ds_task_free(&t);
    /* all rows bad: an error, not an empty result */
    CHECK(task_from(&t, "mc:x.jsonl", "{oops\n", &o) != 0);
    CHECK(strstr(ds_errmsg(), "no valid examples (1 skipped)") != NULL);
    ds_task_free(&t);
}

/* ---- the CLI ------------------------------------------------------------------------------ */
static const char *dsv3_bin(void) {
    const char *b = getenv("DSV3");
    return b ? b : "./dsv3";
}

TEST(cli_eval_uniform_json_and_samples) {
    const char *dir = ds_test_tmpdir();
    char p[1024], out[8192];
    snprintf(p, sizeof p, "%s/t.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("one two three\nfour five\n", f);
    fclose(f);
    int rc = ds_test_sh(out, sizeof out,
                        "%s eval --model builtin:uniform-bytes --task lm:%s#docs=lines,name=tiny --max-length 4 "
                        "--out %s/r.json --samples %s/s.jsonl", dsv3_bin(), p, dir, dir);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK(strstr(out, "bits_per_byte") && strstr(out, "8.0000"));
    char jp[1024];
    snprintf(jp, sizeof jp, "%s/r.json", dir);
    char *js = ds_read_file(jp, NULL);
    CHECK(js != NULL);
    if (!js) return;
    cJSON *j = cJSON_Parse(js);
    free(js);
    cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "results"), "tiny"), "metrics"), "bits_per_byte");
    CHECK(m && fabs(cJSON_GetObjectItem(m, "value")->valuedouble - 8.0) < 1e-6);
    CHECK(m && cJSON_IsNull(cJSON_GetObjectItem(m, "stderr")));
    cJSON_Delete(j);
    snprintf(jp, sizeof jp, "%s/s.jsonl", dir);
    char *s = ds_read_file(jp, NULL);
    CHECK(s && strstr(s, "\"bytes\":13") && strstr(s, "\"words\":3"));
    free(s);
    /* deterministic: a second run gives the same samples file byte for byte */
    rc = ds_test_sh(out, sizeof out, "%s eval --model builtin:uniform-bytes --task lm:%s#docs=lines,name=tiny --max-length 4 "
                    "--samples %s/s2.jsonl && cmp %s/s.jsonl %s/s2.jsonl", dsv3_bin(), p, dir, dir, dir);
    CHECK_MSG(rc == 0, "%s", out);
}

TEST(cli_eval_bad_input_one_line_no_output) {
    const char *dir = ds_test_tmpdir();
    char p[1024], out[8192];
    snprintf(p, sizeof p, "%s/bad.jsonl", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{broken\n", f);
    fclose(f);
    int rc = ds_test_sh(out, sizeof out, "%s eval --model builtin:uniform-bytes --task mc:%s --out %s/r.json",
                        dsv3_bin(), p, dir);
    CHECK(rc == 1);
    CHECK_MSG(strstr(out, "bad.jsonl:2: malformed JSON") != NULL, "%s", out);
    CHECK(strchr(out, '\n') == out + strlen(out) - 1); /* one line */
    char jp[1024];
    snprintf(jp, sizeof jp, "%s/r.json", dir);
    CHECK(!ds_file_exists(jp));
    /* --on-error skip: a warning and the valid rows are scored */
    rc = ds_test_sh(out, sizeof out, "%s eval --model builtin:uniform-bytes --task mc:%s --on-error skip --out %s/r.json",
                    dsv3_bin(), p, dir);
    CHECK_MSG(rc == 0, "%s", out);
    CHECK(strstr(out, "bad.jsonl:2: malformed JSON (skipped)") != NULL);
    CHECK(ds_file_exists(jp));
    /* a model folder that does not exist: a clear message naming it */
    rc = ds_test_sh(out, sizeof out, "%s eval --model /no/such/model --task mc:%s --on-error skip", dsv3_bin(), p);
    CHECK(rc == 1 && strstr(out, "/no/such/model") != NULL);
    /* usage errors exit 2 */
    rc = ds_test_sh(out, sizeof out, "%s eval --task mc:%s", dsv3_bin(), p);
    CHECK(rc == 2 && strstr(out, "--model is required"));
    rc = ds_test_sh(out, sizeof out, "%s eval --model builtin:uniform-bytes --task mc:/no/such.jsonl", dsv3_bin());
    CHECK(rc == 1 && strstr(out, "/no/such.jsonl"));
}

/* ---- the logits adaptor --------------------------------------------------------------------- */
/* logits = log of a known distribution + a per-row shift (log_softmax must remove it):
 * p(v | position i) proportional to 1 + ((v + i) % 3), vocabulary 6 */
static int table_logits(void *user, const int32_t *ids, int64_t n, float *logits) {
    (void)user; (void)ids;
    for (int64_t i = 0; i < n; i++)
        for (int v = 0; v < 6; v++) logits[i * 6 + v] = (float)(log(1.0 + (double)((v + i) % 3)) + 10.0 * (double)i);
    return 0;
}

TEST(loglik_from_logits_is_log_softmax) {
    int32_t ctx[3] = {1, 2, 3}, cont[3] = {1, 4, 0};
    float lp[3];
    uint8_t gr[3];
    ds_lm_request q = {ctx, 3, cont, 3, lp, gr};
    CHECK(ds_lm_loglik_from_logits(table_logits, NULL, 6, &q, 1) == 0);
    /* cont[j] is predicted by row 2 + j; normalizer sum_v 1 + ((v + i) % 3) = 12 for every row */
    for (int j = 0; j < 3; j++) {
        int i = 2 + j, t = cont[j];
        /* logits near 40 are stored in float: each within 2e-6 (half an ulp), hence 1e-5 */
        CHECK_NEAR(lp[j], log((1.0 + (double)((t + i) % 3)) / 12.0), 1e-5);
        /* argmax: the first v with (v + i) % 3 == 2 */
        int am = (2 - i % 3 + 3) % 3;
        CHECK(gr[j] == (t == am));
    }
    int32_t bad[1] = {9};
    ds_lm_request b = {ctx, 3, bad, 1, lp, gr};
    CHECK(ds_lm_loglik_from_logits(table_logits, NULL, 6, &b, 1) != 0);
    CHECK(strstr(ds_errmsg(), "outside the vocabulary") != NULL);
}

TEST(context_options_and_context_continuation_rows) {
    /* context_options (WinoGrande-style): one continuation after each context; acc only.
     * Copy model: the context that makes " sat" a repetition wins. */
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_COPY, 256);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    ds_task_result r;
    const char *f = "{\"context_options\": [\"the dog ran. the dog\", \"the cat sat. the cat\"], \"continuation\": \"sat.\", \"gold\": 1}\n";
    CHECK(task_from(&t, "mc:w.jsonl", f, &o) == 0);
    CHECK(t.multi_ctx == 1 && t.docs[0].n == 2 && !strcmp(t.docs[0].cont[0], " sat."));
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(metric(&r, "acc") == 1.0);
    CHECK(ds_result_metric(&r, "acc_norm") == NULL);
    ds_task_result_free(&r);
    ds_task_free(&t);
    /* a query/choices row after context_options rows is refused */
    const char *mixed = "{\"context_options\": [\"a\", \"b\"], \"continuation\": \"c\", \"gold\": 0}\n"
                        "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n";
    CHECK(task_from(&t, "mc:w.jsonl", mixed, &o) != 0);
    CHECK(strstr(ds_errmsg(), "w.jsonl:2: a query/choices row in a context_options file") != NULL);
    ds_task_free(&t);
    /* context + continuation rows in an mc: file are the language-modelling format (ll) */
    CHECK(task_from(&t, "mc:l.jsonl", "{\"context\": \"abc abc ab\", \"continuation\": \"c\"}\n", &o) == 0);
    CHECK(t.kind == DS_TASK_LL);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(ds_result_metric(&r, "perplexity") != NULL);
    ds_task_result_free(&r);
    ds_task_free(&t);
}

/* ---- BOS, task names, WinoGrande, empty choices, failing tasks ------------------------------ */
TEST(add_bos_reaches_every_encoding_but_the_empty_context_continuation) {
    ds_lm lm;
    mock m;
    mock_lm(&lm, &m, M_RECORD, 256);
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    ds_task_result r;
    /* default: no BOS */
    CHECK(task_from(&t, "ll:x.jsonl", "{\"context\": \"ab\", \"continuation\": \"c\"}\n", &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(m.nrec == 1 && m.rec[0].n_ctx == 2 && m.rec[0].tok[0] == 'a');
    ds_task_result_free(&r);
    /* --add-bos: contexts start with BOS; the continuation does not get one */
    m.nrec = 0;
    o.add_bos = 1;
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(m.nrec == 1 && m.rec[0].n_ctx == 3 && m.rec[0].tok[0] == 0 && m.rec[0].tok[1] == 'a' && m.rec[0].n_cont == 2);
    CHECK(m.rec[0].tok[3] == ' ' && m.rec[0].tok[4] == 'c');
    ds_task_result_free(&r);
    ds_task_free(&t);
    /* the task option overrides the run's setting, both ways */
    m.nrec = 0;
    CHECK(task_from(&t, "ll:x.jsonl#add_bos=0", "{\"context\": \"ab\", \"continuation\": \"c\"}\n", &o) == 0);
    CHECK(ds_task_add_bos(&t, &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(m.nrec == 1 && m.rec[0].n_ctx == 2);
    ds_task_result_free(&r);
    ds_task_free(&t);
    o.add_bos = 0;
    CHECK(ds_task_parse_spec(&t, "piqa#add_bos=true", NULL) == 0 && ds_task_add_bos(&t, &o) == 1);
    ds_task_free(&t);
    CHECK(ds_task_parse_spec(&t, "piqa#add_bos=maybe", NULL) != 0 && strstr(ds_errmsg(), "add_bos: expected 1 or 0"));
    ds_task_free(&t);
    /* rolling windows: the document's own BOS is the first predicted token (lm-eval tok_encode) */
    m.nrec = 0;
    o.add_bos = 1;
    CHECK(task_from(&t, "lm:x.txt", "xyz", &o) == 0);
    CHECK(ds_task_run(&t, &lm, &o, NULL, &r) == 0);
    CHECK(r.docs[0].n_tokens[0] == 4 && m.rec[0].n_ctx == 1 && m.rec[0].tok[0] == 0 && m.rec[0].tok[1] == 0);
    ds_task_result_free(&r);
    ds_task_free(&t);
}

TEST(task_names_as_lm_eval_and_aliases) {
    ds_task t;
    static const struct { const char *spec, *name, *file; ds_task_kind kind; int qa; } c[] = {
        {"lambada_openai", "lambada_openai", "llm_foundry_icl/lambada_openai.jsonl", DS_TASK_LL, 0},
        {"lambada", "lambada", "llm_foundry_icl/lambada_openai.jsonl", DS_TASK_LL, 0},
        {"wikitext", "wikitext", "wikitext2/wiki.test.raw", DS_TASK_LM, 0},
        {"wikitext2", "wikitext2", "wikitext2/wiki.test.raw", DS_TASK_LM, 0},
        {"arc_easy", "arc_easy", "llm_foundry_icl/arc_easy.jsonl", DS_TASK_MC, 1},
        {"arc_challenge", "arc_challenge", "llm_foundry_icl/arc_challenge.jsonl", DS_TASK_MC, 1},
        {"winogrande", "winogrande", "llm_foundry_icl/winogrande.jsonl", DS_TASK_MC, 0},
        {"hellaswag", "hellaswag", "hellaswag/hellaswag_val_full.txt", DS_TASK_MC, 0},
        {"piqa", "piqa", "llm_foundry_icl/piqa.jsonl", DS_TASK_MC, 1},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        CHECK_MSG(ds_task_parse_spec(&t, c[i].spec, "D") == 0, "%s: %s", c[i].spec, ds_errmsg());
        char want[256];
        snprintf(want, sizeof want, "D/%s", c[i].file);
        CHECK_MSG(!strcmp(t.name, c[i].name) && !strcmp(t.path, want) && t.kind == c[i].kind && t.prompt_qa == c[i].qa,
                  "%s: name %s path %s", c[i].spec, t.name, t.path);
        if (t.kind == DS_TASK_LM) CHECK(t.docs_split == DS_DOCS_WIKITEXT && t.detok_wikitext);
        ds_task_free(&t);
    }
    static const struct { const char *spec, *hint; } typo[] = {
        {"arc_chalenge", "did you mean arc_challenge?"},
        {"hellaswg", "did you mean hellaswag?"},
        {"winogrand#limit=3", "did you mean winogrande?"},
        {"lambada_open", "lambada_openai"},
        {"arc", "arc_easy"},
    };
    for (size_t i = 0; i < sizeof typo / sizeof *typo; i++) {
        CHECK(ds_task_parse_spec(&t, typo[i].spec, NULL) != 0);
        CHECK_MSG(strstr(ds_errmsg(), typo[i].hint) && strstr(ds_errmsg(), "unknown task"), "%s: %s", typo[i].spec, ds_errmsg());
        ds_task_free(&t);
    }
    CHECK(ds_task_parse_spec(&t, "zzzzzzzz", NULL) != 0 && !strstr(ds_errmsg(), "did you mean"));
    ds_task_free(&t);
}

TEST(winogrande_partial_scoring_rows) {
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    /* lm-eval preprocess_winogrande: idx = sentence.index("_"); contexts sentence[:idx] + option;
     * target sentence[idx+1:].strip(); answer "1" -> 0 */
    const char *f = "{\"sentence\": \"The cup fell on the rug and the _ broke.  \", \"option1\": \"cup\", \"option2\": \"rug\", \"answer\": \"1\"}\n"
                    "{\"sentence\": \"A _ b_c\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": \"2\"}\n";
    CHECK(task_from(&t, "mc:w.jsonl", f, &o) == 0);
    CHECK(t.multi_ctx == 1 && t.n_docs == 2);
    if (t.n_docs == 2) {
        CHECK(!strcmp(t.docs[0].ctx[0], "The cup fell on the rug and the cup"));
        CHECK(!strcmp(t.docs[0].ctx[1], "The cup fell on the rug and the rug"));
        CHECK(!strcmp(t.docs[0].cont[0], " broke.") && !strcmp(t.docs[0].cont[1], " broke.") && t.docs[0].gold == 0);
        CHECK(!strcmp(t.docs[1].ctx[1], "A y") && !strcmp(t.docs[1].cont[0], " b_c") && t.docs[1].gold == 1);
    }
    ds_task_free(&t);
    static const struct { const char *row, *msg; } bad[] = {
        {"{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}", "w.jsonl:1: sentence: no '_' blank"},
        {"{\"sentence\": \"a _ b\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"3\"}", "w.jsonl:1: answer: expected \"1\" or \"2\""},
        {"{\"sentence\": \"a _ b\", \"option1\": \"a\", \"answer\": \"1\"}", "w.jsonl:1: option2: missing"},
        {"{\"sentence\": \"a _ b\", \"option1\": \"\", \"option2\": \"b\", \"answer\": \"1\"}", "w.jsonl:1: option1: empty answer choice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(task_from(&t, "mc:w.jsonl", bad[i].row, &o) != 0);
        CHECK_MSG(strstr(ds_errmsg(), bad[i].msg) != NULL, "got '%s', want '%s'", ds_errmsg(), bad[i].msg);
        ds_task_free(&t);
    }
}

TEST(empty_answer_choice_is_an_error_or_skipped) {
    ds_eval_opts o;
    ds_eval_opts_default(&o);
    ds_task t;
    const char *f = "{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n"
                    "{\"query\": \"q\", \"choices\": [\"a\", \"\"], \"gold\": 0}\n"
                    "{\"query\": \"r\", \"choices\": [\"c\", \"d\"], \"gold\": 1}\n";
    CHECK(task_from(&t, "mc:x.jsonl", f, &o) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "x.jsonl:2: choices[1]: empty answer choice") != NULL, "%s", ds_errmsg());
    ds_task_free(&t);
    o.on_error = DS_ON_ERROR_SKIP;
    CHECK(task_from(&t, "mc:x.jsonl", f, &o) == 0);
    CHECK(t.n_docs == 2 && t.n_skipped == 1 && t.docs[1].line == 3);
    ds_task_free(&t);
    o.on_error = DS_ON_ERROR_STOP;
    CHECK(task_from(&t, "mc:x.jsonl", "{\"context_options\": [\"a\", \"\"], \"continuation\": \"c\", \"gold\": 0}\n", &o) != 0);
    CHECK(strstr(ds_errmsg(), "x.jsonl:1: context_options[1]: empty answer choice") != NULL);
    ds_task_free(&t);
    CHECK(task_from(&t, "mc:h.txt", "ctx\n1\na\n\nc\nd\n", &o) != 0);
    CHECK_MSG(strstr(ds_errmsg(), "h.txt:1: ending 1 (line 4): empty answer choice") != NULL, "%s", ds_errmsg());
    ds_task_free(&t);
}

TEST(cli_eval_usage_errors_exit_2) {
    char out[8192];
    static const struct { const char *args, *msg; } c[] = {
        {"--task arc_chalenge", "did you mean arc_challenge?"},
        {"--task piqa wikitext3", "unknown task 'wikitext3'; did you mean wikitext"},
        {"--task 'piqa#add_bos=2'", "add_bos: expected 1 or 0"},
        {"--task piqa --limit -3", "--limit -3 is out of range (0.."},
        {"--task piqa --batch 0", "--batch 0 is out of range (1.."},
        {"--task piqa --max-length -1", "--max-length -1 is out of range"},
        {"--task piqa --on-error maybe", "expected stop or skip"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        int rc = ds_test_sh(out, sizeof out, "%s eval --model builtin:uniform-bytes %s", dsv3_bin(), c[i].args);
        CHECK_MSG(rc == 2 && strstr(out, c[i].msg), "%s: rc %d: %s", c[i].args, rc, out);
    }
    /* a folder without tokenizer.json (as dsv3 init makes): the message says what to add */
    int rc = ds_test_sh(out, sizeof out, "%s eval --model tests/fixtures/eval/dsv3tok --task lm:x.txt", dsv3_bin());
    CHECK_MSG(rc == 1 && strstr(out, "tests/fixtures/eval/dsv3tok: no tokenizer.json (give one with --tokenizer FILE)"), "%s", out);
}

TEST(cli_eval_one_failing_task_keeps_the_others) {
    const char *dir = ds_test_tmpdir();
    char out[8192], p[1024];
    snprintf(p, sizeof p, "%s/a.txt", dir);
    FILE *f = fopen(p, "w");
    fputs("one two\n", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/bad.jsonl", dir);
    f = fopen(p, "w");
    fputs("{\"query\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n{\"query\": \"q\", \"choices\": [\"\", \"b\"], \"gold\": 0}\n", f);
    fclose(f);
    int rc = ds_test_sh(out, sizeof out,
                        "%s eval --model builtin:uniform-bytes --task 'lm:%s/a.txt#name=first' mc:%s/bad.jsonl "
                        "mc:%s/missing.jsonl 'lm:%s/a.txt#name=last' --out %s/r.json --samples %s/s.jsonl",
                        dsv3_bin(), dir, dir, dir, dir, dir, dir);
    CHECK_MSG(rc == 1, "rc %d: %s", rc, out);
    CHECK_MSG(strstr(out, "bad.jsonl:2: choices[0]: empty answer choice") && strstr(out, "missing.jsonl") &&
              strstr(out, "2 of 4 tasks failed"), "%s", out);
    CHECK(strstr(out, "first") && strstr(out, "last") && strstr(out, "8.0000"));
    char jp[1024];
    snprintf(jp, sizeof jp, "%s/r.json", dir);
    char *js = ds_read_file(jp, NULL);
    CHECK(js != NULL);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    free(js);
    cJSON *res = cJSON_GetObjectItem(j, "results"), *errs = cJSON_GetObjectItem(j, "errors");
    CHECK(cJSON_GetObjectItem(res, "first") && cJSON_GetObjectItem(res, "last") && cJSON_GetArraySize(res) == 2);
    CHECK(cJSON_GetArraySize(errs) == 2 && cJSON_IsString(cJSON_GetObjectItem(errs, "bad")));
    cJSON_Delete(j);
    snprintf(jp, sizeof jp, "%s/s.jsonl", dir);
    char *s = ds_read_file(jp, NULL);
    CHECK(s && strstr(s, "\"task\":\"first\"") && strstr(s, "\"task\":\"last\"") && !strstr(s, "\"task\":\"bad\""));
    free(s);
}

TEST(cli_eval_init_folder_takes_tokenizer_option) {
    const char *dir = ds_test_tmpdir();
    char out[8192];
    int rc = ds_test_sh(out, sizeof out, "%s init --config tiny --out %s/m && printf 'one two three\\nfour\\n' > %s/t.txt",
                        dsv3_bin(), dir, dir);
    CHECK_MSG(rc == 0, "%s", out);
    rc = ds_test_sh(out, sizeof out, "%s eval --model %s/m --task 'lm:%s/t.txt#docs=lines' --no-progress", dsv3_bin(), dir, dir);
    CHECK_MSG(rc == 1 && strstr(out, "/m: no tokenizer.json (give one with --tokenizer FILE)"), "rc %d: %s", rc, out);
    rc = ds_test_sh(out, sizeof out, "%s eval --model %s/m --tokenizer tests/fixtures/eval/model/tokenizer.json "
                    "--task 'lm:%s/t.txt#docs=lines' --no-progress --out %s/r.json", dsv3_bin(), dir, dir, dir);
    CHECK_MSG(rc == 0 && strstr(out, "bits_per_byte"), "rc %d: %s", rc, out);
    /* a tokenizer that does not exist: the message names it */
    rc = ds_test_sh(out, sizeof out, "%s eval --model %s/m --tokenizer /no/such/tokenizer.json --task 'lm:%s/t.txt' --no-progress",
                    dsv3_bin(), dir, dir);
    CHECK_MSG(rc == 1 && strstr(out, "/no/such/tokenizer.json"), "rc %d: %s", rc, out);
}
