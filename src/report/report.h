/*
 * report.h — `dsv3 report`: one self-contained HTML page of one or more
 * training runs (the page's own script draws every chart as inline SVG; no
 * network fetch), and the train_log.jsonl -> TensorBoard converter behind
 * `dsv3 train --tensorboard`.
 *
 * Layer: report (rank 8, beside serve): it reads the files a run folder holds
 * and includes only base/ and io/; the trainer knows nothing of it (the CLI
 * calls it from the trainer's per-step hook).
 *
 * What a run folder gives the page:
 *   train_log.jsonl       every valid line, as written (a line that is not a
 *                         JSON object is skipped, and the page and stderr say
 *                         which line and why)
 *   run.json              command, dsv3 version, git revision, machine,
 *                         options and model config (written by `dsv3 train`)
 *   latest/config.json    the model config when run.json has none
 *   *.json                `dsv3 eval --out` results ({"results": ...}) and
 *                         `dsv3 fp8 analyze --json` files ({"weights": ...})
 * The data block of the page is <script type="application/json" id="dsv3-data">.
 */
#ifndef DS_REPORT_H
#define DS_REPORT_H

#include <stdint.h>

typedef struct {
    const char *title;              /* page title (default "dsv3 report") */
    const char *const *labels;      /* per run, or NULL: the folder's name */
    const char *baseline;           /* a RUN (path or label): the BF16 run of the FP8 gap, or NULL */
    const char *const *extra_json;  /* eval results / fp8 analyze files given by name */
    int n_extra;
    const char *ablation_json;      /* an object for the ablation summary (dsv3 ablate), or NULL */
    int quiet;                      /* no warnings on stderr */
} ds_report_opts;

/* Writes the page for runs[0..n) to out (atomically).  A missing folder or a
 * folder without train_log.jsonl is an error (-1 with ds_err; nothing
 * written); skipped log lines are warnings. */
int ds_report_write(const char *const *runs, int n, const ds_report_opts *o, const char *out);

/* The page's script and style (src/report/report.js, report.css), embedded
 * by report_assets.c. */
extern const char ds_report_js[];
extern const char ds_report_css[];

/* ---- TensorBoard ---------------------------------------------------------- */

/* Follows a train_log.jsonl and writes each new complete record's numbers as
 * TensorBoard scalars: step records as train/<key>, validation records as
 * val/<key> (val_ prefix dropped), and per MoE layer routing/maxvio/layer<L>
 * and routing/busiest_share/layer<L> from the logged loads. */
typedef struct ds_tb_tail ds_tb_tail;
ds_tb_tail *ds_tb_tail_open(const char *log_path, const char *dir);
/* Reads what was appended since the last call; -1 with ds_err on a write error. */
int ds_tb_tail_poll(ds_tb_tail *t);
int ds_tb_tail_close(ds_tb_tail *t);

#endif
