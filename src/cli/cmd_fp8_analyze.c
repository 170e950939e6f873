/*
 * cmd_fp8_analyze.c — `dsv3 fp8 analyze --model DIR [--json OUT] [--top N]
 * [--data SHARDS [--split S] [--batch B] [--seq T] [--batches N] [--mtp-lambda L]]`:
 * FP8 quantization error of every 2-D weight per scaling and format, and the
 * outliers behind it (io/fp8_analyze.h); with --data also of every linear
 * layer's input activation and output gradient, captured in a forward +
 * backward on real tokens (train/fp8_capture.h).  Dispatched from cmd_fp8.c.
 */
#include <string.h>

#include "cli/cli.h"
#include "io/fp8_analyze.h"
#include "train/fp8_capture.h"

int ds_cmd_fp8_analyze(int argc, char **argv);

int ds_cmd_fp8_analyze(int argc, char **argv) {
    const char *model = NULL, *json = NULL, *data = NULL, *split = "train", *device = "cpu";
    long long top = 10, batch = 0, seq = 0, batches = 1;
    double mtp_lambda = 0.3;
    ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR   model folder (or a .safetensors file without --data) (required)"},
        {"--json", DS_OPT_STR, &json, "FILE  write the full analysis as JSON"},
        {"--top", DS_OPT_INT, &top, "N     outliers kept per tensor and overall (default 10)"},
        {"--data", DS_OPT_STR, &data, "DIR   token shards (dsv3 data prepare): also capture activations and gradients"},
        {"--split", DS_OPT_STR, &split, "S     train (default) or val"},
        {"--batch", DS_OPT_INT, &batch, "B     sequences per batch (default 4)"},
        {"--seq", DS_OPT_INT, &seq, "T     tokens per sequence (default min(256, max_position_embeddings))"},
        {"--batches", DS_OPT_INT, &batches, "N     forward/backward passes (default 1)"},
        {"--mtp-lambda", DS_OPT_FLOAT, &mtp_lambda, "L     MTP loss weight when the model has MTP (default 0.3)", DS_MIN(0)},
        {"--device", DS_OPT_STR, &device, DS_DEVICE_HELP " (the --data capture)"},
    };
    ds_cli_parse("fp8 analyze",
                 "--model DIR [--json OUT] [--top N] [--data SHARDS [--split S] [--batch B] [--seq T] [--batches N] "
                 "[--mtp-lambda L]]",
                 argc, argv, opts, sizeof opts / sizeof *opts, NULL, 0, NULL);
    if (!model) ds_cli_usage_error("fp8 analyze", "--model DIR is required");
    if (top < 0 || top > 100000) ds_cli_usage_error("fp8 analyze", "--top must be in 0..100000");
    if (batch < 0 || batch > 65536 || seq < 0 || seq > 1048576 || batches < 1 || batches > 1000000)
        ds_cli_usage_error("fp8 analyze", "--batch must be in 1..65536, --seq in 1..1048576 (0: default), --batches >= 1");
    if (!(mtp_lambda >= 0)) ds_cli_usage_error("fp8 analyze", "--mtp-lambda must be >= 0");
    if (strcmp(split, "train") && strcmp(split, "val")) ds_cli_usage_error("fp8 analyze", "--split must be train or val");
    if (data) ds_cli_device_resident("fp8 analyze", device); /* the capture runs device-resident */
    ds_capture_result cap;
    if (data) {
        ds_fp8_capture_opts o = ds_fp8_capture_defaults();
        o.data = data, o.split = split, o.batch = batch, o.seq = seq, o.batches = batches;
        o.mtp_lambda = mtp_lambda, o.top_n = top, o.device = device;
        if (ds_fp8_capture_analyze(&cap, model, &o)) return ds_cli_fail("fp8 analyze");
    }
    int rc = ds_fp8_analyze_report(model, top, data ? &cap : NULL, json, stdout);
    if (data) ds_capture_result_free(&cap);
    return rc ? ds_cli_fail("fp8 analyze") : 0;
}
