/*
 * presets.h — named model configurations for `dsv3 init --config PRESET`:
 * DeepSeek-V3 shapes in miniature (MLA with q_lora, a dense first layer,
 * shared + routed experts in groups with noaux_tc routing, YaRN, MTP depth 1).
 *   tiny   ~ 2.9M parameters (+0.3M MTP), for tests and smoke runs
 *   small  ~ 100M parameters (total), the `make bench` configuration
 */
#ifndef DS_PRESETS_H
#define DS_PRESETS_H

#include "model/config.h"

/* Fills c; returns 0, or -1 with ds_err for an unknown name. */
int ds_preset(ds_config *c, const char *name);
/* "tiny, small, base, deepseek-v3" */
const char *ds_preset_names(void);
/* 1 when a --config value names a config.json file (holds '/' or ".json"), 0 for a preset name. */
int ds_config_is_path(const char *s);
/* The preset names as an array; *n their count. */
const char *const *ds_preset_list(int *n);

#endif
