/*
 * fuzz_jinja.c — libFuzzer target for the chat-template Jinja subset: any
 * bytes either parse (and then render a small conversation, or fail with a
 * message) or fail with a message; work, output and memory are bounded.
 * `make fuzz` builds and runs it.
 */
#include "base/base.h"
#include "tokenizer/jinja.h"
#include "fuzz_msg.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_jinja *t = ds_jinja_parse((const char *)data, size);
    if (!t) {
        ds_fuzz_check_msg(ds_errmsg());
        return 0;
    }
    static const char *msgs = "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": "
                              "\"Hi \\u00e9\\n\"}, {\"role\": \"assistant\", \"content\": null}, {\"role\": \"tool\", "
                              "\"content\": \"x\", \"n\": 3, \"f\": 1.5, \"l\": [1, \"a\", true]}]";
    cJSON *m = cJSON_Parse(msgs);
    char *r = ds_chat_template_apply(t, m, 1, "<s>", "</s>");
    if (!r) ds_fuzz_check_msg(ds_errmsg());
    free(r);
    /* a conversation ending with an assistant message to continue, with more variables: a text or a
     * message (a template that prints the messages again keeps the tag where it printed it first, as
     * transformers cuts at the last one too) */
    static const char *cont = "[{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": "
                              "\"The answer is \"}]";
    cJSON *c = cJSON_Parse(cont), *kw = cJSON_Parse("{\"thinking\": true, \"bos_token\": \"<b>\"}");
    const ds_chat_opts o = {.continue_final_message = 1, .kwargs = kw};
    r = ds_chat_template_render(t, c, NULL, &o, "<s>", "</s>");
    if (!r) ds_fuzz_check_msg(ds_errmsg());
    free(r);
    cJSON_Delete(c), cJSON_Delete(kw);
    cJSON_Delete(m);
    ds_jinja_free(t);
    return 0;
}
