/*
 * train_hooks.h — what `dsv3 train` (and `dsv3 ablate`) do beside the
 * training loop, through ds_train_opts.on_step: RUN/run.json (command line,
 * dsv3 version, git revision, machine, options, model config) at the first
 * step, RUN/report.html at every evaluation (--report), TensorBoard event
 * files of the log (--tensorboard DIR).
 */
#ifndef DS_CLI_TRAIN_HOOKS_H
#define DS_CLI_TRAIN_HOOKS_H

#include "report/report.h"
#include "train/trainer.h"

typedef struct {
    const ds_train_opts *o;
    int report;          /* --report */
    const char *tb_dir;  /* --tensorboard DIR, or NULL */
    const char *label;   /* the run's name in its report (NULL: the folder's) */
    int started;
    ds_tb_tail *tb;
    const char *run;         /* the run folder, once a step ran */
    int64_t reported, last;  /* the steps of the last page and of the last step */
} ds_train_hooks;

/* Points o->on_step at h (h must outlive ds_train). */
void ds_train_hooks_attach(ds_train_hooks *h, ds_train_opts *o);
/* After ds_train: the last TensorBoard records, files closed; -1 with ds_err. */
int ds_train_hooks_end(ds_train_hooks *h);
/* RUN/run.json for the options o (written atomically). */
int ds_write_run_info(const char *run, const ds_train_opts *o);

#endif
