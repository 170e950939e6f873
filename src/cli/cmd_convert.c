/*
 * cmd_convert.c — `dsv3 convert --to fp8|bf16|fp32 IN_DIR OUT_DIR`: rewrite a
 * model folder in another weight format (model/model_convert.h).
 */
#include "cli/cli.h"
#include "model/model_convert.h"

#include <string.h>

static int cmd_convert(int argc, char **argv) {
    const char *to = NULL, *scale_fmt = NULL;
    long long block = 128, shard_mb = -1;
    ds_opt opts[] = {
        {"--to", DS_OPT_STR, &to, "FMT   fp8 (DeepSeek's E4M3 + 128x128 scale_inv), bf16 or fp32 (required)"},
        {"--block", DS_OPT_INT, &block, "N     fp8 block side (default 128)", DS_RANGE(1, 65536)},
        {"--scale-fmt", DS_OPT_STR, &scale_fmt, "F     fp8 scales: ue8m0 (powers of two, V3.1); default FP32"},
        {"--shard-mb", DS_OPT_INT, &shard_mb, "N     shard size limit in MB (0: one file; default: as the input)"},
    };
    const char *pos[2];
    int npos = 0;
    ds_cli_parse("convert", "--to fp8|bf16|fp32 [options] IN_DIR OUT_DIR", argc, argv, opts, sizeof opts / sizeof *opts,
                 pos, 2, &npos);
    if (npos != 2) ds_cli_usage_error("convert", "expected IN_DIR and OUT_DIR");
    if (!to) ds_cli_usage_error("convert", "--to is required (fp8, bf16 or fp32)");
    static const char *const fmts[] = {"fp8", "bf16", "fp32"};
    int fmt = ds_ckpt_format_from_name(to);
    if (fmt < 0) ds_cli_check_choice("convert", "--to: unknown format", to, fmts, 3);
    if (scale_fmt && strcmp(scale_fmt, "ue8m0"))
        ds_cli_usage_error("convert", "--scale-fmt: unknown %s (ue8m0, or leave it out for FP32 scales)", ds_quote(scale_fmt));
    if (block < 1 || block > 65536) ds_cli_usage_error("convert", "--block must be in 1..65536");
    if (fmt != DS_CKPT_FP8 && (scale_fmt || block != 128))
        ds_cli_usage_error("convert", "--block and --scale-fmt apply to --to fp8 only");
    ds_convert_opts o = {(ds_ckpt_format)fmt, block, scale_fmt != NULL, shard_mb < 0 ? -1 : shard_mb * 1000 * 1000};
    double t0 = ds_now();
    if (ds_model_convert(pos[0], pos[1], &o)) return ds_cli_fail("convert");
    printf("converted %s -> %s (%s) in %.2f s\n", pos[0], pos[1], to, ds_now() - t0);
    return 0;
}

DS_COMMAND("convert", "convert a model folder between fp8 (DeepSeek block-scaled), bf16 and fp32", cmd_convert)
