/*
 * cmd_fp8_analyze.c — `dsv3 fp8 analyze --model DIR [--json OUT] [--top N]`:
 * FP8 quantization error of every 2-D weight per scaling and format, and the
 * outliers behind it (io/fp8_analyze.h).  Dispatched from cmd_fp8.c.
 */
#include "cli/cli.h"
#include "io/fp8_analyze.h"

int ds_cmd_fp8_analyze(int argc, char **argv);

int ds_cmd_fp8_analyze(int argc, char **argv) {
    const char *model = NULL, *json = NULL;
    long long top = 10;
    ds_opt opts[] = {
        {"--model", DS_OPT_STR, &model, "DIR   model folder (or a .safetensors file) (required)"},
        {"--json", DS_OPT_STR, &json, "FILE  write the full analysis as JSON"},
        {"--top", DS_OPT_INT, &top, "N     outliers kept per tensor and overall (default 10)"},
    };
    ds_cli_parse("fp8 analyze", "--model DIR [--json OUT] [--top N]", argc, argv, opts, sizeof opts / sizeof *opts,
                 NULL, 0, NULL);
    if (!model) ds_cli_usage_error("fp8 analyze", "--model DIR is required");
    if (top < 0 || top > 100000) ds_cli_usage_error("fp8 analyze", "--top must be in 0..100000");
    if (ds_fp8_analyze_model(model, top, json, stdout)) return ds_cli_fail("fp8 analyze");
    return 0;
}
